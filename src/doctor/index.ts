/**
 * The doctor: verifies a live database against invariants 1–2 (DESIGN.md) and names each violation.
 *
 * @example
 * ```ts
 * import { checkDatabase, formatFindings } from './doctor/index.ts'
 * const findings = await checkDatabase(admin, { schemas: ['public'], roles: ['tenantry_app'], target: 'main/public' })
 * console.log(formatFindings(findings))
 * ```
 */
export {
  checkDatabase,
  inspectDatabase,
  formatFindings,
  FINDING_CODES,
  type Finding,
  type FindingCode,
  type DoctorCheckOptions,
  type DoctorResult,
} from './doctor.ts'
