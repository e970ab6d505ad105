import { TOP_BY, type UsageGranularity } from '../../observe/types.ts'
import type { AdminRoutes } from '../context.ts'
import { SERVER_PATTERN, errors, slugParam } from '../schemas.ts'

const TAG = ['usage']
const rows = { type: 'array', items: { type: 'object', additionalProperties: true } } as const
const MAX_PERIOD_MS = 366 * 86_400_000

/** Usage per tenant and bucket, the top tenants, and placement advice. */
export const usageRoutes: AdminRoutes = (app, { tenantry }) => {
  app.get('/tenants/:slug/usage', {
    schema: {
      tags: TAG, summary: "A tenant's metered usage per bucket", params: slugParam,
      querystring: {
        type: 'object', additionalProperties: false,
        properties: {
          from: { type: 'string', format: 'date-time' },
          to: { type: 'string', format: 'date-time' },
          granularity: { type: 'string', enum: ['minute', 'hour', 'day'], default: 'hour' },
        },
      },
      response: { 200: rows, ...errors(404) },
    },
  }, async function tenantUsage(request) {
    const q = request.query as { from?: string; to?: string; granularity: UsageGranularity }
    const to = q.to ? new Date(q.to) : new Date()
    const from = q.from ? new Date(q.from) : new Date(to.getTime() - 24 * 3_600_000)
    return tenantry.usage({ tenant: (request.params as { slug: string }).slug, from, to, granularity: q.granularity })
  })

  app.get('/usage/top', {
    schema: {
      tags: TAG, summary: 'The busiest tenants of the period that ends now',
      querystring: {
        type: 'object', additionalProperties: false,
        properties: {
          by: { type: 'string', enum: [...TOP_BY], default: 'requests' },
          periodMs: { type: 'integer', minimum: 60_000, maximum: MAX_PERIOD_MS, default: 3_600_000 },
          server: { type: 'string', pattern: SERVER_PATTERN },
          limit: { type: 'integer', minimum: 1, maximum: 1000, default: 20 },
        },
      },
      response: { 200: rows, ...errors() },
    },
  }, async function topTenants(request) {
    return tenantry.top(request.query as Parameters<typeof tenantry.top>[0])
  })

  app.get('/advice', {
    schema: {
      tags: TAG, summary: 'Placement advice from usage (recommends only)',
      querystring: { type: 'object', additionalProperties: false, properties: { periodMs: { type: 'integer', minimum: 60_000, maximum: MAX_PERIOD_MS, default: 86_400_000 } } },
      response: { 200: rows, ...errors() },
    },
  }, async function advice(request) {
    return tenantry.advise({ periodMs: (request.query as { periodMs: number }).periodMs })
  })
}
