import type { FastifyInstance, FastifyReply, FastifyRequest, FastifyError } from 'fastify'
import fp from 'fastify-plugin'
import type { TenantScope } from '../context/context.ts'
import type { Tenant } from '../core/types.ts'
import { hasTenantMixin } from '../observe/logger.ts'
import type { TenantHandle } from '../data/tenant-handle.ts'
import type { JsonObject } from '../config/merge.ts'
import type { Tenantry } from '../runtime.ts'
import type { AdmitRequest } from '../guard/users.ts'
import type { RequestInfo } from '../resolve/request-info.ts'
import { admitRequest, type AdmitSteps } from './admit-request.ts'
import { errorReply } from './http-errors.ts'
import { SIGNED_URL_PATH } from '../storage/signed-urls.ts'
import type { Readable } from 'node:stream'

declare module 'fastify' {
  interface FastifyRequest {
    /** The tenant of this request (set by the Tenantry plugin). */
    tenant: Tenant
    /** Tenant data, already scoped to `request.tenant`. */
    db: TenantHandle
    /** The tenant's merged configuration (defaults ← plan ← tenant; docs/config.md), read when first used. */
    readonly tenantConfig: JsonObject
  }
  interface FastifyContextConfig {
    /** Rate-limit points a request to this route costs (default 1): `{ config: { tenantryCost: 5 } }`. */
    tenantryCost?: number
    /** Set by the Tenantry plugin on its own routes served without a tenant (`/metrics`, presigned storage URLs). */
    tenantryNoTenant?: boolean
  }
}

export interface TenantryFastifyOptions {
  tenantry: Tenantry
  /** Requests this returns true for are served without a tenant (health checks, public pages). */
  skip?: (request: FastifyRequest) => boolean
  /** Install Tenantry's error handler (coded JSON bodies, Retry-After). Default true. */
  errorHandler?: boolean
  /**
   * Serve Tenantry's Prometheus metrics (and whatever else is in its registry) at `/metrics`, or
   * at `path`, without tenant resolution. Off by default: expose it on an internal port or behind
   * your own auth (`onRequest`).
   */
  metrics?: boolean | { path?: string; onRequest?: (request: FastifyRequest, reply: FastifyReply) => Promise<void> | void }
  /**
   * Bind the tenant (`tenant`: slug, `tenantId`) to `request.log` for the handler's lines, when the
   * app's logger is on and does not already carry it (Tenantry's logger as `loggerInstance` does,
   * by its mixin). Default true.
   */
  logTenant?: boolean
  /**
   * Serve the local storage driver's presigned URLs at `/_tenantry/storage/*` (GET, HEAD, PUT),
   * without tenant resolution: the URL's signature names the tenant. Default: on with the local
   * driver, off with S3 (its URLs go to S3).
   */
  storageUrls?: boolean
}

const kScope = Symbol('tenantry.scope')
const kRoute = Symbol('tenantry.route')
/**
 * What the hooks keep on a request: its tenant scope (for the request's end) and its route
 * template. Fastify's `request.routeOptions` builds a new object of thirteen fields on every read,
 * so it is read once per request, in the resolution hook, not once per check and again at the end.
 */
type ScopedRequest = FastifyRequest & { [kScope]: TenantScope | null; [kRoute]: string | null }

/** One request's part in {@link admitRequest}. */
class FastifySteps implements AdmitSteps {
  private readonly path: string
  constructor(
    private readonly tenantry: Tenantry,
    private readonly request: FastifyRequest,
    private readonly reply: FastifyReply,
    private readonly done: (err?: Error) => void,
    private readonly logTenant: boolean,
  ) {
    const url = request.url
    const q = url.indexOf('?')
    this.path = q < 0 ? url : url.slice(0, q)
  }

  info(): RequestInfo {
    const headers = this.request.headers
    return { host: headers.host, path: this.path, headers, raw: this.request }
  }

  admission(): AdmitRequest {
    const r = this.request
    return { method: r.method, path: this.path, headers: r.headers, raw: r, cost: r.routeOptions.config?.tenantryCost }
  }

  requestId(): string | null {
    return this.request.id
  }

  found(tenant: Tenant, scope: TenantScope): void {
    const r = this.request as ScopedRequest
    r.tenant = tenant
    r.db = this.tenantry.handle(tenant)
    r[kScope] = scope
    if (this.logTenant) {
      const log = r.log
      if (log.level !== 'silent' && !hasTenantMixin(log)) r.log = log.child({ tenant: tenant.slug, tenantId: tenant.id })
    }
  }

  headers(headers: Record<string, string>): void {
    this.reply.headers(headers)
  }

  onClose(release: () => void): void {
    // 'close' comes after the response is sent, and also when the client goes away first.
    this.reply.raw.once('close', release)
  }

  next(): void {
    // Later hooks and the handler are called from inside done(), so they run in the context.
    this.done()
  }

  refuse(err: unknown): void {
    this.done(err as Error)
  }
}

async function tenantryFastify(fastify: FastifyInstance, opts: TenantryFastifyOptions): Promise<void> {
  const { tenantry, skip } = opts
  const logTenant = opts.logTenant !== false
  fastify.decorateRequest('tenant', null as unknown as Tenant)
  fastify.decorateRequest('db', null as unknown as TenantHandle)
  // Declared, so every request has them from its construction (one object shape).
  fastify.decorateRequest(kScope as unknown as string, null)
  fastify.decorateRequest(kRoute as unknown as string, null)
  // A getter: a request that never reads its configuration does not pay for it.
  fastify.decorateRequest('tenantConfig', {
    getter(this: FastifyRequest) {
      return (this.tenant ? tenantry.config.of(this.tenant) : undefined) as JsonObject
    },
  })

  const metrics = opts.metrics ? (typeof opts.metrics === 'object' ? opts.metrics : {}) : null
  const metricsPath = metrics ? (metrics.path ?? '/metrics') : null
  if (metrics && metricsPath) {
    const registry = tenantry.observe.metricsRegistry('tenantryPlugin({ metrics: true })')
    fastify.get(metricsPath, { onRequest: metrics.onRequest, config: { tenantryNoTenant: true } }, async function tenantryMetrics(_request, reply) {
      const text = await registry.metrics()
      return reply.type(registry.contentType).send(text)
    })
  }

  const storageUrls = opts.storageUrls ?? tenantry.storage.driver.kind === 'local'
  const storageRoute = storageUrls ? `${SIGNED_URL_PATH}/*` : null
  if (storageRoute !== null) {
    // Its own context: uploads of any content type arrive as the raw stream, unparsed.
    await fastify.register(async function tenantryStorageUrls(child) {
      child.removeAllContentTypeParsers()
      child.addContentTypeParser('*', function passThrough(_request, payload, done) { done(null, payload) })
      child.route({
        method: ['GET', 'PUT'], // HEAD comes with GET
        url: storageRoute,
        config: { tenantryNoTenant: true },
        handler: async function tenantryStorageUrl(request, reply) {
          try {
            const body = request.method === 'PUT' ? ((request.body as Readable | undefined) ?? request.raw) : undefined
            const r = await tenantry.storage.serveSigned({ method: request.method, url: request.url, headers: request.headers, body })
            return reply.code(r.status).headers(r.headers).send(r.body ?? undefined)
          } catch (err) {
            const e = errorReply(err)
            return reply.code(e.status).headers(e.headers).send(e.body)
          }
        },
      })
    })
  }

  fastify.addHook('onRequest', function tenantryResolve(request, reply, done) {
    const config = request.routeOptions.config as (typeof request.routeOptions.config & { url?: string; tenantryAdmin?: unknown }) | undefined
    ;(request as ScopedRequest)[kRoute] = config?.url ?? null
    // The admin API (tenantry/admin) never runs a tenant's resolution chain, nor do /metrics and
    // presigned storage URLs (signed for their tenant).
    if (skip?.(request) || config?.tenantryAdmin || config?.tenantryNoTenant) return done()
    admitRequest(tenantry, new FastifySteps(tenantry, request, reply, done, logTenant))
  })

  const observe = tenantry.observe
  if (observe.measuresRequests) {
    fastify.addHook('onResponse', function tenantryObserve(request, reply, done) {
      const r = request as ScopedRequest
      observe.requestEnded(r[kScope], request.method, r[kRoute], reply.statusCode, reply.elapsedTime / 1000)
      done()
    })
  }

  if (opts.errorHandler !== false) {
    fastify.setErrorHandler(function tenantryErrorHandler(err: FastifyError, request: FastifyRequest, reply: FastifyReply) {
      const { status, headers, body, quiet } = errorReply(err)
      if (status >= 500 && !quiet) request.log.error({ err, tenant: request.tenant?.id }, 'request failed')
      reply.code(status).headers(headers).send(body)
    })
  }
}

/**
 * Fastify plugin: resolves each request's tenant, decorates `request.tenant` and the scoped
 * `request.db`, and runs the rest of the request in the tenant's context.
 *
 * @example
 * ```ts
 * await app.register(tenantryPlugin, { tenantry, skip: (req) => req.url === '/health' })
 * app.get('/api/projects', (req) => req.db.query('SELECT id, name FROM projects').then((r) => r.rows))
 * ```
 */
export const tenantryPlugin = fp(tenantryFastify, { name: 'tenantry', fastify: '5.x' })
export default tenantryPlugin
export { tenantryPluginRoutes, type TenantryPlugin } from './plugins.ts'
