export * from './core/index.ts'
export { withTenant, currentTenant, tryCurrentTenant } from './context/context.ts'
export { Catalog } from './catalog/catalog.ts'
export type { Queryable, QueryResult, TransactionalQueryable } from './data/executor.ts'
export { TenantHandle } from './data/tenant-handle.ts'
export { assertTenantStatement } from './data/statement-guard.ts'
export { loadMigrations, checksumOf, type MigrationFile } from './lifecycle/migrator.ts'
export type { ProvisionOptions } from './lifecycle/provision.ts'
export * from './resolve/index.ts'
export * from './guard/index.ts'
export { checkDatabase, formatFindings, type Finding, type FindingCode } from './doctor/index.ts'
export { verifyIsolation, formatVerifyReport, buildVerifyApp, ATTEMPT_KINDS, type VerifyIsolationOptions, type VerifyIsolationReport, type VerifyProgress, type VerifyFinding, type AttemptKind, type KindStats } from './verify/index.ts'
export { createTenantry, type Tenantry, type TenantryOptions } from './runtime.ts'
export type { AddServerOptions } from './fleet/index.ts'
export type { FleetMigrateOptions, FleetMigrateResult, FleetTargetResult, MigrateProgress, PlannedTarget } from './lifecycle/fleet-migrate.ts'
export type { Operation, OperationTarget } from './lifecycle/operations.ts'
export { lowerProcessPriority, type PaceOptions, type PaceReport } from './lifecycle/pacer.ts'
export type { BackendPriority } from './data/driver.ts'
export type { ProvisionHook, PurgeResult } from './lifecycle/lifecycle.ts'
export type { TenantryEventMap } from './lifecycle/events.ts'
export { Observability, type ObserveOptions } from './observe/observability.ts'
export { tenantLogMixin } from './observe/logger.ts'
export { TenantryMetrics, type MetricsOptions } from './observe/metrics.ts'
export { redactStatement, type TracingOptions } from './observe/tracing.ts'
export { UsageMeter } from './observe/meter.ts'
export { TOP_BY, type Advice, type AdviseOptions, type MeteringOptions, type TopBy, type TopQuery, type TopRow, type UsageGranularity, type UsageQuery, type UsageRow, type UsageService } from './observe/types.ts'
export type { UsageRecord } from './core/types.ts'
export { TenantScope, currentScope } from './context/context.ts'
export { TenantCache, type CacheOptions, type CacheStats } from './cache/index.ts'
export { TenantJobs, type JobsOptions, type TenantJob, type WorkOptions, type SendOptions, type JobSchedule, type JobsStats, type JobQueue, type QueuedJob, type OutgoingJob } from './jobs/index.ts'
export { TenantStorage, validateObjectKey, LocalStorageDriver, S3StorageDriver, DEFAULT_STORAGE_LIMITS, type StorageOptions, type StorageLimits, type StorageLimitsInput, type ObjectInfo, type PutOptions, type StorageDriver, type StoredObject, type S3DriverOptions } from './storage/index.ts'
export {
  createConfig, TenantryFlagProvider, parseFlag, rolloutBucket, checkDomain, BRANDING_SCHEMA, DOMAIN_TXT_LABEL, DOMAIN_WELL_KNOWN_PATH,
  type Branding, type ChangeOptions, type ConfigIssue, type ConfigOptions, type ConfigParts, type ConfigVersion, type CustomDomain, type DomainOptions,
  type Flag, type FlagContext, type FlagDefinition, type FlagEvaluation, type FlagReason, type FlagRule, type JsonObject, type JsonValue,
  type StandardSchemaLike, type TenantConfigApi, PluginRegistry, pluginFailure, type PluginContext, type PluginCore,
} from './config/index.ts'
export { createAuditLog, digestOf, onBehalfOfRequest, type AuditLog, type AuditActor, type AuditInput, type AuditEntry, type AuditQuery, type AuditVerifyReport } from './audit/index.ts'
export type { TenantPage, TenantPageQuery } from './catalog/catalog.ts'
export {
  Portability, copyTenant, rewriteTenantId, tenantTables, resolveMasterKey, BACKUP_NICE,
  type ArchiveManifest, type BackupOptions, type BackupRecord, type BackupResult, type ErasureCertificate, type PortabilityOptions,
  type PortabilityProgress, type RestoreOptions, type RestoreResult, type TenantPlace, type TenantTable,
  type ExportOptions, type ExportResult, type ExportFormat, type SubjectErasureCertificate, EXPORT_FORMATS, SUBJECT_MARK,
} from './portability/index.ts'
export { TenantCredentials, userFromTenantApiKey, checkResidency, auditForcedResidency, meshPolicies, type MeshPolicyOptions, type ResidencyCheck, type ResidencyTarget, type ApiKeyInfo, type ApiKeys, type CertificateInfo, type Certificates, type CreateApiKeyInput, type AddCertificateInput } from './security/index.ts'
export { ASSERTION_HEADER, createPropagation, propagated, type PropagatedOptions, type PropagationOptions, type TenantPropagation } from './context/propagation.ts'
export { Moves, FENCED_SQLSTATE, planMoves, type AppliedMove, type ApplyAdviceOptions, type PlannedMove, type KeptRoom, type MoveOptions, type MoveProgress, type MoveResult, type MoveTableCheck, type MovesOptions } from './moves/index.ts'
