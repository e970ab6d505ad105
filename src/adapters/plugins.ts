import { Router, type NextFunction, type Request, type Response } from 'express'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { pluginFailure, type PluginContext, type PluginCore } from '../config/plugins.ts'
import { TenantryError } from '../core/errors.ts'
import type { Tenantry } from '../runtime.ts'

/**
 * A Tenantry plugin: a named, versioned module with settings of its own, routes (Fastify and/or
 * Express), a hook on every request of a tenant that has it, and lifecycle event handlers. A
 * tenant has it when its configuration says `plugins.<name>.enabled: true` — per plan or per
 * tenant (docs/plugins.md).
 *
 * @example
 * ```ts
 * const hello: TenantryPlugin = {
 *   name: 'hello', version: '1.0.0',
 *   settingsSchema: { type: 'object', properties: { greeting: { type: 'string', default: 'Hello' } } },
 *   fastify(scope) { scope.get('/', async (req) => ({ text: `${req.plugin.settings.greeting}, ${req.tenant.name}` })) },
 * }
 * const tenantry = await createTenantry({ plugins: [hello] })
 * await app.register(tenantryPlugin, { tenantry })
 * await app.register(tenantryPluginRoutes, { tenantry })   // GET /plugins/hello
 * ```
 */
export interface TenantryPlugin extends PluginCore {
  /** Routes in an encapsulated Fastify scope under `/plugins/<name>`; `request.plugin` is the tenant's context. */
  fastify?(scope: FastifyInstance): void | Promise<void>
  /** Routes on an Express router mounted at `/plugins/<name>`; `req.plugin` is the tenant's context. */
  express?(router: Router): void
  /** Runs before the handler of every request of a tenant that has the plugin (any route). */
  onRequest?(ctx: PluginContext, request: FastifyRequest | Request): void | Promise<void>
}

declare module 'fastify' {
  interface FastifyRequest {
    /** In a plugin's routes: the plugin, the tenant and its settings of the plugin. */
    plugin: PluginContext
  }
}

declare global {
  // eslint-disable-next-line @typescript-eslint/no-namespace
  namespace Express {
    interface Request {
      /** In a plugin's routes: the plugin, the tenant and its settings of the plugin. */
      plugin?: PluginContext
    }
  }
}

function notFound(method: string, url: string): TenantryError {
  return new TenantryError('NOT_FOUND', `Route ${method} ${url.split('?')[0]} not found.`)
}

function withHook(plugin: PluginCore): plugin is TenantryPlugin & { onRequest: NonNullable<TenantryPlugin['onRequest']> } {
  return typeof (plugin as TenantryPlugin).onRequest === 'function'
}

async function pluginRoutes(app: FastifyInstance, opts: { tenantry: Tenantry }): Promise<void> {
  const { tenantry } = opts
  const plugins = tenantry.plugins.list() as TenantryPlugin[]
  app.decorateRequest('plugin', null as unknown as PluginContext)
  const hooked = plugins.filter(withHook)
  if (hooked.length > 0) {
    app.addHook('preHandler', async function tenantryPluginHooks(request) {
      if (!request.tenant) return
      for (const p of hooked) {
        const ctx = tenantry.plugins.contextFor(request.tenant, p.name)
        if (!ctx) continue
        try {
          await p.onRequest(ctx, request)
        } catch (err) {
          throw pluginFailure(p.name, err)
        }
      }
    })
  }
  for (const p of plugins) {
    if (typeof p.fastify !== 'function') continue
    await app.register(async function tenantryPluginScope(scope) {
      // A tenant without the plugin gets the 404 of a route that does not exist.
      scope.addHook('onRequest', async function tenantryPluginGate(request: FastifyRequest) {
        const ctx = request.tenant ? tenantry.plugins.contextFor(request.tenant, p.name) : null
        if (!ctx) throw notFound(request.method, request.url)
        request.plugin = ctx
      })
      scope.setErrorHandler(function tenantryPluginError(err: unknown, request: FastifyRequest, reply: FastifyReply) {
        // Fastify's own 4xx (validation of the plugin's schemas) stay what they are.
        const status = (err as { statusCode?: number }).statusCode
        const e = typeof status === 'number' && status < 500 && !(err instanceof TenantryError) ? err : pluginFailure(p.name, err)
        if (e instanceof TenantryError && e.status >= 500) request.log.error({ err, plugin: p.name, tenant: request.tenant?.id }, 'plugin failed')
        reply.send(e)
      })
      await p.fastify!(scope)
    }, { prefix: `/plugins/${p.name}` })
  }
}

/**
 * Fastify plugin mounting every Tenantry plugin's routes under `/plugins/<name>` (each in its own
 * encapsulated scope) and running their request hooks. Register it after `tenantryPlugin`. A
 * tenant without a plugin gets 404 from its routes and its hook does not run; a plugin that
 * throws fails only that request, with `PLUGIN_FAILED` naming it.
 *
 * @example
 * ```ts
 * await app.register(tenantryPlugin, { tenantry })
 * await app.register(tenantryPluginRoutes, { tenantry })
 * ```
 */
export const tenantryPluginRoutes = fp(pluginRoutes, { name: 'tenantry-plugins', fastify: '5.x', dependencies: ['tenantry'] })

/**
 * Express router of every Tenantry plugin's routes (under `/plugins/<name>`) and request hooks.
 * Mount it after `tenantryMiddleware` and before your routes; errors go to `next(err)` (use
 * `tenantryErrorHandler`).
 *
 * @example
 * ```ts
 * app.use(tenantryMiddleware(tenantry))
 * app.use(tenantryPluginRouter(tenantry))
 * ```
 */
export function tenantryPluginRouter(tenantry: Tenantry): Router {
  const root = Router()
  const plugins = tenantry.plugins.list() as TenantryPlugin[]
  const hooked = plugins.filter(withHook)
  if (hooked.length > 0) {
    root.use(function tenantryPluginHooks(req: Request, _res: Response, next: NextFunction) {
      if (!req.tenant) return next()
      const tenant = req.tenant
      ;(async () => {
        for (const p of hooked) {
          const ctx = tenantry.plugins.contextFor(tenant, p.name)
          if (!ctx) continue
          try {
            await p.onRequest(ctx, req)
          } catch (err) {
            throw pluginFailure(p.name, err)
          }
        }
      })().then(() => next(), next)
    })
  }
  for (const p of plugins) {
    if (typeof p.express !== 'function') continue
    const router = Router()
    router.use(function tenantryPluginGate(req: Request, _res: Response, next: NextFunction) {
      const ctx = req.tenant ? tenantry.plugins.contextFor(req.tenant, p.name) : null
      if (!ctx) return next(notFound(req.method, req.originalUrl))
      req.plugin = ctx
      next()
    })
    p.express(router)
    router.use(function tenantryPluginError(err: unknown, _req: Request, _res: Response, next: NextFunction) {
      next(pluginFailure(p.name, err))
    })
    root.use(`/plugins/${p.name}`, router)
  }
  return root
}
