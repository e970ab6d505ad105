import { pipeline } from 'node:stream/promises'
import type { Readable, Writable } from 'node:stream'
import pg from 'pg'
import { from as copyFrom, to as copyTo } from 'pg-copy-streams'
import { LRUCache } from 'lru-cache'
import { TenantryError, fromPostgresError } from '../core/errors.ts'
import { quoteIdent } from '../core/sql.ts'
import { printable } from '../core/validation.ts'
import type { Queryable, QueryResult } from './executor.ts'
import { AUTOGROUP_SQL, BACKEND_PRIORITY_SQL, SET_BACKEND_PRIORITY_SQL, copyFormatOptions, type CopyDataFormat } from './sql.ts'
import { enterStatement, timeoutMs, type AdminQueryable, type BackendPriority, type CopyMode, type CopyTransaction, type CopyTransactionOptions, type ServerDriver, type SessionTarget, type SessionTimeout, type TenantBudget } from './driver.ts'
import { PipelinedQuery, pipelined, type PipelineStep } from './pipelined-query.ts'
import { ServerPool, type PoolSlot } from './server-pool.ts'

export interface PgServerOptions {
  name: string
  /** Admin (owner) connection URL; its database part is ignored where another database is named. */
  url: string
  /** Login role and password the data plane connects with. */
  appUser: string
  appPassword?: string
  budget: number
  acquireTimeoutMs: number
  idleTimeoutMs: number
  maxUses: number
  /**
   * A connection is closed once it has served this many distinct schemas (search paths): what a
   * backend caches grows with the relations it touched, not with the statements it ran.
   */
  maxSchemas: number
  /**
   * Behind a transaction-mode pooler (PgBouncer, RDS Proxy) no server-side prepared statement may
   * outlive a transaction, so the tenant-entry statement is sent unnamed each time.
   */
  transactionPooler: boolean
  /** Owner connections per database (DDL, migrations). Default 8. */
  adminPoolSize?: number
}

/** Distinct statement texts prepared per connection; beyond it statements go unnamed. */
const STATEMENT_CACHE_SIZE = 256

class PgConnection {
  broken = false
  /** The session-level statement_timeout Tenantry gave this connection when it opened, if any. */
  session: SessionTimeout | undefined
  /** Statement text → server-side prepared statement name on this connection. */
  private readonly statements = new Map<string, string>()
  private nextName = 0
  /** Search paths this connection has run statements under (a proxy for the catalog cache its backend holds). */
  private readonly schemas = new Set<string>()
  private lastSchema: string | undefined

  constructor(readonly client: pg.Client) {
    client.on('error', () => { this.broken = true })
  }

  /**
   * A prepared-statement name for `text`, so PostgreSQL parses and plans it once per connection
   * instead of per request (row-level security makes planning dearer). The plan cache re-plans by
   * itself when search_path or the role differ, which they do between tenants.
   */
  statementName(text: string): string | undefined {
    const known = this.statements.get(text)
    if (known !== undefined || this.statements.size >= STATEMENT_CACHE_SIZE) return known
    const name = `tenantry_q${this.nextName++}`
    this.statements.set(text, name)
    return name
  }

  /** Record that `searchPath` was used; returns how many distinct ones this connection has served. */
  touch(searchPath: string): number {
    if (searchPath !== this.lastSchema) {
      this.lastSchema = searchPath
      this.schemas.add(searchPath)
    }
    return this.schemas.size
  }

  /** After an error the statement may or may not exist on the server: use a fresh name next time. */
  forgetStatement(text: string): void {
    const name = this.statements.get(text)
    if (name === undefined) return
    this.statements.delete(text)
    const parsed = (this.client as unknown as { connection: { parsedStatements: Record<string, string> } }).connection.parsedStatements
    delete parsed[name]
  }
  close(): Promise<void> {
    return this.client.end()
  }
}

const CONNECTION_ERROR_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EHOSTUNREACH', '57P01', '57P02', '57P03', '08006', '08001', '08003', '08004'])

function isConnectionError(err: unknown): boolean {
  if (!err || typeof err !== 'object') return false
  const code = (err as { code?: unknown }).code
  if (typeof code === 'string' && CONNECTION_ERROR_CODES.has(code)) return true
  const message = String((err as { message?: unknown }).message ?? '')
  return /Connection terminated|Client has encountered a connection error|connection timeout/i.test(message)
}

function urlFor(base: string, database: string, user?: string, password?: string): string {
  const url = new URL(base)
  url.pathname = `/${encodeURIComponent(database)}`
  if (user !== undefined) {
    url.username = encodeURIComponent(user)
    url.password = password === undefined ? '' : encodeURIComponent(password)
  }
  return url.toString()
}

/**
 * A PostgreSQL server reached with node-postgres. Tenant statements go through a {@link ServerPool}
 * (one budget for all databases of the server) and are pipelined behind the tenant-entry statement:
 * one round trip per statement, transaction-local settings only.
 *
 * @example
 * ```ts
 * const server = new PgServer({ name: 'main', url: process.env.DATABASE_URL!, appUser: 'tenantry_app', budget: 20, … })
 * ```
 */
export class PgServer implements ServerDriver {
  readonly kind = 'pg' as const
  readonly server: string
  private readonly opts: PgServerOptions
  private readonly pool: ServerPool<PgConnection>
  private readonly adminPools: LRUCache<string, pg.Pool>
  /** False behind a transaction-mode pooler: the entry statement is sent unnamed. */
  private readonly prepareEnter: boolean
  /** The session statement_timeout new connections get (see {@link useSessionStatementTimeout}). */
  private sessionTimeoutMs: number | null = null
  /** The connection of {@link probe}, opened on first use. */
  private probeClient: Promise<pg.Client> | null = null
  /** Settles when the probe connection's statement in progress is done (see {@link onProbeConnection}). */
  private probeTurn: Promise<void> = Promise.resolve()
  /** False once reading the host's CPU times was refused: not asked again. */
  private cpuReadable = true
  private priority: Promise<BackendPriority> | null = null

  constructor(opts: PgServerOptions) {
    this.opts = opts
    this.server = opts.name
    this.prepareEnter = !opts.transactionPooler
    this.pool = new ServerPool<PgConnection>({
      server: opts.name,
      budget: opts.budget,
      acquireTimeoutMs: opts.acquireTimeoutMs,
      idleTimeoutMs: opts.idleTimeoutMs,
      maxUses: opts.maxUses,
      connect: (database) => this.connectApp(database),
    })
    this.adminPools = new LRUCache<string, pg.Pool>({
      // More pools than a fleet migration's concurrency (bounded by adminPoolSize) plus the catalog's.
      max: 2 * (opts.adminPoolSize ?? 8) + 1,
      // pg.Pool.end() twice rejects; releaseDatabase() may already have ended it.
      dispose: (pool) => { if (!pool.ending) pool.end().catch(() => undefined) },
    })
  }

  /**
   * Setting a budget transaction-locally costs every statement a fourth set_config and its undoing
   * at commit (~6,000 instructions of ~169,000, callgrind); a session that already holds the
   * common budget costs nothing per statement. Not behind a transaction-mode pooler, where a
   * session setting would land on whichever backend the pooler chose.
   */
  useSessionStatementTimeout(ms: number | null): void {
    this.sessionTimeoutMs = this.opts.transactionPooler || ms === null ? null : timeoutMs(ms)
  }

  tenantQuery<R>(target: SessionTarget, text: string, values: unknown[], budget?: TenantBudget): Promise<QueryResult<R>> {
    // One promise for the whole statement, callbacks inside it: every promise costs more while
    // AsyncLocalStorage is active (it is, in any app that resolves tenants per request), and the
    // routing benchmark counts each one. Errors leave it coded (fromPostgresError), so no layer
    // above needs a catch of its own.
    return new Promise<QueryResult<R>>((resolve, reject) => this.queryOn<R>(target, text, values, budget, resolve, reject))
  }

  private queryOn<R>(target: SessionTarget, text: string, values: unknown[], budget: TenantBudget | undefined, resolve: (r: QueryResult<R>) => void, reject: (err: unknown) => void): void {
    this.acquireLive(target.database, budget, (err, slot) => (slot ? this.runOn<R>(slot, target, text, values, budget, resolve, reject) : reject(err)))
  }

  /** A connection that is not broken (broken ones are discarded), or the coded reason there is none. */
  private acquireLive(database: string, budget: TenantBudget | undefined, done: (err: unknown, slot?: PoolSlot<PgConnection>) => void): void {
    this.pool.acquireThen(database, budget, (err, slot) => {
      if (!slot) return done(this.mapError(err, undefined))
      if (!slot.conn.broken) return done(undefined, slot)
      this.pool.release(slot, true)
      this.acquireLive(database, budget, done)
    })
  }

  /** One tenant statement on an acquired connection: the tenant settings and the statement in one round trip. */
  private runOn<R>(slot: PoolSlot<PgConnection>, target: SessionTarget, text: string, values: unknown[], budget: TenantBudget | undefined, resolve: (r: QueryResult<R>) => void, reject: (err: unknown) => void): void {
    const conn = slot.conn
    const recycle = conn.touch(target.searchPath) > this.opts.maxSchemas
    const name = this.opts.transactionPooler ? undefined : conn.statementName(text)
    const enter = enterStatement(target, budget, conn.session)
    const steps: PipelineStep[] = [{ name: this.prepareEnter ? enter.name : undefined, text: enter.text, values: enter.values }]
    let thrown = false
    const query = new PipelinedQuery(steps, text, values, name, (err, res) => {
      if (thrown) return // already released and rejected below
      if (err) {
        this.failed(slot, err, text, recycle).then(() => reject(this.mapError(err, target)))
        return
      }
      this.pool.release(slot, recycle || conn.broken || conn.client.getTransactionStatus() !== 'I')
      resolve({ rows: res.rows as R[], rowCount: res.rowCount ?? 0 })
    })
    try {
      conn.client.query(query as unknown as pg.QueryConfig)
    } catch (err) {
      // Thrown while writing the pipeline: what reached the server is unknown, so the
      // connection goes, and never back to the pool.
      thrown = true
      this.pool.release(slot, true)
      reject(this.mapError(err, target))
    }
  }

  /** After a failed tenant statement: forget a statement whose preparation is in doubt, roll back, give the connection back. */
  private async failed(slot: PoolSlot<PgConnection>, err: unknown, text: string, recycle: boolean): Promise<void> {
    // Only a failed Parse (class 42: syntax, unknown table…) leaves the statement's existence in
    // doubt; constraint and data errors happen after it was prepared.
    const code = (err as { code?: unknown }).code
    if (typeof code !== 'string' || code.startsWith('42') || code.startsWith('0A') || code.startsWith('26')) slot.conn.forgetStatement(text)
    const discard = (await this.afterError(slot, err)) || recycle
    this.pool.release(slot, discard || slot.conn.broken || slot.conn.client.getTransactionStatus() !== 'I')
  }

  async tenantTransaction<T>(target: SessionTarget, fn: (tx: Queryable) => Promise<T>, budget?: TenantBudget): Promise<T> {
    const slot = await this.acquire(target.database, budget)
    const client = slot.conn.client
    let discard = slot.conn.touch(target.searchPath) > this.opts.maxSchemas
    try {
      const enter = enterStatement(target, budget, slot.conn.session)
      await pipelined(client, [{ text: 'BEGIN', values: [] }], enter.text, enter.values)
      const tx: Queryable = {
        query: async <R>(text: string, values: unknown[] = []) => {
          const res = await client.query({ text, values, queryMode: 'extended' } as pg.QueryConfig)
          return { rows: res.rows as R[], rowCount: res.rowCount ?? 0 }
        },
      }
      const result = await fn(tx)
      await client.query('COMMIT')
      return result
    } catch (err) {
      discard = (await this.afterError(slot, err)) || discard
      throw this.mapError(err, target)
    } finally {
      this.pool.release(slot, discard || slot.conn.broken || client.getTransactionStatus() !== 'I')
    }
  }

  admin(database: string): AdminQueryable {
    // The pool is looked up at every call, never kept: the LRU below ends pools of databases not
    // used lately, and a handle kept for the life of the process (the catalog's) must not die
    // with its pool. A pool ended while a client is checked out lets that client finish.
    const pool = () => this.adminPool(database)
    const run = async <R>(q: pg.Pool | pg.PoolClient, text: string, values?: unknown[]): Promise<QueryResult<R>> => {
      const res = await q.query(text, values)
      return { rows: res.rows as R[], rowCount: res.rowCount ?? 0 }
    }
    return {
      query: (text, values) => run(pool(), text, values ?? []),
      exec: async (sql) => { await pool().query(sql) },
      transaction: async (fn) => {
        const client = await pool().connect()
        let broken = false
        // A server that stops while the client is checked out emits 'error' on it: without a listener the process dies.
        const lost = () => { broken = true }
        client.on('error', lost)
        try {
          await client.query('BEGIN')
          const result = await fn({
            query: (text, values) => run(client, text, values ?? []),
            exec: async (sql) => { await client.query(sql) },
          })
          await client.query('COMMIT')
          return result
        } catch (err) {
          await client.query('ROLLBACK').catch(() => { broken = true })
          throw err
        } finally {
          client.off('error', lost)
          client.release(broken)
        }
      },
    }
  }

  async copyTransaction<T>(database: string, mode: CopyMode, fn: (tx: CopyTransaction) => Promise<T>, opts: CopyTransactionOptions = {}): Promise<T> {
    if (opts.snapshot !== undefined && (mode !== 'snapshot' || !/^[0-9A-F]+-[0-9A-F]+(-[0-9]+)?$/i.test(opts.snapshot))) {
      throw new TenantryError('VALIDATION_FAILED', `'${printable(opts.snapshot)}' is not a snapshot id a snapshot transaction can import.`)
    }
    const client = await this.adminPool(database).connect()
    let broken = false
    const lost = () => { broken = true }
    client.on('error', lost)
    try {
      if (opts.nice !== undefined && (await this.backendPriority()).available) {
        // A lowered backend never goes back to the pool (its priority cannot be raised again).
        broken = true
        const pid = (client as unknown as { processID: number }).processID
        await this.onProbeConnection((c) => c.query(SET_BACKEND_PRIORITY_SQL, [pid, Math.max(1, Math.min(19, Math.round(opts.nice!)))]))
      }
      await client.query(mode === 'snapshot' ? 'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY' : 'BEGIN')
      // The first statement of the transaction: it reads at the exporter's instant from here on.
      if (opts.snapshot !== undefined) await client.query(`SET TRANSACTION SNAPSHOT '${opts.snapshot}'`)
      const result = await fn({
        query: async (text, values) => {
          const res = await client.query(text, values ?? [])
          return { rows: res.rows, rowCount: res.rowCount ?? 0 }
        },
        exec: async (sql) => { await client.query(sql) },
        copyOut: async (source: string, sink: Writable, format?: CopyDataFormat) => {
          const stream = client.query(copyTo(`COPY ${source} TO STDOUT${copyFormatOptions(format)}`))
          await pipeline(stream, sink)
          return stream.rowCount
        },
        copyIn: async (target: string, source: Readable, format?: CopyDataFormat) => {
          const stream = client.query(copyFrom(`COPY ${target} FROM STDIN${copyFormatOptions(format)}`))
          await pipeline(source, stream)
          return Number(stream.rowCount ?? 0)
        },
      })
      await client.query('COMMIT')
      return result
    } catch (err) {
      // A COPY cut off mid-stream can leave the connection unusable: it is not given back.
      await client.query('ROLLBACK').catch(() => { broken = true })
      broken = true
      throw err
    } finally {
      client.off('error', lost)
      client.release(broken)
    }
  }

  private adminPool(database: string): pg.Pool {
    let pool = this.adminPools.get(database)
    if (!pool || pool.ending) {
      pool = new pg.Pool({ connectionString: urlFor(this.opts.url, database), max: this.adminPoolSize, idleTimeoutMillis: 5_000 })
      pool.on('error', () => undefined)
      this.adminPools.set(database, pool)
    }
    return pool
  }

  async databaseExists(name: string): Promise<boolean> {
    const res = await this.admin('postgres').query('SELECT 1 FROM pg_database WHERE datname = $1', [name])
    return res.rowCount > 0
  }

  async createDatabase(name: string): Promise<void> {
    await this.admin('postgres').query(`CREATE DATABASE ${quoteIdent(name)}`)
  }

  async dropDatabase(name: string): Promise<void> {
    await this.releaseDatabase(name)
    await this.admin('postgres').query(`DROP DATABASE IF EXISTS ${quoteIdent(name)} WITH (FORCE)`)
  }

  async cloneDatabase(template: string, name: string): Promise<boolean> {
    await this.releaseDatabase(template)
    // The default strategy (WAL_LOG) measured ~45 ms for 20 tables here; FILE_COPY ~117 ms.
    await this.admin('postgres').query(`CREATE DATABASE ${quoteIdent(name)} TEMPLATE ${quoteIdent(template)}`)
    return true
  }

  async releaseDatabase(database: string): Promise<void> {
    await this.pool.closeDatabase(database)
    const pool = this.adminPools.peek(database)
    if (pool) {
      this.adminPools.delete(database)
      await pool.end().catch(() => undefined)
    }
  }

  get adminPoolSize(): number {
    return this.opts.adminPoolSize ?? 8
  }

  async listen(channel: string, onMessage: (payload: string) => void, onReconnect?: () => void): Promise<() => Promise<void>> {
    let client: pg.Client | undefined
    let stopped = false
    let retry: NodeJS.Timeout | undefined
    const database = new URL(this.opts.url).pathname.slice(1) || 'postgres'
    const connect = async (isRetry: boolean): Promise<void> => {
      const c = new pg.Client({ connectionString: urlFor(this.opts.url, database) })
      c.on('notification', (msg) => { if (msg.channel === channel) onMessage(msg.payload ?? '') })
      c.on('error', () => undefined)
      c.on('end', () => {
        if (stopped) return
        retry = setTimeout(() => { connect(true).catch(() => undefined) }, 500)
        retry.unref()
      })
      try {
        await c.connect()
        await c.query(`LISTEN ${quoteIdent(channel)}`)
        if (stopped) {
          // Closed while this reconnect was under way: nobody would ever end this client.
          await c.end().catch(() => undefined)
          return
        }
        client = c
        // Notifications sent while we were away are lost: the caller must forget what it cached.
        if (isRetry) onReconnect?.()
      } catch (err) {
        c.end().catch(() => undefined)
        if (!isRetry) throw err
      }
    }
    await connect(false)
    return async () => {
      stopped = true
      if (retry) clearTimeout(retry)
      await client?.end().catch(() => undefined)
    }
  }

  async probe(): Promise<number> {
    const started = performance.now()
    await this.onProbeConnection((c) => c.query('SELECT 1'))
    return performance.now() - started
  }

  async cpuTimes(): Promise<{ busy: number; total: number } | null> {
    if (!this.cpuReadable) return null
    let line: string
    try {
      const r = await this.onProbeConnection((c) => c.query<{ line: string }>("SELECT split_part(pg_read_file('/proc/stat', 0, 512), E'\\n', 1) AS line"))
      line = r.rows[0]?.line ?? ''
    } catch (err) {
      // 42501: not a superuser nor pg_read_server_files; 58P01: no /proc/stat (not Linux).
      const code = (err as { code?: string }).code
      if (code === '42501' || code === '58P01' || code === '22023') {
        this.cpuReadable = false
        return null
      }
      throw err
    }
    // cpu  user nice system idle iowait irq softirq steal …: idle and iowait are CPU to spare, and so
    // is the time of niced processes (batch work that yields to the server's own at once).
    const f = line.trim().split(/\s+/)
    if (f[0] !== 'cpu' || f.length < 5) {
      this.cpuReadable = false
      return null
    }
    const n = f.slice(1, 9).map(Number)
    const total = n.reduce((a, b) => a + b, 0)
    return { busy: total - n[1] - n[3] - (n[4] ?? 0), total }
  }

  backendPriority(): Promise<BackendPriority> {
    this.priority ??= this.onProbeConnection(async (c) => {
      const available = (await c.query<{ available: boolean }>(BACKEND_PRIORITY_SQL)).rows[0]?.available === true
      // Unreadable (not a superuser nor pg_read_server_files, not Linux, an old kernel): not known.
      const autogroup = await c.query<{ v: string }>(AUTOGROUP_SQL).then((r) => {
        const v = r.rows[0]?.v.trim()
        return v === '1' ? true : v === '0' ? false : null
      }, () => null)
      return { available, autogroup }
    }).catch((err: unknown) => {
      this.priority = null // asked again next time: the connection may come back
      throw err
    })
    return this.priority
  }

  /** Run `fn` on the connection of {@link probe} (its own, never queued behind a pool), opened on first use. */
  private async onProbeConnection<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
    if (!this.probeClient) {
      const client = new pg.Client({ connectionString: this.opts.url })
      // A broken probe connection is replaced on the next use; its error is that use's.
      client.on('error', () => { this.probeClient = null })
      this.probeClient = client.connect().then(() => client)
      this.probeClient.catch(() => { this.probeClient = null })
    }
    const client = await this.probeClient
    // One statement at a time on the one connection: the pacer's gauges and the lowering of a
    // backup's backends (several at once, one per table stream) share it.
    const turn = this.probeTurn
    let done!: () => void
    this.probeTurn = new Promise<void>((r) => (done = r))
    await turn
    try {
      return await fn(client)
    } catch (err) {
      // A statement error leaves the connection usable; a broken connection does not.
      if ((err as { code?: string }).code === undefined) {
        this.probeClient = null
        client.end().catch(() => undefined)
      }
      throw err
    } finally {
      done()
    }
  }

  stats() {
    return this.pool.stats()
  }

  async close(): Promise<void> {
    const probe = this.probeClient
    this.probeClient = null
    if (probe) await probe.then((c) => c.end()).catch(() => undefined)
    await this.pool.close()
    const pools = [...this.adminPools.values()]
    this.adminPools.clear()
    await Promise.all(pools.map((p) => p.end().catch(() => undefined)))
  }

  private acquire(database: string, budget?: TenantBudget): Promise<PoolSlot<PgConnection>> {
    return new Promise((resolve, reject) => this.acquireLive(database, budget, (err, slot) => (slot ? resolve(slot) : reject(err))))
  }

  private async connectApp(database: string): Promise<PgConnection> {
    const client = new pg.Client({
      connectionString: urlFor(this.opts.url, database, this.opts.appUser, this.opts.appPassword),
      connectionTimeoutMillis: this.opts.acquireTimeoutMs,
    })
    const conn = new PgConnection(client)
    const sessionMs = this.sessionTimeoutMs
    try {
      await client.connect()
      if (sessionMs !== null) {
        // current_setting() is evaluated first: the server's own value, which a null budget restores.
        const r = await client.query<{ server: string }>("SELECT current_setting('statement_timeout') AS server, set_config('statement_timeout', $1, false)", [String(sessionMs)])
        conn.session = { timeoutMs: sessionMs, serverValue: r.rows[0].server }
      }
    } catch (err) {
      client.end().catch(() => undefined)
      throw err
    }
    return conn
  }

  /**
   * After a failed statement, make sure no transaction (and so no tenant setting) survives into the
   * next use of the connection. Returns true when the connection must be discarded.
   */
  private async afterError(slot: PoolSlot<PgConnection>, err: unknown): Promise<boolean> {
    // Any other error (a database error, or the app's own error thrown inside a transaction)
    // leaves a healthy connection: roll back and reuse it rather than pay for a new one.
    if (slot.conn.broken || isConnectionError(err)) return true
    try {
      // Queued behind the failed query's ReadyForQuery, so the status read after it is current.
      await slot.conn.client.query('ROLLBACK')
      return slot.conn.client.getTransactionStatus() !== 'I'
    } catch {
      return true
    }
  }

  private mapError(err: unknown, target: SessionTarget | undefined): unknown {
    if (!isConnectionError(err)) return fromPostgresError(err)
    return new TenantryError(
      'TENANT_UNAVAILABLE',
      `The database of this tenant cannot be reached (server '${this.server}'${target ? `, database '${target.database}'` : ''}). Retry later.`,
      { cause: err, retryAfter: 5 },
    )
  }
}
