import { ATTEMPT_KINDS } from './arena.ts'
import type { VerifyIsolationReport } from './verify-isolation.ts'

function table(headers: string[], rows: (string | number)[][]): string {
  const cells = rows.map((r) => r.map(String))
  const widths = headers.map((h, i) => Math.max(h.length, ...cells.map((r) => r[i].length)))
  const line = (r: string[]) => r.map((c, i) => (i > 0 && i < 5 ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join('  ').trimEnd()
  return [line(headers), line(widths.map((w) => '-'.repeat(w))), ...cells.map(line)].join('\n')
}

/**
 * The human summary of a run: attempts by kind, leaks and failures, what was attacked, and the
 * first findings in detail.
 *
 * @example
 * ```ts
 * console.log(formatVerifyReport(await verifyIsolation({ migrations: './migrations' })))
 * ```
 */
export function formatVerifyReport(r: VerifyIsolationReport): string {
  const out: string[] = []
  const where = r.backend === 'postgres' ? `PostgreSQL, scratch database ${r.scratch.database} (${r.scratch.kept ? 'kept' : 'dropped'})` : 'embedded PGlite in memory'
  out.push(`verify-isolation on ${where}; seed ${r.seed} (--seed ${r.seed} replays this plan)`)
  const tn = r.tenants
  out.push(`tenants: ${tn.pooled} pooled, ${tn.schema} schema, ${tn.database} database, plus 1 suspended and 1 deleted as victims`)
  out.push(`relations: ${r.relations.map((x) => `${x.name} (${x.kind}${x.kind === 'table' ? `, ${x.filled ? `${x.rowsPerTenant} rows per tenant` : 'empty'}` : ''}${x.rls ? (x.forceRls ? '' : ', RLS not forced') : ', RLS off'})`).join(', ')}`)
  out.push('')
  out.push(
    table(
      ['KIND', 'ATTEMPTS', 'REFUSED', 'LEAKS', 'FAILURES', 'REFUSED WITH'],
      ATTEMPT_KINDS.filter((k) => r.kinds[k].attempts > 0).map((k) => {
        const s = r.kinds[k]
        const codes = Object.entries(s.codes).sort((a, b) => b[1] - a[1]).map(([c, n]) => `${c} ${n}`).join(', ')
        return [k, s.attempts, s.refused, s.leaks, s.failures, codes.length > 90 ? `${codes.slice(0, 89)}…` : codes]
      }),
    ),
  )
  out.push('')
  out.push(`${r.attempts} attempts in ${(r.attackMs / 1000).toFixed(1)} s (${r.attemptsPerSecond}/s); ${r.refused} refused with a code; integrity: ${r.integrity.rows} rows compared, ${r.integrity.changed} changed`)
  for (const n of r.notes) out.push(`note: ${n}`)
  if (r.findings.length) {
    out.push('', `findings (first ${r.findings.length} of ${r.leaks + r.failures}):`)
    for (const f of r.findings) {
      const who = [f.attacker && `as ${f.attacker}`, f.victim && `against ${f.victim}`, f.relation && `on ${f.relation}`].filter(Boolean).join(' ')
      out.push(`  ${f.type.toUpperCase()} [${f.kind}]${who ? ` ${who}` : ''}: ${f.detail}`)
    }
  }
  out.push('')
  out.push(
    r.ok
      ? `OK: leaks found = 0, failures = 0. No row of another tenant was returned or changed, and every bad input was refused with a code.`
      : `FAILED: leaks found = ${r.leaks}, failures = ${r.failures}.${r.leaks ? ' Rows of one tenant reached another: see the findings above.' : ''}`,
  )
  return out.join('\n')
}
