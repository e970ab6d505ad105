import type { AuditInput } from '../audit/index.ts'
import type { BackupResult, ErasureCertificate, ExportResult, RestoreResult, SubjectErasureCertificate } from './portability.ts'

/**
 * The audit entry of each portability action, the same whether the CLI or the admin API ran it
 * (appended after the action succeeded; `requestId` when an HTTP request asked for it).
 *
 * @example
 * ```ts
 * const r = await tenantry.portability.backup('acme')
 * await tenantry.audit.append(portabilityAudit.backup('cli:ops@host', r))
 * ```
 */
export const portabilityAudit = {
  backup: (actor: string, r: BackupResult, requestId?: string): AuditInput => ({
    actor, requestId, action: 'backup.create', tenantId: r.tenantId, slug: r.slug, details: { operationId: r.operationId, path: r.path, rows: r.rows, encrypted: r.encrypted },
  }),
  restore: (actor: string, r: RestoreResult, requestId?: string): AuditInput => ({
    actor, requestId, action: 'backup.restore', tenantId: r.tenant.id, slug: r.tenant.slug, after: r.tenant, details: { operationId: r.operationId, archiveId: r.archiveId, replaced: r.replaced },
  }),
  export: (actor: string, r: ExportResult, requestId?: string): AuditInput => ({
    actor, requestId, action: 'tenant.export', slug: r.slug, details: { operationId: r.operationId, format: r.format, subject: r.subject, rows: r.rows },
  }),
  erase: (actor: string, slug: string, c: ErasureCertificate | SubjectErasureCertificate, requestId?: string): AuditInput => ({
    actor, requestId, action: 'kind' in c && c.kind === 'subject' ? 'tenant.erase-subject' : 'tenant.erase', slug, details: { operationId: c.operationId, verified: c.verified },
  }),
}
