import { TenantryError } from '../core/errors.ts'

// Statements that would change the session or the transaction a tenant handle runs in, or the
// schema itself. The handle owns both: transactions go through handle.transaction(), settings never
// come from app SQL, and DDL belongs in migrations.
const FORBIDDEN_LEAD =
  /^(?:set|reset|begin|start|commit|rollback|end|abort|savepoint|release|prepare|deallocate|discard|listen|unlisten|load|do|call|copy|vacuum|analyze|analyse|checkpoint|lock|alter|create|drop|grant|revoke|comment|security|import|reindex|cluster|refresh|truncate)\b/
// Checked on the normalised text (comments stripped, quotes removed, U& escapes decoded,
// lowercased), so `"set_config"(…)`, `pg_catalog . "set_config"`, `U&"set\005fconfig"` and
// `set_config/**/(` are all caught. pg_settings is set_config by another name.
const FORBIDDEN_ANYWHERE = /\bset_config\s*\(|\bpg_settings\b|\bdblink\w*\s*\(|\bpg_read_\w*file\s*\(|\blo_(?:import|export)\s*\(|\buescape\b/

function decodeUnicodeIdent(body: string): string {
  return body
    .replace(/\\\+([0-9a-fA-F]{6})/g, (_, h: string) => String.fromCodePoint(parseInt(h, 16)))
    .replace(/\\([0-9a-fA-F]{4})/g, (_, h: string) => String.fromCodePoint(parseInt(h, 16)))
    .replace(/\\\\/g, '\\')
}

/**
 * The statement as PostgreSQL's lexer would see its words: string literals (plain, E'', dollar
 * quoted) become `?`, comments (nested too) become a space, quoted identifiers lose their quotes
 * (U&"…" escapes decoded), everything lowercased. The checks run on this, never on the raw text.
 */
export function normalizeStatement(text: string): string {
  let out = ''
  let i = 0
  const n = text.length
  while (i < n) {
    const c = text[i]
    const next = text[i + 1]
    if (c === '-' && next === '-') {
      const nl = text.indexOf('\n', i)
      i = nl < 0 ? n : nl + 1
      out += ' '
    } else if (c === '/' && next === '*') {
      let depth = 1
      i += 2
      while (i < n && depth > 0) {
        if (text[i] === '/' && text[i + 1] === '*') { depth++; i += 2 }
        else if (text[i] === '*' && text[i + 1] === '/') { depth--; i += 2 }
        else i++
      }
      out += ' '
    } else if (c === "'" || ((c === 'e' || c === 'E') && next === "'" && !/[\w$]/.test(text[i - 1] ?? ''))) {
      const escapes = c !== "'"
      i += escapes ? 2 : 1
      while (i < n) {
        if (escapes && text[i] === '\\') { i += 2; continue }
        if (text[i] === "'") {
          if (text[i + 1] === "'") { i += 2; continue }
          i++
          break
        }
        i++
      }
      out += '?'
    } else if (c === '$' && /[A-Za-z_$]/.test(next ?? '') && !/[\w$]/.test(text[i - 1] ?? '')) {
      const m = /^\$([A-Za-z_][A-Za-z0-9_]*)?\$/.exec(text.slice(i))
      if (!m) { out += c; i++; continue }
      const close = text.indexOf(m[0], i + m[0].length)
      i = close < 0 ? n : close + m[0].length
      out += '?'
    } else if (c === '"' || ((c === 'u' || c === 'U') && next === '&' && text[i + 2] === '"')) {
      const unicode = c !== '"'
      i += unicode ? 3 : 1
      let body = ''
      while (i < n) {
        if (text[i] === '"') {
          if (text[i + 1] === '"') { body += '"'; i += 2; continue }
          i++
          break
        }
        body += text[i++]
      }
      out += (unicode ? decodeUnicodeIdent(body) : body).toLowerCase()
    } else {
      out += c.toLowerCase()
      i++
    }
  }
  return out.replace(/\s+/g, ' ').replace(/^[\s(]+/, '')
}

/**
 * Refuse a statement sent through a tenant handle that would change the session (SET ROLE, RESET
 * ALL, set_config…), manage the transaction itself, or change the schema. This is the second
 * layer: on a real server the tenant setting is signed (a forged one selects no rows) and the app
 * role cannot escalate; on PGlite the session is a superuser, so this is what stops `RESET ROLE`.
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
  if (allowed.has(text)) return
  const norm = normalizeStatement(text)
  if (FORBIDDEN_LEAD.test(norm) || FORBIDDEN_ANYWHERE.test(norm)) {
    const word = norm.split(' ', 1)[0]?.toUpperCase() ?? ''
    throw new TenantryError(
      'STATEMENT_FORBIDDEN',
      `'${word.slice(0, 20)}…' cannot run through a tenant handle: it would change the session, the transaction or the schema that keep tenants apart. Use handle.transaction() for transactions and migrations for DDL; settings are managed by Tenantry.`,
    )
  }
  if (text.length <= ALLOWED_MAX_LENGTH) {
    // First in, first out: an app has a few hundred distinct statement texts; generated ones rotate through.
    if (allowed.size >= ALLOWED_SIZE) allowed.delete(allowed.values().next().value as string)
    allowed.add(text)
  }
}

// Statement texts that passed: an app sends the same few texts again and again, and the verdict
// depends on the text alone.
const ALLOWED_SIZE = 1024
const ALLOWED_MAX_LENGTH = 4096
const allowed = new Set<string>()
