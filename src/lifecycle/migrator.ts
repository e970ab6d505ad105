import { createHash } from 'node:crypto'
import { readdirSync, readFileSync, existsSync } from 'node:fs'
import { join } from 'node:path'
import { TenantryError } from '../core/errors.ts'
import { quoteIdent } from '../core/sql.ts'
import type { AdminQueryable } from '../data/driver.ts'
import type { Queryable } from '../data/executor.ts'
import { grantSchemaSql } from '../data/sql.ts'
import type { MigrationTarget } from '../data/tiers/index.ts'

/** One migration file: `migrations/0001_create_projects.sql`. */
export interface MigrationFile {
  version: string
  name: string
  sql: string
  checksum: string
  /** Set on a plugin's file (docs/plugins.md): its version is `<plugin>:<NNNN>` in the ledger. */
  plugin?: string
}

const FILE_RE = /^(\d+)_([A-Za-z0-9_-]+)\.sql$/

/**
 * Read the migration files of an app, sorted by version. Files not named `NNNN_name.sql` are
 * refused, and so are two files with one version.
 *
 * @example
 * ```ts
 * const files = loadMigrations('./migrations')
 * ```
 */
export function loadMigrations(dir: string): MigrationFile[] {
  if (!existsSync(dir)) throw new TenantryError('CONFIG_INVALID', `The migrations directory '${dir}' does not exist.`)
  const files: MigrationFile[] = []
  const seen = new Map<string, string>()
  for (const entry of readdirSync(dir).sort()) {
    if (!entry.endsWith('.sql')) continue
    const m = FILE_RE.exec(entry)
    if (!m) throw new TenantryError('CONFIG_INVALID', `Migration file '${entry}' must be named NNNN_name.sql (digits, underscore, a name).`)
    const version = m[1]
    if (seen.has(version)) {
      throw new TenantryError('CONFIG_INVALID', `Migration files '${seen.get(version)}' and '${entry}' have the same version ${version}.`)
    }
    seen.set(version, entry)
    const sql = readFileSync(join(dir, entry), 'utf8')
    files.push({ version, name: m[2], sql, checksum: checksumOf(sql) })
  }
  return files.sort((a, b) => Number(a.version) - Number(b.version) || a.version.localeCompare(b.version))
}

/** What `migrate` and `provision` say when the app configured no migration files. */
export const NO_MIGRATIONS_MESSAGE =
  "No migrations found: pass --migrations <dir> or set TENANTRY_MIGRATIONS (default ./migrations); in code, createTenantry({ migrations: './migrations' })."

/**
 * Refuse work that needs the app's migrations when there are none: a fleet migration would do
 * nothing, and a provision would make a tenant without tables (issue 18). `CONFIG_INVALID`,
 * before anything is written.
 *
 * @example
 * ```ts
 * requireMigrations(tenantry.migrationFiles)
 * ```
 */
export function requireMigrations(files: MigrationFile[]): void {
  if (files.length === 0) throw new TenantryError('CONFIG_INVALID', NO_MIGRATIONS_MESSAGE)
}

/** sha256 of the file with line endings normalised, so a checkout on Windows does not "edit" it. */
export function checksumOf(sql: string): string {
  return createHash('sha256').update(sql.replace(/\r\n/g, '\n')).digest('hex')
}

export interface MigrateTargetOptions {
  /** DDL waits at most this long for a lock, so it never stalls traffic queued behind it. */
  lockTimeoutMs?: number
  /** Retries of a file that hit the lock timeout, with doubling backoff. */
  lockRetries?: number
  /** Called before each pending file is applied (progress of a long build). */
  onFile?: (file: MigrationFile) => void
  /**
   * Runs each file's SQL (`apply`) inside its transaction, before the ledger row: a plugin's files
   * are checked against invariants 1–2 around it (config/plugin-migrations.ts). Throwing rolls the file back.
   */
  around?: (tx: Queryable, target: MigrationTarget, file: MigrationFile, apply: () => Promise<void>) => Promise<void>
}

export interface MigrateTargetResult {
  target: string
  applied: string[]
}

/**
 * Read a target's ledger: version → checksum. Empty when the ledger has no rows for it.
 */
export async function appliedMigrations(admin: AdminQueryable, target: MigrationTarget): Promise<Map<string, string>> {
  const res = await admin.query<{ version: string; checksum: string }>('SELECT version, checksum FROM tenantry.migrations WHERE target = $1', [target.schema])
  return new Map(res.rows.map((r) => [r.version, r.checksum]))
}

/**
 * The files not yet applied to a target. An applied file whose checksum changed is refused with
 * `MIGRATION_CHECKSUM_MISMATCH`: edit history by adding a new migration, never by changing one.
 */
export function pendingMigrations(files: MigrationFile[], applied: Map<string, string>, label: string): MigrationFile[] {
  for (const f of files) {
    const sum = applied.get(f.version)
    if (sum !== undefined && sum !== f.checksum) {
      throw new TenantryError(
        'MIGRATION_CHECKSUM_MISMATCH',
        `Migration ${f.version}_${f.name} was edited after it was applied to ${label}. Restore the original file and put the change in a new migration.`,
        { details: { target: label, version: f.version } },
      )
    }
  }
  return files.filter((f) => !applied.has(f.version))
}

/**
 * Apply the pending files to one target, each in its own transaction together with its ledger row
 * and the grants for the target's role: a target is never left between two versions.
 *
 * @example
 * ```ts
 * await migrateTarget(driver.admin('app'), target, loadMigrations('migrations'))
 * ```
 */
export async function migrateTarget(
  admin: AdminQueryable,
  target: MigrationTarget,
  files: MigrationFile[],
  opts: MigrateTargetOptions = {},
): Promise<MigrateTargetResult> {
  const pending = pendingMigrations(files, await appliedMigrations(admin, target), target.label)
  const applied: string[] = []
  const lockTimeout = opts.lockTimeoutMs ?? 3000
  for (const file of pending) {
    opts.onFile?.(file)
    for (let attempt = 0; ; attempt++) {
      try {
        const done = await admin.transaction(async (tx) => {
          // Serialises workers on one target; the ledger is re-read under the lock.
          await tx.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`tenantry.migrate:${target.database}:${target.schema}`])
          const again = await tx.query('SELECT 1 FROM tenantry.migrations WHERE target = $1 AND version = $2', [target.schema, file.version])
          if (again.rowCount > 0) return false
          await tx.query("SELECT set_config('search_path', $1, true), set_config('lock_timeout', $2, true)", [quoteIdent(target.schema), `${lockTimeout}ms`])
          const apply = async () => { await tx.exec(file.sql) }
          await (opts.around ? opts.around(tx, target, file, apply) : apply())
          await tx.query('INSERT INTO tenantry.migrations (target, version, name, checksum) VALUES ($1, $2, $3, $4)', [
            target.schema, file.version, file.name, file.checksum,
          ])
          if (target.role) await tx.exec(grantSchemaSql(target.schema, target.role))
          return true
        })
        if (done) applied.push(`${file.version}_${file.name}`)
        break
      } catch (err) {
        const code = (err as { code?: string }).code
        if (code === '55P03' && attempt < (opts.lockRetries ?? 5)) {
          await new Promise((r) => setTimeout(r, 100 * 2 ** attempt))
          continue
        }
        throw new TenantryError('MIGRATION_FAILED', `Migration ${file.version}_${file.name} failed on ${target.label}: ${(err as Error).message}`, {
          cause: err,
          details: { target: target.label, version: file.version },
        })
      }
    }
  }
  return { target: target.label, applied }
}

/**
 * Build a new target in ONE transaction: `preamble` (role, schema), every migration file, their
 * ledger rows and the grants. Nobody uses the target yet, so one transaction is safe, and it is
 * both the fastest path and all-or-nothing: a killed provision leaves no half-built schema.
 * Idempotent: a target that already has some files applied gets only the rest.
 *
 * @example
 * ```ts
 * await createTarget(admin, target, files, 'CREATE SCHEMA IF NOT EXISTS "t_0a1b…";')
 * ```
 */
export async function createTarget(
  admin: AdminQueryable,
  target: MigrationTarget,
  files: MigrationFile[],
  preamble: string,
): Promise<MigrateTargetResult> {
  try {
    return await admin.transaction(async (tx) => {
      await tx.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`tenantry.migrate:${target.database}:${target.schema}`])
      if (preamble) await tx.exec(preamble)
      const res = await tx.query<{ version: string; checksum: string }>('SELECT version, checksum FROM tenantry.migrations WHERE target = $1', [target.schema])
      const pending = pendingMigrations(files, new Map(res.rows.map((r) => [r.version, r.checksum])), target.label)
      await tx.query("SELECT set_config('search_path', $1, true)", [quoteIdent(target.schema)])
      for (const file of pending) {
        await tx.exec(file.sql)
        await tx.query('INSERT INTO tenantry.migrations (target, version, name, checksum) VALUES ($1, $2, $3, $4)', [
          target.schema, file.version, file.name, file.checksum,
        ])
      }
      if (target.role) await tx.exec(grantSchemaSql(target.schema, target.role))
      return { target: target.label, applied: pending.map((f) => `${f.version}_${f.name}`) }
    })
  } catch (err) {
    if (err instanceof TenantryError) throw err
    throw new TenantryError('MIGRATION_FAILED', `Building ${target.label} failed: ${(err as Error).message}`, { cause: err, details: { target: target.label } })
  }
}
