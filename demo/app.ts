import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify'
import { TenantryError, type Tenantry } from '../src/index.ts'
import { tenantryPlugin, type TenantryFastifyOptions } from '../src/adapters/fastify.ts'
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

  app.get('/health', async () => ({ ok: true }))
  // The operators' API and console (docs/admin.md): admin tokens only, never a tenant's chain.
  if (opts.admin) await app.register(tenantryAdmin, { prefix: '/admin', tenantry })

  app.get('/api/tenant', async (req) => ({ slug: req.tenant.slug, name: req.tenant.name, tier: req.tenant.tier }))

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

  return app
}
