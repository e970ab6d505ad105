import { TenantryError } from '../core/errors.ts'

// Statements that would change the session or the transaction a tenant handle runs in. The
// handle owns both: transactions go through handle.transaction(), settings never come from app SQL.
const FORBIDDEN_LEAD = /^(?:set|reset|begin|start|commit|rollback|end|abort|savepoint|release|prepare|deallocate|discard|listen|unlisten|load|do|call|copy|vacuum|checkpoint|lock)\b/i
const FORBIDDEN_ANYWHERE = /\bset_config\s*\(|\bpg_catalog\s*\.\s*set_config\b|\bdblink\w*\s*\(|\bpg_read_\w*file\s*\(/i

function stripLeading(text: string): string {
  let s = text
  for (;;) {
    const t = s.replace(/^\s+/, '')
    if (t.startsWith('--')) {
      const nl = t.indexOf('\n')
      s = nl < 0 ? '' : t.slice(nl + 1)
    } else if (t.startsWith('/*')) {
      const end = t.indexOf('*/')
      s = end < 0 ? '' : t.slice(end + 2)
    } else if (t.startsWith('(')) {
      s = t.slice(1)
    } else {
      return t
    }
  }
}

/**
 * Refuse a statement sent through a tenant handle that would change the session (SET ROLE, RESET
 * ALL, set_config…) or manage the transaction itself. On a real server the app role could not
 * escalate anyway; on PGlite the session is a superuser, so this is what stops `RESET ROLE`.
 *
 * @example
 * ```ts
 * assertTenantStatement('SELECT * FROM projects') // ok
 * assertTenantStatement('RESET ROLE')             // throws STATEMENT_FORBIDDEN
 * ```
 */
export function assertTenantStatement(text: string): void {
  if (typeof text !== 'string' || text.length === 0) {
    throw new TenantryError('STATEMENT_FORBIDDEN', 'A tenant statement must be a non-empty SQL string.')
  }
  const lead = stripLeading(text)
  if (FORBIDDEN_LEAD.test(lead) || FORBIDDEN_ANYWHERE.test(text)) {
    const word = lead.split(/\s+/, 1)[0]?.toUpperCase() ?? ''
    throw new TenantryError(
      'STATEMENT_FORBIDDEN',
      `'${word.slice(0, 20)}…' cannot run through a tenant handle: it would change the session or transaction that keeps tenants apart. Use handle.transaction() for transactions; settings are managed by Tenantry.`,
    )
  }
}
