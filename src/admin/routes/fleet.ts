import type { Server } from '../../core/types.ts'
import { redactUrl, type Tenantry } from '../../runtime.ts'
import type { AdminRoutes } from '../context.ts'
import type { AddServerOptions } from '../../fleet/index.ts'
import { SERVER_PATTERN, errors } from '../schemas.ts'

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

/** A server with its connections in use (all clients, of its limit) and this process's pool of it. */
async function serverStatus(tenantry: Tenantry, s: Server): Promise<Record<string, unknown>> {
  const pool = tenantry.dataPlane.stats()[s.name]
  return { ...serverJson(s), connections: await serverConnections(tenantry, s), pool: pool ? { ...pool, budget: tenantry.dataPlane.opts.connectionBudget } : null }
}

const serverBody = {
  type: 'object', required: ['name', 'url'], additionalProperties: false,
  properties: {
    name: { type: 'string', pattern: SERVER_PATTERN },
    url: { type: 'string', minLength: 12, maxLength: 2000, pattern: '^(postgres(ql)?://|pglite:).+', description: 'postgres://admin-user:password@host:5432/database (stored in the catalog; shown without its password)' },
    region: { type: 'string', minLength: 1, maxLength: 100 },
    capacityWeight: { type: 'integer', minimum: 1, maximum: 1000 },
  },
} as const

/** The fleet: overview (tenants by tier, server and status; servers with connection use), servers, plans, doctor. */
export const fleetRoutes: AdminRoutes = (app, ctx) => {
  const { tenantry } = ctx
  app.get('/overview', {
    schema: { tags: ['fleet'], summary: 'Tenants by tier, server and status; servers with connection use; running operations', response: { 200: open, ...errors() } },
  }, async function overview() {
    const [counts, servers, running] = await Promise.all([
      tenantry.catalog.counts(),
      tenantry.catalog.listServers(),
      tenantry.operations.list({ state: 'running', limit: 20 }),
    ])
    return {
      tenants: counts,
      servers: await Promise.all(servers.map(async (s) => ({
        ...(await serverStatus(tenantry, s)),
        tenants: counts.filter((c) => c.server === s.name && c.status !== 'deleted').reduce((n, c) => n + c.count, 0),
      }))),
      running,
    }
  })

  app.get('/servers', {
    schema: { tags: ['fleet'], summary: "Servers of the fleet (passwords redacted) with connections in use and this process's pool", response: { 200: { type: 'array', items: open }, ...errors() } },
  }, async function listServers() {
    return Promise.all((await tenantry.catalog.listServers()).map((s) => serverStatus(tenantry, s)))
  })

  app.post('/servers', {
    schema: { tags: ['fleet'], summary: 'Add a PostgreSQL server to the fleet (tenantry.addServer: bootstrapped, then in the catalog for every process)', body: serverBody, response: { 201: open, ...errors(409) } },
    config: { adminRole: 'admin' },
  }, async function addServer(request, reply) {
    const body = request.body as AddServerOptions
    // The library checks the server before registering it: 409 CONFLICT for a name in use, 400 for an unreachable URL.
    const added = await tenantry.addServer(body, { actor: request.admin.actor, requestId: request.id })
    return reply.code(201).send(await serverStatus(tenantry, added))
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
