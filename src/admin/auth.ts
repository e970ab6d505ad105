import { createPublicKey } from 'node:crypto'
import { createRemoteJWKSet, jwtVerify, type JWTVerifyGetKey } from 'jose'
import { TenantryError } from '../core/errors.ts'
import { ADMIN_ROLES, TOKEN_PREFIX, type AdminRole, type AdminTokens } from './tokens.ts'

/**
 * How operators prove who they are to the admin API. Admin tokens (from `tenantry admin tokens
 * create`) are on by default; an OIDC provider's JWTs are accepted when `jwt` is set. A tenant's
 * credentials (its resolution chain, its tenant JWTs) are never consulted here.
 */
export interface AdminAuthOptions {
  /** Accept admin tokens from the catalog. Default true. */
  tokens?: boolean
  /** Accept JWTs of an OIDC provider, verified with jose. */
  jwt?: AdminJwtOptions
}

export interface AdminJwtOptions {
  /** The provider's JWKS URL (`https://id.example.com/.well-known/jwks.json`). */
  jwksUrl?: string
  /** Or a PEM public key (RS256/ES256/EdDSA…). */
  publicKey?: string
  /** Or a shared secret (HS256), for tests and small set-ups. */
  secret?: string
  /** Required `iss`. */
  issuer?: string
  /** Required `aud`. */
  audience?: string
  /** The claim holding the role (`viewer`, `operator`, `admin`, or an array of them). Default `tenantry_role`. */
  roleClaim?: string
  /** Accepted algorithms. Default: what the key allows. */
  algorithms?: string[]
}

/** Who made an admin request, and with what role. */
export interface AdminPrincipal {
  /** `token:<name>` or `jwt:<sub>`: recorded in the audit log. */
  actor: string
  role: AdminRole
}

/** Turns an `Authorization` header into a principal, or a coded 401/403. */
export type AdminAuthenticator = (authorization: string | undefined) => Promise<AdminPrincipal>

const unauthorized = (why: string) =>
  new TenantryError('ADMIN_UNAUTHORIZED', `${why} Send 'Authorization: Bearer <admin token>' (tenantry admin tokens create) or an admin JWT.`)

export function createAdminAuthenticator(options: AdminAuthOptions, tokens: AdminTokens | null): AdminAuthenticator {
  const jwt = options.jwt
  let key: JWTVerifyGetKey | Uint8Array | ReturnType<typeof createPublicKey> | undefined
  if (jwt) {
    const given = [jwt.jwksUrl, jwt.publicKey, jwt.secret].filter((x) => x !== undefined).length
    if (given !== 1) throw new TenantryError('CONFIG_INVALID', 'admin auth.jwt needs exactly one of jwksUrl, publicKey or secret.')
    try {
      key = jwt.jwksUrl ? createRemoteJWKSet(new URL(jwt.jwksUrl)) : jwt.publicKey ? createPublicKey(jwt.publicKey) : new TextEncoder().encode(jwt.secret!)
    } catch (err) {
      throw new TenantryError('CONFIG_INVALID', `admin auth.jwt: ${(err as Error).message}`, { cause: err })
    }
  }
  const roleClaim = jwt?.roleClaim ?? 'tenantry_role'

  return async function authenticateAdmin(authorization) {
    const m = /^Bearer ([A-Za-z0-9._~+/=-]+)$/.exec(authorization ?? '')
    if (!m) throw unauthorized(authorization ? 'The Authorization header is not a bearer token.' : 'No admin credentials.')
    const bearer = m[1]
    if (bearer.startsWith(TOKEN_PREFIX)) {
      if (!tokens) throw unauthorized('Admin tokens are turned off here.')
      const t = await tokens.verify(bearer)
      if (!t) throw unauthorized('The admin token is unknown or revoked.')
      return { actor: `token:${t.name}`, role: t.role }
    }
    if (!jwt || !key) throw unauthorized('The bearer is not an admin token.')
    let payload: Record<string, unknown>
    try {
      const verified = await jwtVerify(bearer, key as Parameters<typeof jwtVerify>[1], {
        issuer: jwt.issuer, audience: jwt.audience, algorithms: jwt.algorithms,
      })
      payload = verified.payload
    } catch (err) {
      throw new TenantryError('ADMIN_UNAUTHORIZED', `The admin JWT failed verification (${(err as { code?: string }).code ?? 'invalid'}); sign in again.`, { cause: err })
    }
    const claim = payload[roleClaim]
    const roles = (Array.isArray(claim) ? claim : [claim]).filter((r): r is AdminRole => ADMIN_ROLES.includes(r as AdminRole))
    if (roles.length === 0) {
      throw new TenantryError('ADMIN_FORBIDDEN', `The JWT has no admin role: its '${roleClaim}' claim must be viewer, operator or admin.`)
    }
    const role = roles.reduce((a, b) => (ADMIN_ROLES.indexOf(b) > ADMIN_ROLES.indexOf(a) ? b : a))
    return { actor: `jwt:${String(payload.sub ?? payload.email ?? 'unknown')}`, role }
  }
}
