import type { FastifyReply, FastifyRequest } from 'fastify'
import { onBehalfOfRequest } from '../audit/index.ts'
import type { AdminContext } from './context.ts'

/** How an action that runs as a durable operation is started from a request. */
export interface OperationStart<R> {
  /** Start the library call; it calls `onStart` with the operation's id once the operation is recorded. */
  run(onStart: (operationId: string) => void): Promise<R>
  /** The 200 body when it finished before telling its id (it had nothing to do). */
  done?(result: R): unknown
}

/**
 * Answer 202 with the operation's id as soon as the library recorded it; the work goes on in this
 * process after the reply (followed at `operations/{id}/events`; if the process dies, the next
 * `createTenantry` resumes or rolls it back). Bad input and conflicts are refused before the
 * operation exists, so they still come back as this request's 400/404/409.
 */
export async function startOperation<R>(ctx: AdminContext, request: FastifyRequest, reply: FastifyReply, o: OperationStart<R>): Promise<FastifyReply> {
  const { tenantry } = ctx
  let started!: (id: string) => void
  const operationId = new Promise<string>((resolve) => { started = resolve })
  // The operation's own audit entries (start, outcome) are its record, with this request's id.
  const run = onBehalfOfRequest(request.id, () => o.run((id) => started(id)))
  const first = await Promise.race([operationId.then((id) => ({ id })), run.then((result) => ({ result }))])
  if ('result' in first) {
    return reply.code(200).send(o.done ? o.done(first.result) : { operationId: null, state: 'done' })
  }
  run.catch((error) => tenantry.events.emit('error', { error, context: `admin operation ${first.id}` }))
    .finally(() => ctx.liveProgress.delete(first.id))
  return reply.code(202).send({ operationId: first.id, state: 'running', events: `operations/${first.id}/events` })
}
