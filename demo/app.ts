import type { Readable } from 'node:stream'
import { text } from 'node:stream/consumers'
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyRequest } from 'fastify'
import { TenantryError, currentTenant, type Tenantry } from '../src/index.ts'
import { tenantryPlugin, type TenantryFastifyOptions } from '../src/adapters/fastify.ts'
import type { Branding } from '../src/index.ts'
import { tenantryPluginRoutes } from '../src/adapters/plugins.ts'
import { brandedPage } from './branded-page.ts'
import { tenantryAdmin } from '../src/admin/plugin.ts'

interface ProjectRow { id: string; name: string; created_at: Date }
interface TaskRow { id: string; project_id: string; title: string; done: boolean; created_at: Date }

const project = (r: ProjectRow) => ({ id: r.id, name: r.name, createdAt: r.created_at })
const task = (r: TaskRow) => ({ id: r.id, projectId: r.project_id, title: r.title, done: r.done, createdAt: r.created_at })

const idParam = {
  type: 'object',
  required: ['id'],
  properties: { id: { type: 'string', pattern: '^[1-9][0-9]{0,17}$' } },
} as const

const nameBody = {
  type: 'object',
  required: ['name'],
  additionalProperties: false,
  properties: { name: { type: 'string', minLength: 1, maxLength: 200 } },
} as const

const titleBody = {
  type: 'object',
  required: ['title'],
  additionalProperties: false,
  properties: { title: { type: 'string', minLength: 1, maxLength: 500 }, done: { type: 'boolean' } },
} as const

function notFound(what: string, id: string): TenantryError {
  return new TenantryError('NOT_FOUND', `No ${what} with id ${id} in this tenant.`)
}

/**
 * The demo project tracker: plain SQL against unqualified tables, the same for every tier.
 * `loggerInstance` is Fastify's (a pino instance, e.g. `tenantry.logger`); `plugin` is merged
 * into the Tenantry plugin's options (`{ metrics: true }`).
 */
export async function buildDemoApp(
  tenantry: Tenantry,
  opts: { logger?: boolean; loggerInstance?: FastifyBaseLogger; plugin?: Omit<TenantryFastifyOptions, 'tenantry'>; admin?: boolean } = {},
): Promise<FastifyInstance> {
  const app = Fastify({
    logger: opts.logger ?? false,
    loggerInstance: opts.loggerInstance,
    // Fastify would coerce `{"name": 5}` to "5"; a bad body must be a 400 instead.
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false } },
  })
  await app.register(tenantryPlugin, { tenantry, skip: (req) => req.url === '/health', ...opts.plugin })
  // The routes of the plugins given to createTenantry (demo/export-plugin.ts), for tenants that have them.
  await app.register(tenantryPluginRoutes, { tenantry })

  app.get('/health', async () => ({ ok: true }))
  // The operators' API and console (docs/admin.md): admin tokens only, never a tenant's chain.
  if (opts.admin) await app.register(tenantryAdmin, { prefix: '/admin', tenantry })

  app.get('/api/tenant', async (req) => ({ slug: req.tenant.slug, name: req.tenant.name, tier: req.tenant.tier }))

  // The white-label home page of each tenant host (issue 12): its branding from its configuration.
  app.get('/', async (req, reply) => {
    const { rows } = await req.db.query<{ n: number }>('SELECT count(*)::int AS n FROM projects')
    const newEditor = tenantry.flags.get('new-editor') ? tenantry.flags.isEnabled('new-editor') : false
    const branding = (req.tenantConfig.branding ?? {}) as Branding
    return reply.type('text/html; charset=utf-8').send(brandedPage(req.tenant, branding, { projects: rows[0].n, newEditor }))
  })

  app.get('/api/projects', async (req) => {
    const { rows } = await req.db.query<ProjectRow>('SELECT id, name, created_at FROM projects ORDER BY id LIMIT 500')
    return rows.map(project)
  })

  app.post('/api/projects', { schema: { body: nameBody } }, async (req, reply) => {
    const { name } = req.body as { name: string }
    const { rows } = await req.db.query<ProjectRow>('INSERT INTO projects (name) VALUES ($1) RETURNING id, name, created_at', [name])
    return reply.code(201).send(project(rows[0]))
  })

  app.get('/api/projects/:id', { schema: { params: idParam } }, async (req) => {
    const { id } = req.params as { id: string }
    const { rows } = await req.db.query<ProjectRow>('SELECT id, name, created_at FROM projects WHERE id = $1', [id])
    if (!rows[0]) throw notFound('project', id)
    return project(rows[0])
  })

  app.get('/api/projects/:id/tasks', { schema: { params: idParam } }, async (req) => {
    const { id } = req.params as { id: string }
    return req.db.transaction(async (tx) => {
      const p = await tx.query('SELECT 1 FROM projects WHERE id = $1', [id])
      if (p.rowCount === 0) throw notFound('project', id)
      const { rows } = await tx.query<TaskRow>('SELECT id, project_id, title, done, created_at FROM tasks WHERE project_id = $1 ORDER BY id', [id])
      return rows.map(task)
    })
  })

  app.post('/api/projects/:id/tasks', { schema: { params: idParam, body: titleBody } }, async (req, reply) => {
    const { id } = req.params as { id: string }
    const { title, done } = req.body as { title: string; done?: boolean }
    // One statement: the task is written only if the project exists in this tenant.
    const { rows } = await req.db.query<TaskRow>(
      `INSERT INTO tasks (project_id, title, done) SELECT id, $2, $3 FROM projects WHERE id = $1
       RETURNING id, project_id, title, done, created_at`,
      [id, title, done ?? false],
    )
    if (!rows[0]) throw notFound('project', id)
    return reply.code(201).send(task(rows[0]))
  })

  // Attachments: a file per task, stored under the tenant's prefix (tenantry.storage). The body
  // is streamed to the store as it arrives; the plan's quota and upload share apply.
  await app.register(async function attachments(scope) {
    scope.removeAllContentTypeParsers()
    scope.addContentTypeParser('*', function rawBody(_req, payload, done) { done(null, payload) })
    const fileParams = {
      type: 'object',
      required: ['id', 'name'],
      properties: { id: idParam.properties.id, name: { type: 'string', minLength: 1, maxLength: 200 } },
    } as const

    async function taskExists(req: FastifyRequest, id: string): Promise<void> {
      const { rowCount } = await req.db.query('SELECT 1 FROM tasks WHERE id = $1', [id])
      if (rowCount === 0) throw notFound('task', id)
    }

    scope.put('/api/tasks/:id/attachments/:name', { schema: { params: fileParams } }, async (req, reply) => {
      const { id, name } = req.params as { id: string; name: string }
      await taskExists(req, id)
      const length = req.headers['content-length']
      const info = await tenantry.storage.put(`tasks/${id}/${name}`, req.body as Readable, {
        contentType: req.headers['content-type'] || 'application/octet-stream',
        size: length === undefined ? undefined : Number(length),
      })
      return reply.code(201).send(info)
    })

    scope.get('/api/tasks/:id/attachments', { schema: { params: idParam } }, async (req) => {
      const { id } = req.params as { id: string }
      await taskExists(req, id)
      const { objects } = await tenantry.storage.list({ prefix: `tasks/${id}/` })
      return objects.map((o) => ({ name: o.key.slice(`tasks/${id}/`.length), size: o.size, lastModified: o.lastModified }))
    })

    scope.get('/api/tasks/:id/attachments/:name', { schema: { params: fileParams } }, async (req, reply) => {
      const { id, name } = req.params as { id: string; name: string }
      const file = await tenantry.storage.get(`tasks/${id}/${name}`)
      if (!file) throw new TenantryError('NOT_FOUND', `Task ${id} has no attachment '${name}' in this tenant.`)
      return reply.header('content-length', file.info.size).type(file.info.contentType ?? 'application/octet-stream').send(file.body)
    })
  })

  // The daily summary: a job per tenant (scheduled by demo/server.ts, or sent now with POST),
  // written by the job into the tenant's own storage and cache.
  app.post('/api/summary', async (req, reply) => {
    const id = await tenantry.jobs.send(SUMMARY_QUEUE, { requestedBy: req.id })
    return reply.code(202).send({ job: id })
  })

  app.get('/api/summary', async () => {
    const cached = await tenantry.cache.get<Summary>('summary:latest')
    if (cached) return { ...cached, from: 'cache' }
    const file = await tenantry.storage.get('summaries/latest.json')
    if (!file) throw new TenantryError('NOT_FOUND', 'No summary yet: POST /api/summary, or wait for the daily one.')
    return { ...(JSON.parse(await text(file.body)) as Summary), from: 'storage' }
  })

  return app
}

/** The queue of the daily summary job. */
export const SUMMARY_QUEUE = 'daily-summary'

export interface Summary { tenant: string; projects: number; tasks: number; done: number; attachments: number; at: string }

/**
 * The daily summary job: runs inside the job's tenant, so `tenantry.db`, storage and cache are
 * that tenant's; the result is stored in its storage and cached.
 */
export async function dailySummary(tenantry: Tenantry): Promise<Summary> {
  const { rows } = await tenantry.db.query<{ projects: number; tasks: number; done: number }>(
    `SELECT (SELECT count(*)::int FROM projects) AS projects, (SELECT count(*)::int FROM tasks) AS tasks,
            (SELECT count(*)::int FROM tasks WHERE done) AS done`,
  )
  const { objects } = await tenantry.storage.list({ prefix: 'tasks/' })
  const summary: Summary = { tenant: currentTenant().slug, ...rows[0]!, attachments: objects.length, at: new Date().toISOString() }
  await tenantry.storage.put('summaries/latest.json', JSON.stringify(summary), { contentType: 'application/json' })
  await tenantry.cache.set('summary:latest', summary, 3_600_000)
  return summary
}
