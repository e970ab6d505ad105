import { X509Certificate, createHash, timingSafeEqual } from 'node:crypto'
import { TenantryError } from '../core/errors.ts'
import { printable } from '../core/validation.ts'
import type { Identifier, RequestInfo, ResolveStrategy } from './request-info.ts'

// ─── The credential port ─────────────────────────────────────────────────────────────────────────

/**
 * A tenant API key as the resolver needs it: never the key, only its SHA-256.
 *
 * @example
 * ```ts
 * const rec: ApiKeyRecord = { id: '3f9c0a1b2c3d4e5f', tenantId, scopes: ['read'], hash, expiresAt: null, revokedAt: null }
 * ```
 */
export interface ApiKeyRecord {
  id: string
  tenantId: string
  scopes: string[]
  /** SHA-256 of the whole key, hex. */
  hash: string
  expiresAt: Date | null
  revokedAt: Date | null
}

/**
 * A client certificate bound to a tenant by its SHA-256 fingerprint.
 *
 * @example
 * ```ts
 * const rec: CertificateRecord = { fingerprint: 'ab12…', tenantId, revokedAt: null }
 * ```
 */
export interface CertificateRecord {
  /** SHA-256 of the DER certificate, lowercase hex without colons. */
  fingerprint: string
  tenantId: string
  revokedAt: Date | null
  /** Bound through a tenant CA whose certificate is outside its validity period. */
  expired?: boolean
}

/**
 * Where credential strategies find keys and certificates; `createTenantry` gives its catalog-backed
 * store to every strategy that has `useCredentials`. A result at hand (cached) is returned as is,
 * otherwise a promise; a miss is `null`.
 *
 * @example
 * ```ts
 * const store: CredentialStore = { apiKeyById: (id) => keys.get(id) ?? null, certificateByFingerprint: () => null }
 * const s = apiKey({ store })
 * ```
 */
export interface CredentialStore {
  apiKeyById(id: string): ApiKeyRecord | null | Promise<ApiKeyRecord | null>
  certificateByFingerprint(fingerprint: string): CertificateRecord | null | Promise<CertificateRecord | null>
  /**
   * A certificate not registered by fingerprint, bound through a tenant CA that issued it (and a
   * SAN/subject pattern it matches). Optional: without it only fingerprints bind.
   */
  certificateByIssuer?(leaf: { fingerprint: string; cert: X509Certificate }): CertificateRecord | null | Promise<CertificateRecord | null>
  /** Note that a key was used (the store writes it lazily). Optional. */
  touchApiKey?(id: string): void
}

/**
 * A strategy that needs the credential store; `createTenantry` calls `useCredentials` once.
 *
 * @example
 * ```ts
 * const s: CredentialStrategy = apiKey()
 * s.useCredentials(store)
 * ```
 */
export interface CredentialStrategy extends ResolveStrategy {
  useCredentials(store: CredentialStore): void
}

/** True for a strategy that wants the credential store. */
export function needsCredentials(s: ResolveStrategy): s is CredentialStrategy {
  return typeof (s as Partial<CredentialStrategy>).useCredentials === 'function'
}

function isThenable<T>(v: unknown): v is Promise<T> {
  return v !== null && typeof v === 'object' && typeof (v as { then?: unknown }).then === 'function'
}

function unbound(name: string): TenantryError {
  return new TenantryError('CONFIG_INVALID', `${name}(): no credential store; pass it to createTenantry({ resolve: [...] }) or give { store }.`)
}

// ─── API keys ────────────────────────────────────────────────────────────────────────────────────

/** Tenant API keys start with this, so a leaked one is recognisable (secret scanners, logs). */
export const API_KEY_PREFIX = 'tnk_'
/** `tnk_<16 hex id>_<43 base64url secret>`. */
const API_KEY_RE = /^tnk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/
const BEARER_RE = /^Bearer +(\S+) *$/i

/**
 * What a request's verified API key allows; read it with {@link apiKeyOf}.
 *
 * @example
 * ```ts
 * const key: ApiKeyGrant = { id: '3f9c0a1b2c3d4e5f', tenantId, scopes: ['projects:read'] }
 * ```
 */
export interface ApiKeyGrant {
  id: string
  tenantId: string
  scopes: readonly string[]
}

const grants = new WeakMap<object, ApiKeyGrant>()

/**
 * The API key a request was resolved by (with its scopes), or `null`. Pass the framework request
 * (Fastify's `request`, Express's `req`).
 *
 * @example
 * ```ts
 * app.get('/api/projects', async (request) => apiKeyOf(request)?.scopes) // ['projects:read']
 * ```
 */
export function apiKeyOf(request: unknown): ApiKeyGrant | null {
  return request !== null && typeof request === 'object' ? grants.get(request) ?? null : null
}

/**
 * Throws 403 `API_KEY_SCOPE_MISSING` unless the request's API key has `scope` (a request resolved
 * without an API key passes: other credentials carry their own rights).
 *
 * @example
 * ```ts
 * app.post('/api/projects', async (request) => { requireScope(request, 'projects:write'); … })
 * ```
 */
export function requireScope(request: unknown, scope: string): void {
  const grant = apiKeyOf(request)
  if (grant === null || grant.scopes.includes(scope) || grant.scopes.includes('*')) return
  throw new TenantryError('API_KEY_SCOPE_MISSING', `The API key lacks the scope '${printable(scope)}'; create a key with it (tenantry keys create <slug> --scope ${printable(scope)}).`, {
    details: { scope, key: grant.id },
  })
}

/**
 * The key id of a well-formed API key, without any lookup (for rate-limit keys and logs); `null`
 * for anything else.
 *
 * @example
 * ```ts
 * apiKeyIdOf('tnk_3f9c0a1b2c3d4e5f_…') // '3f9c0a1b2c3d4e5f'
 * ```
 */
export function apiKeyIdOf(key: string): string | null {
  const m = API_KEY_RE.exec(key)
  return m === null ? null : m[1]
}

/**
 * Options of {@link apiKey}.
 *
 * @example
 * ```ts
 * const options: ApiKeyOptions = { header: 'x-api-key' }
 * ```
 */
export interface ApiKeyOptions {
  /** Header carrying the key as is. Default: `Authorization: Bearer tnk_…`. */
  header?: string
  /** The store, when the strategy is used outside `createTenantry`. */
  store?: CredentialStore
}

function keyInvalid(reason: 'malformed' | 'unknown' | 'revoked' | 'expired', message: string): TenantryError {
  return new TenantryError('API_KEY_INVALID', `${message} Create a new key with 'tenantry keys create <slug>'.`, { details: { reason } })
}

const sha256 = (s: string): Buffer => createHash('sha256').update(s).digest()
/** A cached record's hash as bytes, decoded once per record rather than once per request. */
const hashBytesOf = new WeakMap<ApiKeyRecord, Buffer>()
function hashBytes(rec: ApiKeyRecord): Buffer {
  let b = hashBytesOf.get(rec)
  if (b === undefined) hashBytesOf.set(rec, (b = Buffer.from(rec.hash, 'hex')))
  return b
}

/**
 * Resolves the tenant from a per-tenant API key (`Authorization: Bearer tnk_…` or a header of your
 * choice). The key's SHA-256 is compared in constant time with the stored one; the key itself is
 * never stored. Other bearer tokens (a JWT) are left to other strategies (`null`). A malformed,
 * unknown, revoked or expired key is 401 `API_KEY_INVALID`; revocation reaches every process
 * through the catalog's notifications. Keys are looked up from a cache: a cached key costs no
 * promise. Read the key's scopes with {@link apiKeyOf} / {@link requireScope}.
 *
 * @example
 * ```ts
 * const tenantry = await createTenantry({ resolve: [apiKey()] })
 * // curl -H 'Authorization: Bearer tnk_…' https://api.example.com/projects
 * ```
 */
export function apiKey(options: ApiKeyOptions = {}): CredentialStrategy {
  const headerName = options.header?.toLowerCase()
  let store: CredentialStore | undefined = options.store
  const check = (rec: ApiKeyRecord | null, token: string, id: string, req: RequestInfo): Identifier => {
    // A miss is hashed too, so that unknown and known ids take the same time.
    const given = sha256(token)
    const expected = rec === null ? given : hashBytes(rec)
    const equal = expected.length === given.length && timingSafeEqual(expected, given)
    if (rec === null || !equal) throw keyInvalid('unknown', 'The API key is not known.')
    if (rec.revokedAt !== null) throw keyInvalid('revoked', 'The API key was revoked.')
    if (rec.expiresAt !== null && rec.expiresAt.getTime() <= Date.now()) throw keyInvalid('expired', `The API key expired at ${rec.expiresAt.toISOString()}.`)
    store!.touchApiKey?.(id)
    if (req.raw !== null && typeof req.raw === 'object') grants.set(req.raw, { id, tenantId: rec.tenantId, scopes: rec.scopes })
    return { kind: 'id', value: rec.tenantId, source: 'api-key' }
  }
  return {
    name: 'api-key',
    hint: headerName ? `an API key in the ${headerName} header` : "an API key ('Authorization: Bearer tnk_…')",
    useCredentials(s) { store ??= s },
    identify(req: RequestInfo): Identifier | null | Promise<Identifier | null> {
      const raw = req.headers[headerName ?? 'authorization']
      const value = Array.isArray(raw) ? (raw.length === 1 ? raw[0] : raw.length === 0 ? undefined : null) : raw
      if (value === undefined) return null
      if (value === null) throw keyInvalid('malformed', 'The API key header was sent more than once.')
      let token = value
      if (headerName === undefined) {
        const m = BEARER_RE.exec(value)
        if (m === null || !m[1].startsWith(API_KEY_PREFIX)) return null
        token = m[1]
      }
      const m = API_KEY_RE.exec(token)
      if (m === null) throw keyInvalid('malformed', `The API key is malformed; a key looks like '${API_KEY_PREFIX}<16 hex>_<43 characters>'.`)
      if (store === undefined) throw unbound('apiKey')
      const id = m[1]
      const found = store.apiKeyById(id)
      return isThenable<ApiKeyRecord | null>(found) ? found.then((rec) => check(rec, token, id, req)) : check(found, token, id, req)
    },
  }
}

// ─── mTLS client certificates ────────────────────────────────────────────────────────────────────

/**
 * Options of {@link clientCertificate}.
 *
 * @example
 * ```ts
 * const options: ClientCertificateOptions = { optional: true }
 * ```
 */
export interface ClientCertificateOptions {
  /** A request without a client certificate is `null` (other strategies decide) instead of 401 `CLIENT_CERT_REQUIRED`. */
  optional?: boolean
  /** The store, when the strategy is used outside `createTenantry`. */
  store?: CredentialStore
}

type PeerCert = { fingerprint256?: string; valid_from?: string; valid_to?: string; raw?: Buffer }
type Peer = { fingerprint: string; notBefore: number; notAfter: number; raw: Buffer | undefined; x509?: X509Certificate }
type TlsSocketLike = { getPeerCertificate(detailed?: boolean): PeerCert | null; encrypted?: boolean }

/** One TLS connection presents one certificate: read it once per connection, not per request. */
const peerOf = new WeakMap<object, Peer | null>()

function socketOf(raw: unknown): TlsSocketLike | null {
  const r = raw as { socket?: unknown; raw?: { socket?: unknown } } | null | undefined
  const socket = (r?.socket ?? r?.raw?.socket) as TlsSocketLike | undefined
  return socket && typeof socket.getPeerCertificate === 'function' ? socket : null
}

function peerCertificate(socket: TlsSocketLike): Peer | null {
  let peer = peerOf.get(socket)
  if (peer !== undefined) return peer
  const cert = socket.getPeerCertificate(false)
  peer = cert && typeof cert.fingerprint256 === 'string' && cert.fingerprint256.length > 0
    ? {
        fingerprint: normalizeFingerprint(cert.fingerprint256),
        notBefore: Date.parse(cert.valid_from ?? ''),
        notAfter: Date.parse(cert.valid_to ?? ''),
        raw: cert.raw,
      }
    : null
  peerOf.set(socket, peer)
  return peer
}

/**
 * A SHA-256 fingerprint as stored: lowercase hex without colons (`AB:CD:…` → `abcd…`).
 *
 * @example
 * ```ts
 * normalizeFingerprint('AB:CD') // 'abcd'
 * ```
 */
export function normalizeFingerprint(fp: string): string {
  return fp.replace(/:/g, '').toLowerCase()
}

/** The peer's certificate parsed, once per connection and only when a CA must be consulted. */
function x509Of(peer: Peer): X509Certificate | null {
  if (peer.x509 === undefined && peer.raw !== undefined) {
    try { peer.x509 = new X509Certificate(peer.raw) } catch { peer.raw = undefined }
  }
  return peer.x509 ?? null
}

function certInvalid(reason: 'unknown' | 'revoked' | 'expired', message: string, fingerprint: string): TenantryError {
  return new TenantryError('CLIENT_CERT_INVALID', `${message} Register the certificate with 'tenantry certs add <slug> <cert.pem>'.`, { details: { reason, fingerprint } })
}

/**
 * Resolves the tenant from the TLS client certificate (mutual TLS) of a Fastify or Express HTTPS
 * server started with `requestCert: true` (and `rejectUnauthorized: false`, so that Tenantry can
 * answer with a coded 401 instead of a dropped handshake). The certificate's SHA-256 fingerprint
 * must be registered to a tenant (`tenantry certs add`), or the certificate issued by a CA bound to
 * the tenant (`tenantry certs add --ca`) and match its SAN/subject pattern; TLS itself proves the
 * client holds the private key. No certificate → 401 `CLIENT_CERT_REQUIRED`; unregistered, revoked or outside its
 * validity → 401 `CLIENT_CERT_INVALID`; tenant A's certificate on tenant B's host (with a
 * subdomain strategy too) → 403 `TENANT_MISMATCH`.
 *
 * @example
 * ```ts
 * const app = Fastify({ https: { key, cert, requestCert: true, rejectUnauthorized: false } })
 * const tenantry = await createTenantry({ resolve: [subdomain({ baseDomain: 'example.com' }), clientCertificate()] })
 * ```
 */
export function clientCertificate(options: ClientCertificateOptions = {}): CredentialStrategy {
  let store: CredentialStore | undefined = options.store
  const optional = options.optional === true
  const check = (rec: CertificateRecord | null, peer: Peer): Identifier => {
    if (rec === null) throw certInvalid('unknown', 'The client certificate is not registered to any tenant, nor issued by a tenant CA that takes it.', peer.fingerprint)
    if (rec.revokedAt !== null) throw certInvalid('revoked', 'The client certificate (or the tenant CA binding it) was revoked.', peer.fingerprint)
    if (rec.expired === true) throw certInvalid('expired', 'The tenant CA that issued the client certificate is not valid at this time.', peer.fingerprint)
    return { kind: 'id', value: rec.tenantId, source: 'client-certificate' }
  }
  // A fingerprint binding (or its revocation) decides first; a certificate bound by no fingerprint
  // is looked for among the CAs bound to tenants.
  const byFingerprint = (rec: CertificateRecord | null, peer: Peer): Identifier | Promise<Identifier> => {
    const cert = rec === null && store!.certificateByIssuer !== undefined ? x509Of(peer) : null
    if (cert === null) return check(rec, peer)
    const found = store!.certificateByIssuer!({ fingerprint: peer.fingerprint, cert })
    return isThenable<CertificateRecord | null>(found) ? found.then((r) => check(r, peer)) : check(found, peer)
  }
  return {
    name: 'client-certificate',
    hint: 'a TLS client certificate',
    useCredentials(s) { store ??= s },
    identify(req: RequestInfo): Identifier | null | Promise<Identifier | null> {
      const socket = socketOf(req.raw)
      const peer = socket === null ? null : peerCertificate(socket)
      if (peer === null) {
        if (optional) return null
        throw new TenantryError('CLIENT_CERT_REQUIRED', 'This service needs a TLS client certificate registered to your tenant; connect with it (mutual TLS).')
      }
      const now = Date.now()
      if (!(peer.notBefore <= now && now < peer.notAfter)) throw certInvalid('expired', 'The client certificate is not valid at this time (expired or not yet valid).', peer.fingerprint)
      if (store === undefined) throw unbound('clientCertificate')
      const found = store.certificateByFingerprint(peer.fingerprint)
      return isThenable<CertificateRecord | null>(found) ? found.then((rec) => byFingerprint(rec, peer)) : byFingerprint(found, peer)
    },
  }
}
