import type { Tier, UsageCounters, UsageRecord } from '../core/types.ts'

export type { UsageRecord } from '../core/types.ts'

/** Granularity of a usage query. */
export type UsageGranularity = 'minute' | 'hour' | 'day'

/** Options of `tenantry.usage()`. */
export interface UsageQuery {
  /** A tenant's slug or id; all tenants when absent. */
  tenant?: string
  /** Start, inclusive. Default: one hour before `to`. */
  from?: Date
  /** End, exclusive. Default: now. */
  to?: Date
  /** Default `hour`. */
  granularity?: UsageGranularity
}

/** One row of `tenantry.usage()`: a tenant's usage in one bucket. */
export interface UsageRow extends UsageCounters {
  tenantId: string
  slug: string | null
  /** Start of the bucket. */
  bucket: Date
}

/** What `tenantry top` sorts by. */
export type TopBy = 'requests' | 'db_time' | 'storage'
export const TOP_BY: readonly TopBy[] = ['requests', 'db_time', 'storage']

/** One row of `tenantry.top()`, like Citus' `citus_stat_tenants`. */
export interface TopRow extends UsageCounters {
  tenantId: string
  slug: string | null
  tier: Tier | null
  plan: string | null
  server: string | null
  /** This tenant's share of its server's database time in the period, 0..1. */
  serverDbTimeShare: number
  /** This tenant's share of all tenants' requests in the period, 0..1. */
  requestShare: number
}

/** Options of `tenantry.top()`. */
export interface TopQuery {
  /** Default `requests`; anything else → `VALIDATION_FAILED` naming the choices. */
  by?: TopBy
  /** Length of the period that ends now, ms. Default one hour. */
  periodMs?: number
  /** Only tenants placed on this server. */
  server?: string
  /** Most rows. Default 20. */
  limit?: number
}

/** Thresholds of `tenantry.advise()`; each has a default (docs/usage.md). */
export interface AdviseOptions {
  /** Length of the period that ends now, ms. Default 24 hours. */
  periodMs?: number
  /** A pooled tenant taking more than this share of its server's database time or storage → schema tier. Default 0.2. */
  pooledShare?: number
  /** A pooled or schema tenant taking more than this share → database tier. Default 0.5. */
  dedicatedShare?: number
  /** A server whose share of database time exceeds its share of capacity weight by this factor is out of balance. Default 1.5. */
  imbalanceFactor?: number
  /** A schema or database tenant with at most this many requests in the period is idle → one tier down. Default 0. */
  idleRequests?: number
  /** No database-time advice (promote, rebalance) for a server or fleet with less database time than this in the period, ms: its shares are noise. Default 60,000. */
  minDbTimeMs?: number
  /** No storage advice for a server with less storage than this, bytes. Default 100 MiB. */
  minStorageBytes?: number
}

/** One piece of advice: what to do, and the figure behind it. */
export interface Advice {
  kind: 'promote' | 'demote' | 'rebalance'
  /** The tenant to move (promote/demote). */
  tenantId?: string
  slug?: string
  /** The server concerned (the tenant's, or the one out of balance). */
  server: string
  fromTier?: Tier
  toTier?: Tier
  /** One sentence a person can act on, with the figure in it. */
  reason: string
  /** The figures behind the advice (shares, ms, bytes, requests). */
  figures: Record<string, number>
  /** Rebalance only: the server's biggest active tenants by database time in the period (at most 3). */
  movable?: { tenantId: string; slug: string; tier: Tier; dbTimeMs: number }[]
}

/** Options of usage metering (`createTenantry({ observe: { metering } })`). */
export interface MeteringOptions {
  /** Length of a metering interval, ms. Default 60,000 (1 minute). */
  intervalMs?: number
  /** Days usage rows are kept. Default 90. */
  retentionDays?: number
  /** How often tenants' storage is sampled (one process of the fleet does it), ms. Default 15 minutes; 0 turns it off. */
  storageSampleMs?: number
  /** Intervals kept in memory while the catalog cannot be written; the oldest are dropped first. Default 60. */
  maxPendingIntervals?: number
}

/**
 * The control-plane side of usage metering: the catalog's usage table and what reads it. Made by
 * `createUsageService` (`usage-service.ts`); the in-process meter hands it records to add up.
 */
export interface UsageService {
  /** Create the usage tables if needed. */
  init(): Promise<void>
  /** Add up records in the catalog: one statement for the whole batch (never one per record). */
  write(records: UsageRecord[]): Promise<void>
  usage(query: UsageQuery): Promise<UsageRow[]>
  top(query: TopQuery): Promise<TopRow[]>
  advise(options?: AdviseOptions): Promise<Advice[]>
  /** Sample every tenant's storage now (if no other process did within `storageSampleMs`, unless forced); returns the tenants sampled. */
  sampleStorage(opts?: { force?: boolean }): Promise<number>
  /** Delete usage rows older than the retention; returns how many. */
  prune(): Promise<number>
  /** Start the storage-sampling and retention timers (unref'd). */
  start(): void
  close(): Promise<void>
}
