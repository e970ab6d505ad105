import { withTenant } from '../context/context.ts'
import type { Tenant } from '../core/types.ts'
import type { AdmitRequest } from '../guard/users.ts'
import type { RequestInfo } from '../resolve/request-info.ts'
import type { Tenantry } from '../runtime.ts'

/** What an adapter does at each step of {@link admitRequest}, in its framework's terms. */
export interface AdmitSteps {
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
 * A cached tenant whose plan sets no limit costs no promise at all: every promise costs more while
 * AsyncLocalStorage is active, and the routing benchmark (issue 2) counts each one.
 *
 * @example
 * ```ts
 * admitRequest(tenantry, { host, path, headers, raw: req }, { method: req.method }, steps)
 * ```
 */
export function admitRequest(tenantry: Tenantry, info: RequestInfo, admit: AdmitRequest, steps: AdmitSteps): void {
  const refuse = (err: unknown) => {
    // A rejection's headers also reach an app's own error handler.
    const headers = (err as { responseHeaders?: Record<string, string> } | null)?.responseHeaders
    if (headers) steps.headers(headers)
    steps.refuse(err)
  }
  const serve = (tenant: Tenant) => {
    steps.found(tenant)
    let free: boolean
    try {
      free = tenantry.guard.admitsFreely(tenant)
    } catch (err) {
      return refuse(err)
    }
    if (free) return withTenant(tenant, steps.next)
    tenantry.guard.admit(tenant, admit).then((admission) => {
      steps.headers(admission.headers)
      steps.onClose(admission.release)
      withTenant(tenant, steps.next)
    }, refuse)
  }
  const found = tenantry.resolveNow(info)
  if (found instanceof Promise) found.then(serve, refuse)
  else serve(found)
}
