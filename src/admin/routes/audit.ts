import type { AdminRoutes } from '../context.ts'
import { SLUG_PATTERN, UUID_PATTERN, errors } from '../schemas.ts'

/** The audit log: entries newest first (keyset by seq), and a check of its hash chain. */
export const auditRoutes: AdminRoutes = (app, { tenantry }) => {
  app.get('/audit', {
    schema: {
      tags: ['audit'], summary: 'Audit entries, newest first',
      querystring: {
        type: 'object', additionalProperties: false,
        properties: {
          tenant: { anyOf: [{ type: 'string', pattern: SLUG_PATTERN }, { type: 'string', pattern: UUID_PATTERN }], description: 'slug or id' },
          since: { type: 'string', format: 'date-time' },
          action: { type: 'string', pattern: '^[a-z.-]{1,60}$' },
          before: { type: 'integer', minimum: 1, description: 'the `next` of the previous page' },
          limit: { type: 'integer', minimum: 1, maximum: 500, default: 100 },
        },
      },
      response: { 200: { type: 'object', additionalProperties: true }, ...errors() },
    },
  }, async function listAudit(request) {
    const q = request.query as { tenant?: string; since?: string; action?: string; before?: number; limit: number }
    const entries = await tenantry.audit.list({ ...q, since: q.since ? new Date(q.since) : undefined })
    return { entries, next: entries.length === q.limit ? entries[entries.length - 1].seq : null }
  })

  app.get('/audit/verify', {
    schema: { tags: ['audit'], summary: 'Recompute the hash chain: detects an edited, deleted or cut-off entry', response: { 200: { type: 'object', additionalProperties: true }, ...errors() } },
    config: { adminRole: 'admin' },
  }, async function verifyAudit() {
    return tenantry.audit.verify()
  })
}
