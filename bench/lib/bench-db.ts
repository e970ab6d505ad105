/**
 * What the HTTP benchmarks (routing, observe) share besides load.ts: their scratch database and
 * roles on the local PostgreSQL, and fixed pseudo-random orders so every run sends the same
 * requests.
 */
import pg from 'pg'

/** The URL with its password hidden, for messages. */
export function redact(url: string): string {
  return url.replace(/:[^:@/]*@/, ':***@')
}

/** The URL pointed at another database of the same server. */
export function withDatabase(url: string, database: string): string {
  const u = new URL(url)
  u.pathname = `/${database}`
  return u.toString()
}

/** Drop the bench database, any `<rolePrefix>_*` database and the `<rolePrefix>_*` roles; returns what was dropped. */
export async function dropBenchLeftovers(admin: pg.Client, database: string, rolePrefix: string): Promise<string[]> {
  const dropped: string[] = []
  const like = `${rolePrefix.replace(/_/g, '\\_')}\\_%`
  const dbs = await admin.query<{ datname: string }>(
    'SELECT datname FROM pg_database WHERE datname = $1 OR datname LIKE $2 ORDER BY datname',
    [database, like],
  )
  for (const { datname } of dbs.rows) {
    await admin.query(`DROP DATABASE IF EXISTS "${datname.replace(/"/g, '""')}" WITH (FORCE)`)
    dropped.push(`database ${datname}`)
  }
  // Tenant roles first (members of nothing), the app role last.
  const roles = await admin.query<{ rolname: string }>(
    'SELECT rolname FROM pg_roles WHERE rolname LIKE $1 ORDER BY rolname = $2, rolname',
    [like, `${rolePrefix}_app`],
  )
  for (const { rolname } of roles.rows) await admin.query(`DROP ROLE IF EXISTS "${rolname.replace(/"/g, '""')}"`)
  if (roles.rowCount) dropped.push(`${roles.rowCount} roles ${rolePrefix}_*`)
  return dropped
}

/** A fixed pseudo-random sequence (a linear congruential generator). */
export function lcg(seed: number): () => number {
  let s = seed >>> 0
  return () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0)
}

/** A fixed pseudo-random permutation, so every run reads the same ids in the same order. */
export function shuffled<T>(items: T[], seed: number): T[] {
  const a = [...items]
  const next = lcg(seed)
  for (let i = a.length - 1; i > 0; i--) {
    const j = next() % (i + 1)
    ;[a[i], a[j]] = [a[j], a[i]]
  }
  return a
}

/**
 * Connect to `BENCH_PG_URL` (a superuser URL; default the local server), or print why not and
 * return null (the benchmark exits 1).
 *
 * @example
 * ```ts
 * const bench = await connectBenchAdmin('config')
 * if (!bench) return 1
 * ```
 */
export async function connectBenchAdmin(name: string): Promise<{ admin: pg.Client; adminUrl: string } | null> {
  const adminUrl = process.env.BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'
  const admin = new pg.Client({ connectionString: adminUrl, connectionTimeoutMillis: 3000 })
  try {
    await admin.connect()
  } catch (err) {
    console.error(`${name}: PostgreSQL at ${redact(adminUrl)} is not reachable (${(err as Error).message}). Start it or set BENCH_PG_URL to a superuser URL.`)
    return null
  }
  admin.on('error', () => undefined)
  return { admin, adminUrl }
}
