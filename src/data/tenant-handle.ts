import {
  Kysely,
  PostgresAdapter,
  PostgresIntrospector,
  PostgresQueryCompiler,
  type CompiledQuery,
  type DatabaseConnection,
  type Dialect,
  type Driver,
  type QueryResult as KyselyResult,
} from 'kysely'
import { fromPostgresError } from '../core/errors.ts'
import type { Tenant } from '../core/types.ts'
import type { Queryable, QueryResult, TransactionalQueryable } from './executor.ts'
import { assertTenantStatement } from './statement-guard.ts'

/** What a handle needs from the data plane: run a statement or a transaction for a tenant. */
export interface TenantRunner {
  run<R>(tenant: Tenant, text: string, values: unknown[]): Promise<QueryResult<R>>
  transaction<T>(tenant: Tenant, fn: (tx: Queryable) => Promise<T>): Promise<T>
}

/**
 * Tenant data, already scoped: every statement runs with the tenant's settings, role and
 * search_path applied, and sees only the tenant's rows. Application code never sees a connection.
 *
 * @example
 * ```ts
 * const { rows } = await request.db.query('SELECT id, name FROM projects WHERE id = $1', [id])
 * await request.db.transaction(async (tx) => { await tx.query('INSERT INTO tasks (project_id, title) VALUES ($1, $2)', [id, 'x']) })
 * const projects = await request.db.kysely<DB>().selectFrom('projects').selectAll().execute()
 * ```
 */
export class TenantHandle implements TransactionalQueryable {
  private readonly runner: TenantRunner
  private readonly tenantOf: () => Tenant
  private kyselyInstance?: Kysely<any>

  /** `tenant` is fixed, or read from the context at each statement (fails closed outside one). */
  constructor(runner: TenantRunner, tenant: Tenant | (() => Tenant)) {
    this.runner = runner
    this.tenantOf = typeof tenant === 'function' ? tenant : () => tenant
  }

  /** The tenant this handle serves (throws outside a context for the ambient handle). */
  get tenant(): Tenant {
    return this.tenantOf()
  }

  query<R = Record<string, unknown>>(text: string, values: unknown[] = []): Promise<QueryResult<R>> {
    // Not an async function, and no catch of its own (the drivers reject with coded errors
    // already): each promise costs more while AsyncLocalStorage is active, which it is in every
    // app that resolves tenants per request.
    try {
      const tenant = this.tenantOf()
      assertTenantStatement(text)
      return this.runner.run<R>(tenant, text, values)
    } catch (err) {
      return Promise.reject(err)
    }
  }

  async transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T> {
    const tenant = this.tenantOf()
    try {
      return await this.runner.transaction(tenant, (raw) =>
        fn({
          // Mapped here too, so code that catches inside the callback (and Kysely) sees coded errors.
          query: async <R>(text: string, values: unknown[] = []) => {
            assertTenantStatement(text)
            try {
              return await raw.query<R>(text, values)
            } catch (err) {
              throw fromPostgresError(err)
            }
          },
        }),
      )
    } catch (err) {
      throw fromPostgresError(err)
    }
  }

  /**
   * A Kysely instance bound to this handle's tenant. Queries and `transaction()` go through the
   * same scoped path as {@link query}.
   */
  kysely<DB>(): Kysely<DB> {
    this.kyselyInstance ??= new Kysely<any>({ dialect: new TenantDialect(this) })
    return this.kyselyInstance as Kysely<DB>
  }
}

class TenantDialect implements Dialect {
  constructor(private readonly handle: TenantHandle) {}
  createAdapter() { return new PostgresAdapter() }
  createDriver(): Driver { return new TenantKyselyDriver(this.handle) }
  createQueryCompiler() { return new PostgresQueryCompiler() }
  createIntrospector(db: Kysely<any>) { return new PostgresIntrospector(db) }
}

/**
 * Kysely asks for a connection and then sends BEGIN/COMMIT through it; a tenant handle owns
 * transactions itself, so the "connection" runs statements one by one until Kysely begins a
 * transaction, and then runs the rest inside handle.transaction().
 */
class TenantKyselyDriver implements Driver {
  constructor(private readonly handle: TenantHandle) {}
  async init(): Promise<void> {}
  async acquireConnection(): Promise<DatabaseConnection> {
    return new TenantKyselyConnection(this.handle)
  }
  async beginTransaction(conn: DatabaseConnection): Promise<void> {
    await (conn as TenantKyselyConnection).begin()
  }
  async commitTransaction(conn: DatabaseConnection): Promise<void> {
    await (conn as TenantKyselyConnection).end(true)
  }
  async rollbackTransaction(conn: DatabaseConnection): Promise<void> {
    await (conn as TenantKyselyConnection).end(false)
  }
  async releaseConnection(): Promise<void> {}
  async destroy(): Promise<void> {}
}

class TenantKyselyConnection implements DatabaseConnection {
  private tx?: { q: Queryable; finish(commit: boolean): Promise<void> }

  constructor(private readonly handle: TenantHandle) {}

  async executeQuery<R>(compiled: CompiledQuery): Promise<KyselyResult<R>> {
    const q: Queryable = this.tx?.q ?? this.handle
    const res = await q.query<R>(compiled.sql, [...compiled.parameters])
    const kind = compiled.query.kind
    const isWrite = kind === 'InsertQueryNode' || kind === 'UpdateQueryNode' || kind === 'DeleteQueryNode' || kind === 'MergeQueryNode'
    return isWrite ? { rows: res.rows, numAffectedRows: BigInt(res.rowCount) } : { rows: res.rows }
  }

  async *streamQuery<R>(compiled: CompiledQuery): AsyncIterableIterator<KyselyResult<R>> {
    yield await this.executeQuery<R>(compiled)
  }

  begin(): Promise<void> {
    return new Promise<void>((started, failedToStart) => {
      let finish!: (commit: boolean) => void
      const decided = new Promise<boolean>((r) => { finish = r })
      let settle!: { resolve(): void; reject(e: unknown): void }
      const settled = new Promise<void>((resolve, reject) => { settle = { resolve, reject } })
      this.handle
        .transaction(async (q) => {
          this.tx = {
            q,
            finish: async (commit) => { finish(commit); await settled },
          }
          started()
          if (!(await decided)) throw ROLLBACK
        })
        .then(() => settle.resolve(), (err) => (err === ROLLBACK ? settle.resolve() : settle.reject(err)))
        .finally(() => { this.tx = undefined })
      settled.catch(failedToStart)
    })
  }

  async end(commit: boolean): Promise<void> {
    await this.tx?.finish(commit)
  }
}

const ROLLBACK = Symbol('tenantry.rollback')
