import { existsSync } from 'node:fs'
import { createTenantry, type Tenantry } from '../runtime.ts'

/** Connection options every command takes; the same defaults as `npm start`. */
export interface ConnectionFlags {
  databaseUrl?: string
  dataDir?: string
  rolePrefix?: string
  migrations?: string
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
  })
}
