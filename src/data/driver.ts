import type { Readable, Writable } from 'node:stream'
import type { Queryable, QueryResult, TransactionalQueryable } from './executor.ts'
import type { CopyDataFormat } from './sql.ts'

/**
 * How a connection is pointed at one tenant: which database to use, and the three settings that
 * are applied transaction-locally before the tenant's statement runs.
 */
export interface SessionTarget {
  database: string
  tenantId: string
  /** The signed tenant setting (see tenant-token.ts); never the bare id. */
  tenantToken: string
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
 * An owner transaction that streams rows with COPY: backups, restores and tenant copies
 * (src/portability/). `source` and `target` are SQL put after `COPY` — a quoted table with its
 * column list, or a parenthesised SELECT — built by the caller from quoted identifiers.
 */
export interface CopyTransaction extends Queryable {
  exec(sql: string): Promise<void>
  /** `COPY <source> TO STDOUT` in `format` (default text; `csv` with a header line), written into `sink`; resolves with the rows copied when `sink` has ended. */
  copyOut(source: string, sink: Writable, format?: CopyDataFormat): Promise<number>
  /** `COPY <target> FROM STDIN` in `format` (default text), read from `source`; resolves with the rows loaded. */
  copyIn(target: string, source: Readable, format?: CopyDataFormat): Promise<number>
}

/**
 * How a {@link ServerDriver.copyTransaction} runs: `snapshot` is one REPEATABLE READ READ ONLY
 * transaction (every table seen at the same instant while the tenant keeps serving), `write` a
 * READ COMMITTED one that loads.
 */
export type CopyMode = 'snapshot' | 'write'

/** Options of {@link ServerDriver.copyTransaction}. */
export interface CopyTransactionOptions {
  /**
   * `snapshot` mode only: import this snapshot (`pg_export_snapshot()` of an open REPEATABLE READ
   * transaction) with `SET TRANSACTION SNAPSHOT`, so that several connections read the same instant
   * (parallel tables). Drivers without concurrent connections (PGlite) refuse it.
   */
  snapshot?: string
  /**
   * Run the transaction's backend at this nice value (1–19; higher yields the CPU more) where the
   * server can lower a backend's priority ({@link ServerDriver.backendPriority}). The connection
   * is closed afterwards: a backend's priority only goes down, so it never serves anyone again.
   */
  nice?: number
}

/** Whether a server can run a backend at a lower CPU priority (`ServerDriver.backendPriority`). */
export interface BackendPriority {
  /** `set_backend_priority()` of the `prioritize` extension is in the server URL's database. */
  available: boolean
  /**
   * The server host's `kernel.sched_autogroup_enabled`, where the owner may read it (null where
   * not). On, each backend is a scheduling group of its own (PostgreSQL starts each one in a
   * session of its own), and a nice value only ranks tasks within their group: lowering a
   * backend's priority does nothing there.
   */
  autogroup: boolean | null
}

/**
 * One PostgreSQL server of the fleet, as the data layer sees it. Two implementations: node-postgres
 * (`pg-server.ts`) and PGlite (`pglite-server.ts`). Nothing above `data/` talks to either directly.
 */
export interface ServerDriver {
  readonly server: string
  readonly kind: 'pg' | 'pglite'
  /** Run one tenant statement (the tenant settings and the statement in one unit). Rejects with coded errors (`fromPostgresError`). */
  tenantQuery<R = Record<string, unknown>>(target: SessionTarget, text: string, values: unknown[], budget?: TenantBudget): Promise<QueryResult<R>>
  /** Run `fn` in one transaction with the tenant settings applied. */
  tenantTransaction<T>(target: SessionTarget, fn: (tx: Queryable) => Promise<T>, budget?: TenantBudget): Promise<T>
  /** An owner connection to `database` on this server. */
  admin(database: string): AdminQueryable
  databaseExists(name: string): Promise<boolean>
  createDatabase(name: string): Promise<void>
  dropDatabase(name: string): Promise<void>
  /**
   * Create `name` as a copy of `template` (`CREATE DATABASE … TEMPLATE` on PostgreSQL, a copy of
   * the closed template's data directory on PGlite). Returns false when the driver cannot clone,
   * and the caller builds the database by migrations instead.
   */
  cloneDatabase(template: string, name: string): Promise<boolean>
  /**
   * False when {@link cloneDatabase} always returns false (in-memory PGlite), so that no template
   * is built for nothing. Absent means the driver can clone.
   */
  readonly canClone?: boolean
  /** Run `fn` in one owner transaction on `database` that can stream COPY (see {@link CopyTransaction}). */
  copyTransaction<T>(database: string, mode: CopyMode, fn: (tx: CopyTransaction) => Promise<T>, opts?: CopyTransactionOptions): Promise<T>
  /** Close every connection this process holds to `database` (before it is cloned or dropped). */
  releaseDatabase(database: string): Promise<void>
  /** Most owner connections to one database at once: the bound of a fleet migration's concurrency. */
  readonly adminPoolSize: number
  /**
   * Milliseconds of one `SELECT 1` round trip on an owner connection of its own (never queued
   * behind a pool): how fast the server answers now, which a fleet migration paces itself by.
   * Absent where the server is this process (PGlite): there is no one else's load to spare.
   */
  probe?(): Promise<number>
  /**
   * The server host's cumulative CPU times (`/proc/stat`: busy and total), on the connection of
   * {@link probe}; null where the server does not tell them (not Linux, or the owner may not
   * read server files). A fleet migration paces itself by the utilisation they give.
   */
  cpuTimes?(): Promise<{ busy: number; total: number } | null>
  /**
   * Whether {@link CopyTransactionOptions.nice} takes effect on this server, asked once. Absent
   * where the server is this process (PGlite).
   */
  backendPriority?(): Promise<BackendPriority>
  /** Subscribe to NOTIFY on `channel`; returns an unsubscribe function. `onReconnect` fires after a lost connection is re-established. */
  listen(channel: string, onMessage: (payload: string) => void, onReconnect?: () => void): Promise<() => Promise<void>>
  stats(): { open: number; busy: number; idle: number; waiting: number; peakOpen: number }
  /**
   * Give connections opened from now on this `statement_timeout` for their session (the guard's
   * default budget), so statements under that budget need not set it; null stops it. Optional:
   * drivers without server-side timeouts (PGlite) ignore it.
   */
  useSessionStatementTimeout?(ms: number | null): void
  close(): Promise<void>
}

/**
 * What a tenant may use of a server while its statement runs (from its plan, via the guard): its
 * share of the server's connections, its place in the fair-share queue and its statement budget.
 */
export interface TenantBudget {
  /** Key of the tenant in the pool's per-tenant accounting (its id). */
  tenant: string
  /** Fair-share weight: when a server's pool is saturated, the waiter with the least held/weight goes first. */
  weight: number
  /** Fraction of each server's connection budget the tenant may hold at once (0 < share ≤ 1). */
  connectionShare: number
  /** Most statements of the tenant waiting for a connection to one server; more fail at once with `TENANT_BUSY`. */
  maxWaiting: number
  /** Longest wait for a connection (capped by the pool's own acquire timeout). */
  waitTimeoutMs: number
  /** `statement_timeout` for the tenant's statements, transaction-local; null keeps the server's setting. */
  statementTimeoutMs: number | null
}

/** A statement that points a connection at a tenant: text, its prepared-statement name and values. */
export interface EnterStatement {
  name: string
  text: string
  values: unknown[]
}

const ENTER_HEAD =
  "SELECT num_nonnulls(set_config('tenantry.tenant_id', $1, true), set_config('search_path', $2, true), set_config('role', $3, true)"

/**
 * The statement that points a connection at a tenant; every setting is transaction-local. With a
 * statement budget, `statement_timeout` is set in the same statement (`$4`), so a budget costs no
 * extra round trip; without one the session's own `statement_timeout` stays. All settings are
 * arguments of one call (`num_nonnulls`), so every one is evaluated, and the answer is one small
 * integer instead of an echo of each value.
 */
export const ENTER_TENANT_SQL = `${ENTER_HEAD})`
export const ENTER_TENANT_WITH_TIMEOUT_SQL = `${ENTER_HEAD}, set_config('statement_timeout', $4, true))`

/** A budget in whole milliseconds as `statement_timeout` takes it (at least 1: 0 would mean none). */
export function timeoutMs(ms: number): number {
  return Math.max(1, Math.round(ms))
}

/**
 * The `statement_timeout` a connection holds for its whole session, set by Tenantry when it
 * connected: the budget most tenants have (the guard's default), so their statements need not set it.
 */
export interface SessionTimeout {
  /** The session's `statement_timeout`, in ms. */
  timeoutMs: number
  /** The server's own value for this connection before Tenantry set it (`'0'`, `'7s'`…): what a `null` budget restores. */
  serverValue: string
}

/**
 * The entry statement of `target` under `budget`, on a connection whose session holds `session`
 * (if any). The budget's timeout is set transaction-locally unless the session already has it;
 * a `null` budget restores the server's own value where the session has another.
 */
export function enterStatement(target: SessionTarget, budget?: TenantBudget, session?: SessionTimeout): EnterStatement {
  let timeout: string | undefined
  if (budget?.statementTimeoutMs === null) timeout = session?.serverValue
  else if (budget !== undefined) {
    const ms = timeoutMs(budget.statementTimeoutMs)
    if (ms !== session?.timeoutMs) timeout = String(ms)
  }
  return timeout === undefined
    ? { name: 'tenantry_enter', text: ENTER_TENANT_SQL, values: [target.tenantToken, target.searchPath, target.role] }
    : { name: 'tenantry_enter_t', text: ENTER_TENANT_WITH_TIMEOUT_SQL, values: [target.tenantToken, target.searchPath, target.role, timeout] }
}
