import { LRUCache } from 'lru-cache'
import { randomUUID } from 'node:crypto'
import { SignJWT, createLocalJWKSet, createRemoteJWKSet, exportJWK, importJWK, jwtVerify } from 'jose'
import type { CryptoKey, JSONWebKeySet, JWK, JWTVerifyGetKey } from 'jose'
import { TenantryError } from '../core/errors.ts'
import type { Tenant } from '../core/types.ts'
import { isUuid, printable } from '../core/validation.ts'
import type { Identifier, RequestInfo, ResolveStrategy } from '../resolve/request-info.ts'
import { currentScope } from './context.ts'

/** The header carrying the signed tenant assertion between services. */
export const ASSERTION_HEADER = 'x-tenant-assertion'
const MAX_TTL_SECONDS = 300
const ASSERTION_TYPE = 'tenant-assertion+jwt'

/**
 * Options of the sending side: this service's name (the assertion's issuer), its private signing
 * key as a JWK with a `kid` and `alg` (ES256, EdDSA, RS256…), and how long an assertion lives.
 *
 * @example
 * ```ts
 * const options: PropagationOptions = { service: 'orders', signingKey: JSON.parse(process.env.TENANT_SIGNING_JWK!), ttlSeconds: 30 }
 * ```
 */
export interface PropagationOptions {
  service: string
  signingKey: JWK
  /** Lifetime of an assertion, 1 to 300 seconds. Default 30. */
  ttlSeconds?: number
}

/**
 * The sending side of service-to-service propagation: headers for outgoing calls made inside a
 * tenant context, a `fetch` that adds them, and the public JWKS to publish.
 *
 * @example
 * ```ts
 * const res = await tenantry.propagation.fetch('http://billing:3000/invoices', { audience: 'billing' })
 * app.get('/.well-known/jwks.json', async () => tenantry.propagation.jwks())
 * ```
 */
export interface TenantPropagation {
  /** `x-tenant-assertion` (a JWS for `audience`) and W3C `baggage` for the current tenant; throws `TENANT_CONTEXT_MISSING` outside one. */
  headers(audience: string): Promise<Record<string, string>>
  /** `fetch` with {@link headers} added for `init.audience`. */
  fetch(input: string | URL, init: RequestInit & { audience: string }): Promise<Response>
  /** The public keys receivers verify with (publish at `/.well-known/jwks.json`). */
  jwks(): Promise<JSONWebKeySet>
}

function configError(message: string, cause?: unknown): TenantryError {
  return new TenantryError('CONFIG_INVALID', message, cause === undefined ? {} : { cause })
}

/**
 * Create the sending side; `createTenantry({ propagation })` does this and exposes it as
 * `tenantry.propagation`. The key is imported once; each call signs a fresh assertion (tenant id
 * and slug, audience, issuer, expiry, a unique `jti`, the request id).
 *
 * @example
 * ```ts
 * const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true })
 * const signingKey = { ...(await exportJWK(privateKey)), kid: 'orders-2026-12', alg: 'ES256' }
 * const propagation = await createPropagation({ service: 'orders', signingKey })
 * ```
 */
export async function createPropagation(options: PropagationOptions): Promise<TenantPropagation> {
  const { service, signingKey } = options
  if (typeof service !== 'string' || !/^[a-z0-9][a-z0-9._-]{0,62}$/.test(service)) throw configError(`propagation: service '${printable(String(service))}' must be 1–63 lowercase letters, digits, '.', '_' or '-'.`)
  const ttl = options.ttlSeconds ?? 30
  if (!Number.isInteger(ttl) || ttl < 1 || ttl > MAX_TTL_SECONDS) throw configError(`propagation: ttlSeconds must be a whole number from 1 to ${MAX_TTL_SECONDS}.`)
  if (!signingKey || typeof signingKey !== 'object' || typeof signingKey.kid !== 'string' || typeof signingKey.alg !== 'string' || signingKey.d === undefined) {
    throw configError('propagation: signingKey must be a private JWK with kid and alg (e.g. ES256).')
  }
  const alg = signingKey.alg
  const kid = signingKey.kid
  let key: CryptoKey | Uint8Array
  try {
    key = await importJWK(signingKey, alg)
  } catch (err) {
    throw configError(`propagation: signingKey cannot be imported for ${printable(alg)}.`, err)
  }
  if (key instanceof Uint8Array) throw configError('propagation: a shared secret cannot be published as a JWKS; use an asymmetric key (ES256, EdDSA).')
  const { d: _d, p: _p, q: _q, dp: _dp, dq: _dq, qi: _qi, ...publicJwk } = signingKey

  async function headers(audience: string): Promise<Record<string, string>> {
    if (typeof audience !== 'string' || audience.length === 0 || audience.length > 200) throw new TenantryError('VALIDATION_FAILED', 'propagation: audience must name the target service.')
    const scope = currentScope()
    if (scope === undefined) {
      throw new TenantryError('TENANT_CONTEXT_MISSING', 'A tenant assertion can only be made inside a tenant context (a resolved request or tenantry.withTenant).')
    }
    const tenant: Tenant = scope.tenant
    const claims: Record<string, unknown> = { tid: tenant.id, slug: tenant.slug }
    if (scope.requestId) claims.rid = scope.requestId
    const jws = await new SignJWT(claims)
      .setProtectedHeader({ alg, kid, typ: ASSERTION_TYPE })
      .setIssuer(service)
      .setAudience(audience)
      .setIssuedAt()
      .setExpirationTime(`${ttl}s`)
      .setJti(randomUUID())
      .sign(key)
    return { [ASSERTION_HEADER]: jws, baggage: `tenant.id=${tenant.id},tenant.slug=${encodeURIComponent(tenant.slug)}` }
  }

  return {
    headers,
    async fetch(input, init) {
      const { audience, ...rest } = init
      const h = new Headers(rest.headers)
      for (const [k, v] of Object.entries(await headers(audience))) h.set(k, v)
      return fetch(input, { ...rest, headers: h })
    },
    async jwks() {
      return { keys: [{ ...(publicJwk as JWK), use: 'sig' }] }
    },
  }
}

/**
 * Options of {@link propagated}: this service's name (the audience assertions must be for), the
 * keys of the services allowed to call it (a JWKS in memory, or the URL it is published at:
 * fetched, cached and re-fetched for an unknown `kid`, so senders rotate keys by publishing the
 * new one first), and optionally the issuers accepted.
 *
 * @example
 * ```ts
 * const options: PropagatedOptions = { audience: 'billing', keys: new URL('http://orders:3000/.well-known/jwks.json'), issuers: ['orders'] }
 * ```
 */
export interface PropagatedOptions {
  audience: string
  keys: JSONWebKeySet | URL
  issuers?: string[]
  /** Seconds of clock skew allowed on `exp`/`iat`. Default 5. */
  clockToleranceSeconds?: number
  /**
   * Refuse an assertion whose `jti` this process has already accepted (401, reason `replayed`),
   * remembered until it expires, at most `max` (default 100 000) at once. Per process: a replay to
   * another replica is not seen. Off by default (a caller may reuse `headers()` for a few calls).
   */
  rejectReplays?: boolean | { max?: number }
}

function assertionInvalid(reason: string, message: string, cause?: unknown): TenantryError {
  return new TenantryError('TENANT_ASSERTION_INVALID', `The tenant assertion was rejected: ${message}.`, { details: { reason }, ...(cause === undefined ? {} : { cause }) })
}

function reasonOf(err: unknown): [string, string] {
  const e = err as { code?: string; claim?: string } | null
  switch (e?.code) {
    case 'ERR_JWT_EXPIRED': return ['expired', 'it expired (assertions live seconds; replaying an old one fails)']
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED':
      if (e.claim === 'aud') return ['audience', 'it was made for another service']
      if (e.claim === 'iss') return ['issuer', 'its issuer is not allowed to call this service']
      return ['claims', `claim '${printable(String(e.claim), 40)}' failed validation`]
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED': return ['forged', 'its signature does not verify']
    case 'ERR_JWKS_NO_MATCHING_KEY': return ['forged', 'no published key matches it']
    case 'ERR_JOSE_ALG_NOT_ALLOWED': return ['forged', 'its algorithm is not allowed']
    default: return ['malformed', 'it is not a valid signed assertion']
  }
}

/**
 * The receiving side: resolves the tenant from a verified `x-tenant-assertion` (signature by a
 * published key, audience = this service, not expired, typed as a tenant assertion). No header is
 * `null` (other strategies decide); a forged, expired (or replayed after expiry), wrong-audience or
 * malformed assertion — or, with `rejectReplays`, one used before — is 401 `TENANT_ASSERTION_INVALID` with `details.reason`.
 *
 * @example
 * ```ts
 * const tenantry = await createTenantry({ resolve: [propagated({ audience: 'billing', keys: new URL('http://orders:3000/.well-known/jwks.json') })] })
 * ```
 */
export function propagated(options: PropagatedOptions): ResolveStrategy {
  const audience = options?.audience
  if (typeof audience !== 'string' || audience.length === 0) throw configError('propagated(): audience must name this service.')
  let keys: JWTVerifyGetKey
  try {
    keys = options.keys instanceof URL ? createRemoteJWKSet(options.keys, { cooldownDuration: 1000 }) : createLocalJWKSet(options.keys)
  } catch (err) {
    throw configError('propagated(): keys must be a JSON Web Key Set or the URL it is published at.', err)
  }
  const verifyOptions = {
    audience,
    typ: ASSERTION_TYPE,
    clockTolerance: options.clockToleranceSeconds ?? 5,
    requiredClaims: ['exp', 'iat', 'jti', 'tid'],
    ...(options.issuers ? { issuer: options.issuers } : {}),
  }
  const replays = options.rejectReplays
    ? new LRUCache<string, true>({ max: (typeof options.rejectReplays === 'object' ? options.rejectReplays.max : undefined) ?? 100_000 })
    : null
  const toleranceMs = verifyOptions.clockTolerance * 1000
  async function verify(token: string): Promise<Identifier> {
    let payload: Record<string, unknown>
    try {
      payload = (await jwtVerify(token, keys, verifyOptions)).payload
    } catch (err) {
      const [reason, message] = reasonOf(err)
      throw assertionInvalid(reason, message, err)
    }
    const exp = payload.exp as number
    const iat = payload.iat as number
    if (exp - iat > MAX_TTL_SECONDS) throw assertionInvalid('claims', `it lives longer than ${MAX_TTL_SECONDS} seconds`)
    const tid = payload.tid
    if (typeof tid !== 'string' || !isUuid(tid)) throw assertionInvalid('claims', 'its tenant id is not a uuid')
    if (replays !== null) {
      // Verified first, so that forged tokens cannot fill the cache; kept until the assertion would expire anyway.
      const id = `${String(payload.iss)} ${String(payload.jti)}`
      if (replays.has(id)) throw assertionInvalid('replayed', 'it was already used (each assertion is good for one call)')
      replays.set(id, true, { ttl: Math.max(1, exp * 1000 + toleranceMs - Date.now()) })
    }
    return { kind: 'id', value: tid, source: 'propagated' }
  }
  return {
    name: 'propagated',
    hint: `a signed ${ASSERTION_HEADER} header from a calling service`,
    identify(req: RequestInfo): Promise<Identifier | null> | null {
      const raw = req.headers[ASSERTION_HEADER]
      if (raw === undefined) return null
      if (Array.isArray(raw) || raw.length > 8192) throw assertionInvalid('malformed', 'send one assertion header')
      return verify(raw)
    },
  }
}

/** What `tenantry.propagation` is without `createTenantry({ propagation })`: every call says how to configure it. */
export function unconfiguredPropagation(): TenantPropagation {
  const fail = async (): Promise<never> => {
    throw configError("Tenant propagation is not configured; pass createTenantry({ propagation: { service: 'orders', signingKey } }).")
  }
  return { headers: fail, fetch: fail, jwks: fail }
}
