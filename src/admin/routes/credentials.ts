import type { FastifyRequest } from 'fastify'
import type { AuditActor } from '../../audit/index.ts'
import type { AdminRoutes } from '../context.ts'
import { SLUG_PATTERN, errors, slugParam } from '../schemas.ts'

const TAG = ['security']
const NAME = { type: 'string', pattern: '^[a-z0-9][a-z0-9._-]{0,62}$' } as const
const itemParams = (item: string) => ({
  type: 'object', required: ['slug', item], additionalProperties: false,
  properties: { slug: { type: 'string', pattern: SLUG_PATTERN }, [item]: { type: 'string', minLength: 1, maxLength: 200 } },
}) as const
const anyObject = { type: 'object', additionalProperties: true } as const
const actorOf = (r: FastifyRequest): AuditActor => ({ actor: r.admin.actor, requestId: r.id })
const slugOf = (r: FastifyRequest) => (r.params as { slug: string }).slug

/** A tenant's API keys and client certificates over the API: the same library calls as `tenantry keys|certs`. */
export const credentialRoutes: AdminRoutes = (app, { tenantry }) => {
  app.get('/tenants/:slug/api-keys', {
    schema: { tags: TAG, summary: "The tenant's API keys (never the keys themselves)", params: slugParam, response: { 200: { type: 'array', items: anyObject }, ...errors(404) } },
  }, async function listApiKeys(request) {
    return tenantry.apiKeys.list(slugOf(request))
  })

  app.post('/tenants/:slug/api-keys', {
    schema: {
      tags: TAG, summary: 'Create an API key; the key is in this reply only', params: slugParam,
      body: {
        type: 'object', required: ['name'], additionalProperties: false,
        properties: {
          name: NAME,
          scopes: { type: 'array', maxItems: 50, items: { type: 'string', maxLength: 64 } },
          expiresAt: { type: 'string', format: 'date-time' },
        },
      },
      response: { 201: anyObject, ...errors(404, 409) },
    },
    config: { adminRole: 'operator' },
  }, async function createApiKey(request, reply) {
    const body = request.body as { name: string; scopes?: string[]; expiresAt?: string }
    const { key, info } = await tenantry.apiKeys.create(slugOf(request), {
      name: body.name, scopes: body.scopes ?? [], expiresAt: body.expiresAt === undefined ? null : new Date(body.expiresAt),
    }, actorOf(request))
    return reply.code(201).send({ key, ...info })
  })

  app.delete('/tenants/:slug/api-keys/:key', {
    schema: { tags: TAG, summary: 'Revoke an API key (by id or name); every process refuses it within a second', params: itemParams('key'), response: { 200: anyObject, ...errors(404) } },
    config: { adminRole: 'operator' },
  }, async function revokeApiKey(request) {
    return tenantry.apiKeys.revoke(slugOf(request), (request.params as { key: string }).key, actorOf(request))
  })

  app.get('/tenants/:slug/certificates', {
    schema: { tags: TAG, summary: "The tenant's client certificates (mutual TLS)", params: slugParam, response: { 200: { type: 'array', items: anyObject }, ...errors(404) } },
  }, async function listCertificates(request) {
    return tenantry.certificates.list(slugOf(request))
  })

  app.post('/tenants/:slug/certificates', {
    schema: {
      tags: TAG, summary: 'Bind a client certificate (pem) to the tenant by its SHA-256 fingerprint, or a tenant CA (ca) with a SAN and/or subject pattern', params: slugParam,
      body: {
        type: 'object', additionalProperties: false,
        properties: {
          pem: { type: 'string', minLength: 1, maxLength: 20_000 }, ca: { type: 'string', minLength: 1, maxLength: 20_000 },
          sanPattern: { type: 'string', minLength: 1, maxLength: 500 }, subjectPattern: { type: 'string', minLength: 1, maxLength: 500 }, name: NAME,
        },
      },
      response: { 201: anyObject, ...errors(404, 409) },
    },
    config: { adminRole: 'operator' },
  }, async function addCertificate(request, reply) {
    const body = request.body as { pem?: string; ca?: string; sanPattern?: string; subjectPattern?: string; name?: string }
    return reply.code(201).send(await tenantry.certificates.add(slugOf(request), body, actorOf(request)))
  })

  app.delete('/tenants/:slug/certificates/:cert', {
    schema: { tags: TAG, summary: 'Revoke a client certificate or CA binding (by fingerprint, id or name)', params: itemParams('cert'), response: { 200: anyObject, ...errors(404) } },
    config: { adminRole: 'operator' },
  }, async function revokeCertificate(request) {
    return tenantry.certificates.revoke(slugOf(request), (request.params as { cert: string }).cert, actorOf(request))
  })
}
