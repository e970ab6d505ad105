/**
 * Provisioning latency per tier (pooled, schema, database) with 1,000 tenants already present, against the naive paths (a transaction per migration file; CREATE DATABASE + migrations).
 *
 * `npm run bench -- provision [--pooled 50] [--schema 50] [--database 20] [--present 1000] [--present-schema 100]
 *                             [--present-database 20] [--tables 20] [--files 20] [--concurrency 8] [--keep] [--check]`
 *
 * Real PostgreSQL (`BENCH_PG_URL`, default postgres://postgres@127.0.0.1:5432/postgres, a superuser),
 * own database `tenantry_bench_provision` and role prefix `tb_prov`, removed before and after.
 * Migrations: a generated set of --tables tenant tables (tenant_id, forced RLS, tenant-scoped
 * policies, tenant-led keys, foreign keys and indexes) in --files files, in a temporary directory.
 *
 * 1. Fill: --present tenants (--present-database on the database tier, --present-schema on the
 *    schema tier, the rest pooled), provisioned through `tenantry.provision` --concurrency at a time.
 * 2. Measure, one tenant at a time, Tenantry's `provision()` per tier, interleaved with:
 *    - schema: the naive path the anchors take (CREATE SCHEMA, then every file in its own
 *      transaction with its ledger row, on an open connection), and the raw floor (CREATE SCHEMA
 *      + every file in ONE transaction, no role, no catalog);
 *    - database: the naive path (CREATE DATABASE from template1, connect, bootstrap, every file in
 *      its own transaction), and the raw floor (`CREATE DATABASE … TEMPLATE` alone).
 *    The naive paths create no role and write no catalog row or operation record: they do less
 *    than Tenantry, so the ratios favour the baseline.
 * Prints a table; the last line is one JSON object (pooled_p95_ms, schema_p95_ms, database_p95_ms…).
 */
import { mkdtempSync, mkdirSync, rmSync, writeFileSync, readFileSync } from 'node:fs'
import { tmpdir, loadavg, cpus } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import pg from 'pg'
import { createTenantry, loadMigrations, type MigrationFile, type Tenantry, type Tier } from '../src/index.ts'
import { printTable, round, waitForQuiet } from './lib/load.ts'

const DATABASE = 'tenantry_bench_provision'
const ROLE_PREFIX = 'tb_prov'
const TARGET_MS: Record<Tier, number> = { pooled: 20, schema: 300, database: 2000 }

const log = (msg: string) => process.stderr.write(`[provision] ${msg}\n`)

// ─── helpers shared with bench/migrate.ts ───────────────────────────────────────────────────────

export const DEFAULT_PG_URL = 'postgres://postgres@127.0.0.1:5432/postgres'

export function redact(url: string): string {
  return url.replace(/:[^:@/]*@/, ':***@')
}

export function withDatabase(url: string, database: string): string {
  const u = new URL(url)
  u.pathname = `/${database}`
  return u.toString()
}

const ident = (name: string) => `"${name.replace(/"/g, '""')}"`
const likePrefix = (prefix: string) => `${prefix.replace(/_/g, '\\_')}\\_%`

/** Connect to the admin URL or explain how to point the benchmark at PostgreSQL. */
export async function connectAdmin(name: string, url: string): Promise<pg.Client | null> {
  const admin = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3000 })
  try {
    await admin.connect()
  } catch (err) {
    console.error(
      `${name}: PostgreSQL at ${redact(url)} is not reachable (${(err as Error).message}).\n` +
        `Start PostgreSQL or set BENCH_PG_URL to a superuser URL, e.g. BENCH_PG_URL=${DEFAULT_PG_URL}`,
    )
    return null
  }
  admin.on('error', () => undefined)
  return admin
}

/**
 * Drop the bench database, every `<prefix>_*` database (tenant databases, the template, naive
 * copies) and every `<prefix>_*` role (tenant roles first, the app role last), in batches.
 */
export async function cleanupPrefix(admin: pg.Client, database: string, prefix: string): Promise<string[]> {
  const dropped: string[] = []
  const dbs = await admin.query<{ datname: string }>(
    `SELECT datname FROM pg_database WHERE datname = $1 OR datname LIKE $2 ORDER BY datname`,
    [database, likePrefix(prefix)],
  )
  for (const { datname } of dbs.rows) await admin.query(`DROP DATABASE IF EXISTS ${ident(datname)} WITH (FORCE)`)
  if (dbs.rowCount) dropped.push(`${dbs.rowCount} databases (${database}, ${prefix}_*)`)
  const roles = await admin.query<{ rolname: string }>(
    `SELECT rolname FROM pg_roles WHERE rolname LIKE $1 ORDER BY rolname = $2, rolname`,
    [likePrefix(prefix), `${prefix}_app`],
  )
  const names = roles.rows.map((r) => r.rolname)
  const app = names.filter((n) => n === `${prefix}_app`)
  const tenants = names.filter((n) => n !== `${prefix}_app`)
  for (let i = 0; i < tenants.length; i += 200) await admin.query(`DROP ROLE IF EXISTS ${tenants.slice(i, i + 200).map(ident).join(', ')}`)
  if (app.length) await admin.query(`DROP ROLE IF EXISTS ${ident(app[0])}`)
  if (names.length) dropped.push(`${names.length} roles ${prefix}_*`)
  return dropped
}

export interface Percentiles { n: number; p50: number; p95: number; p99: number; max: number; mean: number }

/** Nearest-rank percentiles of a sample (ms). */
export function percentiles(values: number[]): Percentiles {
  const s = [...values].sort((a, b) => a - b)
  const n = s.length
  const q = (p: number) => (n === 0 ? NaN : s[Math.min(n - 1, Math.max(0, Math.ceil((p / 100) * n) - 1))])
  return { n, p50: q(50), p95: q(95), p99: q(99), max: n ? s[n - 1] : NaN, mean: n ? s.reduce((a, b) => a + b, 0) / n : NaN }
}

function machineTicks(): { busy: number; total: number } {
  const v = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0].trim().split(/\s+/).slice(1).map(Number)
  const total = v.slice(0, 8).reduce((a, b) => a + b, 0)
  return { busy: total - v[3] - v[4], total }
}

/** Busy cores of the whole machine and of this process between start and stop. */
export function machineSampler(): { stop(): { busyCores: number; selfCores: number; seconds: number } } {
  const t0 = process.hrtime.bigint()
  const m0 = machineTicks()
  const c0 = process.cpuUsage()
  return {
    stop() {
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9
      const m1 = machineTicks()
      const c = process.cpuUsage(c0)
      return { busyCores: (m1.busy - m0.busy) / 100 / seconds, selfCores: (c.user + c.system) / 1e6 / seconds, seconds }
    },
  }
}

export function loadAverage(): string {
  return loadavg().map((l) => l.toFixed(2)).join(' ')
}

/** Run `fn` over `items`, at most `concurrency` at once; the first error stops new work and is thrown. */
export async function mapLimit<T>(items: T[], concurrency: number, fn: (item: T, index: number) => Promise<void>, onProgress?: (done: number) => void): Promise<void> {
  let next = 0
  let done = 0
  let failed: unknown
  const worker = async () => {
    while (failed === undefined && next < items.length) {
      const i = next++
      try {
        await fn(items[i], i)
      } catch (err) {
        failed ??= err
        return
      }
      done++
      onProgress?.(done)
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, items.length)) }, worker))
  if (failed !== undefined) throw failed
}

export function intFlag(name: string, value: string | undefined, fallback: number, min = 1): number {
  if (value === undefined) return fallback
  const n = Number(value)
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer ≥ ${min}, got '${value}'`)
  return n
}

export function fmt(n: number, digits = 1): string {
  return Number.isFinite(n) ? n.toFixed(digits) : 'n/a'
}

/**
 * Write `tables` tenant tables as `files` migration files into `dir`: each table has tenant_id
 * (defaulting to the current tenant), a tenant-led primary key, a tenant-led foreign key to the
 * previous table with its index, a second tenant-led index, and forced row-level security with a
 * tenant-scoped policy.
 */
export function writeTableMigrations(dir: string, tables: number, files: number): void {
  mkdirSync(dir, { recursive: true })
  const perFile = Math.ceil(tables / files)
  for (let f = 0; f * perFile < tables; f++) {
    const parts: string[] = []
    for (let t = f * perFile + 1; t <= Math.min(tables, (f + 1) * perFile); t++) {
      const name = `t${String(t).padStart(2, '0')}`
      const parent = t > 1 ? `t${String(t - 1).padStart(2, '0')}` : null
      parts.push(`CREATE TABLE ${name} (
  tenant_id uuid NOT NULL DEFAULT tenantry.tenant_id(),
  id bigint GENERATED BY DEFAULT AS IDENTITY,
${parent ? '  parent_id bigint,\n' : ''}  name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
  status text NOT NULL DEFAULT 'new',
  amount numeric(12, 2) NOT NULL DEFAULT 0,
  payload jsonb NOT NULL DEFAULT '{}',
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, id)${parent ? `,\n  FOREIGN KEY (tenant_id, parent_id) REFERENCES ${parent} (tenant_id, id) ON DELETE CASCADE` : ''}
);
${parent ? `CREATE INDEX ${name}_parent_idx ON ${name} (tenant_id, parent_id);\n` : ''}CREATE INDEX ${name}_created_idx ON ${name} (tenant_id, created_at);
ALTER TABLE ${name} ENABLE ROW LEVEL SECURITY;
ALTER TABLE ${name} FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON ${name}
  USING (tenant_id = (SELECT tenantry.tenant_id()))
  WITH CHECK (tenant_id = (SELECT tenantry.tenant_id()));
`)
    }
    writeFileSync(join(dir, `${String(f + 1).padStart(4, '0')}_tables_${f + 1}.sql`), parts.join('\n'))
  }
}

// ─── the naive paths and the raw floors ─────────────────────────────────────────────────────────

/** What a database needs before the generated migrations run in it (as Tenantry's bootstrap). */
const NAIVE_BOOTSTRAP = `
CREATE SCHEMA IF NOT EXISTS tenantry;
CREATE OR REPLACE FUNCTION tenantry.tenant_id() RETURNS uuid
  LANGUAGE sql STABLE PARALLEL SAFE
  AS $$ SELECT nullif(current_setting('tenantry.tenant_id', true), '')::uuid $$;
CREATE SCHEMA IF NOT EXISTS bench_naive;
CREATE TABLE IF NOT EXISTS bench_naive.ledger (
  target text NOT NULL, version text NOT NULL, name text NOT NULL, checksum text NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (target, version));`

/** Every file in its own transaction with its ledger row, as django-tenants & co. do. */
async function runFilesOneByOne(c: pg.Client, schema: string, files: MigrationFile[]): Promise<void> {
  for (const f of files) {
    await c.query('BEGIN')
    try {
      await c.query(`SET LOCAL search_path TO ${ident(schema)}`)
      await c.query(f.sql)
      await c.query('INSERT INTO bench_naive.ledger (target, version, name, checksum) VALUES ($1, $2, $3, $4)', [schema, f.version, f.name, f.checksum])
      await c.query('COMMIT')
    } catch (err) {
      await c.query('ROLLBACK').catch(() => undefined)
      throw err
    }
  }
}

async function naiveSchema(c: pg.Client, schema: string, files: MigrationFile[]): Promise<void> {
  await c.query(`CREATE SCHEMA ${ident(schema)}`)
  await runFilesOneByOne(c, schema, files)
}

async function floorSchema(c: pg.Client, schema: string, files: MigrationFile[]): Promise<void> {
  await c.query('BEGIN')
  try {
    await c.query(`CREATE SCHEMA ${ident(schema)}`)
    await c.query(`SET LOCAL search_path TO ${ident(schema)}`)
    for (const f of files) {
      await c.query(f.sql)
      await c.query('INSERT INTO bench_naive.ledger (target, version, name, checksum) VALUES ($1, $2, $3, $4)', [schema, f.version, f.name, f.checksum])
    }
    await c.query('COMMIT')
  } catch (err) {
    await c.query('ROLLBACK').catch(() => undefined)
    throw err
  }
}

async function naiveDatabase(admin: pg.Client, adminUrl: string, database: string, files: MigrationFile[]): Promise<void> {
  await admin.query(`CREATE DATABASE ${ident(database)}`)
  const c = new pg.Client({ connectionString: withDatabase(adminUrl, database) })
  await c.connect()
  try {
    await c.query(NAIVE_BOOTSTRAP)
    await runFilesOneByOne(c, 'public', files)
  } finally {
    await c.end()
  }
}

// ─── the benchmark ──────────────────────────────────────────────────────────────────────────────

function usage(): string {
  return [
    'usage: npm run bench -- provision [--pooled N] [--schema N] [--database N] [--naive-schema N] [--naive-database N] [--floor N]',
    '                                  [--present N] [--present-schema N] [--present-database N] [--tables N] [--files N]',
    '                                  [--concurrency N] [--pool N] [--quiet-wait S] [--max-busy CORES] [--keep] [--check]',
    '  --pooled 50 --schema 50 --database 20   fresh tenants measured per tier, one at a time',
    '  --naive-schema 50 --naive-database 20   naive baseline runs (default: as many as the tier)',
    '  --floor 20          raw floor runs per tier (CREATE SCHEMA + files in one transaction; CREATE DATABASE … TEMPLATE)',
    '  --present 1000      tenants present before measuring: --present-database 20 database, --present-schema 100 schema, the rest pooled',
    '  --tables 20 --files 20   generated tenant tables, and the migration files they are split into',
    '  --concurrency 8     schema/pooled provisions at once while filling (database: one at a time)   --pool 5   connection budget',
    '  --quiet-wait 120    seconds to wait before each tier for the machine to be quiet (--max-busy 0.5 cores)',
    '  --keep              leave the bench database and roles   --check    exit 1 when a target is missed',
  ].join('\n')
}

type PathName = 'tenantry' | 'naive' | 'floor'
interface Row { tier: Tier; path: PathName; samples: number[]; busyCores: number; selfCores: number }

export default async function provision(argv: string[]): Promise<number> {
  let flags
  try {
    flags = parseArgs({
      args: argv,
      strict: true,
      options: {
        pooled: { type: 'string' }, schema: { type: 'string' }, database: { type: 'string' },
        'naive-schema': { type: 'string' }, 'naive-database': { type: 'string' }, floor: { type: 'string' },
        present: { type: 'string' }, 'present-schema': { type: 'string' }, 'present-database': { type: 'string' },
        tables: { type: 'string' }, files: { type: 'string' }, concurrency: { type: 'string' }, pool: { type: 'string' },
        'quiet-wait': { type: 'string' }, 'max-busy': { type: 'string' },
        keep: { type: 'boolean', default: false }, check: { type: 'boolean', default: false }, help: { type: 'boolean', default: false },
      },
    }).values
  } catch (err) {
    console.error(`${(err as Error).message}\n${usage()}`)
    return 2
  }
  if (flags.help) {
    console.log(usage())
    return 0
  }
  let n: Record<Tier, number>, naiveN: { schema: number; database: number }, floorN: number
  let quietWait: number, maxBusy: number
  let present: number, presentSchema: number, presentDatabase: number, tables: number, fileCount: number, concurrency: number, pool: number
  try {
    n = { pooled: intFlag('pooled', flags.pooled, 50, 0), schema: intFlag('schema', flags.schema, 50, 0), database: intFlag('database', flags.database, 20, 0) }
    naiveN = { schema: intFlag('naive-schema', flags['naive-schema'], n.schema, 0), database: intFlag('naive-database', flags['naive-database'], n.database, 0) }
    floorN = intFlag('floor', flags.floor, 20, 0)
    present = intFlag('present', flags.present, 1000, 0)
    presentDatabase = intFlag('present-database', flags['present-database'], Math.min(20, present), 0)
    presentSchema = intFlag('present-schema', flags['present-schema'], Math.min(100, present - presentDatabase), 0)
    if (presentSchema + presentDatabase > present) throw new Error('--present-schema + --present-database must not exceed --present')
    tables = intFlag('tables', flags.tables, 20)
    fileCount = Math.min(tables, intFlag('files', flags.files, 20))
    concurrency = intFlag('concurrency', flags.concurrency, 8)
    pool = intFlag('pool', flags.pool, 5)
    quietWait = intFlag('quiet-wait', flags['quiet-wait'], 120, 0)
    maxBusy = flags['max-busy'] === undefined ? 0.5 : Number(flags['max-busy'])
    if (!(maxBusy > 0)) throw new Error('--max-busy must be a number of cores > 0')
  } catch (err) {
    console.error(`${(err as Error).message}\n${usage()}`)
    return 2
  }
  const presentPooled = present - presentSchema - presentDatabase

  const adminUrl = process.env.BENCH_PG_URL ?? DEFAULT_PG_URL
  const admin = await connectAdmin('provision', adminUrl)
  if (!admin) return 1
  const dbUrl = withDatabase(adminUrl, DATABASE)
  const dir = mkdtempSync(join(tmpdir(), 'tenantry-bench-provision-'))
  let tenantry: Tenantry | undefined
  let naiveClient: pg.Client | undefined

  let interrupted = false
  const onSignal = () => {
    if (interrupted) return
    interrupted = true
    log('interrupted: cleaning up')
    cleanupPrefix(admin, DATABASE, ROLE_PREFIX).catch(() => undefined).finally(() => process.exit(130))
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)

  const rows: Row[] = []
  let fillSeconds = 0
  let pgVersion = ''
  const load0 = loadAverage()
  try {
    const stale = await cleanupPrefix(admin, DATABASE, ROLE_PREFIX)
    if (stale.length) log(`removed leftovers of an earlier run: ${stale.join(', ')}`)
    pgVersion = (await admin.query<{ server_version: string }>('SHOW server_version')).rows[0].server_version
    await admin.query(`CREATE DATABASE ${DATABASE}`)
    writeTableMigrations(dir, tables, fileCount)
    const files = loadMigrations(dir)
    log(`${tables} tables in ${files.length} migration files in ${dir}`)

    tenantry = await createTenantry({ databaseUrl: dbUrl, migrations: dir, rolePrefix: ROLE_PREFIX, connectionBudget: pool })
    const t = tenantry
    const first = await t.migrate()
    if (first.state === 'failed') throw new Error(`migrating the pooled tables failed: ${first.targets.map((x) => x.error).filter(Boolean).join('; ')}`)
    naiveClient = new pg.Client({ connectionString: dbUrl })
    await naiveClient.connect()
    await naiveClient.query(NAIVE_BOOTSTRAP)

    // ── fill ──
    const fillStarted = Date.now()
    log(`filling: ${presentDatabase} database tenants one at a time, then ${presentSchema} schema and ${presentPooled} pooled tenants ${concurrency} at a time (load average ${load0})…`)
    // Database tenants one at a time: clones are serialised by the template's advisory lock
    // anyway, and eight database provisions at once evict the main database's owner pool from
    // PgServer's adminPools (an LRU of 8 pools), which the catalog holds: "Cannot use a pool
    // after calling end on the pool".
    await mapLimit(Array.from({ length: presentDatabase }, (_, i) => `fill-d-${i + 1}`), 1, async (slug) => { await t.provision({ slug, tier: 'database' }) })
    log(`  ${presentDatabase} database tenants (${((Date.now() - fillStarted) / 1000).toFixed(1)} s)`)
    const fill: { slug: string; tier: Tier }[] = [
      ...Array.from({ length: presentSchema }, (_, i) => ({ slug: `fill-s-${i + 1}`, tier: 'schema' as Tier })),
      ...Array.from({ length: presentPooled }, (_, i) => ({ slug: `fill-p-${i + 1}`, tier: 'pooled' as Tier })),
    ]
    await mapLimit(fill, concurrency, async (x) => { await t.provision(x) }, (done) => {
      if (done % 100 === 0 || done === fill.length) log(`  ${presentDatabase + done}/${present} tenants (${((Date.now() - fillStarted) / 1000).toFixed(1)} s)`)
    })
    fillSeconds = (Date.now() - fillStarted) / 1000
    const counted = await admin.query<{ n: string }>(`SELECT count(*) AS n FROM pg_database WHERE datname LIKE $1`, [`${ROLE_PREFIX.replace(/_/g, '\\_')}\\_t\\_%`])
    const catalogCount = (await t.catalog.list()).length
    log(`fill done in ${fillSeconds.toFixed(1)} s: ${catalogCount} tenants in the catalog, ${counted.rows[0].n} tenant databases`)

    // ── measure ──
    const measureTier = async (tier: Tier) => {
      const paths: { path: PathName; count: number; run: (i: number) => Promise<void> }[] = [
        { path: 'tenantry', count: n[tier], run: async (i) => { await t.provision({ slug: `m-${tier[0]}-${i + 1}`, tier }) } },
      ]
      if (tier === 'schema') {
        paths.push({ path: 'naive', count: naiveN.schema, run: (i) => naiveSchema(naiveClient!, `naive_s_${i + 1}`, files) })
        paths.push({ path: 'floor', count: floorN, run: (i) => floorSchema(naiveClient!, `floor_s_${i + 1}`, files) })
      } else if (tier === 'database') {
        paths.push({ path: 'naive', count: naiveN.database, run: (i) => naiveDatabase(admin, adminUrl, `${ROLE_PREFIX}_t_naive_${i + 1}`, files) })
        paths.push({
          path: 'floor',
          count: floorN,
          run: async (i) => { await admin.query(`CREATE DATABASE ${ident(`${ROLE_PREFIX}_t_floor_${i + 1}`)} TEMPLATE ${ident(`${ROLE_PREFIX}_template`)}`) },
        })
      }
      const samples = new Map<PathName, number[]>(paths.map((p) => [p.path, []]))
      const cpu = new Map<PathName, { busy: number; self: number; s: number }>(paths.map((p) => [p.path, { busy: 0, self: 0, s: 0 }]))
      const rounds = Math.max(...paths.map((p) => p.count))
      const quiet = await waitForQuiet({ maxBusyCores: maxBusy, timeoutMs: quietWait * 1000 })
      if (!quiet.quiet) log(`machine still busy after ${quietWait} s (${quiet.busy.toFixed(2)} of ${cpus().length} cores busy): measuring anyway`)
      log(`measuring ${tier}: ${paths.filter((p) => p.count > 0).map((p) => `${p.count} × ${p.path}`).join(', ')}, interleaved (load average ${loadAverage()})`)
      // Interleaved, so that whatever else the machine does at a moment weighs on every path alike.
      for (let i = 0; i < rounds; i++) {
        for (const p of paths) {
          if (i >= p.count) continue
          const sampler = machineSampler()
          const t0 = process.hrtime.bigint()
          await p.run(i)
          samples.get(p.path)!.push(Number(process.hrtime.bigint() - t0) / 1e6)
          const m = sampler.stop()
          const c = cpu.get(p.path)!
          c.busy += m.busyCores * m.seconds
          c.self += m.selfCores * m.seconds
          c.s += m.seconds
        }
      }
      for (const p of paths) {
        if (p.count === 0) continue
        const c = cpu.get(p.path)!
        rows.push({ tier, path: p.path, samples: samples.get(p.path)!, busyCores: c.busy / c.s, selfCores: c.self / c.s })
        const q = percentiles(samples.get(p.path)!)
        log(`  ${tier} ${p.path}: p50 ${fmt(q.p50)} ms, p95 ${fmt(q.p95)} ms, max ${fmt(q.max)} ms`)
      }
    }
    for (const tier of ['pooled', 'schema', 'database'] as Tier[]) await measureTier(tier)
  } finally {
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
    await naiveClient?.end().catch(() => undefined)
    await tenantry?.close().catch(() => undefined)
    rmSync(dir, { recursive: true, force: true })
    if (flags.keep) log(`--keep: left ${DATABASE}, the ${ROLE_PREFIX}_* databases and roles in place`)
    else {
      const t0 = Date.now()
      await cleanupPrefix(admin, DATABASE, ROLE_PREFIX).catch((err) => log(`cleanup failed: ${(err as Error).message}`))
      log(`cleaned up in ${((Date.now() - t0) / 1000).toFixed(1)} s`)
    }
    await admin.end().catch(() => undefined)
  }

  // ─── report ───────────────────────────────────────────────────────────────────────────────────
  const q = (tier: Tier, path: PathName) => {
    const r = rows.find((x) => x.tier === tier && x.path === path)
    return r ? percentiles(r.samples) : percentiles([])
  }
  const load1 = loadAverage()
  console.log(
    `\nprovision: ${present} tenants present (${presentPooled} pooled, ${presentSchema} schema, ${presentDatabase} database), ${tables} tables in ${fileCount} files; ` +
      `node ${process.version}, PostgreSQL ${pgVersion}, ${cpus().length} cores, load average ${load0} → ${load1}\n`,
  )
  const label: Record<PathName, string> = { tenantry: 'Tenantry provision()', naive: 'naive (file per transaction)', floor: 'raw floor' }
  const floorLabel: Record<Tier, string> = { pooled: '', schema: 'raw: schema + files in 1 tx', database: 'raw: CREATE DATABASE … TEMPLATE' }
  const naiveLabel: Record<Tier, string> = { pooled: '', schema: 'naive: CREATE SCHEMA + tx per file', database: 'naive: CREATE DATABASE + migrations' }
  printTable(
    ['tier', 'path', 'n', 'p50 ms', 'p95 ms', 'max ms', 'mean ms', 'target', 'busy cores', 'node cores'],
    rows.map((r) => {
      const p = percentiles(r.samples)
      const target = r.path === 'tenantry' ? `${p.p95 <= TARGET_MS[r.tier] ? 'met' : 'MISSED'} (p95 ≤ ${TARGET_MS[r.tier]})` : '-'
      const name = r.path === 'tenantry' ? label.tenantry : r.path === 'naive' ? naiveLabel[r.tier] : floorLabel[r.tier]
      return [r.tier, name, p.n, round(p.p50, 1), round(p.p95, 1), round(p.max, 1), round(p.mean, 1), target, round(r.busyCores, 2), round(r.selfCores, 2)]
    }),
  )
  const ratio = (a: number, b: number) => (Number.isFinite(a) && Number.isFinite(b) && b > 0 ? round(a / b, 2) : null)
  const pooled = q('pooled', 'tenantry')
  const schema = q('schema', 'tenantry')
  const database = q('database', 'tenantry')
  const naiveSchemaQ = q('schema', 'naive')
  const naiveDatabaseQ = q('database', 'naive')
  const met = {
    pooled: !(pooled.n > 0) || pooled.p95 <= TARGET_MS.pooled,
    schema: !(schema.n > 0) || schema.p95 <= TARGET_MS.schema,
    database: !(database.n > 0) || database.p95 <= TARGET_MS.database,
  }
  console.log(
    `\nnaive ÷ Tenantry (p50): schema ${ratio(naiveSchemaQ.p50, schema.p50) ?? 'n/a'}×, database ${ratio(naiveDatabaseQ.p50, database.p50) ?? 'n/a'}×. ` +
      `'busy cores' is the whole machine during that path (${cpus().length} cores; other engineers' work included).`,
  )
  const summary = {
    benchmark: 'provision',
    pooled_p50_ms: round(pooled.p50, 1),
    pooled_p95_ms: round(pooled.p95, 1),
    pooled_max_ms: round(pooled.max, 1),
    schema_p50_ms: round(schema.p50, 1),
    schema_p95_ms: round(schema.p95, 1),
    schema_max_ms: round(schema.max, 1),
    database_p50_ms: round(database.p50, 1),
    database_p95_ms: round(database.p95, 1),
    database_max_ms: round(database.max, 1),
    schema_naive_p50_ms: round(naiveSchemaQ.p50, 1),
    schema_naive_p95_ms: round(naiveSchemaQ.p95, 1),
    schema_naive_ratio: ratio(naiveSchemaQ.p50, schema.p50),
    schema_floor_p50_ms: round(q('schema', 'floor').p50, 1),
    database_naive_p50_ms: round(naiveDatabaseQ.p50, 1),
    database_naive_p95_ms: round(naiveDatabaseQ.p95, 1),
    database_naive_ratio: ratio(naiveDatabaseQ.p50, database.p50),
    database_floor_p50_ms: round(q('database', 'floor').p50, 1),
    pooled_target_met: met.pooled,
    schema_target_met: met.schema,
    database_target_met: met.database,
    target_met: met.pooled && met.schema && met.database,
    tenants_present: present,
    present_pooled: presentPooled,
    present_schema: presentSchema,
    present_database: presentDatabase,
    fill_s: round(fillSeconds, 1),
    fill_concurrency: concurrency,
    n_pooled: pooled.n,
    n_schema: schema.n,
    n_database: database.n,
    tables,
    files: fileCount,
    machine_busy_cores: round(Math.max(0, ...rows.map((r) => r.busyCores)), 2),
    load_average: load1,
  }
  console.log(JSON.stringify(summary))
  if (flags.check && !summary.target_met) return 1
  return 0
}
