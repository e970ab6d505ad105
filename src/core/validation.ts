import { TenantryError } from './errors.ts'

/** Names that can never be tenant slugs: they are commonly used as hosts or routes of the app itself. */
export const RESERVED_SLUGS: ReadonlySet<string> = new Set([
  'www', 'admin', 'api', 'app', 'apps', 'assets', 'auth', 'billing', 'blog', 'cdn', 'console',
  'dashboard', 'dev', 'docs', 'help', 'localhost', 'login', 'mail', 'ns1', 'ns2', 'public',
  'root', 'smtp', 'staging', 'static', 'status', 'support', 'system', 'test', 'tenantry',
])

const SLUG_RE = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

/**
 * Why `value` is not a usable tenant slug, or `null` when it is one. A slug is one lowercase DNS
 * label (RFC 1035: letters, digits, inner hyphens, at most 63), not reserved, not an IDN
 * (`xn--`, which hides look-alike characters), not all digits.
 *
 * @example
 * ```ts
 * slugProblem('acme')   // null
 * slugProblem('ACME')   // "must be lowercase"
 * ```
 */
export function slugProblem(value: string, reserved: ReadonlySet<string> = RESERVED_SLUGS): string | null {
  if (value.length === 0) return 'is empty'
  if (value.length > 63) return `is ${value.length} characters long; at most 63 are allowed`
  if (value !== value.toLowerCase()) return 'must be lowercase'
  if (!SLUG_RE.test(value)) return 'must be a DNS label: letters a-z, digits and inner hyphens'
  if (/^[0-9]+$/.test(value)) return 'must contain a letter'
  if (UUID_RE.test(value)) return 'must not have the form of a uuid (identifiers of that form are read as tenant ids)'
  if (value.slice(2, 4) === '--') return "must not have '--' in the third and fourth place (reserved for IDN/punycode)"
  if (reserved.has(value)) return 'is reserved'
  return null
}

/** True when `value` is a usable tenant slug. */
export function isValidSlug(value: string, reserved?: ReadonlySet<string>): boolean {
  return slugProblem(value, reserved) === null
}

/**
 * Throw a `TENANT_INVALID` error when `value` is not a usable slug.
 *
 * @example
 * ```ts
 * assertSlug(req.body.slug)
 * ```
 */
export function assertSlug(value: unknown, reserved?: ReadonlySet<string>): asserts value is string {
  if (typeof value !== 'string') {
    throw new TenantryError('TENANT_INVALID', 'A tenant slug must be a string.')
  }
  const problem = slugProblem(value, reserved)
  if (problem) {
    throw new TenantryError('TENANT_INVALID', `Tenant slug '${printable(value)}' ${problem}.`, {
      details: { slug: printable(value) },
    })
  }
}

/** True when `value` is a lowercase canonical UUID. */
export function isUuid(value: string): boolean {
  return UUID_RE.test(value)
}

/** A value cut and escaped for safe display in an error message. */
export function printable(value: string, max = 80): string {
  const cut = value.length > max ? `${value.slice(0, max)}…` : value
  return cut.replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)
}

/** A connection URL with its password replaced by `***` (for messages, the CLI and the admin API). */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url)
    if (u.password) u.password = '***'
    return u.toString()
  } catch {
    return '(invalid URL)'
  }
}
