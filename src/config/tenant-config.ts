import type { AuditLog } from '../audit/index.ts'
import type { Catalog } from '../catalog/catalog.ts'
import { currentScope } from '../context/context.ts'
import { TenantryError } from '../core/errors.ts'
import type { Tenant } from '../core/types.ts'
import { isUuid, printable } from '../core/validation.ts'
import type { AdminQueryable } from '../data/driver.ts'
import type { Queryable } from '../data/executor.ts'
import { deepFreeze, getAt, isPlainObject, layer, parsePath, setAt, toPointer, unsetAt, type JsonObject, type JsonValue } from './merge.ts'
import { invalidConfig, type ConfigValidator } from './schema.ts'
import { liveReload } from './live-reload.ts'
import * as sql from './sql.ts'

/** One recorded configuration change. */
export interface ConfigVersion {
  /** Increasing over the whole catalog; `rollback` takes it. */
  id: number
  /** `tenant` (a tenant's layer), `plan` (a plan's layer), `flag` (a flag's definition), `assignment` (a tenant's plan). */
  scope: 'tenant' | 'plan' | 'flag' | 'assignment'
  /** Tenant id, `plan:<name>` or `flag:<key>`. */
  subject: string
  /** Tenant slug, plan name or flag key, for people. */
  label: string
  /** The JSON pointer that was set or unset; null for whole-layer changes (rollbacks, plan assignments). */
  path: string | null
  /** The whole layer (or plan name, or flag definition) before and after; null where there was none. */
  before: JsonValue | null
  after: JsonValue | null
  changedBy: string
  changedAt: Date
  note: string | null
}

/** Who makes a change: recorded in the versions (`cli:alice@host`, `admin:…`, `app`). */
export interface ChangeOptions {
  by?: string
}

interface VersionRow {
  id: string | number; scope: ConfigVersion['scope']; subject: string; label: string; path: string | null
  before: unknown; after: unknown; changed_by: string; changed_at: Date | string; note: string | null
}

const parsed = (v: unknown): JsonValue | null => (typeof v === 'string' ? JSON.parse(v) : (v ?? null)) as JsonValue | null

const fromText = (v: unknown): JsonValue | null => (v === null || v === undefined ? null : JSON.parse(String(v)) as JsonValue)

export function toVersion(r: VersionRow): ConfigVersion {
  return {
    id: Number(r.id), scope: r.scope, subject: r.subject, label: r.label, path: r.path,
    before: fromText(r.before), after: fromText(r.after), changedBy: r.changed_by, changedAt: new Date(r.changed_at), note: r.note,
  }
}

const PLAN_NAME = /^[a-z][a-z0-9_-]{0,62}$/

interface Merged {
  version: number
  value?: JsonObject
  error?: TenantryError
}

/**
 * Layered configuration (issue 12): defaults ← the tenant's plan (`plans.settings`) ← the tenant
 * (`tenants.config`), checked by the app's schema and Tenantry's own (`branding`, `limits`).
 * Reads are synchronous from memory: the merged object of a tenant is computed once per tenant
 * object and plans version; the catalog's notifications replace both within a second in every
 * process. Writes are validated first, versioned and made in one transaction with their
 * notification.
 */
export class TenantConfigStore {
  private plans = new Map<string, JsonObject>()
  private plansVersion = 0
  private readonly merged = new WeakMap<Tenant, Merged>()
  /** Re-read every plan's settings (after a notification); coalesces overlapping calls. */
  readonly reloadPlans: () => Promise<void>

  constructor(
    private readonly catalog: Catalog,
    private readonly admin: AdminQueryable,
    private readonly validator: ConfigValidator,
    private readonly defaults: JsonObject,
    private readonly onError: (error: unknown, context: string) => void,
    /** Where every recorded version is also appended (docs/audit.md), in the same transaction. */
    readonly audit?: AuditLog,
  ) {
    this.reloadPlans = liveReload(catalog, 'plan:', async () => {
      const plans = await this.catalog.listPlans()
      this.plans = new Map(plans.map((p) => [p.name, (isPlainObject(p.settings) ? p.settings : {}) as JsonObject]))
      this.plansVersion++
    }, (e) => onError(e, 'reloading plan configuration'))
  }

  async init(): Promise<void> {
    await this.reloadPlans()
  }

  /** The merged configuration of `tenant`, from memory. Throws `CONFIG_INVALID` when the stored layers no longer pass the schema. */
  of(tenant: Tenant): JsonObject {
    let m = this.merged.get(tenant)
    if (m === undefined || m.version !== this.plansVersion) {
      m = this.compute(tenant)
      this.merged.set(tenant, m)
    }
    if (m.error) throw m.error
    return m.value!
  }

  /** The current tenant's configuration; `TENANT_CONTEXT_MISSING` outside a tenant context. */
  current(): JsonObject {
    const scope = currentScope()
    if (scope === undefined) {
      throw new TenantryError('TENANT_CONTEXT_MISSING', 'tenantry.config() reads the current tenant\'s configuration: call it in a request resolved by Tenantry or inside withTenant(), or use tenantry.config.of(tenant).')
    }
    return this.of(scope.tenant)
  }

  private compute(tenant: Tenant): Merged {
    const version = this.plansVersion
    const value = layer(this.defaults, this.plans.get(tenant.plan), tenant.config)
    const issues = this.validator.check(value)
    if (issues.length > 0) {
      const error = invalidConfig(`tenant '${tenant.slug}'`, issues, 500)
      this.onError(error, `configuration of tenant '${tenant.slug}'`)
      return { version, error }
    }
    return { version, value: deepFreeze(value) }
  }

  private check(where: string, ...layers: (JsonObject | undefined)[]): void {
    const issues = this.validator.check(layer(this.defaults, ...layers))
    if (issues.length > 0) throw invalidConfig(where, issues)
  }

  // ── tenants ──────────────────────────────────────────────────────────────────────────────────

  /** The tenant's merged configuration, or the value at `path` (undefined when unset). */
  async get(slugOrId: string, path?: string, opts: { layer?: 'merged' | 'tenant' } = {}): Promise<JsonValue | undefined> {
    const segments = path === undefined ? [] : parsePath(path)
    const tenant = await this.tenant(slugOrId)
    if (opts.layer === 'tenant') return getAt(tenant.config, segments)
    // Fresh plans: a CLI process reads right after its start, an app process may lag a notification.
    const plan = await this.planLayer(this.admin, tenant.plan, null)
    const value = layer(this.defaults, plan, tenant.config)
    const issues = this.validator.check(value)
    if (issues.length > 0) throw invalidConfig(`tenant '${tenant.slug}'`, issues, 500)
    return getAt(value, segments)
  }

  /** Set `path` of the tenant's own layer to `value`, validated against the merged result first. */
  async set(slugOrId: string, path: string, value: unknown, opts: ChangeOptions = {}): Promise<ConfigVersion> {
    const segments = parsePath(path)
    const json = asJson(value, path)
    const tenant = await this.tenant(slugOrId)
    const version = await this.changeTenant(tenant, (current) => ({ next: setAt(current, segments, json), path: toPointer(segments) }), opts)
    return version!
  }

  /** Remove `path` from the tenant's own layer (the plan's or default value shows again). Null when it was not set. */
  async unset(slugOrId: string, path: string, opts: ChangeOptions = {}): Promise<ConfigVersion | null> {
    const segments = parsePath(path)
    const tenant = await this.tenant(slugOrId)
    return this.changeTenant(tenant, (current) => {
      const r = unsetAt(current, segments)
      return r.changed ? { next: r.value, path: toPointer(segments) } : null
    }, opts)
  }

  /** Changes of the tenant's layer and plan, newest first. */
  async history(slugOrId: string, opts: { limit?: number } = {}): Promise<ConfigVersion[]> {
    const tenant = await this.tenant(slugOrId)
    return this.versions(tenant.id, opts.limit)
  }

  /**
   * Undo change `versionId` of the tenant and every later one: its layer and its plan become what
   * they were before that change. Validated like any write; recorded as new versions.
   */
  async rollback(slugOrId: string, versionId: number, opts: ChangeOptions = {}): Promise<ConfigVersion[]> {
    const tenant = await this.tenant(slugOrId)
    const by = opts.by ?? 'app'
    return this.catalog.change(tenant.id, async (tx) => {
      const undone = await this.undoable(tx, tenant.id, versionId, `tenant '${tenant.slug}'`)
      const row = await lockedTenant(tx, tenant)
      const configTo = undone.find((v) => v.scope === 'tenant')
      const planTo = undone.find((v) => v.scope === 'assignment')
      const config = configTo ? (configTo.before as JsonObject | null) ?? {} : row.config
      const plan = planTo ? String(planTo.before) : row.plan
      const planLayer = await this.planLayer(tx, plan, 'share')
      this.check(`tenant '${tenant.slug}'`, planLayer, config)
      const out: ConfigVersion[] = []
      const note = `rollback to before version ${versionId}`
      if (configTo && !sameJson(config, row.config)) {
        await run(tx, sql.setTenantConfig(tenant.id, config))
        out.push(await record(tx, { scope: 'tenant', subject: tenant.id, label: row.slug, path: null, before: row.config, after: config, by, note }, this.audit))
      }
      if (planTo && plan !== row.plan) {
        await run(tx, sql.setTenantPlan(tenant.id, plan))
        out.push(await record(tx, { scope: 'assignment', subject: tenant.id, label: row.slug, path: null, before: row.plan, after: plan, by, note }, this.audit))
      }
      return out
    })
  }

  /**
   * Put the tenant on another plan: its configuration, flags and limits follow in every process
   * within a second. Refused (`CONFIG_INVALID`, nothing changed) when its configuration would not
   * pass the schema under the new plan; `PLAN_NOT_FOUND` for an unknown plan.
   */
  async changePlan(slugOrId: string, plan: string, opts: ChangeOptions = {}): Promise<Tenant> {
    const tenant = await this.tenant(slugOrId)
    if (typeof plan !== 'string' || !PLAN_NAME.test(plan)) throw badPlanName(plan)
    await this.catalog.change(tenant.id, async (tx) => {
      const row = await lockedTenant(tx, tenant)
      if (row.plan === plan) return
      const planLayer = await this.planLayer(tx, plan, 'share')
      this.check(`tenant '${tenant.slug}' on plan '${plan}'`, planLayer, row.config)
      await run(tx, sql.setTenantPlan(tenant.id, plan))
      await record(tx, { scope: 'assignment', subject: tenant.id, label: row.slug, path: null, before: row.plan, after: plan, by: opts.by ?? 'app', note: null }, this.audit)
    })
    return (await this.catalog.byId(tenant.id))!
  }

  private async changeTenant(
    tenant: Tenant,
    edit: (current: JsonObject) => { next: JsonObject; path: string } | null,
    opts: ChangeOptions,
  ): Promise<ConfigVersion | null> {
    return this.catalog.change(tenant.id, async (tx) => {
      const row = await lockedTenant(tx, tenant)
      const change = edit(row.config)
      if (change === null) return null
      const planLayer = await this.planLayer(tx, row.plan, 'share')
      this.check(`tenant '${row.slug}'`, planLayer, change.next)
      await run(tx, sql.setTenantConfig(tenant.id, change.next))
      return record(tx, { scope: 'tenant', subject: tenant.id, label: row.slug, path: change.path, before: row.config, after: change.next, by: opts.by ?? 'app', note: null }, this.audit)
    })
  }

  // ── plans ────────────────────────────────────────────────────────────────────────────────────

  /** Plans and their settings (their configuration layer; `limits` is the guard's). */
  async listPlans(): Promise<{ name: string; settings: JsonObject }[]> {
    return (await this.catalog.listPlans()).map((p) => ({ name: p.name, settings: p.settings as JsonObject }))
  }

  /** Create a plan (with an optional first configuration layer, validated). */
  async createPlan(name: string, settings: Record<string, unknown> = {}, opts: ChangeOptions = {}): Promise<void> {
    if (typeof name !== 'string' || !PLAN_NAME.test(name)) throw badPlanName(name)
    const layerValue = asJson(settings, '/') as JsonObject
    if (!isPlainObject(layerValue)) throw new TenantryError('CONFIG_INVALID', 'A plan\'s settings must be a JSON object.', { status: 400 })
    this.check(`plan '${name}'`, layerValue)
    await this.catalog.change(`plan:${name}`, async (tx) => {
      const res = await tx.query(sql.insertPlan(name, layerValue).text, sql.insertPlan(name, layerValue).values)
      if (res.rowCount === 0) throw new TenantryError('CONFLICT', `A plan named '${name}' already exists; change it with 'plans config set'.`, { details: { plan: name } })
      await record(tx, { scope: 'plan', subject: `plan:${name}`, label: name, path: null, before: null, after: layerValue, by: opts.by ?? 'app', note: 'created' }, this.audit)
    })
    this.localPlan(name, layerValue)
  }

  async getPlan(name: string, path?: string): Promise<JsonValue | undefined> {
    const segments = path === undefined ? [] : parsePath(path)
    return getAt(await this.planLayer(this.admin, name, null), segments)
  }

  /** Set `path` of a plan's layer; refused when it (or any tenant on the plan) would not pass the schema. */
  async setPlan(name: string, path: string, value: unknown, opts: ChangeOptions = {}): Promise<ConfigVersion> {
    const segments = parsePath(path)
    const json = asJson(value, path)
    return (await this.changePlanLayer(name, (cur) => ({ next: setAt(cur, segments, json), path: toPointer(segments) }), opts))!
  }

  async unsetPlan(name: string, path: string, opts: ChangeOptions = {}): Promise<ConfigVersion | null> {
    const segments = parsePath(path)
    return this.changePlanLayer(name, (cur) => {
      const r = unsetAt(cur, segments)
      return r.changed ? { next: r.value, path: toPointer(segments) } : null
    }, opts)
  }

  async planHistory(name: string, opts: { limit?: number } = {}): Promise<ConfigVersion[]> {
    await this.planLayer(this.admin, name, null)
    return this.versions(`plan:${name}`, opts.limit)
  }

  /** Undo plan change `versionId` and every later one of that plan. */
  async rollbackPlan(name: string, versionId: number, opts: ChangeOptions = {}): Promise<ConfigVersion | null> {
    return this.changePlanLayer(name, undefined, opts, versionId)
  }

  private async changePlanLayer(
    name: string,
    edit: ((current: JsonObject) => { next: JsonObject; path: string } | null) | undefined,
    opts: ChangeOptions,
    rollbackTo?: number,
  ): Promise<ConfigVersion | null> {
    const subject = `plan:${name}`
    let stored: JsonObject | undefined
    const version = await this.catalog.change(subject, async (tx) => {
      const current = await this.planLayer(tx, name, 'update')
      let change: { next: JsonObject; path: string | null; note: string | null } | null
      if (rollbackTo !== undefined) {
        const undone = await this.undoable(tx, subject, rollbackTo, `plan '${name}'`)
        const next = (undone[0].before as JsonObject | null) ?? {}
        change = sameJson(next, current) ? null : { next, path: null, note: `rollback to before version ${rollbackTo}` }
      } else {
        const e = edit!(current)
        change = e && { ...e, note: null }
      }
      if (change === null) return null
      this.check(`plan '${name}'`, change.next)
      const tenants = await tx.query<{ id: string; slug: string; config: unknown }>(sql.tenantsOnPlan(name).text, sql.tenantsOnPlan(name).values)
      for (const t of tenants.rows) this.check(`tenant '${t.slug}' (on plan '${name}')`, change.next, parsed(t.config) as JsonObject)
      await run(tx, sql.setPlanSettings(name, change.next))
      stored = change.next
      return record(tx, { scope: 'plan', subject, label: name, path: change.path, before: current, after: change.next, by: opts.by ?? 'app', note: change.note }, this.audit)
    })
    if (stored) this.localPlan(name, stored)
    return version
  }

  /** This process sees its own plan change at once (the notification's reload follows). */
  private localPlan(name: string, settings: JsonObject): void {
    const next = new Map(this.plans)
    next.set(name, settings)
    this.plans = next
    this.plansVersion++
  }

  private async planLayer(q: Queryable, name: string, lock: 'share' | 'update' | null): Promise<JsonObject> {
    const s = sql.planSettings(name, lock)
    const res = await q.query<{ settings: unknown }>(s.text, s.values)
    if (res.rows.length === 0) {
      const known = [...this.plans.keys()].sort().join(', ')
      throw new TenantryError('PLAN_NOT_FOUND', `No plan is named '${printable(String(name))}'. Known plans: ${known || '(none)'}; create one with 'tenantry plans create <name>'.`, { details: { plan: printable(String(name)) } })
    }
    const v = parsed(res.rows[0].settings)
    return isPlainObject(v) ? v : {}
  }

  // ── shared ───────────────────────────────────────────────────────────────────────────────────

  async versions(subject: string, limit = 50): Promise<ConfigVersion[]> {
    const s = sql.versionsOf(subject, Math.max(1, Math.min(1000, Math.floor(limit))))
    const res = await this.admin.query<VersionRow>(s.text, s.values)
    return res.rows.map(toVersion)
  }

  /** The versions a rollback to before `id` undoes (oldest first); `NOT_FOUND` when `id` is not one of `subject`'s. */
  async undoable(tx: Queryable, subject: string, id: number, what: string): Promise<ConfigVersion[]> {
    if (!Number.isSafeInteger(id) || id < 1) {
      throw new TenantryError('VALIDATION_FAILED', `Version '${printable(String(id))}' is not a version number; see the history for the numbers.`, { details: { version: printable(String(id)) } })
    }
    const s = sql.versionsFrom(subject, id)
    const rows = (await tx.query<VersionRow>(s.text, s.values)).rows.map(toVersion)
    if (rows.length === 0 || rows[0].id !== id) {
      throw new TenantryError('NOT_FOUND', `Version ${id} is not a change of ${what}; see its history for the versions it has.`, { details: { version: id } })
    }
    return rows
  }

  private async tenant(slugOrId: string): Promise<Tenant> {
    const t = typeof slugOrId === 'string' ? (isUuid(slugOrId) ? await this.catalog.byId(slugOrId) : await this.catalog.bySlug(slugOrId)) : null
    if (!t || t.status === 'deleted') throw new TenantryError('TENANT_NOT_FOUND', `No tenant has the slug or id '${printable(String(slugOrId))}'.`)
    return t
  }
}

async function lockedTenant(tx: Queryable, tenant: Tenant): Promise<{ slug: string; plan: string; config: JsonObject }> {
  const s = sql.lockTenant(tenant.id)
  const res = await tx.query<{ slug: string; plan: string; config: unknown; status: string }>(s.text, s.values)
  const row = res.rows[0]
  if (!row || row.status === 'deleted') throw new TenantryError('TENANT_NOT_FOUND', `Tenant '${tenant.slug}' no longer exists.`)
  const config = parsed(row.config)
  return { slug: row.slug, plan: row.plan, config: isPlainObject(config) ? config : {} }
}

async function run(tx: Queryable, s: { text: string; values: unknown[] }): Promise<void> {
  await tx.query(s.text, s.values)
}

const AUDIT_ACTIONS: Record<string, string> = { tenant: 'config.set', plan: 'plan.config.set', assignment: 'tenant.plan.set', flag: 'flag.set' }

/** The audit action of a recorded version: a rollback, a removed flag and a created plan say so. */
function auditAction(v: { scope: string; after?: unknown; note: string | null }): string {
  if (v.note?.startsWith('rollback')) return v.scope === 'assignment' ? 'tenant.plan.rollback' : v.scope === 'tenant' ? 'config.rollback' : `${v.scope === 'plan' ? 'plan.config' : v.scope}.rollback`
  if (v.scope === 'flag' && (v.after === null || v.after === undefined)) return 'flag.remove'
  if (v.scope === 'plan' && v.note === 'created') return 'plan.create'
  return AUDIT_ACTIONS[v.scope] ?? `${v.scope}.set`
}

/** Record a version in the same transaction as the change, and its audit entry with it. */
export async function record(tx: Queryable, v: Parameters<typeof sql.insertVersion>[0], audit?: AuditLog): Promise<ConfigVersion> {
  const s = sql.insertVersion(v)
  const res = await tx.query<VersionRow>(s.text, s.values)
  const version = toVersion(res.rows[0])
  if (audit) {
    const perTenant = v.scope === 'tenant' || v.scope === 'assignment'
    await audit.append({
      actor: v.by, action: auditAction(v), tenantId: perTenant ? v.subject : null, slug: perTenant ? v.label : null,
      before: v.before ?? null, after: v.after ?? null, details: { version: version.id, subject: v.subject, path: v.path, note: v.note },
    }, tx)
  }
  return version
}

function sameJson(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b)
}

function badPlanName(name: unknown): TenantryError {
  return new TenantryError('VALIDATION_FAILED', `Plan name '${printable(String(name))}' must be lowercase letters, digits, - and _ (at most 63, starting with a letter).`, { details: { plan: printable(String(name)) } })
}

/** A value that is plain JSON, or `CONFIG_INVALID` (functions, undefined, NaN, Dates, class instances, cycles…). */
export function asJson(value: unknown, path: string): JsonValue {
  const problem = notJson(value, new Set())
  if (problem !== null) {
    throw new TenantryError('CONFIG_INVALID', `The value for '${printable(path)}' is not plain JSON: ${problem}.`, { status: 400, details: { path: printable(path) } })
  }
  const text = JSON.stringify(value)
  if (text.length > 256 * 1024) throw new TenantryError('CONFIG_INVALID', `The value for '${printable(path)}' is ${text.length} bytes of JSON; at most 256 KiB is allowed.`, { status: 400, details: { path: printable(path) } })
  return JSON.parse(text) as JsonValue
}

function notJson(v: unknown, seen: Set<object>): string | null {
  if (v === null || typeof v === 'string' || typeof v === 'boolean') return null
  if (typeof v === 'number') return Number.isFinite(v) ? null : `${v} is not a JSON number`
  if (typeof v !== 'object') return `a ${typeof v} is not JSON${v === undefined ? ' (use unset to remove a value)' : ''}`
  if (seen.has(v)) return 'it refers to itself'
  const proto = Object.getPrototypeOf(v)
  if (!Array.isArray(v) && proto !== Object.prototype && proto !== null) return `a ${(v as object).constructor?.name ?? 'class instance'} is not a plain object`
  seen.add(v)
  for (const x of Object.values(v)) {
    const p = notJson(x, seen)
    if (p !== null) return p
  }
  seen.delete(v)
  return null
}
