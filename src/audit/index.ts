export { createAuditLog, digestOf, canonicalJson, type AuditLog, type AuditActor, type AuditInput, type AuditEntry, type AuditQuery, type AuditVerifyReport } from './audit-log.ts'
export { onBehalfOfRequest, currentRequestId } from './audit-context.ts'
