// The one file of src/verify that talks to PostgreSQL directly: the scratch database must exist
// before a Tenantry can be opened on it, and must be dropped after that Tenantry is closed, so
// neither can go through the public API. Nothing here touches any database but the scratch one
// and the `<prefix>_*` databases and roles the run created.
import pg from 'pg'
import { quoteIdent } from '../core/index.ts'

const likePrefix = (prefix: string) => `${prefix.replace(/_/g, '\\_')}\\_%`

/** A scratch database on the server of `adminUrl`, and how to remove it with everything made under `prefix`. */
export interface Scratch {
  /** Admin URL of the scratch database. */
  url: string
  database: string
  /** Drop the scratch database, every `<prefix>_*` database and every `<prefix>_*` role. */
  drop(): Promise<string[]>
}

/**
 * Create a database named `database` on the server of `adminUrl` (a superuser or a role with
 * CREATEDB and CREATEROLE). Refuses a name that is taken: a scratch database is always new.
 *
 * @example
 * ```ts
 * const scratch = await createScratch('postgres://postgres@127.0.0.1/postgres', 'tv_1a2b_scratch', 'tv_1a2b')
 * try { … } finally { await scratch.drop() }
 * ```
 */
export async function createScratch(adminUrl: string, database: string, prefix: string): Promise<Scratch> {
  const maintenance = withDatabase(adminUrl, 'postgres')
  await withClient(maintenance, async (c) => {
    const taken = await c.query('SELECT 1 FROM pg_database WHERE datname = $1', [database])
    if (taken.rowCount) throw new Error(`Database '${database}' already exists; the isolation suite only runs in a database it creates.`)
    await c.query(`CREATE DATABASE ${quoteIdent(database)}`)
  })
  return {
    url: withDatabase(adminUrl, database),
    database,
    drop: () => dropScratch(maintenance, database, prefix),
  }
}

async function dropScratch(maintenance: string, database: string, prefix: string): Promise<string[]> {
  return withClient(maintenance, async (c) => {
    const dropped: string[] = []
    const dbs = await c.query<{ datname: string }>('SELECT datname FROM pg_database WHERE datname = $1 OR datname LIKE $2', [database, likePrefix(prefix)])
    for (const { datname } of dbs.rows) {
      await c.query(`ALTER DATABASE ${quoteIdent(datname)} IS_TEMPLATE false`).catch(() => undefined)
      await c.query(`DROP DATABASE IF EXISTS ${quoteIdent(datname)} WITH (FORCE)`)
    }
    dropped.push(`${dbs.rowCount} databases`)
    const roles = await c.query<{ rolname: string }>('SELECT rolname FROM pg_roles WHERE rolname LIKE $1 ORDER BY rolname = $2, rolname', [likePrefix(prefix), `${prefix}_app`])
    // The databases holding their objects are gone; what is left are grants between the roles.
    for (let i = 0; i < roles.rows.length; i += 200) {
      await c.query(`DROP ROLE IF EXISTS ${roles.rows.slice(i, i + 200).map((r) => quoteIdent(r.rolname)).join(', ')}`)
    }
    dropped.push(`${roles.rowCount} roles`)
    return dropped
  })
}

export function withDatabase(url: string, database: string): string {
  const u = new URL(url)
  u.pathname = `/${encodeURIComponent(database)}`
  return u.toString()
}

async function withClient<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000 })
  c.on('error', () => undefined)
  await c.connect()
  try {
    return await fn(c)
  } finally {
    await c.end().catch(() => undefined)
  }
}
