import type { FastifyInstance, FastifyReply, FastifyRequest, FastifyError } from 'fastify'
import fp from 'fastify-plugin'
import type { Tenant } from '../core/types.ts'
import type { TenantHandle } from '../data/tenant-handle.ts'
import type { Tenantry } from '../runtime.ts'
import type { AdmitRequest } from '../guard/users.ts'
import type { RequestInfo } from '../resolve/request-info.ts'
import { admitRequest, type AdmitSteps } from './admit-request.ts'
import { errorReply } from './http-errors.ts'

declare module 'fastify' {
  interface FastifyRequest {
    /** The tenant of this request (set by the Tenantry plugin). */
    tenant: Tenant
    /** Tenant data, already scoped to `request.tenant`. */
    db: TenantHandle
  }
  interface FastifyContextConfig {
    /** Rate-limit points a request to this route costs (default 1): `{ config: { tenantryCost: 5 } }`. */
    tenantryCost?: number
  }
}

export interface TenantryFastifyOptions {
  tenantry: Tenantry
  /** Requests this returns true for are served without a tenant (health checks, public pages). */
  skip?: (request: FastifyRequest) => boolean
  /** Install Tenantry's error handler (coded JSON bodies, Retry-After). Default true. */
  errorHandler?: boolean
}

/** One request's part in {@link admitRequest}. */
class FastifySteps implements AdmitSteps {
  private readonly path: string
  constructor(
    private readonly tenantry: Tenantry,
    private readonly request: FastifyRequest,
    private readonly reply: FastifyReply,
    private readonly done: (err?: Error) => void,
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

  found(tenant: Tenant): void {
    this.request.tenant = tenant
    this.request.db = this.tenantry.handle(tenant)
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
  fastify.decorateRequest('tenant', null as unknown as Tenant)
  fastify.decorateRequest('db', null as unknown as TenantHandle)

  fastify.addHook('onRequest', function tenantryResolve(request, reply, done) {
    if (skip?.(request)) return done()
    admitRequest(tenantry, new FastifySteps(tenantry, request, reply, done))
  })

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
