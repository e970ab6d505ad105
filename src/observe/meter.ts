import type { Tenant } from '../core/types.ts'
import type { UsageRecord } from './types.ts'

/**
 * One tenant's usage in the current interval, kept in memory. Counters only grow within an
 * interval; the `folded*` fields say how much of them the metrics have taken already.
 */
export class TenantUsage {
  requests = 0
  errors = 0
  rejections = 0
  statements = 0
  dbTimeMs = 0
  rows = 0
  foldedRequests = 0
  foldedErrors = 0
  foldedRejections = 0
  foldedStatements = 0
  foldedDbTimeMs = 0
  foldedRows = 0
  /** Intervals in a row without any use: the entry is dropped after two, so memory follows active tenants only. */
  idle = 0
  /** The value of the `tenant` metric label: the slug for the top K tenants of the window, else `other`. */
  label: string
  slug: string
  plan: string
  tier: string

  constructor(readonly tenantId: string, tenant: Tenant, label: string) {
    this.slug = tenant.slug
    this.plan = tenant.plan
    this.tier = tenant.tier
    this.label = label
  }

  get active(): boolean {
    return this.requests + this.rejections + this.statements > 0
  }
}

/** What the metrics take from the meter: the growth of one tenant's counters since the last fold. */
export type FoldSink = (u: TenantUsage, d: { requests: number; errors: number; rejections: number; statements: number; dbTimeMs: number; rows: number }) => void

export interface UsageMeterOptions {
  intervalMs: number
  maxPendingIntervals: number
  /** Tenants with their own metric label per window. */
  topK: number
  /** Adds up a batch of records in the catalog (one statement). */
  write: (records: UsageRecord[]) => Promise<void>
  /** After a successful write, once per interval in it. */
  flushed?: (intervalStart: Date, records: UsageRecord[]) => void
  /** A failed write (the records are kept and retried) or a dropped interval. */
  failed?: (error: Error, pendingIntervals: number) => void
  dropped?: (intervalStart: Date, records: number) => void
  /** A window ended (after the new top K is chosen). */
  rolled?: () => void
  now?: () => number
}

/**
 * Usage metering in process (issue 11): per tenant and interval, requests, errors, rejections,
 * statements, database time and rows. The hot path adds to one object per tenant (a map lookup by
 * id); at each interval boundary the interval's counters become {@link UsageRecord}s and are
 * written to the catalog in one batch, so a process writes at most once per interval, never once
 * per request. When the catalog cannot be written the records wait (at most
 * `maxPendingIntervals` intervals; the oldest are dropped first, counted) and go with the next
 * write.
 *
 * @example
 * ```ts
 * const meter = new UsageMeter({ intervalMs: 60_000, maxPendingIntervals: 60, topK: 20, write: (r) => store.write(r) })
 * meter.start()
 * meter.request(tenant, 200, false)
 * ```
 */
export class UsageMeter {
  private readonly opts: UsageMeterOptions
  private readonly now: () => number
  private tenants = new Map<string, TenantUsage>()
  private labelled = 0
  private intervalStart: number
  private pending: { intervalStart: Date; records: UsageRecord[] }[] = []
  private writing?: Promise<void>
  private timer?: NodeJS.Timeout
  private closed = false
  /** Intervals dropped because the catalog could not be written for too long. */
  droppedIntervals = 0
  /** Failed writes (each retried with the next). */
  failedWrites = 0
  /** Where folds of counters go (the metrics); unset: no metrics. */
  foldSink?: FoldSink

  constructor(opts: UsageMeterOptions) {
    this.opts = opts
    this.now = opts.now ?? Date.now
    this.intervalStart = this.align(this.now())
  }

  /** The tenants metered in the current interval (memory follows them). */
  get size(): number {
    return this.tenants.size
  }

  /** Intervals waiting to be written. */
  get pendingIntervals(): number {
    return this.pending.length
  }

  /** The entry of a tenant in this interval. */
  entry(tenant: Tenant): TenantUsage {
    let u = this.tenants.get(tenant.id)
    if (u === undefined) {
      // Until the window's top K is known (the first interval), the first K tenants seen get labels.
      const label = this.labelled < this.opts.topK ? tenant.slug : 'other'
      if (label !== 'other') this.labelled++
      u = new TenantUsage(tenant.id, tenant, label)
      this.tenants.set(tenant.id, u)
    } else if (u.plan !== tenant.plan || u.tier !== tenant.tier) {
      u.plan = tenant.plan
      u.tier = tenant.tier
    }
    return u
  }

  /** A request of `tenant` ended with `status`; `rejected` when the guard turned it away. */
  request(tenant: Tenant, status: number, rejected: boolean): void {
    const u = this.entry(tenant)
    u.requests++
    // The rejection itself is counted where the guard reports it (rejection()).
    if (!rejected && status >= 500) u.errors++
  }

  /** A statement of `tenant` took `ms` and returned `rows` rows. */
  statement(tenant: Tenant, ms: number, rows: number): void {
    const u = this.entry(tenant)
    u.statements++
    u.dbTimeMs += ms
    u.rows += rows
  }

  /** A statement of `tenant` turned away by the guard (a request turned away counts in {@link request}). */
  rejection(tenant: Tenant): void {
    this.entry(tenant).rejections++
  }

  /** Give the metrics the growth of every tenant's counters since the last fold. */
  fold(): void {
    const sink = this.foldSink
    if (!sink) return
    for (const u of this.tenants.values()) foldOne(u, sink)
  }

  /** Start the interval timer (unref'd: it never keeps a process alive). */
  start(): void {
    if (this.timer || this.closed) return
    const tick = (): void => {
      this.timer = setTimeout(tick, this.untilNextBoundary()).unref()
      this.rollover()
      void this.writePending()
    }
    this.timer = setTimeout(tick, this.untilNextBoundary()).unref()
  }

  /** Close the current interval now and write everything pending; resolves when written (or failed and kept). */
  async flush(): Promise<void> {
    this.rollover(true)
    await this.writePending()
  }

  /** Stop the timer and write what is left, once. */
  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    if (this.timer) clearTimeout(this.timer)
    this.timer = undefined
    this.rollover(true)
    await this.writePending()
  }

  /**
   * Turn the current interval's counters into records, reset them, and choose the next window's
   * labelled tenants (the top K by requests, then database time). With `partial`, the interval is
   * not over (a flush on demand): its records go out now and later ones of the same interval add
   * up in the catalog.
   */
  rollover(partial = false): void {
    const now = this.now()
    const start = new Date(this.intervalStart)
    const records: UsageRecord[] = []
    const sink = this.foldSink
    const ranked: { u: TenantUsage; rank: number }[] = []
    for (const [id, u] of this.tenants) {
      if (!u.active) {
        if (!partial && ++u.idle > 1) {
          if (u.label !== 'other') this.labelled--
          this.tenants.delete(id)
        }
        continue
      }
      if (sink) foldOne(u, sink)
      records.push({
        tenantId: id, intervalStart: start, intervalMs: this.opts.intervalMs,
        requests: u.requests, errors: u.errors, rejections: u.rejections, statements: u.statements,
        dbTimeMs: u.dbTimeMs, rows: u.rows, storageBytes: null,
      })
      // Requests first; database time breaks ties (and ranks tenants that only run background work).
      ranked.push({ u, rank: u.requests * 1e6 + u.dbTimeMs })
      u.idle = 0
      u.requests = u.errors = u.rejections = u.statements = u.dbTimeMs = u.rows = 0
      u.foldedRequests = u.foldedErrors = u.foldedRejections = u.foldedStatements = u.foldedDbTimeMs = u.foldedRows = 0
    }
    if (!partial) {
      this.relabel(ranked)
      this.intervalStart = this.align(now)
      this.opts.rolled?.()
    }
    if (records.length === 0) return
    this.pending.push({ intervalStart: start, records })
    while (this.pending.length > this.opts.maxPendingIntervals) {
      const lost = this.pending.shift()!
      this.droppedIntervals++
      this.opts.dropped?.(lost.intervalStart, lost.records.length)
    }
  }

  private relabel(ranked: { u: TenantUsage; rank: number }[]): void {
    ranked.sort((a, b) => b.rank - a.rank)
    const top = new Set(ranked.slice(0, this.opts.topK).map((r) => r.u))
    this.labelled = 0
    for (const u of this.tenants.values()) {
      u.label = top.has(u) ? u.slug : 'other'
      if (u.label !== 'other') this.labelled++
    }
  }

  private async writePending(): Promise<void> {
    if (this.writing) {
      // One write at a time; what arrived meanwhile goes with the next one.
      await this.writing
      if (this.pending.length === 0) return
    }
    if (this.pending.length === 0) return
    const batch = this.pending
    this.pending = []
    const records = batch.length === 1 ? batch[0].records : batch.flatMap((b) => b.records)
    this.writing = this.opts.write(records).then(
      () => {
        for (const b of batch) this.opts.flushed?.(b.intervalStart, b.records)
      },
      (error: unknown) => {
        this.failedWrites++
        // Kept, oldest first, in front of anything that arrived meanwhile.
        this.pending = [...batch, ...this.pending]
        while (this.pending.length > this.opts.maxPendingIntervals) {
          const lost = this.pending.shift()!
          this.droppedIntervals++
          this.opts.dropped?.(lost.intervalStart, lost.records.length)
        }
        this.opts.failed?.(error as Error, this.pending.length)
      },
    ).finally(() => {
      this.writing = undefined
    })
    await this.writing
  }

  private align(ms: number): number {
    return ms - (ms % this.opts.intervalMs)
  }

  private untilNextBoundary(): number {
    const now = this.now()
    return Math.max(1, this.align(now) + this.opts.intervalMs - now)
  }
}

function foldOne(u: TenantUsage, sink: FoldSink): void {
  const d = {
    requests: u.requests - u.foldedRequests,
    errors: u.errors - u.foldedErrors,
    rejections: u.rejections - u.foldedRejections,
    statements: u.statements - u.foldedStatements,
    dbTimeMs: u.dbTimeMs - u.foldedDbTimeMs,
    rows: u.rows - u.foldedRows,
  }
  if (d.requests === 0 && d.rejections === 0 && d.statements === 0) return
  u.foldedRequests = u.requests
  u.foldedErrors = u.errors
  u.foldedRejections = u.rejections
  u.foldedStatements = u.statements
  u.foldedDbTimeMs = u.dbTimeMs
  u.foldedRows = u.rows
  sink(u, d)
}
