import { AsyncLocalStorage } from 'node:async_hooks'
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
  const outer = storage.getStore()
  return storage.run(new TenantScope(tenant, outer?.requestId ?? null, outer?.trace), fn)
}

/**
 * `fn(arg)` in `scope`, for the adapters' per-request path: with a module-level `fn` no closure is
 * made per request. Not exported from the package; use {@link withTenant}.
 */
export function runInScope<A, T>(scope: TenantScope, fn: (arg: A) => T, arg: A): T {
  return storage.run(scope, fn, arg)
}

/** The current scope (tenant, request id, trace), or undefined outside a tenant context. */
export function currentScope(): TenantScope | undefined {
  return storage.getStore()
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
  const tenant = storage.getStore()?.tenant
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
  return storage.getStore()?.tenant ?? null
}
