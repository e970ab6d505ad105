import type { Placement, Server, Tenant, Tier } from '../../core/types.ts'
import type { ServerDriver, SessionTarget } from '../driver.ts'
import type { Naming } from '../naming.ts'

/** One schema that migrations run against, and the role that gets rights on what they create. */
export interface MigrationTarget {
  server: string
  database: string
  schema: string
  role: string
  /** Human label: `main/public`, `main/t_0a1b…`, `main/tenantry_t_0a1b…/public`. */
  label: string
}

/** Where a database-tier tenant's database is copied from; null where the driver cannot clone. */
export interface TemplateSource {
  /** Clone the server's template database (kept at the latest migration) into `database`. */
  cloneInto(database: string): Promise<boolean>
}

export interface TierContext {
  naming: Naming
  /** The installation's key: bootstraps new databases and signs the tenant setting. */
  tenantKey: string
  driver: ServerDriver
  server: Server
  pooledSchema: string
}

/**
 * A tier says only how a connection is pointed at a tenant, how the tenant's room is made, and what
 * its migration target is. Everything else in Tenantry is tier-blind (invariant 4).
 */
export interface TierStrategy {
  readonly tier: Tier
  placement(tenantId: string, server: Server, naming: Naming): Placement
  session(tenant: Tenant, naming: Naming, pooledSchema: string): Omit<SessionTarget, 'tenantToken'>
  /** The target this tenant owns alone, or null when it shares its server's pooled target. */
  ownTarget(tenant: Tenant, naming: Naming): MigrationTarget | null
  /**
   * Make what cannot be made inside a transaction (a database: cloned from the server's template
   * when the driver can) and return the SQL that makes the rest of the tenant's room (role,
   * schema, rights). Provisioning runs that SQL, every migration file and the grants in ONE
   * transaction on the tenant's database. Idempotent: a resumed provision calls it again.
   */
  prepare(ctx: TierContext, tenant: Tenant, template: TemplateSource): Promise<string>
  /** Remove the tenant's room and rows; returns what was removed, for the report. Idempotent. */
  remove(ctx: TierContext, tenant: Tenant, tables: string[]): Promise<string[]>
  /**
   * What {@link remove} would remove, in the same words, where it depends on the data (row
   * counts). A purge records it before removing, so a purge resumed after a kill still reports
   * what the interrupted run removed.
   */
  inventory?(ctx: TierContext, tenant: Tenant, tables: string[]): Promise<string[]>
}
