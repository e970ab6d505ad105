import type { AuditLog } from '../audit/index.ts'
import type { OperationAuditor } from './operations.ts'

/**
 * The audit entries of durable operations (provision, purge, migrate, move, backup, restore,
 * export, erase, erase-subject): `operation.<kind>.start` in the transaction that records the
 * operation, and `operation.<kind>.done|failed|rolled_back` in the one that ends it. The actor is
 * the operation's `startedBy`; the start's after-digest is of the operation's parameters.
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
      details: { operationId: op.id, kind: op.kind, step: op.step, ...(ended && op.error !== null ? { error: op.error.slice(0, 500) } : {}) },
    }, q as Parameters<AuditLog['append']>[1])
  }
}
