import type { X509Certificate } from 'node:crypto'
import { TenantryError } from '../core/errors.ts'
import { printable } from '../core/validation.ts'

/**
 * A tenant CA as the resolver checks it: the parsed CA certificate and the SAN or subject pattern
 * a client certificate it issued must match to bind to the tenant.
 *
 * @example
 * ```ts
 * const b: CaBinding = { id, tenantId, ca: new X509Certificate(pem), san: compileSanPattern('*.acme.example'), subject: null, revokedAt: null }
 * ```
 */
export interface CaBinding {
  id: string
  tenantId: string
  ca: X509Certificate
  san: SanPattern | null
  subject: RegExp[] | null
  revokedAt: Date | null
}

/** A compiled SAN pattern: the entry type it applies to and the glob as a regular expression. */
export interface SanPattern { type: string; re: RegExp }

const SAN_TYPES = ['DNS', 'URI', 'email', 'IP Address']
const SAN_PREFIX = new RegExp(`^(${SAN_TYPES.join('|')}):`)

/**
 * A pattern's glob as an anchored regular expression: `*` is one or more characters within one
 * label or path segment (no `.`, `/`, `,`, `=` or `@`), `**` one or more of any; the rest is literal.
 */
function globToRegExp(glob: string, flags: string): RegExp {
  const body = glob.split('**').map((part) => part.split('*').map((lit) => lit.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('[^./,=@]+')).join('.+')
  return new RegExp(`^${body}$`, flags)
}

function invalidPattern(field: 'san' | 'subject', message: string): TenantryError {
  return new TenantryError('VALIDATION_FAILED', message, { details: { field } })
}

function checkText(field: 'san' | 'subject', pattern: string): void {
  if (typeof pattern !== 'string' || pattern.length === 0 || pattern.length > 500 || !/^[\x20-\x7e]+$/.test(pattern)) {
    throw invalidPattern(field, `The ${field} pattern must be 1–500 printable ASCII characters.`)
  }
}

/**
 * Compile a SAN pattern: `[TYPE:]glob` with TYPE one of `DNS` (the default), `URI`, `email`,
 * `IP Address`; DNS names compare case-insensitively.
 *
 * @example
 * ```ts
 * compileSanPattern('*.acme.example.com')          // DNS:billing.acme.example.com matches
 * compileSanPattern('URI:spiffe://acme.example/**') // URI:spiffe://acme.example/ns/shop/sa/billing matches
 * ```
 */
export function compileSanPattern(pattern: string): SanPattern {
  checkText('san', pattern)
  const m = SAN_PREFIX.exec(pattern)
  const type = m === null ? 'DNS' : m[1]
  const glob = m === null ? pattern : pattern.slice(m[0].length)
  if (glob.length === 0) throw invalidPattern('san', `The SAN pattern '${printable(pattern)}' has no value after its type.`)
  return { type, re: globToRegExp(type === 'DNS' ? glob.toLowerCase() : glob, type === 'DNS' ? 'i' : '') }
}

/**
 * Compile a subject pattern: comma-separated `ATTR=glob` parts (`CN=*.acme, O=Acme`), each of which
 * must match one attribute of the certificate's subject.
 *
 * @example
 * ```ts
 * compileSubjectPattern('CN=*.billing, O=Acme')
 * ```
 */
export function compileSubjectPattern(pattern: string): RegExp[] {
  checkText('subject', pattern)
  const parts = pattern.split(',').map((p) => p.trim())
  for (const p of parts) {
    if (!/^[A-Za-z][A-Za-z0-9.]*=.+$/.test(p)) throw invalidPattern('subject', `The subject pattern part '${printable(p)}' must look like 'CN=*.acme' (ATTRIBUTE=value, '*' as a wildcard).`)
  }
  return parts.map((p) => globToRegExp(p, ''))
}

/** The SAN entries of a certificate as `[type, value]` (Node prints them `DNS:a, URI:b`, quoting values with commas). */
export function sanEntries(cert: X509Certificate): [string, string][] {
  const text = cert.subjectAltName
  if (!text) return []
  const out: [string, string][] = []
  for (const m of text.matchAll(/(?:^|, )([A-Za-z ]+):("(?:[^"\\]|\\.)*"|[^,]*)/g)) {
    let value = m[2]
    if (value.startsWith('"')) {
      try { value = JSON.parse(value) as string } catch { continue }
    }
    out.push([m[1], value])
  }
  return out
}

/** Does the client certificate match the binding's pattern (a binding without one takes every certificate of its CA)? */
export function matchesPattern(leaf: X509Certificate, binding: Pick<CaBinding, 'san' | 'subject'>): boolean {
  if (binding.san !== null) {
    const { type, re } = binding.san
    if (!sanEntries(leaf).some(([t, v]) => t === type && re.test(v))) return false
  }
  if (binding.subject !== null) {
    const lines = leaf.subject.split('\n')
    if (!binding.subject.every((re) => lines.some((l) => re.test(l)))) return false
  }
  return true
}

/** Was the client certificate issued (and signed) by this CA? */
export function issuedBy(leaf: X509Certificate, ca: X509Certificate): boolean {
  try {
    return leaf.checkIssued(ca) && leaf.verify(ca.publicKey)
  } catch {
    return false
  }
}

/**
 * What a client certificate binds to among the bindings of its issuer: the one tenant whose active
 * binding (CA within its validity, pattern matching) takes it; `expired` or `revokedAt` when only
 * such bindings would; `null` when none, or when bindings of two tenants match (ambiguous: it binds to neither).
 *
 * @example
 * ```ts
 * const found = bindTo(new X509Certificate(peer.raw), bindings, Date.now())
 * ```
 */
export function bindTo(leaf: X509Certificate, bindings: readonly CaBinding[], now: number): { tenantId: string; bindingId: string; revokedAt: Date | null; expired: boolean } | null {
  const matching = bindings.filter((b) => issuedBy(leaf, b.ca) && matchesPattern(leaf, b))
  const active = matching.filter((b) => b.revokedAt === null && Date.parse(b.ca.validFrom) <= now && now < Date.parse(b.ca.validTo))
  const tenants = new Set(active.map((b) => b.tenantId))
  if (tenants.size === 1) return { tenantId: active[0].tenantId, bindingId: active[0].id, revokedAt: null, expired: false }
  if (tenants.size > 1) return null
  // Nothing active: say why, an expired CA before a revoked binding.
  const stale = matching.find((b) => b.revokedAt === null) ?? matching[0]
  return stale === undefined ? null : { tenantId: stale.tenantId, bindingId: stale.id, revokedAt: stale.revokedAt, expired: stale.revokedAt === null }
}
