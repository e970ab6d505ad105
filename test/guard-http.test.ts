/**
 * Admission over HTTP: the two rate-limit layers with exact counts and headers, route costs and
 * the in-flight bulkhead, through the Fastify plugin and the Express middleware, with the
 * in-memory store and with real Redis; and Redis stopped in the middle of a test (a private
 * redis-server): the in-memory fallback takes over with no 5xx, and Redis takes over again when it
 * is back.
 *
 * Real PostgreSQL holds the catalog (database `tenantry_test_guard_http`, role prefix `tg_http`,
 * both dropped afterwards).
 */
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import express from 'express'
import Fastify, { type FastifyInstance } from 'fastify'
import { Redis } from 'ioredis'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { tenantryErrorHandler, tenantryMiddleware } from '../src/adapters/express.ts'
import { tenantryPlugin } from '../src/adapters/fastify.ts'
import { createTenantry, header, type GuardOptions, type Tenant, type Tenantry } from '../src/index.ts'
import { DEMO_MIGRATIONS, dropDatabase, freshDatabase, PG_ADMIN_URL, postgresAvailable } from './helpers/backends.ts'
import { PrivateRedis, REDIS_URL, redisAvailable, redisServerInstalled } from './fixtures/guard-servers.ts'

const PREFIX = 'tg_http'
const DB_NAME = 'tenantry_test_guard_http'
const PG_OK = await postgresAvailable()
const REDIS_OK = PG_OK && (await redisAvailable())
const KEY_PREFIX = `tenantry-test-${process.pid}-${Date.now()}`

const PLANS = {
  metered: { rate: { points: 5, duration: 60 }, userRate: { points: 2, duration: 60 } },
  narrow: { concurrency: 2, queue: 1, queueTimeoutMs: 300 },
  roomy: { rate: { points: 1000, duration: 60 } },
  small: { rate: { points: 8, duration: 60 } },
}

interface Reply {
  status: number
  headers: Record<string, string | undefined>
  body: any
}

interface Harness {
  tenantry: Tenantry
  call(path: string, headers?: Record<string, string>): Promise<Reply>
  release(): void
  close(): Promise<void>
}

let dbUrl = ''

async function dropLeftovers(): Promise<void> {
  const admin = new pg.Client({ connectionString: PG_ADMIN_URL })
  await admin.connect()
  try {
    await dropDatabase(DB_NAME)
    const roles = await admin.query<{ rolname: string }>("SELECT rolname FROM pg_roles WHERE rolname LIKE $1", [`${PREFIX.replace(/_/g, '\\_')}\\_%`])
    for (const { rolname } of roles.rows) {
      await admin.query(`DROP OWNED BY "${rolname}"`)
      await admin.query(`DROP ROLE "${rolname}"`)
    }
  } finally {
    await admin.end()
  }
}

const RATE_HEADERS = ['ratelimit-limit', 'ratelimit-remaining', 'ratelimit-reset', 'retry-after'] as const

function pick(h: Record<string, string | undefined>): Record<string, string | undefined> {
  return Object.fromEntries(RATE_HEADERS.map((k) => [k, h[k]]))
}

async function runtime(guard: GuardOptions): Promise<Tenantry> {
  const tenantry = await createTenantry({ databaseUrl: dbUrl, migrations: DEMO_MIGRATIONS, rolePrefix: PREFIX, resolve: [header()], guard: { planRefreshMs: 0, ...guard } })
  for (const [name, limits] of Object.entries(PLANS)) await tenantry.catalog.upsertPlan({ name, settings: { limits } })
  await tenantry.guard.reloadPlans()
  return tenantry
}

async function tenantOf(tenantry: Tenantry, slug: string, plan?: string): Promise<Tenant> {
  return (await tenantry.findTenant(slug)) ?? tenantry.provision({ slug, tier: 'pooled', plan })
}

function gate(): { wait: Promise<void>; open(): void } {
  let open!: () => void
  const wait = new Promise<void>((r) => { open = r })
  return { wait, open }
}

async function fastifyHarness(guard: GuardOptions): Promise<Harness> {
  const tenantry = await runtime(guard)
  let g = gate()
  const app: FastifyInstance = Fastify()
  await app.register(tenantryPlugin, { tenantry })
  app.get('/ping', async () => ({ ok: true }))
  app.get('/export', { config: { tenantryCost: 3 } }, async () => ({ ok: true }))
  app.get('/hold', async () => { await g.wait; return { ok: true } })
  await app.ready()
  return {
    tenantry,
    async call(path, headers = {}) {
      const res = await app.inject({ method: 'GET', url: path, headers })
      return { status: res.statusCode, headers: res.headers as Record<string, string | undefined>, body: res.json() }
    },
    release() { g.open(); g = gate() },
    async close() { g.open(); await app.close(); await tenantry.close() },
  }
}

async function expressHarness(guard: GuardOptions): Promise<Harness> {
  const tenantry = await runtime({ cost: (req) => (req.path === '/export' ? 3 : 1), ...guard })
  let g = gate()
  const app = express()
  app.use(tenantryMiddleware(tenantry))
  app.get('/ping', (_req, res) => { res.json({ ok: true }) })
  app.get('/export', (_req, res) => { res.json({ ok: true }) })
  app.get('/hold', async (_req, res) => { await g.wait; res.json({ ok: true }) })
  app.use(tenantryErrorHandler())
  const server = http.createServer(app)
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  return {
    tenantry,
    async call(path, headers = {}) {
      const res = await fetch(base + path, { headers })
      return { status: res.status, headers: Object.fromEntries(res.headers), body: await res.json() }
    },
    release() { g.open(); g = gate() },
    async close() {
      g.open()
      server.closeAllConnections()
      await new Promise<void>((r) => server.close(() => r()))
      await tenantry.close()
    },
  }
}

const ADAPTERS = { fastify: fastifyHarness, express: expressHarness } as const

describe.skipIf(!PG_OK)('guard over HTTP', () => {
  beforeAll(async () => {
    await dropLeftovers()
    dbUrl = await freshDatabase(DB_NAME)
    // Make the catalog once, so that the plans exist before any tenant is put on them.
    const t = await runtime({ redis: null })
    await t.close()
  })

  afterAll(async () => {
    if (REDIS_OK) {
      const r = new Redis(REDIS_URL)
      const keys = await r.keys(`${KEY_PREFIX}*`)
      if (keys.length) await r.del(...keys)
      r.disconnect()
    }
    await dropLeftovers()
  })

  const stores = [
    { store: 'memory', enabled: true, guard: { redis: null } as GuardOptions },
    { store: 'redis', enabled: REDIS_OK, guard: { redis: REDIS_URL, keyPrefix: KEY_PREFIX } as GuardOptions },
  ]

  for (const { store, enabled, guard } of stores) {
    for (const [adapter, make] of Object.entries(ADAPTERS)) {
      describe.skipIf(!enabled)(`${adapter}, ${store} store`, () => {
        let h: Harness
        const slug = (s: string) => `${s}-${adapter}-${store}`

        beforeAll(async () => {
          h = await make({ ...guard, user: (req) => (req.headers?.['x-user'] as string | undefined) ?? null })
        })
        afterAll(async () => {
          await h?.close()
        })

        it('limits the tenant, then each user inside it, with exact counts and RateLimit-* headers on every response', async () => {
          const metered = await tenantOf(h.tenantry, slug('metered'), 'metered')
          const other = await tenantOf(h.tenantry, slug('other'), 'metered')
          const free = await tenantOf(h.tenantry, slug('unmetered'))
          expect(h.tenantry.guard.stats().store).toBe(store)
          const as = (t: Tenant, user?: string) => ({ 'x-tenant': t.slug, ...(user ? { 'x-user': user } : {}) })
          const steps: [string | undefined, number, string | null, string, string][] = [
            // user, status, rejected layer, ratelimit-limit, ratelimit-remaining
            ['u1', 200, null, '2', '1'],
            ['u1', 200, null, '2', '0'],
            ['u1', 429, 'user', '2', '0'], // refused by the user layer: the tenant's point is given back
            ['u2', 200, null, '2', '1'],
            ['u2', 200, null, '2', '0'],
            ['u2', 429, 'user', '2', '0'],
            ['u3', 200, null, '5', '0'], // the tenant's 5th point: the tenant layer is now the tighter one
            ['u3', 429, 'tenant', '5', '0'],
            [undefined, 429, 'tenant', '5', '0'], // anonymous: only the tenant layer applies
          ]
          const got = []
          for (const [user] of steps) {
            const r = await h.call('/ping', as(metered, user))
            got.push([user, r.status, r.body.details?.layer ?? null, r.headers['ratelimit-limit'], r.headers['ratelimit-remaining']])
            const reset = Number(r.headers['ratelimit-reset'])
            expect(reset >= 1 && reset <= 60).toBe(true)
            if (r.status === 429) {
              expect(r.body.code).toBe('RATE_LIMITED')
              expect(r.headers['retry-after']).toBe(r.headers['ratelimit-reset'])
            } else {
              expect(r.headers['retry-after']).toBeUndefined()
            }
          }
          expect(got).toEqual(steps)
          // Another tenant on the same plan has its own budget; a tenant without a rate limit gets no headers.
          const o = await h.call('/ping', as(other, 'u1'))
          expect([o.status, o.headers['ratelimit-limit'], o.headers['ratelimit-remaining']]).toEqual([200, '2', '1'])
          const f = await h.call('/ping', as(free, 'u1'))
          expect([f.status, pick(f.headers)]).toEqual([200, { 'ratelimit-limit': undefined, 'ratelimit-remaining': undefined, 'ratelimit-reset': undefined, 'retry-after': undefined }])
          expect(h.tenantry.guard.rejections()[metered.id]).toEqual({ user: 2, tenant: 2 })
          expect(h.tenantry.guard.rejections()[other.id]).toBeUndefined()
        })

        it('charges a route its cost at the tenant layer', async () => {
          const costly = await tenantOf(h.tenantry, slug('costly'), 'metered')
          const a = await h.call('/export', { 'x-tenant': costly.slug })
          expect([a.status, a.headers['ratelimit-remaining']]).toEqual([200, '2'])
          const b = await h.call('/export', { 'x-tenant': costly.slug })
          expect([b.status, b.body.code, b.body.details?.layer, b.headers['ratelimit-remaining']]).toEqual([429, 'RATE_LIMITED', 'tenant', '0'])
        })

        it('holds a tenant to its in-flight limit: a bounded queue, then 503 TENANT_BUSY with Retry-After', async () => {
          const narrow = await tenantOf(h.tenantry, slug('narrow'), 'narrow')
          const calm = await tenantOf(h.tenantry, slug('calm'), 'narrow')
          const at = { 'x-tenant': narrow.slug }
          const inFlight = () => h.tenantry.guard.stats().inFlight[narrow.id]
          const first = [h.call('/hold', at), h.call('/hold', at)]
          await until(() => inFlight()?.active === 2)
          const started = Date.now()
          const queued = h.call('/hold', at)
          await until(() => inFlight()?.queued === 1)
          const refused = await h.call('/hold', at)
          expect([refused.status, refused.body.code, refused.body.details?.layer, refused.headers['retry-after']]).toEqual([503, 'TENANT_BUSY', 'concurrency', '1'])
          const timedOut = await queued
          expect([timedOut.status, timedOut.body.code, timedOut.body.details?.layer, timedOut.headers['retry-after']]).toEqual([503, 'TENANT_BUSY', 'concurrency', '1'])
          expect(Date.now() - started).toBeGreaterThanOrEqual(250)
          // Another tenant on the same plan is not held up by this one's requests.
          const calmHold = h.call('/hold', { 'x-tenant': calm.slug })
          await until(() => h.tenantry.guard.stats().inFlight[calm.id]?.active === 1)
          h.release()
          expect((await Promise.all([...first, calmHold])).map((r) => r.status)).toEqual([200, 200, 200])
          // The slots come back when the responses are done.
          await until(() => inFlight() === undefined)
          const again = h.call('/hold', at)
          await until(() => inFlight()?.active === 1)
          h.release()
          expect((await again).status).toBe(200)
          expect(h.tenantry.guard.rejections()[narrow.id]).toEqual({ concurrency: 2 })
          expect(h.tenantry.guard.rejections()[calm.id]).toBeUndefined()
        })
      })
    }
  }

  describe.skipIf(!REDIS_OK || !redisServerInstalled())('Redis stopped in the middle of a test', () => {
    let redis: PrivateRedis
    let h: Harness
    let probe: Redis

    beforeAll(async () => {
      redis = await PrivateRedis.start()
      h = await fastifyHarness({ redis: redis.url, keyPrefix: 'stop-test' })
      probe = new Redis(redis.url, { retryStrategy: () => 200, maxRetriesPerRequest: 1 })
      probe.on('error', () => undefined)
    })
    afterAll(async () => {
      probe?.disconnect()
      await h?.close()
      await redis?.close()
    })

    it('falls back to in-memory limits with no 5xx, and hands back to Redis when it returns', async () => {
      const small = await tenantOf(h.tenantry, 'redis-stop-small', 'small')
      const busy = await tenantOf(h.tenantry, 'redis-stop-busy', 'roomy')
      const guard = h.tenantry.guard
      const events: string[] = []
      guard.on('limiter.fallback', () => events.push('fallback'))
      guard.on('limiter.recovered', () => events.push('recovered'))
      const key = `stop-test:rl:tenant:60:${small.id}`
      const remaining = async (n: number) => {
        const out: [number, string | undefined][] = []
        for (let i = 0; i < n; i++) {
          const r = await h.call('/ping', { 'x-tenant': small.slug })
          out.push([r.status, r.headers['ratelimit-remaining']])
        }
        return out
      }

      // Steady traffic from another tenant all along: not one request may fail.
      const background: number[] = []
      let stop = false
      const traffic = (async () => {
        while (!stop) {
          background.push((await h.call('/ping', { 'x-tenant': busy.slug })).status)
          await new Promise((r) => setTimeout(r, 5))
        }
      })()

      expect(await remaining(3)).toEqual([[200, '7'], [200, '6'], [200, '5']])
      expect(await probe.get(key)).toBe('3')
      expect(guard.stats().redisReady).toBe(true)

      await redis.stop()
      await until(() => events.includes('fallback'))
      expect(guard.stats().redisReady).toBe(false)
      // The in-memory limiter counts on its own: 8 more, then 429 — never a 5xx.
      expect(await remaining(10)).toEqual([
        [200, '7'], [200, '6'], [200, '5'], [200, '4'], [200, '3'], [200, '2'], [200, '1'], [200, '0'], [429, '0'], [429, '0'],
      ])

      await redis.start()
      await until(() => events.includes('recovered'), 10_000)
      expect(guard.stats().redisReady).toBe(true)
      // Redis counts again (it restarted empty), and the counts are in Redis.
      expect(await remaining(2)).toEqual([[200, '7'], [200, '6']])
      await until(async () => (await probe.get(key).catch(() => null)) === '2')
      expect(events).toEqual(['fallback', 'recovered'])

      stop = true
      await traffic
      expect(background.length).toBeGreaterThan(10)
      expect(background.filter((s) => s !== 200)).toEqual([])
      expect(guard.rejections()[small.id]).toEqual({ tenant: 2 })
    })
  })
})

async function until(check: () => boolean | Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`condition not met within ${timeoutMs} ms: ${check.toString()}`)
    await new Promise((r) => setTimeout(r, 10))
  }
}
