import pg from 'pg'
import { PGlite } from '@electric-sql/pglite'
import { fileURLToPath } from 'node:url'
import { TenantryError } from '../../src/core/errors.ts'

/** The demo's migrations, for suites that need tenants but no tables of their own (provisioning needs migrations). */
export const DEMO_MIGRATIONS = fileURLToPath(new URL('../../demo/migrations', import.meta.url))

/** The admin URL of the test PostgreSQL server (trust auth on this machine and in CI). */
export const PG_ADMIN_URL = process.env.TENANTRY_TEST_PG_URL ?? process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'

let available: Promise<boolean> | undefined

/**
 * Whether a real PostgreSQL server answers. In CI it must: a missing server fails the run instead
 * of silently skipping the PostgreSQL half of every suite.
 */
export function postgresAvailable(): Promise<boolean> {
  available ??= (async () => {
    const client = new pg.Client({ connectionString: PG_ADMIN_URL, connectionTimeoutMillis: 2000 })
    try {
      await client.connect()
      await client.end()
      return true
    } catch (err) {
      if (process.env.CI) throw new Error(`CI=true but PostgreSQL at ${PG_ADMIN_URL} is not reachable: ${String(err)}`)
      console.warn(`[tenantry tests] PostgreSQL at ${PG_ADMIN_URL} is not reachable: its half of the suites is SKIPPED.`)
      return false
    }
  })()
  return available
}

/** A fresh database on the test server, named from the test file; returns its admin URL. */
export async function freshDatabase(name: string): Promise<string> {
  const safe = name.toLowerCase().replace(/[^a-z0-9_]/g, '_').slice(0, 50)
  const admin = new pg.Client({ connectionString: PG_ADMIN_URL })
  await admin.connect()
  try {
    await admin.query(`DROP DATABASE IF EXISTS "${safe}" WITH (FORCE)`)
    await admin.query(`CREATE DATABASE "${safe}"`)
  } finally {
    await admin.end()
  }
  const url = new URL(PG_ADMIN_URL)
  url.pathname = `/${safe}`
  return url.toString()
}

/** Drop a database made by {@link freshDatabase}. */
export async function dropDatabase(name: string): Promise<void> {
  const safe = name.toLowerCase().replace(/[^a-z0-9_]/g, '_').slice(0, 50)
  const admin = new pg.Client({ connectionString: PG_ADMIN_URL })
  await admin.connect()
  try {
    await admin.query(`DROP DATABASE IF EXISTS "${safe}" WITH (FORCE)`)
  } finally {
    await admin.end()
  }
}

/** A fresh in-memory PGlite instance. */
export async function freshPGlite(): Promise<PGlite> {
  const db = new PGlite()
  await db.waitReady
  return db
}

/**
 * Drop what a run on the test server leaves behind: the databases named with `prefix` (tenant
 * databases `<prefix>_t_…` and the template), the test database `database`, then the roles.
 */
export async function dropPostgresLeftovers(prefix: string, database: string): Promise<void> {
  const like = (s: string) => s.replace(/_/g, '\\_')
  const admin = new pg.Client({ connectionString: PG_ADMIN_URL })
  await admin.connect()
  try {
    const dbs = await admin.query<{ datname: string }>('SELECT datname FROM pg_database WHERE datname LIKE $1', [`${like(prefix)}\\_%`])
    for (const { datname } of dbs.rows) {
      await admin.query(`ALTER DATABASE "${datname}" IS_TEMPLATE false`)
      await admin.query(`DROP DATABASE IF EXISTS "${datname}" WITH (FORCE)`)
    }
    await dropDatabase(database)
    const roles = await admin.query<{ rolname: string }>('SELECT rolname FROM pg_roles WHERE rolname LIKE $1', [`${like(prefix)}\\_%`])
    for (const { rolname } of roles.rows) {
      await admin.query(`DROP OWNED BY "${rolname}"`)
      await admin.query(`DROP ROLE "${rolname}"`)
    }
  } finally {
    await admin.end()
  }
}

/** The outcome of a promise as one comparable string: a Tenantry code, `pg:<sqlstate>`, or `ok`. */
export async function outcome(p: Promise<unknown>): Promise<string> {
  try {
    await p
    return 'ok'
  } catch (err) {
    if (err instanceof TenantryError) return err.code
    const code = (err as { code?: unknown } | null)?.code
    return typeof code === 'string' ? `pg:${code}` : `error:${String((err as Error)?.message ?? err)}`
  }
}

/** One backend of a suite that loops over both: a real server (a fresh database) and PGlite. */
export interface Backend {
  name: 'PostgreSQL' | 'PGlite'
  enabled: boolean
  /** The admin URL of a fresh database on the test server; undefined for PGlite (`dataDir: 'memory'`). */
  url(): Promise<string | undefined>
  cleanUp(): Promise<void>
}

/**
 * The two backends of a suite, its database and role prefix named from its file.
 *
 * @example
 * ```ts
 * for (const backend of backends('tenantry_test_x', 'th_x', await postgresAvailable())) suite(backend)
 * ```
 */
export function backends(database: string, rolePrefix: string, postgresUp: boolean): Backend[] {
  return [
    {
      name: 'PostgreSQL',
      enabled: postgresUp,
      async url() {
        await dropPostgresLeftovers(rolePrefix, database)
        return freshDatabase(database)
      },
      cleanUp: () => dropPostgresLeftovers(rolePrefix, database),
    },
    { name: 'PGlite', enabled: true, url: async () => undefined, async cleanUp() {} },
  ]
}
