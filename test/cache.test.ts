/**
 * Issue 15, part 1: the tenant cache. The same suite runs on the in-memory LRU and on real Redis
 * (the shared test Redis; skipped with a message when it is not reachable, a failure under
 * CI=true), with tenants from an embedded (PGlite) catalog: the cache does not touch tenant SQL.
 * Then a private redis-server is stopped under the cache: reads miss, writes are skipped, counted.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { createTenantry, withTenant, type Tenant, type Tenantry } from '../src/index.ts'
import { DEMO_MIGRATIONS, dropPostgresLeftovers, freshDatabase, outcome, postgresAvailable } from './helpers/backends.ts'
import { PrivateRedis, REDIS_URL, redisAvailable, redisServerInstalled } from './fixtures/guard-servers.ts'

const REDIS_OK = await redisAvailable()
const PREFIX = 'tenantry-test-cache'

// Keys a hostile or careless app might pass: hash-tag breakers, separators, globs, newlines,
// a 10 kB key, unicode, and keys shaped like another tenant's stored key.
const ADVERSARIAL = (other: Tenant) => [
  '}', '{', '{}', '}{', ':', '::', '*', '?', '[a-z]', '\n', 'a\nb', '\r\n', '\0', ' ', 'x'.repeat(10_000), 'ü'.repeat(5_000),
  '租户', '🔑', `{${other.id}}`, `}:{${other.id}}:0:kx`, `${other.id}`, `\0${other.id}\0`, `${other.id}\u00000\u0000kx`,
  `${PREFIX}:{${other.id}}:0:kx`, `0:kx`, 'kx', 'hx', 'gen', ':gen', '{x}:gen',
]

const STORES = [
  { name: 'memory', enabled: true, redis: null as string | null },
  { name: 'Redis', enabled: REDIS_OK, redis: REDIS_URL },
]

for (const store of STORES) {
  describe.skipIf(!store.enabled)(`tenant cache (${store.name})`, () => {
    let tenantry: Tenantry
    let a: Tenant
    let b: Tenant
    let raw: Redis | undefined

    beforeAll(async () => {
      if (store.redis) {
        raw = new Redis(store.redis)
        const old = await raw.keys(`${PREFIX}:*`)
        if (old.length) await raw.del(...old)
      }
      tenantry = await createTenantry({
        dataDir: 'memory', migrations: DEMO_MIGRATIONS, guard: { redis: null },
        observe: { metering: false, tracing: false }, cache: { redis: store.redis, keyPrefix: PREFIX },
      })
      await tenantry.migrate()
      a = await tenantry.provision({ slug: 'cache-a', tier: 'pooled' })
      b = await tenantry.provision({ slug: 'cache-b', tier: 'pooled' })
    })

    afterAll(async () => {
      await tenantry?.close()
      if (raw) {
        const left = await raw.keys(`${PREFIX}:*`)
        if (left.length) await raw.del(...left)
        raw.disconnect()
      }
    })

    it('refuses every call outside a tenant context', async () => {
      expect(await outcome(tenantry.cache.get('k'))).toBe('TENANT_CONTEXT_MISSING')
      expect(await outcome(tenantry.cache.set('k', 1))).toBe('TENANT_CONTEXT_MISSING')
      expect(await outcome(tenantry.cache.delete('k'))).toBe('TENANT_CONTEXT_MISSING')
      expect(await outcome(tenantry.cache.wrap('k', 1000, () => 1))).toBe('TENANT_CONTEXT_MISSING')
      expect(await outcome(tenantry.cache.flushTenant())).toBe('TENANT_CONTEXT_MISSING')
    })

    it('refuses bad keys, TTLs and values with CACHE_KEY_INVALID and stores nothing', async () => {
      await withTenant(a, async () => {
        for (const bad of ['', 42, null, undefined, {}]) expect(await outcome(tenantry.cache.set(bad as string, 1))).toBe('CACHE_KEY_INVALID')
        for (const ttl of [0, -1, 1.5, 86_400_001, Number.NaN]) expect(await outcome(tenantry.cache.set('ttl', 1, ttl))).toBe('CACHE_KEY_INVALID')
        expect(await outcome(tenantry.cache.set('v', undefined))).toBe('CACHE_KEY_INVALID')
        expect(await outcome(tenantry.cache.set('v', () => 1))).toBe('CACHE_KEY_INVALID')
        expect(await tenantry.cache.get('ttl')).toBeUndefined()
        expect(await tenantry.cache.get('v')).toBeUndefined()
      })
    })

    it('keeps every adversarial key in its own tenant', async () => {
      const keysA = ADVERSARIAL(b)
      const keysB = ADVERSARIAL(a)
      await withTenant(a, async () => {
        for (const [i, k] of keysA.entries()) await tenantry.cache.set(k, { owner: 'a', i })
      })
      await withTenant(b, async () => {
        // B asks for A's keys (and keys naming A): all misses; then writes its own under the same strings.
        for (const k of [...keysA, ...keysB]) expect(await tenantry.cache.get(k)).toBeUndefined()
        for (const [i, k] of keysB.entries()) await tenantry.cache.set(k, { owner: 'b', i })
      })
      await withTenant(a, async () => {
        for (const [i, k] of keysA.entries()) expect(await tenantry.cache.get(k)).toEqual({ owner: 'a', i })
      })
      await withTenant(b, async () => {
        for (const [i, k] of keysB.entries()) expect(await tenantry.cache.get(k)).toEqual({ owner: 'b', i })
      })
      // Distinct strings stay distinct entries (a long key is not confused with its hash's text).
      await withTenant(a, async () => {
        expect(await tenantry.cache.get('x'.repeat(10_001))).toBeUndefined()
        expect(await tenantry.cache.get('x'.repeat(9_999))).toBeUndefined()
      })
      if (raw) {
        // In Redis, every key starts with the prefix and the writer's tenant as the first hash tag
        // (besides each tenant's generation, which every change of its catalog row moved on).
        const keys = (await raw.keys(`${PREFIX}:*`)).filter((k) => !/^tenantry-test-cache:\{[0-9a-f-]{36}\}:gen$/.test(k))
        expect(keys.length).toBe(keysA.length + keysB.length)
        const owners = new Map<string, number>()
        for (const key of keys) {
          const m = /^tenantry-test-cache:\{([0-9a-f-]{36})\}:\d+:[kh]/s.exec(key)
          expect(m, key.slice(0, 120)).not.toBeNull()
          owners.set(m![1]!, (owners.get(m![1]!) ?? 0) + 1)
          expect(Buffer.byteLength(key)).toBeLessThan(300)
        }
        expect(Object.fromEntries(owners)).toEqual({ [a.id]: keysA.length, [b.id]: keysB.length })
      }
    })

    it('refuses a planted cross-tenant key', async () => {
      await withTenant(b, () => tenantry.cache.set('secret', 'b-only'))
      if (raw) {
        // Written straight into Redis where A's key 'planted' would live only if A's key could name B.
        const gen = (await raw.get(`${PREFIX}:{${a.id}}:gen`)) ?? '0'
        await raw.set(`${PREFIX}:{${a.id}}:${gen}:k{${b.id}}:0:ksecret`, JSON.stringify('planted'))
      }
      await withTenant(a, async () => {
        expect(await tenantry.cache.get('secret')).toBeUndefined()
        expect(await tenantry.cache.get(`{${b.id}}:0:ksecret`)).toBe(raw ? 'planted' : undefined)
        expect(await tenantry.cache.get(`}:{${b.id}}:0:ksecret`)).toBeUndefined()
        expect(await tenantry.cache.delete('secret')).toBe(false)
      })
      expect(await withTenant(b, () => tenantry.cache.get('secret'))).toBe('b-only')
    })

    it('wraps: one computation for concurrent callers, then hits; undefined is not cached', async () => {
      let calls = 0
      const compute = async () => { calls++; await new Promise((r) => setTimeout(r, 20)); return { n: calls } }
      const got = await withTenant(a, () => Promise.all([1, 2, 3].map(() => tenantry.cache.wrap('wrapped', 60_000, compute))))
      expect(got).toEqual([{ n: 1 }, { n: 1 }, { n: 1 }])
      expect(await withTenant(a, () => tenantry.cache.wrap('wrapped', 60_000, compute))).toEqual({ n: 1 })
      expect(calls).toBe(1)
      // Another tenant computes its own.
      expect(await withTenant(b, () => tenantry.cache.wrap('wrapped', 60_000, compute))).toEqual({ n: 2 })
      let u = 0
      await withTenant(a, () => tenantry.cache.wrap('undef', 60_000, () => { u++; return undefined }))
      await withTenant(a, () => tenantry.cache.wrap('undef', 60_000, () => { u++; return undefined }))
      expect(u).toBe(2)
    })

    it('expires entries by TTL', async () => {
      await withTenant(a, () => tenantry.cache.set('short', 1, 50))
      await new Promise((r) => setTimeout(r, 120))
      expect(await withTenant(a, () => tenantry.cache.get('short'))).toBeUndefined()
    })

    it('flushTenant forgets one tenant in one step; the other keeps its keys', async () => {
      await withTenant(a, async () => { await tenantry.cache.set('f1', 1); await tenantry.cache.set('f2', 2) })
      await withTenant(b, () => tenantry.cache.set('f1', 'b'))
      const before = raw ? await raw.get(`${PREFIX}:{${a.id}}:gen`) : null
      expect(await withTenant(a, () => tenantry.cache.flushTenant())).toBe(true)
      if (raw) expect(Number(await raw.get(`${PREFIX}:{${a.id}}:gen`))).toBe(Number(before ?? 0) + 1)
      await withTenant(a, async () => {
        expect(await tenantry.cache.get('f1')).toBeUndefined()
        expect(await tenantry.cache.get('f2')).toBeUndefined()
        await tenantry.cache.set('f1', 'new')
        expect(await tenantry.cache.get('f1')).toBe('new')
      })
      expect(await withTenant(b, () => tenantry.cache.get('f1'))).toBe('b')
      // From the control plane, by slug; an unknown one is a coded error.
      expect(await tenantry.cache.flushTenant('cache-b')).toBe(true)
      expect(await withTenant(b, () => tenantry.cache.get('f1'))).toBeUndefined()
      expect(await outcome(tenantry.cache.flushTenant('no-such-tenant'))).toBe('TENANT_NOT_FOUND')
    })

    it('the lifecycle flushes: suspend and resume forget the tenant keys', async () => {
      await withTenant(a, () => tenantry.cache.set('life', 1))
      await tenantry.suspend('cache-a', 'test')
      await tenantry.resume('cache-a')
      const fresh = (await tenantry.findTenant('cache-a'))!
      await vi.waitFor(async () => expect(await withTenant(fresh, () => tenantry.cache.get('life'))).toBeUndefined())
      const s = tenantry.cache.stats()
      expect(s.store).toBe(store.name === 'Redis' ? 'redis' : 'memory')
      expect(s.unavailable).toEqual({ reads: 0, writes: 0, flushes: 0 })
    })

    it("configuration changes flush: the tenant's own, its plan's (only that plan's tenants), a plan change", async () => {
      const fresh = async () => (await tenantry.findTenant('cache-a'))!
      await tenantry.config.plans.create('cache-plan', {})
      await withTenant(await fresh(), () => tenantry.cache.set('cfg', 1))
      await tenantry.config.set('cache-a', '/greeting', 'hello')
      expect(await withTenant(await fresh(), () => tenantry.cache.get('cfg'))).toBeUndefined()
      // Moving a tenant to another plan changes its configuration too.
      await withTenant(await fresh(), () => tenantry.cache.set('cfg', 2))
      await tenantry.config.changePlan('cache-a', 'cache-plan')
      expect(await withTenant(await fresh(), () => tenantry.cache.get('cfg'))).toBeUndefined()
      // A change of the plan's layer: its tenants forget, a tenant on another plan keeps its keys.
      await withTenant(await fresh(), () => tenantry.cache.set('cfg', 3))
      await withTenant(b, () => tenantry.cache.set('cfg', 'b'))
      await tenantry.config.plans.set('cache-plan', '/greeting', 'plan hello')
      await vi.waitFor(async () => expect(await withTenant(await fresh(), () => tenantry.cache.get('cfg'))).toBeUndefined())
      expect(await withTenant(b, () => tenantry.cache.get('cfg'))).toBe('b')
    })

    it('a move and a restore over the tenant flush it', async () => {
      const fresh = async () => (await tenantry.findTenant('cache-b'))!
      await withTenant(await fresh(), () => tenantry.cache.set('moved', 1))
      await tenantry.move('cache-b', { tier: 'schema' })
      expect((await fresh()).tier).toBe('schema')
      expect(await withTenant(await fresh(), () => tenantry.cache.get('moved'))).toBeUndefined()
      const dir = mkdtempSync(join(tmpdir(), 'tenantry-test-cache-'))
      try {
        const backup = await tenantry.portability.backup('cache-b', { to: dir })
        await withTenant(await fresh(), () => tenantry.cache.set('restored', 1))
        await tenantry.portability.restore(backup.path, { replace: true })
        expect(await withTenant(await fresh(), () => tenantry.cache.get('restored'))).toBeUndefined()
      } finally {
        rmSync(dir, { recursive: true, force: true })
      }
    })
  })
}

describe.skipIf(!REDIS_OK || !redisServerInstalled())('tenant cache with Redis stopped under it', () => {
  let redis: PrivateRedis
  let tenantry: Tenantry
  let a: Tenant

  beforeAll(async () => {
    redis = await PrivateRedis.start()
    tenantry = await createTenantry({
      dataDir: 'memory', migrations: DEMO_MIGRATIONS, guard: { redis: null },
      observe: { metering: false, tracing: false, metrics: {} }, cache: { redis: redis.url, commandTimeoutMs: 200 },
    })
    await tenantry.migrate()
    a = await tenantry.provision({ slug: 'cache-down', tier: 'pooled' })
  })

  afterAll(async () => {
    await tenantry?.close()
    await redis?.close()
  })

  it('misses and skips writes with counted metrics, never throws; serves again when Redis is back', async () => {
    await withTenant(a, () => tenantry.cache.set('k', 'v'))
    expect(await withTenant(a, () => tenantry.cache.get('k'))).toBe('v')
    await redis.stop()
    await vi.waitFor(() => expect(tenantry.cache.stats().ready).toBe(false))
    await withTenant(a, async () => {
      expect(await tenantry.cache.get('k')).toBeUndefined()
      await tenantry.cache.set('k2', 'v2')
      expect(await tenantry.cache.delete('k')).toBe(false)
      expect(await tenantry.cache.wrap('w', 1000, () => 'computed')).toBe('computed')
      expect(await tenantry.cache.flushTenant()).toBe(false)
    })
    expect(tenantry.cache.stats().unavailable).toEqual({ reads: 2, writes: 3, flushes: 1 })
    const text = await tenantry.observe.metrics!.registry.metrics()
    expect(text).toContain('tenantry_cache_unavailable_total{op="read"} 2')
    expect(text).toContain('tenantry_cache_unavailable_total{op="write"} 3')
    expect(text).toContain('tenantry_cache_unavailable_total{op="flush"} 1')
    await redis.start()
    await vi.waitFor(() => expect(tenantry.cache.stats().ready).toBe(true), { timeout: 10_000 })
    await withTenant(a, () => tenantry.cache.set('k3', 'back'))
    expect(await withTenant(a, () => tenantry.cache.get('k3'))).toBe('back')
  })
})

// Two app processes (two runtimes on one catalog, each with its own LISTEN connection): a change
// one of them makes — suspend, a configuration change — reaches the other's cache. With the
// in-memory LRU the other process forgets on the catalog notification; with Redis the one bump of
// the process that made the change is seen by both.
const PG_UP = await postgresAvailable()
for (const store of STORES) {
  describe.skipIf(!PG_UP || !store.enabled)(`tenant cache across two processes (${store.name})`, () => {
    const db = `tenantry_test_cache_${store.name.toLowerCase()}`
    const prefix = `th_cache_${store.name.toLowerCase()}`
    let one: Tenantry
    let two: Tenantry

    beforeAll(async () => {
      await dropPostgresLeftovers(prefix, db)
      const url = await freshDatabase(db)
      const open = () => createTenantry({
        databaseUrl: url, rolePrefix: prefix, migrations: DEMO_MIGRATIONS, guard: { redis: null },
        observe: { metering: false, tracing: false }, cache: { redis: store.redis, keyPrefix: `${PREFIX}-2p` },
      })
      one = await open()
      two = await open()
      await one.migrate()
      await one.provision({ slug: 'cache-2p', tier: 'pooled' })
    })

    afterAll(async () => {
      await one?.close()
      await two?.close()
      await dropPostgresLeftovers(prefix, db)
    })

    it("a suspend and a configuration change made by one process flush the other's cache", async () => {
      const get = async (t: Tenantry, key: string) => t.withTenant((await t.catalog.fresh((await t.findTenant('cache-2p'))!.id))!, () => t.cache.get(key))
      const set = async (t: Tenantry, key: string, v: unknown) => t.withTenant('cache-2p', () => t.cache.set(key, v))
      await set(one, 'k', 'one')
      expect(await get(one, 'k')).toBe('one')
      await two.config.set('cache-2p', '/greeting', 'hi')
      await vi.waitFor(async () => expect(await get(one, 'k')).toBeUndefined(), { timeout: 5000 })

      await set(one, 'k', 'again')
      await two.suspend('cache-2p', 'test')
      await two.resume('cache-2p')
      await vi.waitFor(async () => expect(await get(one, 'k')).toBeUndefined(), { timeout: 5000 })
      // A change of another tenant's row flushes nothing here.
      await two.provision({ slug: 'cache-2p-other', tier: 'pooled' })
      await set(one, 'k', 'kept')
      const heard = one.catalog.invalidations
      await two.suspend('cache-2p-other', 'test')
      await vi.waitFor(() => expect(one.catalog.invalidations).toBeGreaterThan(heard), { timeout: 5000 })
      expect(await get(one, 'k')).toBe('kept')
    })
  })
}
