import { AsyncLocalStorage } from 'node:async_hooks'
import { context as otelContext, createContextKey, ROOT_CONTEXT, type Context, type ContextManager } from '@opentelemetry/api'
import { TenantryError } from '../core/errors.ts'
import type { Tenant } from '../core/types.ts'

/**
 * What the async context holds: the tenant, and what observability needs of the work it belongs
 * to (the request id for log lines, the trace context of the incoming request, whether the guard
 * turned it away). One object per request or `withTenant` call.
 */
export class TenantScope {
  /** Set when the guard turned the request away (rate limit, share, budget, breaker): metered as a rejection, not an error. */
  rejected = false
  constructor(
    readonly tenant: Tenant,
    /** The request's id (Fastify's `request.id`, the `x-request-id` header…), or null outside a request. */
    readonly requestId: string | null = null,
    /** The parent trace context of the request's spans (an OpenTelemetry `Context`), when there is one. */
    readonly trace: unknown = undefined,
  ) {}
}

const storage = new AsyncLocalStorage<TenantScope>()

/*
 * One async store, not two. An app that registers the OpenTelemetry SDK has its context manager's
 * AsyncLocalStorage active; a second one of Tenantry's would make every promise of every request
 * pay twice (Node 20 copies each active store onto each new promise). So while a context manager
 * that carries values is registered, a scope is a value of the OpenTelemetry context
 * (`context.with`), and Tenantry's own store is used only when there is none.
 *
 * Which scope is the current one (invariant 3): a scope goes into Tenantry's own store only when
 * no manager is registered or when an outer scope is in it already (nested scopes follow their
 * outer one), so a scope in the own store is never inside one in the OpenTelemetry context, and
 * reading looks at the own store first. A manager registered, replaced or disabled while scopes
 * are open never makes an outer scope win over an inner one. Code that switches to a context not
 * derived from the active one (`context.with(ROOT_CONTEXT, …)`) leaves the tenant behind and fails
 * closed (TENANT_CONTEXT_MISSING), as work outside a request does.
 */
const SCOPE_KEY = createContextKey('tenantry.scope')
const PROBE_KEY = createContextKey('tenantry.probe')

/** The API's registered manager (the no-op one when none is); `_getContextManager` is how `context.with` finds it. */
const registered = (otelContext as unknown as { _getContextManager?: () => ContextManager })._getContextManager
let lastManager: ContextManager | undefined
let lastShared: ContextManager | null = null

/** The registered OpenTelemetry context manager if it carries values (not the no-op one), else null. */
function sharedManager(): ContextManager | null {
  if (registered === undefined) return null
  const manager = registered.call(otelContext)
  if (manager !== lastManager) {
    lastManager = manager
    lastShared = carriesValues(manager) ? manager : null
  }
  return lastShared
}

function carriesValues(manager: ContextManager): boolean {
  const probe = ROOT_CONTEXT.setValue(PROBE_KEY, true)
  try {
    return manager.with(probe, () => manager.active() === probe)
  } catch {
    return false
  }
}

/**
 * Where scopes go now: `'opentelemetry'` (a value of the registered OpenTelemetry context
 * manager's context) or `'tenantry'` (Tenantry's own AsyncLocalStorage, when no manager is
 * registered). For diagnostics and tests; not exported from the package.
 */
export function scopeStore(): 'opentelemetry' | 'tenantry' {
  return storage.getStore() === undefined && sharedManager() !== null ? 'opentelemetry' : 'tenantry'
}

function enter<A, T>(scope: TenantScope, fn: (arg: A) => T, arg: A, base?: Context): T {
  const manager = storage.getStore() === undefined ? sharedManager() : null
  if (manager === null) return storage.run(scope, fn, arg)
  return manager.with((base ?? manager.active()).setValue(SCOPE_KEY, scope), fn, undefined, arg)
}

/**
 * Run `fn` with `tenant` as the current tenant. The previous context (if any) is restored when
 * `fn` settles, including for work `fn` started without awaiting.
 *
 * @example
 * ```ts
 * await withTenant(tenant, async () => { await db.query('SELECT * FROM projects') })
 * ```
 */
export function withTenant<T>(tenant: Tenant, fn: () => T): T {
  if (!tenant || typeof tenant.id !== 'string') {
    throw new TenantryError('TENANT_CONTEXT_MISSING', 'withTenant() needs a tenant object from the catalog.')
  }
  // A nested withTenant keeps the request it runs in (its id and trace) but not its rejection.
  const outer = currentScope()
  return enter(new TenantScope(tenant, outer?.requestId ?? null, outer?.trace), fn, undefined)
}

/**
 * `fn(arg)` in `scope`, for the adapters' per-request path: with a module-level `fn` no closure is
 * made per request. Not exported from the package; use {@link withTenant}.
 *
 * With a context manager registered, the request runs in its trace context (`scope.trace`: the
 * active context, or one derived from it with the incoming `traceparent`), so spans made inside
 * the request, Tenantry's statement spans and the app's own, find their parent as the active
 * span: no lookup of the scope per statement.
 */
export function runInScope<A, T>(scope: TenantScope, fn: (arg: A) => T, arg: A): T {
  return enter(scope, fn, arg, scope.trace as Context | undefined)
}

/** The current scope (tenant, request id, trace), or undefined outside a tenant context. */
export function currentScope(): TenantScope | undefined {
  const own = storage.getStore()
  if (own !== undefined) return own
  const manager = sharedManager()
  return manager === null ? undefined : (manager.active().getValue(SCOPE_KEY) as TenantScope | undefined)
}

/**
 * The current tenant; throws `TENANT_CONTEXT_MISSING` outside a tenant context (invariant 3:
 * there is no default tenant).
 *
 * @example
 * ```ts
 * const { slug } = currentTenant()
 * ```
 */
export function currentTenant(): Tenant {
  const tenant = currentScope()?.tenant
  if (!tenant) {
    throw new TenantryError(
      'TENANT_CONTEXT_MISSING',
      'No tenant context: tenant data can only be reached inside a request resolved by Tenantry or inside withTenant().',
    )
  }
  return tenant
}

/**
 * The current tenant, or `null` outside a tenant context.
 *
 * @example
 * ```ts
 * logger.info({ tenant: tryCurrentTenant()?.slug }, 'job started')
 * ```
 */
export function tryCurrentTenant(): Tenant | null {
  return currentScope()?.tenant ?? null
}
