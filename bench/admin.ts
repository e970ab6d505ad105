/**
 * Admin API and console: the tenant list API over 100,000 tenants (p95 per page of 50) against its SQL alone and OFFSET paging; console first load (bytes, time to interactive) in headless Chromium against a blank page.
 *
 * `npm run bench -- admin [--tenants 100000] [--pages 300] [--loads 5] [--pglite] [--keep]`
 *
 * Real PostgreSQL by default (`BENCH_PG_URL`, default postgres://postgres@127.0.0.1:5432/postgres, a
 * superuser), own database `tenantry_bench_admin` and role prefix `tb_adm`, removed before and after;
 * `--pglite` runs the catalog on embedded PGlite in a temporary directory instead.
 *
 * 1. Fill the catalog with --tenants tenant rows in one INSERT … generate_series (95% active, 4%
 *    suspended, 1% deleted; 80% pooled, 15% schema, 5% database): the list reads catalog rows only.
 * 2. List: --pages requests, one at a time, each for a page of 50 starting at a random depth
 *    (a cursor from a random slug), with a mix of filters (none 50%, status=active 25%,
 *    tier=schema 15%, a name search 10%). Each request is run three ways, interleaved:
 *    - api: GET /admin/api/tenants over HTTP with an admin token (auth, validation, SQL, JSON);
 *    - sql: the same page through `catalog.page()` (the keyset SQL alone: the floor);
 *    - offset: the same page by `ORDER BY slug OFFSET n LIMIT 51` (what a naive list does).
 *    The HTTP client runs in the server's process (one event loop for both): the api figures
 *    include the client's own cost.
 * 3. Console: --loads cold loads (a new browser context each) of the console's tenant list page,
 *    signed in, until its table shows tenants, in Debian's Chromium (`CHROMIUM_PATH`, default
 *    /usr/bin/chromium); bytes are the encoded bytes of every response (CDP
 *    Network.loadingFinished). Baseline: a blank HTML page from the same server, loaded the same way.
 *
 * The machine is shared and noisy: compare the ratios, not the absolute numbers, between runs.
 * Prints tables; the last line is one JSON object (list_p95_ms_100k, console_kb, console_tti_ms…).
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import Fastify from 'fastify'
import pg from 'pg'
import { chromium } from 'playwright-core'
import { tenantryAdmin } from '../src/admin/plugin.ts'
import { adminTokens } from '../src/admin/tokens.ts'
import { createTenantry, type Tenantry } from '../src/index.ts'
import { dropBenchLeftovers, lcg, redact, withDatabase } from './lib/bench-db.ts'
import { printTable, round } from './lib/load.ts'

const DATABASE = 'tenantry_bench_admin'
const ROLE_PREFIX = 'tb_adm'
const PAGE = 50
const TARGET_P95_MS = 50
const log = (msg: string) => process.stderr.write(`[admin] ${msg}\n`)

function percentile(values: number[], p: number): number {
  const s = [...values].sort((a, b) => a - b)
  return s.length === 0 ? NaN : s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]
}
const median = (v: number[]) => percentile(v, 50)

interface Filter { status?: string; tier?: string; q?: string }

export default async function run(argv: string[]): Promise<number> {
  const { values: args } = parseArgs({
    args: argv,
    options: {
      tenants: { type: 'string', default: '100000' },
      pages: { type: 'string', default: '300' },
      loads: { type: 'string', default: '5' },
      pglite: { type: 'boolean', default: false },
      keep: { type: 'boolean', default: false },
    },
  })
  const tenants = Number(args.tenants)
  const pages = Number(args.pages)
  const loads = Number(args.loads)
  const chromiumPath = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
  if (!existsSync(chromiumPath)) {
    console.error(`Chromium not found at ${chromiumPath}: apt-get install chromium, or set CHROMIUM_PATH.`)
    return 2
  }

  const pgUrl = process.env.BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'
  let admin: pg.Client | null = null
  let dir: string | null = null
  let tenantry: Tenantry | undefined
  try {
    if (args.pglite) {
      dir = mkdtempSync(join(tmpdir(), 'tenantry-bench-admin-'))
      tenantry = await createTenantry({ dataDir: join(dir, 'data'), observe: { logger: false, metering: false, tracing: false, metrics: false } })
      log(`catalog on PGlite in ${dir}`)
    } else {
      admin = new pg.Client({ connectionString: pgUrl })
      await admin.connect()
      await dropBenchLeftovers(admin, DATABASE, ROLE_PREFIX)
      await admin.query(`CREATE DATABASE ${DATABASE}`)
      tenantry = await createTenantry({ databaseUrl: withDatabase(pgUrl, DATABASE), rolePrefix: ROLE_PREFIX, observe: { logger: false, metering: false, tracing: false, metrics: false } })
      log(`catalog on ${redact(withDatabase(pgUrl, DATABASE))}`)
    }
    const catalogDb = tenantry.dataPlane.driver('main').admin(tenantry.dataPlane.server('main').mainDatabase)

    // ---- fill ----------------------------------------------------------------------------------
    const fillStarted = Date.now()
    await catalogDb.query(
      `INSERT INTO tenantry.tenants (id, slug, name, status, tier, plan, server, database, schema)
       SELECT gen_random_uuid(), 't' || lpad(i::text, 7, '0') || '-' || substr(md5(i::text), 1, 6),
              'Tenant ' || substr(md5(i::text), 7, 8),
              CASE WHEN i % 100 = 0 THEN 'deleted' WHEN i % 25 = 0 THEN 'suspended' ELSE 'active' END,
              CASE WHEN i % 20 = 0 THEN 'database' WHEN i % 20 < 4 THEN 'schema' ELSE 'pooled' END,
              'default', 'main', 'main', NULL
       FROM generate_series(1, $1::int) AS i`,
      [tenants],
    )
    await catalogDb.query('ANALYZE tenantry.tenants')
    const slugs = (await catalogDb.query<{ slug: string }>('SELECT slug FROM tenantry.tenants ORDER BY slug')).rows.map((r) => r.slug)
    log(`${tenants} tenants in ${((Date.now() - fillStarted) / 1000).toFixed(1)} s`)

    const app = Fastify()
    app.get('/blank', async (_req, reply) => reply.type('text/html').send('<!doctype html><html><head><title>blank</title></head><body><p>blank</p></body></html>'))
    await app.register(tenantryAdmin, { prefix: '/admin', tenantry })
    const base = await app.listen({ port: 0, host: '127.0.0.1' })
    const token = (await (await adminTokens(tenantry)).create({ name: `bench-${Date.now()}`, role: 'viewer' }, 'bench:admin')).token
    const headers = { authorization: `Bearer ${token}` }

    // ---- list ----------------------------------------------------------------------------------
    const rand = lcg(17)
    const filters: Filter[] = []
    for (let i = 0; i < pages + 20; i++) {
      const r = rand() % 100
      filters.push(r < 50 ? {} : r < 75 ? { status: 'active' } : r < 90 ? { tier: 'schema' } : { q: 'tenant ' + (rand() % 16).toString(16) })
    }
    const starts = filters.map(() => rand() % slugs.length)
    const timings = { api: [] as number[], sql: [] as number[], offset: [] as number[] }
    let rowsSeen = 0
    for (let i = 0; i < filters.length; i++) {
      const f = filters[i]
      const after = slugs[starts[i]]
      const cursor = Buffer.from(after).toString('base64url')
      const qs = new URLSearchParams({ limit: String(PAGE), cursor, ...f })
      const warm = i < 20
      let t = performance.now()
      const res = await fetch(`${base}/admin/api/tenants?${qs}`, { headers })
      const body = (await res.json()) as { tenants: unknown[] }
      if (res.status !== 200) throw new Error(`list failed: ${res.status} ${JSON.stringify(body)}`)
      const apiMs = performance.now() - t
      t = performance.now()
      const page = await tenantry.catalog.page({ status: f.status as 'active' | undefined, tier: f.tier as 'schema' | undefined, search: f.q, cursor, limit: PAGE })
      const sqlMs = performance.now() - t
      if (page.tenants.length !== body.tenants.length) throw new Error('api and catalog.page disagree')
      // The same page by OFFSET: its depth is the count of matching rows up to the cursor (not timed).
      const where: string[] = []
      const values: unknown[] = []
      if (f.status) { values.push(f.status); where.push(`status = $${values.length}`) }
      if (f.tier) { values.push(f.tier); where.push(`tier = $${values.length}`) }
      if (f.q) { values.push(`%${f.q}%`); where.push(`lower(name) LIKE $${values.length}`) }
      const cond = where.length ? `WHERE ${where.join(' AND ')}` : ''
      const depth = Number((await catalogDb.query<{ n: string }>(`SELECT count(*) AS n FROM tenantry.tenants ${cond ? `${cond} AND` : 'WHERE'} slug <= $${values.length + 1}`, [...values, after])).rows[0].n)
      t = performance.now()
      await catalogDb.query(`SELECT id, slug, name, status, status_reason, tier, plan, region, server, database, schema, config, created_at, updated_at, deleted_at FROM tenantry.tenants ${cond} ORDER BY slug OFFSET ${depth} LIMIT ${PAGE + 1}`, values)
      const offsetMs = performance.now() - t
      if (!warm) {
        timings.api.push(apiMs)
        timings.sql.push(sqlMs)
        timings.offset.push(offsetMs)
        rowsSeen += body.tenants.length
      }
    }
    const row = (name: string, v: number[]) => [name, v.length, round(median(v), 2), round(percentile(v, 95), 2), round(percentile(v, 99), 2), round(Math.max(...v), 2)]
    console.log(`\nTenant list, pages of ${PAGE} at random depths over ${tenants} tenants (${pages} requests, ${rowsSeen} rows):`)
    printTable(['path', 'n', 'p50 ms', 'p95 ms', 'p99 ms', 'max ms'], [row('api (HTTP)', timings.api), row('sql (catalog.page)', timings.sql), row('offset (baseline)', timings.offset)])
    const apiP95 = percentile(timings.api, 95)
    const sqlP95 = percentile(timings.sql, 95)
    const offsetP95 = percentile(timings.offset, 95)

    // ---- console -------------------------------------------------------------------------------
    const browser = await chromium.launch({ executablePath: chromiumPath, args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'] })
    const load = async (url: string, ready: () => number | false, signedIn: boolean): Promise<{ ms: number; bytes: number; requests: number }> => {
      const context = await browser.newContext({ viewport: { width: 1280, height: 800 } })
      if (signedIn) await context.addInitScript((t) => sessionStorage.setItem('tenantry.admin.token', t), token)
      const page = await context.newPage()
      const cdp = await context.newCDPSession(page)
      await cdp.send('Network.enable')
      await cdp.send('Network.setCacheDisabled', { cacheDisabled: true })
      let bytes = 0
      let requests = 0
      cdp.on('Network.loadingFinished', (e) => { bytes += e.encodedDataLength; requests++ })
      await page.goto(url)
      const ms = Number(await (await page.waitForFunction(ready, null, { polling: 'raf', timeout: 60_000 })).jsonValue())
      await page.waitForLoadState('networkidle')
      await context.close()
      return { ms, bytes, requests }
    }
    // Functions, not strings: the console's CSP forbids eval, which string predicates need.
    const consoleReady = () => document.querySelectorAll('table[aria-label="Tenants"] tbody tr').length > 0 && performance.now()
    const blankReady = () => document.readyState === 'complete' && performance.now()
    await load(`${base}/admin/#/tenants`, consoleReady, true) // warm the server's JIT, not the browser (new context each)
    const consoleRuns: { ms: number; bytes: number; requests: number }[] = []
    const blankRuns: { ms: number; bytes: number; requests: number }[] = []
    for (let i = 0; i < loads; i++) {
      blankRuns.push(await load(`${base}/blank`, blankReady, false))
      consoleRuns.push(await load(`${base}/admin/#/tenants`, consoleReady, true))
    }
    await browser.close()
    await app.close()
    const consoleMs = median(consoleRuns.map((r) => r.ms))
    const blankMs = median(blankRuns.map((r) => r.ms))
    const consoleBytes = median(consoleRuns.map((r) => r.bytes))
    console.log(`\nConsole first load (cold context, ${loads} loads each, median), Chromium ${chromiumPath}:`)
    printTable(['page', 'requests', 'KB transferred', 'interactive ms'], [
      ['console: tenant list, signed in, first page shown', consoleRuns[0].requests, round(consoleBytes / 1024, 1), round(consoleMs, 0)],
      ['blank HTML page (baseline)', blankRuns[0].requests, round(median(blankRuns.map((r) => r.bytes)) / 1024, 1), round(blankMs, 0)],
    ])

    const result = {
      tenants,
      backend: args.pglite ? 'pglite' : 'postgresql',
      list_p95_ms_100k: round(apiP95, 2),
      list_p50_ms: round(median(timings.api), 2),
      list_sql_p95_ms: round(sqlP95, 2),
      list_offset_p95_ms: round(offsetP95, 2),
      list_api_vs_sql_p95_ratio: round(apiP95 / sqlP95, 2),
      list_keyset_vs_offset_p95_ratio: round(sqlP95 / offsetP95, 3),
      list_target_p95_ms: TARGET_P95_MS,
      list_within_target: apiP95 <= TARGET_P95_MS,
      console_kb: round(consoleBytes / 1024, 1),
      console_requests: consoleRuns[0].requests,
      console_tti_ms: round(consoleMs, 0),
      blank_tti_ms: round(blankMs, 0),
      console_vs_blank_tti_ratio: round(consoleMs / blankMs, 2),
    }
    console.log(`\nlist p95 ${result.list_p95_ms_100k} ms (target ≤ ${TARGET_P95_MS} ms: ${result.list_within_target ? 'met' : 'MISSED'}); the SQL alone ${result.list_sql_p95_ms} ms; OFFSET paging ${result.list_offset_p95_ms} ms`)
    console.log(JSON.stringify(result))
    return result.list_within_target ? 0 : 1
  } finally {
    await tenantry?.close()
    if (admin) {
      if (!args.keep) await dropBenchLeftovers(admin, DATABASE, ROLE_PREFIX).catch(() => undefined)
      await admin.end()
    }
    if (dir && !args.keep) rmSync(dir, { recursive: true, force: true })
  }
}
