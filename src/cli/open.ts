import { existsSync } from 'node:fs'
import { pino } from 'pino'
import { tenantLogMixin } from '../observe/logger.ts'
import { createTenantry, type Tenantry } from '../runtime.ts'

/** Connection options every command takes; the same defaults as `npm start`. */
export interface ConnectionFlags {
  databaseUrl?: string
  dataDir?: string
  rolePrefix?: string
  migrations?: string
  /** The cache's Redis (`tenantry cache flush`). */
  cache?: { redis: string }
}

/**
 * Open Tenantry the way the app does: `--database-url`/`DATABASE_URL`, else the embedded data
 * directory (`--data-dir`/`TENANTRY_DATA_DIR`, default `.tenantry`).
 */
export async function openTenantry(flags: ConnectionFlags): Promise<Tenantry> {
  const migrations = flags.migrations ?? process.env.TENANTRY_MIGRATIONS ?? (existsSync('migrations') ? 'migrations' : undefined)
  return createTenantry({
    databaseUrl: flags.databaseUrl,
    dataDir: flags.dataDir,
    rolePrefix: flags.rolePrefix ?? process.env.TENANTRY_ROLE_PREFIX,
    migrations,
    ...(flags.cache ? { cache: flags.cache } : {}),
    // Log lines go to stderr: stdout carries the command's output (tables, --json).
    observe: { logger: pino({ level: process.env.TENANTRY_LOG_LEVEL ?? 'warn', mixin: tenantLogMixin }, pino.destination(2)) },
  })
}
