import type { Queryable, QueryResult, TransactionalQueryable } from './executor.ts'

/**
 * How a connection is pointed at one tenant: which database to use, and the three settings that
 * are applied transaction-locally before the tenant's statement runs.
 */
export interface SessionTarget {
  database: string
  tenantId: string
  /** Quoted search_path value, e.g. `"t_0a1b…"` or `"public"`. */
  searchPath: string
  /** Role the statement runs as (never the owner, never a superuser). */
  role: string
}

/** An owner connection to one database: runs DDL and migrations. */
export interface AdminQueryable extends TransactionalQueryable {
  /** Run a multi-statement SQL script without parameters (migration files). */
  exec(sql: string): Promise<void>
  transaction<T>(fn: (tx: Queryable & { exec(sql: string): Promise<void> }) => Promise<T>): Promise<T>
}

/**
 * One PostgreSQL server of the fleet, as the data layer sees it. Two implementations: node-postgres
 * (`pg-server.ts`) and PGlite (`pglite-server.ts`). Nothing above `data/` talks to either directly.
 */
export interface ServerDriver {
  readonly server: string
  readonly kind: 'pg' | 'pglite'
  /** Run one tenant statement (the tenant settings and the statement in one unit). */
  tenantQuery<R = Record<string, unknown>>(target: SessionTarget, text: string, values: unknown[]): Promise<QueryResult<R>>
  /** Run `fn` in one transaction with the tenant settings applied. */
  tenantTransaction<T>(target: SessionTarget, fn: (tx: Queryable) => Promise<T>): Promise<T>
  /** An owner connection to `database` on this server. */
  admin(database: string): AdminQueryable
  databaseExists(name: string): Promise<boolean>
  createDatabase(name: string): Promise<void>
  dropDatabase(name: string): Promise<void>
  /** Subscribe to NOTIFY on `channel`; returns an unsubscribe function. `onReconnect` fires after a lost connection is re-established. */
  listen(channel: string, onMessage: (payload: string) => void, onReconnect?: () => void): Promise<() => Promise<void>>
  stats(): { open: number; busy: number; idle: number; waiting: number; peakOpen: number }
  close(): Promise<void>
}

/** The statement that points a connection at a tenant; all three settings are transaction-local. */
export const ENTER_TENANT_SQL =
  "SELECT set_config('tenantry.tenant_id', $1, true), set_config('search_path', $2, true), set_config('role', $3, true)"

export function enterValues(target: SessionTarget): unknown[] {
  return [target.tenantId, target.searchPath, target.role]
}
