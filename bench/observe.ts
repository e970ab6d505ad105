/**
 * Observability overhead: the routing benchmark's point read with logging, metrics, tracing and metering on vs off, and the metering aggregator's memory with 100,000 tenants.
 *
 * `npm run bench -- observe [--duration 5] [--warmup 5] [--run-warmup 1] [--restart-every 3] [--connections 50] [--rate N] [--rounds 12] [--pool 10] [--tenants 20] [--ids 1000] [--no-traceparent] [--retries 1] [--max-other 0.25] [--quiet-wait 30] [--meter-tenants 100000] [--keep] [--check]`
 *
 * Two servers (bench/fixtures/observe-server.ts: the demo app on Tenantry with `observe` all off,
 * and the same with everything on: pino at info to a file, Prometheus metrics scraped every
 * second, OpenTelemetry spans through the SDK into a no-op exporter, usage metering) run side by
 * side in child processes of their own, warmed up, and are replaced by fresh processes every few
 * rounds; load comes from another child process (autocannon), against one server at a time, the
 * same request list for both, spread over several pooled tenants. Rounds alternate which variant
 * goes first. Ratios are medians over rounds of each round's `on` figure over that round's `off`.
 * Another child measures the OpenTelemetry SDK's own CPU per span (bench/fixtures/span-cost.ts):
 * set against what the 0.95× req/s target leaves per request (off's node CPU per request × (1/0.95 − 1)),
 * it tells how much of that budget any span per request takes, whoever makes it.
 * A third child (fresh heap, `--expose-gc`) measures the usage meter's memory with 100,000
 * tenants active in one interval, and its hot path. Prints a table, then as the last line one
 * JSON object with the figures. See docs/benchmarks.md for what is compared and why it is fair.
 */
import { fork } from 'node:child_process'
import { createReadStream, mkdtempSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve as resolvePath } from 'node:path'
import { createInterface } from 'node:readline'
import { parseArgs } from 'node:util'
import pg from 'pg'
import { createTenantry, header, subdomain, type Tenantry } from '../src/index.ts'
import { dropBenchLeftovers, lcg, redact, shuffled, withDatabase } from './lib/bench-db.ts'
import { REPO_ROOT, intFlag, killChildren, median, printTable, round, runLoad, startServer, waitForQuiet, type CpuShare, type LoadResult, type ServerChild } from './lib/load.ts'

const DATABASE = 'tenantry_bench_observe'
const ROLE_PREFIX = 'tb_observe'
const PROJECTS_PER_TENANT = 1000
const TARGET_RPS_RATIO = 0.95
const TARGET_P99_RATIO = 1.1
const SERVER = 'bench/fixtures/observe-server.ts'
const METER_CHILD = 'bench/fixtures/meter-memory.ts'
const SPAN_CHILD = 'bench/fixtures/span-cost.ts'

/**
 * `on`: Tenantry's observability on, the app logging each request through Tenantry's logger.
 * `off`: Tenantry's observability off, the app logging the same request lines to a file through a
 * plain pino logger (no tenant on them): the app's own logging is held equal, so on/off is what
 * Tenantry adds. `silent`: observability off and no logging at all (on/silent is also reported).
 */
type Variant = 'silent' | 'off' | 'on'
const VARIANTS: Variant[] = ['silent', 'off', 'on']
/** The six orders, one per round in turn: over 12 rounds each variant runs in each slot equally often. */
const ORDERS: Variant[][] = [
  ['silent', 'off', 'on'],
  ['on', 'silent', 'off'],
  ['off', 'on', 'silent'],
  ['silent', 'on', 'off'],
  ['off', 'silent', 'on'],
  ['on', 'off', 'silent'],
]

interface Run {
  variant: Variant
  round: number
  result: LoadResult
  cpu: CpuShare
  attempts: number
}

interface MeterFigures {
  tenants: number
  meterMb: number
  meterBytesPerTenant: number
  flushPeakMb: number
  withMetricsMb: number
  withMetricsBeforeScrapeMb: number
  tenantSeries: number
  labelledSeries: number
  pairNs: number
  pairFewNs: number
  emptyNs: number
  emptyFewNs: number
  iterations: number
}

/** What the `on` servers left behind, added up over every server start. */
interface OnChecks {
  scrapes: number
  scrapeFailures: number
  /** Most per-tenant series seen in a scrape right after a run, and their requests. */
  tenantSeries: number
  tenantSeriesRequests: number
  logFiles: number
  logBytes: number
  logLines: number
  completedLines: number
  completedWithTenant: number
  incomingLines: number
  duplicateReqIdLines: number
  foreignTenantLines: number
  spansExported: number
  requestsSent: number
}

const log = (msg: string) => process.stderr.write(`[observe] ${msg}\n`)

function usage(): string {
  return [
    'usage: npm run bench -- observe [--duration S] [--warmup S] [--run-warmup S] [--restart-every N] [--connections N] [--rounds N] [--pool N]',
    '                                [--tenants N] [--ids N] [--no-traceparent] [--retries N] [--max-other CORES] [--quiet-wait S]',
    '                                [--meter-tenants N] [--rate N] [--keep] [--check]',
    '  --duration 5   measured seconds per run       --warmup 5       discarded seconds per server after each start',
    '  --run-warmup 1 discarded seconds before each run   --restart-every 3  rounds before the servers are replaced by fresh ones',
    '  --connections 50  autocannon connections      --rounds 12      rounds of off and on (which goes first alternates)',
    '  --pool 10      connections of both servers    --tenants 20     pooled tenants the requests cycle over (1,000 projects each)',
    '  --ids 1000     length of the request list (tenant and project id pairs)',
    '  --no-traceparent  requests without a W3C traceparent header (default: each request carries one, sampled)',
    '  --retries 1    repeat a run disturbed by other processes, keeping the quietest attempt',
    '  --max-other 0.25  cores other processes may use during a run (and before it starts)',
    '  --quiet-wait 30   seconds to wait for a quiet machine before each run',
    '  --meter-tenants 100000  tenants fed to the usage meter in the memory measurement',
    '  --rate N       diagnostics: N requests per second for every variant (an open load) instead of as fast as',
    '                 answered; node µs/req then compares the variants at one rate (req/s ratios mean nothing)',
    '  --keep         leave the bench database, roles and log files   --check   exit 1 when a target is missed',
  ].join('\n')
}

function positiveInt(name: string, value: string | undefined, fallback: number): number {
  return intFlag(name, value, fallback, usage(), name === 'warmup' || name === 'run-warmup' ? 0 : 1)
}

function hex(next: () => number, chars: number): string {
  let s = ''
  while (s.length < chars) s += next().toString(16).padStart(8, '0')
  return s.slice(0, chars)
}

const slugOf = (i: number) => `bench-t${String(i + 1).padStart(2, '0')}`

/**
 * The bench database: `tenants` pooled tenants (`slugOf`) with 1,000 projects each, vacuumed; each
 * tenant's project ids. Also the database of `bench/observe-split.ts` (its own name and roles).
 */
export async function setup(adminUrl: string, admin: pg.Client, pool: number, tenants: number, database = DATABASE, rolePrefix = ROLE_PREFIX): Promise<{ ids: string[][]; pgVersion: string }> {
  await admin.query(`CREATE DATABASE ${database}`)
  const dbUrl = withDatabase(adminUrl, database)
  let tenantry: Tenantry | undefined
  try {
    tenantry = await createTenantry({
      databaseUrl: dbUrl,
      migrations: resolvePath(REPO_ROOT, 'demo/migrations'),
      rolePrefix,
      resolve: [subdomain({ baseDomain: 'localhost' }), header()],
      connectionBudget: pool,
      observe: { logger: false, metrics: false, tracing: false, metering: false },
    })
    const t = tenantry
    const failed = (await t.migrate()).targets.filter((r) => r.status === 'failed')
    if (failed.length) throw new Error(`migration failed: ${failed.map((f) => `${f.target}: ${f.error}`).join('; ')}`)
    for (let i = 0; i < tenants; i++) await t.provision({ slug: slugOf(i), tier: 'pooled' })
    const ids: string[][] = []
    for (let i = 0; i < tenants; i++) {
      const slug = slugOf(i)
      await t.withTenant(slug, () => t.db.query(`INSERT INTO projects (name) SELECT 'Project ' || g FROM generate_series(1, $1::int) g`, [PROJECTS_PER_TENANT]))
      const rows = (await t.withTenant(slug, () => t.db.query<{ id: string }>('SELECT id FROM projects ORDER BY id'))).rows
      if (rows.length !== PROJECTS_PER_TENANT) throw new Error(`expected ${PROJECTS_PER_TENANT} projects of ${slug}, found ${rows.length}`)
      ids.push(rows.map((r) => r.id))
    }
    const db = new pg.Client({ connectionString: dbUrl })
    await db.connect()
    try {
      await db.query('VACUUM (ANALYZE)')
      const v = await db.query<{ server_version: string }>('SHOW server_version')
      return { ids, pgVersion: v.rows[0].server_version }
    } finally {
      await db.end()
    }
  } finally {
    await tenantry?.close()
  }
}

/**
 * Run a measurement fixture in a fresh process (`execArgv` after tsx's), and take the
 * `{ type: 'result', result }` it sends before it exits; `what` names it in errors.
 */
function childResult<T>(fixture: string, what: string, execArgv: string[] = [], env: Record<string, string> = {}): Promise<T> {
  return new Promise((resolve, reject) => {
    const child = fork(resolvePath(REPO_ROOT, fixture), [], {
      cwd: REPO_ROOT,
      execArgv: ['--import', 'tsx', ...execArgv],
      env: { ...process.env, ...env },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    })
    let result: T | undefined
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`${what}: no answer within 300 s`)) }, 300_000)
    child.on('message', (m: { type?: string; result?: T }) => { if (m?.type === 'result') result = m.result })
    child.once('exit', (code, signal) => {
      clearTimeout(timer)
      if (result) resolve(result)
      else reject(new Error(`${what}: child exited (code ${code}, signal ${signal}) without a result`))
    })
  })
}

/** The SDK's own CPU per span (bench/fixtures/span-cost.ts), in a fresh process. */
function measureSpanCost(): Promise<{ sdkSpanUs: number; noopSpanUs: number; iterations: number; exported: number; recorded: number }> {
  return childResult(SPAN_CHILD, 'span cost')
}

/** Run the meter's memory and hot-path measurement in a fresh process with `--expose-gc`. */
function measureMeter(tenants: number): Promise<MeterFigures> {
  return childResult(METER_CHILD, 'meter measurement', ['--expose-gc'], { BENCH_METER_TENANTS: String(tenants) })
}

/** Requests served per tenant according to a scrape: the sum of `tenantry_tenant_requests_total` over its series. */
function tenantRequests(text: string): { series: number; requests: number } {
  let series = 0
  let requests = 0
  for (const line of text.split('\n')) {
    if (!line.startsWith('tenantry_tenant_requests_total{')) continue
    series++
    requests += Number(line.slice(line.lastIndexOf(' ') + 1))
  }
  return { series, requests }
}

/**
 * A Prometheus of one target: GET /metrics every second while the `on` server is under load, and
 * once more when the load stops, which must show per-tenant request counters (when metering is
 * on: they are folded from the meter). Right after the load, because a tenant idle for a whole
 * window loses its labelled series (docs/observability.md).
 */
function startScraper(url: string, expectTenants: boolean): { stop(): Promise<{ scrapes: number; failures: number; lastError?: string; tenantSeries: number; tenantRequests: number }> } {
  let scrapes = 0
  let failures = 0
  let lastError: string | undefined
  let inFlight: Promise<string> | undefined
  const scrape = () => {
    if (inFlight) return inFlight // a slow scrape is not stacked on (Prometheus waits for its timeout)
    inFlight = fetch(`${url}/metrics`, { signal: AbortSignal.timeout(10_000) })
      .then(async (r) => {
        const body = await r.text()
        scrapes++
        if (r.status !== 200 || !body.includes('tenantry_request_duration_seconds')) {
          failures++
          lastError = `status ${r.status}`
        }
        return body
      }, (err: Error) => { scrapes++; failures++; lastError = err.message; return '' })
      .finally(() => { inFlight = undefined })
    return inFlight
  }
  const timer = setInterval(scrape, 1000)
  return {
    async stop() {
      clearInterval(timer)
      await inFlight
      const last = tenantRequests(await scrape())
      if (expectTenants && (last.series === 0 || !(last.requests > 0))) {
        failures++
        lastError = `no tenantry_tenant_requests_total series with requests after the load (${last.series} series)`
      }
      return { scrapes, failures, lastError, tenantSeries: last.series, tenantRequests: last.requests }
    },
  }
}

/** Read a log file line by line: counts, and whether the request lines carry the right tenant. */
async function readLog(file: string, slugs: Set<string>): Promise<Pick<OnChecks, 'logBytes' | 'logLines' | 'completedLines' | 'completedWithTenant' | 'incomingLines' | 'duplicateReqIdLines' | 'foreignTenantLines'>> {
  const out = { logBytes: statSync(file).size, logLines: 0, completedLines: 0, completedWithTenant: 0, incomingLines: 0, duplicateReqIdLines: 0, foreignTenantLines: 0 }
  const lines = createInterface({ input: createReadStream(file), crlfDelay: Infinity })
  for await (const line of lines) {
    if (line.length === 0) continue
    out.logLines++
    const first = line.indexOf('"reqId":')
    if (first >= 0 && line.indexOf('"reqId":', first + 1) >= 0) out.duplicateReqIdLines++
    if (line.includes('"msg":"incoming request"')) out.incomingLines++
    else if (line.includes('"msg":"request completed"')) {
      out.completedLines++
      if (!line.includes('"tenant":')) continue
      // Parse only these lines; the tenant must be one the requests named.
      const entry = JSON.parse(line) as { tenant?: string; tenantId?: string }
      if (typeof entry.tenantId === 'string' && slugs.has(entry.tenant ?? '')) out.completedWithTenant++
      else out.foreignTenantLines++
    }
  }
  return out
}

function fmt(n: number, digits = 0): string {
  return Number.isFinite(n) ? n.toFixed(digits) : 'n/a'
}

export default async function observe(argv: string[]): Promise<number> {
  let flags
  try {
    flags = parseArgs({
      args: argv,
      strict: true,
      options: {
        duration: { type: 'string' },
        warmup: { type: 'string' },
        'run-warmup': { type: 'string' },
        'restart-every': { type: 'string' },
        connections: { type: 'string' },
        rate: { type: 'string' },
        rounds: { type: 'string' },
        pool: { type: 'string' },
        tenants: { type: 'string' },
        ids: { type: 'string' },
        'no-traceparent': { type: 'boolean', default: false },
        retries: { type: 'string' },
        'max-other': { type: 'string' },
        'quiet-wait': { type: 'string' },
        'meter-tenants': { type: 'string' },
        keep: { type: 'boolean', default: false },
        check: { type: 'boolean', default: false },
        help: { type: 'boolean', default: false },
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
  let duration: number, warmup: number, runWarmup: number, restartEvery: number, connections: number, rounds: number, pool: number
  let tenantCount: number, idCount: number, meterTenants: number, retries: number, maxOther: number, quietWait: number
  let rate: number | undefined
  try {
    duration = positiveInt('duration', flags.duration, 5)
    warmup = positiveInt('warmup', flags.warmup, 5)
    runWarmup = positiveInt('run-warmup', flags['run-warmup'], 1)
    restartEvery = positiveInt('restart-every', flags['restart-every'], 3)
    connections = positiveInt('connections', flags.connections, 50)
    rate = flags.rate === undefined ? undefined : positiveInt('rate', flags.rate, 1)
    rounds = positiveInt('rounds', flags.rounds, 12)
    pool = positiveInt('pool', flags.pool, 10)
    tenantCount = positiveInt('tenants', flags.tenants, 20)
    idCount = positiveInt('ids', flags.ids, 1000)
    meterTenants = positiveInt('meter-tenants', flags['meter-tenants'], 100_000)
    retries = flags.retries === undefined ? 1 : Number(flags.retries)
    maxOther = flags['max-other'] === undefined ? 0.25 : Number(flags['max-other'])
    quietWait = flags['quiet-wait'] === undefined ? 30 : Number(flags['quiet-wait'])
    if (!(Number.isInteger(retries) && retries >= 0) || !(maxOther > 0) || !(quietWait >= 0)) {
      throw new Error(`--retries must be an integer ≥ 0, --max-other a number of cores > 0, --quiet-wait seconds ≥ 0\n${usage()}`)
    }
  } catch (err) {
    console.error((err as Error).message)
    return 2
  }
  const traceparent = !flags['no-traceparent']
  // Diagnostics (see the fixture): the parts of observability the `on` server turns on.
  const parts = new Set((process.env.BENCH_OBSERVE_PARTS ?? 'logger,metrics,tracing,metering').split(',').map((p) => p.trim()))
  const allParts = ['logger', 'metrics', 'tracing', 'metering'].every((p) => parts.has(p))

  const adminUrl = process.env.BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'
  const admin = new pg.Client({ connectionString: adminUrl, connectionTimeoutMillis: 3000 })
  try {
    await admin.connect()
  } catch (err) {
    console.error(
      `observe: PostgreSQL at ${redact(adminUrl)} is not reachable (${(err as Error).message}).\n` +
        'Start PostgreSQL or set BENCH_PG_URL to a superuser URL, e.g. BENCH_PG_URL=postgres://postgres@127.0.0.1:5432/postgres',
    )
    return 1
  }
  admin.on('error', () => undefined)

  const logDir = mkdtempSync(join(tmpdir(), 'tenantry-bench-observe-'))
  let interrupted = false
  const onSignal = () => {
    if (interrupted) return
    interrupted = true
    log('interrupted: stopping children and cleaning up')
    killChildren()
    if (!flags.keep) rmSync(logDir, { recursive: true, force: true })
    dropBenchLeftovers(admin, DATABASE, ROLE_PREFIX)
      .catch(() => undefined)
      .finally(() => process.exit(130))
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)

  const runs: Run[] = []
  const warmups: Run[] = []
  const checks: OnChecks = {
    scrapes: 0, scrapeFailures: 0, tenantSeries: 0, tenantSeriesRequests: 0, logFiles: 0, logBytes: 0, logLines: 0, completedLines: 0,
    completedWithTenant: 0, incomingLines: 0, duplicateReqIdLines: 0, foreignTenantLines: 0, spansExported: 0, requestsSent: 0,
  }
  const slugs = new Set(Array.from({ length: tenantCount }, (_, i) => slugOf(i)))
  let pgVersion = ''
  let meter: MeterFigures
  let spanCost: Awaited<ReturnType<typeof measureSpanCost>>
  try {
    // The meter first: it needs a quiet machine for its timings and no database.
    const quiet = await waitForQuiet({ maxBusyCores: maxOther, timeoutMs: quietWait * 1000 })
    if (!quiet.quiet) log(`machine still busy after ${quietWait} s (${quiet.busy.toFixed(2)} cores): measuring the meter anyway`)
    log(`usage meter: ${meterTenants.toLocaleString('en-US')} tenants, one request and one statement each, in a fresh process…`)
    meter = await measureMeter(meterTenants)
    log('OpenTelemetry SDK: the CPU of one span per statement, in a fresh process…')
    spanCost = await measureSpanCost()
    log(`  ${fmt(spanCost.sdkSpanUs, 2)} µs per span through the SDK, ${fmt(spanCost.noopSpanUs, 2)} µs with no provider (${spanCost.exported} of ${spanCost.recorded} exported)`)
    log(`  meter alone ${fmt(meter.meterMb, 1)} MB (${fmt(meter.meterBytesPerTenant)} B per tenant), with metrics after a scrape ${fmt(meter.withMetricsMb, 1)} MB; ` +
      `request+statement ${fmt(meter.pairNs)} ns (${meterTenants} tenants), ${fmt(meter.pairFewNs)} ns (20 tenants); empty loop ${fmt(meter.emptyNs, 1)} ns`)

    const stale = await dropBenchLeftovers(admin, DATABASE, ROLE_PREFIX)
    if (stale.length) log(`removed leftovers of an earlier run: ${stale.join(', ')}`)
    const started = Date.now()
    log(`setting up ${DATABASE}: ${tenantCount} pooled tenants with ${PROJECTS_PER_TENANT} projects each…`)
    const data = await setup(adminUrl, admin, pool, tenantCount)
    pgVersion = data.pgVersion
    log(`setup done in ${((Date.now() - started) / 1000).toFixed(1)} s`)

    // One request list for both variants: entry k reads a project of tenant k mod N (each
    // tenant's ids in a fixed shuffled order), so consecutive requests of a connection name
    // different tenants and every tenant is metered and labelled.
    const perTenant = data.ids.map((ids, i) => shuffled(ids, 42 + i))
    const next = lcg(7)
    const requests = Array.from({ length: idCount }, (_, k) => {
      const t = k % tenantCount
      const id = perTenant[t][Math.floor(k / tenantCount) % PROJECTS_PER_TENANT]
      const headers: Record<string, string> = { 'x-tenant': slugOf(t) }
      // As behind a traced gateway: each request continues a sampled trace of its own.
      if (traceparent) headers.traceparent = `00-${hex(next, 32)}-${hex(next, 16)}-01`
      return { path: `/api/projects/${id}`, headers, id, slug: slugOf(t) }
    })

    const dbUrl = withDatabase(adminUrl, DATABASE)
    const common = { BENCH_DB_URL: dbUrl, BENCH_POOL: String(pool), BENCH_ROLE_PREFIX: ROLE_PREFIX, BENCH_MIGRATIONS: resolvePath(REPO_ROOT, 'demo/migrations') }

    // Side by side, warmed up, replaced every `restartEvery` rounds (see the routing benchmark).
    const servers = {} as Record<Variant, ServerChild>
    let logFile = ''
    // Requests each server of the current set answered (warm-ups and probes included), as the load generator counted them.
    const sent: Record<Variant, number> = { silent: 0, off: 0, on: 0 }
    let offLogFile = ''
    const startServers = async (set: number) => {
      logFile = join(logDir, `on-${set}.log`)
      offLogFile = join(logDir, `off-${set}.log`)
      sent.silent = sent.off = sent.on = 0
      servers.silent = await startServer(SERVER, { ...common, BENCH_OBSERVE: 'silent' })
      servers.off = await startServer(SERVER, { ...common, BENCH_OBSERVE: 'off', BENCH_LOG_FILE: offLogFile })
      servers.on = await startServer(SERVER, { ...common, BENCH_OBSERVE: 'on', BENCH_LOG_FILE: logFile })
      // Correctness before speed: both answer the same bytes for the same row of the same tenant.
      const bodies: string[] = []
      for (const variant of VARIANTS) {
        const r = requests[0]
        const probe = await fetch(`${servers[variant].url}${r.path}`, { headers: r.headers })
        const body = await probe.text()
        const parsed = JSON.parse(body) as Record<string, unknown>
        if (probe.status !== 200 || parsed.id !== r.id || Object.keys(parsed).join() !== 'id,name,createdAt') {
          throw new Error(`${variant}: GET ${r.path} (tenant ${r.slug}) answered ${probe.status} ${body.slice(0, 200)}`)
        }
        bodies.push(body)
        sent[variant]++
      }
      if (new Set(bodies).size !== 1) throw new Error(`the variants' answers differ for the same row:\n  ${bodies.join('\n  ')}`)
    }
    const stopServers = async () => {
      for (const variant of VARIANTS) {
        const report = await servers[variant].stop()
        const gc = report.gc as { minorMs: number; majorMs: number } | undefined
        const gcUs = gc ? `; GC ${fmt(((gc.minorMs + gc.majorMs) * 1000) / Math.max(1, sent[variant]), 1)} µs per request` : ''
        log(`  ${variant} server (${sent[variant]} requests${gcUs}): ${JSON.stringify(report)}`)
        if (variant === 'on') checks.spansExported += Number(report.spansExported ?? 0)
      }
      checks.requestsSent += sent.on
      if (!parts.has('logger')) return
      const l = await readLog(logFile, slugs)
      checks.logFiles++
      for (const k of ['logBytes', 'logLines', 'completedLines', 'completedWithTenant', 'incomingLines', 'duplicateReqIdLines', 'foreignTenantLines'] as const) checks[k] += l[k]
      log(`  on server's log: ${l.logLines} lines, ${fmt(l.logBytes / 1e6, 1)} MB; "request completed" ${l.completedLines} (${l.completedWithTenant} with the tenant), ` +
        `"incoming request" ${l.incomingLines}; ${sent.on} requests counted by the load generator`)
      if (!flags.keep) {
        rmSync(logFile, { force: true })
        rmSync(offLogFile, { force: true })
      }
    }
    const measure = async (variant: Variant, r: number, attempt: number, seconds: number, warm: number): Promise<Run> => {
      const server = servers[variant]
      const quiet = await waitForQuiet({ maxBusyCores: maxOther, timeoutMs: quietWait * 1000 })
      if (!quiet.quiet) log(`machine still busy after ${quietWait} s (${quiet.busy.toFixed(2)} cores): measuring anyway`)
      // Only while the `on` server is under load: a scrape during the `off` run would take CPU from it.
      const scraper = variant === 'on' && parts.has('metrics') ? startScraper(server.url, parts.has('metering')) : undefined
      const { result, cpu } = await runLoad(
        { url: server.url, requests: requests.map(({ path, headers }) => ({ path, headers })), connections, warmupSeconds: warm, durationSeconds: seconds, rate },
        { server: server.pid, postgresDatabase: DATABASE },
      ).finally(async () => {
        const s = await scraper?.stop()
        if (s) {
          checks.scrapes += s.scrapes
          checks.scrapeFailures += s.failures
          checks.tenantSeries = Math.max(checks.tenantSeries, s.tenantSeries)
          checks.tenantSeriesRequests = Math.max(checks.tenantSeriesRequests, s.tenantRequests)
          if (s.failures) log(`  ${s.failures} of ${s.scrapes} scrapes of /metrics failed (${s.lastError})`)
        }
      })
      sent[variant] += result.requests + result.warmup.requests
      log(
        `${r === 0 ? 'warm-up' : `round ${r}/${rounds}`} ${variant}${attempt > 1 ? ` (attempt ${attempt})` : ''}: ${fmt(result.rps)} req/s, ` +
          `p50 ${fmt(result.latency.p50, 2)} ms, p99 ${fmt(result.latency.p99, 2)} ms, errors ${result.errors + result.timeouts}, ` +
          `non-2xx ${result.non2xx}; CPU cores: node ${fmt(cpu.server, 2)}, postgres ${fmt(cpu.postgres, 2)}, ` +
          `autocannon ${fmt(cpu.load, 2)}, other ${fmt(cpu.other, 2)}`,
      )
      return { variant, round: r, result, cpu, attempts: attempt }
    }
    log(`${rounds} rounds of ${runWarmup} s + ${duration} s per server, ${connections} connections, ${idCount} requests over ${tenantCount} tenants${traceparent ? ' with traceparent' : ''}; ` +
      `fresh servers (warmed up for ${warmup} s each) every ${restartEvery} rounds`)
    for (let r = 1; r <= rounds; r++) {
      const order = ORDERS[(r - 1) % ORDERS.length]
      if ((r - 1) % restartEvery === 0) {
        if (r > 1) await stopServers()
        await startServers(Math.floor((r - 1) / restartEvery) + 1)
        // Warm-up runs count toward the error totals (a failure is a failure), not toward the figures.
        for (const variant of order) if (warmup > 0) warmups.push(await measure(variant, 0, 1, warmup, 0))
      }
      for (const variant of order) {
        // A run disturbed by other processes is repeated (up to --retries times), the quietest
        // attempt kept. Which run is repeated depends only on the machine, never on the figures.
        let best: Run | undefined
        for (let attempt = 1; attempt <= 1 + retries; attempt++) {
          const run = await measure(variant, r, attempt, duration, runWarmup)
          if (!best || run.cpu.other < best.cpu.other) best = { ...run, attempts: attempt }
          if (run.cpu.other <= maxOther) break
          if (attempt <= retries) log(`  other processes used ${run.cpu.other.toFixed(2)} cores (> ${maxOther}): repeating this run`)
        }
        runs.push(best!)
      }
    }
    await stopServers()
  } finally {
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
    killChildren()
    if (flags.keep) {
      log(`--keep: left ${DATABASE}, the ${ROLE_PREFIX}_* roles and the logs in ${logDir} in place`)
    } else {
      rmSync(logDir, { recursive: true, force: true })
      await dropBenchLeftovers(admin, DATABASE, ROLE_PREFIX).catch((err) => log(`cleanup failed: ${(err as Error).message}`))
    }
    await admin.end().catch(() => undefined)
  }

  // ─── report ───────────────────────────────────────────────────────────────────────────────────
  const of = (v: Variant) => runs.filter((x) => x.variant === v)
  const med = (v: Variant, f: (x: Run) => number) => median(of(v).map(f))
  const errors = [...warmups, ...runs].reduce((n, x) => n + x.result.errors + x.result.timeouts, 0)
  const non2xx = [...warmups, ...runs].reduce((n, x) => n + x.result.non2xx, 0)

  console.log(`\nobserve: GET /api/projects/:id over ${tenantCount} pooled tenants (${idCount} requests in the list${traceparent ? ', each with a traceparent' : ''}), ${connections} connections, ` +
    `${warmup} s warm-up per server start, ${runWarmup} s + ${duration} s per run, ${rounds} rounds, fresh servers every ${restartEvery} rounds, pool ${pool}; node ${process.version}, PostgreSQL ${pgVersion}\n`)
  printTable(
    ['round', 'variant', 'try', 'req/s', 'p50 ms', 'p99 ms', 'p99.9 ms', 'errors', 'non-2xx', 'cpu node', 'cpu pg', 'cpu load', 'cpu other'],
    runs.map((x) => [
      x.round, x.variant, x.attempts, round(x.result.rps, 0), round(x.result.latency.p50, 2), round(x.result.latency.p99, 2), round(x.result.latency.p999, 2),
      x.result.errors + x.result.timeouts, x.result.non2xx, round(x.cpu.server, 2), round(x.cpu.postgres, 2), round(x.cpu.load, 2), round(x.cpu.other, 2),
    ]),
  )
  const usPerReq = (v: Variant, who: 'server' | 'postgres') => med(v, (x) => (x.cpu[who] / x.result.rps) * 1e6)
  const figures = (v: Variant) => ({ rps: med(v, (x) => x.result.rps), p50: med(v, (x) => x.result.latency.p50), p99: med(v, (x) => x.result.latency.p99) })
  const silent = figures('silent')
  const off = figures('off')
  const on = figures('on')
  // Paired: each round's figure of `v` over that of `base` in the same round (seconds apart), then the median.
  const paired = (v: Variant, base: Variant, f: (x: Run) => number) => median(of(v).map((x) => f(x) / f(of(base).find((b) => b.round === x.round)!)))
  const rpsRatio = paired('on', 'off', (x) => x.result.rps)
  const p99Ratio = paired('on', 'off', (x) => x.result.latency.p99)
  const silentRps = paired('on', 'silent', (x) => x.result.rps)
  const silentP99 = paired('on', 'silent', (x) => x.result.latency.p99)
  const appLogRps = paired('off', 'silent', (x) => x.result.rps)
  // Node CPU per request, paired like the ratios: steadier than req/s on a shared machine.
  const nodeCpuRatio = paired('on', 'off', (x) => x.cpu.server / x.result.rps)
  const rpsMet = rpsRatio >= TARGET_RPS_RATIO
  const p99Met = p99Ratio <= TARGET_P99_RATIO
  console.log(`\nmedians over ${rounds} rounds; ratios are medians of each round's figures over off's (target for on: ≥ ${TARGET_RPS_RATIO}× req/s and ≤ ${TARGET_P99_RATIO}× p99)\n`)
  printTable(
    ['variant', 'req/s', 'p50 ms', 'p99 ms', 'req/s ratio', 'p99 ratio', 'node µs/req', 'pg µs/req', 'target'],
    [
      ['silent', round(silent.rps, 0), round(silent.p50, 2), round(silent.p99, 2), round(1 / appLogRps, 3), round(1 / paired('off', 'silent', (x) => x.result.latency.p99), 3), round(usPerReq('silent', 'server'), 0), round(usPerReq('silent', 'postgres'), 0), '-'],
      ['off', round(off.rps, 0), round(off.p50, 2), round(off.p99, 2), 1, 1, round(usPerReq('off', 'server'), 0), round(usPerReq('off', 'postgres'), 0), '-'],
      ['on', round(on.rps, 0), round(on.p50, 2), round(on.p99, 2), round(rpsRatio, 3), round(p99Ratio, 3), round(usPerReq('on', 'server'), 0), round(usPerReq('on', 'postgres'), 0), rpsMet && p99Met ? 'met' : 'MISSED'],
    ],
  )
  console.log(`\nnode CPU per request, on over off (paired, median of rounds): ${fmt(nodeCpuRatio, 3)}×`)
  // What ≥ 0.95× req/s leaves for everything `on` adds, where the server's CPU is what limits it:
  // off's CPU per request × (1/0.95 − 1). The SDK's own part of one span per request comes out of it.
  const offUs = usPerReq('off', 'server')
  const budgetUs = offUs * (1 / TARGET_RPS_RATIO - 1)
  const sdkUs = spanCost.sdkSpanUs - spanCost.noopSpanUs
  console.log(`the ${TARGET_RPS_RATIO}× req/s target leaves ${fmt(budgetUs, 1)} µs per request for all of on's additions (off: ${fmt(offUs, 0)} µs of node CPU per request); ` +
    `the SDK alone takes ${fmt(sdkUs, 1)} µs of it per span (${fmt((100 * sdkUs) / budgetUs, 0)} %), whoever makes the span`)
  console.log(`\non vs silent (no logging at all): ${fmt(silentRps, 3)}× req/s, ${fmt(silentP99, 3)}× p99; the app's request logging alone (off vs silent): ${fmt(appLogRps, 3)}× req/s`)

  console.log(`\nusage meter, ${meter.tenants.toLocaleString('en-US')} tenants active in one interval (heap after GC, MB = 2^20 bytes):\n`)
  printTable(
    ['what', 'value'],
    [
      ['meter alone, MB', round(meter.meterMb, 2)],
      ['bytes per tenant', round(meter.meterBytesPerTenant, 0)],
      ['at the interval end, records waiting for the write, MB', round(meter.flushPeakMb, 2)],
      ['meter + metrics folding, after a scrape, MB', round(meter.withMetricsMb, 2)],
      ['tenant series per counter after the scrape (labelled + other)', meter.tenantSeries],
      [`request+statement, ns (${meter.tenants} tenants in turn)`, round(meter.pairNs, 1)],
      ['request+statement, ns (20 tenants in turn)', round(meter.pairFewNs, 1)],
      [`empty loop, ns (${meter.tenants} / 20 tenants)`, `${round(meter.emptyNs, 1)} / ${round(meter.emptyFewNs, 1)}`],
    ],
  )

  const sent = checks.requestsSent
  const logOk = !parts.has('logger') || (checks.logFiles > 0 && checks.completedWithTenant > 0 && checks.foreignTenantLines === 0)
  const metricsOk = !parts.has('metrics') || (checks.scrapeFailures === 0 && checks.scrapes > 0 && (!parts.has('metering') || checks.tenantSeries > 0))
  console.log(
    `\non servers${allParts ? '' : ` (BENCH_OBSERVE_PARTS=${[...parts].join(',')})`}: ${checks.scrapes} scrapes of /metrics, ${checks.scrapeFailures} failed; ` +
      `right after a run, up to ${checks.tenantSeries} tenantry_tenant_requests_total series (${checks.tenantSeriesRequests} requests).\n` +
      `log: ${checks.logLines} lines, ${fmt(checks.logBytes / 1e6, 1)} MB (${fmt(checks.logBytes / Math.max(1, sent))} bytes per request); ` +
      `"request completed" ${checks.completedLines} lines, ${checks.completedWithTenant} with a benchmarked tenant, ${checks.foreignTenantLines} with another; ` +
      `"incoming request" ${checks.incomingLines}; lines with reqId twice ${checks.duplicateReqIdLines}; ${sent} requests counted by the load generator.\n` +
      `spans exported: ${checks.spansExported} (${fmt(checks.spansExported / Math.max(1, sent), 2)} per request).`,
  )
  const worstOther = Math.max(...runs.map((x) => x.cpu.other))
  console.log(
    `\n${errors + non2xx === 0 ? 'All requests answered 2xx: 0 errors, 0 non-2xx.' : `INVALID: ${errors} errors/timeouts and ${non2xx} non-2xx responses.`}` +
      (logOk && metricsOk ? '' : ` CHECK FAILED: ${logOk ? '' : 'the log has no request lines with the tenant. '}${metricsOk ? '' : '/metrics did not answer as expected.'}`) +
      (worstOther > maxOther ? ` Warning: up to ${worstOther.toFixed(2)} cores were used by other processes during a run; figures are noisy.` : ''),
  )
  const summary = {
    benchmark: 'observe',
    observe_rps_ratio: round(rpsRatio, 3),
    observe_p99_ratio: round(p99Ratio, 3),
    observe_vs_silent_rps_ratio: round(silentRps, 3),
    observe_vs_silent_p99_ratio: round(silentP99, 3),
    app_logging_rps_ratio: round(appLogRps, 3),
    metering_mb_100k: round(meter.meterMb, 2),
    metering_with_metrics_mb_100k: round(meter.withMetricsMb, 2),
    metering_flush_peak_mb_100k: round(meter.flushPeakMb, 2),
    metering_bytes_per_tenant: round(meter.meterBytesPerTenant, 0),
    meter_pair_ns: round(meter.pairNs, 1),
    meter_pair_ns_20_tenants: round(meter.pairFewNs, 1),
    meter_empty_loop_ns: round(meter.emptyNs, 1),
    meter_tenants: meter.tenants,
    rps_target_met: rpsMet,
    p99_target_met: p99Met,
    target_met: rpsMet && p99Met,
    silent_rps: round(silent.rps, 0),
    silent_p99_ms: round(silent.p99, 2),
    off_rps: round(off.rps, 0),
    off_p50_ms: round(off.p50, 2),
    off_p99_ms: round(off.p99, 2),
    on_rps: round(on.rps, 0),
    on_p50_ms: round(on.p50, 2),
    on_p99_ms: round(on.p99, 2),
    off_node_us_per_req: round(usPerReq('off', 'server'), 0),
    off_pg_us_per_req: round(usPerReq('off', 'postgres'), 0),
    on_node_us_per_req: round(usPerReq('on', 'server'), 0),
    on_pg_us_per_req: round(usPerReq('on', 'postgres'), 0),
    node_cpu_per_req_ratio: round(nodeCpuRatio, 3),
    rps_budget_us_per_req: round(budgetUs, 1),
    sdk_span_us: round(sdkUs, 2),
    sdk_span_share_of_budget: round(sdkUs / budgetUs, 3),
    log_bytes_per_request: round(checks.logBytes / Math.max(1, sent), 0),
    log_lines_per_request: round(checks.logLines / Math.max(1, sent), 2),
    spans_per_request: round(checks.spansExported / Math.max(1, sent), 2),
    scrapes: checks.scrapes,
    scrape_failures: checks.scrapeFailures,
    checks_ok: logOk && metricsOk,
    ...(allParts ? {} : { observe_parts: [...parts].join(',') }),
    ...(process.env.BENCH_LOG_MIN_LENGTH ? { log_min_length: Number(process.env.BENCH_LOG_MIN_LENGTH) } : {}),
    duration,
    warmup,
    run_warmup: runWarmup,
    restart_every: restartEvery,
    connections,
    rounds,
    pool,
    tenants: tenantCount,
    ids: idCount,
    traceparent,
    ...(rate ? { rate } : {}),
    errors,
    non_2xx: non2xx,
    max_other_cpu: round(worstOther, 2),
  }
  console.log(JSON.stringify(summary))
  if (errors + non2xx > 0 || !summary.checks_ok) return 1
  if (flags.check && !summary.target_met) return 1
  return 0
}
