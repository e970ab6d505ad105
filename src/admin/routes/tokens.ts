import { TenantryError } from '../../core/errors.ts'
import type { AdminRoutes } from '../context.ts'
import { errors } from '../schemas.ts'

/** Admin tokens over the API (admin role): list, create (shown once), revoke. */
export const tokenRoutes: AdminRoutes = (app, { tokens }) => {
  const store = () => {
    if (!tokens) throw new TenantryError('NOT_FOUND', 'Admin tokens are turned off on this server (auth.tokens: false).')
    return tokens
  }
  const name = { type: 'string', pattern: '^[a-z0-9][a-z0-9._-]{0,62}$' } as const

  app.get('/tokens', {
    schema: { tags: ['admin'], summary: 'Admin tokens (never the tokens themselves)', response: { 200: { type: 'array', items: { type: 'object', additionalProperties: true } }, ...errors() } },
    config: { adminRole: 'admin' },
  }, async function listTokens() {
    return store().list()
  })

  app.post('/tokens', {
    schema: {
      tags: ['admin'], summary: 'Create an admin token; the token is in this reply only',
      body: { type: 'object', required: ['name', 'role'], additionalProperties: false, properties: { name, role: { type: 'string', enum: ['viewer', 'operator', 'admin'] } } },
      response: { 201: { type: 'object', additionalProperties: true }, ...errors(409) },
    },
    config: { adminRole: 'admin' },
  }, async function createToken(request, reply) {
    const body = request.body as { name: string; role: 'viewer' | 'operator' | 'admin' }
    const { token, info } = await store().create(body, request.admin.actor, request.id)
    return reply.code(201).send({ token, ...info })
  })

  app.delete('/tokens/:name', {
    schema: {
      tags: ['admin'], summary: 'Revoke an admin token',
      params: { type: 'object', required: ['name'], additionalProperties: false, properties: { name } },
      response: { 200: { type: 'object', additionalProperties: true }, ...errors(404) },
    },
    config: { adminRole: 'admin' },
  }, async function revokeToken(request) {
    return store().revoke((request.params as { name: string }).name, request.admin.actor, request.id)
  })
}
