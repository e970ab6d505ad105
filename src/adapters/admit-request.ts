import { runAsTenant } from '../context/context.ts'
import type { Tenant } from '../core/types.ts'
import type { AdmitRequest } from '../guard/users.ts'
import type { RequestInfo } from '../resolve/request-info.ts'
import type { Tenantry } from '../runtime.ts'

/**
 * What an adapter does at each step of {@link admitRequest}, in its framework's terms. Adapters
 * implement it as a class, so that a request costs one object and no closures.
 */
export interface AdmitSteps {
  /** Where the tenant is read from. */
  info(): RequestInfo
  /** What the guard is told of the request (only for tenants whose plan sets limits). */
  admission(): AdmitRequest
  /** The tenant was found: decorate the request (`tenant`, `db`). */
  found(tenant: Tenant): void
  /** Headers for the response (RateLimit-*), errors included. */
  headers(headers: Record<string, string>): void
  /** Call `release` once the response is over (sent, or the client went away). */
  onClose(release: () => void): void
  /** Go on with the request; called inside the tenant's context. */
  next(): void
  /** Refuse the request with a coded error (its `responseHeaders` already applied). */
  refuse(err: unknown): void
}

/**
 * The framework-neutral part of the adapters: resolve the request's tenant, admit it through the
 * guard (rate limits, then an in-flight slot; issue 4), and go on in the tenant's context.
 *
 * A cached tenant whose plan sets no limit costs no promise and no closure: each promise costs
 * more while AsyncLocalStorage is active, and the routing benchmark (issue 2) counts them.
 *
 * @example
 * ```ts
 * admitRequest(tenantry, new FastifySteps(tenantry, request, reply, done))
 * ```
 */
export function admitRequest(tenantry: Tenantry, steps: AdmitSteps): void {
  const found = tenantry.resolveNow(steps.info())
  if (found instanceof Promise) found.then((tenant) => serve(tenantry, steps, tenant), (err: unknown) => refuse(steps, err))
  else serve(tenantry, steps, found)
}

function serve(tenantry: Tenantry, steps: AdmitSteps, tenant: Tenant): void {
  steps.found(tenant)
  let free: boolean
  try {
    free = tenantry.guard.admitsFreely(tenant)
  } catch (err) {
    return refuse(steps, err)
  }
  if (free) return runAsTenant(tenant, next, steps)
  tenantry.guard.admit(tenant, steps.admission()).then((admission) => {
    steps.headers(admission.headers)
    steps.onClose(admission.release)
    runAsTenant(tenant, next, steps)
  }, (err: unknown) => refuse(steps, err))
}

function next(steps: AdmitSteps): void {
  steps.next()
}

function refuse(steps: AdmitSteps, err: unknown): void {
  // A rejection's headers also reach an app's own error handler.
  const headers = (err as { responseHeaders?: Record<string, string> } | null)?.responseHeaders
  if (headers) steps.headers(headers)
  steps.refuse(err)
}
