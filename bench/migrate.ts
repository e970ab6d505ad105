/**
 * Fleet migrations: a no-op run over 1,000 schema tenants, and an ADD COLUMN over 1,000 schema + 100 database tenants while load runs against other tenants (p99 before vs during, failed requests), vs the same at concurrency 1.
 *
 * `npm run bench -- migrate [--schemas 1000] [--databases 100] [--concurrency 8] [--connections 10] [--keep] [--check]`
 *
 * Real PostgreSQL (`BENCH_PG_URL`, default postgres://postgres@127.0.0.1:5432/postgres, a superuser),
 * own database `tenantry_bench_migrate` and role prefix `tb_mig`, removed before and after.
 * Migrations: a copy of demo/migrations in a temporary directory, to which the run adds files.
 *
 * 1. Setup: load tenants (2 pooled and 2 schema, --projects rows each), then --schemas schema
 *    tenants, provisioned --fill-concurrency at a time through `tenantry.provision`.
 * 2. (a) No-op: `migrate()` on a fresh runtime (as a CLI run would) with every target up to date,
 *    --noop-runs times; `noop_s` is the median (startup excluded, reported apart).
 * 3. --databases database tenants are added (one at a time), and one more no-op run is timed with
 *    them (one ledger read per database; reported apart). The demo app starts in a child process
 *    (bench/fixtures/migrate-server.ts) and autocannon in another (bench/fixtures/migrate-load.ts)
 *    reads projects of the load tenants, closed loop, --connections connections: --warmup s
 *    discarded, --before s measured ("before").
 * 4. (b) `0002` adds a column to `projects`; a fresh runtime migrates exactly the schema and
 *    database tenants (`only`: their slugs; the load tenants are the "other tenants" and are not
 *    migrated) with --concurrency, while the load runs ("during" = exactly the migration). The
 *    run paces itself against the server's load (the default); `p99_ratio` = p99 during ÷ before.
 * 5. (b′) Baseline: `0003` adds a column the same way with `pace: false` (the behaviour before
 *    issue 18), load still running ("unpaced"): `p99_ratio_unpaced`.
 * 6. (c) Baseline: `0004` adds a column over the same targets at concurrency 1, load still
 *    running ("sequential"). `sequential_ratio` = (b) time ÷ (c) time.
 * 7. A control as long as "before" with no migration ("after"): `p99_ratio_after` is what the
 *    machine alone moved the ratios by in this run.
 * Prints tables; the last line is one JSON object (noop_schemas, noop_s, add_column_targets,
 * add_column_s, failed_requests, sequential_ratio, p99_before_ms, p99_during_ms, p99_ratio,
 * p99_ratio_unpaced…).
 */
import { fork, type ChildProcess } from 'node:child_process'
import { copyFileSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { cpus, tmpdir } from 'node:os'
import { join, resolve as resolvePath } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import pg from 'pg'
import { createTenantry, type FleetMigrateResult, type Tenantry } from '../src/index.ts'
import type { MigrateLoadJob, PhaseResult } from './fixtures/migrate-load.ts'
import { REPO_ROOT, killChildren, median, printTable, round, startCpuSampler, startServer, waitForQuiet, type CpuShare, type ServerChild } from './lib/load.ts'
import { DEFAULT_PG_URL, cleanupPrefix, connectAdmin, fmt, intFlag, loadAverage, machineSampler, mapLimit, withDatabase } from './provision.ts'

const DATABASE = 'tenantry_bench_migrate'
const ROLE_PREFIX = 'tb_mig'
const LOAD_POOLED = 2
const LOAD_SCHEMA = 2
const TARGET_NOOP_S = 10
const TARGET_ADD_COLUMN_S = 120
/** p99 of the other tenants during (b) at most this many times their p99 before (issue 18). */
const TARGET_P99_RATIO = 2

const log = (msg: string) => process.stderr.write(`[migrate] ${msg}\n`)

function usage(): string {
  return [
    'usage: npm run bench -- migrate [--schemas N] [--databases N] [--concurrency N] [--fill-concurrency N] [--noop-runs N]',
    '                                [--connections N] [--warmup S] [--before S] [--projects N] [--pool N] [--quiet-wait S]',
    '                                [--no-unpaced] [--no-sequential] [--keep] [--check]',
    '  --schemas 1000 --databases 100   schema and database tenants migrated (scale down for a quick run)',
    '  --concurrency 8       targets migrated at once in (b)      --fill-concurrency 8   provisions at once in setup',
    '  --noop-runs 3         no-op runs in (a), each on a fresh runtime; the median is reported',
    '  --connections 10      autocannon connections (closed loop) against the load tenants',
    '  --warmup 3 --before 10   seconds of discarded load, then of measured load before the migration',
    '  --projects 100        rows per load tenant           --pool 10   connection budget of the server',
    '  --quiet-wait 60       seconds to wait for a quiet machine before the load starts',
    '  --no-unpaced          skip the unpaced baseline (b′)     --no-sequential   skip the concurrency-1 baseline (c)',
    '  --keep                leave the bench database and roles   --check   exit 1 when a target is missed',
  ].join('\n')
}

// ─── the load child ─────────────────────────────────────────────────────────────────────────────

interface LoadChild {
  pid: number
  phase(name: string): Promise<void>
  stop(): Promise<Record<string, PhaseResult>>
}

const liveLoad = new Set<ChildProcess>()

function request<T>(child: ChildProcess, send: unknown, match: (m: any) => boolean, what: string, timeoutMs: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => done(new Error(`${what}: no answer within ${timeoutMs} ms`)), timeoutMs)
    const onMessage = (m: unknown) => { if (match(m)) done(undefined, m as T) }
    const onExit = (code: number | null) => done(new Error(`${what}: load generator exited (code ${code})`))
    function done(err?: Error, value?: T) {
      clearTimeout(timer)
      child.off('message', onMessage)
      child.off('exit', onExit)
      if (err) reject(err)
      else resolve(value as T)
    }
    child.on('message', onMessage)
    child.once('exit', onExit)
    if (send !== undefined) child.send(send as never)
  })
}

async function startLoad(job: MigrateLoadJob): Promise<LoadChild> {
  const child = fork(fileURLToPath(new URL('./fixtures/migrate-load.ts', import.meta.url)), ['--migrate-load'], {
    cwd: REPO_ROOT,
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  liveLoad.add(child)
  child.once('exit', () => liveLoad.delete(child))
  await request(child, { type: 'job', job }, (m) => m?.type === 'started', 'starting the load', 60_000)
  return {
    pid: child.pid!,
    phase: async (name) => { await request(child, { type: 'phase', name }, (m) => m?.type === 'phase' && m.name === name, `phase ${name}`, 10_000) },
    stop: async () => {
      const r = await request<{ phases: Record<string, PhaseResult> }>(child, { type: 'stop' }, (m) => m?.type === 'result', 'stopping the load', 30_000)
      return r.phases
    },
  }
}

function killLoad(): void {
  for (const c of liveLoad) if (c.exitCode === null) c.kill('SIGKILL')
  liveLoad.clear()
}

// ─── the benchmark ──────────────────────────────────────────────────────────────────────────────

interface MigrationRun {
  name: string
  concurrency: number
  seconds: number
  result?: FleetMigrateResult
  error?: string
  cpu?: CpuShare
  /** ms from the start to the last schema / database target done, and how many of each. */
  tiers?: { schema: number; database: number; schemaCount: number; databaseCount: number }
  /** False for the unpaced baseline (b′). */
  paced: boolean
}

function firstError(r: FleetMigrateResult | undefined): string | undefined {
  return r?.targets.find((t) => t.status === 'failed')?.error
}

export default async function migrate(argv: string[]): Promise<number> {
  let flags
  try {
    flags = parseArgs({
      args: argv,
      strict: true,
      options: {
        schemas: { type: 'string' }, databases: { type: 'string' }, concurrency: { type: 'string' },
        'fill-concurrency': { type: 'string' }, 'noop-runs': { type: 'string' }, connections: { type: 'string' },
        warmup: { type: 'string' }, before: { type: 'string' }, projects: { type: 'string' }, pool: { type: 'string' },
        'quiet-wait': { type: 'string' }, 'no-sequential': { type: 'boolean', default: false }, 'no-unpaced': { type: 'boolean', default: false },
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
  let schemas: number, databases: number, concurrency: number, fillConcurrency: number, noopRuns: number
  let connections: number, warmup: number, before: number, projects: number, pool: number, quietWait: number
  try {
    schemas = intFlag('schemas', flags.schemas, 1000, 0)
    databases = intFlag('databases', flags.databases, 100, 0)
    concurrency = intFlag('concurrency', flags.concurrency, 8)
    fillConcurrency = intFlag('fill-concurrency', flags['fill-concurrency'], 8)
    noopRuns = intFlag('noop-runs', flags['noop-runs'], 3)
    connections = intFlag('connections', flags.connections, 10)
    warmup = intFlag('warmup', flags.warmup, 3, 0)
    before = intFlag('before', flags.before, 10)
    projects = intFlag('projects', flags.projects, 100)
    pool = intFlag('pool', flags.pool, 10)
    quietWait = intFlag('quiet-wait', flags['quiet-wait'], 60, 0)
    if (schemas + databases === 0) throw new Error('--schemas and --databases cannot both be 0')
  } catch (err) {
    console.error(`${(err as Error).message}\n${usage()}`)
    return 2
  }
  const sequential = !flags['no-sequential']
  const unpaced = !flags['no-unpaced']

  const adminUrl = process.env.BENCH_PG_URL ?? DEFAULT_PG_URL
  const admin = await connectAdmin('migrate', adminUrl)
  if (!admin) return 1
  const dbUrl = withDatabase(adminUrl, DATABASE)
  const dir = mkdtempSync(join(tmpdir(), 'tenantry-bench-migrate-'))
  const open: Tenantry[] = []
  const runtime = async () => {
    const t = await createTenantry({ databaseUrl: dbUrl, migrations: dir, rolePrefix: ROLE_PREFIX, connectionBudget: pool })
    open.push(t)
    return t
  }
  const closeRuntime = async (t: Tenantry) => {
    open.splice(open.indexOf(t), 1)
    await t.close().catch(() => undefined)
  }
  let server: ServerChild | undefined

  let interrupted = false
  const onSignal = () => {
    if (interrupted) return
    interrupted = true
    log('interrupted: stopping children and cleaning up')
    killChildren()
    killLoad()
    cleanupPrefix(admin, DATABASE, ROLE_PREFIX).catch(() => undefined).finally(() => process.exit(130))
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)

  const load0 = loadAverage()
  let pgVersion = ''
  let setupSeconds = 0
  let noopSchemas = 0
  let noopTargets = 0
  const noopSeconds: number[] = []
  const noopStartup: number[] = []
  let noopState = ''
  let noopAll: { seconds: number; targets: number; state: string } | undefined
  const runs: MigrationRun[] = []
  let phases: Record<string, PhaseResult> = {}
  const phaseCpu: Record<string, CpuShare> = {}
  const benchCpu: Record<string, number> = {}
  let targetSlugs: string[] = []
  let columnCheck = { b: -1, c: -1, u: -1 }
  try {
    const stale = await cleanupPrefix(admin, DATABASE, ROLE_PREFIX)
    if (stale.length) log(`removed leftovers of an earlier run: ${stale.join(', ')}`)
    pgVersion = (await admin.query<{ server_version: string }>('SHOW server_version')).rows[0].server_version
    await admin.query(`CREATE DATABASE ${DATABASE}`)
    const demo = resolvePath(REPO_ROOT, 'demo/migrations')
    const base = readdirSync(demo).filter((f) => f.endsWith('.sql')).sort()
    for (const f of base) copyFileSync(join(demo, f), join(dir, f))
    const next = (n: number) => String(Number(base[base.length - 1].slice(0, 4)) + n).padStart(4, '0')

    // ── setup ──
    const setupStarted = Date.now()
    const a = await runtime()
    const first = await a.migrate()
    if (first.state === 'failed') throw new Error(`migrating the pooled tables failed: ${firstError(first)}`)
    const loadSlugs = [
      ...Array.from({ length: LOAD_POOLED }, (_, i) => ({ slug: `load-p-${i + 1}`, tier: 'pooled' as const })),
      ...Array.from({ length: LOAD_SCHEMA }, (_, i) => ({ slug: `load-s-${i + 1}`, tier: 'schema' as const })),
    ]
    const loadIds = new Map<string, string[]>()
    for (const x of loadSlugs) {
      await a.provision(x)
      const res = await a.withTenant(x.slug, () =>
        a.db.query<{ id: string }>(`INSERT INTO projects (name) SELECT 'Project ' || g FROM generate_series(1, $1::int) g RETURNING id`, [projects]),
      )
      loadIds.set(x.slug, res.rows.map((r) => r.id))
    }
    log(`provisioning ${schemas} schema tenants, ${fillConcurrency} at a time (load average ${load0})…`)
    const schemaSlugs = Array.from({ length: schemas }, (_, i) => `s-${i + 1}`)
    await mapLimit(schemaSlugs, fillConcurrency, async (slug) => { await a.provision({ slug, tier: 'schema' }) }, (done) => {
      if (done % 100 === 0 || done === schemas) log(`  ${done}/${schemas} schema tenants (${((Date.now() - setupStarted) / 1000).toFixed(1)} s)`)
    })
    await closeRuntime(a)

    // ── (a) no-op ──
    for (let i = 0; i < noopRuns; i++) {
      const t0 = Date.now()
      const t = await runtime()
      const t1 = Date.now()
      const r = await t.migrate()
      const t2 = Date.now()
      await closeRuntime(t)
      noopStartup.push((t1 - t0) / 1000)
      noopSeconds.push((t2 - t1) / 1000)
      noopState = r.state
      noopSchemas = r.targets.filter((x) => x.tier === 'schema').length
      noopTargets = r.counts.total
      if (r.state !== 'up-to-date') throw new Error(`the no-op run was not a no-op: state ${r.state}, ${r.counts.done} targets migrated`)
      log(`no-op run ${i + 1}/${noopRuns}: ${r.counts.total} targets (${noopSchemas} schemas) up to date in ${((t2 - t1) / 1000).toFixed(2)} s (+ ${((t1 - t0) / 1000).toFixed(2)} s runtime startup)`)
    }

    // ── database tenants ──
    if (databases > 0) {
      const d = await runtime()
      const started = Date.now()
      // One at a time: clones are serialised by the template's advisory lock anyway, and eight
      // database provisions at once evict the main database's owner pool from PgServer's
      // adminPools (an LRU of 8 pools), which the catalog holds: "Cannot use a pool after
      // calling end on the pool".
      log(`provisioning ${databases} database tenants, one at a time…`)
      const dbSlugs = Array.from({ length: databases }, (_, i) => `d-${i + 1}`)
      await mapLimit(dbSlugs, 1, async (slug) => { await d.provision({ slug, tier: 'database' }) }, (done) => {
        if (done % 20 === 0 || done === databases) log(`  ${done}/${databases} database tenants (${((Date.now() - started) / 1000).toFixed(1)} s)`)
      })
      await closeRuntime(d)
      targetSlugs = [...schemaSlugs, ...dbSlugs]
      // The same no-op with the database tenants too: one ledger read per database.
      const t = await runtime()
      const t0 = Date.now()
      try {
        const r = await t.migrate()
        noopAll = { seconds: (Date.now() - t0) / 1000, targets: r.counts.total, state: r.state }
      } catch (err) {
        noopAll = { seconds: (Date.now() - t0) / 1000, targets: 0, state: `threw: ${(err as Error).message}` }
      }
      await closeRuntime(t)
      log(`no-op run with the database tenants: ${noopAll.targets} targets, ${noopAll.state}, in ${noopAll.seconds.toFixed(2)} s`)
    } else {
      targetSlugs = schemaSlugs
    }
    setupSeconds = (Date.now() - setupStarted) / 1000 - noopSeconds.reduce((x, y) => x + y, 0) - noopStartup.reduce((x, y) => x + y, 0)

    // ── load ──
    const quiet = await waitForQuiet({ maxBusyCores: 0.5, timeoutMs: quietWait * 1000 })
    if (!quiet.quiet) log(`machine still busy after ${quietWait} s (${quiet.busy.toFixed(2)} of ${cpus().length} cores busy): going on`)
    server = await startServer('bench/fixtures/migrate-server.ts', { BENCH_DB_URL: dbUrl, BENCH_POOL: String(pool), BENCH_ROLE_PREFIX: ROLE_PREFIX, BENCH_MIGRATIONS: dir })
    const requests: MigrateLoadJob['requests'] = []
    const slugsOfLoad = [...loadIds.keys()]
    for (let i = 0; i < projects; i++) for (const slug of slugsOfLoad) requests.push({ path: `/api/projects/${loadIds.get(slug)![i]}`, headers: { 'x-tenant': slug } })
    for (const slug of slugsOfLoad) {
      const probe = await fetch(`${server.url}/api/projects/${loadIds.get(slug)![0]}`, { headers: { 'x-tenant': slug } })
      if (probe.status !== 200) throw new Error(`load tenant ${slug}: GET /api/projects/:id answered ${probe.status} ${(await probe.text()).slice(0, 200)}`)
    }
    const loadChild = await startLoad({ url: server.url, requests, connections, timeoutSeconds: 10 })
    const sample = (name: string) => {
      const s = startCpuSampler({ server: server!.pid, load: loadChild.pid }, DATABASE)
      const self = machineSampler()
      return () => {
        const cpu = s.stop()
        // This process runs the migration: its CPU is not "other processes".
        const bench = self.stop().selfCores
        phaseCpu[name] = { ...cpu, other: Math.max(0, cpu.other - bench) }
        benchCpu[name] = bench
      }
    }
    try {
      log(`load: ${connections} connections on ${slugsOfLoad.join(', ')} (not migrated); warm-up ${warmup} s, then ${before} s before the migration`)
      await new Promise((r) => setTimeout(r, warmup * 1000))
      await loadChild.phase('before')
      const stopBefore = sample('before')
      await new Promise((r) => setTimeout(r, before * 1000))
      stopBefore()

      const migrateWith = async (name: string, file: string, column: string, c: number, phase: string, paced = true) => {
        writeFileSync(join(dir, file), `-- bench/migrate.ts: a column added to every target\nALTER TABLE projects ADD COLUMN ${column} text;\n`)
        const t = await runtime()
        const run: MigrationRun = { name, concurrency: c, seconds: NaN, paced }
        // When each tier's targets finish (schemas sort before databases in the claim order).
        const last = { schema: 0, database: 0, schemaCount: 0, databaseCount: 0 }
        let t0 = Date.now()
        t.events.on('migration.target_done', ({ target }) => {
          if (target.split('/').length > 2) {
            last.database = Date.now() - t0
            last.databaseCount++
          } else {
            last.schema = Date.now() - t0
            last.schemaCount++
          }
        })
        try {
          await loadChild.phase(phase)
          const stop = sample(phase)
          const m = machineSampler()
          t0 = Date.now()
          try {
            run.result = await t.migrate({ concurrency: c, only: targetSlugs, startedBy: 'bench/migrate.ts', ...(paced ? {} : { pace: false }) })
          } catch (err) {
            run.error = (err as Error).message
          }
          run.seconds = (Date.now() - t0) / 1000
          stop()
          run.cpu = phaseCpu[phase]
          const busy = m.stop().busyCores
          const r = run.result
          log(
            `${name}: ${r ? `${r.state}, ${r.counts.done} done, ${r.counts.failed} failed, ${r.counts.skipped} skipped, ${r.counts.pending} pending` : `THREW: ${run.error}`} ` +
              `in ${run.seconds.toFixed(1)} s at concurrency ${c} (machine ${busy.toFixed(2)} cores busy)`,
          )
          if (r && r.counts.failed > 0) log(`  first failure: ${firstError(r)}`)
          run.tiers = last
          if (last.schemaCount && last.databaseCount && last.schema < last.database) {
            log(`  ${last.schemaCount} schema targets done after ${(last.schema / 1000).toFixed(1)} s, then ${last.databaseCount} database targets in ${((last.database - last.schema) / 1000).toFixed(1)} s`)
          }
        } finally {
          await closeRuntime(t)
        }
        runs.push(run)
        return run
      }
      await migrateWith('(b) add column', `${next(1)}_bench_add_column.sql`, 'bench_note', concurrency, 'during')
      if (unpaced) {
        await loadChild.phase('between')
        await migrateWith("(b') add column, unpaced", `${next(2)}_bench_add_column_3.sql`, 'bench_note_3', concurrency, 'unpaced', false)
      }
      if (sequential) {
        await loadChild.phase('between')
        await migrateWith('(c) add column, sequential', `${next(3)}_bench_add_column_2.sql`, 'bench_note_2', 1, 'sequential')
      }
      // A control: as long as 'before', with no migration. Its p99 against before's is what the
      // machine alone moves the ratios by in this run.
      await loadChild.phase('after')
      const stopAfter = sample('after')
      await new Promise((r) => setTimeout(r, before * 1000))
      stopAfter()
    } finally {
      phases = await loadChild.stop().catch((err) => {
        log(`load generator: ${(err as Error).message}`)
        return {}
      })
    }
    // What the runs claim, checked in the catalog of the main database (the schema tenants).
    const client = new pg.Client({ connectionString: dbUrl })
    await client.connect()
    try {
      const r = await client.query<{ b: string; c: string; u: string }>(
        `SELECT count(*) FILTER (WHERE column_name = 'bench_note') AS b, count(*) FILTER (WHERE column_name = 'bench_note_2') AS c,
                count(*) FILTER (WHERE column_name = 'bench_note_3') AS u
         FROM information_schema.columns WHERE table_name = 'projects' AND table_schema LIKE 't\\_%'`,
      )
      columnCheck = { b: Number(r.rows[0].b), c: Number(r.rows[0].c), u: Number(r.rows[0].u) }
    } finally {
      await client.end()
    }
  } finally {
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
    killLoad()
    if (server) await server.stop().catch(() => undefined)
    killChildren()
    for (const t of [...open]) await closeRuntime(t)
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
  const load1 = loadAverage()
  const b = runs.find((r) => r.concurrency === concurrency && r.name.startsWith('(b)'))
  const b0 = runs.find((r) => r.name.startsWith("(b')"))
  const c = runs.find((r) => r.name.startsWith('(c)'))
  const addColumnTargets = targetSlugs.length
  // Schema targets sort before database targets in the claim order, so the run splits in two.
  const tierRates = (r: MigrationRun): (number | string)[] => {
    const x = r.tiers
    if (!x || !x.schemaCount) return ['-', '-']
    const schemaRate = round(x.schemaCount / (x.schema / 1000), 1)
    if (!x.databaseCount || x.database <= x.schema) return [schemaRate, '-']
    return [schemaRate, round(x.databaseCount / ((x.database - x.schema) / 1000), 1)]
  }
  const ok = (r: MigrationRun | undefined) => !!r?.result && r.result.state === 'done' && r.result.counts.done === addColumnTargets
  console.log(
    `\nmigrate: ${schemas} schema + ${databases} database tenants (+ ${LOAD_POOLED} pooled and ${LOAD_SCHEMA} schema load tenants); ` +
      `node ${process.version}, PostgreSQL ${pgVersion}, ${cpus().length} cores, load average ${load0} → ${load1}; setup ${setupSeconds.toFixed(0)} s\n`,
  )
  printTable(
    ['run', 'targets', 'concurrency', 'seconds', 'targets/s', 'done', 'failed', 'state', 'target', 'schemas/s', 'databases/s'],
    [
      ['(a) no-op (median)', noopTargets, '-', round(median(noopSeconds), 2), round(noopTargets / median(noopSeconds), 0), 0, 0, noopState, median(noopSeconds) <= TARGET_NOOP_S ? `met (≤ ${TARGET_NOOP_S} s)` : `MISSED (≤ ${TARGET_NOOP_S} s)`, '-', '-'],
      ...(noopAll ? [['(a\') no-op, with databases', noopAll.targets, '-', round(noopAll.seconds, 2), round(noopAll.targets / noopAll.seconds, 0), 0, 0, noopAll.state, '-', '-', '-']] : []),
      ...runs.map((r) => [
        r.name, addColumnTargets, r.concurrency, round(r.seconds, 1), round(addColumnTargets / r.seconds, 1), r.result?.counts.done ?? 0, r.result?.counts.failed ?? 0,
        r.result?.state ?? 'threw',
        r.name.startsWith('(b)') ? (ok(r) && r.seconds <= TARGET_ADD_COLUMN_S ? `met (≤ ${TARGET_ADD_COLUMN_S} s)` : `MISSED (≤ ${TARGET_ADD_COLUMN_S} s${ok(r) ? '' : ', incomplete'})`) : '-',
        ...tierRates(r),
      ]),
    ],
  )
  for (const r of runs) {
    const e = r.error ?? firstError(r.result)
    if (e) console.log(`${r.name}: ${r.error ? 'threw' : 'first failed target'}: ${e}`)
  }
  console.log(`no-op runs: ${noopSeconds.map((s) => s.toFixed(2)).join(', ')} s (runtime startup ${noopStartup.map((s) => s.toFixed(2)).join(', ')} s, not included)`)
  console.log(
    `columns found in the tenant schemas afterwards: bench_note ${columnCheck.b}/${schemas}, bench_note_3 ${columnCheck.u}/${unpaced ? schemas : 0}, ` +
      `bench_note_2 ${columnCheck.c}/${sequential ? schemas : 0}`,
  )
  for (const r of runs) {
    const pace = r.result?.pace
    if (pace) {
      const what = pace.gauge === 'cpu' ? `CPU utilisation ${round(pace.baseline * 100, 0)}% with the run held, ${round(pace.last * 100, 0)}% last` : `SELECT 1 round trip ${round(pace.baseline, 2)} ms with the run held, ${round(pace.last, 2)} ms last`
      console.log(`${r.name}: paced at ${round(pace.meanLevel, 2)} streams on average (of ${r.concurrency}), slowed down ${pace.slowdowns} times; ${what}`)
    }
  }
  console.log('')

  const phaseRows = ['before', 'during', 'unpaced', 'sequential', 'after'].filter((p) => phases[p])
  printTable(
    ['load phase', 'seconds', 'req/s', 'p50 ms', 'p99 ms', 'p99.9 ms', 'max ms', 'non-2xx', 'errors', 'cpu server', 'cpu load', 'cpu migrator', 'cpu pg', 'cpu other'],
    phaseRows.map((p) => {
      const x = phases[p]
      const cpu = phaseCpu[p]
      return [
        p, round(x.seconds, 1), round(x.rps, 0), round(x.latency.p50, 2), round(x.latency.p99, 2), round(x.latency.p999, 2), round(x.latency.max, 1), x.non2xx, x.errors,
        round(cpu?.server ?? NaN, 2), round(cpu?.load ?? NaN, 2), round(benchCpu[p] ?? NaN, 2), round(cpu?.postgres ?? NaN, 2), round(cpu?.other ?? NaN, 2),
      ]
    }),
  )
  for (const p of phaseRows) if (phases[p].sampleErrors.length) console.log(`${p}: ${phases[p].sampleErrors.join('; ')}`)
  const failedDuring = ['during', 'unpaced', 'sequential'].reduce((n, p) => n + (phases[p] ? phases[p].non2xx + phases[p].errors : 0), 0)
  const failedBefore = phases.before ? phases.before.non2xx + phases.before.errors : 0
  console.log(
    `\n'cpu' columns are cores (${cpus().length} in all): the app server, autocannon, this process (it runs the migration), the backends of ` +
      `${DATABASE} (tenant databases' backends count as 'other', with every other process on the machine). ` +
      `Failed requests: ${failedDuring} during the migrations, ${failedBefore} before.`,
  )
  const sequentialRatio = b && c && ok(b) && ok(c) ? round(b.seconds / c.seconds, 3) : null
  const p99Ratio = phases.before && phases.during ? round(phases.during.latency.p99 / phases.before.latency.p99, 2) : null
  const summary = {
    benchmark: 'migrate',
    noop_schemas: noopSchemas,
    noop_s: round(median(noopSeconds), 2),
    noop_targets: noopTargets,
    noop_runs_s: noopSeconds.map((s) => round(s, 2)),
    noop_with_databases_s: noopAll ? round(noopAll.seconds, 2) : null,
    noop_with_databases_targets: noopAll?.targets ?? null,
    add_column_targets: addColumnTargets,
    add_column_schemas: schemas,
    add_column_databases: databases,
    add_column_s: b ? round(b.seconds, 1) : null,
    add_column_done: b?.result?.counts.done ?? 0,
    add_column_failed: b?.result?.counts.failed ?? 0,
    add_column_error: b?.error ?? firstError(b?.result) ?? null,
    concurrency,
    sequential_s: c ? round(c.seconds, 1) : null,
    sequential_done: c?.result?.counts.done ?? 0,
    sequential_error: c?.error ?? firstError(c?.result) ?? null,
    sequential_ratio: sequentialRatio,
    add_column_schemas_per_s: b ? (tierRates(b)[0] === '-' ? null : tierRates(b)[0]) : null,
    add_column_databases_per_s: b ? (tierRates(b)[1] === '-' ? null : tierRates(b)[1]) : null,
    failed_requests: failedDuring,
    failed_requests_before: failedBefore,
    p99_before_ms: round(phases.before?.latency.p99 ?? NaN, 2),
    p99_during_ms: round(phases.during?.latency.p99 ?? NaN, 2),
    p99_sequential_ms: round(phases.sequential?.latency.p99 ?? NaN, 2),
    p99_ratio: p99Ratio,
    // The same ADD COLUMN with pace: false, in this run: the behaviour before issue 18.
    p99_unpaced_ms: round(phases.unpaced?.latency.p99 ?? NaN, 2),
    p99_ratio_unpaced: phases.before && phases.unpaced ? round(phases.unpaced.latency.p99 / phases.before.latency.p99, 2) : null,
    add_column_unpaced_s: b0 ? round(b0.seconds, 1) : null,
    add_column_unpaced_done: b0?.result?.counts.done ?? 0,
    p99_after_ms: round(phases.after?.latency.p99 ?? NaN, 2),
    p99_ratio_after: phases.before && phases.after ? round(phases.after.latency.p99 / phases.before.latency.p99, 2) : null,
    rps_before: round(phases.before?.rps ?? NaN, 0),
    rps_during: round(phases.during?.rps ?? NaN, 0),
    rps_unpaced: round(phases.unpaced?.rps ?? NaN, 0),
    pace_mean_level: b?.result?.pace ? round(b.result.pace.meanLevel, 2) : null,
    pace_slowdowns: b?.result?.pace?.slowdowns ?? null,
    pace_gauge: b?.result?.pace?.gauge ?? null,
    pace_baseline: b?.result?.pace ? round(b.result.pace.baseline, 3) : null,
    noop_target_met: median(noopSeconds) <= TARGET_NOOP_S,
    add_column_target_met: ok(b) && !!b && b.seconds <= TARGET_ADD_COLUMN_S,
    p99_target_met: p99Ratio !== null && p99Ratio <= TARGET_P99_RATIO,
    zero_failed_requests: failedDuring === 0,
    connections,
    load_average: load1,
    max_other_cpu: round(Math.max(0, ...Object.values(phaseCpu).map((x) => x.other)), 2),
    // Other processes' CPU while 'before' was measured: above ~0.1 core the ratios are disturbed.
    other_cpu_before: round(phaseCpu.before?.other ?? NaN, 2),
  }
  console.log(JSON.stringify(summary))
  if (flags.check && !(summary.noop_target_met && summary.add_column_target_met && summary.p99_target_met && summary.zero_failed_requests)) return 1
  return 0
}
