import { createHash } from 'node:crypto'
import { Redis } from 'ioredis'
import { LRUCache } from 'lru-cache'

/**
 * The port the tenant cache writes through. Keys arrive already encoded ({@link encodeKey}); the
 * store puts the tenant id and the tenant's generation in front of them, so no key a user passes
 * can name another tenant's entry, and bumping the generation orphans every entry of the tenant in
 * one step (old entries expire by their TTL).
 */
export interface CacheStore {
  readonly kind: 'redis' | 'memory'
  get(tenantId: string, key: string): Promise<string | undefined>
  set(tenantId: string, key: string, value: string, ttlMs: number): Promise<void>
  delete(tenantId: string, key: string): Promise<boolean>
  /** Move the tenant to a new generation: O(1), whatever the number of its keys. */
  bump(tenantId: string): Promise<void>
  /** Forget every tenant's entries (notifications may have been lost); only a per-process store needs it. */
  bumpAll?(): void
  /** Whether the store can answer now (Redis connected); when not, reads miss and writes are skipped. */
  ready(): boolean
  close(): Promise<void>
}

/** Longest user key kept verbatim (bytes); longer ones are stored by their SHA-256. */
const VERBATIM_BYTES = 200

/**
 * The store-side form of a user key: `k` + the key when short, `h` + its SHA-256 when long, so a
 * 10 kB key costs 65 bytes in Redis and a short key can never equal a hashed one.
 */
export function encodeKey(key: string): string {
  return Buffer.byteLength(key, 'utf8') <= VERBATIM_BYTES ? `k${key}` : `h${createHash('sha256').update(key, 'utf8').digest('hex')}`
}

/** In-process LRU (lru-cache): the default when no Redis is configured. */
export class MemoryCacheStore implements CacheStore {
  readonly kind = 'memory' as const
  private readonly lru: LRUCache<string, string>
  private readonly generations = new Map<string, number>()

  constructor(maxEntries: number) {
    this.lru = new LRUCache<string, string>({ max: maxEntries, ttlAutopurge: false })
  }

  private entry(tenantId: string, key: string): string {
    // NUL cannot appear in a tenant id (a uuid); the key is the last part, so nothing in it can
    // reach back into the tenant or generation parts.
    return `${tenantId}\0${this.generations.get(tenantId) ?? 0}\0${key}`
  }

  async get(tenantId: string, key: string): Promise<string | undefined> {
    return this.lru.get(this.entry(tenantId, key))
  }

  async set(tenantId: string, key: string, value: string, ttlMs: number): Promise<void> {
    this.lru.set(this.entry(tenantId, key), value, { ttl: ttlMs })
  }

  async delete(tenantId: string, key: string): Promise<boolean> {
    return this.lru.delete(this.entry(tenantId, key))
  }

  async bump(tenantId: string): Promise<void> {
    this.generations.set(tenantId, (this.generations.get(tenantId) ?? 0) + 1)
  }

  bumpAll(): void {
    this.lru.clear()
  }

  ready(): boolean {
    return true
  }

  async close(): Promise<void> {
    this.lru.clear()
  }
}

// Each script reads the tenant's generation and touches the entry in one round trip. KEYS[1] is
// the tenant's base `<prefix>:{<tenant id>}`: its hash tag puts the generation key and every entry
// of the tenant in the same Redis Cluster slot, so the keys the script derives live where it runs.
const GET_SCRIPT = `local g = redis.call('GET', KEYS[1] .. ':gen') or '0'
return redis.call('GET', KEYS[1] .. ':' .. g .. ':' .. ARGV[1])`
const SET_SCRIPT = `local g = redis.call('GET', KEYS[1] .. ':gen') or '0'
return redis.call('SET', KEYS[1] .. ':' .. g .. ':' .. ARGV[1], ARGV[2], 'PX', ARGV[3])`
const DEL_SCRIPT = `local g = redis.call('GET', KEYS[1] .. ':gen') or '0'
return redis.call('DEL', KEYS[1] .. ':' .. g .. ':' .. ARGV[1])`

type ScriptedRedis = Redis & {
  tenantryCacheGet(base: string, key: string): Promise<string | null>
  tenantryCacheSet(base: string, key: string, value: string, ttlMs: number): Promise<unknown>
  tenantryCacheDel(base: string, key: string): Promise<number>
}

/** Redis (ioredis): entries `<prefix>:{<tenant id>}:<generation>:<key>`, generation `<prefix>:{<tenant id>}:gen`. */
export class RedisCacheStore implements CacheStore {
  readonly kind = 'redis' as const
  private readonly redis: ScriptedRedis
  private readonly owns: boolean

  constructor(redis: string | Redis, private readonly prefix: string, commandTimeoutMs: number) {
    if (typeof redis === 'string') {
      this.redis = new Redis(redis, {
        // A cache must never make a request wait for a dead Redis: no offline queue, no retries of
        // a command, a short command timeout; the caller treats a failure as a miss.
        enableOfflineQueue: false,
        maxRetriesPerRequest: 0,
        commandTimeout: commandTimeoutMs,
        connectTimeout: 2000,
        retryStrategy: (times) => Math.min(100 * times, 1000),
      }) as ScriptedRedis
      this.owns = true
    } else {
      this.redis = redis as ScriptedRedis
      this.owns = false
    }
    this.redis.on('error', () => undefined)
    if (!this.redis.tenantryCacheGet) {
      this.redis.defineCommand('tenantryCacheGet', { numberOfKeys: 1, lua: GET_SCRIPT })
      this.redis.defineCommand('tenantryCacheSet', { numberOfKeys: 1, lua: SET_SCRIPT })
      this.redis.defineCommand('tenantryCacheDel', { numberOfKeys: 1, lua: DEL_SCRIPT })
    }
  }

  private base(tenantId: string): string {
    return `${this.prefix}:{${tenantId}}`
  }

  async get(tenantId: string, key: string): Promise<string | undefined> {
    return (await this.redis.tenantryCacheGet(this.base(tenantId), key)) ?? undefined
  }

  async set(tenantId: string, key: string, value: string, ttlMs: number): Promise<void> {
    await this.redis.tenantryCacheSet(this.base(tenantId), key, value, ttlMs)
  }

  async delete(tenantId: string, key: string): Promise<boolean> {
    return (await this.redis.tenantryCacheDel(this.base(tenantId), key)) > 0
  }

  async bump(tenantId: string): Promise<void> {
    await this.redis.incr(`${this.base(tenantId)}:gen`)
  }

  ready(): boolean {
    return this.redis.status === 'ready'
  }

  /** Wait up to `ms` for the first connection (a cache that starts before Redis just misses). */
  async connected(ms: number): Promise<boolean> {
    if (this.ready()) return true
    return new Promise((resolve) => {
      const done = (ok: boolean) => { clearTimeout(t); this.redis.off('ready', onReady); resolve(ok) }
      const onReady = () => done(true)
      const t = setTimeout(() => done(false), ms)
      this.redis.once('ready', onReady)
    })
  }

  async close(): Promise<void> {
    if (this.owns) this.redis.disconnect()
  }
}
