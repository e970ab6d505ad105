import type { Tier } from '../../core/types.ts'
import { tenantJson } from '../../cli/format.ts'
import type { AdminRoutes } from '../context.ts'
import { onBehalfOfRequest } from '../../audit/index.ts'
import { errors, slugParam } from '../schemas.ts'

const TAG = ['moves']

const moveBody = {
  type: 'object',
  required: ['tier'],
  additionalProperties: false,
  properties: {
    tier: { type: 'string', enum: ['pooled', 'schema', 'database'] },
    server: { type: 'string', pattern: '^[a-z][a-z0-9_-]{0,62}$' },
    force: { type: 'boolean', description: "move to a server outside the tenant's region (audited)" },
    graceMs: { type: 'integer', minimum: 0, maximum: 30 * 24 * 3_600_000, description: 'how long the old room is kept for rollback' },
  },
} as const

/**
 * Moves (docs/moves.md): `POST /tenants/:slug/move` runs the same `tenantry.move()` the CLI does
 * (it appends its own audit entry in the switch's transaction); 409 `MOVE_IN_PROGRESS` while
 * another operation of the tenant runs.
 */
export const moveRoutes: AdminRoutes = (app, ctx) => {
  const { tenantry } = ctx
  app.post('/tenants/:slug/move', {
    schema: { tags: TAG, summary: 'Move a tenant to another tier and/or server (a durable operation)', params: slugParam, body: moveBody, response: { 200: { type: 'object', additionalProperties: true }, ...errors(404, 409) } },
    config: { adminRole: 'operator' },
  }, async function moveTenant(request) {
    const body = request.body as { tier: Tier; server?: string; force?: boolean; graceMs?: number }
    const r = await onBehalfOfRequest(request.id, () => tenantry.move((request.params as { slug: string }).slug, { ...body, startedBy: request.admin.actor }))
    return { ...r, tenant: tenantJson(r.tenant) }
  })

  app.post('/tenants/:slug/move/rollback', {
    schema: { tags: TAG, summary: "Move a tenant back to the room its last move kept (within the grace period)", params: slugParam, response: { 200: { type: 'object', additionalProperties: true }, ...errors(404, 409) } },
    config: { adminRole: 'operator' },
  }, async function rollBackMove(request) {
    const r = await onBehalfOfRequest(request.id, () => tenantry.moves.rollback((request.params as { slug: string }).slug, { startedBy: request.admin.actor }))
    return { ...r, tenant: tenantJson(r.tenant) }
  })
}
