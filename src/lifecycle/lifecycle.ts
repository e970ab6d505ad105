import { auditForcedResidency, checkResidency } from '../security/residency.ts'
import { randomUUID } from 'node:crypto'
import type { AuditActor, AuditLog } from '../audit/index.ts'
import type { Catalog } from '../catalog/catalog.ts'
import { withTenant } from '../context/context.ts'
import { TenantryError } from '../core/errors.ts'
import type { Server, Tenant } from '../core/types.ts'
import { isUuid, printable } from '../core/validation.ts'
import type { DataPlane } from '../data/data-plane.ts'
import type { Queryable } from '../data/executor.ts'
import { TENANT_TABLES_SQL, deleteOrder } from '../data/sql.ts'
import { TenantHandle } from '../data/tenant-handle.ts'
import { TIER_STRATEGIES } from '../data/tiers/index.ts'
import type { TenantryEvents } from './events.ts'
import { faultPoint } from './faults.ts'
import { appliedMigrations, createTarget, migrateTarget, pendingMigrations, requireMigrations, type MigrateTargetOptions, type MigrationFile } from './migrator.ts'
import type { Operation, Operations } from './operations.ts'
import { chooseServer, validateProvision, type ProvisionOptions } from './provision.ts'
import { serverTemplate } from './template.ts'

/** A user hook run as a step of provisioning, inside the new tenant's context. */
export type ProvisionHook = (ctx: { tenant: Tenant; db: TenantHandle }) => Promise<void> | void

export interface LifecycleOptions {
  catalog: Catalog
  dataPlane: DataPlane
  operations: Operations
  files: MigrationFile[]
  events: TenantryEvents
  hooks: ProvisionHook[]
  /** Days a deleted tenant's data is kept before `purge` may remove it without `force`. */
  retentionDays: number
  /** Where status changes made on someone's behalf are recorded, in the change's transaction. */
  audit?: AuditLog
  /** Operations of other parts (backup, restore, erase) and how to finish one whose process died. */
  resumers?: { kinds: readonly string[]; resume(op: Operation): Promise<void> }
}

/** The tenant of a slug or id, or `TENANT_INVALID` / `TENANT_NOT_FOUND` (every control-plane command's first step). */
export async function mustFindTenant(catalog: Catalog, slugOrId: string): Promise<Tenant> {
  if (typeof slugOrId !== 'string' || slugOrId.length === 0) throw new TenantryError('TENANT_INVALID', 'A tenant slug or id is required.')
  const t = isUuid(slugOrId) ? await catalog.byId(slugOrId) : await catalog.bySlug(slugOrId)
  if (!t) throw new TenantryError('TENANT_NOT_FOUND', `No tenant has the slug or id '${printable(slugOrId)}'.`)
  return t
}

/** What a purge removed. */
export interface PurgeResult {
  tenant: Tenant
  operationId: string
  removed: string[]
}

/** Files a new tenant's target needs beyond the app's (its plugins' migration sets). */
export interface TenantExtraMigrations {
  forTenant(tenant: Tenant): Promise<MigrationFile[]>
  around: NonNullable<MigrateTargetOptions['around']>
}

/**
 * Tenant lifecycle as durable operations: provisioning, suspension, soft deletion and purge. Each
 * long step is recorded in the catalog before it runs; a process killed at any point leaves an
 * operation that the next run takes over and finishes (or rolls back), never a half-made tenant.
 *
 * @example
 * ```ts
 * const tenant = await lifecycle.provision({ slug: 'acme', tier: 'schema' })
 * ```
 */
export class Lifecycle {
  private readonly o: LifecycleOptions
  private extra?: TenantExtraMigrations

  /** Apply these files too when provisioning (set once the configuration is open). */
  useExtraMigrations(extra: TenantExtraMigrations | undefined): void {
    this.extra = extra
  }

  constructor(options: LifecycleOptions) {
    this.o = options
  }

  /** Create a tenant on its tier: catalog row and operation, room, tables, hooks, then active. */
  async provision(input: ProvisionOptions, startedBy?: string): Promise<Tenant> {
    validateProvision(input)
    requireMigrations(this.o.files)
    const { catalog, dataPlane, operations } = this.o
    const server = await this.pickServer(input)
    const target = { kind: 'server' as const, name: server.name, region: server.region }
    const residency = checkResidency({ slug: input.slug, region: input.region ?? null }, target, { force: input.forceResidency })
    const id = randomUUID()
    const placement = TIER_STRATEGIES[input.tier].placement(id, server, dataPlane.opts.naming)
    let op: Operation | undefined
    // The tenant row and its operation are written together: a refused slug writes neither.
    const tenant = await catalog.insertTenant(
      {
        id,
        slug: input.slug,
        name: input.name?.trim() ?? input.slug,
        status: 'provisioning',
        tier: input.tier,
        plan: input.plan ?? 'default',
        region: input.region ?? server.region,
        server: server.name,
        database: placement.database,
        schema: placement.schema ?? null,
        config: input.config ?? {},
      },
      async (tx) => {
        op = await operations.start('provision', { tenantId: id, slug: input.slug, params: { ...input, server: server.name, placement }, step: 'room', startedBy }, tx)
        if (residency.forced && this.o.audit) await auditForcedResidency(this.o.audit, { id, slug: input.slug }, target, residency, { actor: startedBy ?? 'library', details: { operation: 'provision' } }, tx)
      },
    )
    this.o.events.emit('tenant.provisioning', { tenant, operationId: op!.id })
    return this.runProvision(op!, tenant)
  }

  /** Suspend: requests get 403 `TENANT_SUSPENDED` with the reason, data is untouched. */
  async suspend(slugOrId: string, reason?: string, by?: AuditActor): Promise<Tenant> {
    const tenant = await this.mustFind(slugOrId)
    if (tenant.status !== 'active' && tenant.status !== 'suspended') throw this.wrongState(tenant, 'suspend')
    const t = await this.o.catalog.setStatus(tenant.id, 'suspended', reason?.trim() || null, this.audited('tenant.suspend', tenant, by), ['active', 'suspended'])
    this.o.events.emit('tenant.suspended', { tenant: t })
    return t
  }

  async resume(slugOrId: string, by?: AuditActor): Promise<Tenant> {
    const tenant = await this.mustFind(slugOrId)
    if (tenant.status !== 'suspended' && tenant.status !== 'active') throw this.wrongState(tenant, 'resume')
    const t = await this.o.catalog.setStatus(tenant.id, 'active', null, this.audited('tenant.resume', tenant, by), ['suspended', 'active'])
    this.o.events.emit('tenant.resumed', { tenant: t })
    return t
  }

  /** Soft delete: the tenant is no longer served (404) and its data is kept for the retention period. */
  async delete(slugOrId: string, by?: AuditActor): Promise<Tenant> {
    const tenant = await this.mustFind(slugOrId)
    if (tenant.status === 'provisioning') throw this.wrongState(tenant, 'delete')
    if (tenant.status === 'deleted') return tenant
    const t = await this.o.catalog.setStatus(tenant.id, 'deleted', null, this.audited('tenant.delete', tenant, by), ['active', 'suspended', 'deleted'])
    this.o.events.emit('tenant.deleted', { tenant: t })
    return t
  }

  /** Restore a soft-deleted tenant within its retention period (it comes back suspended). */
  async restore(slugOrId: string, by?: AuditActor): Promise<Tenant> {
    const tenant = await this.mustFind(slugOrId)
    if (tenant.status !== 'deleted') throw this.wrongState(tenant, 'restore')
    const t = await this.o.catalog.setStatus(tenant.id, 'suspended', 'Restored after deletion; resume it to serve it again.', this.audited('tenant.restore', tenant, by), ['deleted'])
    this.o.events.emit('tenant.restored', { tenant: t })
    return t
  }

  /** Set a tenant's status as it is (no transition rules: an operator's repair), audited as `tenant.status`. */
  async setStatus(slugOrId: string, status: Exclude<Tenant['status'], 'provisioning'>, reason?: string, by?: AuditActor): Promise<Tenant> {
    const tenant = await this.mustFind(slugOrId)
    return this.o.catalog.setStatus(tenant.id, status, reason ?? null, this.audited('tenant.status', tenant, by))
  }

  /** Add a custom domain that resolves at once (an operator's own), audited as `tenant.domain.add` in its transaction. */
  async addDomain(slugOrId: string, domain: string, by?: AuditActor): Promise<void> {
    const tenant = await this.mustFind(slugOrId)
    const name = domain.toLowerCase()
    const audit = this.o.audit
    await this.o.catalog.addDomain(tenant.id, name, audit && (async (tx) => {
      await audit.append({ actor: by?.actor ?? 'library', action: 'tenant.domain.add', tenantId: tenant.id, slug: tenant.slug, requestId: by?.requestId, after: { domain: name, status: 'verified' }, details: { domain: name, status: 'verified', ...by?.details } }, tx)
    }))
  }

  /** The audit entry of a status change on `by`'s behalf (actor `library` without one), appended in the change's transaction: both commit or neither. */
  private audited(action: string, before: Tenant, by: AuditActor | undefined): ((tx: Queryable, after: Tenant) => Promise<void>) | undefined {
    const audit = this.o.audit
    if (!audit) return undefined
    return async (tx, after) => {
      await audit.append({ actor: by?.actor ?? 'library', action, tenantId: before.id, slug: before.slug, requestId: by?.requestId, before, after, details: by?.details }, tx)
    }
  }

  /**
   * Remove a deleted tenant's data for good: its database, or schema and role, or its rows in the
   * pooled tables; then its catalog row. Only after the retention period unless `force`.
   */
  async purge(slugOrId: string, opts: { force?: boolean; startedBy?: string } = {}): Promise<PurgeResult> {
    const tenant = await this.mustFind(slugOrId)
    if (tenant.status === 'provisioning') throw this.wrongState(tenant, 'purge')
    if (!opts.force) {
      if (tenant.status !== 'deleted') {
        throw new TenantryError('CONFLICT', `Tenant '${tenant.slug}' is ${tenant.status}: delete it first ('tenants delete ${tenant.slug}'), or purge with --force.`, { details: { status: tenant.status } })
      }
      const until = new Date((tenant.deletedAt ?? new Date()).getTime() + this.o.retentionDays * 86_400_000)
      if (until.getTime() > Date.now()) {
        throw new TenantryError('CONFLICT', `Tenant '${tenant.slug}' is kept until ${until.toISOString()} (retention ${this.o.retentionDays} days); purge with --force to remove it now.`, { details: { retainedUntil: until.toISOString() } })
      }
    }
    const op = await this.o.operations.start('purge', { tenantId: tenant.id, slug: tenant.slug, params: { tenant, force: Boolean(opts.force) }, step: 'remove', startedBy: opts.startedBy })
    this.o.events.emit('tenant.purging', { tenant, operationId: op.id })
    return this.runPurge(op, tenant)
  }

  /**
   * Take over every running operation whose process died, and finish it: provisions go forward
   * (every step is idempotent) and roll back if they cannot; purges go forward. Fleet migrations
   * are continued by the next `migrate`. A process without migration files leaves provisions to one
   * that has them: finishing one here would activate a tenant without tables.
   */
  async resumeOrphans(): Promise<Operation[]> {
    const resumed: Operation[] = []
    for (const op of await this.o.operations.takeOverOrphans(undefined, this.o.files.length === 0 ? ['provision'] : [])) {
      if (op.kind === 'migrate') {
        // Targets the dead process held go back to pending: a finished operation must not show
        // targets as running. A worker that joined the run and still lives finishes it itself.
        await this.o.operations.releaseDeadClaims(op.id)
        if ((await this.o.operations.counts(op.id)).running > 0) continue
        await this.o.operations.finish(op.id, 'failed', 'Interrupted: the process running it died. Run migrate again to finish its targets.')
        resumed.push(op)
        continue
      }
      this.o.events.emit('operation.resumed', { operation: op })
      await this.resumeOperation(op).catch((error) => this.o.events.emit('error', { error, context: `resuming operation ${op.id}` }))
      resumed.push(op)
    }
    return resumed
  }

  /** Resume one operation by id (it must be running with a dead owner). */
  async resumeOperationById(id: string): Promise<Operation> {
    if (!isUuid(id)) throw new TenantryError('VALIDATION_FAILED', `'${printable(id)}' is not an operation id.`)
    const op = await this.o.operations.get(id)
    if (!op) throw new TenantryError('NOT_FOUND', `No operation has the id '${id}'.`)
    if (op.state !== 'running') throw new TenantryError('CONFLICT', `Operation ${id} is ${op.state}; only a running operation whose process died can be resumed.`)
    if (op.kind === 'provision') requireMigrations(this.o.files)
    const mine = await this.o.operations.takeOver(op)
    if (!mine) throw new TenantryError('CONFLICT', `Operation ${id} is held by a live process (${op.owner}).`)
    this.o.events.emit('operation.resumed', { operation: mine })
    await this.resumeOperation(mine)
    return (await this.o.operations.get(id))!
  }

  private async resumeOperation(op: Operation): Promise<void> {
    const tenant = op.tenantId ? await this.o.catalog.byId(op.tenantId) : null
    if (op.kind === 'provision') {
      if (!tenant) {
        // Killed before the row was written, or after a rollback removed it: nothing to finish.
        await this.o.operations.finish(op.id, 'rolled_back', 'Interrupted before the tenant existed.')
        return
      }
      if (tenant.status !== 'provisioning') {
        await this.o.operations.finish(op.id, 'done')
        return
      }
      await this.runProvision(op, tenant).catch(() => undefined)
      return
    }
    if (op.kind === 'purge') {
      const recorded = op.params.tenant as Tenant | undefined
      const target = tenant ?? (recorded ? { ...recorded, createdAt: new Date(recorded.createdAt), updatedAt: new Date(recorded.updatedAt), deletedAt: null } : null)
      if (!target) {
        await this.o.operations.finish(op.id, 'done')
        return
      }
      await this.runPurge(op, target as Tenant)
      return
    }
    if (this.o.resumers?.kinds.includes(op.kind)) return this.o.resumers.resume(op)
    await this.o.operations.finish(op.id, 'failed', `Unknown operation kind '${op.kind}'.`)
  }

  private async runProvision(op: Operation, tenant: Tenant): Promise<Tenant> {
    const { catalog, dataPlane, operations, files, events } = this.o
    const started = Date.now()
    const strategy = TIER_STRATEGIES[tenant.tier]
    const ctx = dataPlane.tierContext(tenant.placement.server)
    return operations.holding(async () => {
      // A pooled tenant needs only its row: its steps are not recorded one by one, and the shared
      // tables are touched only when they lack a migration (a fresh install).
      const pooled = tenant.tier === 'pooled'
      try {
        await faultPoint('provision:room')
        if (!pooled) await operations.step(op.id, 'room')
        const preamble = await strategy.prepare(ctx, tenant, serverTemplate(dataPlane, tenant.placement.server, files, events))
        await faultPoint('provision:migrate')
        const target = dataPlane.migrationTarget(tenant)
        const admin = ctx.driver.admin(target.database)
        if (!pooled) await operations.step(op.id, 'migrate')
        if (!pooled || pendingMigrations(files, await appliedMigrations(admin, target), target.label).length > 0) {
          await createTarget(admin, target, files, preamble)
        }
        // The migration sets of the plugins the new tenant has, before it serves (and before their tenant.provisioned handlers).
        const more = this.extra ? await this.extra.forTenant(tenant) : []
        if (more.length > 0) await migrateTarget(admin, target, [...files, ...more], { around: this.extra!.around })
        if (this.o.hooks.length > 0) {
          await operations.step(op.id, 'hooks')
          const db = new TenantHandle(dataPlane, tenant)
          for (const hook of this.o.hooks) await withTenant(tenant, () => hook({ tenant, db }))
        }
        await faultPoint('provision:activate')
        const active = await catalog.setStatus(tenant.id, 'active', null, async (tx) => {
          await operations.finish(op.id, 'done', null, { ms: Date.now() - started }, tx, 'activate')
        })
        events.emit('tenant.provisioned', { tenant: active, operationId: op.id, ms: Date.now() - started })
        return active
      } catch (err) {
        await this.rollBackProvision(op, tenant, err as Error)
        if (err instanceof TenantryError) throw err
        throw new TenantryError('PROVISION_FAILED', `Provisioning '${tenant.slug}' failed and was rolled back: ${(err as Error)?.message ?? String(err)}`, {
          cause: err,
          details: { operationId: op.id },
        })
      }
    })
  }

  private async rollBackProvision(op: Operation, tenant: Tenant, error: Error): Promise<void> {
    const { catalog, dataPlane, operations, events } = this.o
    try {
      await operations.step(op.id, 'rollback')
      await TIER_STRATEGIES[tenant.tier].remove(dataPlane.tierContext(tenant.placement.server), tenant, await this.pooledTables(tenant))
      await catalog.deleteTenantRow(tenant.id)
      await operations.finish(op.id, 'rolled_back', error.message)
    } catch (rollbackError) {
      // Left running: the next resume tries again. Nothing is reported as done that is not.
      events.emit('error', { error: rollbackError as Error, context: `rolling back provision of '${tenant.slug}'` })
    }
    events.emit('tenant.provision_failed', { slug: tenant.slug, operationId: op.id, error })
  }

  private async runPurge(op: Operation, tenant: Tenant): Promise<PurgeResult> {
    const { catalog, dataPlane, operations, events } = this.o
    return operations.holding(async () => {
      await faultPoint('purge:remove')
      const strategy = TIER_STRATEGIES[tenant.tier]
      const ctx = dataPlane.tierContext(tenant.placement.server)
      const tables = await this.pooledTables(tenant)
      // Recorded before anything is removed (a deleted tenant gets no new rows): a run killed after
      // its removal committed is resumed with the report of what it removed.
      const progress = op.progress ?? {}
      const recorded = Array.isArray(progress.removing) ? (progress.removing as string[]) : Array.isArray(progress.removed) ? (progress.removed as string[]) : undefined
      const inventory = recorded ?? (await strategy.inventory?.(ctx, tenant, tables))
      await operations.step(op.id, 'remove', inventory ? { removing: inventory } : undefined)
      const done = await strategy.remove(ctx, tenant, tables)
      const removed = recorded ?? done
      await faultPoint('purge:catalog')
      await operations.step(op.id, 'catalog', { removed })
      const domains = await catalog.domainsOf(tenant.id)
      await catalog.deleteTenantRow(tenant.id)
      removed.push(`catalog row of '${tenant.slug}'${domains.length ? ` and domains ${domains.join(', ')}` : ''}`)
      await operations.finish(op.id, 'done', null, { removed })
      events.emit('tenant.purged', { tenant, operationId: op.id, removed })
      return { tenant, operationId: op.id, removed }
    })
  }

  /** Pooled tables of the tenant's server, children first (only the pooled tier needs them). */
  private async pooledTables(tenant: Tenant): Promise<string[]> {
    if (tenant.tier !== 'pooled') return []
    const { dataPlane } = this.o
    const res = await dataPlane
      .driver(tenant.placement.server)
      .admin(tenant.placement.database)
      .query<{ table_name: string; references: string[] | string }>(TENANT_TABLES_SQL, [dataPlane.opts.pooledSchema])
    return deleteOrder(res.rows)
  }

  private async pickServer(input: ProvisionOptions): Promise<Server> {
    const { catalog, dataPlane } = this.o
    const listed = await catalog.listServers()
    // Servers another process added, not heard of yet, are registered here first.
    await dataPlane.ensureServers(listed.map((s) => s.name))
    const servers = listed.filter((s) => dataPlane.serverNames().includes(s.name))
    if (input.server !== undefined) {
      const found = servers.find((s) => s.name === input.server)
      if (!found) throw new TenantryError('SERVER_NOT_FOUND', `Server '${printable(String(input.server))}' is not registered.`, { status: 400 })
      return found
    }
    if (servers.length === 1) return servers[0]
    const counts = new Map<string, number>()
    for (const t of await catalog.list()) counts.set(t.placement.server, (counts.get(t.placement.server) ?? 0) + 1)
    return chooseServer(servers, counts, input.region)
  }

  private mustFind(slugOrId: string): Promise<Tenant> {
    return mustFindTenant(this.o.catalog, slugOrId)
  }

  private wrongState(tenant: Tenant, action: string): TenantryError {
    return new TenantryError('CONFLICT', `Tenant '${tenant.slug}' is ${tenant.status}; it cannot ${action} now.`, { details: { status: tenant.status } })
  }
}

