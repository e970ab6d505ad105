import type { Server } from '../../core/types.ts'
import { redactUrl, type Tenantry } from '../../runtime.ts'
import type { AdminRoutes } from '../context.ts'
import { errors } from '../schemas.ts'

const open = { type: 'object', additionalProperties: true } as const

/** A server as the API shows it: never its URL's password. */
function serverJson(s: Server): Record<string, unknown> {
  return { name: s.name, url: redactUrl(s.url), region: s.region, capacityWeight: s.capacityWeight, mainDatabase: s.mainDatabase }
}

/** Connections in use on a server (all clients) and its limit; null where it cannot be read. */
async function serverConnections(tenantry: Tenantry, s: Server): Promise<{ used: number; max: number } | null> {
  try {
    const r = await tenantry.dataPlane.driver(s.name).admin(s.mainDatabase).query<{ used: number; max: number }>(
      "SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int AS used, current_setting('max_connections')::int AS max",
    )
    return r.rows[0] ? { used: Number(r.rows[0].used), max: Number(r.rows[0].max) } : null
  } catch {
    return null
  }
}

/** The fleet: overview (tenants by tier, server and status; servers with connection use), servers, plans, doctor. */
export const fleetRoutes: AdminRoutes = (app, { tenantry }) => {
  app.get('/overview', {
    schema: { tags: ['fleet'], summary: 'Tenants by tier, server and status; servers with connection use; running operations', response: { 200: open, ...errors() } },
  }, async function overview() {
    const [counts, servers, running] = await Promise.all([
      tenantry.catalog.counts(),
      tenantry.catalog.listServers(),
      tenantry.operations.list({ state: 'running', limit: 20 }),
    ])
    const pools = tenantry.dataPlane.stats()
    const budget = tenantry.dataPlane.opts.connectionBudget
    return {
      tenants: counts,
      servers: await Promise.all(servers.map(async (s) => ({
        ...serverJson(s),
        tenants: counts.filter((c) => c.server === s.name && c.status !== 'deleted').reduce((n, c) => n + c.count, 0),
        connections: await serverConnections(tenantry, s),
        pool: pools[s.name] ? { ...pools[s.name], budget } : null,
      }))),
      running,
    }
  })

  app.get('/servers', {
    schema: { tags: ['fleet'], summary: 'Servers of the fleet (passwords redacted)', response: { 200: { type: 'array', items: open }, ...errors() } },
  }, async function listServers() {
    return (await tenantry.catalog.listServers()).map(serverJson)
  })

  app.get('/plans', {
    schema: { tags: ['fleet'], summary: 'Plans and their settings (limits…)', response: { 200: { type: 'array', items: open }, ...errors() } },
  }, async function listPlans() {
    return tenantry.catalog.listPlans()
  })

  app.get('/doctor', {
    schema: { tags: ['fleet'], summary: 'Check every tenant table and role against the isolation invariants', response: { 200: open, ...errors() } },
  }, async function doctor() {
    const { findings, tables } = await tenantry.doctor()
    return { ok: findings.length === 0, tables, findings }
  })
}
