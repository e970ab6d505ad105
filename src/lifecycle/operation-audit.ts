import type { AuditLog } from '../audit/index.ts'
import type { Operation, OperationAuditor } from './operations.ts'

/**
 * The audit entries of durable operations (provision, purge, migrate, move, backup, restore,
 * export, erase, erase-subject), the one record of each such action whether the library, the CLI
 * or the admin API ran it: `operation.<kind>.start` in the transaction that records the operation,
 * and `operation.<kind>.done|failed|rolled_back` in the one that ends it. The actor is the
 * operation's `startedBy`, the request id the one the action runs for (`onBehalfOfRequest`); the
 * start's after-digest is of the operation's parameters, the outcome's details carry the facts an
 * auditor reads (archive path, rows, tier and server, certificate id: `facts`).
 *
 * @example
 * ```ts
 * operations.auditor = auditOperations(audit)
 * ```
 */
export function auditOperations(audit: AuditLog): OperationAuditor {
  return async function auditOperation(q, { phase, op }) {
    const ended = phase === 'finish'
    await audit.append({
      actor: op.startedBy,
      action: `operation.${op.kind}.${ended ? op.state : 'start'}`,
      tenantId: op.tenantId,
      slug: op.slug,
      ...(ended ? {} : { after: op.params }),
      details: {
        operationId: op.id, kind: op.kind, step: op.step,
        ...(ended ? { facts: outcomeFacts(op) } : {}),
        ...(ended && op.error !== null ? { error: op.error.slice(0, 500) } : {}),
      },
    }, q as Parameters<AuditLog['append']>[1])
  }
}

/** Where the outcome went: a few objects kept whole, the rest of the parameters and result as scalars (a list as its length). */
const WHOLE = new Set(['from', 'to', 'placement', 'scope'])

function outcomeFacts(op: Operation): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries({ ...op.params, ...op.progress })) {
    if (Array.isArray(v)) out[k] = v.length
    else if (v === null || typeof v !== 'object') out[k] = v
    else if (WHOLE.has(k)) out[k] = v
  }
  return out
}
