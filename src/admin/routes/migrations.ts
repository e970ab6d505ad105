import { requireMigrations } from '../../lifecycle/migrator.ts'
import type { FleetMigrateResult } from '../../lifecycle/fleet-migrate.ts'
import type { AdminRoutes } from '../context.ts'
import { onBehalfOfRequest } from '../../audit/index.ts'
import { SLUG_PATTERN, errors } from '../schemas.ts'

const TAG = ['migrations']
const only = { type: 'array', maxItems: 1000, items: { type: 'string', pattern: '^[a-z0-9][a-z0-9_-]{0,62}$' } } as const

/** Migrations: the plan (every target and its pending files) and a run, followed through its operation. */
export const migrationRoutes: AdminRoutes = (app, ctx) => {
  const { tenantry } = ctx

  app.get('/migrations/plan', {
    schema: {
      tags: TAG, summary: 'Every target in scope and its pending migration files',
      querystring: { type: 'object', additionalProperties: false, properties: { only: { ...only, description: 'tenant slugs, tiers or servers' } } },
      response: { 200: { type: 'object', additionalProperties: true }, ...errors() },
    },
  }, async function planMigrations(request) {
    const q = request.query as { only?: string[] }
    const targets = await tenantry.planMigrations({ only: q.only })
    return {
      files: tenantry.migrationFiles.map((f) => f.name),
      pending: targets.filter((t) => t.pending.length > 0).length,
      targets: targets.map((t) => ({ target: t.label, tier: t.tier, server: t.server, tenant: t.slug, pending: t.pending })),
    }
  })

  app.post('/migrations/run', {
    schema: {
      tags: TAG, summary: 'Start a fleet migration; 202 with its operation id (follow it at /operations/{id}/events), 200 when nothing is pending',
      body: {
        type: 'object', additionalProperties: false,
        properties: {
          only,
          canary: { type: 'array', maxItems: 100, items: { type: 'string', pattern: SLUG_PATTERN } },
          concurrency: { type: 'integer', minimum: 1, maximum: 64 },
          maxFailures: { type: 'integer', minimum: 1, maximum: 100000 },
          pace: { type: 'boolean' },
        },
      },
      response: { 200: { type: 'object', additionalProperties: true }, 202: { type: 'object', additionalProperties: true }, ...errors() },
    },
    config: { adminRole: 'operator' },
  }, async function runMigrations(request, reply) {
    requireMigrations(tenantry.migrationFiles)
    const body = request.body as { only?: string[]; canary?: string[]; concurrency?: number; maxFailures?: number; pace?: boolean }
    // The run goes on in this process after the reply; the reply waits only for its operation id.
    let started!: (id: string) => void
    const operationId = new Promise<string>((resolve) => { started = resolve })
    // Its record is the operation's audit entries (start, outcome), with this request's id.
    const run = onBehalfOfRequest(request.id, () => tenantry.migrate({ ...body, startedBy: request.admin.actor, onStart: (id) => started(id) }))
    const first = await Promise.race([operationId, run]) as string | FleetMigrateResult
    if (typeof first !== 'string') {
      return reply.code(200).send({ operationId: null, state: first.state, counts: first.counts })
    }
    run.catch((error) => tenantry.events.emit('error', { error, context: `admin migration ${first}` }))
    return reply.code(202).send({ operationId: first, state: 'running', events: `operations/${first}/events` })
  })
}
