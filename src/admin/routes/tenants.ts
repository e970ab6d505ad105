import type { FastifyRequest } from 'fastify'
import { onBehalfOfRequest, type AuditActor } from '../../audit/index.ts'
import { TenantryError } from '../../core/errors.ts'
import type { Tenant, TenantStatus, Tier } from '../../core/types.ts'
import { tenantJson } from '../../cli/format.ts'
import type { AdminContext, AdminRoutes } from '../context.ts'
import type { CustomDomain } from '../../config/index.ts'
import { SERVER_PATTERN, SLUG_PATTERN, domainSchema, emptyBody, errors, slugParam, tenantSchema } from '../schemas.ts'

const TAG = ['tenants']

const listQuery = {
  type: 'object',
  additionalProperties: false,
  properties: {
    status: { type: 'string', enum: ['provisioning', 'active', 'suspended', 'deleted'] },
    tier: { type: 'string', enum: ['pooled', 'schema', 'database'] },
    server: { type: 'string', pattern: SERVER_PATTERN },
    plan: { type: 'string', minLength: 1, maxLength: 100 },
    q: { type: 'string', maxLength: 100, description: 'slug prefix or part of the name' },
    cursor: { type: 'string', maxLength: 200, description: 'the `next` of the previous page' },
    limit: { type: 'integer', minimum: 1, maximum: 200, default: 50 },
  },
} as const

const createBody = {
  type: 'object',
  required: ['slug', 'tier'],
  additionalProperties: false,
  properties: {
    slug: { type: 'string', pattern: SLUG_PATTERN },
    tier: { type: 'string', enum: ['pooled', 'schema', 'database'] },
    name: { type: 'string', minLength: 1, maxLength: 200 },
    plan: { type: 'string', minLength: 1, maxLength: 100 },
    server: { type: 'string', pattern: SERVER_PATTERN },
    region: { type: 'string', minLength: 1, maxLength: 100 },
  },
} as const

const reasonBody = {
  type: 'object',
  additionalProperties: false,
  properties: { reason: { type: 'string', maxLength: 500 } },
} as const

const purgeBody = {
  type: 'object',
  additionalProperties: false,
  properties: { force: { type: 'boolean', default: false, description: 'purge before the retention period ends, or a tenant that was not deleted' } },
} as const

const domainBody = {
  type: 'object',
  required: ['domain'],
  additionalProperties: false,
  properties: { domain: { type: 'string', minLength: 3, maxLength: 253, pattern: '^(?=.{3,253}$)([a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\\.)+[a-zA-Z]{2,63}$' } },
} as const

const verifyBody = {
  type: 'object',
  additionalProperties: false,
  properties: { method: { type: 'string', enum: ['dns', 'http', 'any'], default: 'any', description: 'where to look for the token' } },
} as const

const tenantReply = { 200: tenantSchema, ...errors(404, 409) }

/** The tenant a path names, or 404: destructive actions on a missing tenant change nothing. */
async function mustFind(ctx: AdminContext, slug: string): Promise<Tenant> {
  const t = await ctx.tenantry.findTenant(slug)
  if (!t) throw new TenantryError('TENANT_NOT_FOUND', `No tenant has the slug '${slug}'.`)
  return t
}

const slugOf = (r: FastifyRequest) => (r.params as { slug: string }).slug

/** Tenants: create with a tier, list (filters, keyset cursor), show, suspend/resume, delete/restore, purge, domains. */
export const tenantRoutes: AdminRoutes = (app, ctx) => {
  const { tenantry } = ctx

  app.get('/tenants', {
    schema: { tags: TAG, summary: 'List tenants, a page at a time (slug order)', querystring: listQuery },
  }, async function listTenants(request) {
    const q = request.query as { status?: TenantStatus; tier?: Tier; server?: string; plan?: string; q?: string; cursor?: string; limit: number }
    const page = await tenantry.catalog.page({ status: q.status, tier: q.tier, server: q.server, plan: q.plan, search: q.q, cursor: q.cursor, limit: q.limit })
    return { tenants: page.tenants.map(tenantJson), next: page.next }
  })

  app.post('/tenants', {
    schema: { tags: TAG, summary: 'Provision a tenant on a tier (a durable operation)', body: createBody, response: { 201: tenantSchema, ...errors(409) } },
    config: { adminRole: 'operator' },
  }, async function createTenant(request, reply) {
    const body = request.body as { slug: string; tier: Tier; name?: string; plan?: string; server?: string; region?: string }
    // Its record is the operation's audit entries (start, outcome), with this request's id.
    const tenant = await onBehalfOfRequest(request.id, () => tenantry.provision(body, request.admin.actor))
    return reply.code(201).send(tenantJson(tenant))
  })

  app.get('/tenants/:slug', {
    schema: { tags: TAG, summary: 'One tenant with its domains and recent operations', params: slugParam, response: { 200: { type: 'object', additionalProperties: true }, ...errors(404) } },
  }, async function showTenant(request) {
    const tenant = await mustFind(ctx, slugOf(request))
    // A deleted tenant's domains no longer resolve and tenantry.domains does not list them.
    const [domains, audit] = await Promise.all([tenant.status === 'deleted' ? [] : tenantry.domains.list(tenant.id), tenantry.audit.list({ tenant: tenant.id, limit: 20 })])
    return { ...tenantJson(tenant), domains, audit }
  })

  // Status changes: the library appends the audit entry in the change's own transaction.
  const byOf = (request: FastifyRequest, details?: Record<string, unknown>): AuditActor => ({ actor: request.admin.actor, requestId: request.id, details })
  const action = (path: string, summary: string, run: (id: string, body: { reason?: string }, by: AuditActor) => Promise<Tenant>, body: object = emptyBody) => {
    app.post(`/tenants/:slug/${path}`, {
      schema: { tags: TAG, summary, params: slugParam, body, response: tenantReply },
      config: { adminRole: 'operator' },
    }, async function tenantAction(request) {
      const before = await mustFind(ctx, slugOf(request))
      const body = (request.body ?? {}) as { reason?: string }
      return tenantJson(await run(before.id, body, byOf(request, body.reason ? { reason: body.reason } : undefined)))
    })
  }
  action('suspend', 'Suspend: its requests get 403 TENANT_SUSPENDED; data untouched', (id, b, by) => tenantry.suspend(id, b.reason, by), reasonBody)
  action('resume', 'Serve a suspended tenant again', (id, _b, by) => tenantry.resume(id, by))
  action('restore', 'Undo a soft delete (the tenant comes back suspended)', (id, _b, by) => tenantry.restore(id, by))

  app.delete('/tenants/:slug', {
    schema: { tags: TAG, summary: 'Soft delete: no longer served (404), data kept for the retention period', params: slugParam, response: tenantReply },
    config: { adminRole: 'operator' },
  }, async function deleteTenant(request) {
    const before = await mustFind(ctx, slugOf(request))
    return tenantJson(await tenantry.delete(before.id, byOf(request)))
  })

  app.post('/tenants/:slug/purge', {
    schema: { tags: TAG, summary: "Remove a deleted tenant's data and catalog row for good", params: slugParam, body: purgeBody, response: { 200: { type: 'object', additionalProperties: true }, ...errors(404, 409) } },
    config: { adminRole: 'admin' },
  }, async function purgeTenant(request) {
    const before = await mustFind(ctx, slugOf(request))
    const { force } = request.body as { force: boolean }
    const r = await onBehalfOfRequest(request.id, () => tenantry.purge(before.id, { force, startedBy: request.admin.actor }))
    return { tenant: tenantJson(r.tenant), operationId: r.operationId, removed: r.removed }
  })

  // Custom domains through tenantry.domains (one implementation with `tenantry domains`): added
  // pending with a verification token, resolving only once verified.
  const domainParams = { type: 'object', required: ['slug', 'domain'], additionalProperties: false, properties: { slug: slugParam.properties.slug, domain: domainBody.properties.domain } } as const
  /** The tenant's domain a path names, or 404: another tenant's domain is not this one's to verify or remove. */
  const ownDomain = async (request: FastifyRequest): Promise<{ tenant: Tenant; domain: CustomDomain }> => {
    const tenant = await mustFind(ctx, slugOf(request))
    const name = (request.params as { domain: string }).domain.toLowerCase()
    const domain = (await tenantry.domains.list(tenant.id)).find((d) => d.domain === name)
    if (!domain) throw new TenantryError('NOT_FOUND', `Tenant '${tenant.slug}' has no domain '${name}'.`, { details: { field: 'domain' } })
    return { tenant, domain }
  }

  app.get('/tenants/:slug/domains', {
    schema: { tags: TAG, summary: "The tenant's custom domains, pending or verified, with their verification instructions", params: slugParam, response: { 200: { type: 'array', items: domainSchema }, ...errors(404) } },
  }, async function listDomains(request) {
    const tenant = await mustFind(ctx, slugOf(request))
    return tenantry.domains.list(tenant.id)
  })

  app.post('/tenants/:slug/domains', {
    schema: { tags: TAG, summary: 'Claim a custom domain: pending, with a token to publish in DNS or over HTTP', params: slugParam, body: domainBody, response: { 201: domainSchema, ...errors(404, 409) } },
    config: { adminRole: 'operator' },
  }, async function addDomain(request, reply) {
    const tenant = await mustFind(ctx, slugOf(request))
    const { domain } = request.body as { domain: string }
    const added = await tenantry.domains.add(tenant.id, domain, { actor: request.admin.actor, requestId: request.id })
    return reply.code(201).send(added)
  })

  app.post('/tenants/:slug/domains/:domain/verify', {
    schema: {
      tags: TAG, summary: "Look for the domain's token (DNS TXT, then HTTP) and let it resolve; 400 DOMAIN_VERIFICATION_FAILED says what was found",
      params: domainParams, body: verifyBody, response: { 200: domainSchema, ...errors(404, 409) },
    },
    config: { adminRole: 'operator' },
  }, async function verifyDomain(request) {
    const { tenant, domain } = await ownDomain(request)
    if (domain.status === 'verified') return domain
    const { method } = request.body as { method: 'dns' | 'http' | 'any' }
    return tenantry.domains.verify(domain.domain, { method }, { actor: request.admin.actor, requestId: request.id })
  })

  app.delete('/tenants/:slug/domains/:domain', {
    schema: { tags: TAG, summary: 'Remove a custom domain (pending or verified): every process stops resolving it within a second', params: domainParams, response: { 200: { type: 'array', items: domainSchema }, ...errors(404) } },
    config: { adminRole: 'operator' },
  }, async function removeDomain(request) {
    const { tenant, domain } = await ownDomain(request)
    await tenantry.domains.remove(domain.domain, { actor: request.admin.actor, requestId: request.id })
    return tenantry.domains.list(tenant.id)
  })
}
