import type { Span } from '@opentelemetry/api'
import type { Logger } from 'pino'
import { currentScope, type TenantScope } from '../context/context.ts'
import { TenantryError } from '../core/errors.ts'
import type { Tenant } from '../core/types.ts'
import { printable } from '../core/validation.ts'
import type { QueryResult } from '../data/executor.ts'
import type { Guard, RejectionEvent } from '../guard/guard.ts'
import type { BreakerEvent } from '../guard/breakers.ts'
import type { TenantryEvents } from '../lifecycle/events.ts'
import type { Operation, OperationObserver, OperationTarget } from '../lifecycle/operations.ts'
import { createLogger, tenantBindings, type LoggerOption } from './logger.ts'
import { UsageMeter } from './meter.ts'
import { TenantryMetrics, type MetricsOptions, type MetricsSources } from './metrics.ts'
import { Tracing, type TracingOptions } from './tracing.ts'
import type { MeteringOptions, UsageService } from './types.ts'

/**
 * Options of observability (`createTenantry({ observe })`, issue 11). Each part is on by default
 * and `false` turns it off.
 */
export interface ObserveOptions {
  /** Your pino instance, options for Tenantry's own (default: level `TENANTRY_LOG_LEVEL` or `warn`, to stdout), or `false`. */
  logger?: LoggerOption
  /** Prometheus metrics (prom-client). */
  metrics?: MetricsOptions | false
  /** OpenTelemetry spans (`@opentelemetry/api`; a no-op until your SDK registers a provider). */
  tracing?: TracingOptions | false
  /** Usage metering into the catalog. */
  metering?: MeteringOptions | false
}

/** Resolved metering settings. */
export interface ResolvedMetering {
  intervalMs: number
  retentionDays: number
  storageSampleMs: number
  maxPendingIntervals: number
}

export function resolveMetering(opts: MeteringOptions | false | undefined): ResolvedMetering {
  const o = opts || {}
  return {
    intervalMs: wholeNumber('metering.intervalMs', o.intervalMs, 60_000, 1000, 86_400_000),
    retentionDays: wholeNumber('metering.retentionDays', o.retentionDays, 90, 1, 36_500),
    storageSampleMs: wholeNumber('metering.storageSampleMs', o.storageSampleMs, 15 * 60_000, 0, 7 * 86_400_000),
    maxPendingIntervals: wholeNumber('metering.maxPendingIntervals', o.maxPendingIntervals, 60, 1, 100_000),
  }
}

/** Refuse an option that is not a whole number in range, naming it (`CONFIG_INVALID`). */
function wholeNumber(name: string, value: unknown, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new TenantryError('CONFIG_INVALID', `observe.${name} must be a whole number from ${min} to ${max}; got ${printable(String(value))}.`, { details: { option: `observe.${name}` } })
  }
  return value
}

/** Check the options before anything is opened (`CONFIG_INVALID` naming the option). */
export function checkObserveOptions(options: ObserveOptions): void {
  for (const part of ['logger', 'metrics', 'tracing', 'metering'] as const) {
    const v = options[part]
    if (v !== undefined && v !== false && (typeof v !== 'object' || v === null || Array.isArray(v))) {
      throw new TenantryError('CONFIG_INVALID', `observe.${part} must be an object of options${part === 'logger' ? ' or a pino logger' : ''}, or false to turn it off.`, { details: { option: `observe.${part}` } })
    }
  }
  resolveMetering(options.metering)
  if (options.metrics) {
    wholeNumber('metrics.topK', options.metrics.topK, 20, 1, 1000)
    const b = options.metrics.buckets
    if (b !== undefined && (!Array.isArray(b) || b.length === 0 || b.some((x) => typeof x !== 'number' || !(x > 0) || !Number.isFinite(x)))) {
      throw new TenantryError('CONFIG_INVALID', 'observe.metrics.buckets must be a non-empty list of positive numbers of seconds.', { details: { option: 'observe.metrics.buckets' } })
    }
  }
}

/** What observability reads from the rest of Tenantry. */
export interface ObservabilityDeps {
  events: TenantryEvents
  guard: Guard
  usage: UsageService
  pools: MetricsSources['pools']
  operations: MetricsSources['operations']
}

/** One statement in flight: what its end needs. */
export class StatementProbe {
  constructor(
    private readonly obs: Observability,
    readonly tenant: Tenant,
    readonly server: string,
    readonly start: number,
    readonly span: Span | undefined,
  ) {}

  /** Follow `p` to its end; resolves and rejects as `p` does, or a rejection goes on to `recover`. */
  watch<R>(p: Promise<QueryResult<R>>, recover?: (err: unknown) => Promise<QueryResult<R>>): Promise<QueryResult<R>> {
    return p.then(
      (r) => { this.obs.statementEnded(this, r.rows.length, undefined); return r },
      (err: unknown) => {
        this.obs.statementEnded(this, 0, err)
        if (recover === undefined) throw err
        return recover(err)
      },
    )
  }
}

const THROTTLE_MS = 10_000

/**
 * Tenant-aware observability (issue 11): pino logs that carry the tenant and request id,
 * Prometheus metrics with bounded tenant labels, OpenTelemetry spans, and usage metering into
 * the catalog. Made by {@link createObservability}; the adapters, the data plane, the guard and
 * the lifecycle report to it, so an app passes nothing.
 *
 * @example
 * ```ts
 * tenantry.observe.logger.info('hello')         // inside a request: carries tenant and reqId
 * await tenantry.observe.metrics?.registry.metrics()
 * ```
 */
export class Observability implements OperationObserver {
  readonly logger: Logger
  readonly metrics?: TenantryMetrics
  readonly meter?: UsageMeter
  readonly tracing?: Tracing
  readonly usage: UsageService
  private readonly deps: ObservabilityDeps
  private readonly throttled = new Map<string, { at: number; suppressed: number }>()
  private readonly operationSpans = new Map<string, { kind: string; span: Span; step?: Span; stepName?: string | null; attributes: Record<string, string> }>()
  private readonly targetSpans = new Map<string, Span>()

  constructor(options: ObserveOptions, deps: ObservabilityDeps, metering: ResolvedMetering) {
    this.deps = deps
    this.usage = deps.usage
    this.logger = createLogger(options.logger)
    if (options.metering !== false) {
      this.meter = new UsageMeter({
        intervalMs: metering.intervalMs,
        maxPendingIntervals: metering.maxPendingIntervals,
        topK: options.metrics ? (options.metrics.topK ?? 20) : 20,
        write: (records) => this.usage.write(records),
        flushed: (intervalStart, records) => deps.events.emit('usage.flushed', { intervalStart, records }),
        rolled: () => this.metrics?.nextWindow(),
        failed: (error, pending) => {
          this.metrics?.usageWriteFailed()
          this.logger.warn({ err: error, pendingIntervals: pending }, 'usage could not be written to the catalog; kept and retried with the next interval')
        },
        dropped: (intervalStart, records) => {
          this.metrics?.usageDroppedInterval()
          this.logger.error({ intervalStart, records }, 'usage interval dropped: the catalog could not be written for too long')
        },
      })
    }
    if (options.metrics !== false) {
      this.metrics = new TenantryMetrics(options.metrics ?? {}, {
        meter: this.meter,
        pools: deps.pools,
        breakers: () => deps.guard.stats().breakers,
        operations: deps.operations,
      })
    }
    if (options.tracing !== false) this.tracing = new Tracing(options.tracing ?? {})
    this.wireLogs()
  }

  /** Whether the adapters report each request's end (metrics or metering are on). */
  get measuresRequests(): boolean {
    return this.metrics !== undefined || this.meter !== undefined
  }

  /** The registry a `/metrics` route serves; `CONFIG_INVALID` naming `who` when metrics are off. */
  metricsRegistry(who: string): TenantryMetrics['registry'] {
    if (!this.metrics) throw new TenantryError('CONFIG_INVALID', `${who} needs metrics: createTenantry({ observe: { metrics: false } }) turned them off.`)
    return this.metrics.registry
  }

  /** Start the metering timers. */
  start(): void {
    this.meter?.start()
    this.usage.start()
  }

  /** A request ended. `scope` is null when no tenant was resolved for it. */
  requestEnded(scope: TenantScope | null, method: string, route: string | null, status: number, seconds: number): void {
    const tenant = scope?.tenant ?? null
    this.metrics?.request(method, route, status, tenant?.tier ?? null, seconds)
    if (tenant !== null) this.meter?.request(tenant, status, scope!.rejected)
  }

  /** Before a tenant statement is sent. */
  beginStatement(tenant: Tenant, server: string, _database: string, text: string): StatementProbe {
    const span = this.tracing?.startStatement(tenant, server, text)
    return new StatementProbe(this, tenant, server, performance.now(), span)
  }

  /** A statement answered (or failed). */
  statementEnded(probe: StatementProbe, rows: number, error: unknown): void {
    const ms = performance.now() - probe.start
    const tenant = probe.tenant
    this.meter?.statement(tenant, ms, rows)
    this.metrics?.statement(probe.server, tenant.tier, error === undefined, ms / 1000)
    if (probe.span) this.tracing!.endStatement(probe.span, error)
    if (error !== undefined) {
      const code = (error as { code?: unknown })?.code
      if (code === 'POOL_TIMEOUT') this.warnThrottled(`pool:${probe.server}`, { ...tenantBindings(tenant), server: probe.server, code }, 'no connection to the server within the acquire timeout')
    }
  }

  /** Stop timers and write the usage left in memory. */
  async close(): Promise<void> {
    await this.meter?.close().catch(() => undefined)
    await this.usage.close().catch(() => undefined)
    for (const s of this.targetSpans.values()) s.end()
    for (const o of this.operationSpans.values()) { o.step?.end(); o.span.end() }
    this.targetSpans.clear()
    this.operationSpans.clear()
  }

  // ---- lifecycle operations: spans per operation, step and migration target ----------------

  started(op: Operation): void {
    if (!this.tracing) return
    const attributes: Record<string, string> = { 'tenantry.operation.id': op.id, 'tenantry.operation.kind': op.kind }
    if (op.tenantId) attributes['tenant.id'] = op.tenantId
    if (op.slug) attributes['tenant.slug'] = op.slug
    const span = this.tracing.startOperation(op.kind, attributes)
    if (this.operationSpans.size >= 1000) {
      // An operation whose finish this process never saw (its transaction rolled back, another took it over).
      const [oldest, o] = this.operationSpans.entries().next().value!
      o.step?.end()
      o.span.end()
      this.operationSpans.delete(oldest)
    }
    const entry = { kind: op.kind, span, attributes, step: undefined as Span | undefined, stepName: op.step }
    this.operationSpans.set(op.id, entry)
    if (op.step) entry.step = this.tracing.startStep(span, op.kind, op.step, attributes)
  }

  stepped(id: string, step: string): void {
    const o = this.operationSpans.get(id)
    if (!o || !this.tracing || o.stepName === step) return
    o.step?.end()
    o.stepName = step
    o.step = this.tracing.startStep(o.span, o.kind, step, o.attributes)
  }

  finished(id: string, state: string, error: string | null): void {
    const o = this.operationSpans.get(id)
    if (!o || !this.tracing) return
    this.operationSpans.delete(id)
    o.step?.end()
    o.span.setAttribute('tenantry.operation.state', state)
    this.tracing.endSpan(o.span, error ? new Error(error) : state === 'done' ? undefined : new Error(state))
  }

  targetClaimed(opId: string, target: OperationTarget): void {
    const o = this.operationSpans.get(opId)
    if (!o || !this.tracing) return
    const attributes: Record<string, string> = { ...o.attributes, 'tenantry.target': target.target, 'tenantry.tier': target.tier, 'server.address': target.server }
    if (target.tenantId) attributes['tenant.id'] = target.tenantId
    if (target.slug) attributes['tenant.slug'] = target.slug
    this.targetSpans.set(`${opId}\u0000${target.target}`, this.tracing.startStep(o.span, o.kind, 'target', attributes))
  }

  targetFinished(opId: string, target: string, state: string, error: string | null): void {
    const key = `${opId}\u0000${target}`
    const span = this.targetSpans.get(key)
    if (!span || !this.tracing) return
    this.targetSpans.delete(key)
    span.setAttribute('tenantry.target.state', state)
    this.tracing.endSpan(span, error ? new Error(error) : undefined)
  }

  // ---- Tenantry's own events as log lines -------------------------------------------------

  private wireLogs(): void {
    const log = this.logger
    const { events, guard } = this.deps
    events.on('tenant.provisioning', ({ tenant, operationId }) => log.info({ ...tenantBindings(tenant), operationId, tier: tenant.tier }, 'provisioning tenant'))
    events.on('tenant.provisioned', ({ tenant, operationId, ms }) => log.info({ ...tenantBindings(tenant), operationId, tier: tenant.tier, ms }, 'tenant provisioned'))
    events.on('tenant.provision_failed', ({ slug, operationId, error }) => log.error({ slug, operationId, err: error }, 'provisioning failed and was rolled back'))
    events.on('tenant.suspended', ({ tenant }) => log.info({ ...tenantBindings(tenant), reason: tenant.statusReason }, 'tenant suspended'))
    events.on('tenant.resumed', ({ tenant }) => log.info(tenantBindings(tenant), 'tenant resumed'))
    events.on('tenant.deleted', ({ tenant }) => log.info(tenantBindings(tenant), 'tenant deleted (data kept for the retention period)'))
    events.on('tenant.restored', ({ tenant }) => log.info(tenantBindings(tenant), 'tenant restored'))
    events.on('tenant.purging', ({ tenant, operationId }) => log.info({ ...tenantBindings(tenant), operationId }, 'purging tenant'))
    events.on('tenant.purged', ({ tenant, operationId, removed }) => log.info({ ...tenantBindings(tenant), operationId, removed }, 'tenant purged'))
    events.on('migration.target_done', ({ operationId, target, tenant, applied }) => log.debug({ operationId, target, tenantSlug: tenant, applied }, 'migration target done'))
    events.on('migration.target_failed', ({ operationId, target, tenant, error }) => log.error({ operationId, target, tenantSlug: tenant, err: error }, 'migration target failed'))
    events.on('operation.resumed', ({ operation }) => log.warn({ operationId: operation.id, kind: operation.kind, slug: operation.slug }, 'took over an operation whose process died'))
    events.on('error', ({ error, context }) => log.error({ err: error, context }, 'background failure'))

    guard.on('breaker.opened', (e: BreakerEvent) => log.warn(e, 'circuit breaker opened: statements fail fast until it half-opens'))
    guard.on('breaker.closed', (e: BreakerEvent) => log.info(e, 'circuit breaker closed'))
    guard.on('limiter.fallback', (e: unknown) => log.warn(e as object, 'rate limits fell back to in-memory counters (Redis unreachable)'))
    guard.on('limiter.recovered', (e: unknown) => log.info(e as object, 'rate limits back on Redis'))
    guard.on('config.invalid', ({ where, error }: { where: string; error: Error }) => log.error({ where, err: error }, 'invalid limits ignored'))
    guard.on('rejected', (e: RejectionEvent) => {
      const scope = currentScope()
      if (scope !== undefined && scope.tenant.id === e.tenantId) scope.rejected = true
      this.meter?.rejection(e.tenant)
      this.metrics?.rejected(e.layer, e.code)
      this.warnThrottled(`reject:${e.tenantId}:${e.layer}`, { tenant: e.slug, tenantId: e.tenantId, layer: e.layer, code: e.code }, 'request turned away by the guard', 'info')
    })
  }

  /** One line per key and 10 s; the next says how many were left out. */
  private warnThrottled(key: string, obj: Record<string, unknown>, msg: string, level: 'warn' | 'info' = 'warn'): void {
    const now = Date.now()
    const t = this.throttled.get(key)
    if (t && now - t.at < THROTTLE_MS) {
      t.suppressed++
      return
    }
    if (this.throttled.size > 10_000) this.throttled.clear()
    this.throttled.set(key, { at: now, suppressed: 0 })
    this.logger[level](t?.suppressed ? { ...obj, suppressed: t.suppressed } : obj, msg)
  }
}

/**
 * Make the observability of a Tenantry runtime (what `createTenantry` does with `observe`).
 *
 * @example
 * ```ts
 * const observe = createObservability({ metrics: { topK: 50 } }, deps, resolveMetering(undefined))
 * ```
 */
export function createObservability(options: ObserveOptions, deps: ObservabilityDeps, metering: ResolvedMetering): Observability {
  // The options were checked by createTenantry before anything was opened (checkObserveOptions).
  return new Observability(options, deps, metering)
}
