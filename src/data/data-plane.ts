import { TenantryError } from '../core/errors.ts'
import type { Server, Tenant } from '../core/types.ts'
import type { ServerDriver, SessionTarget, TenantBudget } from './driver.ts'
import type { Queryable, QueryResult } from './executor.ts'
import type { Naming } from './naming.ts'
import { PgServer } from './pg-server.ts'
import { PgliteServer } from './pglite-server.ts'
import { TIER_STRATEGIES, type MigrationTarget, type TierContext } from './tiers/index.ts'
import type { TenantRunner } from './tenant-handle.ts'
import { tenantToken } from './tenant-token.ts'

export interface DataPlaneOptions {
  naming: Naming
  pooledSchema: string
  appPassword?: string
  connectionBudget: number
  acquireTimeoutMs: number
  idleTimeoutMs: number
  maxUsesPerConnection: number
  maxSchemasPerConnection: number
  transactionPooler: boolean
}

/**
 * What the data plane asks of the noisy-neighbour guard (`guard/`), a port so that `data/` does
 * not depend on it: a tenant's budget (connection share, fair-share weight, statement timeout),
 * and a wrapper around each unit of tenant work (circuit breakers, rejection counting).
 */
export interface DataPlaneGuard {
  budgetOf(tenant: Tenant): TenantBudget | undefined
  /** The statement budget of a tenant whose plan sets none (the defaults'): connections hold it for their session. */
  readonly defaultStatementTimeoutMs: number | null
  /** `database` is null for the server's main database (pooled and schema tenants). */
  protect<T>(tenant: Tenant, server: string, database: string | null, work: () => Promise<T>): Promise<T>
}

/**
 * What the data plane tells observability (`observe/`) of each tenant statement, a port like the
 * guard's: it is called before the statement is sent, and follows its answer.
 */
export interface DataPlaneObserver {
  beginStatement(tenant: Tenant, server: string, database: string, text: string): StatementWatch
}

/**
 * One statement in flight: `watch` resolves and rejects as the statement does; with `recover`, a
 * rejection goes on to `recover` (the data plane's wait behind a move's fence) in the same step,
 * so an observed statement costs one derived promise, as an unobserved one does.
 */
export interface StatementWatch {
  watch<R>(p: Promise<QueryResult<R>>, recover?: (err: unknown) => Promise<QueryResult<R>>): Promise<QueryResult<R>>
}

/**
 * The one place that talks to PostgreSQL: a driver per server of the fleet, and the translation of
 * a tenant into a session target through its tier.
 *
 * @example
 * ```ts
 * const rows = await dataPlane.run(tenant, 'SELECT * FROM projects', [])
 * ```
 */
export class DataPlane implements TenantRunner {
  readonly opts: DataPlaneOptions
  private readonly drivers = new Map<string, ServerDriver>()
  private readonly servers = new Map<string, Server>()
  // Tenants from the catalog are frozen objects replaced on every change, so a WeakMap keyed by
  // the object is an exact cache of the session target.
  private readonly targets = new WeakMap<Tenant, SessionTarget>()
  private guard?: DataPlaneGuard
  private observer?: DataPlaneObserver
  private relocate?: (tenantId: string) => Promise<Tenant | null>
  private closed = false
  private lookupServer?: (name: string) => Promise<Server | null>
  // One registration of a name at a time (addServer's check, a discovery): never two drivers,
  // never two PGlite instances on one data directory. The tail of each name's chain.
  private readonly registering = new Map<string, Promise<unknown>>()
  // Discoveries under way: concurrent requests for one unknown server share one catalog lookup.
  private readonly discovering = new Map<string, Promise<ServerDriver>>()

  /** How long a write fenced by a move waits for the tenant's new placement (ms). */
  fenceWaitMs = 60_000

  /** The installation's key (from the catalog): signs tenant settings, bootstraps databases. */
  tenantKey = ''

  constructor(opts: DataPlaneOptions) {
    this.opts = opts
  }

  /** Put tenant statements under a guard (budgets, circuit breakers); `undefined` removes it. */
  useGuard(guard: DataPlaneGuard | undefined): void {
    this.guard = guard
    for (const d of this.drivers.values()) d.useSessionStatementTimeout?.(guard?.defaultStatementTimeoutMs ?? null)
  }

  /** Report tenant statements to observability (metering, metrics, spans); `undefined` stops it. */
  useObserver(observer: DataPlaneObserver | undefined): void {
    this.observer = observer
  }

  /**
   * Where a tenant is now, read past any cache: a write a move fenced (SQLSTATE `TM001`, see
   * src/moves/) waits, asks this, and runs again at the tenant's placement then.
   */
  useRelocator(relocate: ((tenantId: string) => Promise<Tenant | null>) | undefined): void {
    this.relocate = relocate
  }

  /**
   * Where a server this process does not know is looked up (the catalog): a statement for a
   * tenant on an unregistered server registers it from there once, then runs.
   */
  useServerLookup(lookup: ((name: string) => Promise<Server | null>) | undefined): void {
    this.lookupServer = lookup
  }

  /**
   * The driver of a server, registering it from the catalog when this process does not know it
   * yet (another process added it): one lookup per name however many ask at once, after any
   * {@link connectServer} of the name in flight. A name the catalog does not hold is
   * `SERVER_NOT_FOUND`; a failed lookup is not remembered, so the next call looks again.
   */
  ensureServer(name: string): Promise<ServerDriver> {
    const known = this.drivers.get(name)
    if (known) return Promise.resolve(known)
    let p = this.discovering.get(name)
    if (!p) {
      p = this.exclusive(name, async () => {
        const registered = this.drivers.get(name)
        if (registered || !this.lookupServer) return registered ?? this.driver(name)
        const server = await this.lookupServer(name).catch((err: unknown) => {
          if (err instanceof TenantryError) throw err
          throw new TenantryError('CATALOG_UNAVAILABLE', `Server '${name}' is not registered in this process yet and the catalog could not be read to register it: ${String((err as Error)?.message ?? err).split('\n')[0]}. Retry shortly.`, { cause: err, retryAfter: 5 })
        })
        if (!server || this.closed) return this.driver(name)
        // Registered meanwhile (a synchronous addServer at start-up): keep that driver.
        return this.drivers.get(name) ?? this.register(server, this.createDriver(server))
      })
      const mine = p
      this.discovering.set(name, mine)
      mine.then(() => this.discovering.delete(name), () => this.discovering.delete(name))
    }
    return p
  }

  /**
   * Register every server of `names` (the catalog's list) this process does not know yet, before
   * work that walks or chooses among the fleet's servers (a fleet migration, a placement).
   */
  async ensureServers(names: string[]): Promise<void> {
    await Promise.all(names.filter((n) => !this.drivers.has(n)).map((n) => this.ensureServer(n)))
  }

  /** Run `fn` once every earlier registration of `name` has settled. */
  private exclusive<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const before = this.registering.get(name)
    const p = before ? before.then(fn, fn) : fn()
    const tail = p.catch(() => undefined)
    this.registering.set(name, tail)
    tail.then(() => { if (this.registering.get(name) === tail) this.registering.delete(name) })
    return p
  }

  /** Register (or re-register) a server of the fleet. */
  addServer(server: Server): ServerDriver {
    const existing = this.drivers.get(server.name)
    if (existing && this.servers.get(server.name)?.url === server.url) return existing
    if (existing) existing.close().catch(() => undefined)
    return this.register(server, this.createDriver(server))
  }

  /**
   * Register a server only once `check` succeeded on its new driver (reachable, bootstrapped):
   * when it fails, the driver is closed, nothing is registered and the error is thrown. A name
   * registered meanwhile with the same URL keeps its driver.
   */
  connectServer(server: Server, check: (driver: ServerDriver) => Promise<void>): Promise<ServerDriver> {
    return this.exclusive(server.name, () => this.connectNow(server, check))
  }

  private async connectNow(server: Server, check: (driver: ServerDriver) => Promise<void>): Promise<ServerDriver> {
    const existing = this.drivers.get(server.name)
    if (existing && this.servers.get(server.name)?.url === server.url) {
      // Registered already (a discovery came first): checked on its own driver, never a second one.
      await check(existing)
      return existing
    }
    let driver: ServerDriver | undefined
    try {
      driver = this.createDriver(server)
      await check(driver)
    } catch (err) {
      await driver?.close().catch(() => undefined)
      throw err
    }
    // Calls of one name run one at a time (exclusive), and addServer keeps a same-URL driver.
    const now = this.drivers.get(server.name)
    if (now && this.servers.get(server.name)?.url === server.url) {
      await driver.close().catch(() => undefined)
      return now
    }
    if (now) now.close().catch(() => undefined)
    return this.register(server, driver)
  }

  private createDriver(server: Server): ServerDriver {
    return server.url.startsWith('pglite:')
      ? new PgliteServer({ name: server.name, dataDir: server.url.slice('pglite:'.length), mainDatabase: server.mainDatabase })
      : new PgServer({
          name: server.name,
          url: server.url,
          appUser: this.opts.naming.appRole,
          appPassword: this.opts.appPassword,
          budget: this.opts.connectionBudget,
          acquireTimeoutMs: this.opts.acquireTimeoutMs,
          idleTimeoutMs: this.opts.idleTimeoutMs,
          maxUses: this.opts.maxUsesPerConnection,
          maxSchemas: this.opts.maxSchemasPerConnection,
          transactionPooler: this.opts.transactionPooler,
        })
  }

  private register(server: Server, driver: ServerDriver): ServerDriver {
    driver.useSessionStatementTimeout?.(this.guard?.defaultStatementTimeoutMs ?? null)
    this.drivers.set(server.name, driver)
    this.servers.set(server.name, server)
    return driver
  }

  driver(name: string): ServerDriver {
    const d = this.drivers.get(name)
    if (!d) throw serverNotFound(name)
    return d
  }

  server(name: string): Server {
    const s = this.servers.get(name)
    if (!s) throw serverNotFound(name)
    return s
  }

  serverNames(): string[] {
    return [...this.servers.keys()]
  }

  tierContext(serverName: string): TierContext {
    return { naming: this.opts.naming, tenantKey: this.tenantKey, driver: this.driver(serverName), server: this.server(serverName), pooledSchema: this.opts.pooledSchema }
  }

  /** The session target of a tenant (how its connection is pointed). */
  target(tenant: Tenant): SessionTarget {
    let t = this.targets.get(tenant)
    if (!t) {
      if (!this.tenantKey) throw new TenantryError('INTERNAL', 'The data plane has no tenant key: createTenantry() sets it from the catalog.')
      t = { ...TIER_STRATEGIES[tenant.tier].session(tenant, this.opts.naming, this.opts.pooledSchema), tenantToken: tenantToken(this.tenantKey, tenant.id) }
      this.targets.set(tenant, t)
    }
    return t
  }

  /** The pooled migration target of a server. */
  pooledTarget(serverName: string): MigrationTarget {
    const server = this.server(serverName)
    return {
      server: server.name,
      database: server.mainDatabase,
      schema: this.opts.pooledSchema,
      role: this.opts.naming.appRole,
      label: `${server.name}/${this.opts.pooledSchema}`,
    }
  }

  /** The migration target a tenant's statements run against. */
  migrationTarget(tenant: Tenant): MigrationTarget {
    return TIER_STRATEGIES[tenant.tier].ownTarget(tenant, this.opts.naming) ?? this.pooledTarget(tenant.placement.server)
  }

  run<R>(tenant: Tenant, text: string, values: unknown[]): Promise<QueryResult<R>> {
    return this.runOnce<R>(tenant, text, values, (err) => this.afterFence(err, tenant, Date.now(), (t) => this.runOnce<R>(t, text, values)))
  }

  /**
   * A write refused by a move's fence waits (it does not fail): the tenant is looked up again
   * until its placement changes or the fence comes off, and the work runs there, within
   * {@link fenceWaitMs}.
   */
  private async afterFence<T>(err: unknown, tenant: Tenant, since: number, again: (t: Tenant) => Promise<T>): Promise<T> {
    if (!this.relocate) throw err
    if (!isFenced(err)) {
      // A statement sent to a room a finished move just removed (or whose connection the removal's
      // DROP DATABASE … FORCE cut): run it where the tenant is now. A write cannot have committed
      // there: the old room was fenced before the switch.
      if (!isRoomGone(err) && (err as { code?: unknown })?.code !== 'TENANT_UNAVAILABLE') throw err
      const now = await this.relocate(tenant.id).catch(() => null)
      if (!now || samePlace(now, tenant)) throw err
      return again(now)
    }
    let delay = 10
    for (;;) {
      if (Date.now() - since > this.fenceWaitMs) {
        throw new TenantryError('TENANT_NOT_READY', `Tenant '${tenant.slug}' is moving and its writes waited ${this.fenceWaitMs} ms; retry shortly.`, { cause: err, retryAfter: 5 })
      }
      await new Promise((r) => setTimeout(r, delay))
      delay = Math.min(delay * 2, 100)
      const now = (await this.relocate(tenant.id)) ?? tenant
      try {
        return await again(now)
      } catch (e) {
        // The move switched and removed the old room between the look-up and the retry: look again.
        if (!isFenced(e) && !(isRoomGone(e) && !samePlace((await this.relocate(tenant.id)) ?? now, now))) throw e
        err = e
      }
    }
  }

  /** One attempt; a rejection goes to `recover` when given (one `.then`/`.catch` per statement, observed or not). */
  private runOnce<R>(tenant: Tenant, text: string, values: unknown[], recover?: (err: unknown) => Promise<QueryResult<R>>): Promise<QueryResult<R>> {
    const driver = this.drivers.get(tenant.placement.server)
    if (driver === undefined) return this.ensureServer(tenant.placement.server).then(() => this.runOnce(tenant, text, values, recover))
    const target = this.target(tenant)
    const watch = this.observer?.beginStatement(tenant, driver.server, target.database, text)
    const guard = this.guard
    let p: Promise<QueryResult<R>>
    if (!guard) p = driver.tenantQuery<R>(target, text, values)
    else {
      const budget = guard.budgetOf(tenant)
      p = guard.protect(tenant, driver.server, this.ownDatabase(tenant, target), () => driver.tenantQuery<R>(target, text, values, budget))
    }
    if (watch !== undefined) return watch.watch(p, recover)
    return recover === undefined ? p : p.catch(recover)
  }

  transaction<T>(tenant: Tenant, fn: (tx: Queryable) => Promise<T>): Promise<T> {
    // A fenced transaction rolled back whole; it is run again, like a serialization failure.
    return this.transactionOnce(tenant, fn).catch((err) => this.afterFence(err, tenant, Date.now(), (t) => this.transactionOnce(t, fn)))
  }

  private transactionOnce<T>(tenant: Tenant, fn: (tx: Queryable) => Promise<T>): Promise<T> {
    const driver = this.drivers.get(tenant.placement.server)
    if (driver === undefined) return this.ensureServer(tenant.placement.server).then(() => this.transactionOnce(tenant, fn))
    const target = this.target(tenant)
    const observer = this.observer
    // Each statement of the transaction is reported on its own (metering counts statements).
    const body = observer === undefined ? fn : (tx: Queryable) => fn({
      query: <R>(text: string, values?: unknown[]) => observer.beginStatement(tenant, driver.server, target.database, text).watch(tx.query<R>(text, values)),
    })
    const guard = this.guard
    if (!guard) return driver.tenantTransaction(target, body)
    const budget = guard.budgetOf(tenant)
    return guard.protect(tenant, driver.server, this.ownDatabase(tenant, target), () => driver.tenantTransaction(target, body, budget))
  }

  /** The tenant's own database, or null when it lives in its server's main database. */
  private ownDatabase(tenant: Tenant, target: SessionTarget): string | null {
    return target.database === this.servers.get(tenant.placement.server)?.mainDatabase ? null : target.database
  }

  stats(): Record<string, ReturnType<ServerDriver['stats']>> {
    return Object.fromEntries([...this.drivers].map(([name, d]) => [name, d.stats()]))
  }

  async close(): Promise<void> {
    this.closed = true
    const all = [...this.drivers.values()]
    this.drivers.clear()
    this.servers.clear()
    await Promise.all(all.map((d) => d.close()))
  }
}

function serverNotFound(name: string): TenantryError {
  return new TenantryError('SERVER_NOT_FOUND', `Server '${name}' is not registered in this process. Add it with 'tenantry servers add ${name} <url>' or tenantry.addServer(); a server another process added is registered here when this process hears of it or first serves one of its tenants.`)
}

/** A database, schema or tenant role that does not exist (3D000, 3F000; 42P01 for a search_path without it; 42704/22023 for its role, by SET ROLE or set_config): a moved tenant's old room, removed. */
function isRoomGone(err: unknown): boolean {
  for (let e = err as { code?: unknown; cause?: unknown; message?: unknown } | undefined, i = 0; e && i < 4; e = e.cause as typeof e, i++) {
    if (e.code === '3D000' || e.code === '3F000' || e.code === '42P01') return true
    if ((e.code === '42704' || e.code === '22023') && /^role "[^"]*" does not exist/.test(String(e.message))) return true
  }
  return false
}

function samePlace(a: Tenant, b: Tenant): boolean {
  return a.placement.server === b.placement.server && a.placement.database === b.placement.database && a.placement.schema === b.placement.schema
}

/** The SQLSTATE of a write refused by a move's fence (src/moves/sql.ts), whatever wraps it. */
function isFenced(err: unknown): boolean {
  for (let e = err as { code?: unknown; cause?: unknown } | undefined, i = 0; e && i < 4; e = e.cause as typeof e, i++) {
    if (e.code === 'TM001') return true
  }
  return false
}
