import { createLocalJWKSet, jwtVerify } from 'jose'
import type { CryptoKey, JSONWebKeySet, JWTVerifyGetKey, JWTVerifyOptions, KeyObject } from 'jose'
import { TenantryError } from '../core/errors.ts'
import { isUuid, printable, slugProblem } from '../core/validation.ts'
import type { Identifier, RequestInfo, ResolveStrategy } from './request-info.ts'

// ─── Host normalisation ──────────────────────────────────────────────────────────────────────────

/** Longest raw Host worth parsing: 253 for the name, a trailing dot and ':65535'. */
const MAX_RAW_HOST = 253 + 1 + 6
// Checked before lowercasing: String#toLowerCase folds some non-ASCII look-alikes to ASCII
// (KELVIN SIGN U+212A → 'k'), which would let 'ac\u212Ame' pass as 'ackme'.
const HOST_CHARS_RE = /^[A-Za-z0-9.-]+$/
const LABEL = '[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?'
const HOST_RE = new RegExp(`^${LABEL}(?:\\.${LABEL})*$`)
const PORT_RE = /^[0-9]{1,5}$/
const IPV6_RE = /^\[[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*\](?::(.*))?$/
// WHATWG URL parsing treats a host whose last label is a number as an IPv4 address
// ('127.1', '0x7f.1', '3000'), so those are addresses, never tenant hosts.
const IPV4ISH_RE = /(?:^|\.)(?:[0-9]+|0x[0-9a-f]*)$/

let memoRaw: string | undefined
let memoHost: string | null = null

/**
 * The host name of a raw `Host` header: lowercased, port and one trailing dot removed. `null`
 * when there is no host or it is an IP literal (never a tenant host). Throws 400 `TENANT_INVALID`
 * when the value is not a valid host name, so look-alikes and encodings never reach a lookup.
 *
 * @example
 * ```ts
 * normalizeHost('ACME.Example.com.:3000') // 'acme.example.com'
 * normalizeHost('[::1]:3000')             // null
 * normalizeHost('acme_corp.example.com')  // throws TENANT_INVALID
 * ```
 */
export function normalizeHost(host: string | undefined): string | null {
  if (host === undefined || host === '') return null
  // Most requests of a process arrive on a handful of hosts, often two strategies parse the same one.
  if (host === memoRaw) return memoHost
  const result = parseHost(host)
  memoRaw = host
  memoHost = result
  return result
}

function parseHost(host: string): string | null {
  if (host.length > MAX_RAW_HOST) {
    throw invalidHost(host, `is ${host.length} characters long; at most 253 are allowed`)
  }
  if (host.charCodeAt(0) === 0x5b /* [ */) {
    const m = IPV6_RE.exec(host)
    if (m === null) throw invalidHost(host, 'is not a valid IPv6 address literal')
    if (m[1] !== undefined) checkPort(host, m[1])
    return null
  }
  let name = host
  const colon = host.indexOf(':')
  if (colon !== -1) {
    checkPort(host, host.slice(colon + 1))
    name = host.slice(0, colon)
  }
  if (name.charCodeAt(name.length - 1) === 0x2e /* . */) name = name.slice(0, -1)
  if (name.length === 0) throw invalidHost(host, 'has no host name')
  if (name.length > 253) throw invalidHost(host, `is ${name.length} characters long; at most 253 are allowed`)
  if (!HOST_CHARS_RE.test(name)) {
    throw invalidHost(host, 'may contain only letters a-z, digits, dots and hyphens (no encodings, underscores or non-ASCII look-alikes)')
  }
  name = name.toLowerCase()
  if (!HOST_RE.test(name)) throw invalidHost(host, labelProblem(name))
  if (IPV4ISH_RE.test(name)) return null
  return name
}

function checkPort(host: string, port: string): void {
  if (!PORT_RE.test(port)) throw invalidHost(host, `has port '${printable(port, 10)}'; a port is 1 to 65535`)
  const n = Number(port)
  if (n < 1 || n > 65535) throw invalidHost(host, `has port '${port}'; a port is 1 to 65535`)
}

function labelProblem(name: string): string {
  for (const label of name.split('.')) {
    if (label.length === 0) return 'has an empty label (two dots in a row, or a leading dot)'
    if (label.length > 63) return `has a label of ${label.length} characters; at most 63 are allowed`
    if (label.startsWith('-') || label.endsWith('-')) return `has label '${printable(label)}' that starts or ends with a hyphen`
  }
  return 'is not a valid host name'
}

function invalidHost(host: string, problem: string): TenantryError {
  return new TenantryError('TENANT_INVALID', `Host '${printable(host)}' ${problem}.`, {
    details: { host: printable(host) },
  })
}

// ─── Shared validation ───────────────────────────────────────────────────────────────────────────

/** A slug or a uuid sent verbatim (header, claim, custom value): no case folding, no trimming. */
function identifierOf(value: string, source: string, what: string): Identifier {
  if (isUuid(value)) return { kind: 'id', value, source }
  const problem = slugProblem(value)
  if (problem !== null) {
    throw new TenantryError('TENANT_INVALID', `${what} '${printable(value)}' ${problem}; send a tenant slug or id.`, {
      details: { source, value: printable(value) },
    })
  }
  return { kind: 'slug', value, source }
}

/**
 * One value of a header Node may hand over as an array. `undefined` when absent; throws the error
 * `conflict()` builds when copies disagree, because picking one would let a proxy and the app see
 * different tenants.
 */
function singleValue(value: string | string[] | undefined, conflict: () => TenantryError): string | undefined {
  if (value === undefined || typeof value === 'string') return value
  if (value.length === 0) return undefined
  const first = value[0]
  for (let i = 1; i < value.length; i++) if (value[i] !== first) throw conflict()
  return first
}

function configError(message: string, cause?: unknown): TenantryError {
  return new TenantryError('CONFIG_INVALID', message, cause === undefined ? {} : { cause })
}

function isThenable<T>(value: unknown): value is PromiseLike<T> {
  return value !== null && typeof value === 'object' && typeof (value as { then?: unknown }).then === 'function'
}

// ─── subdomain ───────────────────────────────────────────────────────────────────────────────────

/**
 * Options of {@link subdomain}.
 *
 * @example
 * ```ts
 * const options: SubdomainOptions = { baseDomain: 'example.com' }
 * ```
 */
export interface SubdomainOptions {
  /** The domain tenants are subdomains of: `'example.com'` serves `acme.example.com`. */
  baseDomain: string
}

/**
 * The strategy {@link subdomain} returns; `baseDomain` is normalised.
 *
 * @example
 * ```ts
 * subdomain({ baseDomain: 'Example.COM' }).baseDomain // 'example.com'
 * ```
 */
export interface SubdomainStrategy extends ResolveStrategy {
  readonly baseDomain: string
}

/**
 * Finds the tenant slug in the one label in front of a base domain: `acme.example.com` → `acme`.
 * The bare base domain, other hosts and IP addresses are `null`; a malformed, reserved, IDN or
 * nested subdomain (`a.b.example.com`) is 400 `TENANT_INVALID`.
 *
 * @example
 * ```ts
 * const s = subdomain({ baseDomain: 'localhost' })
 * s.identify({ host: 'acme.localhost:3000', path: '/', headers: {} })
 * // { kind: 'slug', value: 'acme', source: 'subdomain' }
 * ```
 */
export function subdomain(options: SubdomainOptions): SubdomainStrategy {
  const raw = options?.baseDomain
  let base: string | null = null
  try {
    if (typeof raw === 'string' && !raw.includes(':')) base = normalizeHost(raw)
  } catch (err) {
    throw configError(`subdomain(): baseDomain '${printable(String(raw))}' is not a host name.`, err)
  }
  if (base === null) {
    throw configError(`subdomain(): baseDomain must be a host name without port, like 'example.com' or 'localhost'; got '${printable(String(raw))}'.`)
  }
  const baseDomain = base
  const suffix = `.${baseDomain}`
  return {
    name: 'subdomain',
    hint: `a subdomain of '${baseDomain}'`,
    baseDomain,
    identify(req: RequestInfo): Identifier | null {
      const host = normalizeHost(req.host)
      if (host === null || host.length <= suffix.length || !host.endsWith(suffix)) return null
      const label = host.slice(0, host.length - suffix.length)
      if (label.includes('.')) {
        throw new TenantryError(
          'TENANT_INVALID',
          `Host '${printable(host)}' has nested subdomains; a tenant is one label directly under '${baseDomain}', like 'acme${suffix}'.`,
          { details: { host: printable(host) } },
        )
      }
      const problem = slugProblem(label)
      if (problem !== null) {
        throw new TenantryError('TENANT_INVALID', `Subdomain '${printable(label)}' of '${baseDomain}' ${problem}.`, {
          details: { host: printable(host), subdomain: printable(label) },
        })
      }
      return { kind: 'slug', value: label, source: 'subdomain' }
    },
  }
}

// ─── customDomain ────────────────────────────────────────────────────────────────────────────────

/**
 * Options of {@link customDomain}.
 *
 * @example
 * ```ts
 * const options: CustomDomainOptions = { exclude: ['example.com'] }
 * ```
 */
export interface CustomDomainOptions {
  /** Domains that are not tenant domains, with everything under them (your base domain). */
  exclude?: string[]
}

/**
 * Treats the whole host as a tenant's custom domain: `shop.acme-corp.com` → a domain lookup. IP
 * addresses, `localhost` (and `*.localhost`, RFC 6761), single-label hosts and hosts equal to or
 * under an excluded domain are `null`. Exclude your base domain when you also use
 * {@link subdomain}, or its hosts are looked up as domains too.
 *
 * @example
 * ```ts
 * const s = customDomain({ exclude: ['example.com'] })
 * s.identify({ host: 'Shop.Acme-Corp.com', path: '/', headers: {} })
 * // { kind: 'domain', value: 'shop.acme-corp.com', source: 'custom-domain' }
 * ```
 */
export function customDomain(options: CustomDomainOptions = {}): ResolveStrategy {
  const excluded: string[] = []
  for (const raw of options.exclude ?? []) {
    let host: string | null = null
    try {
      if (typeof raw === 'string' && !raw.includes(':')) host = normalizeHost(raw)
    } catch (err) {
      throw configError(`customDomain(): excluded domain '${printable(String(raw))}' is not a host name.`, err)
    }
    if (host === null) throw configError(`customDomain(): excluded domain '${printable(String(raw))}' is not a host name.`)
    excluded.push(host)
  }
  return {
    name: 'custom-domain',
    hint: 'a registered custom domain',
    identify(req: RequestInfo): Identifier | null {
      const host = normalizeHost(req.host)
      if (host === null || !host.includes('.') || host.endsWith('.localhost')) return null
      for (const ex of excluded) {
        if (host === ex || (host.endsWith(ex) && host.charCodeAt(host.length - ex.length - 1) === 0x2e)) return null
      }
      return { kind: 'domain', value: host, source: 'custom-domain' }
    },
  }
}

// ─── header ──────────────────────────────────────────────────────────────────────────────────────

/**
 * Options of {@link header}.
 *
 * @example
 * ```ts
 * const options: HeaderOptions = { name: 'x-org' }
 * ```
 */
export interface HeaderOptions {
  /** Header carrying a tenant slug or id. Default `x-tenant`. */
  name?: string
}

const HEADER_NAME_RE = /^[!#$%&'*+.^_`|~0-9a-z-]+$/

/**
 * Reads a tenant slug or uuid from a request header, verbatim: no case folding or trimming, so
 * `ACME` is 400 `TENANT_INVALID` rather than silently `acme`. Copies of the header that disagree
 * are rejected too.
 *
 * @example
 * ```ts
 * header().identify({ host: undefined, path: '/', headers: { 'x-tenant': 'acme' } })
 * // { kind: 'slug', value: 'acme', source: 'header' }
 * ```
 */
export function header(options: HeaderOptions = {}): ResolveStrategy {
  const name = (options.name ?? 'x-tenant').toLowerCase()
  if (!HEADER_NAME_RE.test(name)) throw configError(`header(): '${printable(name)}' is not a valid header name.`)
  const what = `Header ${name}`
  const conflict = () =>
    new TenantryError('TENANT_INVALID', `Header ${name} was sent more than once with different values; send it once.`, {
      details: { source: 'header' },
    })
  return {
    name: 'header',
    hint: `an ${name} header`,
    identify(req: RequestInfo): Identifier | null {
      const value = singleValue(req.headers[name], conflict)
      if (value === undefined) return null
      return identifierOf(value, 'header', what)
    },
  }
}

// ─── pathPrefix ──────────────────────────────────────────────────────────────────────────────────

/**
 * Options of {@link pathPrefix}.
 *
 * @example
 * ```ts
 * const options: PathPrefixOptions = { prefix: '/org' } // '/org/acme/…'
 * ```
 */
export interface PathPrefixOptions {
  /** The path segment(s) in front of the tenant slug. Default `/t`, for `/t/acme/…`. */
  prefix?: string
}

const PREFIX_RE = /^(?:\/[A-Za-z0-9._~-]+)+$/
// A proxy that normalises '/t/acme/../beta' to '/t/beta' would disagree with us about the tenant.
const DOT_SEGMENT_RE = /\/\.\.?(?:\/|\?|$)/

function normalizePrefix(prefix: string, caller: string): string {
  const p = typeof prefix === 'string' && prefix.length > 1 && prefix.endsWith('/') ? prefix.slice(0, -1) : prefix
  if (typeof p !== 'string' || !PREFIX_RE.test(p)) {
    throw configError(`${caller}: prefix must be a path like '/t' (not the root); got '${printable(String(prefix))}'.`)
  }
  return p
}

/** Index of the end of the path segment starting at `from`: the next '/' or '?', or the end. */
function segmentEnd(path: string, from: number): number {
  for (let i = from; i < path.length; i++) {
    const c = path.charCodeAt(i)
    if (c === 0x2f || c === 0x3f) return i
  }
  return path.length
}

/**
 * Reads the tenant slug from the path segment after a prefix: `/t/acme/api/projects` → `acme`.
 * Paths outside the prefix are `null`; `/t`, `/t/`, a malformed slug, a percent-encoded segment
 * or a `.`/`..` segment anywhere in the path are 400 `TENANT_INVALID`. Use
 * {@link stripPathPrefix} to route the rest.
 *
 * @example
 * ```ts
 * pathPrefix().identify({ host: undefined, path: '/t/acme/api', headers: {} })
 * // { kind: 'slug', value: 'acme', source: 'path-prefix' }
 * ```
 */
export function pathPrefix(options: PathPrefixOptions = {}): ResolveStrategy {
  const prefix = normalizePrefix(options.prefix ?? '/t', 'pathPrefix()')
  const n = prefix.length
  const missing = (path: string) =>
    new TenantryError('TENANT_INVALID', `Path '${printable(path)}' has no tenant after '${prefix}/'; use '${prefix}/<tenant-slug>/…'.`, {
      details: { path: printable(path) },
    })
  return {
    name: 'path-prefix',
    hint: `a '${prefix}/<tenant>' path prefix`,
    identify(req: RequestInfo): Identifier | null {
      const path = req.path
      if (!path.startsWith(prefix)) return null
      if (path.length === n) throw missing(path)
      const next = path.charCodeAt(n)
      if (next === 0x3f /* ? */) throw missing(path)
      if (next !== 0x2f /* / */) return null
      const end = segmentEnd(path, n + 1)
      const slug = path.slice(n + 1, end)
      if (slug.length === 0) throw missing(path)
      if (slug.includes('%')) {
        throw new TenantryError(
          'TENANT_INVALID',
          `Tenant '${printable(slug)}' in path '${printable(path)}' is percent-encoded; send the slug as plain letters a-z, digits and hyphens.`,
          { details: { path: printable(path) } },
        )
      }
      const problem = slugProblem(slug)
      if (problem !== null) {
        throw new TenantryError('TENANT_INVALID', `Tenant '${printable(slug)}' in path '${printable(path)}' ${problem}.`, {
          details: { path: printable(path) },
        })
      }
      if (DOT_SEGMENT_RE.test(path)) {
        throw new TenantryError('TENANT_INVALID', `Path '${printable(path)}' has '.' or '..' segments; send a normalised path.`, {
          details: { path: printable(path) },
        })
      }
      return { kind: 'slug', value: slug, source: 'path-prefix' }
    },
  }
}

/**
 * The rest of `path` after `<prefix>/<tenant>`, always starting with `/` (a query string is kept);
 * `path` itself when it does not start with the prefix.
 *
 * @example
 * ```ts
 * stripPathPrefix('/t/acme/api/projects', '/t') // '/api/projects'
 * stripPathPrefix('/t/acme', '/t')              // '/'
 * stripPathPrefix('/health', '/t')              // '/health'
 * ```
 */
export function stripPathPrefix(path: string, prefix = '/t'): string {
  const p = normalizePrefix(prefix, 'stripPathPrefix()')
  if (!path.startsWith(p) || path.charCodeAt(p.length) !== 0x2f) return path
  const end = segmentEnd(path, p.length + 1)
  if (end === path.length) return '/'
  return path.charCodeAt(end) === 0x2f ? path.slice(end) : `/${path.slice(end)}`
}

// ─── jwtClaim ────────────────────────────────────────────────────────────────────────────────────

/**
 * Options of {@link jwtClaim}. Give exactly one of `secret`, `publicKey`, `jwks`.
 *
 * @example
 * ```ts
 * const options: JwtClaimOptions = { jwks, issuer: 'https://auth.example.com', audience: 'api', claim: 'org_id' }
 * ```
 */
export interface JwtClaimOptions {
  /** Shared secret for HS256/384/512; at least 32 bytes (RFC 7518 §3.2). */
  secret?: string | Uint8Array
  /** Public key for asymmetric algorithms (RS*, PS*, ES*, EdDSA). */
  publicKey?: CryptoKey | KeyObject
  /** A JSON Web Key Set held in memory; the token's `kid`/`alg` pick the key. */
  jwks?: JSONWebKeySet
  /** Accepted `iss` value(s); unchecked when absent. */
  issuer?: string | string[]
  /** Accepted `aud` value(s); unchecked when absent. */
  audience?: string | string[]
  /** Accepted `alg` values. Default: HS256/384/512 with `secret`, what the key allows otherwise. */
  algorithms?: string[]
  /** Leeway for `exp`/`nbf`, in seconds or as a jose time span (`'30s'`). */
  clockTolerance?: number | string
  /** Claim holding the tenant slug or id. Default `tenant`. */
  claim?: string
  /** Header carrying `Bearer <token>`. Default `authorization`. */
  header?: string
}

const BEARER_RE = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i

/**
 * Reads the tenant slug or id from a claim of a verified JWT bearer token (via jose). No header
 * is `null`; a header that is not a Bearer token or a token that fails verification (signature,
 * expiry, issuer, audience, algorithm) is 401 `TENANT_TOKEN_INVALID` saying why; a verified token
 * without the claim is `null`; a claim that is not a slug or uuid string is 400 `TENANT_INVALID`.
 * A missing or ambiguous key is `CONFIG_INVALID` at once.
 *
 * @example
 * ```ts
 * const s = jwtClaim({ secret: process.env.JWT_SECRET, issuer: 'https://auth.example.com', audience: 'api' })
 * await s.identify({ host: undefined, path: '/', headers: { authorization: `Bearer ${token}` } })
 * // { kind: 'slug', value: 'acme', source: 'jwt-claim' }
 * ```
 */
export function jwtClaim(options: JwtClaimOptions): ResolveStrategy {
  const given = [options?.secret, options?.publicKey, options?.jwks].filter((k) => k !== undefined).length
  if (given !== 1) {
    throw configError(`jwtClaim(): give exactly one of secret, publicKey or jwks (got ${given}).`)
  }
  const { secret, publicKey, jwks } = options
  let key: Uint8Array | CryptoKey | KeyObject | JWTVerifyGetKey
  let algorithms = options.algorithms
  if (secret !== undefined) {
    const bytes = typeof secret === 'string' ? new TextEncoder().encode(secret) : secret
    if (!(bytes instanceof Uint8Array) || bytes.length < 32) {
      throw configError('jwtClaim(): secret must be at least 32 bytes (RFC 7518 §3.2); generate one with `openssl rand -base64 32`.')
    }
    key = bytes
    algorithms ??= ['HS256', 'HS384', 'HS512']
  } else if (publicKey !== undefined) {
    if (publicKey === null || typeof publicKey !== 'object') throw configError('jwtClaim(): publicKey must be a CryptoKey or KeyObject.')
    key = publicKey
  } else {
    try {
      key = createLocalJWKSet(jwks as JSONWebKeySet)
    } catch (err) {
      throw configError('jwtClaim(): jwks is not a valid JSON Web Key Set.', err)
    }
  }
  const claim = options.claim ?? 'tenant'
  if (typeof claim !== 'string' || claim.length === 0) throw configError('jwtClaim(): claim must be a non-empty string.')
  const headerName = (options.header ?? 'authorization').toLowerCase()
  if (!HEADER_NAME_RE.test(headerName)) throw configError(`jwtClaim(): '${printable(headerName)}' is not a valid header name.`)

  const verifyOptions: JWTVerifyOptions = {}
  if (algorithms !== undefined) verifyOptions.algorithms = algorithms as JWTVerifyOptions['algorithms']
  if (options.issuer !== undefined) verifyOptions.issuer = options.issuer
  if (options.audience !== undefined) verifyOptions.audience = options.audience
  if (options.clockTolerance !== undefined) verifyOptions.clockTolerance = options.clockTolerance
  const what = `Token claim '${printable(claim)}'`
  const conflict = () => tokenInvalid(`the ${headerName} header was sent more than once with different values`)

  async function verify(token: string): Promise<Identifier | null> {
    let payload: Record<string, unknown>
    try {
      payload = (await jwtVerify(token, key as Uint8Array, verifyOptions)).payload
    } catch (err) {
      throw tokenInvalid(joseReason(err), err)
    }
    const value = payload[claim]
    if (value === undefined) return null
    if (typeof value !== 'string') {
      throw new TenantryError('TENANT_INVALID', `${what} must be a tenant slug or id string, not ${value === null ? 'null' : typeof value}.`, {
        details: { source: 'jwt-claim' },
      })
    }
    return identifierOf(value, 'jwt-claim', what)
  }

  return {
    name: 'jwt-claim',
    hint: `a bearer token with a '${printable(claim)}' claim`,
    identify(req: RequestInfo): Identifier | null | Promise<Identifier | null> {
      const value = singleValue(req.headers[headerName], conflict)
      if (value === undefined) return null
      const m = BEARER_RE.exec(value)
      if (m === null) throw tokenInvalid(`the ${headerName} header is not 'Bearer <token>'`)
      return verify(m[1])
    },
  }
}

function tokenInvalid(reason: string, cause?: unknown): TenantryError {
  return new TenantryError('TENANT_TOKEN_INVALID', `The bearer token was rejected: ${reason}. Sign in again to get a valid token.`, {
    details: { reason },
    ...(cause === undefined ? {} : { cause }),
  })
}

function joseReason(err: unknown): string {
  const e = err as { code?: unknown; claim?: unknown } | null
  switch (e?.code) {
    case 'ERR_JWT_EXPIRED': return 'token expired'
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED':
      switch (e.claim) {
        case 'iss': return 'wrong issuer'
        case 'aud': return 'wrong audience'
        case 'nbf': return 'token not yet valid'
        case 'iat': return 'invalid issued-at time'
        default: return `claim '${printable(String(e.claim), 40)}' failed validation`
      }
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED': return 'bad signature'
    case 'ERR_JOSE_ALG_NOT_ALLOWED': return 'signing algorithm not allowed'
    case 'ERR_JWS_INVALID':
    case 'ERR_JWT_INVALID': return 'malformed token'
    case 'ERR_JWKS_NO_MATCHING_KEY': return 'no known key matches the token'
    case 'ERR_JWKS_MULTIPLE_MATCHING_KEYS': return 'several keys match the token'
    case 'ERR_JOSE_NOT_SUPPORTED': return 'unsupported algorithm or key'
    // jose throws plain TypeErrors for some key/algorithm combinations the token chose.
    default: return 'token could not be verified'
  }
}

// ─── custom ──────────────────────────────────────────────────────────────────────────────────────

/**
 * What a {@link custom} function may return: a slug or uuid string, an identifier, or nothing.
 *
 * @example
 * ```ts
 * const fromCookie = (req: RequestInfo): CustomResult => readCookie(req.headers.cookie, 'tenant') ?? null
 * ```
 */
export type CustomResult = string | Identifier | null | undefined

/**
 * A strategy from your own function, e.g. reading an mTLS certificate from `req.raw`. A returned
 * string is validated like the header (slug or uuid, verbatim); a returned identifier is validated
 * for its kind and gets `source = name`.
 *
 * @example
 * ```ts
 * const fromCert = custom('mtls', (req) => (req.raw as TLSRequest).socket.getPeerCertificate().subject?.O ?? null, {
 *   hint: 'a client certificate',
 * })
 * ```
 */
export function custom(
  name: string,
  fn: (req: RequestInfo) => CustomResult | Promise<CustomResult>,
  options: { hint?: string } = {},
): ResolveStrategy {
  if (typeof name !== 'string' || name.length === 0) throw configError('custom(): name must be a non-empty string.')
  if (typeof fn !== 'function') throw configError(`custom('${printable(name)}'): fn must be a function.`)
  const what = `Tenant from '${printable(name)}'`
  const check = (result: CustomResult): Identifier | null => {
    if (result === null || result === undefined) return null
    if (typeof result === 'string') return identifierOf(result, name, what)
    if (typeof result === 'object' && typeof result.value === 'string') {
      switch (result.kind) {
        case 'slug': {
          const problem = slugProblem(result.value)
          if (problem !== null) {
            throw new TenantryError('TENANT_INVALID', `${what} '${printable(result.value)}' ${problem}.`, {
              details: { source: name, value: printable(result.value) },
            })
          }
          return { kind: 'slug', value: result.value, source: name }
        }
        case 'id':
          if (!isUuid(result.value)) {
            throw new TenantryError('TENANT_INVALID', `${what} '${printable(result.value)}' is not a lowercase uuid.`, {
              details: { source: name, value: printable(result.value) },
            })
          }
          return { kind: 'id', value: result.value, source: name }
        case 'domain': {
          const host = normalizeHost(result.value)
          return host === null ? null : { kind: 'domain', value: host, source: name }
        }
      }
    }
    throw configError(`custom('${printable(name)}') returned ${typeof result}; return a slug or uuid string, an identifier or null.`)
  }
  return {
    name,
    ...(options.hint === undefined ? {} : { hint: options.hint }),
    identify(req: RequestInfo): Identifier | null | Promise<Identifier | null> {
      const result = fn(req)
      return isThenable<CustomResult>(result) ? Promise.resolve(result).then(check) : check(result)
    },
  }
}
