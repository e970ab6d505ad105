import { createHash, type KeyObject } from 'node:crypto'
import { createLocalJWKSet, jwtVerify, type JSONWebKeySet, type JWTVerifyGetKey, type JWTVerifyOptions } from 'jose'
import { TenantryError } from '../core/errors.ts'

/** What the guard knows of a request when it admits it. */
export interface AdmitRequest {
  method?: string
  /** URL path without the query string. */
  path?: string
  /** Request headers with lowercase names. */
  headers?: Record<string, string | string[] | undefined>
  /** The framework request, for your own user and cost functions. */
  raw?: unknown
  /** The user, when the caller already knows it (skips the identifiers); null for none. */
  user?: string | null
  /** Points this request costs at both rate-limit layers (default: the guard's `cost`, else 1). */
  cost?: number
}

/**
 * Finds the user of a request for the per-user rate limit: a stable key, or null/undefined for an
 * anonymous request (only the tenant layer applies to it).
 */
export type UserIdentifier = (req: AdmitRequest) => string | null | undefined | Promise<string | null | undefined>

function headerValue(req: AdmitRequest, name: string): string | undefined {
  const v = req.headers?.[name]
  const s = Array.isArray(v) ? v[0] : v
  return typeof s === 'string' && s.length > 0 ? s : undefined
}

/**
 * The user is the value of a header set by a trusted proxy or gateway (e.g. `x-user-id`). With
 * `hash`, the value is hashed first, so a secret (an API key) is never a limiter key.
 *
 * @example
 * ```ts
 * createTenantry({ guard: { user: userFromHeader('x-user-id') } })
 * ```
 */
export function userFromHeader(name: string, opts: { hash?: boolean } = {}): UserIdentifier {
  const header = name.toLowerCase()
  return function userFromHeaderValue(req) {
    const v = headerValue(req, header)
    if (v === undefined) return null
    return opts.hash ? `k:${createHash('sha256').update(v).digest('base64url').slice(0, 22)}` : `h:${v.slice(0, 200)}`
  }
}

/**
 * The user is the API key in a header (hashed; the key itself never reaches Redis).
 *
 * @example
 * ```ts
 * createTenantry({ guard: { user: [userFromJwt({ secret }), userFromApiKey('x-api-key')] } })
 * ```
 */
export function userFromApiKey(header = 'x-api-key'): UserIdentifier {
  return userFromHeader(header, { hash: true })
}

/** Options of {@link userFromJwt}: the same key options as the `jwtClaim` resolve strategy. */
export interface JwtUserOptions {
  secret?: string | Uint8Array
  publicKey?: CryptoKey | KeyObject
  jwks?: JSONWebKeySet
  issuer?: string | string[]
  audience?: string | string[]
  algorithms?: string[]
  /** Claim naming the user. Default `sub`. */
  claim?: string
  /** Header carrying `Bearer <token>`. Default `authorization`. */
  header?: string
}

/**
 * The user is a claim (default `sub`) of a verified JWT bearer token. A missing, malformed or
 * unverifiable token makes the request anonymous for the user layer; the tenant layer still
 * counts it (and resolution rejects a bad token when it identifies the tenant).
 *
 * @example
 * ```ts
 * createTenantry({ guard: { user: userFromJwt({ secret: process.env.JWT_SECRET!, audience: 'api' }) } })
 * ```
 */
export function userFromJwt(options: JwtUserOptions): UserIdentifier {
  const given = [options.secret, options.publicKey, options.jwks].filter((k) => k !== undefined).length
  if (given !== 1) throw new TenantryError('CONFIG_INVALID', `userFromJwt(): give exactly one of secret, publicKey or jwks (got ${given}).`)
  let key: Uint8Array | CryptoKey | KeyObject | JWTVerifyGetKey
  let algorithms = options.algorithms
  if (options.secret !== undefined) {
    key = typeof options.secret === 'string' ? new TextEncoder().encode(options.secret) : options.secret
    if (key.length < 32) throw new TenantryError('CONFIG_INVALID', 'userFromJwt(): secret must be at least 32 bytes (RFC 7518 §3.2).')
    algorithms ??= ['HS256', 'HS384', 'HS512']
  } else if (options.publicKey !== undefined) {
    key = options.publicKey
  } else {
    key = createLocalJWKSet(options.jwks!)
  }
  const verify: JWTVerifyOptions = {}
  if (algorithms) verify.algorithms = algorithms
  if (options.issuer !== undefined) verify.issuer = options.issuer
  if (options.audience !== undefined) verify.audience = options.audience
  const claim = options.claim ?? 'sub'
  const header = (options.header ?? 'authorization').toLowerCase()
  return async function userFromJwtClaim(req) {
    const m = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i.exec(headerValue(req, header) ?? '')
    if (!m) return null
    try {
      const { payload } = await jwtVerify(m[1], key as Uint8Array, verify)
      const v = payload[claim]
      return typeof v === 'string' && v.length > 0 ? `u:${v.slice(0, 200)}` : null
    } catch {
      return null
    }
  }
}
