/**
 * Database-tier tenants by the thousand under a small connection budget (connections sampled, cold first-query p95), schema-tier by the thousand with backend memory bounded by connection recycling, and a mixed load over a few databases.
 *
 * `npm run bench -- db-scale [--tenants 1000] [--schemas 1000] [--budget 20] [--concurrency 8] [--passes 2]
 *                             [--mem-budget 4] [--mem-passes 3] [--recycle 100] [--url postgres://…] [--keep]`
 *
 * By default on a PRIVATE PostgreSQL cluster (initdb in a temp dir, fsync off, max_connections 50;
 * test/fixtures/guard-servers.ts): a thousand databases is 7–8 GB of catalog files and heavy I/O
 * that a shared server should not take in the middle of other work. `--url` uses an existing
 * server instead (a superuser URL; own database `tenantry_bench_dbscale`, role prefix `tb_dbs`).
 *
 * 1. database tier: --tenants database-tier tenants are provisioned, then each is served one
 *    statement in a random order (--passes times, --concurrency in flight), with the server-side
 *    connection count (pg_stat_activity, every client backend but the sampler) sampled every 50 ms.
 *    Baselines in the same run: the warm latency (the same tenant again at once) and the raw floor
 *    (a fresh pg.Client to that database: connect, query, end).
 * 2. mixed load: 16 statements in flight for 5 s over 1, 2 and 3 tenant databases, budget 20:
 *    statements/s and connections opened (pg_stat_database.sessions) per 100 statements.
 * 3. schema tier: --schemas schema-tier tenants, served in random order --mem-passes times with a
 *    budget of --mem-budget connections, once with connections never recycled and once recycled
 *    after serving --recycle distinct schemas (`maxSchemasPerConnection`); the largest private memory (RssAnon) of any app backend is the
 *    figure (the catalog cache a backend builds up across schemas).
 * The last line is one JSON object: tenants, max_connections, errors, cold_p95_ms…
 */
import { readFileSync } from 'node:fs'
import { mkdtempSync, rmSync } from 'node:fs'
import { cpus, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import pg from 'pg'
import { createTenantry, type Tenant, type Tenantry } from '../src/index.ts'
import { PrivatePostgres, privatePostgresPossible } from '../test/fixtures/guard-servers.ts'
import { printTable, round } from './lib/load.ts'
import { cleanupPrefix, intFlag, mapLimit, percentiles, withDatabase, writeTableMigrations } from './provision.ts'

const DATABASE = 'tenantry_bench_dbscale'
const PREFIX = 'tb_dbs'
const log = (msg: string) => process.stderr.write(`[db-scale] ${msg}\n`)
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Client backends of the server, sampled; the sampler's own connection is not counted. */
function connectionSampler(admin: pg.Client, appRole: string) {
  let max = 0
  let maxApp = 0
  let samples = 0
  let stopped = false
  const loop = (async () => {
    while (!stopped) {
      const r = await admin.query<{ all: string; app: string }>(
        `SELECT count(*) FILTER (WHERE pid <> pg_backend_pid()) AS all, count(*) FILTER (WHERE usename = $1) AS app FROM pg_stat_activity WHERE backend_type = 'client backend'`,
        [appRole],
      ).catch(() => null)
      if (r) {
        samples++
        max = Math.max(max, Number(r.rows[0].all))
        maxApp = Math.max(maxApp, Number(r.rows[0].app))
      }
      await sleep(50)
    }
  })()
  return {
    async stop() {
      stopped = true
      await loop
      return { max, maxApp, samples }
    },
  }
}

function rssAnonKb(pid: number): number {
  try {
    const m = /RssAnon:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m ? Number(m[1]) : 0
  } catch {
    return 0
  }
}

function shuffle<T>(xs: T[]): T[] {
  const a = [...xs]
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1))
    ;[a[i], a[j]] = [a[j], a[i]]
  }
  return a
}

export default async function dbScale(argv: string[]): Promise<number> {
  const { values: f } = parseArgs({
    args: argv,
    strict: true,
    options: {
      tenants: { type: 'string' }, schemas: { type: 'string' }, budget: { type: 'string' }, concurrency: { type: 'string' }, passes: { type: 'string' },
      'mem-budget': { type: 'string' }, 'mem-passes': { type: 'string' }, recycle: { type: 'string' }, url: { type: 'string' }, keep: { type: 'boolean', default: false },
    },
  })
  const nDb = intFlag('tenants', f.tenants, 1000, 0)
  const nSchema = intFlag('schemas', f.schemas, 1000, 0)
  const budget = intFlag('budget', f.budget, 20)
  const concurrency = intFlag('concurrency', f.concurrency, 8)
  const passes = intFlag('passes', f.passes, 2)
  const memBudget = intFlag('mem-budget', f['mem-budget'], 4)
  const memPasses = intFlag('mem-passes', f['mem-passes'], 3)
  const recycle = intFlag('recycle', f.recycle, 100)

  let server: PrivatePostgres | undefined
  let adminUrl = f.url
  if (!adminUrl) {
    if (!privatePostgresPossible()) {
      console.error('db-scale: initdb/pg_ctl not found; install the PostgreSQL server package or pass --url postgres://… (a superuser URL).')
      return 1
    }
    log('starting a private PostgreSQL cluster (initdb, fsync off)…')
    server = await PrivatePostgres.create()
    adminUrl = server.url
  }
  const admin = new pg.Client({ connectionString: adminUrl })
  admin.on('error', () => undefined)
  let pgVersion = ''
  let maxConnSetting = 0
  const dir = mkdtempSync(join(tmpdir(), 'tenantry-bench-dbscale-'))
  writeTableMigrations(dir, 5, 1)
  const summary: Record<string, unknown> = { benchmark: 'db-scale' }
  const rows: (string | number)[][] = []
  let errors = 0
  const load0 = loadavg().map((l) => l.toFixed(2)).join(' ')
  let t: Tenantry | undefined
  try {
    await admin.connect()
    pgVersion = (await admin.query<{ v: string }>(`SELECT current_setting('server_version') AS v`)).rows[0].v
    maxConnSetting = Number((await admin.query<{ m: string }>(`SELECT current_setting('max_connections') AS m`)).rows[0].m)
    await cleanupPrefix(admin, DATABASE, PREFIX)
    await admin.query(`CREATE DATABASE ${DATABASE}`)
    const dbUrl = withDatabase(adminUrl, DATABASE)
    t = await createTenantry({ databaseUrl: dbUrl, migrations: dir, rolePrefix: PREFIX, connectionBudget: budget, guard: { redis: null } })
    const tenantry = t
    await tenantry.migrate()
    const appRole = `${PREFIX}_app`

    // ── 1. database tier ──
    if (nDb > 0) {
      const started = Date.now()
      const dbTenants: Tenant[] = []
      // One at a time: clones of the template are serialised by its lock anyway.
      for (let i = 0; i < nDb; i++) {
        dbTenants.push(await tenantry.provision({ slug: `db-${i + 1}`, tier: 'database' }))
        if ((i + 1) % 100 === 0) log(`  ${i + 1}/${nDb} database tenants provisioned (${((Date.now() - started) / 1000).toFixed(0)} s)`)
      }
      const provisionS = (Date.now() - started) / 1000
      log(`${nDb} database tenants in ${provisionS.toFixed(0)} s; serving them in random order, ${passes} passes, ${concurrency} in flight, budget ${budget}`)
      await sleep(1000)
      const cold: number[] = []
      const warm: number[] = []
      const sampler = connectionSampler(admin, appRole)
      const serveStarted = Date.now()
      for (let p = 0; p < passes; p++) {
        await mapLimit(shuffle(dbTenants), concurrency, async (x) => {
          const h = tenantry.handle(x)
          try {
            let t0 = performance.now()
            await h.query('SELECT count(*) FROM t01')
            cold.push(performance.now() - t0)
            t0 = performance.now()
            await h.query('SELECT count(*) FROM t01')
            warm.push(performance.now() - t0)
          } catch (err) {
            errors++
            if (errors <= 5) log(`error: ${(err as Error).message}`)
          }
        })
      }
      const serveS = (Date.now() - serveStarted) / 1000
      const conns = await sampler.stop()
      // The floor: a fresh connection straight to the tenant's database (as its owner, no pool).
      const raw: number[] = []
      for (const x of shuffle(dbTenants).slice(0, 200)) {
        const t0 = performance.now()
        const c = new pg.Client({ connectionString: withDatabase(adminUrl, x.placement.database) })
        await c.connect()
        await c.query('SELECT count(*) FROM t01')
        await c.end()
        raw.push(performance.now() - t0)
      }
      const qc = percentiles(cold)
      const qw = percentiles(warm)
      const qr = percentiles(raw)
      rows.push(['database tier: cold first query (Tenantry)', qc.n, round(qc.p50, 2), round(qc.p95, 2), round(qc.max, 1)])
      rows.push(['database tier: warm (same tenant at once)', qw.n, round(qw.p50, 2), round(qw.p95, 2), round(qw.max, 1)])
      rows.push(['floor: new pg.Client, query, end', qr.n, round(qr.p50, 2), round(qr.p95, 2), round(qr.max, 1)])
      Object.assign(summary, {
        tenants: nDb,
        max_connections: conns.max,
        max_app_connections: conns.maxApp,
        connection_samples: conns.samples,
        connection_budget: budget,
        errors,
        cold_p50_ms: round(qc.p50, 2),
        cold_p95_ms: round(qc.p95, 2),
        warm_p95_ms: round(qw.p95, 2),
        raw_connect_p95_ms: round(qr.p95, 2),
        cold_to_raw_p95: round(qc.p95 / qr.p95, 2),
        served_per_s: round((cold.length + warm.length) / serveS, 1),
        provision_s: round(provisionS, 1),
        target_met: conns.max <= 40 && errors === 0,
      })
      log(`database tier: max ${conns.max} connections (${conns.maxApp} of the app role) over ${conns.samples} samples, ${errors} errors, cold p95 ${qc.p95.toFixed(1)} ms`)
    }

    // ── 2. mixed load over a few databases ──
    {
      const few: Tenant[] = []
      for (let i = 0; i < 3; i++) few.push((await tenantry.findTenant(`db-${i + 1}`)) ?? (await tenantry.provision({ slug: `db-${i + 1}`, tier: 'database' })))
      const sessions = async () => Number((await admin.query<{ s: string }>(`SELECT coalesce(sum(sessions), 0) AS s FROM pg_stat_database WHERE datname LIKE $1`, [`${PREFIX}\\_%`])).rows[0].s)
      const mixed: Record<string, number> = {}
      for (const n of [1, 2, 3]) {
        const set = few.slice(0, n)
        for (const x of set) await tenantry.handle(x).query('SELECT 1')
        const s0 = await sessions()
        let q = 0
        const end = Date.now() + 5000
        await Promise.all(Array.from({ length: 16 }, async (_, w) => {
          while (Date.now() < end) {
            await tenantry.handle(set[(q + w) % n]).query('SELECT count(*) FROM t01')
            q++
          }
        }))
        const opened = (await sessions()) - s0
        rows.push([`mixed load over ${n} database(s), 16 in flight`, q, round(q / 5, 0), round((opened / q) * 100, 2), opened])
        mixed[`mixed_${n}db_per_s`] = round(q / 5, 0)
        mixed[`mixed_${n}db_opened_per_100`] = round((opened / q) * 100, 2)
        log(`mixed load over ${n} database(s): ${Math.round(q / 5)} statements/s, ${opened} connections opened`)
      }
      Object.assign(summary, mixed)
    }

    // ── 3. schema tier, backend memory ──
    if (nSchema > 0) {
      const started = Date.now()
      const slugs = Array.from({ length: nSchema }, (_, i) => `sc-${i + 1}`)
      let made = 0
      await mapLimit(slugs, 8, async (slug) => {
        await tenantry.provision({ slug, tier: 'schema' })
        if (++made % 200 === 0) log(`  ${made}/${nSchema} schema tenants provisioned (${((Date.now() - started) / 1000).toFixed(0)} s)`)
      })
      const schemaTenants = await tenantry.catalog.list({ tier: 'schema' })
      for (const [label, maxSchemas] of [['never recycled', 1e9], [`recycled after ${recycle} schemas`, recycle]] as const) {
        const m = await createTenantry({ databaseUrl: dbUrl, migrations: dir, rolePrefix: PREFIX, connectionBudget: memBudget, maxUsesPerConnection: 1e9, maxSchemasPerConnection: maxSchemas, guard: { redis: null }, resumeOperations: false })
        let maxKb = 0
        let stop = false
        const watch = (async () => {
          while (!stop) {
            const pids = await admin.query<{ pid: number }>(`SELECT pid FROM pg_stat_activity WHERE usename = $1 AND datname = $2`, [appRole, DATABASE]).catch(() => ({ rows: [] as { pid: number }[] }))
            for (const { pid } of pids.rows) maxKb = Math.max(maxKb, rssAnonKb(pid))
            await sleep(100)
          }
        })()
        const t0 = Date.now()
        let n = 0
        for (let p = 0; p < memPasses; p++) {
          await mapLimit(shuffle(schemaTenants), memBudget, async (x) => {
            try {
              await m.handle(x).query('SELECT count(*) FROM t01 JOIN t02 ON t02.parent_id = t01.id')
              n++
            } catch (err) {
              errors++
              if (errors <= 5) log(`error: ${(err as Error).message}`)
            }
          })
        }
        stop = true
        await watch
        await m.close()
        rows.push([`schema tier, ${nSchema} schemas × ${memPasses}, budget ${memBudget}, ${label}`, n, round(n / ((Date.now() - t0) / 1000), 0), round(maxKb / 1024, 1), '-'])
        summary[maxSchemas === recycle ? 'schema_backend_max_mb_recycled' : 'schema_backend_max_mb_unrecycled'] = round(maxKb / 1024, 1)
        log(`schema tier ${label}: largest app backend ${(maxKb / 1024).toFixed(1)} MB private memory`)
      }
      Object.assign(summary, { schema_tenants: nSchema, schema_recycle_after: recycle, errors })
    }
  } finally {
    await t?.close().catch(() => undefined)
    // A private cluster goes as a whole; on a given server, drop what this run made.
    if (!f.keep && !server) await cleanupPrefix(admin, DATABASE, PREFIX).catch((err) => log(`cleanup failed: ${(err as Error).message}`))
    await admin.end().catch(() => undefined)
    await server?.close()
    rmSync(dir, { recursive: true, force: true })
  }

  console.log(`\ndb-scale: PostgreSQL ${pgVersion} (${server ? 'private cluster' : 'given server'}, max_connections ${maxConnSetting}), node ${process.version}, ${cpus().length} cores, load average ${load0} → ${loadavg().map((l) => l.toFixed(2)).join(' ')}\n`)
  printTable(['what', 'n', 'p50 ms | per s', 'p95 ms | opened/100 | MB', 'max ms | opened'], rows)
  summary.errors = errors
  if ('max_connections' in summary) summary.target_met = Number(summary.max_connections) <= 40 && errors === 0
  console.log(JSON.stringify(summary))
  return errors === 0 ? 0 : 1
}
