/** The isolation level of a tenant. */
export type Tier = 'pooled' | 'schema' | 'database'

export const TIERS: readonly Tier[] = ['pooled', 'schema', 'database']

/** The life state of a tenant. Only `active` tenants are served. */
export type TenantStatus = 'provisioning' | 'active' | 'suspended' | 'deleted'

/**
 * Where a tenant's data lives. Decided at provisioning, changed only by a move.
 * `database` is the database on `server` that holds the data (for the pooled and schema tiers,
 * the server's main database); `schema` is set for the schema tier.
 */
export interface Placement {
  server: string
  database: string
  schema?: string
}

/** A tenant as the catalog returns it. */
export interface Tenant {
  id: string
  slug: string
  name: string
  status: TenantStatus
  /** Why the tenant is suspended or not ready; shown to its users. */
  statusReason: string | null
  tier: Tier
  plan: string
  region: string | null
  placement: Placement
  config: Record<string, unknown>
  createdAt: Date
  updatedAt: Date
  /** When the tenant was (soft-)deleted; its data is kept until purged. */
  deletedAt: Date | null
}

/** One PostgreSQL server of the fleet. */
export interface Server {
  name: string
  /**
   * Admin connection (owner of tenant objects; runs DDL): `postgres://…` for a server, or
   * `pglite:<dir>` / `pglite:memory` for the embedded engine.
   */
  url: string
  region: string | null
  capacityWeight: number
  /** The database on this server that holds pooled tables and tenant schemas. */
  mainDatabase: string
}

/** A plan, with whatever limits and settings the app attaches to it. */
export interface Plan {
  name: string
  settings: Record<string, unknown>
}

/** What usage metering counts of a tenant (per interval, per bucket, per period). */
export interface UsageCounters {
  /** Requests served for the tenant (every status, rejections included). */
  requests: number
  /** Requests that ended with a 5xx status other than a guard rejection. */
  errors: number
  /** Requests and statements turned away by the guard (429/503/504 of rate limits, shares, budgets, breakers). */
  rejections: number
  /** Tenant statements run (a transaction counts once per statement in it). */
  statements: number
  /** Wall time of the tenant's statements, ms (from the call to its answer, the wait for a connection included). */
  dbTimeMs: number
  /** Rows the tenant's statements returned. */
  rows: number
  /** Bytes the tenant's data takes: the latest storage sample (of the interval, bucket or period), or null when none was taken. */
  storageBytes: number | null
  /**
   * Bytes of the tenant's objects in object storage (`tenantry.storage`), sampled with
   * `storageBytes` (the latest sample, or null when none was taken). Apart from `storageBytes`,
   * which is what its data takes on its database server. Absent in a record means null.
   */
  objectBytes?: number | null
}

/**
 * What one process metered for one tenant in one interval. The aggregator (`observe/meter.ts`) makes
 * these in memory; the usage store (`observe/usage-service.ts`) adds them up in the catalog, so that the
 * records of several processes for the same tenant and interval become one row.
 */
export interface UsageRecord extends UsageCounters {
  tenantId: string
  /** Start of the interval (aligned to `intervalMs` since the epoch). */
  intervalStart: Date
  /** Length of the interval, ms (the metering interval; default 60,000). */
  intervalMs: number
}
