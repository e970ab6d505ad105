import type { Redis } from 'ioredis'
import { Counter, type Registry } from 'prom-client'
import { currentTenant } from '../context/context.ts'
import { TenantryError } from '../core/errors.ts'
import type { Tenant } from '../core/types.ts'
import { isUuid } from '../core/validation.ts'
import type { TenantryEvents } from '../lifecycle/events.ts'
import { MemoryCacheStore, RedisCacheStore, encodeKey, type CacheStore } from './stores.ts'

/** Options of the tenant cache (`createTenantry({ cache })`). */
export interface CacheOptions {
  /**
   * Redis shared by the app processes: a URL or an ioredis client (yours: not closed by
   * Tenantry). Default `REDIS_URL` (the guard's variable); without one, an in-memory LRU per
   * process. `null`: in-memory even when `REDIS_URL` is set.
   */
  redis?: string | Redis | null
  /** Prefix of the cache keys in Redis. Default `tenantry:cache`. */
  keyPrefix?: string
  /** TTL of `set` without one, ms. Default 3,600,000 (an hour). */
  defaultTtlMs?: number
  /** Longest TTL allowed, ms: entries orphaned by a flush live at most this long. Default 86,400,000 (a day). */
  maxTtlMs?: number
  /** Entries of the in-memory LRU, all tenants together. Default 10,000. */
  maxEntries?: number
  /** Longest a Redis command may take before the cache answers a miss. Default 250 ms. */
  commandTimeoutMs?: number
}

/** What the cache counted since start: `unavailable` is reads answered as misses and writes skipped because the store failed. */
export interface CacheStats {
  store: 'redis' | 'memory'
  ready: boolean
  hits: number
  misses: number
  writes: number
  unavailable: { reads: number; writes: number; flushes: number }
}

export interface CacheDeps {
  events: TenantryEvents
  /** Find a tenant by slug or id, for `flushTenant('acme')` outside a tenant context. */
  findTenant(slugOrId: string): Promise<Tenant | null>
  /** Where the `tenantry_cache_unavailable_total` counter is registered (the metrics registry), if metrics are on. */
  registry?: Registry
  /**
   * Changes of the catalog (`Catalog.onChange`): a tenant id when its row changed (status,
   * configuration, plan, placement — suspend, resume, delete, restore, purge, move, config),
   * `plan:<name>` when a plan's configuration changed, `*` when notifications may have been
   * lost; `local` when this process made the change.
   */
  onCatalogChange?(listener: (subject: string, local: boolean) => void): () => void
  /** The tenants on a plan, whose merged configuration a plan change touches. */
  tenantsOnPlan?(plan: string): Promise<Tenant[]>
}

/**
 * A cache whose every key belongs to the current tenant. Keys are opaque strings of any content;
 * values are JSON. Reads outside a tenant context throw `TENANT_CONTEXT_MISSING`, like the data
 * plane. A failing Redis never fails a request: reads miss, writes are skipped, and the
 * `unavailable` counters (and the `tenantry_cache_unavailable_total` metric) count it.
 *
 * @example
 * ```ts
 * const stats = await tenantry.cache.wrap(`project:${id}:stats`, 60_000, () => computeStats(id))
 * await tenantry.cache.flushTenant() // every key of the current tenant, in O(1)
 * ```
 */
export class TenantCache {
  private readonly stats_: CacheStats
  private readonly inflight = new Map<string, Promise<unknown>>()
  private readonly counter?: Counter<'op'>

  constructor(
    private readonly store: CacheStore,
    private readonly opts: { defaultTtlMs: number; maxTtlMs: number },
    private readonly deps: CacheDeps,
  ) {
    this.stats_ = { store: store.kind, ready: true, hits: 0, misses: 0, writes: 0, unavailable: { reads: 0, writes: 0, flushes: 0 } }
    if (deps.registry) {
      this.counter = (deps.registry.getSingleMetric('tenantry_cache_unavailable_total') as Counter<'op'> | undefined) ?? new Counter({
        name: 'tenantry_cache_unavailable_total',
        help: 'Cache operations the store could not serve (Redis down or slow): reads answered as misses, writes and flushes skipped.',
        labelNames: ['op'],
        registers: [deps.registry],
      })
    }
  }

  /** The cached value of `key` for the current tenant, or `undefined`. */
  async get<T = unknown>(key: string): Promise<T | undefined> {
    const tenant = currentTenant()
    const k = checkKey(key)
    let raw: string | undefined
    try {
      raw = this.store.ready() ? await this.store.get(tenant.id, k) : unavailable()
    } catch {
      this.degraded('read')
      this.stats_.misses++
      return undefined
    }
    if (raw === undefined) {
      this.stats_.misses++
      return undefined
    }
    this.stats_.hits++
    return JSON.parse(raw) as T
  }

  /** Store `value` (JSON) under `key` for the current tenant, for `ttlMs` (default `defaultTtlMs`). */
  async set(key: string, value: unknown, ttlMs?: number): Promise<void> {
    const tenant = currentTenant()
    const k = checkKey(key)
    const ttl = this.ttl(ttlMs)
    const raw = serialise(value)
    try {
      if (!this.store.ready()) unavailable()
      await this.store.set(tenant.id, k, raw, ttl)
      this.stats_.writes++
    } catch {
      this.degraded('write')
    }
  }

  /** Remove `key` of the current tenant; true when it was there. */
  async delete(key: string): Promise<boolean> {
    const tenant = currentTenant()
    const k = checkKey(key)
    try {
      if (!this.store.ready()) unavailable()
      return await this.store.delete(tenant.id, k)
    } catch {
      this.degraded('write')
      return false
    }
  }

  /**
   * The cached value of `key`, or `fn()`'s, stored for `ttlMs`. Concurrent calls for the same
   * tenant and key in this process share one `fn()`. A result of `undefined` is not cached.
   */
  async wrap<T>(key: string, ttlMs: number, fn: () => T | Promise<T>): Promise<T> {
    const tenant = currentTenant()
    const k = checkKey(key)
    this.ttl(ttlMs)
    const hit = await this.get<T>(key)
    if (hit !== undefined) return hit
    const slot = `${tenant.id}\0${k}`
    const running = this.inflight.get(slot) as Promise<T> | undefined
    if (running) return running
    const p = (async () => {
      const value = await fn()
      if (value !== undefined) await this.set(key, value, ttlMs)
      return value
    })()
    this.inflight.set(slot, p)
    try {
      return await p
    } finally {
      this.inflight.delete(slot)
    }
  }

  /**
   * Forget every key of a tenant in O(1): its generation number moves on, so old keys are never
   * read again and expire by their TTL. Without an argument, the current tenant; otherwise a
   * tenant, slug or id (control-plane use). Returns false when the store could not be reached.
   */
  async flushTenant(tenant?: Tenant | string): Promise<boolean> {
    const t = tenant === undefined ? currentTenant() : typeof tenant === 'string' ? await this.deps.findTenant(tenant) : tenant
    if (!t) throw new TenantryError('TENANT_NOT_FOUND', `No tenant has the slug or id '${String(tenant).slice(0, 64)}'.`)
    return this.flushId(t.id)
  }

  /** {@link flushTenant} by a tenant id the catalog may no longer know (a purged tenant's). @internal */
  async flushId(tenantId: string): Promise<boolean> {
    try {
      if (!this.store.ready()) unavailable()
      await this.store.bump(tenantId)
      return true
    } catch {
      this.degraded('flush')
      return false
    }
  }

  /** Counts since start (hits, misses, writes, and what the store could not serve). */
  stats(): CacheStats {
    return { ...this.stats_, ready: this.store.ready(), unavailable: { ...this.stats_.unavailable } }
  }

  async close(): Promise<void> {
    await this.store.close()
  }

  private ttl(ttlMs: number | undefined): number {
    if (ttlMs === undefined) return this.opts.defaultTtlMs
    if (typeof ttlMs !== 'number' || !Number.isInteger(ttlMs) || ttlMs <= 0 || ttlMs > this.opts.maxTtlMs) {
      throw new TenantryError('CACHE_KEY_INVALID', `A cache TTL must be a whole number of milliseconds from 1 to ${this.opts.maxTtlMs} (maxTtlMs); got ${String(ttlMs).slice(0, 40)}.`)
    }
    return ttlMs
  }

  private degraded(op: 'read' | 'write' | 'flush'): void {
    if (op === 'read') this.stats_.unavailable.reads++
    else if (op === 'write') this.stats_.unavailable.writes++
    else this.stats_.unavailable.flushes++
    this.counter?.inc({ op })
  }
}

function unavailable(): never {
  throw new Error('cache store not ready')
}

function checkKey(key: unknown): string {
  if (typeof key !== 'string' || key.length === 0) {
    throw new TenantryError('CACHE_KEY_INVALID', 'A cache key must be a non-empty string.')
  }
  return encodeKey(key)
}

function serialise(value: unknown): string {
  let raw: string | undefined
  try {
    raw = JSON.stringify(value)
  } catch (err) {
    throw new TenantryError('CACHE_KEY_INVALID', `A cached value must be JSON: ${(err as Error).message}.`, { cause: err })
  }
  if (raw === undefined) throw new TenantryError('CACHE_KEY_INVALID', 'A cached value must be JSON (not undefined or a function).')
  return raw
}

/**
 * The tenant cache, wired by `createTenantry`: Redis when configured (option or `REDIS_URL`),
 * else an in-memory LRU; every change of a tenant's catalog row (suspend, resume, delete, restore,
 * purge, move, configuration or plan) and of its plan's configuration flushes its keys.
 *
 * @example
 * ```ts
 * const cache = await createCache({ redis: 'redis://127.0.0.1:6379' }, { events, findTenant })
 * ```
 */
export async function createCache(options: CacheOptions = {}, deps: CacheDeps): Promise<TenantCache> {
  const num = (name: keyof CacheOptions, v: unknown, dflt: number, min: number) => {
    if (v === undefined) return dflt
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min) {
      throw new TenantryError('CONFIG_INVALID', `cache.${name} must be a whole number of at least ${min}; got ${String(v).slice(0, 40)}.`, { details: { option: `cache.${name}` } })
    }
    return v
  }
  const maxTtlMs = num('maxTtlMs', options.maxTtlMs, 86_400_000, 1)
  const defaultTtlMs = num('defaultTtlMs', options.defaultTtlMs, Math.min(3_600_000, maxTtlMs), 1)
  if (defaultTtlMs > maxTtlMs) throw new TenantryError('CONFIG_INVALID', 'cache.defaultTtlMs must not exceed cache.maxTtlMs.', { details: { option: 'cache.defaultTtlMs' } })
  const maxEntries = num('maxEntries', options.maxEntries, 10_000, 1)
  const timeout = num('commandTimeoutMs', options.commandTimeoutMs, 250, 1)
  const redisOpt = options.redis === undefined ? process.env.REDIS_URL || null : options.redis
  let store: CacheStore
  if (redisOpt) {
    const r = new RedisCacheStore(redisOpt, options.keyPrefix ?? 'tenantry:cache', timeout)
    // Not reachable at start: the cache misses until it is (it never blocks start-up for long).
    await r.connected(2000)
    store = r
  } else {
    store = new MemoryCacheStore(maxEntries)
  }
  const cache = new TenantCache(store, { defaultTtlMs, maxTtlMs }, deps)
  const flush = (tenantId: string, why: string) => {
    const context = `flushing the cache of tenant ${tenantId} after ${why}`
    cache.flushId(tenantId).then((ok) => {
      if (!ok) deps.events.emit('error', { error: new Error('cache store unavailable'), context })
    }, (error) => deps.events.emit('error', { error, context }))
  }
  deps.onCatalogChange?.((subject, local) => {
    // Redis holds the generation for every process: the process that made the change bumps it
    // once. The in-memory LRU is per process: each one forgets its own entries, on its own
    // change or on the notification of another process's (the CLI's, another app's).
    if (store.kind === 'redis' && !local) return
    if (subject === '*') {
      store.bumpAll?.()
    } else if (isUuid(subject)) {
      flush(subject, 'a change of its catalog row')
    } else if (subject.startsWith('plan:') && deps.tenantsOnPlan) {
      const plan = subject.slice('plan:'.length)
      deps.tenantsOnPlan(plan).then(
        (tenants) => { for (const t of tenants) flush(t.id, `a change of plan '${plan}'`) },
        (error) => deps.events.emit('error', { error, context: `flushing the cache of the tenants on plan '${plan}'` }),
      )
    }
  })
  return cache
}
