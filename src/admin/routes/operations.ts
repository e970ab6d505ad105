import { TenantryError } from '../../core/errors.ts'
import type { Operation, OperationState } from '../../lifecycle/operations.ts'
import type { Tenantry } from '../../runtime.ts'
import type { AdminRoutes } from '../context.ts'
import { errors, idParam, operationSchema } from '../schemas.ts'

const TAG = ['operations']

/** How far an operation is: targets finished of all for a migration, otherwise 0 or 100 by state. */
export interface OperationProgress {
  id: string
  kind: string
  state: OperationState
  step: string | null
  error: string | null
  total: number | null
  finished: number | null
  failed: number | null
  percent: number | null
}

/** `live`: percents of operations running in this process that report them (backups, restores); others show none until done. */
export async function progressOf(tenantry: Tenantry, op: Operation, live?: ReadonlyMap<string, number>): Promise<OperationProgress> {
  const base = { id: op.id, kind: op.kind, state: op.state, step: op.step, error: op.error }
  if (op.kind !== 'migrate') {
    return { ...base, total: null, finished: null, failed: null, percent: op.state === 'running' ? live?.get(op.id) ?? null : op.state === 'done' ? 100 : null }
  }
  const c = await tenantry.operations.counts(op.id)
  const finished = c.done + c.failed + c.skipped
  return { ...base, total: c.total, finished, failed: c.failed, percent: c.total === 0 ? 100 : Math.floor((finished / c.total) * 100) }
}

async function mustGet(tenantry: Tenantry, id: string): Promise<Operation> {
  const op = await tenantry.operations.get(id.toLowerCase())
  if (!op) throw new TenantryError('NOT_FOUND', `No operation has the id '${id}'.`)
  return op
}

/** Operations: list, show (with targets), and live progress as server-sent events. */
export const operationRoutes: AdminRoutes = (app, { tenantry, liveProgress }) => {
  app.get('/operations', {
    schema: {
      tags: TAG, summary: 'Recent operations, newest first',
      querystring: {
        type: 'object', additionalProperties: false,
        properties: {
          state: { type: 'string', enum: ['running', 'done', 'failed', 'rolled_back'] },
          kind: { type: 'string', pattern: '^[a-z_-]{1,40}$' },
          limit: { type: 'integer', minimum: 1, maximum: 500, default: 50 },
        },
      },
      response: { 200: { type: 'array', items: { ...operationSchema, properties: { ...operationSchema.properties, percent: { type: ['integer', 'null'] } } } }, ...errors() },
    },
  }, async function listOperations(request) {
    const q = request.query as { state?: OperationState; kind?: string; limit: number }
    const ops = await tenantry.operations.list(q)
    // Finished ones need no query: done is 100%; a running migration counts its targets.
    return Promise.all(ops.map(async (op) => ({
      ...op,
      percent: op.state === 'running' ? (await progressOf(tenantry, op, liveProgress)).percent : op.state === 'done' ? 100 : null,
    })))
  })

  app.get('/operations/:id', {
    schema: { tags: TAG, summary: 'One operation, its progress and (for a migration) its targets', params: idParam, response: { 200: { type: 'object', additionalProperties: true }, ...errors(404) } },
  }, async function showOperation(request) {
    const op = await mustGet(tenantry, (request.params as { id: string }).id)
    const targets = op.kind === 'migrate' ? await tenantry.operationTargets(op.id) : []
    return { ...op, progress: await progressOf(tenantry, op, liveProgress), targets }
  })

  app.get('/operations/:id/events', {
    schema: {
      tags: TAG, params: idParam,
      summary: 'Live progress as server-sent events (`event: progress`, then `event: end` when it finishes)',
      description: 'Send the Authorization header (fetch with a streaming body; EventSource cannot send headers).',
      response: { 200: { description: 'text/event-stream', content: { 'text/event-stream': { schema: { type: 'string' } } } }, ...errors(404) },
    },
  }, async function operationEvents(request, reply) {
    const first = await mustGet(tenantry, (request.params as { id: string }).id)
    reply.hijack()
    const raw = reply.raw
    raw.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', connection: 'keep-alive', 'x-accel-buffering': 'no' })
    let closed = false
    request.raw.once('close', () => { closed = true })
    let last = ''
    let op: Operation | null = first
    // Polled from the catalog: the operation may run in any process of the fleet.
    while (!closed && op) {
      const p = await progressOf(tenantry, op, liveProgress)
      const data = JSON.stringify(p)
      if (data !== last) raw.write(`event: progress\ndata: ${data}\n\n`)
      else raw.write(': keep-alive\n\n')
      last = data
      if (op.state !== 'running') {
        raw.write(`event: end\ndata: ${data}\n\n`)
        break
      }
      await new Promise((r) => setTimeout(r, 300))
      op = await tenantry.operations.get(op.id).catch(() => null)
    }
    raw.end()
  })
}
