import { Counter, Gauge, Registry } from 'prom-client'
import type { FoldSink, TenantUsage, UsageMeter } from './meter.ts'

/** `observe.metrics`: Prometheus metrics through prom-client. */
export interface MetricsOptions {
  /** Register into this prom-client registry (yours, e.g. prom-client's global `register`). Default: Tenantry's own. */
  registry?: Registry
  /** Tenants with a `tenant` label of their own per window (the rest are `other`). Default 20. */
  topK?: number
  /** Buckets of the request and statement duration histograms, seconds. */
  buckets?: number[]
}

/** What the metrics read at scrape time; each part optional. */
export interface MetricsSources {
  meter?: UsageMeter
  pools?: () => Record<string, { open: number; busy: number; idle: number; waiting: number }>
  breakers?: () => { server: string; database?: string; state: string }[]
  operations?: () => Promise<{ id: string; kind: string; step: string | null; progress: number | null }[]>
}

const DEFAULT_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10]
const STATUS_CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx'] as const
const TIERS = ['pooled', 'schema', 'database', 'none'] as const
type Child = HistogramSeries | undefined

/** One label set of a {@link LeanHistogram}: counts per bucket (not cumulative), sum and count. */
class HistogramSeries {
  readonly counts: Float64Array
  sum = 0
  count = 0
  constructor(readonly labels: Record<string, string>, private readonly bounds: number[]) {
    this.counts = new Float64Array(bounds.length)
  }

  observe(v: number): void {
    const b = this.bounds
    let i = 0
    while (i < b.length && v > b[i]) i++
    if (i < b.length) this.counts[i]++
    this.sum += v
    this.count++
  }
}

/**
 * A Prometheus histogram registered in a prom-client registry (its public `registerMetric`
 * contract: a name, a help and `get()`), observed through series objects the caller keeps. An
 * observation is a bucket search and three additions: prom-client's own `observe` converts,
 * validates and hashes the labels each time (~1 µs here), which the request path cannot afford.
 */
class LeanHistogram {
  readonly type = 'histogram'
  readonly aggregator = 'sum'
  private readonly series: HistogramSeries[] = []

  constructor(readonly name: string, readonly help: string, private readonly bounds: number[], registry: Registry) {
    registry.registerMetric(this as never)
  }

  labels(labels: Record<string, string>): HistogramSeries {
    const s = new HistogramSeries(labels, this.bounds)
    this.series.push(s)
    return s
  }

  reset(): void {
    for (const s of this.series) {
      s.counts.fill(0)
      s.sum = 0
      s.count = 0
    }
  }

  async get(): Promise<{ name: string; help: string; type: string; aggregator: string; values: { labels: Record<string, string | number>; value: number; metricName: string }[] }> {
    const values: { labels: Record<string, string | number>; value: number; metricName: string }[] = []
    for (const s of this.series) {
      let acc = 0
      for (let i = 0; i < this.bounds.length; i++) {
        acc += s.counts[i]
        values.push({ labels: { ...s.labels, le: this.bounds[i] }, value: acc, metricName: `${this.name}_bucket` })
      }
      values.push({ labels: { ...s.labels, le: '+Inf' }, value: s.count, metricName: `${this.name}_bucket` })
      values.push({ labels: s.labels, value: s.sum, metricName: `${this.name}_sum` })
      values.push({ labels: s.labels, value: s.count, metricName: `${this.name}_count` })
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values }
  }
}

/**
 * Tenantry's Prometheus metrics. Per-tenant figures have a `tenant` label only for the top K
 * tenants of the current window (by requests, then database time; the rest share `other`), plus
 * `plan` and `tier`: a fleet of 100,000 tenants stays at most K + 1 series per plan and tier. Route
 * labels are the route templates of the framework (`/api/projects/:id`), `unmatched` for none.
 *
 * The hot path touches only series objects it keeps (a bucket search and three additions per
 * observation); per-tenant counters are folded from the usage meter when scraped.
 *
 * @example
 * ```ts
 * const metrics = new TenantryMetrics({ topK: 20 }, { meter })
 * app.get('/metrics', async (req, reply) => reply.type(metrics.registry.contentType).send(await metrics.registry.metrics()))
 * ```
 */
export class TenantryMetrics {
  readonly registry: Registry
  readonly topK: number
  private readonly requestDuration: LeanHistogram
  private readonly statementDuration: LeanHistogram
  private readonly rejections: Counter<'layer' | 'code'>
  private readonly usageDropped: Counter<string>
  private readonly usageFailures: Counter<string>
  private readonly tenantCounters: Counter<'tenant' | 'plan' | 'tier'>[]
  // route → method → children by status class and tier
  private readonly requestChildren = new Map<string, Map<string, Child[]>>()
  private readonly statementChildren = new Map<string, Child[]>()
  // Per-tenant series: when last written, by window, so labels that left the top K are removed.
  private readonly seriesSeen = new Map<string, { labels: { tenant: string; plan: string; tier: string }; window: number }>()
  private window = 0

  constructor(opts: MetricsOptions = {}, sources: MetricsSources = {}) {
    this.registry = opts.registry ?? new Registry()
    this.topK = opts.topK ?? 20
    const registers = [this.registry]
    const buckets = opts.buckets ?? DEFAULT_BUCKETS
    const meter = sources.meter

    const bounds = [...buckets].sort((a, b) => a - b)
    this.requestDuration = new LeanHistogram(
      'tenantry_request_duration_seconds',
      'Requests served through Tenantry, by route template, status class and tenant tier (count and latency).',
      bounds,
      this.registry,
    )
    this.statementDuration = new LeanHistogram(
      'tenantry_statement_duration_seconds',
      'Tenant statements, by server, tier and outcome; from the call to the answer (the wait for a connection included).',
      bounds,
      this.registry,
    )
    this.rejections = new Counter({
      name: 'tenantry_rejections_total',
      help: 'Requests and statements turned away by the guard, by layer and error code.',
      labelNames: ['layer', 'code'],
      registers,
    })

    const fold = meter ? () => meter.fold() : () => undefined
    const tenantCounter = (name: string, help: string) =>
      new Counter({ name, help, labelNames: ['tenant', 'plan', 'tier'], registers, collect: fold })
    this.tenantCounters = [
      tenantCounter('tenantry_tenant_requests_total', 'Requests per tenant (top K tenants of the window by name, the rest as tenant="other").'),
      tenantCounter('tenantry_tenant_errors_total', 'Requests per tenant that ended with a 5xx other than a guard rejection.'),
      tenantCounter('tenantry_tenant_rejections_total', 'Requests and statements per tenant turned away by the guard.'),
      tenantCounter('tenantry_tenant_statements_total', 'Statements per tenant.'),
      tenantCounter('tenantry_tenant_db_time_seconds_total', "Wall time of each tenant's statements, seconds."),
      tenantCounter('tenantry_tenant_rows_total', "Rows returned by each tenant's statements."),
    ]
    if (meter) meter.foldSink = this.foldSink

    if (sources.pools) {
      const pools = sources.pools
      new Gauge({
        name: 'tenantry_pool_connections',
        help: "Data-plane connections per server: open, busy, idle, and statements waiting for one.",
        labelNames: ['server', 'state'],
        registers,
        collect() {
          this.reset()
          for (const [server, s] of Object.entries(pools())) {
            this.set({ server, state: 'open' }, s.open)
            this.set({ server, state: 'busy' }, s.busy)
            this.set({ server, state: 'idle' }, s.idle)
            this.set({ server, state: 'waiting' }, s.waiting)
          }
        },
      })
    }
    if (sources.breakers) {
      const breakers = sources.breakers
      new Gauge({
        name: 'tenantry_breaker_open',
        help: 'Circuit breakers not closed (1 = open, 0.5 = half-open), per server and tenant database.',
        labelNames: ['server', 'database'],
        registers,
        collect() {
          this.reset()
          for (const b of breakers()) this.set({ server: b.server, database: b.database ?? '' }, b.state === 'open' ? 1 : 0.5)
        },
      })
    }
    if (sources.operations) {
      const operations = sources.operations
      new Gauge({
        name: 'tenantry_operation_progress_ratio',
        help: 'Running operations (provision, migrate, purge…) and their progress, 0..1 (-1 when unknown).',
        labelNames: ['operation_id', 'kind', 'step'],
        registers,
        async collect() {
          this.reset()
          for (const op of await operations().catch(() => [])) {
            this.set({ operation_id: op.id, kind: op.kind, step: op.step ?? '' }, op.progress ?? -1)
          }
        },
      })
    }
    if (meter) {
      new Gauge({
        name: 'tenantry_usage_pending_intervals',
        help: 'Metering intervals waiting to be written to the catalog.',
        registers,
        collect() { this.set(meter.pendingIntervals) },
      })
      new Gauge({
        name: 'tenantry_metered_tenants',
        help: 'Tenants metered in the current interval in this process.',
        registers,
        collect() { this.set(meter.size) },
      })
    }
    this.usageDropped = new Counter({
      name: 'tenantry_usage_dropped_intervals_total',
      help: 'Metering intervals dropped (oldest first) because the catalog could not be written for too long.',
      registers,
    })
    this.usageFailures = new Counter({
      name: 'tenantry_usage_write_failures_total',
      help: 'Failed writes of usage to the catalog (the records are kept and retried).',
      registers,
    })
  }

  /** A request ended: `route` is the route template (or null when none matched). */
  request(method: string, route: string | null, status: number, tier: string | null, seconds: number): void {
    const r = route ?? 'unmatched'
    let byMethod = this.requestChildren.get(r)
    if (byMethod === undefined) this.requestChildren.set(r, (byMethod = new Map()))
    let children = byMethod.get(method)
    if (children === undefined) byMethod.set(method, (children = []))
    const cls = status >= 100 && status < 600 ? ((status / 100) | 0) - 1 : 4
    const t = tierIndex(tier)
    const i = cls * TIERS.length + t
    // Children are made at first use, so only label sets that occur are exported.
    const child = (children[i] ??= this.requestDuration.labels({ method, route: r, status_class: STATUS_CLASSES[cls], tier: TIERS[t] }))
    child.observe(seconds)
  }

  /** A statement ended. */
  statement(server: string, tier: string, ok: boolean, seconds: number): void {
    let children = this.statementChildren.get(server)
    if (children === undefined) this.statementChildren.set(server, (children = []))
    const t = tierIndex(tier)
    const i = t * 2 + (ok ? 0 : 1)
    const child = (children[i] ??= this.statementDuration.labels({ server, tier: TIERS[t], outcome: ok ? 'ok' : 'error' }))
    child.observe(seconds)
  }

  rejected(layer: string, code: string): void {
    this.rejections.inc({ layer, code })
  }

  usageDroppedInterval(): void {
    this.usageDropped.inc()
  }

  usageWriteFailed(): void {
    this.usageFailures.inc()
  }

  /**
   * A new window began (the meter chose its top K): series of tenants that have had no label in
   * the current or the last window are removed, so the number of series stays bounded.
   */
  nextWindow(): void {
    this.window++
    for (const [key, s] of this.seriesSeen) {
      if (s.labels.tenant !== 'other' && this.window - s.window > 1) {
        for (const c of this.tenantCounters) c.remove(s.labels)
        this.seriesSeen.delete(key)
      }
    }
  }

  private readonly foldSink: FoldSink = (u: TenantUsage, d) => {
    const labels = { tenant: u.label, plan: u.plan, tier: u.tier }
    const key = `${u.label}\u0000${u.plan}\u0000${u.tier}`
    const seen = this.seriesSeen.get(key)
    if (seen) seen.window = this.window
    else this.seriesSeen.set(key, { labels, window: this.window })
    const [requests, errors, rejections, statements, dbTime, rows] = this.tenantCounters
    if (d.requests) requests.inc(labels, d.requests)
    if (d.errors) errors.inc(labels, d.errors)
    if (d.rejections) rejections.inc(labels, d.rejections)
    if (d.statements) statements.inc(labels, d.statements)
    if (d.dbTimeMs) dbTime.inc(labels, d.dbTimeMs / 1000)
    if (d.rows) rows.inc(labels, d.rows)
  }
}

function tierIndex(tier: string | null): number {
  return tier === 'pooled' ? 0 : tier === 'schema' ? 1 : tier === 'database' ? 2 : 3
}
