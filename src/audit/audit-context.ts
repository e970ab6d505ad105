import { AsyncLocalStorage } from 'node:async_hooks'

const current = new AsyncLocalStorage<{ requestId: string }>()

/**
 * Run `fn` on behalf of one request: every audit entry appended while it runs (and by the work it
 * leaves going after it returns, such as a durable operation's outcome) carries `requestId` unless
 * the entry names its own. The admin API runs each action in one.
 *
 * @example
 * ```ts
 * await onBehalfOfRequest(request.id, () => tenantry.portability.backup('acme', { startedBy: 'token:ops' }))
 * ```
 */
export function onBehalfOfRequest<T>(requestId: string, fn: () => T): T {
  return current.run({ requestId }, fn)
}

/** The request the current code runs for, if any (see `onBehalfOfRequest`). */
export function currentRequestId(): string | null {
  return current.getStore()?.requestId ?? null
}
