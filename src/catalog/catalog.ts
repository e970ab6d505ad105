import { randomUUID } from 'node:crypto'
import { LRUCache } from 'lru-cache'
import { TenantryError } from '../core/errors.ts'
import type { Placement, Plan, Server, Tenant, TenantStatus, Tier } from '../core/types.ts'
import type { Queryable } from '../data/executor.ts'
import type { AdminQueryable } from '../data/driver.ts'
import { isUuid, printable } from '../core/validation.ts'
import { CREATE_TENANT_KEY_SQL, bootstrapDatabaseSql } from '../data/sql.ts'
import * as sql from './sql.ts'

interface TenantRow {
  id: string
  slug: string
  name: string
  status: TenantStatus
  status_reason: string | null
  tier: Tier
  plan: string
  region: string | null
  server: string
  database: string
  schema: string | null
  config: Record<string, unknown> | string
  created_at: Date | string
  updated_at: Date | string
  deleted_at: Date | string | null
}

function toTenant(row: TenantRow): Tenant {
  return Object.freeze({
    id: row.id,
    slug: row.slug,
    name: row.name,
    status: row.status,
    statusReason: row.status_reason,
    tier: row.tier,
    plan: row.plan,
    region: row.region,
    placement: Object.freeze(row.schema ? { server: row.server, database: row.database, schema: row.schema } : { server: row.server, database: row.database }),
    config: typeof row.config === 'string' ? JSON.parse(row.config) : row.config,
    createdAt: new Date(row.created_at),
    updatedAt: new Date(row.updated_at),
    deletedAt: row.deleted_at === null ? null : new Date(row.deleted_at),
  }) as Tenant
}

export interface CatalogOptions {
  /** Owner connection to the catalog database. */
  admin: AdminQueryable
  /** Subscribe to change notifications from other processes (LISTEN/NOTIFY). */
  listen?: (channel: string, onMessage: (payload: string) => void, onReconnect?: () => void) => Promise<() => Promise<void>>
  /** How long a cached lookup may be served without a notification (a backstop). Default 60 s. */
  cacheTtlMs?: number
}

/** A page request of {@link Catalog.page}. */
export interface TenantPageQuery {
  status?: TenantStatus
  tier?: Tier
  server?: string
  plan?: string
  /** Slug prefix or part of the name, case-insensitive. */
  search?: string
  /** The `next` of the previous page. */
  cursor?: string
  /** Tenants per page, 1 to 500. Default 50. */
  limit?: number
}

/** A page of tenants and the cursor of the next one (null on the last page). */
export interface TenantPage {
  tenants: Tenant[]
  next: string | null
}

const STATUSES: readonly TenantStatus[] = ['provisioning', 'active', 'suspended', 'deleted']

const NO_TENANT: Promise<Tenant | null> = Promise.resolve(null)

type LookupKind = 'slug' | 'id' | 'domain'

/** The cache key of a lookup: `s:acme`, `i:<uuid>`, `d:app.example.com`. */
function cacheKey(kind: LookupKind, value: string): string {
  return `${kind[0]}:${value}`
}

interface CacheEntry {
  value: Promise<Tenant | null>
  expires: number
  /** The lookup's result once it has arrived (undefined before). */
  settled?: Tenant | null
}

/**
 * The control-plane store: tenants, domains, servers and plans in the `tenantry` schema of the
 * catalog database. Lookups by id, slug and domain are cached in-process; every change sends a
 * NOTIFY in its own transaction, and every process listening clears its cache on it.
 *
 * @example
 * ```ts
 * const tenant = await catalog.bySlug('acme') // Tenant | null
 * ```
 */
export class Catalog {
  private readonly admin: AdminQueryable
  private readonly opts: CatalogOptions
  // Bounded, so that requests naming tenants that do not exist cannot grow memory without end;
  // misses apart, so that a flood of them cannot push the known tenants out.
  private readonly cache = new LRUCache<string, CacheEntry>({ max: 20_000 })
  private readonly misses = new LRUCache<string, CacheEntry>({ max: 2_000 })
  private readonly ttl: number
  private unlisten?: () => Promise<void>
  /** The installation's key (see data/tenant-token.ts), read by init(). */
  tenantKey = ''
  /** Count of cache clears caused by notifications (tests observe it). */
  invalidations = 0
  /**
   * Prefix of this catalog's own notifications. Its own changes clear its cache at once, so their
   * echo is skipped: it arrived later and cleared again what the process had cached meanwhile.
   */
  private readonly origin = `${randomUUID()}:`
  private readonly listeners = new Set<(subject: string, local: boolean) => void>()

  constructor(opts: CatalogOptions) {
    this.opts = opts
    this.admin = opts.admin
    this.ttl = opts.cacheTtlMs ?? 60_000
  }

  /** Create the catalog tables if needed and start listening for changes. */
  async init(): Promise<void> {
    await this.admin.transaction(async (tx) => {
      await tx.exec(CREATE_TENANT_KEY_SQL)
      const key = await tx.query<{ key: string }>('SELECT key FROM tenantry.secret')
      this.tenantKey = key.rows[0].key
      await tx.exec(bootstrapDatabaseSql(this.tenantKey))
      await tx.exec(sql.CATALOG_SCHEMA_SQL)
    })
    if (this.opts.listen) {
      this.unlisten = await this.opts.listen(
        sql.CATALOG_CHANNEL,
        (payload) => {
          if (payload.startsWith(this.origin)) return
          this.invalidations++
          this.clearCache()
          // The payload is `<origin uuid>:<subject>`.
          this.changed(payload.slice(payload.indexOf(':') + 1), false)
        },
        () => { this.clearCache(); this.changed('*', false) },
      )
    }
  }

  /**
   * Call `listener` with the subject of every catalog change, this process's and (through the
   * notifications) every other's: a tenant id, a domain, `plan:<name>`, `flag:<key>`, `server:<name>`,
   * or `*` after a lost notification connection came back (anything may have changed). `local` is
   * true for a change this process made (heard at once), false for one heard through a
   * notification. Returns an unsubscribe function. Listeners must not throw.
   *
   * @example
   * ```ts
   * catalog.onChange((subject) => { if (subject.startsWith('plan:')) reloadPlans() })
   * ```
   */
  onChange(listener: (subject: string, local: boolean) => void): () => void {
    this.listeners.add(listener)
    return () => { this.listeners.delete(listener) }
  }

  private changed(subject: string, local: boolean): void {
    for (const l of this.listeners) {
      try { l(subject, local) } catch { /* a listener's fault is its own */ }
    }
  }

  async close(): Promise<void> {
    this.listeners.clear()
    await this.unlisten?.()
    this.clearCache()
  }

  /** Cached lookups: of tenants found, and of identifiers that name no tenant (for metrics and tests). */
  cacheStats(): { entries: number; misses: number; maxEntries: number; maxMisses: number } {
    return { entries: this.cache.size, misses: this.misses.size, maxEntries: this.cache.max, maxMisses: this.misses.max }
  }

  /** Forget every cached lookup. */
  clearCache(): void {
    this.cache.clear()
    this.misses.clear()
  }

  /**
   * The cached result of a lookup by slug (`s`), id (`i`) or domain (`d`), when it is at hand
   * without waiting: a tenant, `null` for a known miss, `undefined` when only an (asynchronous)
   * lookup can tell. The resolver's fast path: a request of a cached tenant costs no promise.
   */
  cachedBy(kind: LookupKind, value: string): Tenant | null | undefined {
    const key = cacheKey(kind, value)
    const hit = this.cache.get(key) ?? this.misses.get(key)
    return hit && hit.expires > Date.now() ? hit.settled : undefined
  }

  bySlug(slug: string): Promise<Tenant | null> {
    return this.cached(cacheKey('slug', slug), () => sql.tenantBySlug(slug))
  }

  byId(id: string): Promise<Tenant | null> {
    // A malformed id names no tenant (PostgreSQL would reject it as a uuid: a 500 for bad input).
    if (typeof id !== 'string' || !isUuid(id.toLowerCase())) return NO_TENANT
    return this.cached(cacheKey('id', id), () => sql.tenantById(id))
  }

  /**
   * The tenant as the catalog table has it now, past the cache: a write a move fenced asks this
   * while the notification of the switch may still be on its way. A changed placement drops this
   * process's cache at once.
   */
  async fresh(id: string): Promise<Tenant | null> {
    if (typeof id !== 'string' || !isUuid(id.toLowerCase())) return null
    const st = sql.tenantById(id)
    const res = await this.admin.query<TenantRow>(st.text, st.values)
    const now = res.rows[0] ? toTenant(res.rows[0]) : null
    const cached = this.cachedBy('id', id)
    if (cached && now && (cached.tier !== now.tier || JSON.stringify(cached.placement) !== JSON.stringify(now.placement))) this.clearCache()
    return now
  }

  byDomain(domain: string): Promise<Tenant | null> {
    return this.cached(cacheKey('domain', domain), () => sql.tenantByDomain(domain))
  }

  /** All tenants (uncached), optionally filtered. */
  async list(filter: { status?: TenantStatus; tier?: Tier; server?: string } = {}): Promise<Tenant[]> {
    const res = await this.admin.query<TenantRow>(...args(sql.listTenants(filter)))
    return res.rows.map(toTenant)
  }

  /**
   * One page of tenants in slug order, filtered, for lists of any size (keyset pagination: every
   * page costs the same). `cursor` is the `next` of the previous page; `next` is null on the last.
   *
   * @example
   * ```ts
   * let page = await catalog.page({ status: 'active', limit: 50 })
   * while (page.next) page = await catalog.page({ status: 'active', limit: 50, cursor: page.next })
   * ```
   */
  async page(query: TenantPageQuery = {}): Promise<TenantPage> {
    const limit = query.limit ?? 50
    if (!Number.isInteger(limit) || limit < 1 || limit > 500) {
      throw new TenantryError('VALIDATION_FAILED', 'limit must be a whole number from 1 to 500.', { details: { field: 'limit' } })
    }
    let after: string | undefined
    if (query.cursor !== undefined) {
      after = Buffer.from(String(query.cursor), 'base64url').toString('utf8')
      if (!/^[a-z0-9-]{1,63}$/.test(after) || Buffer.from(after).toString('base64url') !== query.cursor) {
        throw new TenantryError('VALIDATION_FAILED', 'cursor is not one this API returned; pass the `next` of the previous page.', { details: { field: 'cursor' } })
      }
    }
    const { cursor: _c, limit: _l, ...filter } = query
    const res = await this.admin.query<TenantRow>(...args(sql.pageTenants({ ...filter, after, limit })))
    const rows = res.rows.slice(0, limit).map(toTenant)
    const next = res.rows.length > limit ? Buffer.from(rows[rows.length - 1].slug).toString('base64url') : null
    return { tenants: rows, next }
  }

  /** Tenants counted by tier, server and status. */
  async counts(): Promise<{ tier: Tier; server: string; status: TenantStatus; count: number }[]> {
    const res = await this.admin.query<{ tier: Tier; server: string; status: TenantStatus; n: number }>(...args(sql.tenantCounts()))
    return res.rows.map((r) => ({ tier: r.tier, server: r.server, status: r.status, count: Number(r.n) }))
  }

  /**
   * Insert a tenant row. A taken slug is a `CONFLICT`. `alsoInTransaction` runs in the same
   * transaction (provisioning records its operation there, so a refused slug writes nothing).
   */
  async insertTenant(input: Parameters<typeof sql.insertTenant>[0], alsoInTransaction?: (tx: Queryable) => Promise<void>): Promise<Tenant> {
    return this.change(input.id, async (tx) => {
      try {
        const res = await tx.query<TenantRow>(...args(sql.insertTenant(input)))
        await alsoInTransaction?.(tx)
        return toTenant(res.rows[0])
      } catch (err) {
        if ((err as { code?: string }).code === '23505') {
          throw new TenantryError('CONFLICT', `The slug '${input.slug}' is already taken; choose another.`, { cause: err, details: { slug: input.slug } })
        }
        if ((err as { code?: string }).code === '23503') {
          throw new TenantryError('VALIDATION_FAILED', `Unknown plan '${input.plan}' or server '${input.server}'.`, { cause: err })
        }
        throw err
      }
    })
  }

  /**
   * Change a tenant's status; `alsoInTransaction` runs in the same transaction (an operation's end).
   * With `from`, the change happens only while the tenant is still in one of those statuses: a
   * change that another process made in between is a `CONFLICT`, never overwritten.
   */
  async setStatus(id: string, status: TenantStatus, reason: string | null = null, alsoInTransaction?: (tx: Queryable, after: Tenant) => Promise<void>, from?: readonly TenantStatus[]): Promise<Tenant> {
    if (!STATUSES.includes(status)) {
      throw new TenantryError('VALIDATION_FAILED', `Status '${printable(String(status))}' is not one of ${STATUSES.join(', ')}.`, { details: { status: printable(String(status)) } })
    }
    return this.change(id, async (tx) => {
      const res = await tx.query<TenantRow>(...args(sql.updateTenantStatus(id, status, reason, from)))
      if (res.rowCount === 0 && from) {
        const now = await tx.query<{ status: TenantStatus }>(...args(sql.tenantById(id)))
        if (now.rows[0]) {
          throw new TenantryError('CONFLICT', `The tenant became ${now.rows[0].status} while this change was made; reload it and decide again.`, { details: { status: now.rows[0].status } })
        }
      }
      if (res.rowCount === 0) throw new TenantryError('TENANT_NOT_FOUND', `No tenant has the id '${id}'.`)
      const after = toTenant(res.rows[0])
      await alsoInTransaction?.(tx, after)
      return after
    })
  }

  async updateTenant(id: string, fields: { name?: string; plan?: string; config?: Record<string, unknown> }): Promise<Tenant> {
    return this.change(id, async (tx) => {
      let res
      try {
        res = await tx.query<TenantRow>(...args(sql.updateTenantFields(id, fields)))
      } catch (err) {
        if ((err as { code?: string }).code === '23503') {
          throw new TenantryError('VALIDATION_FAILED', `Unknown plan '${printable(String(fields.plan))}'.`, { cause: err, details: { plan: printable(String(fields.plan)) } })
        }
        throw err
      }
      if (res.rowCount === 0) throw new TenantryError('TENANT_NOT_FOUND', `No tenant has the id '${id}'.`)
      return toTenant(res.rows[0])
    })
  }

  /**
   * Point a tenant at another placement (and tier), with `alsoInTransaction` in the same
   * transaction: the switch of a `--replace` restore or a move; every process drops its cached row.
   */
  async setPlacement(id: string, tier: Tier, placement: Placement, alsoInTransaction?: (tx: Queryable) => Promise<void>): Promise<Tenant> {
    return this.change(id, async (tx) => {
      const res = await tx.query<TenantRow>(...args(sql.updateTenantPlacement(id, tier, placement)))
      if (res.rowCount === 0) throw new TenantryError('TENANT_NOT_FOUND', `No tenant has the id '${id}'.`)
      await alsoInTransaction?.(tx)
      return toTenant(res.rows[0])
    })
  }

  async deleteTenantRow(id: string): Promise<void> {
    await this.change(id, (tx) => tx.query(...args(sql.deleteTenantRow(id))))
  }

  /** Add a domain that resolves at once; `alsoInTransaction` runs in the same transaction (its audit entry). */
  async addDomain(tenantId: string, domain: string, alsoInTransaction?: (tx: Queryable) => Promise<void>): Promise<void> {
    await this.change(tenantId, async (tx) => {
      try {
        await tx.query(...args(sql.insertDomain(domain, tenantId)))
      } catch (err) {
        if ((err as { code?: string }).code === '23505') throw new TenantryError('DOMAIN_TAKEN', `The domain '${domain}' already belongs to a tenant; remove it there first.`, { cause: err, details: { domain } })
        if ((err as { code?: string }).code === '23503') throw new TenantryError('TENANT_NOT_FOUND', `No tenant has the id '${printable(tenantId)}'.`, { cause: err })
        throw err
      }
      await alsoInTransaction?.(tx)
    })
  }

  async removeDomain(domain: string): Promise<void> {
    await this.change(domain, (tx) => tx.query(...args(sql.deleteDomain(domain))))
  }

  async domainsOf(tenantId: string): Promise<string[]> {
    const res = await this.admin.query<{ domain: string }>(...args(sql.domainsOf(tenantId)))
    return res.rows.map((r) => r.domain)
  }

  async upsertServer(server: Server): Promise<void> {
    await this.change(`server:${server.name}`, (tx) => tx.query(...args(sql.upsertServer(server))))
  }

  /** Add a server unless its name is taken; returns what the catalog holds under the name (compare it to tell). `alsoInTransaction` runs when it was added (its audit entry). */
  async insertServer(server: Server, alsoInTransaction?: (tx: Queryable) => Promise<void>): Promise<Server> {
    return this.change(`server:${server.name}`, async (tx) => {
      const inserted = await tx.query<ServerRow>(...args(sql.insertServer(server)))
      if (inserted.rows[0]) await alsoInTransaction?.(tx)
      // A statement of its own: a row committed by a racing insert is not in the insert's snapshot.
      return serverOf(inserted.rows[0] ?? (await tx.query<ServerRow>(...args(sql.serverByName(server.name)))).rows[0])
    })
  }

  /** The server of that name, or null (uncached: read when a process meets a server it does not know). */
  async server(name: string): Promise<Server | null> {
    const res = await this.admin.query<ServerRow>(...args(sql.serverByName(name)))
    return res.rows[0] ? serverOf(res.rows[0]) : null
  }

  async listServers(): Promise<Server[]> {
    const res = await this.admin.query<ServerRow>(...args(sql.listServers()))
    return res.rows.map(serverOf)
  }

  async upsertPlan(plan: Plan): Promise<void> {
    await this.change(`plan:${plan.name}`, (tx) => tx.query(...args(sql.upsertPlan(plan.name, plan.settings))))
  }

  async listPlans(): Promise<Plan[]> {
    const res = await this.admin.query<{ name: string; settings: Record<string, unknown> | string }>(...args(sql.listPlans()))
    return res.rows.map((r) => ({ name: r.name, settings: typeof r.settings === 'string' ? JSON.parse(r.settings) : r.settings }))
  }

  private cached(key: string, statement: () => { text: string; values: unknown[] }): Promise<Tenant | null> {
    const now = Date.now()
    const hit = this.cache.get(key) ?? this.misses.get(key)
    if (hit && hit.expires > now) return hit.value
    const { text, values } = statement()
    const value = this.admin.query<TenantRow>(text, values).then((res) => (res.rows[0] ? toTenant(res.rows[0]) : null))
    const entry: CacheEntry = { value, expires: now + this.ttl }
    this.cache.set(key, entry)
    this.misses.delete(key)
    value.then(
      (tenant) => {
        entry.settled = tenant
        if (tenant === null && this.cache.get(key) === entry) {
          this.cache.delete(key)
          this.misses.set(key, entry)
        }
      },
      // A failed lookup is not remembered.
      () => { if (this.cache.get(key) === entry) this.cache.delete(key) },
    )
    return value
  }

  /**
   * Run a change and its NOTIFY in one transaction, then forget this process's cache at once and
   * tell the {@link onChange} listeners. Other modules' catalog tables (config, flags) change
   * through it too, so every process hears of them the same way.
   */
  async change<T>(subject: string, fn: (tx: Queryable) => Promise<T>): Promise<T> {
    try {
      return await this.admin.transaction(async (tx) => {
        const result = await fn(tx)
        await tx.query(...args(sql.notifyChange(this.origin + subject)))
        return result
      })
    } finally {
      this.clearCache()
      this.changed(subject, true)
    }
  }
}

interface ServerRow { name: string; url: string; region: string | null; capacity_weight: number; main_database: string }

function serverOf(r: ServerRow): Server {
  return { name: r.name, url: r.url, region: r.region, capacityWeight: r.capacity_weight, mainDatabase: r.main_database }
}

function args(s: { text: string; values: unknown[] }): [string, unknown[]] {
  return [s.text, s.values]
}
