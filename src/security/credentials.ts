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
  fingerprint: string
  tenantId: string
  name: string
  subject: string
  notAfter: Date
  createdBy: string
  createdAt: Date
  revokedAt: Date | null
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
 * Client certificates bound to tenants by SHA-256 fingerprint (mutual TLS).
 *
 * @example
 * ```ts
 * await tenantry.certificates.add('acme', { pem: readFileSync('client.pem', 'utf8'), name: 'billing-svc' })
 * ```
 */
export interface Certificates {
  add(tenant: string, input: { pem: string; name?: string }, by?: AuditActor): Promise<CertificateInfo>
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

const date = (v: Date | string | null): Date | null => (v === null ? null : new Date(v))
const keyInfo = (r: KeyRow): ApiKeyInfo => ({
  id: r.id, tenantId: r.tenant_id, name: r.name, scopes: [...r.scopes], expiresAt: date(r.expires_at), createdBy: r.created_by,
  createdAt: new Date(r.created_at), lastUsedAt: date(r.last_used_at), revokedAt: date(r.revoked_at),
})
const certInfo = (r: CertRow): CertificateInfo => ({
  fingerprint: r.fingerprint, tenantId: r.tenant_id, name: r.name, subject: r.subject, notAfter: new Date(r.not_after),
  createdBy: r.created_by, createdAt: new Date(r.created_at), revokedAt: date(r.revoked_at),
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
      else if (subject === '*') { this.#generation++; this.#keys.clear(); this.#certs.clear() }
    })
    this.apiKeys = {
      create: (t, input, by) => this.#createKey(t, input, by),
      list: async (t) => (await this.admin.query<KeyRow>(...args(sql.apiKeysOf((await this.#tenant(t)).id)))).rows.map(keyInfo),
      revoke: (t, idOrName, by) => this.#revokeKey(t, idOrName, by),
    }
    this.certificates = {
      add: (t, input, by) => this.#addCert(t, input, by),
      list: async (t) => (await this.admin.query<CertRow>(...args(sql.certificatesOf((await this.#tenant(t)).id)))).rows.map(certInfo),
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
      what: 'API key', listCommand: 'keys', action: 'api-key.revoke', subject: 'api-key',
      list: (t) => this.apiKeys.list(t), idOf: (k) => k.id, matches: (k, x) => k.id === x || k.name === x,
      revoke: async (tx, tenantId, id) => {
        const row = (await tx.query<KeyRow>(...args(sql.revokeApiKey(tenantId, id)))).rows[0]
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
    what: string; listCommand: string; action: string; subject: string
    list(tenantId: string): Promise<T[]>
    idOf(item: T): string
    matches(item: T, idOrName: string): boolean
    revoke(tx: Queryable, tenantId: string, id: string): Promise<T | undefined>
    facts(item: T): Record<string, unknown>
  }): Promise<T> {
    const tenant = await this.#tenant(slugOrId)
    if (typeof idOrName !== 'string' || idOrName.length === 0 || idOrName.length > 200) throw invalid('id', `Name the ${kind.what} to revoke by its id or name.`)
    const missing = () => new TenantryError('NOT_FOUND', `Tenant '${tenant.slug}' has no active ${kind.what} '${printable(idOrName)}'; 'tenantry ${kind.listCommand} list ${tenant.slug}' shows them.`)
    const current = (await kind.list(tenant.id)).find((x) => x.revokedAt === null && kind.matches(x, idOrName))
    if (current === undefined) throw missing()
    const id = kind.idOf(current)
    return this.#change(`${kind.subject}:${id}`, async (tx) => {
      const done = await kind.revoke(tx, tenant.id, id)
      if (done === undefined) throw missing()
      const facts = kind.facts(done)
      await this.audit.append({
        actor: by?.actor ?? 'library', action: kind.action, tenantId: tenant.id, slug: tenant.slug, requestId: by?.requestId ?? null,
        before: { id, revokedAt: null }, after: { id, revokedAt: done.revokedAt }, details: { ...by?.details, ...facts },
      }, tx)
      return done
    })
  }

  async #addCert(slugOrId: string, input: { pem: string; name?: string }, by?: AuditActor): Promise<CertificateInfo> {
    const tenant = await this.#tenant(slugOrId)
    let cert: X509Certificate
    try {
      cert = new X509Certificate(input?.pem)
    } catch (err) {
      throw new TenantryError('VALIDATION_FAILED', 'The certificate is not a PEM or DER X.509 certificate; give the client certificate file (-----BEGIN CERTIFICATE-----).', { cause: err, details: { field: 'pem' } })
    }
    const notAfter = new Date(cert.validTo)
    if (!(notAfter.getTime() > Date.now())) throw invalid('pem', `The certificate expired at ${notAfter.toISOString()}; issue a new one.`)
    const name = input.name ?? cert.subject.split('\n').find((l) => l.startsWith('CN='))?.slice(3).toLowerCase().replace(/[^a-z0-9._-]/g, '-').slice(0, 63) ?? 'client'
    if (!NAME_RE.test(name)) throw invalid('name', `Certificate name '${printable(name)}' must be 1–63 lowercase letters, digits, '.', '_' or '-'.`)
    const fingerprint = normalizeFingerprint(cert.fingerprint256)
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

  #revokeCert(slugOrId: string, fpOrName: string, by?: AuditActor): Promise<CertificateInfo> {
    return this.#revoke(slugOrId, fpOrName, by, {
      what: 'certificate', listCommand: 'certs', action: 'client-cert.revoke', subject: 'client-cert',
      list: (t) => this.certificates.list(t), idOf: (c) => c.fingerprint,
      matches: (c, x) => c.fingerprint === normalizeFingerprint(x) || c.name === x,
      revoke: async (tx, tenantId, fp) => {
        const row = (await tx.query<CertRow>(...args(sql.revokeCertificate(tenantId, fp)))).rows[0]
        return row === undefined ? undefined : certInfo(row)
      },
      facts: (c) => ({ fingerprint: c.fingerprint, name: c.name }),
    })
  }
}

function sha256Hex(s: string): string {
  return createHash('sha256').update(s).digest('hex')
}

function args(s: { text: string; values: unknown[] }): [string, unknown[]] {
  return [s.text, s.values]
}
