/**
 * Soak: a steady load across 1,000 tenants of all tiers for a fixed time (10 min by default), server RSS, connections and errors sampled.
 *
 * `npm run bench -- soak [--minutes 10] [--tenants 1000] [--schema 80] [--database 20] [--connections 32] [--pool 20] [--segment 60]`
 *
 * Real PostgreSQL (`BENCH_PG_URL`, default postgres://postgres@127.0.0.1:5432/postgres, a
 * superuser); own database `tenantry_bench_soak` and role prefix `tb_soak`, removed before and after.
 * --tenants tenants (--database on the database tier, --schema on the schema tier, the rest pooled),
 * each with one project. The demo app runs in a child process (bench/fixtures/scale-soak-server.ts);
 * autocannon, in another child, cycles through `GET /api/projects/:id` and `GET /api/projects` of
 * every tenant (`x-tenant`), in segments of --segment seconds back to back. Every 5 s: the server's
 * RSS (/proc) and the server-side connections of the app role (pg_stat_activity).
 * - rss_growth_pct: median RSS of the last fifth of the samples over the median of the first
 *   fifth (after the first segment, which is the warm-up), minus 1;
 * - leaked_connections: statements still holding a pool connection after the load stopped, plus
 *   app-role backends on the server beyond the connections the pool says it has open;
 * - errors: socket errors, timeouts and non-2xx responses over all segments.
 * The baseline is the run's own start: the first segment's throughput and p99 against the last's.
 * The last line is one JSON object.
 */
import { mkdtempSync, readFileSync, rmSync, copyFileSync } from 'node:fs'
import { cpus, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import pg from 'pg'
import { createTenantry, type Tier } from '../src/index.ts'
import { REPO_ROOT, killChildren, median, printTable, round, runLoad, startServer, type LoadResult } from './lib/load.ts'
import { DEFAULT_PG_URL, cleanupPrefix, connectAdmin, intFlag, mapLimit, withDatabase } from './provision.ts'

const DATABASE = 'tenantry_bench_soak'
const PREFIX = 'tb_soak'
const log = (msg: string) => process.stderr.write(`[soak] ${msg}\n`)
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

function rssMb(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m ? Number(m[1]) / 1024 : NaN
  } catch {
    return NaN
  }
}

export default async function soak(argv: string[]): Promise<number> {
  const { values: f } = parseArgs({
    args: argv,
    strict: true,
    options: {
      minutes: { type: 'string' }, tenants: { type: 'string' }, schema: { type: 'string' }, database: { type: 'string' },
      connections: { type: 'string' }, pool: { type: 'string' }, segment: { type: 'string' },
    },
  })
  const minutes = f.minutes === undefined ? 10 : Number(f.minutes)
  if (!(minutes > 0)) throw new Error('--minutes must be a number > 0')
  const nTenants = intFlag('tenants', f.tenants, 1000, 3)
  const nDatabase = intFlag('database', f.database, 20, 1)
  const nSchema = intFlag('schema', f.schema, 80, 1)
  const connections = intFlag('connections', f.connections, 32)
  const pool = intFlag('pool', f.pool, 20)
  const totalS = Math.round(minutes * 60)
  const segmentS = Math.max(5, Math.min(intFlag('segment', f.segment, 60), Math.floor(totalS / 3)))
  const segments = Math.max(3, Math.round(totalS / segmentS))

  const adminUrl = process.env.BENCH_PG_URL ?? DEFAULT_PG_URL
  const admin = await connectAdmin('soak', adminUrl)
  if (!admin) return 1
  const dbUrl = withDatabase(adminUrl, DATABASE)
  const migrations = mkdtempSync(join(tmpdir(), 'tenantry-bench-soak-'))
  copyFileSync(join(REPO_ROOT, 'demo/migrations/0001_projects_and_tasks.sql'), join(migrations, '0001_projects_and_tasks.sql'))
  const appRole = `${PREFIX}_app`
  const results: LoadResult[] = []
  const samples: { t: number; rss: number; conns: number }[] = []
  let leaked = 0
  let serverReport: Record<string, unknown> = {}
  const load0 = loadavg().map((l) => l.toFixed(2)).join(' ')
  const onSignal = () => { killChildren(); process.exit(130) }
  process.on('SIGINT', onSignal)
  try {
    await cleanupPrefix(admin, DATABASE, PREFIX)
    await admin.query(`CREATE DATABASE ${DATABASE}`)
    const setup = await createTenantry({ databaseUrl: dbUrl, migrations, rolePrefix: PREFIX, connectionBudget: 8, guard: { redis: null } })
    const requests: { path: string; headers: Record<string, string> }[] = []
    try {
      await setup.migrate()
      const started = Date.now()
      const plan: { slug: string; tier: Tier }[] = Array.from({ length: nTenants }, (_, i) => ({
        slug: `soak-${i + 1}`,
        tier: i < nDatabase ? 'database' : i < nDatabase + nSchema ? 'schema' : 'pooled',
      }))
      log(`provisioning ${nTenants} tenants (${nDatabase} database, ${nSchema} schema, ${nTenants - nDatabase - nSchema} pooled)…`)
      await mapLimit(plan.filter((p) => p.tier === 'database'), 1, async (p) => { await setup.provision(p) })
      await mapLimit(plan.filter((p) => p.tier !== 'database'), 8, async (p) => { await setup.provision(p) })
      for (const t of await setup.catalog.list()) {
        const { rows } = await setup.handle(t).query<{ id: string }>('INSERT INTO projects (name) VALUES ($1) RETURNING id', [`${t.slug} project`])
        requests.push({ path: `/api/projects/${rows[0].id}`, headers: { 'x-tenant': t.slug } }, { path: '/api/projects', headers: { 'x-tenant': t.slug } })
      }
      log(`${nTenants} tenants ready in ${((Date.now() - started) / 1000).toFixed(0)} s`)
    } finally {
      await setup.close()
    }
    // Every connection starts at another tenant, so the whole fleet is in play from the first second.
    for (let i = requests.length - 1; i > 0; i--) {
      const j = Math.floor(Math.random() * (i + 1))
      ;[requests[i], requests[j]] = [requests[j], requests[i]]
    }

    const server = await startServer('bench/fixtures/scale-soak-server.ts', { BENCH_DB_URL: dbUrl, BENCH_POOL: String(pool), BENCH_ROLE_PREFIX: PREFIX, BENCH_MIGRATIONS: migrations })
    const appConns = async () => Number((await admin.query<{ n: string }>(`SELECT count(*) AS n FROM pg_stat_activity WHERE usename = $1`, [appRole])).rows[0].n)
    let sampling = true
    const t0 = Date.now()
    const sampler = (async () => {
      while (sampling) {
        samples.push({ t: (Date.now() - t0) / 1000, rss: rssMb(server.pid), conns: await appConns().catch(() => NaN) })
        await sleep(5000)
      }
    })()
    log(`load: ${segments} segments of ${segmentS} s, ${connections} connections over ${requests.length} request kinds (${nTenants} tenants), pool ${pool}`)
    try {
      for (let s = 0; s < segments; s++) {
        const { result } = await runLoad({ url: server.url, requests, connections, warmupSeconds: 0, durationSeconds: segmentS }, { server: server.pid, postgresDatabase: DATABASE })
        results.push(result)
        log(`  segment ${s + 1}/${segments}: ${result.rps.toFixed(0)} req/s, p99 ${result.latency.p99.toFixed(1)} ms, errors ${result.errors + result.timeouts + result.non2xx}, RSS ${rssMb(server.pid).toFixed(0)} MB, app connections ${await appConns()}`)
      }
    } finally {
      sampling = false
      await sampler
      await sleep(1000)
      const serverSide = await appConns().catch(() => NaN)
      serverReport = await server.stop()
      const main = (serverReport.pool as Record<string, { open: number; busy: number; waiting: number }> | undefined)?.main
      leaked = (main?.busy ?? 0) + (main?.waiting ?? 0) + Math.max(0, serverSide - (main?.open ?? 0))
      log(`after the load: pool ${JSON.stringify(main)}, ${serverSide} app-role backends on the server`)
    }
  } finally {
    process.off('SIGINT', onSignal)
    killChildren()
    await cleanupPrefix(admin, DATABASE, PREFIX).catch((err) => log(`cleanup failed: ${(err as Error).message}`))
    await admin.end().catch(() => undefined)
    rmSync(migrations, { recursive: true, force: true })
  }

  const warm = samples.filter((s) => s.t >= segmentS && Number.isFinite(s.rss))
  const fifth = Math.max(1, Math.floor(warm.length / 5))
  const rssStart = median(warm.slice(0, fifth).map((s) => s.rss))
  const rssEnd = median(warm.slice(-fifth).map((s) => s.rss))
  const errors = results.reduce((n, r) => n + r.errors + r.timeouts + r.non2xx, 0)
  const requestsDone = results.reduce((n, r) => n + r.requests, 0)
  const first = results[0]
  const last = results[results.length - 1]
  console.log(`\nsoak: ${nTenants} tenants (${nDatabase} database, ${nSchema} schema, ${nTenants - nDatabase - nSchema} pooled), ${segments} × ${segmentS} s, ${connections} connections, pool ${pool}; node ${process.version}, ${cpus().length} cores, load average ${load0} → ${loadavg().map((l) => l.toFixed(2)).join(' ')}\n`)
  printTable(
    ['segment', 'req/s', 'p50 ms', 'p99 ms', 'errors'],
    results.map((r, i) => [i + 1, round(r.rps, 0), round(r.latency.p50, 2), round(r.latency.p99, 2), r.errors + r.timeouts + r.non2xx]),
  )
  console.log(`\nRSS (MB) every 5 s: ${samples.map((s) => s.rss.toFixed(0)).join(' ')}`)
  console.log(`app-role connections every 5 s: ${samples.map((s) => s.conns).join(' ')}`)
  const summary = {
    benchmark: 'soak',
    minutes: round(totalS / 60, 2),
    tenants: nTenants,
    requests: requestsDone,
    rss_start_mb: round(rssStart, 1),
    rss_end_mb: round(rssEnd, 1),
    rss_growth_pct: round((rssEnd / rssStart - 1) * 100, 2),
    leaked_connections: leaked,
    errors,
    max_app_connections: Math.max(0, ...samples.map((s) => s.conns).filter(Number.isFinite)),
    connection_budget: pool,
    first_segment_rps: round(first?.rps ?? NaN, 0),
    last_segment_rps: round(last?.rps ?? NaN, 0),
    last_to_first_rps: round((last?.rps ?? NaN) / (first?.rps ?? NaN), 2),
    first_segment_p99_ms: round(first?.latency.p99 ?? NaN, 2),
    last_segment_p99_ms: round(last?.latency.p99 ?? NaN, 2),
    target_met: (rssEnd / rssStart - 1) * 100 <= 10 && leaked === 0 && errors === 0,
  }
  console.log(JSON.stringify(summary))
  return summary.target_met ? 0 : 1
}
