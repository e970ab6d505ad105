import { AsyncLocalStorage } from 'node:async_hooks'
import { TenantryError } from '../core/errors.ts'
import type { Tenant } from '../core/types.ts'

const storage = new AsyncLocalStorage<Tenant>()

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
  return storage.run(tenant, fn)
}

/**
 * `fn(arg)` as `tenant`, for the adapters' per-request path: with a module-level `fn` no closure is
 * made per request. Not exported from the package; use {@link withTenant}.
 */
export function runAsTenant<A, T>(tenant: Tenant, fn: (arg: A) => T, arg: A): T {
  return storage.run(tenant, fn, arg)
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
  const tenant = storage.getStore()
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
  return storage.getStore() ?? null
}
