import { STATUS_CODES } from 'node:http'
import { TenantryError, isTenantryError } from '../core/errors.ts'

/** What an HTTP adapter sends for an error: status, extra headers and a JSON body with a `code`. */
export interface ErrorReply {
  status: number
  headers: Record<string, string>
  body: { statusCode: number; code: string; error: string; message: string; details?: Record<string, unknown> }
  /** An expected refusal (a guard rejection, an open circuit breaker): not worth an error log line each time. */
  quiet?: boolean
}

/**
 * Turn any error met while serving a request into a coded reply. Tenantry errors keep their code
 * and status; framework validation errors become 400 `VALIDATION_FAILED`; other client errors the
 * framework flagged (4xx with a code, e.g. malformed JSON) keep theirs; anything else is a 500
 * whose message reveals nothing internal.
 *
 * @example
 * ```ts
 * const { status, headers, body } = errorReply(err)
 * ```
 */
export function errorReply(err: unknown): ErrorReply {
  let e: TenantryError
  if (isTenantryError(err)) {
    e = err
  } else if (err && typeof err === 'object' && 'validation' in err) {
    e = new TenantryError('VALIDATION_FAILED', String((err as unknown as Error).message), { cause: err })
  } else {
    const status = Number((err as { statusCode?: unknown })?.statusCode)
    if (status >= 400 && status < 500) {
      const code = String((err as { code?: unknown }).code ?? 'BAD_REQUEST')
      return {
        status,
        headers: {},
        body: { statusCode: status, code, error: STATUS_CODES[status] ?? 'Bad Request', message: String((err as Error).message) },
      }
    }
    e = new TenantryError('INTERNAL', 'Internal error; it has been logged.', { cause: err })
  }
  // A guard rejection carries the headers its response must have (RateLimit-*, Retry-After).
  const extra = (e as { responseHeaders?: unknown }).responseHeaders
  const headers: Record<string, string> = extra && typeof extra === 'object' ? { ...(extra as Record<string, string>) } : {}
  if (e.retryAfter !== undefined) headers['retry-after'] = String(e.retryAfter)
  const quiet = extra !== undefined || e.details?.breaker !== undefined
  return { status: e.status, headers, body: e.toJSON(), ...(quiet ? { quiet } : {}) }
}
