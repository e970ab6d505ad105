import { readFileSync } from 'node:fs'
import { Portability } from './portability.ts'

export { BACKUP_NICE, Portability, removeTenantRoom } from './portability.ts'
export type {
  BackupOptions, BackupRecord, BackupResult, ErasureCertificate, ExportOptions, ExportResult, SubjectErasureCertificate, PortabilityOptions, PortabilityProgress, RestoreOptions, RestoreResult,
} from './portability.ts'
export type { ArchiveManifest } from './archive.ts'
export { copyTenant, rewriteTenantId, tenantTables, type TenantPlace, type TenantTable } from './copy-engine.ts'
export { resolveMasterKey } from './keys.ts'
export { EXPORT_FORMATS, SUBJECT_MARK, type ExportFormat } from './export.ts'

/** Tenantry's version, written into every archive manifest. */
function tenantryVersion(): string {
  try {
    return String(JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')).version)
  } catch {
    return 'unknown'
  }
}

/**
 * Portability's part of the wiring: its catalog tables, and the operation kinds it finishes when
 * their process died (the lifecycle's resume hands them over).
 */
export async function createPortability(deps: Omit<ConstructorParameters<typeof Portability>[0], 'version'>): Promise<Portability> {
  const p = new Portability({ ...deps, version: tenantryVersion() })
  await p.init()
  return p
}
