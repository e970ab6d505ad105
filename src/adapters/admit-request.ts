import type { Context, Span } from '@opentelemetry/api'
import { runInScope, TenantScope } from '../context/context.ts'
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
  /** The request's id for log lines (the framework's), or null. */
  requestId(): string | null
  /** The tenant was found: decorate the request (`tenant`, `db`) and keep `scope` for the request's end (metering). */
  found(tenant: Tenant, scope: TenantScope): void
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
 * guard (rate limits, then an in-flight slot; issue 4), and go on in the tenant's context, with
 * spans for resolution and admission when tracing is on (issue 11).
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
  const info = steps.info()
  const tracing = tenantry.observe.tracing
  const parent = tracing?.requestParent(info.headers)
  const found = tenantry.resolveNow(info)
  if (found instanceof Promise) {
    // A span only for resolution that waits (a catalog lookup, a token check): a cached tenant
    // takes a microsecond, less than a span costs; its attributes go on the active span instead.
    const span = tracing?.startResolve(parent)
    found.then(
      (tenant) => { if (span) tracing!.endResolve(span, tenant); serve(tenantry, steps, tenant, parent) },
      (err: unknown) => { if (span) tracing!.endResolve(span, null, err); refuse(steps, err, null) },
    )
  } else {
    tracing?.resolvedNow(found, parent)
    serve(tenantry, steps, found, parent)
  }
}

function serve(tenantry: Tenantry, steps: AdmitSteps, tenant: Tenant, parent: Context | undefined): void {
  const scope = new TenantScope(tenant, steps.requestId(), parent)
  steps.found(tenant, scope)
  let free: boolean
  try {
    free = tenantry.guard.admitsFreely(tenant)
  } catch (err) {
    return refuse(steps, err, scope)
  }
  if (free) return runInScope(scope, next, steps)
  const tracing = tenantry.observe.tracing
  const span: Span | undefined = tracing?.startAdmit(tenant, parent)
  tenantry.guard.admit(tenant, steps.admission()).then((admission) => {
    if (span) tracing!.endSpan(span)
    steps.headers(admission.headers)
    steps.onClose(admission.release)
    runInScope(scope, next, steps)
  }, (err: unknown) => {
    if (span) tracing!.endSpan(span, err)
    refuse(steps, err, scope)
  })
}

function next(steps: AdmitSteps): void {
  steps.next()
}

function refuse(steps: AdmitSteps, err: unknown, scope: TenantScope | null): void {
  // A rejection's headers also reach an app's own error handler.
  const headers = (err as { responseHeaders?: Record<string, string> } | null)?.responseHeaders
  if (headers) {
    steps.headers(headers)
    // Only the guard's rejections carry response headers: metered as rejections, not errors.
    if (scope) scope.rejected = true
  }
  steps.refuse(err)
}
