import compress from '@fastify/compress'
import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import { Ajv, type Options as AjvOptions } from 'ajv'
import addFormats from 'ajv-formats'
import { resolve as resolvePath } from 'node:path'
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { TenantryError } from '../core/errors.ts'
import { errorReply } from '../adapters/http-errors.ts'
import type { Tenantry } from '../runtime.ts'
import { createAdminAuthenticator, type AdminAuthOptions } from './auth.ts'
import type { AdminContext, AdminRoutes } from './context.ts'
import { consoleRoutes } from './console.ts'
import { roleAllows, adminTokens, type AdminRole } from './tokens.ts'
import { onBehalfOfRequest } from '../audit/index.ts'
import { auditRoutes } from './routes/audit.ts'
import { configRoutes } from './routes/config.ts'
import { fleetRoutes } from './routes/fleet.ts'
import { migrationRoutes } from './routes/migrations.ts'
import { operationRoutes } from './routes/operations.ts'
import { tenantRoutes } from './routes/tenants.ts'
import { tokenRoutes } from './routes/tokens.ts'
import { usageRoutes } from './routes/usage.ts'
import { credentialRoutes } from './routes/credentials.ts'
import { moveRoutes } from './routes/moves.ts'
import { portabilityRoutes } from './routes/portability.ts'
import { signInRoutes } from './routes/sign-in.ts'

/** Options of {@link tenantryAdmin}. */
export interface TenantryAdminOptions {
  tenantry: Tenantry
  /** Admin tokens (default) and/or OIDC JWTs. */
  auth?: AdminAuthOptions
  /** Serve the web console at the plugin's root (`/admin/`). Default true. */
  console?: boolean
  /** Serve the OpenAPI 3.1 document at `openapi.json` and Swagger UI at `docs`. Default true. */
  docs?: boolean
  /**
   * Where the API may write backups and exports: directories by name (`{ nightly: '/var/backups/tenantry' }`);
   * a request names one (`target`), never a path. Without it, the library's backup directory
   * (`portability.backupDir`, `TENANTRY_BACKUP_DIR`, else `./backups`).
   */
  backups?: { targets?: Record<string, string> }
  /** Route modules of capabilities added later (config, backups…): each registers its resource's routes under `api/`. */
  routes?: AdminRoutes[]
}

/** The route modules of the admin API, one per resource. */
export const ADMIN_ROUTES: readonly AdminRoutes[] = [fleetRoutes, tenantRoutes, configRoutes, operationRoutes, migrationRoutes, usageRoutes, auditRoutes, tokenRoutes, credentialRoutes, moveRoutes, portabilityRoutes, signInRoutes]

// Bodies are taken as they are: an unknown field or a string for a number is a 400, never
// silently dropped or coerced (Fastify's default ajv would do both). Query strings and path
// parameters arrive as text and are coerced.
const AJV_BASE: AjvOptions = { allErrors: false, useDefaults: true, strict: true, strictTypes: false, strictTuples: false, keywords: ['example'] }
function compilers(): { body: Ajv; other: Ajv } {
  const body = new Ajv({ ...AJV_BASE, coerceTypes: false, removeAdditional: false })
  const other = new Ajv({ ...AJV_BASE, coerceTypes: 'array', removeAdditional: false })
  addFormats.default(body)
  addFormats.default(other)
  return { body, other }
}

/** The field a validation error names, from ajv's error. */
function invalidField(err: FastifyError): { field: string; in: string; rule: string; message: string } {
  const v = err.validation?.[0]
  const where = err.validationContext ?? 'body'
  if (!v) return { field: '', in: where, rule: 'invalid', message: err.message }
  const params = v.params as Record<string, unknown>
  const path = v.instancePath.replace(/^\//, '').replace(/\//g, '.')
  if (v.keyword === 'additionalProperties') {
    const field = [path, String(params.additionalProperty)].filter(Boolean).join('.')
    return { field, in: where, rule: 'unknown', message: `Unknown field '${field}' in the ${where}; remove it (see the OpenAPI document).` }
  }
  if (v.keyword === 'required') {
    const field = [path, String(params.missingProperty)].filter(Boolean).join('.')
    return { field, in: where, rule: 'required', message: `The ${where} needs '${field}'.` }
  }
  return { field: path, in: where, rule: v.keyword, message: `${where}.${path} ${v.message ?? 'is invalid'}.` }
}

/** Coded error replies; a validation error says which field. */
function adminErrorHandler(err: FastifyError, request: FastifyRequest, reply: FastifyReply): void {
  let e: unknown = err
  if (err.validation) {
    const f = invalidField(err)
    e = new TenantryError('VALIDATION_FAILED', f.message, { details: { field: f.field, in: f.in, rule: f.rule } })
  }
  const { status, headers, body } = errorReply(e)
  if (status >= 500) request.log.error({ err }, 'admin request failed')
  reply.code(status).headers(headers).send(body)
}

/** The configured backup targets, checked once: a name a request may give, and an absolute directory. */
function backupTargets(targets: Record<string, string> | undefined): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [name, dir] of Object.entries(targets ?? {})) {
    if (!/^[a-z][a-z0-9_-]{0,62}$/.test(name) || typeof dir !== 'string' || dir.length === 0) {
      throw new TenantryError('CONFIG_INVALID', `tenantryAdmin: backups.targets needs names of lowercase letters, digits, - and _ mapped to directories; '${name}' is not.`)
    }
    out[name] = dir.startsWith('s3://') ? dir : resolvePath(dir)
  }
  return out
}

async function tenantryAdminPlugin(app: FastifyInstance, opts: TenantryAdminOptions): Promise<void> {
  const { tenantry } = opts
  if (!tenantry) throw new TenantryError('CONFIG_INVALID', 'tenantryAdmin needs { tenantry }.')
  const tokens = opts.auth?.tokens === false ? null : await adminTokens(tenantry)
  const authenticate = createAdminAuthenticator(opts.auth ?? {}, tokens)
  if (!tokens && !opts.auth?.jwt) throw new TenantryError('CONFIG_INVALID', 'tenantryAdmin: with admin tokens off, auth.jwt is required (no one could sign in).')

  // The console's scripts and the API's pages, gzip/brotli when the client takes it (the SSE stream is written raw).
  await app.register(compress, { global: true, threshold: 1024 })
  const ajv = compilers()
  app.setValidatorCompiler(({ schema, httpPart }) => (httpPart === 'body' ? ajv.body : ajv.other).compile(schema))
  app.setErrorHandler(adminErrorHandler)
  const adminNotFound = async function adminNotFound(request: FastifyRequest, reply: FastifyReply) {
    return reply.code(404).send(new TenantryError('NOT_FOUND', `No admin route ${request.method} ${request.url.split('?')[0]}; the OpenAPI document lists them.`).toJSON())
  }
  app.setNotFoundHandler({}, adminNotFound)
  // Every route of this plugin is an admin route: the tenant plugin (when the app has one) skips it.
  // Routes under api/ need a role (viewer unless they say more); the console's files, the OpenAPI
  // document and Swagger UI hold no data and are public.
  const apiPrefix = `${app.prefix}/api/`
  app.addHook('onRoute', function markAdminRoute(route) {
    const config = (route.config ?? {}) as { adminRole?: AdminRole | 'public' }
    route.config = { ...config, tenantryAdmin: true, adminRole: config.adminRole ?? (route.url.startsWith(apiPrefix) ? 'viewer' : 'public') }
  })
  app.decorateRequest('admin', null as never)
  // An action without a body (resume, restore) is an empty one; its schema still refuses unknown fields.
  app.addHook('preValidation', async function emptyBody(request) {
    if (request.body === undefined && (request.method === 'POST' || request.method === 'DELETE')) request.body = {}
  })
  app.addHook('onRequest', async function tenantryAdminAuth(request) {
    const needed = request.routeOptions.config?.adminRole ?? 'viewer'
    if (needed === 'public') return
    const principal = await authenticate(request.headers.authorization)
    if (!roleAllows(principal.role, needed)) {
      throw new TenantryError('ADMIN_FORBIDDEN', `This needs the ${needed} role; ${principal.actor} is ${principal.role}.`, { details: { needed, role: principal.role } })
    }
    request.admin = principal
  })

  if (opts.docs !== false) {
    await app.register(swagger, {
      openapi: {
        openapi: '3.1.0',
        info: { title: 'Tenantry admin API', version: '1', description: 'Control plane of a Tenantry fleet: tenants, configuration, flags, branding, domains, operations, migrations, usage, audit. Every error has a stable `code`.' },
        components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'an admin token (tnta_…) or an admin JWT' } } },
        security: [{ bearer: [] }],
      },
    })
    await app.register(swaggerUi, { routePrefix: '/docs', indexPrefix: app.prefix, uiConfig: { persistAuthorization: false } })
    app.get('/openapi.json', { schema: { hide: true }, config: { adminRole: 'public' } }, async function openapiDocument() {
      return app.swagger()
    })
  }

  const ctx: AdminContext = {
    tenantry,
    tokens,
    backupTargets: backupTargets(opts.backups?.targets),
    liveProgress: new Map(),
    authenticate,
    async audited(request, what, change) {
      const result = await onBehalfOfRequest(request.id, change)
      const tenant = what.tenant?.(result) ?? what.before ?? null
      // After the change succeeded (a route's own action with no transaction to append in; docs/audit.md).
      await tenantry.audit.append({
        actor: request.admin.actor,
        action: what.action,
        tenantId: tenant?.id ?? null,
        slug: tenant?.slug ?? null,
        requestId: request.id,
        before: what.before,
        after: what.after?.(result),
        details: what.details?.(result),
      })
      return result
    },
  }
  await app.register(async function adminApi(api) {
    for (const routes of [...ADMIN_ROUTES, ...(opts.routes ?? [])]) await routes(api, ctx)
  }, { prefix: '/api' })
  if (opts.console !== false) await consoleRoutes(app)
  // Under a prefix, every other path of it is this plugin's too: a catch-all route (a real route,
  // marked as an admin one) answers it, so a tenant plugin in the same app never tries to resolve a
  // tenant for an unknown /admin/… URL (a not-found handler carries no route config to skip it by).
  if (app.prefix) app.all('/*', { schema: { hide: true }, config: { adminRole: 'public' } }, adminNotFound)
}

/**
 * The admin REST API (OpenAPI 3.1 at `openapi.json`, Swagger UI at `docs`) and the web console,
 * as a Fastify plugin mounted under a prefix of your app. Register it outside the tenant plugin's
 * reach or beside it: its routes never resolve a tenant.
 *
 * @example
 * ```ts
 * import { tenantryAdmin } from 'tenantry/admin'
 * await app.register(tenantryAdmin, { prefix: '/admin', tenantry })
 * // curl -H "authorization: Bearer $TOKEN" http://localhost:3000/admin/api/tenants?status=active
 * ```
 */
export const tenantryAdmin = Object.assign(tenantryAdminPlugin, { [Symbol.for('fastify.display-name')]: 'tenantry-admin' })
export default tenantryAdmin
export { adminTokens, AdminTokens, ADMIN_ROLES, type AdminRole, type AdminToken } from './tokens.ts'
export type { AdminContext, AdminRoutes, AuditedAction } from './context.ts'
export type { AdminAuthOptions, AdminJwtOptions, AdminPrincipal } from './auth.ts'
