import { resolve as resolvePath } from 'node:path'
import { createAuditLog, type AuditActor, type AuditLog } from './audit/index.ts'
import { Catalog } from './catalog/catalog.ts'
import { withTenant as runWithTenant, currentTenant } from './context/context.ts'
import { TenantryError } from './core/errors.ts'
import type { Server, Tenant, TenantStatus } from './core/types.ts'
import { isUuid, printable, redactUrl } from './core/validation.ts'
import { DataPlane } from './data/data-plane.ts'
import { naming as makeNaming } from './data/naming.ts'
import { bootstrapDatabaseSql, ensureAppRoleSql } from './data/sql.ts'
import { TenantHandle } from './data/tenant-handle.ts'
import { TIER_STRATEGIES } from './data/tiers/index.ts'
import { inspectDatabase, type Finding } from './doctor/index.ts'
import { createGuard, type Guard, type GuardOptions } from './guard/index.ts'
import { TenantryEvents } from './lifecycle/events.ts'
import { FleetMigrator, type FleetMigrateOptions, type FleetMigrateResult, type PlannedTarget } from './lifecycle/fleet-migrate.ts'
import { Lifecycle, type ProvisionHook, type PurgeResult } from './lifecycle/lifecycle.ts'
import { loadMigrations, type MigrationFile } from './lifecycle/migrator.ts'
import { Operations, type Operation, type OperationTarget } from './lifecycle/operations.ts'
import { auditOperations } from './lifecycle/operation-audit.ts'
import type { ProvisionOptions } from './lifecycle/provision.ts'
import type { RequestInfo, ResolveStrategy } from './resolve/index.ts'
import { TenantResolver, header } from './resolve/index.ts'
import type { Logger } from 'pino'
import { checkObserveOptions, createObservability, resolveMetering, type Observability, type ObserveOptions } from './observe/observability.ts'
import { createUsageService } from './observe/usage-service.ts'
import { createCache, type CacheOptions, type TenantCache } from './cache/index.ts'
import { createJobs, type JobsOptions, type TenantJobs } from './jobs/index.ts'
import { createStorage, s3Access, type StorageOptions, type TenantStorage } from './storage/index.ts'
import type { Advice, AdviseOptions, TopQuery, TopRow, UsageQuery, UsageRow } from './observe/types.ts'
import { checkConfigOptions, createConfig, type ConfigOptions, type ConfigParts, type PluginCore } from './config/index.ts'
import { createPortability, resolveMasterKey, type Portability, type PortabilityOptions } from './portability/index.ts'
import { needsCredentials } from './resolve/credential-strategies.ts'
import { createPropagation, unconfiguredPropagation, type PropagationOptions, type TenantPropagation } from './context/propagation.ts'
import { TenantCredentials, type ApiKeys, type Certificates } from './security/index.ts'
import { createFleet, type AddServerOptions, type Fleet } from './fleet/index.ts'
import { createMoves, type MoveOptions, type MoveResult, type Moves, type MovesOptions } from './moves/index.ts'

/**
 * Options of {@link createTenantry}. Everything has a default: with none, Tenantry runs embedded
 * (PGlite in `.tenantry/`) and resolves tenants from an `x-tenant` header.
 */
export interface TenantryOptions {
  /** Admin URL of the main server (holds the catalog). Default: `DATABASE_URL` unless `dataDir` is given; without either, embedded PGlite. */
  databaseUrl?: string
  /** Embedded data directory, or `memory`. Default: `TENANTRY_DATA_DIR`, else `.tenantry`. */
  dataDir?: string
  /** Directory of the app's migrations (`NNNN_name.sql`), the same for every tier. */
  migrations?: string
  /** Prefix of the roles and databases Tenantry creates (cluster-wide names). Default `tenantry`. */
  rolePrefix?: string
  /** Schema of the pooled tables. Default `public`. */
  pooledSchema?: string
  /** Password of the app login role. Default: `TENANTRY_APP_PASSWORD`, else none (trust/peer auth). */
  appPassword?: string
  /** Resolve strategies, tried in order. Default: `[header()]`. */
  resolve?: ResolveStrategy[]
  /** Most connections the data plane opens to one server, all databases together. Default 20. */
  connectionBudget?: number
  /** How long a statement waits for a connection. Default 5000 ms. */
  acquireTimeoutMs?: number
  /** Idle connections are closed after this. Default 30000 ms. */
  idleTimeoutMs?: number
  /** A connection is recycled after this many statements. Default 100000. */
  maxUsesPerConnection?: number
  /**
   * A connection is recycled once it has served this many distinct schemas: this bounds the
   * catalog cache (memory) its backend accumulates over schema-tier tenants. Default 100.
   */
  maxSchemasPerConnection?: number
  /** Set when a transaction-mode pooler (PgBouncer, RDS Proxy) sits in front of PostgreSQL. */
  transactionPooler?: boolean
  /** Backstop expiry of the catalog cache; notifications clear it sooner. Default 60000 ms. */
  cacheTtlMs?: number
  /**
   * Noisy-neighbour guards: rate limits, in-flight and connection shares, statement budgets and
   * circuit breakers, from plans (see docs/guards.md). On by default with no rate limits.
   */
  guard?: GuardOptions
  /** Steps run at the end of every provisioning, inside the new tenant's context (seed data…). Must be idempotent: a resumed provision runs them again. */
  onProvision?: ProvisionHook[]
  /** Days a deleted tenant's data is kept before `purge` may remove it without `force`. Default 30. */
  retentionDays?: number
  /** Take over and finish operations whose process died, at start-up. Default true. */
  resumeOperations?: boolean
  /**
   * Logs, metrics, traces and usage metering (docs/observability.md). Each part is on by default
   * and `false` turns it off: `{ logger: pino(), metrics: { topK: 50 }, tracing: false, metering: { intervalMs: 60_000 } }`.
   */
  observe?: ObserveOptions
  /** The tenant cache (docs/resources.md): Redis from `redis` or `REDIS_URL`, else an in-memory LRU. */
  cache?: CacheOptions
  /** Background jobs on pg-boss in the catalog database, started on first use (docs/resources.md). */
  jobs?: JobsOptions
  /** Object storage per tenant with quotas: local files under the data directory, or S3 (docs/resources.md). */
  storage?: StorageOptions
  /** Per-tenant configuration: the app's schema and defaults, custom-domain verification (docs/config.md). */
  config?: ConfigOptions
  /** Plugins, enabled per plan or tenant by `config.plugins.<name>.enabled` (docs/plugins.md). */
  plugins?: PluginCore[]
  /** Backup, restore and erasure (docs/portability.md): the master key of archive encryption and the default backup directory. */
  portability?: PortabilityOptions
  /** Service-to-service tenant propagation: this service's name and its private signing JWK (docs/security.md). */
  propagation?: PropagationOptions
  /** Moves between tiers and servers (docs/moves.md): how long a moved tenant's old room is kept for rollback. */
  moves?: MovesOptions
}

/**
 * The Tenantry runtime: the catalog, the data plane, resolution and the tenant-scoped handles.
 * Created with {@link createTenantry}.
 */
export interface Tenantry {
  readonly catalog: Catalog
  /**
   * The ambient handle: runs against the tenant of the current context (a resolved request or
   * `withTenant`) and throws `TENANT_CONTEXT_MISSING` outside one.
   */
  readonly db: TenantHandle
  readonly resolver: TenantResolver
  readonly dataPlane: DataPlane
  /** Noisy-neighbour protection: admission of requests, limits per plan, rejection counts. */
  readonly guard: Guard
  /** Cache scoped to the current tenant (`get`/`set`/`delete`/`wrap`, `flushTenant` in O(1)). */
  readonly cache: TenantCache
  /** Background jobs that run in the tenant that sent them (`send`/`work`/`schedule`). */
  readonly jobs: TenantJobs
  /** Object storage under the current tenant's prefix (`put`/`get`/`head`/`list`/`delete`, presigned URLs, quotas). */
  readonly storage: TenantStorage
  readonly migrationFiles: MigrationFile[]
  /** The tenant a request names, or a coded error (400/403/404/503). */
  resolve(req: RequestInfo): Promise<Tenant>
  /** {@link resolve}, or the tenant itself when it is at hand without waiting (cached); never throws. For adapters. */
  resolveNow(req: RequestInfo): Tenant | Promise<Tenant>
  /** A handle bound to one tenant. */
  handle(tenant: Tenant): TenantHandle
  /** Run `fn` as `tenant` (a tenant, slug or id); it must be active. */
  withTenant<T>(tenant: Tenant | string, fn: () => Promise<T>): Promise<T>
  /**
   * Cross-tenant support access: run `fn` as the tenant, only with a reason, and append
   * `support.access` (actor, reason) to the audit log before `fn` runs.
   */
  asTenant<T>(tenant: string, access: { reason: string; actor?: string; requestId?: string }, fn: () => Promise<T>): Promise<T>
  /** Find a tenant by slug or id (`null` when none). */
  findTenant(slugOrId: string): Promise<Tenant | null>
  /** Typed lifecycle events (`tenant.provisioning`/`tenant.provisioned`, …). */
  readonly events: TenantryEvents
  /** Durable operation records (provision, migrate, purge). */
  readonly operations: Operations
  /** The hash-chained audit log of control-plane actions (docs/audit.md). */
  readonly audit: AuditLog
  /** Create a tenant as a durable operation; invalid or taken slugs are refused before anything is written. */
  provision(input: ProvisionOptions, startedBy?: string): Promise<Tenant>
  /** Bring every target of the fleet to the latest migration (see FleetMigrateOptions). */
  migrate(options?: FleetMigrateOptions): Promise<FleetMigrateResult>
  /** Every target in scope and its pending files. */
  planMigrations(options?: Pick<FleetMigrateOptions, 'only' | 'canary'>): Promise<PlannedTarget[]>
  /** Requests get 403 `TENANT_SUSPENDED`. With `by`, the change and its audit entry commit together (the same for resume, delete, restore). */
  suspend(slugOrId: string, reason?: string, by?: AuditActor): Promise<Tenant>
  resume(slugOrId: string, by?: AuditActor): Promise<Tenant>
  /** Soft delete: not served any more, data kept for `retentionDays`. */
  delete(slugOrId: string, by?: AuditActor): Promise<Tenant>
  /** Undo a soft delete (the tenant comes back suspended). */
  restore(slugOrId: string, by?: AuditActor): Promise<Tenant>
  /** Remove a deleted tenant's data and catalog row; before the retention period ends only with `force`. */
  purge(slugOrId: string, opts?: { force?: boolean; startedBy?: string }): Promise<PurgeResult>
  /** Finish operations whose process died; with an id, that one. */
  resumeOperations(id?: string): Promise<Operation[]>
  /** Operations this process took over and finished at start-up (see `resumeOperations` option). */
  readonly resumedAtStartup: Operation[]
  /** The targets of a fleet operation. */
  operationTargets(id: string): Promise<OperationTarget[]>
  /** Set a status as it is (an operator's repair); audited as `tenant.status` (actor `library` without `by`). */
  setStatus(slugOrId: string, status: Exclude<TenantStatus, 'provisioning'>, reason?: string, by?: AuditActor): Promise<Tenant>
  /** Add a custom domain that resolves at once (an operator's own domains). Tenants' domains go through {@link Tenantry.domains}: pending until verified. */
  addDomain(slugOrId: string, domain: string, by?: AuditActor): Promise<void>
  /** The current tenant's merged configuration (`tenantry.config()`), and reading, changing, versioning it (docs/config.md). */
  readonly config: ConfigParts['config']
  /** Feature flags: `isEnabled`, `evaluate`, `set`, `rollout`, and the OpenFeature `provider` (docs/flags.md). */
  readonly flags: ConfigParts['flags']
  /** Custom domains of tenants: `add` (pending, with a token), `verify`, `remove`, `list` (docs/domains.md). */
  readonly domains: ConfigParts['domains']
  /** The plugins given to createTenantry, and which tenants have them (docs/plugins.md). */
  readonly plugins: ConfigParts['plugins']
  /** Add a PostgreSQL server to the fleet: checked first (valid, reachable), registered only then; a taken name with another URL is a CONFLICT (see {@link Fleet.addServer}). */
  addServer(server: AddServerOptions, by?: AuditActor): Promise<Server>
  /** Check every target of every server against invariants 1–2. */
  doctor(): Promise<{ findings: Finding[]; tables: number }>
  /** Logs, metrics, spans and the usage meter (docs/observability.md). */
  readonly observe: Observability
  /** The logger Tenantry writes its events to; inside a tenant context its lines carry the tenant and request id. */
  readonly logger: Logger
  /** Metered usage from the catalog, per tenant and bucket (docs/usage.md). Lags by up to one metering interval. */
  usage(query?: UsageQuery): Promise<UsageRow[]>
  /** The top tenants of a period by requests, database time or storage (like Citus' `citus_stat_tenants`). */
  top(query?: TopQuery): Promise<TopRow[]>
  /** Placement advice from usage: tenants that outgrew their tier, idle dedicated tenants, servers out of balance. */
  advise(options?: AdviseOptions): Promise<Advice[]>
  /** Per-tenant backup and restore in every tier, and verified erasure (docs/portability.md). */
  readonly portability: Portability
  /** Per-tenant API keys: create (shown once), list, revoke (docs/security.md). */
  readonly apiKeys: ApiKeys
  /** Client certificates bound to tenants for mutual TLS: add, list, revoke (docs/security.md). */
  readonly certificates: Certificates
  /** Signed tenant assertions for outgoing service calls: `headers(audience)`, `fetch`, `jwks()` (docs/security.md). */
  readonly propagation: TenantPropagation
  /** Online moves between tiers and servers, rollback and cleanup (docs/moves.md). */
  readonly moves: Moves
  /** Move a tenant to another tier and/or server (a durable operation; see {@link Moves.move}). */
  move(slugOrId: string, options: MoveOptions): Promise<MoveResult>
  /** Write this process's metered usage to the catalog now (it is written every interval anyway). */
  flushUsage(): Promise<void>
  close(): Promise<void>
}

/**
 * Create the Tenantry runtime: opens the catalog (creating it on first use), registers the fleet's
 * servers and reads the app's migrations. The one place concrete parts are put together.
 *
 * @example
 * ```ts
 * const tenantry = await createTenantry({
 *   migrations: './migrations',
 *   resolve: [subdomain({ baseDomain: 'example.com' }), header()],
 * })
 * const acme = await tenantry.provision({ slug: 'acme', tier: 'schema' })
 * await tenantry.withTenant('acme', () => tenantry.db.query('SELECT * FROM projects'))
 * ```
 */
export async function createTenantry(options: TenantryOptions = {}): Promise<Tenantry> {
  // Refused before anything is opened.
  checkObserveOptions(options.observe ?? {})
  checkConfigOptions(options.config, options.plugins)
  resolveMasterKey(options.portability?.masterKey)
  const propagation = options.propagation ? await createPropagation(options.propagation) : unconfiguredPropagation()
  // An explicit dataDir means embedded, whatever DATABASE_URL the environment has.
  const databaseUrl = options.databaseUrl ?? (options.dataDir === undefined ? process.env.DATABASE_URL : undefined) ?? undefined
  const naming = makeNaming(options.rolePrefix ?? 'tenantry')
  const pooledSchema = options.pooledSchema ?? 'public'
  const appPassword = options.appPassword ?? process.env.TENANTRY_APP_PASSWORD ?? undefined
  const dataPlane = new DataPlane({
    naming,
    pooledSchema,
    appPassword,
    connectionBudget: options.connectionBudget ?? 20,
    acquireTimeoutMs: options.acquireTimeoutMs ?? 5000,
    idleTimeoutMs: options.idleTimeoutMs ?? 30_000,
    maxUsesPerConnection: options.maxUsesPerConnection ?? 100_000,
    maxSchemasPerConnection: options.maxSchemasPerConnection ?? 100,
    transactionPooler: options.transactionPooler ?? false,
  })

  const main: Server = databaseUrl
    ? { name: 'main', url: databaseUrl, region: null, capacityWeight: 1, mainDatabase: databaseFromUrl(databaseUrl) }
    : {
        name: 'main',
        url: `pglite:${dataDirOf(options.dataDir)}`,
        region: null,
        capacityWeight: 1,
        mainDatabase: 'main',
      }
  const mainDriver = dataPlane.addServer(main)
  const files = options.migrations ? loadMigrations(options.migrations) : []

  let catalog: Catalog
  let guard: Guard
  try {
    catalog = new Catalog({
      admin: mainDriver.admin(main.mainDatabase),
      listen: (channel, onMessage, onReconnect) => mainDriver.listen(channel, onMessage, onReconnect),
      cacheTtlMs: options.cacheTtlMs,
    })
    await catalog.init()
    dataPlane.tenantKey = catalog.tenantKey
    await bootstrapServer(main)
    const known = await catalog.listServers()
    const stored = known.find((s) => s.name === 'main')
    if (!stored || stored.url !== main.url || stored.mainDatabase !== main.mainDatabase) await catalog.upsertServer(main)
    for (const s of known) if (s.name !== 'main') dataPlane.addServer(s)
    guard = await createGuard(options.guard, { plans: () => catalog.listPlans() })
    dataPlane.useGuard(guard.enabled ? guard : undefined)
  } catch (err) {
    // The catalog may already be listening: a plan with invalid limits fails the guard after it.
    await (catalog! as Catalog | undefined)?.close().catch(() => undefined)
    await dataPlane.close().catch(() => undefined)
    if (err instanceof TenantryError) throw err
    const where = main.url.startsWith('pglite:') ? main.url : redactUrl(main.url)
    throw new TenantryError(
      'CATALOG_UNAVAILABLE',
      `Cannot open the catalog on ${where}: ${String((err as Error)?.message ?? err).split('\n')[0]}. Check DATABASE_URL and that the server is running.`,
      { cause: err },
    )
  }

  async function bootstrapServer(server: Server, driver = dataPlane.driver(server.name)): Promise<void> {
    const admin = driver.admin(server.mainDatabase)
    await admin.transaction(async (tx) => {
      await tx.exec(bootstrapDatabaseSql(dataPlane.tenantKey))
      await tx.exec(ensureAppRoleSql(naming.appRole, appPassword))
    })
  }

  const events = new TenantryEvents()
  const operations = new Operations(mainDriver.admin(main.mainDatabase))
  const audit = await createAuditLog(mainDriver.admin(main.mainDatabase))
  operations.auditor = auditOperations(audit)
  const backupS3 = s3Access(options.portability?.s3 ?? options.storage?.s3?.client)
  const portability = await createPortability({ catalog, dataPlane, operations, files, admin: mainDriver.admin(main.mainDatabase), options: options.portability ?? {}, audit, objectStore: { removeTenant: (t) => storage.removeTenant(t), hasObjects: (t) => storage.hasObjects(t) }, s3: backupS3 })
  const moves = await createMoves({ catalog, dataPlane, operations, files, audit, admin: mainDriver.admin(main.mainDatabase), flushCache: (t) => cache.flushTenant(t), options: options.moves ?? {} })
  dataPlane.useRelocator((id) => catalog.fresh(id))
  const lifecycle = new Lifecycle({
    catalog, dataPlane, operations, files, events,
    hooks: options.onProvision ?? [],
    retentionDays: options.retentionDays ?? 30,
    audit,
    resumers: { kinds: [...portability.kinds, ...moves.kinds], resume: (op) => (moves.kinds.includes(op.kind) ? moves : portability).resume(op) },
  })
  const servers = createFleet({
    catalog, dataPlane, audit, bootstrap: (driver, server) => bootstrapServer(server, driver),
    onError: (error, context) => events.emit('error', { error: error as Error, context }),
  })
  const fleet = new FleetMigrator({ catalog, dataPlane, operations, files, events })
  const observe = await openObservability(options.observe ?? {}, { catalog, dataPlane, guard, events, operations, admin: mainDriver.admin(main.mainDatabase), objectBytes: () => storage.storedBytes() })
  const cache = await createCache(options.cache, {
    events, findTenant, registry: observe.metrics?.registry,
    onCatalogChange: (l) => catalog.onChange(l), tenantsOnPlan: async (plan) => (await catalog.list()).filter((t) => t.plan === plan),
  })
  const jobs = createJobs(options.jobs, {
    admin: mainDriver.admin(main.mainDatabase), url: main.url, tenantKey: () => catalog.tenantKey,
    findTenant, withTenant: (t, fn) => tenantry.withTenant(t, fn), events,
  })
  const storage = createStorage(options.storage, {
    admin: mainDriver.admin(main.mainDatabase), events, plans: () => catalog.listPlans(), findTenant,
    dataDir: dataDirOf(options.dataDir), signingKey: () => catalog.tenantKey, audit,
  })
  const credentials = await TenantCredentials.open({ admin: mainDriver.admin(main.mainDatabase), catalog, audit, cacheTtlMs: options.cacheTtlMs })
  for (const s of options.resolve ?? []) if (needsCredentials(s)) s.useCredentials(credentials)
  const resolver = new TenantResolver({ strategies: options.resolve ?? [header()], lookup: catalog })
  const configParts = await openConfig(options.config, { catalog, guard, events, plugins: options.plugins, admin: mainDriver.admin(main.mainDatabase), audit, fleet, lifecycle, moves, portability })
  const handles = new WeakMap<Tenant, TenantHandle>()

  async function findTenant(slugOrId: string): Promise<Tenant | null> {
    if (typeof slugOrId !== 'string') return null
    return isUuid(slugOrId) ? catalog.byId(slugOrId) : catalog.bySlug(slugOrId)
  }

  async function mustFind(slugOrId: string): Promise<Tenant> {
    const t = await findTenant(slugOrId)
    if (!t) throw new TenantryError('TENANT_NOT_FOUND', `No tenant has the slug or id '${printable(String(slugOrId))}'.`)
    return t
  }

  const tenantry: Tenantry = {
    catalog,
    dataPlane,
    guard,
    cache,
    jobs,
    storage,
    resolver,
    migrationFiles: files,
    db: new TenantHandle(dataPlane, currentTenant),
    resolve: (req) => resolver.resolve(req),
    resolveNow: (req) => resolver.resolveNow(req),
    handle(tenant) {
      let h = handles.get(tenant)
      if (!h) handles.set(tenant, (h = new TenantHandle(dataPlane, tenant)))
      return h
    },
    findTenant,
    async withTenant(tenantOrSlug, fn) {
      const tenant = typeof tenantOrSlug === 'string' ? await mustFind(tenantOrSlug) : tenantOrSlug
      if (tenant.status !== 'active') {
        throw new TenantryError(
          tenant.status === 'suspended' ? 'TENANT_SUSPENDED' : tenant.status === 'deleted' ? 'TENANT_NOT_FOUND' : 'TENANT_NOT_READY',
          `Tenant '${tenant.slug}' is ${tenant.status}${tenant.statusReason ? `: ${tenant.statusReason}` : ''}.`,
        )
      }
      return runWithTenant(tenant, fn)
    },
    async asTenant(slugOrId, access, fn) {
      const reason = typeof access?.reason === 'string' ? access.reason.trim() : ''
      if (reason.length < 3 || reason.length > 500) {
        throw new TenantryError('VALIDATION_FAILED', 'Support access to a tenant needs a reason of 3 to 500 characters (a ticket number and why); it is audited.', { details: { field: 'reason' } })
      }
      const tenant = await mustFind(slugOrId)
      await audit.append({
        actor: access.actor ?? 'library', action: 'support.access', tenantId: tenant.id, slug: tenant.slug, requestId: access.requestId ?? null, details: { reason },
      })
      return tenantry.withTenant(tenant, fn)
    },
    events,
    operations,
    audit,
    provision: (input, startedBy) => lifecycle.provision(input, startedBy),
    migrate: (opts) => fleet.run(opts),
    planMigrations: (opts) => fleet.plan(opts),
    suspend: (t, reason, by) => lifecycle.suspend(t, reason, by),
    resume: (t, by) => lifecycle.resume(t, by),
    delete: (t, by) => lifecycle.delete(t, by),
    restore: (t, by) => lifecycle.restore(t, by),
    purge: (t, opts) => lifecycle.purge(t, opts),
    async resumeOperations(id) {
      return id === undefined ? lifecycle.resumeOrphans() : [await lifecycle.resumeOperationById(id)]
    },
    operationTargets: (id) => operations.targets(id),
    resumedAtStartup: [],
    setStatus: (t, status, reason, by) => lifecycle.setStatus(t, status, reason, by),
    addDomain: (t, domain, by) => lifecycle.addDomain(t, domain, by),
    config: configParts.config,
    flags: configParts.flags,
    domains: configParts.domains,
    plugins: configParts.plugins,
    addServer: (input, by) => servers.addServer(input, by),
    async doctor() {
      const findings: Finding[] = []
      let tables = 0
      const check = async (server: string, database: string, schemas: string[], roles: string[]) => {
        const r = await inspectDatabase(dataPlane.driver(server).admin(database), { schemas, roles, target: `${server}/${database}` })
        findings.push(...r.findings)
        tables += r.tables
      }
      const tenants = (await catalog.list()).filter((t) => t.status !== 'deleted')
      for (const name of dataPlane.serverNames()) {
        const server = dataPlane.server(name)
        const here = tenants.filter((t) => t.placement.server === name)
        const schemaTenants = here.filter((t) => t.tier === 'schema')
        await check(
          name,
          server.mainDatabase,
          [pooledSchema, ...schemaTenants.map((t) => t.placement.schema!)],
          [naming.appRole, ...schemaTenants.map((t) => naming.tenantRole(t.id))],
        )
        for (const t of here.filter((x) => x.tier === 'database')) {
          await check(name, t.placement.database, ['public'], [naming.appRole, naming.tenantRole(t.id)])
        }
      }
      return { findings, tables }
    },
    observe,
    portability,
    apiKeys: credentials.apiKeys,
    certificates: credentials.certificates,
    propagation,
    moves,
    move: (slugOrId, o) => moves.move(slugOrId, o),
    logger: observe.logger,
    usage: (q) => observe.usage.usage(q ?? {}),
    top: (q) => observe.usage.top(q ?? {}),
    advise: (o) => observe.usage.advise(o),
    async flushUsage() {
      await observe.meter?.flush()
    },
    async close() {
      stopAutoPromote()
      await configParts.plugins.migrations?.close()
      // Usage still in memory is written before the catalog's connections close.
      await jobs.close()
      await observe.close()
      await cache.close()
      await storage.close()
      await backupS3.close()
      await credentials.close()
      await guard.close()
      await operations.close()
      await catalog.close()
      await dataPlane.close()
    },
  }
  // The automatic promotion policy (docs/moves.md), off unless `moves.autoPromote` is set.
  const stopAutoPromote = moves.startAutoPromote((o) => observe.usage.advise(o), () => catalog.listServers(), (error) => events.emit('error', { error: error instanceof Error ? error : new Error(String(error)), context: 'automatic promotion' }))
  if (options.resumeOperations !== false) {
    // Operations left running by a process that died (kill -9, a crash, a restarted database)
    // are finished now, so no tenant stays half-provisioned.
    const resumed = await lifecycle.resumeOrphans().catch((error) => {
      events.emit('error', { error, context: 'resuming operations at start-up' })
      return []
    })
    ;(tenantry.resumedAtStartup as Operation[]).push(...resumed)
  }
  return tenantry
}

/**
 * Observability's part of the wiring: the usage store in the catalog, then logs, metrics, spans
 * and the meter, reported to by the data plane, the guard, the adapters and the operations.
 */
async function openObservability(
  options: ObserveOptions,
  deps: { catalog: Catalog; dataPlane: DataPlane; guard: Guard; events: TenantryEvents; operations: Operations; admin: ReturnType<ReturnType<DataPlane['driver']>['admin']>; objectBytes: () => Promise<Map<string, number>> },
): Promise<Observability> {
  const metering = resolveMetering(options.metering)
  const usage = createUsageService({
    admin: deps.admin,
    catalog: deps.catalog,
    dataPlane: deps.dataPlane,
    objectBytes: deps.objectBytes,
    options: metering,
    onError: (error, context) => deps.events.emit('error', { error: error as Error, context }),
  })
  await usage.init()
  const observe = createObservability(options, {
    events: deps.events,
    guard: deps.guard,
    usage,
    pools: () => deps.dataPlane.stats(),
    operations: () => runningOperations(deps.operations),
  }, metering)
  // Statements are reported when anything uses them: metering, metrics, spans, or the log lines
  // of pool timeouts. With every part off the data path does nothing extra.
  if (observe.meter || observe.metrics || observe.tracing || observe.logger.level !== 'silent') deps.dataPlane.useObserver(observe)
  if (observe.tracing) deps.operations.observer = observe
  if (observe.meter) observe.start()
  return observe
}

/**
 * Configuration's part of the wiring; a plan's change also reaches the guard's limits at once
 * (not at its next periodic re-read).
 */
async function openConfig(
  options: ConfigOptions | undefined,
  deps: { catalog: Catalog; guard: Guard; events: TenantryEvents; plugins?: PluginCore[]; admin: ReturnType<ReturnType<DataPlane['driver']>['admin']>; audit: AuditLog; fleet: FleetMigrator; lifecycle: Lifecycle; moves: Awaited<ReturnType<typeof createMoves>>; portability: Portability },
): Promise<ConfigParts> {
  const onError = (error: unknown, context: string) => deps.events.emit('error', { error: error as Error, context })
  const parts = await createConfig(options, { catalog: deps.catalog, admin: deps.admin, events: deps.events, plugins: deps.plugins, onError, audit: deps.audit })
  deps.catalog.onChange((subject) => {
    if (subject.startsWith('plan:') || subject === '*') deps.guard.reloadPlans().catch((e) => onError(e, 'reloading plan limits'))
  })
  // Plugins' own migration sets: with the app's in every fleet run, at provisioning, and when a change enables a plugin.
  const pluginMigrations = parts.pluginMigrations.sets.size > 0 ? parts.pluginMigrations : undefined
  deps.fleet.useExtra(pluginMigrations)
  deps.lifecycle.useExtraMigrations(pluginMigrations)
  deps.moves.useExtraMigrations(pluginMigrations)
  deps.portability.useExtraMigrations(pluginMigrations)
  pluginMigrations?.watch(deps.catalog, deps.fleet, (e) => onError(e, 'applying plugin migrations'))
  return parts
}

/** Running operations and their progress for the metrics (targets finished / all, for fleet operations). */
async function runningOperations(operations: Operations): Promise<{ id: string; kind: string; step: string | null; progress: number | null }[]> {
  const running = await operations.list({ state: 'running', limit: 50 })
  return Promise.all(running.map(async (op) => {
    if (op.kind !== 'migrate') return { id: op.id, kind: op.kind, step: op.step, progress: null }
    const c = await operations.counts(op.id)
    return { id: op.id, kind: op.kind, step: op.step, progress: c.total === 0 ? 1 : (c.done + c.failed + c.skipped) / c.total }
  }))
}

export { redactUrl }

function databaseFromUrl(url: string): string {
  try {
    const name = decodeURIComponent(new URL(url).pathname.slice(1))
    return name || 'postgres'
  } catch {
    throw new TenantryError('CONFIG_INVALID', `DATABASE_URL '${printable(url.replace(/:[^:@/]*@/, ':***@'))}' is not a valid postgres:// URL.`)
  }
}

function dataDirOf(dir: string | undefined): string {
  const d = dir ?? process.env.TENANTRY_DATA_DIR ?? '.tenantry'
  return d === 'memory' ? d : resolvePath(d)
}
