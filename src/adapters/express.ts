import type { ErrorRequestHandler, NextFunction, Request, RequestHandler, Response } from 'express'
import { randomUUID } from 'node:crypto'
import type { TenantScope } from '../context/context.ts'
import type { Tenant } from '../core/types.ts'
import type { TenantHandle } from '../data/tenant-handle.ts'
import type { JsonObject } from '../config/merge.ts'
import type { Tenantry } from '../runtime.ts'
import type { AdmitRequest } from '../guard/users.ts'
import type { RequestInfo } from '../resolve/request-info.ts'
import { admitRequest, type AdmitSteps } from './admit-request.ts'
import { errorReply } from './http-errors.ts'
import { SIGNED_URL_PATH } from '../storage/signed-urls.ts'

declare global {
  // eslint-disable-next-line @typescript-eslint/no-namespace
  namespace Express {
    interface Request {
      /** The tenant of this request (set by tenantryMiddleware). */
      tenant?: Tenant
      /** Tenant data, already scoped to `req.tenant`. */
      db?: TenantHandle
      /** The tenant's merged configuration (defaults ← plan ← tenant; docs/config.md). */
      tenantConfig?: JsonObject
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
  const observe = tenantry.observe
  const observed = observe.measuresRequests
  return function tenantryResolve(req, res, next) {
    if (observed) {
      const started = performance.now()
      res.once('finish', () => {
        // The route template once the router matched one (`/api/projects/:id`), never the raw path.
        const route = req.route?.path
        const template = typeof route === 'string' ? `${req.baseUrl}${route}` : null
        observe.requestEnded((req as ScopedRequest)[kScope] ?? null, req.method, template, res.statusCode, (performance.now() - started) / 1000)
      })
    }
    if (opts.skip?.(req)) return next()
    admitRequest(tenantry, new ExpressSteps(tenantry, req, res, next))
  }
}

/**
 * Express handler serving Tenantry's Prometheus metrics. Mount it before the tenant middleware
 * (or `skip` its path), on an internal port or behind your own auth.
 *
 * @example
 * ```ts
 * app.get('/metrics', tenantryMetricsHandler(tenantry))
 * app.use(tenantryMiddleware(tenantry, { skip: (req) => req.path === '/metrics' }))
 * ```
 */
export function tenantryMetricsHandler(tenantry: Tenantry): RequestHandler {
  const registry = tenantry.observe.metricsRegistry('tenantryMetricsHandler()')
  return function tenantryMetrics(_req, res, next) {
    registry.metrics().then((text) => res.type(registry.contentType).send(text), next)
  }
}

const kScope = Symbol('tenantry.scope')
type ScopedRequest = Request & { [kScope]?: TenantScope }
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/

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

  requestId(): string {
    // A well-formed id from a proxy in front (`x-request-id`), else a new one.
    const given = this.req.headers['x-request-id']
    return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID()
  }

  found(tenant: Tenant, scope: TenantScope): void {
    this.req.tenant = tenant
    this.req.db = this.tenantry.handle(tenant)
    ;(this.req as ScopedRequest)[kScope] = scope
    const config = this.tenantry.config
    // Read when first used: a request that never reads its configuration does not pay for it.
    Object.defineProperty(this.req, 'tenantConfig', { get: () => config.of(tenant), configurable: true, enumerable: false })
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
 * Express handler serving the local storage driver's presigned URLs (`/_tenantry/storage/*`: GET,
 * HEAD, PUT) without tenant resolution — the URL's signature names the tenant. Mount it before
 * {@link tenantryMiddleware} and any body parser; other paths pass through.
 *
 * @example
 * ```ts
 * app.use(tenantryStorageHandler(tenantry))
 * app.use(tenantryMiddleware(tenantry))
 * ```
 */
export function tenantryStorageHandler(tenantry: Tenantry): RequestHandler {
  const prefix = `${SIGNED_URL_PATH}/`
  return function tenantryStorageUrl(req, res, next) {
    if (!req.originalUrl.startsWith(prefix) || !['GET', 'HEAD', 'PUT'].includes(req.method)) return next()
    tenantry.storage.serveSigned({ method: req.method, url: req.originalUrl, headers: req.headers, body: req.method === 'PUT' ? req : undefined }).then((r) => {
      res.status(r.status).set(r.headers)
      if (r.body === null || typeof r.body === 'string') res.end(r.body ?? undefined)
      else r.body.pipe(res)
    }, (err) => {
      const { status, headers, body } = errorReply(err)
      res.status(status).set(headers).json(body)
    })
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
export { tenantryPluginRouter, type TenantryPlugin } from './plugins.ts'
