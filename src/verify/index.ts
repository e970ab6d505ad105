/**
 * The isolation attack suite (`tenantry verify-isolation`).
 *
 * @example
 * ```ts
 * import { verifyIsolation, formatVerifyReport } from 'tenantry'
 * const report = await verifyIsolation({ migrations: './migrations', attempts: 5000 })
 * console.log(formatVerifyReport(report))
 * ```
 */
export { verifyIsolation, type VerifyIsolationOptions, type VerifyIsolationReport, type VerifyProgress } from './verify-isolation.ts'
export { formatVerifyReport } from './report.ts'
export { ATTEMPT_KINDS, type AttemptKind, type KindStats, type VerifyFinding } from './arena.ts'
export { buildVerifyApp } from './app.ts'
