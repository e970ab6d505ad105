import type { ErrorRequestHandler, NextFunction, Request, RequestHandler, Response } from 'express'
import type { Tenant } from '../core/types.ts'
import type { TenantHandle } from '../data/tenant-handle.ts'
import type { Tenantry } from '../runtime.ts'
import type { AdmitRequest } from '../guard/users.ts'
import type { RequestInfo } from '../resolve/request-info.ts'
import { admitRequest, type AdmitSteps } from './admit-request.ts'
import { errorReply } from './http-errors.ts'

declare global {
  // eslint-disable-next-line @typescript-eslint/no-namespace
  namespace Express {
    interface Request {
      /** The tenant of this request (set by tenantryMiddleware). */
      tenant?: Tenant
      /** Tenant data, already scoped to `req.tenant`. */
      db?: TenantHandle
    }
  }
}

export interface TenantryExpressOptions {
  /** Requests this returns true for are served without a tenant. */
  skip?: (req: Request) => boolean
}

/**
 * Express middleware: resolves the tenant, sets `req.tenant` and the scoped `req.db`, and runs
 * the rest of the chain in the tenant's context. Errors go to `next(err)`; mount
 * {@link tenantryErrorHandler} last to turn them into coded JSON replies.
 *
 * @example
 * ```ts
 * app.use(tenantryMiddleware(tenantry))
 * app.get('/api/projects', async (req, res) => res.json((await req.db!.query('SELECT * FROM projects')).rows))
 * app.use(tenantryErrorHandler())
 * ```
 */
export function tenantryMiddleware(tenantry: Tenantry, opts: TenantryExpressOptions = {}): RequestHandler {
  return function tenantryResolve(req, res, next) {
    if (opts.skip?.(req)) return next()
    admitRequest(tenantry, new ExpressSteps(tenantry, req, res, next))
  }
}

/** One request's part in {@link admitRequest}. */
class ExpressSteps implements AdmitSteps {
  constructor(
    private readonly tenantry: Tenantry,
    private readonly req: Request,
    private readonly res: Response,
    private readonly nextFn: NextFunction,
  ) {}

  info(): RequestInfo {
    const req = this.req
    return { host: req.headers.host, path: req.path, headers: req.headers, raw: req }
  }

  admission(): AdmitRequest {
    const req = this.req
    return { method: req.method, path: req.path, headers: req.headers, raw: req }
  }

  found(tenant: Tenant): void {
    this.req.tenant = tenant
    this.req.db = this.tenantry.handle(tenant)
  }

  headers(headers: Record<string, string>): void {
    if (!this.res.headersSent) this.res.set(headers)
  }

  onClose(release: () => void): void {
    // 'close' comes after the response is sent, and also when the client goes away first.
    this.res.once('close', release)
  }

  next(): void {
    this.nextFn()
  }

  refuse(err: unknown): void {
    this.nextFn(err)
  }
}

/**
 * Express error handler: coded JSON bodies (`{ statusCode, code, error, message }`) and
 * `Retry-After` where the error has one.
 *
 * @example
 * ```ts
 * app.use(tenantryErrorHandler())
 * ```
 */
export function tenantryErrorHandler(): ErrorRequestHandler {
  return function tenantryError(err, _req, res, next) {
    if (res.headersSent) return next(err)
    const { status, headers, body, quiet } = errorReply(err)
    if (status >= 500 && !quiet) console.error(err)
    res.status(status).set(headers).json(body)
  }
}
