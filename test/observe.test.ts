import { Writable } from 'node:stream'
import { fileURLToPath } from 'node:url'
import { InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base'
import { NodeTracerProvider } from '@opentelemetry/sdk-trace-node'
import express from 'express'
import Fastify, { type FastifyInstance } from 'fastify'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { tenantryMetricsHandler, tenantryMiddleware } from '../src/adapters/express.ts'
import { tenantryPlugin } from '../src/adapters/fastify.ts'
import {
  TenantryError, TenantryMetrics, UsageMeter, createTenantry, header, redactStatement, tenantLogMixin,
  type Tenant, type Tenantry, type UsageRecord,
} from '../src/index.ts'
import { createLogger, hasTenantMixin } from '../src/observe/logger.ts'
import { dropPostgresLeftovers, freshDatabase, postgresAvailable } from './helpers/backends.ts'

// Issue 11: logs, metrics, traces and metering, the same suite on real PostgreSQL and on PGlite.

const MIGRATIONS = fileURLToPath(new URL('../demo/migrations', import.meta.url))
const DB_NAME = 'tenantry_test_observe'
const ROLE_PREFIX = 'th_obs'
const PG_UP = await postgresAvailable()

// One tracer provider for the file (each test file runs in its own worker): the AsyncLocalStorage
// context manager and the W3C propagator become the global ones, as an app's SDK set-up does.
const exporter = new InMemorySpanExporter()
const provider = new NodeTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] })
provider.register()

/** A pino destination that keeps each line, parsed. */
function capture(): { stream: Writable; lines: Record<string, any>[]; raw: string[] } {
  const lines: Record<string, any>[] = []
  const raw: string[] = []
  const stream = new Writable({
    write(chunk, _enc, cb) {
      for (const l of String(chunk).split('\n')) if (l.trim()) { raw.push(l); lines.push(JSON.parse(l)) }
      cb()
    },
  })
  return { stream, lines, raw }
}

/** Prometheus text → `name{labels}` → value (labels sorted by name). */
function parseMetrics(text: string): Map<string, number> {
  const out = new Map<string, number>()
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$/.exec(line)
    if (!m) throw new Error(`unparsable metrics line: ${line}`)
    const labels = m[3] ? [...m[3].matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)].map((x) => `${x[1]}="${x[2]}"`).sort().join(',') : ''
    out.set(`${m[1]}{${labels}}`, Number(m[4]))
  }
  return out
}

function series(metrics: Map<string, number>, name: string): Map<string, number> {
  return new Map([...metrics].filter(([k]) => k.startsWith(`${name}{`)))
}

const traceIdOf = (s: ReadableSpan) => s.spanContext().traceId
const parentOf = (s: ReadableSpan) => s.parentSpanContext?.spanId

interface Backend {
  name: string
  enabled: boolean
  url(): Promise<string | undefined>
  cleanUp(): Promise<void>
}

const BACKENDS: Backend[] = [
  {
    name: 'PostgreSQL',
    enabled: PG_UP,
    async url() {
      await dropPostgresLeftovers(ROLE_PREFIX, DB_NAME)
      return freshDatabase(DB_NAME)
    },
    cleanUp: () => dropPostgresLeftovers(ROLE_PREFIX, DB_NAME),
  },
  { name: 'PGlite', enabled: true, url: async () => undefined, async cleanUp() {} },
]

function observeSuite(backend: Backend): void {
  describe.skipIf(!backend.enabled)(`observability (${backend.name})`, () => {
    let tenantry: Tenantry
    let app: FastifyInstance
    let url: string | undefined
    const own = capture()
    const appLog = capture()
    const flushed: { intervalStart: Date; records: UsageRecord[] }[] = []
    const t: Record<string, Tenant> = {}
    const ids: Record<string, string[]> = {}
    let migrateSpans: { name: string; parent?: string; id: string; target: unknown }[] = []
    let migrateTargets: string[] = []

    beforeAll(async () => {
      url = await backend.url()
      tenantry = await createTenantry({
        ...(url ? { databaseUrl: url, rolePrefix: ROLE_PREFIX } : { dataDir: 'memory' }),
        migrations: MIGRATIONS,
        resolve: [header()],
        guard: { redis: null, plans: { tiny: { rate: { points: 2, duration: 60 } } } },
        observe: {
          logger: pino({ level: 'debug', mixin: tenantLogMixin }, own.stream),
          metrics: { topK: 20 },
          // A long interval: the test decides when usage is written (flushUsage).
          metering: { intervalMs: 3_600_000, storageSampleMs: 0 },
        },
      })
      tenantry.events.on('usage.flushed', (e) => flushed.push(e))
      exporter.reset()
      const migrated = await tenantry.migrate()
      migrateSpans = exporter.getFinishedSpans().map((s) => ({ name: s.name, parent: parentOf(s), id: s.spanContext().spanId, target: s.attributes['tenantry.target'] }))
      migrateTargets = migrated.targets.filter((x) => x.status === 'done').map((x) => x.target)
      await tenantry.catalog.upsertPlan({ name: 'tiny', settings: {} })
      t.acme = await tenantry.provision({ slug: 'acme', tier: 'pooled' })
      t.globex = await tenantry.provision({ slug: 'globex', tier: 'schema' })
      t.limited = await tenantry.provision({ slug: 'limited', tier: 'pooled', plan: 'tiny' })
      for (const slug of ['acme', 'globex', 'limited']) {
        const r = await tenantry.withTenant(slug, () => tenantry.db.query<{ id: string }>("INSERT INTO projects (name) VALUES ('one'), ('two') RETURNING id"))
        ids[slug] = r.rows.map((x) => x.id)
      }
      await tenantry.flushUsage()
      // The app's own logger, without Tenantry's mixin: the plugin binds the tenant to request.log.
      app = Fastify({ loggerInstance: pino({ level: 'info' }, appLog.stream) }) as unknown as FastifyInstance
      await app.register(tenantryPlugin, { tenantry, metrics: true, skip: (req) => req.url === '/health' })
      app.get('/health', async () => ({ ok: true }))
      app.get('/api/projects/:id', async (req) => {
        const { rows } = await req.db.query('SELECT id, name FROM projects WHERE id = $1', [(req.params as { id: string }).id])
        if (!rows[0]) throw new TenantryError('NOT_FOUND', 'No such project in this tenant.')
        return rows[0]
      })
      app.get('/api/log', async (req) => {
        tenantry.logger.info({ marker: 'own' }, 'from the handler')
        req.log.info({ marker: 'app' }, 'via request.log')
        return { ok: true }
      })
      // The app's own span, made inside the request without naming a parent.
      app.get('/api/app-span', async () => {
        const span = provider.getTracer('app').startSpan('app.work')
        span.end()
        return { ok: true }
      })
      app.get('/api/boom', async () => {
        throw new Error('the handler failed')
      })
      app.get('/api/tx', async (req) =>
        req.db.transaction(async (tx) => {
          const a = await tx.query('SELECT id FROM projects ORDER BY id')
          const b = await tx.query('SELECT count(*)::int AS n FROM tasks')
          return { projects: a.rows.length, tasks: b.rows[0] }
        }),
      )
      await app.ready()
      exporter.reset()
    })

    afterAll(async () => {
      await app?.close()
      await tenantry?.close()
      await backend.cleanUp()
    })

    const get = (path: string, headers: Record<string, string> = {}) => app.inject({ method: 'GET', url: path, headers })

    it('logs lines inside a request with the tenant and request id, and Tenantry events with the tenant', async () => {
      const before = own.lines.length
      const r = await get('/api/log', { 'x-tenant': 'acme' })
      expect(r.statusCode).toBe(200)
      const mine = own.lines.slice(before).filter((l) => l.marker === 'own')
      expect(mine).toHaveLength(1)
      expect([mine[0].tenant, mine[0].tenantId]).toEqual(['acme', t.acme.id])
      expect(mine[0].reqId).toBe(r.headers['request-id'] ?? mine[0].reqId)
      expect(typeof mine[0].reqId).toBe('string')
      const viaApp = appLog.lines.filter((l) => l.marker === 'app')
      expect(viaApp).toHaveLength(1)
      expect([viaApp[0].tenant, viaApp[0].tenantId]).toEqual(['acme', t.acme.id])
      expect(viaApp[0].reqId).toBe(mine[0].reqId)
      // Tenantry's logger as Fastify's own: every request line gets the tenant from the mixin, and one reqId.
      const withOwn = Fastify({ loggerInstance: tenantry.logger }) as unknown as FastifyInstance
      await withOwn.register(tenantryPlugin, { tenantry })
      withOwn.get('/x', async () => ({ ok: true }))
      const from = own.raw.length
      expect((await withOwn.inject({ url: '/x', headers: { 'x-tenant': 'globex' } })).statusCode).toBe(200)
      await withOwn.close()
      const completed = own.raw.slice(from).filter((l) => l.includes('"request completed"'))
      expect(completed).toHaveLength(1)
      expect(completed[0].match(/"reqId":/g)).toHaveLength(1)
      expect(completed[0].match(/"tenant":/g)).toHaveLength(1)
      expect([JSON.parse(completed[0]).tenant, JSON.parse(completed[0]).tenantId]).toEqual(['globex', t.globex.id])
      // Outside a tenant context the mixin adds nothing.
      tenantry.logger.info({ marker: 'outside' }, 'no tenant here')
      expect(own.lines.find((l) => l.marker === 'outside')?.tenant).toBeUndefined()
      // Tenantry's own events: provisioning of globex at info, with the tenant.
      const provisioned = own.lines.filter((l) => l.msg === 'tenant provisioned').map((l) => [l.level, l.tenant, l.tier])
      expect(provisioned).toEqual([[30, 'acme', 'pooled'], [30, 'globex', 'schema'], [30, 'limited', 'pooled']])
    })

    it('counts requests by route template, status class and tier, and per tenant in /metrics', async () => {
      const before = parseMetrics((await get('/metrics')).body)
      for (let i = 0; i < 3; i++) expect((await get('/api/projects/1', { 'x-tenant': 'acme' })).statusCode).toBe(200)
      expect((await get('/api/projects/999', { 'x-tenant': 'acme' })).statusCode).toBe(404)
      expect((await get('/api/projects/1', { 'x-tenant': 'globex' })).statusCode).toBe(200)
      expect((await get('/api/projects/1', { 'x-tenant': 'nobody' })).statusCode).toBe(404)
      expect((await get('/no/such/route', { 'x-tenant': 'acme' })).statusCode).toBe(404)
      const res = await get('/metrics')
      expect(res.statusCode).toBe(200)
      expect(res.headers['content-type']).toMatch(/^text\/plain/)
      const after = parseMetrics(res.body)
      const delta = (key: string) => (after.get(key) ?? 0) - (before.get(key) ?? 0)
      const count = (route: string, cls: string, tier: string) =>
        delta(`tenantry_request_duration_seconds_count{method="GET",route="${route}",status_class="${cls}",tier="${tier}"}`)
      expect(count('/api/projects/:id', '2xx', 'pooled')).toBe(3)
      expect(count('/api/projects/:id', '4xx', 'pooled')).toBe(1)
      expect(count('/api/projects/:id', '2xx', 'schema')).toBe(1)
      // An unknown tenant has no tier; a path no route matches is `unmatched`, never the raw path.
      expect(count('/api/projects/:id', '4xx', 'none')).toBe(1)
      expect(count('unmatched', '4xx', 'pooled')).toBe(1)
      expect([...after.keys()].some((k) => k.includes('/no/such/route'))).toBe(false)
      expect(delta('tenantry_tenant_requests_total{plan="default",tenant="acme",tier="pooled"}')).toBe(5)
      expect(delta('tenantry_tenant_requests_total{plan="default",tenant="globex",tier="schema"}')).toBe(1)
      // Statements: acme ran 4 (the unmatched route ran none), globex 1; rows returned 3 and 1.
      expect(delta('tenantry_tenant_statements_total{plan="default",tenant="acme",tier="pooled"}')).toBe(4)
      expect(delta('tenantry_tenant_rows_total{plan="default",tenant="acme",tier="pooled"}')).toBe(3)
      expect(delta('tenantry_tenant_statements_total{plan="default",tenant="globex",tier="schema"}')).toBe(1)
      expect(delta('tenantry_tenant_db_time_seconds_total{plan="default",tenant="acme",tier="pooled"}')).toBeGreaterThan(0)
      expect(delta('tenantry_statement_duration_seconds_count{outcome="ok",server="main",tier="pooled"}')).toBe(4)
      expect(after.get('tenantry_pool_connections{server="main",state="open"}')).toBeGreaterThanOrEqual(0)
      expect(after.has('tenantry_pool_connections{server="main",state="waiting"}')).toBe(true)
      expect(after.get('tenantry_usage_pending_intervals{}')).toBe(0)
    })

    it('meters requests, errors, rejections, statements and rows per tenant, written in one batch', async () => {
      await tenantry.flushUsage()
      const start = flushed.length
      // limited's plan allows 2 requests a minute.
      for (let i = 0; i < 3; i++) await get(`/api/projects/${ids.limited[0]}`, { 'x-tenant': 'limited' })
      expect((await get('/api/boom', { 'x-tenant': 'globex' })).statusCode).toBe(500)
      expect((await get('/api/tx', { 'x-tenant': 'globex' })).json()).toEqual({ projects: 2, tasks: { n: 0 } })
      await tenantry.flushUsage()
      expect(flushed.length).toBe(start + 1)
      const byTenant = new Map(flushed[start].records.map((r) => [r.tenantId, r]))
      const pick = (r: UsageRecord | undefined) => r && { requests: r.requests, errors: r.errors, rejections: r.rejections, statements: r.statements, rows: r.rows }
      expect(pick(byTenant.get(t.limited.id))).toEqual({ requests: 3, errors: 0, rejections: 1, statements: 2, rows: 2 })
      // The 500 is an error; the transaction's two statements count one by one.
      expect(pick(byTenant.get(t.globex.id))).toEqual({ requests: 2, errors: 1, rejections: 0, statements: 2, rows: 3 })
      expect(byTenant.has(t.acme.id)).toBe(false)
      const rows = await tenantry.usage({ tenant: 'limited', granularity: 'hour', from: new Date(Date.now() - 3_600_000 * 2), to: new Date(Date.now() + 60_000) })
      const total = rows.reduce((a, r) => ({ requests: a.requests + r.requests, rejections: a.rejections + r.rejections, statements: a.statements + r.statements }), { requests: 0, rejections: 0, statements: 0 })
      // The 2 inserts of the set-up ran as statements of limited too.
      expect(total).toEqual({ requests: 3, rejections: 1, statements: 3 })
      const rejected = parseMetrics((await get('/metrics')).body)
      expect(rejected.get('tenantry_rejections_total{code="RATE_LIMITED",layer="tenant"}')).toBe(1)
      const lines = own.lines.filter((l) => l.msg === 'request turned away by the guard')
      expect(lines.map((l) => [l.tenant, l.layer, l.code])).toEqual([['limited', 'tenant', 'RATE_LIMITED']])
    })

    it('keeps usage when the catalog cannot be written, serves requests meanwhile, and writes it later', async () => {
      await tenantry.flushUsage()
      const admin = tenantry.dataPlane.driver('main').admin(tenantry.dataPlane.server('main').mainDatabase)
      await admin.query('ALTER TABLE tenantry.usage RENAME TO usage_away')
      try {
        for (let i = 0; i < 4; i++) expect((await get('/api/projects/2', { 'x-tenant': 'acme' })).statusCode).toBe(200)
        await tenantry.flushUsage()
        expect(tenantry.observe.meter!.pendingIntervals).toBe(1)
        const m = parseMetrics((await get('/metrics')).body)
        expect(m.get('tenantry_usage_write_failures_total{}')).toBe(1)
        expect(m.get('tenantry_usage_pending_intervals{}')).toBe(1)
        expect(own.lines.some((l) => l.msg.startsWith('usage could not be written') && l.level === 40)).toBe(true)
      } finally {
        await admin.query('ALTER TABLE tenantry.usage_away RENAME TO usage')
      }
      const before = await acmeRequests()
      expect((await get('/api/projects/2', { 'x-tenant': 'acme' })).statusCode).toBe(200)
      await tenantry.flushUsage()
      expect(tenantry.observe.meter!.pendingIntervals).toBe(0)
      expect((await acmeRequests()) - before).toBe(5)
    })

    async function acmeRequests(): Promise<number> {
      const rows = await tenantry.usage({ tenant: 'acme', granularity: 'day', from: new Date(Date.now() - 86_400_000 * 2), to: new Date(Date.now() + 60_000) })
      return rows.reduce((n, r) => n + r.requests, 0)
    }

    it('traces resolve and each statement with the tenant, continuing the incoming traceparent', async () => {
      exporter.reset()
      const traceId = '4bf92f3577b34da6a3ce929d0e0e4736'
      const parent = '00f067aa0ba902b7'
      // Not cached: resolution reads the catalog, and that gets a span.
      tenantry.catalog.clearCache()
      const r = await get('/api/projects/1', { 'x-tenant': 'globex', traceparent: `00-${traceId}-${parent}-01` })
      expect(r.statusCode).toBe(200)
      const spans = exporter.getFinishedSpans()
      expect(spans.map((s) => s.name).sort()).toEqual(['SELECT', 'tenantry.resolve'])
      for (const s of spans) {
        expect(traceIdOf(s)).toBe(traceId)
        expect(parentOf(s)).toBe(parent)
      }
      const resolve = spans.find((s) => s.name === 'tenantry.resolve')!
      expect(resolve.attributes).toEqual({ 'tenant.id': t.globex.id, 'tenant.slug': 'globex', 'tenant.tier': 'schema', 'tenant.plan': 'default' })
      // A statement's span carries exactly these four: what ran (redacted), where, for which tenant.
      const stmt = spans.find((s) => s.name === 'SELECT')!
      expect(stmt.attributes).toEqual({
        'db.system': 'postgresql',
        'db.statement': 'SELECT id, name FROM projects WHERE id = $1',
        'server.address': 'main',
        'tenant.id': t.globex.id,
      })
      // Cached now: no resolve span, the statement continues the trace.
      exporter.reset()
      await get('/api/projects/1', { 'x-tenant': 'globex', traceparent: `00-${traceId}-${parent}-01` })
      expect(exporter.getFinishedSpans().map((s) => [s.name, traceIdOf(s), parentOf(s)])).toEqual([['SELECT', traceId, parent]])
      // The app's own spans inside the request continue the incoming trace too.
      exporter.reset()
      expect((await get('/api/app-span', { 'x-tenant': 'globex', traceparent: `00-${traceId}-${parent}-01` })).statusCode).toBe(200)
      expect(exporter.getFinishedSpans().map((s) => [s.name, traceIdOf(s), parentOf(s)])).toEqual([['app.work', traceId, parent]])
      // Without a traceparent or an active span: the statement is a root.
      await get('/api/projects/1', { 'x-tenant': 'acme' })
      exporter.reset()
      await get('/api/projects/1', { 'x-tenant': 'acme' })
      expect(exporter.getFinishedSpans().map((s) => [s.name, parentOf(s)])).toEqual([['SELECT', undefined]])
      // Under an active server span (an HTTP instrumentation's): the tenant goes on it, the statement under it.
      exporter.reset()
      const tracer = provider.getTracer('test')
      await tracer.startActiveSpan('GET /api/projects/:id', async (server) => {
        await get('/api/projects/1', { 'x-tenant': 'acme' })
        server.end()
      })
      const [stmtSpan, serverSpan] = exporter.getFinishedSpans()
      expect([stmtSpan.name, serverSpan.name]).toEqual(['SELECT', 'GET /api/projects/:id'])
      expect(serverSpan.attributes['tenant.id']).toBe(t.acme.id)
      expect(parentOf(stmtSpan)).toBe(serverSpan.spanContext().spanId)
      // An admission span for a tenant whose plan has limits, failing with the rejection's code.
      exporter.reset()
      await get('/api/projects/1', { 'x-tenant': 'limited' })
      const admit = exporter.getFinishedSpans().find((s) => s.name === 'tenantry.admit')!
      expect(admit.attributes['tenant.id']).toBe(t.limited.id)
      expect(admit.attributes['error.type']).toBe('RATE_LIMITED')
      expect(admit.status.code).toBe(2)
    })

    it('traces lifecycle operations step by step, and migration targets', async () => {
      exporter.reset()
      const created = await tenantry.provision({ slug: 'traced', tier: 'schema' })
      const spans = exporter.getFinishedSpans()
      const op = spans.find((s) => s.name === 'tenantry.provision')!
      expect(op.attributes['tenant.id']).toBe(created.id)
      expect(op.attributes['tenantry.operation.state']).toBe('done')
      const steps = spans.filter((s) => s.name.startsWith('tenantry.provision.')).map((s) => s.name)
      expect(steps).toEqual(['tenantry.provision.room', 'tenantry.provision.migrate'])
      for (const s of spans.filter((x) => x.name.startsWith('tenantry.provision.'))) expect(parentOf(s)).toBe(op.spanContext().spanId)
      // The fleet migration of the set-up: one operation span, a span per target under it.
      const migrate = migrateSpans.filter((s) => s.name === 'tenantry.migrate')
      expect(migrate).toHaveLength(1)
      const targets = migrateSpans.filter((s) => s.name === 'tenantry.migrate.target')
      expect(targets.map((s) => s.target)).toEqual(migrateTargets)
      expect(migrateTargets.length).toBeGreaterThan(0)
      for (const s of targets) expect(s.parent).toBe(migrate[0].id)
    })

    it('counts statements of withTenant work outside requests too (jobs, scripts)', async () => {
      await tenantry.flushUsage()
      const start = flushed.length
      await tenantry.withTenant('acme', () => tenantry.db.query('SELECT 1'))
      await tenantry.flushUsage()
      const rec = flushed[start].records.find((r) => r.tenantId === t.acme.id)!
      expect([rec.requests, rec.statements, rec.rows]).toEqual([0, 1, 1])
    })
  })
}

for (const backend of BACKENDS) observeSuite(backend)

describe.skipIf(!PG_UP)('usage of several processes adds up (PostgreSQL)', () => {
  const DB = 'tenantry_test_observe_two'
  const PREFIX = 'th_obs2'
  afterAll(() => dropPostgresLeftovers(PREFIX, DB))

  it('two processes metering the same tenant in the same interval make one row with the sum', async () => {
    await dropPostgresLeftovers(PREFIX, DB)
    const url = await freshDatabase(DB)
    const opts = { databaseUrl: url, rolePrefix: PREFIX, migrations: MIGRATIONS, observe: { logger: false as const, metering: { intervalMs: 3_600_000, storageSampleMs: 0 } } }
    const a = await createTenantry(opts)
    const b = await createTenantry(opts)
    try {
      await a.migrate()
      await a.provision({ slug: 'shared', tier: 'pooled' })
      await a.withTenant('shared', async () => { await a.db.query('SELECT 1'); await a.db.query('SELECT 1') })
      await b.withTenant('shared', () => b.db.query('SELECT 1, 2'))
      await a.flushUsage()
      await b.flushUsage()
      const rows = await b.usage({ tenant: 'shared', granularity: 'hour', from: new Date(Date.now() - 7_200_000), to: new Date(Date.now() + 60_000) })
      expect(rows.map((r) => [r.slug, r.statements, r.rows])).toEqual([['shared', 3, 3]])
    } finally {
      await a.close()
      await b.close()
    }
  })
})

describe('bounded tenant labels (5,000 tenants, top 20)', () => {
  function tenantN(i: number): Tenant {
    return {
      id: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`, slug: `t${i}`, name: `T${i}`, status: 'active', statusReason: null,
      tier: 'pooled', plan: 'default', region: null, placement: { server: 'main', database: 'main' }, config: {},
      createdAt: new Date(0), updatedAt: new Date(0), deletedAt: null,
    }
  }

  it('labels the first 20 seen, then the window top 20; the rest are `other`; series stay bounded and sums exact', async () => {
    let now = 0
    const meter = new UsageMeter({ intervalMs: 60_000, maxPendingIntervals: 10, topK: 20, write: async () => undefined, now: () => now })
    const metrics = new TenantryMetrics({ registry: new Registry(), topK: 20 }, { meter })
    const tenants = Array.from({ length: 5000 }, (_, i) => tenantN(i))
    // Tenants 4980..4999 are the busy ones (50 requests each), every other tenant sends one.
    const traffic = () => { for (const t of tenants) for (let k = 0; k < (t.slug >= 't4980' && t.slug.length === 5 ? 50 : 1); k++) meter.request(t, 200, false) }
    const labels = async () => {
      const m = series(parseMetrics(await metrics.registry.metrics()), 'tenantry_tenant_requests_total')
      return new Map([...m].map(([k, v]) => [/tenant="([^"]+)"/.exec(k)![1], v]))
    }
    const perWindow = 4980 + 20 * 50

    traffic()
    let l = await labels()
    expect([...l.keys()].sort()).toEqual([...Array.from({ length: 20 }, (_, i) => `t${i}`), 'other'].sort())
    expect([...l.values()].reduce((a, b) => a + b, 0)).toBe(perWindow)
    expect(l.get('other')).toBe(perWindow - 20)

    for (let w = 1; w <= 4; w++) {
      now += 60_000
      meter.rollover()
      metrics.nextWindow()
      traffic()
      l = await labels()
      // Series of the first-come 20 (1 request each) are removed when a window starts that follows a whole window without them.
      expect([...l.values()].reduce((a, b) => a + b, 0)).toBe(perWindow * (w + 1) - (w >= 2 ? 20 : 0))
      expect(l.size).toBe(w >= 2 ? 21 : 41)
    }
    // The first-come labels are gone; the busy 20 keep theirs.
    expect([...l.keys()].sort()).toEqual([...Array.from({ length: 20 }, (_, i) => `t${4980 + i}`), 'other'].sort())
    expect(l.get('t4999')).toBe(4 * 50)
    expect(meter.size).toBe(5000)
  })

  it('drops the oldest intervals first when the catalog stays unwritable, counted', async () => {
    let now = 0
    const tried: number[] = []
    const dropped: number[] = []
    const meter = new UsageMeter({
      intervalMs: 1000, maxPendingIntervals: 2, topK: 20, now: () => now,
      write: async (r) => { tried.push(r.length); throw new Error('catalog down') },
      dropped: (start) => dropped.push(start.getTime()),
    })
    for (let i = 0; i < 3; i++) {
      meter.request(tenantN(1), 200, false)
      now += 1000
      meter.rollover()
    }
    expect(meter.pendingIntervals).toBe(2)
    expect(dropped).toEqual([0])
    expect(meter.droppedIntervals).toBe(1)
    await meter.flush()
    expect(tried).toEqual([2])
    expect(meter.failedWrites).toBe(1)
    expect(meter.pendingIntervals).toBe(2)
  })
})

describe('observe options', () => {
  it('refuses bad options with CONFIG_INVALID naming the option, before anything is opened', async () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ metering: { intervalMs: 10 } }, 'observe.metering.intervalMs'],
      [{ metering: { intervalMs: 1.5e3 + 0.5 } }, 'observe.metering.intervalMs'],
      [{ metering: { retentionDays: 0 } }, 'observe.metering.retentionDays'],
      [{ metering: { storageSampleMs: -1 } }, 'observe.metering.storageSampleMs'],
      [{ metering: { maxPendingIntervals: '5' } }, 'observe.metering.maxPendingIntervals'],
      [{ metrics: { topK: 0 } }, 'observe.metrics.topK'],
      [{ metrics: { buckets: [0.1, -1] } }, 'observe.metrics.buckets'],
      [{ logger: 'info' }, 'observe.logger'],
      [{ tracing: true }, 'observe.tracing'],
    ]
    for (const [observe, option] of cases) {
      const err = await createTenantry({ dataDir: '/nonexistent/never-opened', observe: observe as never }).then(() => null, (e: unknown) => e)
      expect(err, option).toMatchObject({ code: 'CONFIG_INVALID', details: { option } })
    }
  })
})

describe('request histogram', () => {
  it('exports cumulative buckets, sum and count per label set in the Prometheus format', async () => {
    const registry = new Registry()
    const metrics = new TenantryMetrics({ registry, buckets: [0.1, 0.01] })
    for (const v of [0.005, 0.05, 0.5, 0.01]) metrics.request('GET', '/x/:id', 200, 'pooled', v)
    metrics.request('POST', null, 503, null, 0.2)
    const m = parseMetrics(await registry.metrics())
    const k = (suffix: string, le?: string, labels = 'method="GET",route="/x/:id",status_class="2xx",tier="pooled"') =>
      `tenantry_request_duration_seconds_${suffix}{${[...labels.split(','), ...(le ? [`le="${le}"`] : [])].sort().join(',')}}`
    expect([m.get(k('bucket', '0.01')), m.get(k('bucket', '0.1')), m.get(k('bucket', '+Inf')), m.get(k('count'))]).toEqual([2, 3, 4, 4])
    expect(m.get(k('sum'))).toBeCloseTo(0.565, 10)
    expect(m.get(k('count', undefined, 'method="POST",route="unmatched",status_class="5xx",tier="none"'))).toBe(1)
    expect(series(m, 'tenantry_request_duration_seconds_count').size).toBe(2)
  })
})

describe('logger and statement redaction', () => {
  it('Tenantry-made loggers carry the mixin; a given pino instance is used as it is', () => {
    const made = createLogger({ level: 'info' })
    expect(hasTenantMixin(made)).toBe(true)
    expect(hasTenantMixin(made.child({ a: 1 }))).toBe(true)
    const given = pino({ level: 'info' })
    expect(createLogger(given)).toBe(given)
    expect(hasTenantMixin(given)).toBe(false)
    expect(createLogger(false).level).toBe('silent')
  })

  it('replaces literals, never bind parameters or identifiers', () => {
    expect(redactStatement("SELECT * FROM t1 WHERE a = 'x''y' AND b = 42 AND c = $1 AND d = 1.5e3")).toBe('SELECT * FROM t1 WHERE a = ? AND b = ? AND c = $1 AND d = ?')
    expect(redactStatement("INSERT INTO notes (body) VALUES ($$secret$$), ($tag$also secret$tag$), (E'esc')")).toBe('INSERT INTO notes (body) VALUES (?), (?), (?)')
    expect(redactStatement('SELECT id\n   FROM   "table2"   LIMIT 10')).toBe('SELECT id FROM "table2" LIMIT ?')
  })
})

describe('Express adapter: request metering and /metrics', () => {
  it('meters requests by route template and serves the registry', async () => {
    const tenantry = await createTenantry({ dataDir: 'memory', migrations: MIGRATIONS, resolve: [header()], observe: { logger: false, metering: { intervalMs: 3_600_000, storageSampleMs: 0 } } })
    try {
      await tenantry.migrate()
      await tenantry.provision({ slug: 'expressed', tier: 'pooled' })
      const ex = express()
      ex.get('/metrics', tenantryMetricsHandler(tenantry))
      ex.use(tenantryMiddleware(tenantry, { skip: (req) => req.path === '/metrics' }))
      ex.get('/api/things/:id', async (req, res) => { res.json((await req.db!.query('SELECT $1::int AS id', [Number(req.params.id)])).rows) })
      const server = ex.listen(0)
      try {
        const port = (server.address() as { port: number }).port
        for (const id of [1, 2]) expect((await fetch(`http://127.0.0.1:${port}/api/things/${id}`, { headers: { 'x-tenant': 'expressed' } })).status).toBe(200)
        // 'finish' fires after the response is sent; give it a tick.
        await new Promise((r) => setTimeout(r, 20))
        const m = parseMetrics(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text())
        expect(m.get('tenantry_request_duration_seconds_count{method="GET",route="/api/things/:id",status_class="2xx",tier="pooled"}')).toBe(2)
        expect(m.get('tenantry_tenant_statements_total{plan="default",tenant="expressed",tier="pooled"}')).toBe(2)
      } finally {
        server.close()
      }
    } finally {
      await tenantry.close()
    }
  })
})
