import pg from 'pg'
import { PGlite } from '@electric-sql/pglite'

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
