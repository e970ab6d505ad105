import { EventEmitter, once } from 'node:events'
import { Redis } from 'ioredis'
import { TenantryError, isTenantryError, type ErrorCode } from '../core/errors.ts'
import type { Plan, Tenant } from '../core/types.ts'
import type { DataPlaneGuard } from '../data/data-plane.ts'
import type { TenantBudget } from '../data/driver.ts'
import { Breakers, type BreakerEvent, type BreakerOptions, type BreakerState } from './breakers.ts'
import { Bulkheads, type BulkheadRefusal } from './bulkheads.ts'
import { mergeLimits, parseLimits, type Limits, type LimitsInput, type RateSpec } from './limits.ts'
import { RateLimits, type RateLayer, type RateOutcome } from './rate-limits.ts'
import type { AdmitRequest, UserIdentifier } from './users.ts'

/**
 * Options of the noisy-neighbour guard (`createTenantry({ guard })`). Limits come from, later
 * winning: the built-in defaults, `defaults`, `plans[tenant.plan]`, the catalog plan's
 * `settings.limits`, the tenant's `config.limits`, and `overrides(tenant)`.
 */
export interface GuardOptions {
  /** Off: no limits, budgets or breakers at all (benchmarks' baseline). Default true. */
  enabled?: boolean
  /**
   * Redis shared by all app processes for the rate limits: a URL or an ioredis client (yours:
   * not closed by Tenantry). Default `REDIS_URL`; without one, in-memory limits per process.
   * `null`: in-memory even when `REDIS_URL` is set.
   */
  redis?: string | Redis | null
  /** Prefix of the limiter keys in Redis. Default `tenantry`. */
  keyPrefix?: string
  /** Longest a Redis command may take before the in-memory limiter answers instead. Default 250 ms. */
  redisCommandTimeoutMs?: number
  /** Limits of every plan, before the plan's own. */
  defaults?: LimitsInput
  /** Limits per plan name, in code (the catalog's `plans.settings.limits` are layered on top). */
  plans?: Record<string, LimitsInput>
  /** Per-tenant limits from the app, layered last. */
  overrides?: (tenant: Tenant) => LimitsInput | null | undefined
  /** How to find the user of a request for the per-user layer; tried in order. */
  user?: UserIdentifier | UserIdentifier[]
  /** Points a request costs (default 1), e.g. more for exports. Fastify's route `config.tenantryCost` wins. */
  cost?: (req: AdmitRequest) => number
  /** Circuit breakers per server and tenant database; `false` turns them off. */
  breaker?: BreakerOptions | false
  /** How often catalog plans are re-read (other processes' changes). Default 10000 ms. */
  planRefreshMs?: number
  /** Called for every rejection (the observability hook). */
  onReject?: (event: RejectionEvent) => void
}

/** Where a request or statement was turned away. */
export type RejectionLayer = 'tenant' | 'user' | 'concurrency' | 'connections' | 'statement' | 'circuit'

/** One rejection, as counted and emitted. */
export interface RejectionEvent {
  tenant: Tenant
  tenantId: string
  slug: string
  layer: RejectionLayer
  code: ErrorCode
}

/** What a successful admission gives the adapter: headers to send and a slot to give back. */
export interface Admission {
  /** `ratelimit-limit/remaining/reset` of the tightest layer (none when the tenant has no rate limit). */
  readonly headers: Readonly<Record<string, string>>
  /** Give back the in-flight slot (idempotent). Call it when the response is done. */
  release(): void
}

/**
 * A request turned away by the guard: `RATE_LIMITED` (429) or `TENANT_BUSY` (503), with the
 * layer in `details.layer` and the headers the response must carry (`Retry-After`, `RateLimit-*`).
 */
export class GuardRejection extends TenantryError {
  readonly layer: RejectionLayer
  /** Headers for the HTTP response (the adapters' error replies send them). */
  readonly responseHeaders: Record<string, string>

  constructor(code: ErrorCode, layer: RejectionLayer, message: string, retryAfter: number, headers: Record<string, string>, details: Record<string, unknown>) {
    super(code, message, { retryAfter, details: { layer, ...details } })
    this.layer = layer
    this.responseHeaders = { ...headers, 'retry-after': String(retryAfter) }
  }
}

interface Resolved {
  version: number
  limits: Limits
  budget: TenantBudget
}

const NO_HEADERS: Readonly<Record<string, string>> = Object.freeze({})
const NOOP_ADMISSION: Admission = Object.freeze({ headers: NO_HEADERS, release() {} })

function rateHeaders(o: RateOutcome): Record<string, string> {
  return { 'ratelimit-limit': String(o.limit), 'ratelimit-remaining': String(o.remaining), 'ratelimit-reset': String(o.resetSeconds) }
}

/**
 * Noisy-neighbour protection (issue 4): per-tenant then per-user rate limits (Redis, with an
 * in-memory fallback), per-tenant in-flight bulkheads, per-tenant shares of each server's
 * connections with fair-share ordering, statement budgets, and circuit breakers per server and
 * tenant database. Every rejection is counted per tenant and layer and emitted as `rejected`.
 *
 * Created by `createTenantry` (as `tenantry.guard`); the Fastify plugin and Express middleware
 * call {@link Guard.admit} for each request, the data plane asks it for budgets and breakers.
 *
 * Events: `rejected` (RejectionEvent), `breaker.opened` / `breaker.closed` (BreakerEvent),
 * `limiter.fallback` / `limiter.recovered` (Redis lost / back), `config.invalid` ({ where, error }).
 *
 * @example
 * ```ts
 * await tenantry.catalog.upsertPlan({ name: 'free', settings: { limits: { rate: { points: 60, duration: 60 }, concurrency: 2 } } })
 * await tenantry.guard.reloadPlans()
 * tenantry.guard.on('rejected', (e) => metrics.inc({ tenant: e.tenantId, layer: e.layer }))
 * ```
 */
export class Guard extends EventEmitter implements DataPlaneGuard {
  readonly enabled: boolean
  private readonly opts: GuardOptions
  private readonly planSource?: () => Promise<Plan[]>
  private readonly rates: RateLimits
  private readonly bulkheads = new Bulkheads()
  private readonly breakers?: Breakers
  private readonly users: UserIdentifier[]
  private readonly redis?: Redis
  private readonly ownsRedis: boolean
  private redisDown = false
  private codePlans = new Map<string, LimitsInput>()
  private catalogPlans = new Map<string, LimitsInput>()
  private defaults: LimitsInput = {}
  private version = 0
  private readonly resolved = new WeakMap<Tenant, Resolved>()
  private readonly counts = new Map<string, Map<RejectionLayer, number>>()
  private refreshTimer?: NodeJS.Timeout
  private closed = false

  constructor(options: GuardOptions = {}, source: { plans?: () => Promise<Plan[]> } = {}) {
    super()
    this.opts = options
    this.enabled = options.enabled !== false
    this.planSource = source.plans
    this.defaults = parseLimits(options.defaults, 'guard.defaults')
    for (const [name, limits] of Object.entries(options.plans ?? {})) this.codePlans.set(name, parseLimits(limits, `guard.plans.${name}`))
    this.users = options.user === undefined ? [] : Array.isArray(options.user) ? options.user : [options.user]
    const redisOpt = options.redis === undefined ? process.env.REDIS_URL || null : options.redis
    if (this.enabled && typeof redisOpt === 'string') {
      this.redis = new Redis(redisOpt, {
        // Never queue a limiter command behind a dead connection: the in-memory limiter answers.
        enableOfflineQueue: false,
        maxRetriesPerRequest: 0,
        commandTimeout: options.redisCommandTimeoutMs ?? 250,
        connectTimeout: 2000,
        retryStrategy: (times) => Math.min(100 * times, 1000),
      })
      this.ownsRedis = true
    } else {
      this.redis = this.enabled && redisOpt ? (redisOpt as Redis) : undefined
      this.ownsRedis = false
    }
    if (this.redis) {
      this.redis.on('error', () => undefined)
      this.redis.on('close', () => {
        if (this.redisDown || this.closed) return
        this.redisDown = true
        this.emit('limiter.fallback', { store: 'redis' })
      })
      this.redis.on('ready', () => {
        if (!this.redisDown) return
        this.redisDown = false
        this.emit('limiter.recovered', { store: 'redis' })
      })
    }
    this.rates = new RateLimits({ redis: this.redis, keyPrefix: options.keyPrefix ?? 'tenantry' })
    if (this.enabled && options.breaker !== false) {
      this.breakers = new Breakers(options.breaker ?? {}, {
        opened: (e) => this.emit('breaker.opened', e),
        closed: (e) => this.emit('breaker.closed', e),
      })
    }
    if (options.onReject) this.on('rejected', options.onReject)
  }

  /** Read the catalog's plans and wait (briefly) for Redis. Called by `createTenantry`. */
  async init(): Promise<void> {
    if (!this.enabled) return
    await this.reloadPlans({ strict: true })
    const every = this.opts.planRefreshMs ?? 10_000
    if (this.planSource && every > 0) {
      this.refreshTimer = setInterval(() => { this.reloadPlans().catch(() => undefined) }, every)
      this.refreshTimer.unref()
    }
    if (this.redis && this.redis.status !== 'ready') {
      const ac = new AbortController()
      const t = setTimeout(() => ac.abort(), 2000)
      try {
        await once(this.redis, 'ready', { signal: ac.signal })
      } catch {
        // Not reachable at start: the in-memory limiter counts until it is.
        this.redisDown = true
        this.emit('limiter.fallback', { store: 'redis' })
      } finally {
        clearTimeout(t)
      }
    }
  }

  /**
   * Re-read plan limits from the catalog now (this process; others re-read every `planRefreshMs`).
   * A plan whose limits are invalid keeps its previous limits and is reported as `config.invalid`.
   */
  async reloadPlans(opts: { strict?: boolean } = {}): Promise<void> {
    if (!this.planSource) return
    let plans: Plan[]
    try {
      plans = await this.planSource()
    } catch (error) {
      if (opts.strict) throw error
      this.emit('config.invalid', { where: 'catalog plans', error })
      return
    }
    const next = new Map<string, LimitsInput>()
    for (const plan of plans) {
      try {
        next.set(plan.name, parseLimits(plan.settings?.limits, `plan '${plan.name}'`))
      } catch (error) {
        if (opts.strict) throw error
        this.emit('config.invalid', { where: `plan '${plan.name}'`, error })
        const previous = this.catalogPlans.get(plan.name)
        if (previous) next.set(plan.name, previous)
      }
    }
    this.catalogPlans = next
    this.version++
  }

  /** The limits that apply to `tenant` now. */
  limitsOf(tenant: Tenant): Limits {
    return this.resolve(tenant).limits
  }

  /** The statement budget of a tenant that no plan or override gives one (built-in, or `guard.defaults`). */
  get defaultStatementTimeoutMs(): number | null {
    return mergeLimits(this.defaults).statementTimeoutMs
  }

  /** The data plane's view of the tenant's limits (undefined when the guard is off). */
  budgetOf(tenant: Tenant): TenantBudget | undefined {
    return this.enabled ? this.resolve(tenant).budget : undefined
  }

  /**
   * Admit one request of `tenant`: the tenant's rate limit, then its user's, then an in-flight
   * slot (waiting in the tenant's queue if need be). Rejects with a {@link GuardRejection}.
   *
   * @example
   * ```ts
   * const admission = await tenantry.guard.admit(tenant, { headers: req.headers, method: 'GET', path: '/api/x' })
   * try { … } finally { admission.release() }
   * ```
   */
  async admit(tenant: Tenant, req: AdmitRequest = {}): Promise<Admission> {
    const limits = this.admissionLimits(tenant)
    if (!limits) return NOOP_ADMISSION
    const cost = this.costOf(req)
    let headers: Record<string, string> = {}
    let tenantOutcome: RateOutcome | undefined
    if (limits.rate) {
      tenantOutcome = await this.rates.consume('tenant', tenant.id, limits.rate, cost)
      headers = rateHeaders(tenantOutcome)
      if (!tenantOutcome.allowed) throw this.rateRejection(tenant, 'tenant', limits.rate, tenantOutcome, headers)
    }
    if (limits.userRate) {
      const user = await this.userOf(req)
      if (user) {
        const key = `${tenant.id}:${user}`
        const o = await this.rates.consume('user', key, limits.userRate, cost)
        if (!tenantOutcome || o.remaining < tenantOutcome.remaining || !o.allowed) headers = rateHeaders(o)
        if (!o.allowed) {
          // The user's refused request must not use up the tenant's budget for its other users.
          if (limits.rate) await this.rates.refund('tenant', tenant.id, limits.rate, cost)
          throw this.rateRejection(tenant, 'user', limits.userRate, o, headers)
        }
      }
    }
    if (!limits.concurrency) return { headers, release() {} }
    try {
      const release = await this.bulkheads.enter(tenant.id, limits.concurrency, limits.queue ?? limits.concurrency, limits.queueTimeoutMs)
      return { headers, release }
    } catch (refusal) {
      const r = refusal as BulkheadRefusal
      this.count(tenant, 'concurrency', 'TENANT_BUSY')
      const why = r.reason === 'queue-full' ? `its queue of ${limits.queue ?? limits.concurrency} is full` : `none was free within ${limits.queueTimeoutMs} ms`
      throw new GuardRejection(
        'TENANT_BUSY',
        'concurrency',
        `Tenant '${tenant.slug}' already has ${limits.concurrency} requests in flight (its plan's limit) and ${why}. Retry shortly.`,
        1,
        headers,
        { limit: limits.concurrency },
      )
    }
  }

  /**
   * True when the tenant's requests pass {@link admit} unconditionally (guard off, or a plan
   * without rate or concurrency limits): adapters skip admission for them.
   */
  admitsFreely(tenant: Tenant): boolean {
    return this.admissionLimits(tenant) === null
  }

  /** The tenant's admission limits, or null when nothing limits its requests. */
  private admissionLimits(tenant: Tenant): Limits | null {
    if (!this.enabled) return null
    const limits = this.resolve(tenant).limits
    return limits.rate || limits.userRate || limits.concurrency ? limits : null
  }

  /** Run one unit of tenant work under the circuit breakers, counting what is turned away. */
  protect<T>(tenant: Tenant, server: string, database: string | null, work: () => Promise<T>): Promise<T> {
    const counted = (err: unknown): void => {
      const layer = layerOf(err)
      if (layer) this.count(tenant, layer, layer === 'statement' ? 'STATEMENT_TIMEOUT' : layer === 'connections' ? 'TENANT_BUSY' : 'TENANT_UNAVAILABLE')
    }
    if (this.breakers) return this.breakers.run(server, database, work, counted)
    return work().catch((err: unknown) => {
      counted(err)
      throw err
    })
  }

  /** Rejections so far: tenant id → layer → count. */
  rejections(): Record<string, Partial<Record<RejectionLayer, number>>> {
    return Object.fromEntries([...this.counts].map(([t, m]) => [t, Object.fromEntries(m)]))
  }

  /** The state of a server's circuit breaker, or of one of its databases'. */
  breakerState(server: string, database?: string): BreakerState {
    return this.breakers?.state(server, database) ?? 'closed'
  }

  /** A snapshot for health checks, metrics and tests. */
  stats(): {
    enabled: boolean
    store: 'redis' | 'memory'
    redisReady: boolean
    inFlight: Record<string, { active: number; queued: number }>
    breakers: (BreakerEvent & { state: BreakerState })[]
  } {
    return {
      enabled: this.enabled,
      store: this.rates.store,
      redisReady: this.redis?.status === 'ready',
      inFlight: this.bulkheads.stats(),
      breakers: this.breakers?.openBreakers() ?? [],
    }
  }

  async close(): Promise<void> {
    this.closed = true
    if (this.refreshTimer) clearInterval(this.refreshTimer)
    if (this.redis && this.ownsRedis) this.redis.disconnect()
  }

  private resolve(tenant: Tenant): Resolved {
    const hit = this.resolved.get(tenant)
    if (hit && hit.version === this.version) return hit
    let fromTenant: LimitsInput | undefined
    try {
      fromTenant = parseLimits((tenant.config as { limits?: unknown } | undefined)?.limits, `tenant '${tenant.slug}' (config.limits)`)
    } catch (error) {
      this.emit('config.invalid', { where: `tenant '${tenant.slug}'`, error })
    }
    let fromApp: LimitsInput | undefined
    const given = this.opts.overrides?.(tenant)
    if (given) fromApp = parseLimits(given, `guard.overrides('${tenant.slug}')`)
    const limits = mergeLimits(this.defaults, this.codePlans.get(tenant.plan), this.catalogPlans.get(tenant.plan), fromTenant, fromApp)
    const budget: TenantBudget = {
      tenant: tenant.id,
      weight: limits.weight,
      connectionShare: limits.connectionShare,
      maxWaiting: limits.queue ?? Number.POSITIVE_INFINITY,
      waitTimeoutMs: limits.queueTimeoutMs,
      statementTimeoutMs: limits.statementTimeoutMs,
    }
    const r: Resolved = { version: this.version, limits, budget }
    this.resolved.set(tenant, r)
    return r
  }

  private costOf(req: AdmitRequest): number {
    const c = req.cost ?? this.opts.cost?.(req) ?? 1
    return Number.isInteger(c) && c >= 1 ? c : 1
  }

  private async userOf(req: AdmitRequest): Promise<string | null> {
    if (req.user !== undefined) return req.user
    for (const identify of this.users) {
      const u = await identify(req)
      if (typeof u === 'string' && u.length > 0) return u
    }
    return null
  }

  private rateRejection(tenant: Tenant, layer: RateLayer, spec: RateSpec, o: RateOutcome, headers: Record<string, string>): GuardRejection {
    this.count(tenant, layer, 'RATE_LIMITED')
    const who = layer === 'tenant' ? `Tenant '${tenant.slug}'` : `This user of tenant '${tenant.slug}'`
    return new GuardRejection(
      'RATE_LIMITED',
      layer,
      `${who} sent more than ${spec.points} requests in ${spec.duration} s (its plan's ${layer} limit). Retry after ${o.resetSeconds} s.`,
      o.resetSeconds,
      headers,
      { limit: spec.points, windowSeconds: spec.duration },
    )
  }

  private count(tenant: Tenant, layer: RejectionLayer, code: ErrorCode): void {
    let m = this.counts.get(tenant.id)
    if (!m) this.counts.set(tenant.id, (m = new Map()))
    m.set(layer, (m.get(layer) ?? 0) + 1)
    if (this.listenerCount('rejected') > 0) this.emit('rejected', { tenant, tenantId: tenant.id, slug: tenant.slug, layer, code } satisfies RejectionEvent)
  }
}

/** The layer a data-plane failure was turned away at, or null when it is not a rejection. */
function layerOf(err: unknown): RejectionLayer | null {
  if (isTenantryError(err, 'TENANT_BUSY')) return 'connections'
  if (isTenantryError(err, 'STATEMENT_TIMEOUT')) return 'statement'
  if (isTenantryError(err, 'TENANT_UNAVAILABLE')) return err.details?.breaker ? 'circuit' : null
  const e = err as { code?: unknown; message?: unknown } | null
  if (e && e.code === '57014' && /statement timeout/i.test(String(e.message ?? ''))) return 'statement'
  return null
}

/**
 * Make and initialise a guard (what `createTenantry` does with its `guard` option).
 *
 * @example
 * ```ts
 * const guard = await createGuard({ plans: { free: { rate: { points: 10, duration: 60 } } } }, { plans: () => catalog.listPlans() })
 * ```
 */
export async function createGuard(options: GuardOptions = {}, source: { plans?: () => Promise<Plan[]> } = {}): Promise<Guard> {
  const guard = new Guard(options, source)
  try {
    await guard.init()
  } catch (err) {
    await guard.close()
    throw err
  }
  return guard
}
