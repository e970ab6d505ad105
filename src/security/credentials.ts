import { X509Certificate, createHash, randomBytes } from 'node:crypto'
import { LRUCache } from 'lru-cache'
import type { AuditActor, AuditLog } from '../audit/index.ts'
import type { Catalog } from '../catalog/catalog.ts'
import { TenantryError } from '../core/errors.ts'
import type { Tenant } from '../core/types.ts'
import { isUuid, printable } from '../core/validation.ts'
import type { AdminQueryable } from '../data/driver.ts'
import type { Queryable } from '../data/executor.ts'
import { API_KEY_PREFIX, normalizeFingerprint, type ApiKeyRecord, type CertificateRecord, type CredentialStore } from '../resolve/credential-strategies.ts'
import { bindTo, compileSanPattern, compileSubjectPattern, type CaBinding } from './ca-binding.ts'
import * as sql from './sql.ts'

/**
 * A tenant API key as listed: never the key, never its hash.
 *
 * @example
 * ```ts
 * const info: ApiKeyInfo = (await tenantry.apiKeys.list('acme'))[0]
 * ```
 */
export interface ApiKeyInfo {
  id: string
  tenantId: string
  name: string
  scopes: string[]
  expiresAt: Date | null
  createdBy: string
  createdAt: Date
  /** Written lazily (at most every 30 s per process), so it may lag by that much. */
  lastUsedAt: Date | null
  revokedAt: Date | null
}

/**
 * A client certificate bound to a tenant.
 *
 * @example
 * ```ts
 * const cert: CertificateInfo = (await tenantry.certificates.list('acme'))[0]
 * ```
 */
export interface CertificateInfo {
  /** `certificate`: one client certificate by fingerprint; `ca`: a tenant CA and the certificates it issues that match its pattern. */
  kind: 'certificate' | 'ca'
  /** The fingerprint for a certificate; the binding's id for a CA (one CA may be bound with several patterns). */
  id: string
  /** SHA-256 of the certificate (the client's, or the CA's). */
  fingerprint: string
  tenantId: string
  name: string
  subject: string
  /** A CA binding's SAN pattern (`*.acme.example.com`, `URI:spiffe://acme/**`), else null. */
  sanPattern: string | null
  /** A CA binding's subject pattern (`CN=*.billing, O=Acme`), else null. */
  subjectPattern: string | null
  notAfter: Date
  createdBy: string
  createdAt: Date
  revokedAt: Date | null
}

/**
 * What to bind: a client certificate (`pem`), or a tenant CA (`ca`) with an optional SAN and/or
 * subject pattern that the client certificates it issues must match.
 *
 * @example
 * ```ts
 * const byCa: AddCertificateInput = { ca: readFileSync('acme-ca.pem', 'utf8'), sanPattern: '*.acme.example.com' }
 * ```
 */
export interface AddCertificateInput {
  pem?: string
  ca?: string
  sanPattern?: string
  subjectPattern?: string
  name?: string
}

/**
 * What to create: a name unique among the tenant's active keys, scopes (`*` for all) and an expiry.
 *
 * @example
 * ```ts
 * const input: CreateApiKeyInput = { name: 'ci', scopes: ['projects:read'], expiresAt: new Date('2027-01-01') }
 * ```
 */
export interface CreateApiKeyInput {
  name: string
  scopes?: string[]
  expiresAt?: Date | null
}

/**
 * Per-tenant API keys: created (the key is shown once), listed, revoked; every change audited in
 * its own transaction and announced to every process.
 *
 * @example
 * ```ts
 * const { key } = await tenantry.apiKeys.create('acme', { name: 'ci', scopes: ['read'] }, { actor: 'cli:ops@host' })
 * await tenantry.apiKeys.revoke('acme', 'ci')
 * ```
 */
export interface ApiKeys {
  create(tenant: string, input: CreateApiKeyInput, by?: AuditActor): Promise<{ key: string; info: ApiKeyInfo }>
  list(tenant: string): Promise<ApiKeyInfo[]>
  /** Revoke an active key by id or name; effective in every process within about a second. */
  revoke(tenant: string, idOrName: string, by?: AuditActor): Promise<ApiKeyInfo>
}


/**
 * Client certificates bound to tenants (mutual TLS): by SHA-256 fingerprint, or through a tenant
 * CA and a SAN/subject pattern.
 *
 * @example
 * ```ts
 * await tenantry.certificates.add('acme', { pem: readFileSync('client.pem', 'utf8'), name: 'billing-svc' })
 * await tenantry.certificates.add('acme', { ca: readFileSync('acme-ca.pem', 'utf8'), sanPattern: '*.acme.example.com' })
 * ```
 */
export interface Certificates {
  add(tenant: string, input: AddCertificateInput, by?: AuditActor): Promise<CertificateInfo>
  list(tenant: string): Promise<CertificateInfo[]>
  revoke(tenant: string, fingerprintOrName: string, by?: AuditActor): Promise<CertificateInfo>
}

type KeyRow = {
  id: string; tenant_id: string; name: string; scopes: string[]; key_hash: string; expires_at: Date | string | null
  created_by: string; created_at: Date | string; last_used_at: Date | string | null; revoked_at: Date | string | null
}
type CertRow = {
  fingerprint: string; tenant_id: string; name: string; subject: string; not_after: Date | string
  created_by: string; created_at: Date | string; revoked_at: Date | string | null
}
type CaRow = CertRow & { id: string; issuer_key: string; pem: string; san_pattern: string | null; subject_pattern: string | null }

const date = (v: Date | string | null): Date | null => (v === null ? null : new Date(v))
const keyInfo = (r: KeyRow): ApiKeyInfo => ({
  id: r.id, tenantId: r.tenant_id, name: r.name, scopes: [...r.scopes], expiresAt: date(r.expires_at), createdBy: r.created_by,
  createdAt: new Date(r.created_at), lastUsedAt: date(r.last_used_at), revokedAt: date(r.revoked_at),
})
const certInfo = (r: CertRow): CertificateInfo => ({
  kind: 'certificate', id: r.fingerprint, fingerprint: r.fingerprint, tenantId: r.tenant_id, name: r.name, subject: r.subject, sanPattern: null, subjectPattern: null,
  notAfter: new Date(r.not_after), createdBy: r.created_by, createdAt: new Date(r.created_at), revokedAt: date(r.revoked_at),
})
const caInfo = (r: CaRow): CertificateInfo => ({ ...certInfo(r), kind: 'ca', id: r.id, sanPattern: r.san_pattern, subjectPattern: r.subject_pattern })
const caBinding = (r: CaRow): CaBinding => ({
  id: r.id, tenantId: r.tenant_id, ca: new X509Certificate(r.pem), revokedAt: date(r.revoked_at),
  san: r.san_pattern === null ? null : compileSanPattern(r.san_pattern), subject: r.subject_pattern === null ? null : compileSubjectPattern(r.subject_pattern),
})

const NAME_RE = /^[a-z0-9][a-z0-9._-]{0,62}$/
const SCOPE_RE = /^(?:\*|[a-z0-9][a-z0-9:._*-]{0,63})$/
const TOUCH_INTERVAL_MS = 30_000

function invalid(field: string, message: string): TenantryError {
  return new TenantryError('VALIDATION_FAILED', message, { details: { field } })
}

/** What the cache holds per key id or fingerprint: the record or a known miss, until it expires. */
type Cached<T> = { value: T | null; expires: number }

/**
 * The catalog-backed credential store: API keys and client certificates, cached in-process and
 * forgotten when any process changes them (the catalog's notifications).
 */
export class TenantCredentials implements CredentialStore {
  readonly apiKeys: ApiKeys
  readonly certificates: Certificates
  readonly #keys = new LRUCache<string, Cached<ApiKeyRecord>>({ max: 50_000 })
  readonly #certs = new LRUCache<string, Cached<CertificateRecord>>({ max: 50_000 })
  /** Bindings of the CAs by the issuer name of the certificates they issue, and what each client certificate bound to. */
  readonly #cas = new LRUCache<string, Cached<CaBinding[]>>({ max: 10_000 })
  readonly #issued = new LRUCache<string, Cached<CertificateRecord>>({ max: 50_000 })
  /** Bumped by every change heard: a lookup that started before it must not cache what it read. */
  #generation = 0
  readonly #ttl: number
  readonly #touched = new Map<string, number>()
  readonly #pendingTouch = new Set<string>()
  #timer: NodeJS.Timeout | undefined
  #unsubscribe: () => void

  private constructor(
    private readonly admin: AdminQueryable,
    private readonly catalog: Catalog,
    private readonly audit: AuditLog,
    ttlMs: number,
  ) {
    this.#ttl = ttlMs
    this.#unsubscribe = catalog.onChange((subject) => {
      if (subject.startsWith('api-key:')) { this.#generation++; this.#keys.delete(subject.slice(8)) }
      else if (subject.startsWith('client-cert:')) { this.#generation++; this.#certs.delete(subject.slice(12)) }
      else if (subject.startsWith('client-ca:')) { this.#generation++; this.#cas.clear(); this.#issued.clear() }
      else if (subject === '*') { this.#generation++; this.#keys.clear(); this.#certs.clear(); this.#cas.clear(); this.#issued.clear() }
    })
    this.apiKeys = {
      create: (t, input, by) => this.#createKey(t, input, by),
      list: async (t) => (await this.admin.query<KeyRow>(...args(sql.apiKeysOf((await this.#tenant(t)).id)))).rows.map(keyInfo),
      revoke: (t, idOrName, by) => this.#revokeKey(t, idOrName, by),
    }
    this.certificates = {
      add: (t, input, by) => this.#addCert(t, input, by),
      list: async (t) => {
        const id = (await this.#tenant(t)).id
        const [certs, cas] = await Promise.all([this.admin.query<CertRow>(...args(sql.certificatesOf(id))), this.admin.query<CaRow>(...args(sql.casOf(id)))])
        return [...certs.rows.map(certInfo), ...cas.rows.map(caInfo)]
      },
      revoke: (t, fp, by) => this.#revokeCert(t, fp, by),
    }
  }

  /** Create the tables (if needed) and the store. */
  static async open(deps: { admin: AdminQueryable; catalog: Catalog; audit: AuditLog; cacheTtlMs?: number }): Promise<TenantCredentials> {
    await deps.admin.transaction((tx) => tx.exec(sql.SECURITY_SCHEMA_SQL))
    return new TenantCredentials(deps.admin, deps.catalog, deps.audit, deps.cacheTtlMs ?? 60_000)
  }

  // ─── the CredentialStore port ──────────────────────────────────────────────────────────────────

  apiKeyById(id: string): ApiKeyRecord | null | Promise<ApiKeyRecord | null> {
    return this.#cached(this.#keys, id, async () => {
      const r = (await this.admin.query<KeyRow>(...args(sql.apiKeyById(id)))).rows[0]
      return r === undefined ? null : { id: r.id, tenantId: r.tenant_id, scopes: [...r.scopes], hash: r.key_hash, expiresAt: date(r.expires_at), revokedAt: date(r.revoked_at) }
    })
  }

  certificateByFingerprint(fingerprint: string): CertificateRecord | null | Promise<CertificateRecord | null> {
    return this.#cached(this.#certs, fingerprint, async () => {
      const r = (await this.admin.query<CertRow>(...args(sql.certificateByFingerprint(fingerprint)))).rows[0]
      return r === undefined ? null : { fingerprint: r.fingerprint, tenantId: r.tenant_id, revokedAt: date(r.revoked_at) }
    })
  }

  certificateByIssuer(leaf: { fingerprint: string; cert: X509Certificate }): CertificateRecord | null | Promise<CertificateRecord | null> {
    const found = (bindings: CaBinding[]): CertificateRecord | null => {
      const b = bindTo(leaf.cert, bindings, Date.now())
      return b === null ? null : { fingerprint: leaf.fingerprint, tenantId: b.tenantId, revokedAt: b.revokedAt, expired: b.expired }
    }
    return this.#cached(this.#issued, leaf.fingerprint, async () => {
      const bindings = this.#cached(this.#cas, leaf.cert.issuer, async () => (await this.admin.query<CaRow>(...args(sql.casByIssuer(leaf.cert.issuer)))).rows.map(caBinding))
      return found((await bindings) ?? [])
    })
  }

  touchApiKey(id: string): void {
    const now = Date.now()
    if ((this.#touched.get(id) ?? 0) > now - TOUCH_INTERVAL_MS) return
    if (this.#touched.size > 50_000) this.#touched.clear()
    this.#touched.set(id, now)
    this.#pendingTouch.add(id)
    this.#timer ??= setTimeout(() => { this.#timer = undefined; void this.flushTouches() }, 1000).unref()
  }

  /** Write the pending last-used times now (one statement for all keys). */
  async flushTouches(): Promise<void> {
    if (this.#pendingTouch.size === 0) return
    const ids = [...this.#pendingTouch]
    this.#pendingTouch.clear()
    await this.admin.query(...args(sql.touchApiKeys(ids))).catch(() => undefined)
  }

  async close(): Promise<void> {
    if (this.#timer) clearTimeout(this.#timer)
    this.#timer = undefined
    this.#unsubscribe()
    await this.flushTouches()
  }

  #cached<T>(cache: LRUCache<string, Cached<T>>, key: string, load: () => Promise<T | null>): T | null | Promise<T | null> {
    const hit = cache.get(key)
    if (hit !== undefined && hit.expires > Date.now()) return hit.value
    const generation = this.#generation
    return load().then((value) => {
      if (generation === this.#generation) cache.set(key, { value, expires: Date.now() + this.#ttl })
      return value
    })
  }

  // ─── management ────────────────────────────────────────────────────────────────────────────────

  async #tenant(slugOrId: string): Promise<Tenant> {
    const t = typeof slugOrId !== 'string' ? null : isUuid(slugOrId) ? await this.catalog.byId(slugOrId) : await this.catalog.bySlug(slugOrId)
    if (t === null || t.status === 'deleted') throw new TenantryError('TENANT_NOT_FOUND', `No tenant has the slug or id '${printable(String(slugOrId))}'.`)
    return t
  }

  /** A change, its audit entry and its notification in one transaction. */
  #change<T>(subject: string, fn: (tx: Queryable) => Promise<T>): Promise<T> {
    return this.catalog.change(subject, fn)
  }

  async #createKey(slugOrId: string, input: CreateApiKeyInput, by?: AuditActor): Promise<{ key: string; info: ApiKeyInfo }> {
    const tenant = await this.#tenant(slugOrId)
    if (typeof input?.name !== 'string' || !NAME_RE.test(input.name)) {
      throw invalid('name', `Key name '${printable(String(input?.name))}' must be 1–63 lowercase letters, digits, '.', '_' or '-'.`)
    }
    const scopes = input.scopes ?? []
    if (!Array.isArray(scopes) || scopes.length > 50) throw invalid('scopes', 'scopes must be a list of at most 50 scopes.')
    for (const s of scopes) {
      if (typeof s !== 'string' || !SCOPE_RE.test(s)) throw invalid('scopes', `Scope '${printable(String(s))}' must be '*' or 1–64 lowercase letters, digits, ':', '.', '_', '-' or '*', like 'projects:read'.`)
    }
    const expiresAt = input.expiresAt ?? null
    if (expiresAt !== null && (!(expiresAt instanceof Date) || Number.isNaN(expiresAt.getTime()) || expiresAt.getTime() <= Date.now())) {
      throw invalid('expiresAt', 'expiresAt must be a time in the future.')
    }
    const id = randomBytes(8).toString('hex')
    const key = `${API_KEY_PREFIX}${id}_${randomBytes(32).toString('base64url')}`
    const actor = by?.actor ?? 'library'
    try {
      const info = await this.#change(`api-key:${id}`, async (tx) => {
        const row = keyInfo((await tx.query<KeyRow>(...args(sql.insertApiKey({ id, tenantId: tenant.id, name: input.name, scopes: [...new Set(scopes)], hash: sha256Hex(key), expiresAt, createdBy: actor })))).rows[0])
        await this.audit.append({
          actor, action: 'api-key.create', tenantId: tenant.id, slug: tenant.slug, requestId: by?.requestId ?? null,
          after: { id: row.id, name: row.name, scopes: row.scopes, expiresAt: row.expiresAt },
          details: { ...by?.details, key: row.id, name: row.name, scopes: row.scopes },
        }, tx)
        return row
      })
      return { key, info }
    } catch (err) {
      if ((err as { code?: string }).code === '23505') {
        throw new TenantryError('CONFLICT', `Tenant '${tenant.slug}' has an active key named '${input.name}'; choose another name or revoke it first.`, { cause: err, details: { field: 'name' } })
      }
      throw err
    }
  }

  #revokeKey(slugOrId: string, idOrName: string, by?: AuditActor): Promise<ApiKeyInfo> {
    return this.#revoke(slugOrId, idOrName, by, {
      what: 'API key', listCommand: 'keys', action: () => 'api-key.revoke', subject: (k) => `api-key:${k.id}`,
      list: (t) => this.apiKeys.list(t), idOf: (k) => k.id, matches: (k, x) => k.id === x || k.name === x,
      revoke: async (tx, tenantId, k) => {
        const row = (await tx.query<KeyRow>(...args(sql.revokeApiKey(tenantId, k.id)))).rows[0]
        return row === undefined ? undefined : keyInfo(row)
      },
      facts: (k) => ({ key: k.id, name: k.name }),
    })
  }

  /**
   * Revoke a key or certificate by id or name: found first, so that the notification names the
   * id every cache holds; the update, its audit entry and the notification commit together.
   */
  async #revoke<T extends { revokedAt: Date | null }>(slugOrId: string, idOrName: string, by: AuditActor | undefined, kind: {
    what: string; listCommand: string
    action(item: T): string
    subject(item: T): string
    list(tenantId: string): Promise<T[]>
    idOf(item: T): string
    matches(item: T, idOrName: string): boolean
    revoke(tx: Queryable, tenantId: string, item: T): Promise<T | undefined>
    facts(item: T): Record<string, unknown>
  }): Promise<T> {
    const tenant = await this.#tenant(slugOrId)
    if (typeof idOrName !== 'string' || idOrName.length === 0 || idOrName.length > 200) throw invalid('id', `Name the ${kind.what} to revoke by its id or name.`)
    const missing = () => new TenantryError('NOT_FOUND', `Tenant '${tenant.slug}' has no active ${kind.what} '${printable(idOrName)}'; 'tenantry ${kind.listCommand} list ${tenant.slug}' shows them.`)
    const current = (await kind.list(tenant.id)).find((x) => x.revokedAt === null && kind.matches(x, idOrName))
    if (current === undefined) throw missing()
    const id = kind.idOf(current)
    return this.#change(kind.subject(current), async (tx) => {
      const done = await kind.revoke(tx, tenant.id, current)
      if (done === undefined) throw missing()
      const facts = kind.facts(done)
      await this.audit.append({
        actor: by?.actor ?? 'library', action: kind.action(current), tenantId: tenant.id, slug: tenant.slug, requestId: by?.requestId ?? null,
        before: { id, revokedAt: null }, after: { id, revokedAt: done.revokedAt }, details: { ...by?.details, ...facts },
      }, tx)
      return done
    })
  }

  async #addCert(slugOrId: string, input: AddCertificateInput, by?: AuditActor): Promise<CertificateInfo> {
    const tenant = await this.#tenant(slugOrId)
    const given = [input?.pem, input?.ca].filter((x) => x !== undefined).length
    if (given !== 1) throw invalid('pem', 'Give either a client certificate (pem) or a tenant CA (ca), not both or neither.')
    if (input.ca === undefined && (input.sanPattern !== undefined || input.subjectPattern !== undefined)) {
      throw invalid(input.sanPattern !== undefined ? 'sanPattern' : 'subjectPattern', 'A SAN or subject pattern applies to a tenant CA (ca); a client certificate is bound by its fingerprint.')
    }
    const field = input.ca === undefined ? 'pem' : 'ca'
    const { cert, notAfter, name } = parseCertificate(input.ca ?? input.pem, input.name, field)
    const fingerprint = normalizeFingerprint(cert.fingerprint256)
    if (field === 'ca') return this.#addCa(tenant, cert, { fingerprint, notAfter, name, pem: input.ca!, sanPattern: input.sanPattern ?? null, subjectPattern: input.subjectPattern ?? null }, by)
    const actor = by?.actor ?? 'library'
    return this.#change(`client-cert:${fingerprint}`, async (tx) => {
      const row = (await tx.query<CertRow>(...args(sql.upsertCertificate({ fingerprint, tenantId: tenant.id, name, subject: cert.subject.replace(/\n/g, ', '), notAfter, createdBy: actor })))).rows[0]
      if (row === undefined) {
        throw new TenantryError('CONFLICT', `The certificate ${fingerprint.slice(0, 16)}… is already bound to a tenant; revoke it there first.`, { details: { field: 'pem', fingerprint } })
      }
      const info = certInfo(row)
      await this.audit.append({
        actor, action: 'client-cert.add', tenantId: tenant.id, slug: tenant.slug, requestId: by?.requestId ?? null,
        after: { fingerprint, name, subject: info.subject, notAfter: info.notAfter }, details: { ...by?.details, fingerprint, name },
      }, tx)
      return info
    })
  }

  /**
   * Bind a tenant CA. One CA may serve several tenants only if every binding of it has a pattern
   * (a binding without one would take the other tenants' certificates too).
   */
  async #addCa(tenant: Tenant, cert: X509Certificate, c: { fingerprint: string; notAfter: Date; name: string; pem: string; sanPattern: string | null; subjectPattern: string | null }, by?: AuditActor): Promise<CertificateInfo> {
    if (!cert.ca) throw invalid('ca', `The certificate '${cert.subject.replace(/\n/g, ', ')}' is not a CA certificate (basicConstraints CA:TRUE); give the CA that issues the client certificates.`)
    if (c.sanPattern !== null) compileSanPattern(c.sanPattern)
    if (c.subjectPattern !== null) compileSubjectPattern(c.subjectPattern)
    const id = randomBytes(8).toString('hex')
    const actor = by?.actor ?? 'library'
    const unpatterned = c.sanPattern === null && c.subjectPattern === null
    try {
      return await this.#change(`client-ca:${id}`, async (tx) => {
        const others = (await tx.query<CaRow>(...args(sql.activeCaBindings(c.fingerprint)))).rows
        const clash = others.find((o) => o.tenant_id === tenant.id
          ? o.san_pattern === c.sanPattern && o.subject_pattern === c.subjectPattern
          : unpatterned || (o.san_pattern === null && o.subject_pattern === null))
        if (clash !== undefined) {
          const why = clash.tenant_id === tenant.id ? 'with the same pattern' : 'to another tenant, and a binding without a pattern would take every certificate it issues'
          throw new TenantryError('CONFLICT', `The CA ${c.fingerprint.slice(0, 16)}… is already bound (${clash.name}) ${why}; give each binding a SAN or subject pattern, or revoke the other first.`, { details: { field: 'ca', fingerprint: c.fingerprint } })
        }
        const row = (await tx.query<CaRow>(...args(sql.insertCa({
          id, tenantId: tenant.id, fingerprint: c.fingerprint, name: c.name, subject: cert.subject.replace(/\n/g, ', '), issuerKey: cert.subject, pem: cert.toString(),
          sanPattern: c.sanPattern, subjectPattern: c.subjectPattern, notAfter: c.notAfter, createdBy: actor,
        })))).rows[0]
        const info = caInfo(row)
        await this.audit.append({
          actor, action: 'client-ca.add', tenantId: tenant.id, slug: tenant.slug, requestId: by?.requestId ?? null,
          after: { id, fingerprint: c.fingerprint, name: c.name, subject: info.subject, sanPattern: c.sanPattern, subjectPattern: c.subjectPattern, notAfter: info.notAfter },
          details: { ...by?.details, id, fingerprint: c.fingerprint, name: c.name, sanPattern: c.sanPattern, subjectPattern: c.subjectPattern },
        }, tx)
        return info
      })
    } catch (err) {
      if ((err as { code?: string }).code === '23505') {
        throw new TenantryError('CONFLICT', `Tenant '${tenant.slug}' has an active CA binding named '${c.name}'; choose another name (--name) or revoke it first.`, { cause: err, details: { field: 'name' } })
      }
      throw err
    }
  }

  #revokeCert(slugOrId: string, fpOrName: string, by?: AuditActor): Promise<CertificateInfo> {
    return this.#revoke(slugOrId, fpOrName, by, {
      what: 'certificate or CA binding', listCommand: 'certs',
      action: (c) => (c.kind === 'ca' ? 'client-ca.revoke' : 'client-cert.revoke'),
      subject: (c) => (c.kind === 'ca' ? `client-ca:${c.id}` : `client-cert:${c.fingerprint}`),
      list: (t) => this.certificates.list(t), idOf: (c) => c.id,
      matches: (c, x) => c.id === x || c.fingerprint === normalizeFingerprint(x) || c.name === x,
      revoke: async (tx, tenantId, c) => {
        if (c.kind === 'ca') {
          const row = (await tx.query<CaRow>(...args(sql.revokeCa(tenantId, c.id)))).rows[0]
          return row === undefined ? undefined : caInfo(row)
        }
        const row = (await tx.query<CertRow>(...args(sql.revokeCertificate(tenantId, c.fingerprint)))).rows[0]
        return row === undefined ? undefined : certInfo(row)
      },
      facts: (c) => (c.kind === 'ca' ? { id: c.id, fingerprint: c.fingerprint, name: c.name } : { fingerprint: c.fingerprint, name: c.name }),
    })
  }
}

/** A PEM (or DER) certificate, not expired, and the binding's name (given, or from its CN). */
function parseCertificate(pem: string | undefined, name: string | undefined, field: 'pem' | 'ca'): { cert: X509Certificate; notAfter: Date; name: string } {
  let cert: X509Certificate
  try {
    cert = new X509Certificate(pem as string)
  } catch (err) {
    const what = field === 'ca' ? 'the CA certificate file' : 'the client certificate file'
    throw new TenantryError('VALIDATION_FAILED', `The certificate is not a PEM or DER X.509 certificate; give ${what} (-----BEGIN CERTIFICATE-----).`, { cause: err, details: { field } })
  }
  const notAfter = new Date(cert.validTo)
  if (!(notAfter.getTime() > Date.now())) throw invalid(field, `The certificate expired at ${notAfter.toISOString()}; issue a new one.`)
  const chosen = name ?? cert.subject.split('\n').find((l) => l.startsWith('CN='))?.slice(3).toLowerCase().replace(/[^a-z0-9._-]/g, '-').replace(/^[^a-z0-9]+/, '').slice(0, 63) ?? 'client'
  if (!NAME_RE.test(chosen)) throw invalid('name', `Certificate name '${printable(chosen)}' must be 1–63 lowercase letters, digits, '.', '_' or '-'.`)
  return { cert, notAfter, name: chosen }
}

function sha256Hex(s: string): string {
  return createHash('sha256').update(s).digest('hex')
}

function args(s: { text: string; values: unknown[] }): [string, unknown[]] {
  return [s.text, s.values]
}
