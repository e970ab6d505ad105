import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable, Transform, type TransformCallback } from 'node:stream'
import type { AuditLog } from '../audit/index.ts'
import { currentTenant, withTenant as runWithTenant } from '../context/context.ts'
import { auditForcedResidency, checkResidency } from '../security/residency.ts'
import { TenantryError, isTenantryError } from '../core/errors.ts'
import type { Plan, Tenant } from '../core/types.ts'
import { printable } from '../core/validation.ts'
import type { AdminQueryable } from '../data/driver.ts'
import type { TenantryEvents } from '../lifecycle/events.ts'
import { LocalStorageDriver, S3StorageDriver, type S3DriverOptions, type StorageDriver, type StoredObject } from './drivers.ts'
import { signObjectUrl, verifyObjectUrl } from './signed-urls.ts'
import * as sql from './sql.ts'

function header(headers: Record<string, string | string[] | undefined>, name: string): string | undefined {
  const v = headers[name]
  return Array.isArray(v) ? v[0] : v
}

/** What a tenant may store and upload at once, from defaults ← `options.plans` / the plan's `settings.storage`. */
export interface StorageLimits {
  /** Stored bytes of the tenant, all objects together; null: no limit. */
  maxBytes: number | null
  /** Objects of the tenant; null: no limit. */
  maxObjects: number | null
  /** Uploads of the tenant running at once in this process; more wait in line (their own tenant's line). */
  uploadConcurrency: number
  /** Bytes the tenant's running uploads may hold before another of its uploads starts (one upload alone may exceed it); null: no limit. */
  uploadBytesInFlight: number | null
  /** Bytes per second all uploads of the tenant together may write in this process (a paced stream, not an error); null: no limit. */
  uploadBytesPerSecond: number | null
  /** Longest an upload waits for its tenant's share before `TENANT_BUSY`. */
  uploadQueueTimeoutMs: number
}

export type StorageLimitsInput = Partial<StorageLimits>

export const DEFAULT_STORAGE_LIMITS: Readonly<StorageLimits> = Object.freeze({
  maxBytes: null,
  maxObjects: null,
  uploadConcurrency: 4,
  uploadBytesInFlight: 64 * 1024 * 1024,
  uploadBytesPerSecond: null,
  uploadQueueTimeoutMs: 30_000,
})

/** Options of object storage (`createTenantry({ storage })`). */
export interface StorageOptions {
  /**
   * `local` (files under `directory`; the default) or `s3` (`s3` options or `TENANTRY_S3_BUCKET`;
   * the AWS SDK reads region, credentials and `AWS_ENDPOINT_URL_S3` from the environment), or a
   * driver of your own.
   */
  driver?: 'local' | 's3' | StorageDriver
  /** Directory of the local driver. Default `<data dir>/storage` — on PostgreSQL too (`TENANTRY_DATA_DIR`, else `.tenantry`); a temporary directory for `dataDir: 'memory'`. */
  directory?: string
  s3?: S3DriverOptions
  /** Limits of plans that set none. */
  defaults?: StorageLimitsInput
  /** Limits per plan name; a plan's catalog `settings.storage` is used when a plan is not named here. */
  plans?: Record<string, StorageLimitsInput>
  /** Lifetime of presigned URLs when the call gives none, seconds. Default 900. */
  presignExpiresSeconds?: number
  /**
   * Public origin of the app (`https://app.example.com`) that presigned URLs of the local driver
   * start with; they are served by the adapters under `/_tenantry/storage/`. Default: none, the
   * URLs are relative (`/_tenantry/storage/…`).
   */
  publicUrl?: string
  /**
   * The region of the bucket (or local directory); default `TENANTRY_STORAGE_REGION`. A tenant
   * with another region cannot store objects here: 409 `RESIDENCY_VIOLATION` (docs/security.md).
   */
  region?: string
  /** Slugs of tenants that may store here despite another region; audited (`residency.force`) on their first write per process. */
  forceResidency?: string[]
}

/** An object as the tenant sees it: `key` without the tenant prefix. */
export interface ObjectInfo {
  key: string
  size: number
  contentType: string | null
  lastModified: Date
}

export interface PutOptions {
  contentType?: string
  /** The size, when known (a Content-Length): an upload over the quota is refused before a byte is read. */
  size?: number
}

export interface StorageDeps {
  admin: AdminQueryable
  events: TenantryEvents
  plans(): Promise<Plan[]>
  findTenant(slugOrId: string): Promise<Tenant | null>
  /** The data directory (`dataDir` / `TENANTRY_DATA_DIR` / `.tenantry`, resolved; or `memory`): the local driver stores under `<it>/storage`. */
  dataDir: string
  /** The installation's secret key: it signs the local driver's presigned URLs. */
  signingKey(): string
  /** Where forced residency exceptions are recorded. */
  audit?: AuditLog
}

/** A request to a presigned URL of the local driver, as an adapter sees it. */
export interface SignedRequest {
  method: string
  /** Path and query as received (`/_tenantry/storage/<tenant id>/<key>?…`). */
  url: string
  headers: Record<string, string | string[] | undefined>
  /** The request body (PUT). */
  body?: Readable
}

/** The answer to a {@link SignedRequest}; errors are thrown as coded TenantryErrors. */
export interface SignedResponse {
  status: number
  headers: Record<string, string>
  body: Readable | string | null
}

const MAX_KEY_BYTES = 900
const MAX_SEGMENT_BYTES = 255
// C0 and C1 control characters, DEL, and the Unicode line/paragraph separators.
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/

/**
 * Check an object key (or, with `prefix`, a listing prefix): 1–900 bytes of UTF-8, no control
 * characters, no backslash, no leading `/`, no empty, `.` or `..` segment, segments of at most 255
 * bytes. Throws `STORAGE_KEY_INVALID` (400).
 *
 * @example
 * ```ts
 * validateObjectKey('tasks/12/report.pdf') // ok
 * validateObjectKey('../etc/passwd')       // throws STORAGE_KEY_INVALID
 * ```
 */
export function validateObjectKey(key: unknown, opts: { prefix?: boolean } = {}): string {
  const bad = (why: string) =>
    new TenantryError('STORAGE_KEY_INVALID', `Object key '${printable(String(key)).slice(0, 80)}' ${why}. Use relative keys like 'tasks/12/report.pdf'.`, { details: { reason: why } })
  if (typeof key !== 'string') throw bad('is not a string')
  if (key.length === 0) {
    if (opts.prefix) return key
    throw bad('is empty')
  }
  if (Buffer.byteLength(key, 'utf8') > MAX_KEY_BYTES) throw bad(`is longer than ${MAX_KEY_BYTES} bytes`)
  if (CONTROL.test(key)) throw bad('contains a control character')
  if (key.includes('\\')) throw bad('contains a backslash')
  if (key.startsWith('/')) throw bad('is absolute (starts with /)')
  if (LONE_SURROGATE.test(key)) throw bad('is not well-formed Unicode')
  const segments = key.split('/')
  if (opts.prefix && segments[segments.length - 1] === '') segments.pop()
  for (const s of segments) {
    if (s === '') throw bad('has an empty path segment (//, or a trailing /)')
    if (s === '.' || s === '..') throw bad("has a '.' or '..' segment")
    if (Buffer.byteLength(s, 'utf8') > MAX_SEGMENT_BYTES) throw bad(`has a segment longer than ${MAX_SEGMENT_BYTES} bytes`)
  }
  return key
}

/**
 * Upload share of one tenant in this process: an upload starts when the tenant runs fewer than
 * `uploadConcurrency` uploads and its running uploads hold fewer than `uploadBytesInFlight` bytes
 * (or none run); otherwise it waits, first come first served, in this tenant's own line. A running
 * upload never waits (so two cannot wait on each other); its bytes count until it ends.
 */
class UploadShare {
  active = 0
  bytes = 0
  private readonly waiters: { fits: () => boolean; grant: () => void }[] = []

  async acquire(limits: StorageLimits, tenant: Tenant): Promise<void> {
    const fits = () => this.active < limits.uploadConcurrency && (limits.uploadBytesInFlight === null || this.active === 0 || this.bytes < limits.uploadBytesInFlight)
    if (this.waiters.length === 0 && fits()) {
      this.active++
      return
    }
    await new Promise<void>((resolve, reject) => {
      const waiter = {
        fits,
        grant: () => {
          clearTimeout(timer)
          this.active++
          resolve()
        },
      }
      const timer = setTimeout(() => {
        const i = this.waiters.indexOf(waiter)
        if (i >= 0) this.waiters.splice(i, 1)
        reject(new TenantryError('TENANT_BUSY', `Tenant '${tenant.slug}' already uses its upload share (${limits.uploadConcurrency} uploads, ${limits.uploadBytesInFlight ?? 'unlimited'} bytes in flight) and this upload waited ${limits.uploadQueueTimeoutMs} ms. Retry later.`, {
          details: { layer: 'uploads' }, retryAfter: 1,
        }))
        this.pump()
      }, limits.uploadQueueTimeoutMs)
      this.waiters.push(waiter)
    })
  }

  /** An upload ended: its slot and its bytes go back. */
  release(held: number): void {
    this.active--
    this.bytes -= held
    this.pump()
  }

  add(n: number): void {
    this.bytes += n
  }

  /**
   * How long a chunk of `n` bytes must wait so that the tenant's uploads together stay at `rate`
   * bytes/s: a schedule shared by its uploads, with up to 100 ms of unused time as a burst.
   */
  delayFor(n: number, rate: number | null): number {
    if (rate === null) return 0
    const now = performance.now()
    const start = Math.max(this.next, now - 100)
    this.next = start + (n / rate) * 1000
    return Math.max(0, start - now)
  }

  private next = 0

  private pump(): void {
    while (this.waiters.length > 0 && this.waiters[0]!.fits()) this.waiters.shift()!.grant()
  }
}

/**
 * Object storage scoped to the current tenant: every key lives under `tenants/<tenant id>/`, and
 * no key a user passes can leave it. Quotas per plan (bytes, objects) refuse an upload with 413
 * `STORAGE_QUOTA_EXCEEDED` and store nothing; each tenant's uploads run within its own share of
 * concurrent uploads and bytes in flight, so a heavy uploader queues behind itself.
 *
 * @example
 * ```ts
 * await tenantry.storage.put('tasks/12/report.pdf', req.raw, { contentType: 'application/pdf', size: Number(req.headers['content-length']) })
 * const file = await tenantry.storage.get('tasks/12/report.pdf') // { body, info } or null
 * ```
 */
export class TenantStorage {
  private readonly shares = new Map<string, UploadShare>()
  private planCache?: { at: number; plans: Promise<Plan[]> }
  private ready?: Promise<void>
  /** Tenants whose forced residency exception this process has already audited. */
  private readonly forcedAudited = new Set<string>()

  constructor(
    readonly driver: StorageDriver,
    private readonly opts: { defaults: StorageLimits; plans: Record<string, StorageLimitsInput>; presignExpiresSeconds: number; publicUrl: string; residency?: { bucket: string; region: string | null; force: string[] } },
    private readonly deps: StorageDeps,
  ) {}

  /** Data lands here only for a tenant of the bucket's region (or a forced exception, audited once per process). */
  private async checkRegion(tenant: Tenant): Promise<void> {
    const r = this.opts.residency
    if (r === undefined || r.region === null) return
    const target = { kind: 'bucket' as const, name: r.bucket, region: r.region }
    const check = checkResidency(tenant, target, { force: r.force.includes(tenant.slug) })
    if (!check.forced || this.forcedAudited.has(tenant.id) || this.deps.audit === undefined) return
    await auditForcedResidency(this.deps.audit, tenant, target, check, { actor: 'config:storage.forceResidency', details: { operation: 'storage.put' } })
    this.forcedAudited.add(tenant.id)
  }

  /**
   * Store `body` (a stream, Buffer or string) under `key` for the current tenant, replacing what
   * was there. Over the tenant's quota → 413 `STORAGE_QUOTA_EXCEEDED`, and nothing is stored (a
   * partial upload is removed). Waits for the tenant's upload share.
   */
  async put(key: string, body: Readable | Buffer | Uint8Array | string, options: PutOptions = {}): Promise<ObjectInfo> {
    const tenant = currentTenant()
    validateObjectKey(key)
    await this.checkRegion(tenant)
    const contentType = checkContentType(options.contentType)
    if (options.size !== undefined && (!Number.isInteger(options.size) || options.size < 0)) {
      throw new TenantryError('VALIDATION_FAILED', `size must be a whole number of bytes; got ${printable(String(options.size)).slice(0, 40)}.`)
    }
    const stream = typeof body === 'string' || body instanceof Uint8Array ? Readable.from([Buffer.from(body)]) : body
    if (!(stream instanceof Readable)) throw new TenantryError('VALIDATION_FAILED', 'put() takes a readable stream, a Buffer or a string.')
    // From the start: the client may go away while the upload waits for its share or the checks.
    let sourceError: unknown
    let meter: UploadMeter | undefined
    stream.on('error', (err) => {
      sourceError ??= err
      meter?.destroy(err)
    })
    const limits = await this.limitsOf(tenant)
    const share = this.shareOf(tenant.id)
    await share.acquire(limits, tenant)
    const path = this.path(tenant, key)
    try {
      await this.init()
      const before = await this.driverCall(() => this.driver.head(path))
      const usage = await this.usageRow(tenant.id)
      const newObject = before === null
      if (newObject && limits.maxObjects !== null && usage.objects + 1 > limits.maxObjects) {
        throw quotaError(tenant, limits, 'objects', usage)
      }
      const room = limits.maxBytes === null ? null : limits.maxBytes - usage.bytes + (before?.size ?? 0)
      if (room !== null && options.size !== undefined && options.size > room) throw quotaError(tenant, limits, 'bytes', usage)
      meter = new UploadMeter(room, share, limits.uploadBytesPerSecond, () => quotaError(tenant, limits, 'bytes', usage))
      const m = meter
      if (sourceError !== undefined || (stream.destroyed && !stream.readableEnded)) {
        throw new TenantryError('VALIDATION_FAILED', `The upload stream failed before anything was stored: ${String((sourceError as Error)?.message ?? 'it was closed')}.`, { cause: sourceError })
      }
      // The driver sees the failure through its read of the stream; this keeps a second emission
      // (after the driver stopped listening) from becoming an uncaught exception.
      meter.on('error', () => undefined)
      await this.driverCall(() => this.driver.put(path, stream.pipe(m), contentType))
      const size = meter.bytes
      // Another process may have used the room meanwhile: a new object that no longer fits is removed again.
      const delta = size - (before?.size ?? 0)
      const s = newObject
        ? sql.addUsage(tenant.id, delta, 1, limits.maxBytes, limits.maxObjects)
        : sql.addUsage(tenant.id, delta, 0, null, null)
      const r = await this.deps.admin.query(s.text, s.values)
      if (r.rowCount === 0) {
        await this.driver.delete(path).catch(() => undefined)
        throw quotaError(tenant, limits, 'bytes', await this.usageRow(tenant.id))
      }
      return { key, size, contentType, lastModified: new Date() }
    } finally {
      share.release(meter?.holding ?? 0)
    }
  }

  /** The object's content and metadata, or null when the tenant has none under `key`. */
  async get(key: string): Promise<{ body: Readable; info: ObjectInfo } | null> {
    const tenant = currentTenant()
    validateObjectKey(key)
    const r = await this.driverCall(() => this.driver.get(this.path(tenant, key)))
    return r ? { body: r.body, info: this.own(tenant, r.info) } : null
  }

  /** The object's metadata, or null. */
  async head(key: string): Promise<ObjectInfo | null> {
    const tenant = currentTenant()
    validateObjectKey(key)
    const r = await this.driverCall(() => this.driver.head(this.path(tenant, key)))
    return r ? this.own(tenant, r) : null
  }

  /** The tenant's objects under `prefix`, in key order, a page at a time (`after`: the last key of the previous page). */
  async list(options: { prefix?: string; after?: string; limit?: number } = {}): Promise<{ objects: ObjectInfo[]; next: string | null }> {
    const tenant = currentTenant()
    const prefix = validateObjectKey(options.prefix ?? '', { prefix: true })
    if (options.after !== undefined) validateObjectKey(options.after)
    const limit = options.limit ?? 1000
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000) throw new TenantryError('VALIDATION_FAILED', `limit must be a whole number from 1 to 1000; got ${printable(String(limit)).slice(0, 20)}.`)
    const base = this.path(tenant, '')
    const page = await this.driverCall(() => this.driver.list(base + prefix, options.after === undefined ? null : base + options.after, limit + 1))
    const objects = page.slice(0, limit).map((o) => this.own(tenant, o))
    return { objects, next: page.length > limit ? objects[objects.length - 1]!.key : null }
  }

  /** Remove the object; true when there was one. */
  async delete(key: string): Promise<boolean> {
    const tenant = currentTenant()
    validateObjectKey(key)
    await this.init()
    const path = this.path(tenant, key)
    const before = await this.driverCall(() => this.driver.head(path))
    if (!before) return false
    const removed = await this.driverCall(() => this.driver.delete(path))
    if (removed) {
      const s = sql.addUsage(tenant.id, -before.size, -1, null, null)
      await this.deps.admin.query(s.text, s.values)
    }
    return removed
  }

  /**
   * A URL that lets its holder download `key` (GET) of the current tenant until it expires: S3's
   * own, or for the local driver one Tenantry signs and the adapters serve ({@link serveSigned}).
   */
  async presignDownload(key: string, options: { expiresInSeconds?: number } = {}): Promise<string> {
    const tenant = currentTenant()
    validateObjectKey(key)
    return this.presign(tenant, key, 'GET', options.expiresInSeconds)
  }

  /**
   * A URL that lets its holder upload exactly `size` bytes to `key` of the current tenant (PUT,
   * with that Content-Length, signed). The quota is checked for `size` now; the object is counted
   * in the tenant's usage by the next {@link recount} (S3) or at once (local driver: the upload
   * goes through {@link put}).
   */
  async presignUpload(key: string, options: { size: number; contentType?: string; expiresInSeconds?: number }): Promise<string> {
    const tenant = currentTenant()
    validateObjectKey(key)
    await this.checkRegion(tenant)
    const contentType = checkContentType(options?.contentType)
    if (!Number.isInteger(options?.size) || options.size < 0) throw new TenantryError('VALIDATION_FAILED', 'presignUpload() needs the upload\'s size in bytes.')
    const limits = await this.limitsOf(tenant)
    await this.init()
    const usage = await this.usageRow(tenant.id)
    if (limits.maxBytes !== null && usage.bytes + options.size > limits.maxBytes) throw quotaError(tenant, limits, 'bytes', usage)
    if (limits.maxObjects !== null && usage.objects + 1 > limits.maxObjects) throw quotaError(tenant, limits, 'objects', usage)
    return this.presign(tenant, key, 'PUT', options.expiresInSeconds, { size: options.size, contentType })
  }

  /** Stored bytes and objects of a tenant (current one by default; or a slug/id), and its limits. */
  async usage(tenant?: Tenant | string): Promise<{ bytes: number; objects: number; limits: StorageLimits }> {
    const t = await this.tenantOf(tenant)
    await this.init()
    return { ...(await this.usageRow(t.id)), limits: await this.limitsOf(t) }
  }

  /** Recount a tenant's usage from a listing of its prefix (after presigned uploads, or to repair drift). */
  async recount(tenant?: Tenant | string): Promise<{ bytes: number; objects: number }> {
    const t = await this.tenantOf(tenant)
    await this.init()
    let bytes = 0
    let objects = 0
    let after: string | null = null
    for (;;) {
      const page: StoredObject[] = await this.driverCall(() => this.driver.list(this.path(t, ''), after, 1000))
      for (const o of page) { bytes += o.size; objects++ }
      if (page.length < 1000) break
      after = page[page.length - 1]!.key
    }
    const s = sql.setUsage(t.id, bytes, objects)
    await this.deps.admin.query(s.text, s.values)
    return { bytes, objects }
  }

  /** Remove every object of a tenant and its usage row (purge). Returns the number of objects removed. */
  async removeTenant(tenant: Tenant): Promise<number> {
    await this.init()
    const n = await this.driverCall(() => this.driver.deletePrefix(this.path(tenant, '')))
    const s = sql.deleteUsage(tenant.id)
    await this.deps.admin.query(s.text, s.values)
    return n
  }

  /** Whether any object is stored under a tenant's prefix (erasure checks that none is left). */
  async hasObjects(tenant: Tenant): Promise<boolean> {
    return (await this.driverCall(() => this.driver.list(this.path(tenant, ''), null, 1))).length > 0
  }

  /** Every tenant's stored bytes (for the usage metering). */
  async storedBytes(): Promise<Map<string, number>> {
    await this.init()
    const s = sql.allUsage()
    const { rows } = await this.deps.admin.query<{ tenant_id: string; bytes: number }>(s.text, s.values)
    return new Map(rows.map((r) => [r.tenant_id, Number(r.bytes)]))
  }

  /** Uploads running and bytes held per tenant in this process (the upload shares). */
  shareStats(): Record<string, { active: number; bytes: number }> {
    return Object.fromEntries([...this.shares].map(([id, s]) => [id, { active: s.active, bytes: s.bytes }]))
  }

  async close(): Promise<void> {
    await this.driver.close()
  }

  /** The store path of a tenant's key: the prefix comes from the context, never from the key. */
  private path(tenant: Tenant, key: string): string {
    return `tenants/${tenant.id}/${key}`
  }

  private own(tenant: Tenant, o: StoredObject): ObjectInfo {
    const base = this.path(tenant, '')
    if (!o.key.startsWith(base)) throw new TenantryError('INTERNAL', 'The store returned an object outside the tenant prefix.')
    return { key: o.key.slice(base.length), size: o.size, contentType: o.contentType, lastModified: o.lastModified }
  }

  private async presign(tenant: Tenant, key: string, method: 'GET' | 'PUT', expires: number | undefined, put?: { size: number; contentType: string | null }): Promise<string> {
    const e = expires ?? this.opts.presignExpiresSeconds
    if (!Number.isInteger(e) || e < 1 || e > 604_800) throw new TenantryError('VALIDATION_FAILED', 'expiresInSeconds must be a whole number from 1 to 604800 (7 days).')
    const url = await this.driverCall(() => this.driver.presign(this.path(tenant, key), method, e, put))
    if (url !== null) return url
    if (this.driver.kind !== 'local') {
      throw new TenantryError('STORAGE_UNAVAILABLE', `The ${this.driver.kind} storage driver cannot make presigned URLs; serve the object through your app (tenantry.storage.get).`)
    }
    // The local driver: Tenantry signs and the adapters serve (serveSigned).
    return signObjectUrl(this.deps.signingKey(), this.opts.publicUrl, {
      method, tenantId: tenant.id, key, expires: Math.floor(Date.now() / 1000) + e, size: put?.size ?? null, contentType: put?.contentType ?? null,
    })
  }

  /**
   * Serve a request to a presigned URL of the local driver (the adapters' `/_tenantry/storage/`
   * route calls it): GET/HEAD stream the object, PUT stores exactly the signed size through
   * {@link put} (quota, upload share). The URL names its tenant and key under an HMAC: a changed
   * tenant, key, method, size or expiry is 403 `STORAGE_URL_INVALID`, as is an expired URL; a
   * tenant that is not active is refused like any request of it.
   */
  async serveSigned(req: SignedRequest): Promise<SignedResponse> {
    const o = verifyObjectUrl(this.deps.signingKey(), req.method, req.url)
    validateObjectKey(o.key)
    const tenant = await this.deps.findTenant(o.tenantId)
    if (!tenant || tenant.status === 'deleted') throw new TenantryError('TENANT_NOT_FOUND', `No tenant has the id '${o.tenantId}'.`)
    if (tenant.status !== 'active') {
      throw new TenantryError(tenant.status === 'suspended' ? 'TENANT_SUSPENDED' : 'TENANT_NOT_READY', `Tenant '${tenant.slug}' is ${tenant.status}.`)
    }
    return runWithTenant(tenant, async () => {
      if (o.method === 'GET') {
        const got = await this.get(o.key)
        if (!got) throw new TenantryError('NOT_FOUND', `No object '${printable(o.key).slice(0, 200)}' is stored here.`)
        // HEAD gets the body too: the HTTP server sends none for HEAD, and keeps the length.
        const headers: Record<string, string> = { 'content-length': String(got.info.size), 'content-type': got.info.contentType ?? 'application/octet-stream' }
        return { status: 200, headers, body: got.body }
      }
      const length = Number(header(req.headers, 'content-length'))
      if (header(req.headers, 'content-length') === undefined || length !== o.size) {
        throw new TenantryError('VALIDATION_FAILED', `This upload URL is for exactly ${o.size} bytes (Content-Length); got ${printable(String(header(req.headers, 'content-length') ?? 'none')).slice(0, 20)}.`)
      }
      const type = header(req.headers, 'content-type') ?? null
      if (o.contentType !== null && type !== o.contentType) {
        throw new TenantryError('VALIDATION_FAILED', `This upload URL is for Content-Type '${o.contentType}'; got '${printable(String(type)).slice(0, 100)}'.`)
      }
      if (!req.body) throw new TenantryError('VALIDATION_FAILED', 'An upload needs a body.')
      const info = await this.put(o.key, req.body, { size: length, contentType: o.contentType ?? type ?? undefined })
      return { status: 200, headers: { 'content-type': 'application/json; charset=utf-8' }, body: JSON.stringify({ key: info.key, size: info.size }) }
    })
  }

  private async tenantOf(tenant: Tenant | string | undefined): Promise<Tenant> {
    if (tenant === undefined) return currentTenant()
    if (typeof tenant !== 'string') return tenant
    const t = await this.deps.findTenant(tenant)
    if (!t) throw new TenantryError('TENANT_NOT_FOUND', `No tenant has the slug or id '${printable(tenant).slice(0, 64)}'.`)
    return t
  }

  private shareOf(tenantId: string): UploadShare {
    let s = this.shares.get(tenantId)
    if (!s) this.shares.set(tenantId, (s = new UploadShare()))
    return s
  }

  private async usageRow(tenantId: string): Promise<{ bytes: number; objects: number }> {
    const s = sql.usageOf(tenantId)
    const { rows } = await this.deps.admin.query<{ bytes: number; objects: number }>(s.text, s.values)
    return rows[0] ? { bytes: Number(rows[0].bytes), objects: Number(rows[0].objects) } : { bytes: 0, objects: 0 }
  }

  /** The tenant's limits: defaults ← plan (options first, else the catalog plan's `settings.storage`). */
  async limitsOf(tenant: Tenant): Promise<StorageLimits> {
    let plan: StorageLimitsInput | undefined = this.opts.plans[tenant.plan]
    if (!plan) {
      const now = Date.now()
      if (!this.planCache || now - this.planCache.at > 10_000) {
        const plans = this.deps.plans()
        plans.catch(() => { this.planCache = undefined })
        this.planCache = { at: now, plans }
      }
      plan = (await this.planCache.plans).find((p) => p.name === tenant.plan)?.settings?.storage as StorageLimitsInput | undefined
      if (plan) plan = parseStorageLimits(plan, `plan '${tenant.plan}' settings.storage`)
    }
    return { ...this.opts.defaults, ...(plan ?? {}) }
  }

  private init(): Promise<void> {
    this.ready ??= this.deps.admin.exec(sql.STORAGE_SCHEMA_SQL).catch((err) => {
      this.ready = undefined
      throw err
    })
    return this.ready
  }

  private async driverCall<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn()
    } catch (err) {
      if (isTenantryError(err)) throw err
      throw new TenantryError('STORAGE_UNAVAILABLE', `The ${this.driver.kind} object store failed: ${String((err as Error)?.message ?? err).split('\n')[0]}. Check that it is reachable.`, { cause: err })
    }
  }
}

/**
 * Counts an upload's bytes: fails it with the quota error past `room`, adds them to the tenant's
 * bytes in flight, and paces them to the tenant's bytes per second.
 */
class UploadMeter extends Transform {
  bytes = 0
  private held = 0

  constructor(
    private readonly room: number | null,
    private readonly share: UploadShare,
    private readonly rate: number | null,
    private readonly overQuota: () => TenantryError,
  ) {
    super()
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.bytes += chunk.length
    if (this.room !== null && this.bytes > this.room) {
      cb(this.overQuota())
      return
    }
    this.share.add(chunk.length)
    this.held += chunk.length
    const wait = this.share.delayFor(chunk.length, this.rate)
    if (wait < 1) cb(null, chunk)
    else setTimeout(cb, wait, null, chunk)
  }

  /** The bytes this upload holds in the tenant's share (given back with the slot when it ends). */
  get holding(): number {
    return this.held
  }
}

function quotaError(tenant: Tenant, limits: StorageLimits, what: 'bytes' | 'objects', usage: { bytes: number; objects: number }): TenantryError {
  const msg = what === 'bytes'
    ? `This upload would take tenant '${tenant.slug}' over its plan's storage of ${limits.maxBytes} bytes (${usage.bytes} stored). Nothing was stored; delete objects or move to a larger plan.`
    : `Tenant '${tenant.slug}' already stores ${usage.objects} objects, its plan's limit. Nothing was stored; delete objects or move to a larger plan.`
  return new TenantryError('STORAGE_QUOTA_EXCEEDED', msg, { details: { quota: what, limit: what === 'bytes' ? limits.maxBytes : limits.maxObjects, used: usage[what] } })
}

function checkContentType(ct: unknown): string | null {
  if (ct === undefined || ct === null) return null
  if (typeof ct !== 'string' || ct.length > 200 || !/^[\w.+-]+\/[\w.+-]+(\s*;\s*[\w.+-]+=("[^"\r\n]*"|[\w.+-]+))*$/.test(ct)) {
    throw new TenantryError('VALIDATION_FAILED', `'${printable(String(ct)).slice(0, 60)}' is not a valid content type (type/subtype).`)
  }
  return ct
}

const LIMIT_KEYS = Object.keys(DEFAULT_STORAGE_LIMITS) as (keyof StorageLimits)[]

/** Check storage limits as plans and options give them; `CONFIG_INVALID` names the bad field. */
export function parseStorageLimits(input: unknown, where: string): StorageLimitsInput {
  if (input === undefined || input === null) return {}
  if (typeof input !== 'object' || Array.isArray(input)) throw new TenantryError('CONFIG_INVALID', `Storage limits of ${where} must be an object.`, { details: { where } })
  const out: StorageLimitsInput = {}
  for (const [k, v] of Object.entries(input)) {
    if (!LIMIT_KEYS.includes(k as keyof StorageLimits)) throw new TenantryError('CONFIG_INVALID', `Storage limits of ${where}: unknown field '${printable(k)}' (known: ${LIMIT_KEYS.join(', ')}).`, { details: { where, key: k } })
    const nullable = k === 'maxBytes' || k === 'maxObjects' || k === 'uploadBytesInFlight' || k === 'uploadBytesPerSecond'
    const min = k === 'uploadConcurrency' || k === 'uploadQueueTimeoutMs' || k === 'uploadBytesPerSecond' ? 1 : 0
    if (v === null && nullable) { (out as Record<string, unknown>)[k] = null; continue }
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) {
      throw new TenantryError('CONFIG_INVALID', `Storage limits of ${where}: '${k}' must be a whole number of at least ${min}${nullable ? ' or null' : ''}.`, { details: { where, key: k } })
    }
    ;(out as Record<string, unknown>)[k] = v
  }
  return out
}

/**
 * Object storage, wired by `createTenantry`: the local driver under the data directory by
 * default, S3 when configured; a purged tenant's prefix is removed.
 *
 * @example
 * ```ts
 * const storage = createStorage({ driver: 's3', s3: { bucket: 'uploads' } }, deps)
 * ```
 */
export function createStorage(options: StorageOptions = {}, deps: StorageDeps): TenantStorage {
  const defaults = { ...DEFAULT_STORAGE_LIMITS, ...parseStorageLimits(options.defaults, 'storage.defaults') }
  const plans: Record<string, StorageLimitsInput> = {}
  for (const [name, l] of Object.entries(options.plans ?? {})) plans[name] = parseStorageLimits(l, `storage.plans.${name}`)
  const presignExpiresSeconds = options.presignExpiresSeconds ?? 900
  if (!Number.isInteger(presignExpiresSeconds) || presignExpiresSeconds < 1 || presignExpiresSeconds > 604_800) {
    throw new TenantryError('CONFIG_INVALID', 'storage.presignExpiresSeconds must be a whole number from 1 to 604800.', { details: { option: 'storage.presignExpiresSeconds' } })
  }
  const bucket = options.s3?.bucket ?? process.env.TENANTRY_S3_BUCKET
  const kind = options.driver ?? (options.s3 || process.env.TENANTRY_S3_BUCKET ? 's3' : 'local')
  let driver: StorageDriver
  if (typeof kind === 'object') driver = kind
  else if (kind === 's3') {
    if (!bucket) throw new TenantryError('CONFIG_INVALID', 'storage.driver s3 needs a bucket: storage.s3.bucket or TENANTRY_S3_BUCKET.', { details: { option: 'storage.s3.bucket' } })
    driver = new S3StorageDriver({ bucket, client: options.s3?.client })
  } else if (kind === 'local') {
    // `dataDir: 'memory'`: a temporary directory, made on first use (most such runs never store a file).
    driver = new LocalStorageDriver(options.directory ?? (deps.dataDir === 'memory' ? () => mkdtempSync(join(tmpdir(), 'tenantry-storage-')) : join(deps.dataDir, 'storage')))
  } else {
    throw new TenantryError('CONFIG_INVALID', `storage.driver must be 'local', 's3' or a driver object; got '${printable(String(kind))}'.`, { details: { option: 'storage.driver' } })
  }
  const publicUrl = options.publicUrl ?? ''
  if (typeof publicUrl !== 'string' || (publicUrl !== '' && !/^https?:\/\/[^/?#]+(\/[^?#]*)?$/.test(publicUrl))) {
    throw new TenantryError('CONFIG_INVALID', 'storage.publicUrl must be an http(s) origin such as https://app.example.com.', { details: { option: 'storage.publicUrl' } })
  }
  const region = options.region ?? process.env.TENANTRY_STORAGE_REGION ?? null
  const residency = { bucket: typeof kind === 'object' ? 'custom' : kind === 's3' ? `s3://${bucket}` : 'local', region, force: options.forceResidency ?? [] }
  const storage = new TenantStorage(driver, { defaults, plans, presignExpiresSeconds, publicUrl, residency }, deps)
  deps.events.on('tenant.purged', ({ tenant }) => {
    storage.removeTenant(tenant).catch((error) => deps.events.emit('error', { error, context: `removing the stored objects of purged tenant '${tenant.slug}'` }))
  })
  return storage
}
