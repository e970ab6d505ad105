import type { AuditLog } from '../audit/index.ts'
import { auditForcedResidency, backupTarget, checkResidency } from '../security/residency.ts'
import { createHash, randomUUID } from 'node:crypto'
import { accessSync, constants as fsConstants, existsSync, mkdirSync, mkdtempSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve as resolvePath } from 'node:path'
import type { S3ClientConfig } from '@aws-sdk/client-s3'
import type { Readable } from 'node:stream'
import type { Catalog } from '../catalog/catalog.ts'
import { TenantryError } from '../core/errors.ts'
import type { Placement, Tenant, Tier } from '../core/types.ts'
import { TIERS } from '../core/types.ts'
import { isUuid, printable } from '../core/validation.ts'
import { assertSlug } from '../core/validation.ts'
import type { AdminQueryable, BackendPriority, ServerDriver } from '../data/driver.ts'
import type { DataPlane } from '../data/data-plane.ts'
import { TIER_STRATEGIES, type MigrationTarget, type TemplateSource } from '../data/tiers/index.ts'
import { quoteIdent } from '../core/sql.ts'
import { tenantToken } from '../data/tenant-token.ts'
import { faultPoint } from '../lifecycle/faults.ts'
import { LoadPacer, type PaceOptions, type PaceReport } from '../lifecycle/pacer.ts'
import { mustFindTenant } from '../lifecycle/lifecycle.ts'
import { createTarget, migrateTarget, requireMigrations, type MigrationFile } from '../lifecycle/migrator.ts'
import type { Operation, Operations } from '../lifecycle/operations.ts'
import type { TenantExtraMigrations } from '../lifecycle/lifecycle.ts'
import { ARCHIVE_FORMAT_VERSION, checkManifestMac, entrySha256, formatOf, packArchive, readManifest, readTable, readTables, spoolTable, verifyArchive, type ArchiveManifest } from './archive.ts'
import { copiesDirectly, copyFormatFor, copyTableIn, copyTableOut, copyWidth, eachTableAtSnapshot, loadWaves, mapLimited, pacedStream, raiseSequences, rewriteTenantId, tenantTables, type TenantTable } from './copy-engine.ts'
import { TenantKeys, resolveMasterKey } from './keys.ts'
import { EXPORT_FORMATS, exportTable, subjectColumns, SUBJECT_MARK, type ExportFormat } from './export.ts'
import * as sql from './sql.ts'
import { isS3Url, parseS3Url, s3AbortUpload, s3DeleteObject, s3DownloadArchive, s3ObjectExists, s3ObjectHead, s3UploadArchive, s3Url, type S3Location } from './s3-archive.ts'
import type { S3Access, S3Sdk } from '../storage/s3-client.ts'

/** Options of the portability part of {@link createTenantry} (`portability: { … }`). */
export interface PortabilityOptions {
  /** 64 hex characters wrapping every tenant's archive data key. Default `TENANTRY_MASTER_KEY`; without one archives are written unencrypted. */
  masterKey?: string
  /** Where `backup()` writes when no `to` is given: a directory or an `s3://bucket/prefix/`. Default `TENANTRY_BACKUP_DIR`, else `./backups`. */
  backupDir?: string
  /** Backup directories (or `s3://` prefixes) and their regions (`{ '/mnt/eu-backups': 'eu', 's3://acme-eu/': 'eu' }`); default `TENANTRY_BACKUP_REGIONS` (`dir=region,…`). A tenant's archive may only go to its region's. */
  backupRegions?: Record<string, string>
  /**
   * The S3 client's configuration (region, endpoint, credentials, forcePathStyle…) for `s3://`
   * backup targets and restore sources. Default: object storage's (`storage.s3.client`); what
   * neither gives, the AWS SDK reads from the environment (`AWS_REGION`, `AWS_ENDPOINT_URL_S3`…).
   */
  s3?: S3ClientConfig
  /** Where an `s3://` backup is packed, and an `s3://` restore downloaded, before the transfer. Default `TENANTRY_SPOOL_DIR`, else the OS temp directory. */
  spoolDir?: string
  /**
   * Tables of one tenant a backup or restore copies at once on PostgreSQL (each on its own owner
   * connection; a backup's share one exported snapshot). Default 4; 1 copies one after another.
   * PGlite always copies one after another.
   */
  parallelTables?: number
}

/** Progress of a backup or restore, for a progress bar. */
export interface PortabilityProgress {
  phase: 'backup' | 'verify' | 'load'
  table: string
  tablesDone: number
  tables: number
  rows: number
}

export interface BackupOptions {
  /**
   * A file, or a directory (existing, or ending in `/`) to write `<slug>-<time>.tar` into; or
   * `s3://bucket/prefix/` (the same name under the prefix) or `s3://bucket/key.tar`.
   */
  to?: string
  /** gzip each table. Default true. */
  gzip?: boolean
  /** Encrypt with the tenant's data key. Default: true when a master key is set. */
  encrypt?: boolean
  /** Write to a backup directory of another region than the tenant's anyway (audited as `residency.force`); otherwise 409 `RESIDENCY_VIOLATION`. */
  forceResidency?: boolean
  startedBy?: string
  onProgress?: (p: PortabilityProgress) => void
  /** Told the operation's id once it is recorded (the admin API answers 202 with it). */
  onStart?: (operationId: string) => void
  /**
   * Pace the copy by the load of the tenant's server, to leave the other tenants more of it (see
   * docs/portability.md#pacing): full speed on a server no one else is using, a small share of one
   * stream on a busy one. Default false: as fast as it goes, like `pg_dump`.
   */
  pace?: boolean | PaceOptions
}

/** One archive written, as `backups list` shows it. */
export interface BackupRecord {
  id: string
  tenantId: string
  slug: string
  tier: Tier
  path: string
  rows: number
  bytes: number
  encrypted: boolean
  compressed: boolean
  operationId: string | null
  createdAt: Date
}

export interface BackupResult extends BackupRecord {
  tables: { name: string; rows: number }[]
  ms: number
  /** How the copy was paced; absent when it was not (not asked for, or a server without a gauge: PGlite). */
  pace?: PaceReport
  /**
   * A paced backup's database side: whether its backends ran at nice {@link BACKUP_NICE} (the
   * server has the `prioritize` extension), and the server host's autogroup setting, which makes
   * that nice value inert when on (null: not readable). Absent when not paced.
   */
  priority?: BackendPriority
}

/** The nice value of a paced backup's backends (and of `tenantry backup --pace`'s own process): the lowest priority. */
export const BACKUP_NICE = 19

export interface RestoreOptions {
  /** Restore as a new tenant with this slug (a new id; `tenant_id` rewritten). Default: the archive's own tenant. */
  as?: string
  /** Tier of the restored tenant. Default: the existing tenant's, else the archive's. */
  tier?: Tier
  /** Server of the restored tenant. Default: the existing tenant's, else the archive's if registered, else `main`. */
  server?: string
  /** Restore over an existing tenant: loaded beside it, then switched to atomically. */
  replace?: boolean
  /** Restore onto a server outside the tenant's region anyway (audited as `residency.force`); otherwise 409 `RESIDENCY_VIOLATION`. */
  forceResidency?: boolean
  startedBy?: string
  onProgress?: (p: PortabilityProgress) => void
  /** Told the operation's id once it is recorded (after the archive was verified). */
  onStart?: (operationId: string) => void
}

export interface RestoreResult {
  tenant: Tenant
  operationId: string
  archiveId: string
  rows: number
  tables: { name: string; rows: number }[]
  /** Migrations the archive was older than, applied after the load. */
  migratedForward: string[]
  replaced: boolean
}

export interface ExportOptions {
  format: ExportFormat
  /** Directory the export's own directory is made in. Default: the backup directory. */
  to?: string
  /** Only the rows whose subject-marked columns (docs/portability.md) equal this value. */
  subject?: string
  startedBy?: string
  /** Told the operation's id once it is recorded. */
  onStart?: (operationId: string) => void
}

export interface ExportResult {
  /** The directory written: `manifest.json` and one file per table. */
  path: string
  slug: string
  format: ExportFormat
  subject: boolean
  rows: number
  tables: { name: string; file: string; rows: number; sha256: string }[]
  operationId: string
}

/** What a data-subject erasure removed, kept in the catalog with the tenant's certificates. */
export interface SubjectErasureCertificate {
  kind: 'subject'
  certificateId: string
  operationId: string
  tenant: { id: string; slug: string }
  /** sha256 of the subject value: the certificate itself names no person. */
  subjectSha256: string
  completedAt: string
  tables: { table: string; columns: string[]; before: number; after: number }[]
  rowsBefore: number
  rowsAfter: number
  verified: boolean
}

/** The erasure certificate kept in the catalog (`tenantry erase` prints it). */
export interface ErasureCertificate {
  certificateId: string
  operationId: string
  tenant: { id: string; slug: string; tier: Tier; placement: Placement }
  startedAt: string
  completedAt: string
  removed: string[]
  /** Rows of the tenant id in every tenant table of every server, before and after. */
  scan: { server: string; database: string; table: string; before: number; after: number }[]
  catalog: { table: string; after: number }[]
  objects: { object: string; existsAfter: boolean }[]
  archives: { path: string; encrypted: boolean; action: string }[]
  cryptoShredding: { dataKeyDestroyedAt: string | null; statement: string }
  rowsBefore: number
  rowsAfter: number
  verified: boolean
}

interface Deps {
  catalog: Catalog
  dataPlane: DataPlane
  operations: Operations
  files: MigrationFile[]
  admin: AdminQueryable
  options: PortabilityOptions
  version: string
  /** Where a forced residency exception is recorded. */
  audit?: AuditLog
  /** The tenant's objects in object storage (`tenantry.storage`): erasure removes them and checks none is left. */
  objectStore?: { removeTenant(tenant: Tenant): Promise<number>; hasObjects(tenant: Tenant): Promise<boolean> }
  /** The S3 client of `s3://` backup targets and restore sources (`portability.s3`, else `storage.s3.client`). */
  s3?: S3Access
}

/** An `s3://` backup: the object it writes, and the local file the archive is packed into first. */
interface S3Backup {
  url: string
  loc: S3Location
  local: string
}

/** Plugins' own migration sets (src/config/plugin-migrations.ts), as a restore needs them. */
export interface PluginMigrationSets extends TenantExtraMigrations {
  /** Plugin name → its files (ledger versions `<plugin>:<NNNN>`). */
  readonly sets: ReadonlyMap<string, MigrationFile[]>
}

/** What a restore applies to its room: the app's files, and the plugins' with their invariant check. */
interface RestoreFiles {
  /** The archive's own versions first (the room is made at them), the newer ones after the load. */
  files: MigrationFile[]
  around?: TenantExtraMigrations['around']
}

/** A tenant's rows: the server driver, database and schema they live in. */
interface Room {
  server: string
  database: string
  schema: string
}

/**
 * Per-tenant backup, restore and verified erasure, each a durable operation (invariant 7). One
 * archive format for every tier; the copy engine (copy-engine.ts) streams the rows.
 *
 * @example
 * ```ts
 * const b = await tenantry.portability.backup('acme', { to: './backups/' })
 * await tenantry.portability.restore(b.path, { as: 'acme-staging', tier: 'database', server: 'eu' })
 * ```
 */
export class Portability {
  readonly keys: TenantKeys
  private readonly d: Deps
  private plugins?: PluginMigrationSets

  /** Plugins' migration sets: restores apply them like the app's (set once the configuration is open). */
  useExtraMigrations(plugins: PluginMigrationSets | undefined): void {
    this.plugins = plugins
  }

  constructor(deps: Deps) {
    this.d = deps
    this.keys = new TenantKeys(deps.admin, resolveMasterKey(deps.options.masterKey))
  }

  /** Create the catalog tables (keys, backups, certificates). */
  async init(): Promise<void> {
    await this.d.admin.transaction(async (tx) => { await tx.exec(sql.PORTABILITY_SCHEMA_SQL) })
  }

  // ---- backup --------------------------------------------------------------------------------

  /** Write one tenant's archive: a consistent snapshot while it keeps serving. */
  async backup(slugOrId: string, opts: BackupOptions = {}): Promise<BackupResult> {
    const tenant = await this.mustFind(slugOrId)
    if (tenant.status === 'provisioning') throw new TenantryError('TENANT_NOT_READY', `Tenant '${tenant.slug}' is still provisioning; back it up once it is active.`)
    const dest = opts.to ?? process.env.TENANTRY_BACKUP_DIR ?? this.d.options.backupDir ?? './backups'
    const remote = isS3Url(dest) ? this.s3Backup(tenant, dest) : null
    const target = backupTarget(remote ? remote.url : dest, this.d.options.backupRegions)
    const residency = checkResidency(tenant, target, { force: opts.forceResidency })
    if (remote && (await s3ObjectExists(await this.s3Sdk(remote.url), remote.loc))) {
      throw new TenantryError('CONFLICT', `'${remote.url}' already exists; choose another key or a prefix ending in '/'.`)
    }
    const encrypt = opts.encrypt ?? this.keys.available
    const key = encrypt ? await this.keys.dataKey(tenant.id, { create: true }) : null
    const path = remote ? remote.local : this.archivePath(tenant, opts.to)
    if (existsSync(path)) throw new TenantryError('CONFLICT', `'${path}' already exists; choose another file or a directory.`)
    try {
      accessSync(dirname(path), fsConstants.W_OK)
    } catch (err) {
      throw new TenantryError('VALIDATION_FAILED', `Cannot write into '${dirname(path)}' (${(err as NodeJS.ErrnoException).code}); choose a directory this process may write to.`, { cause: err })
    }
    // An S3 backup records its URL as the path, and the local file it packs into as `spool`.
    const params = remote ? { path: remote.url, spool: path, gzip: opts.gzip ?? true, encrypt } : { path, gzip: opts.gzip ?? true, encrypt }
    const op = await this.d.operations.start('backup', { tenantId: tenant.id, slug: tenant.slug, params, step: 'snapshot', startedBy: opts.startedBy })
    opts.onStart?.(op.id)
    if (residency.forced && this.d.audit) await auditForcedResidency(this.d.audit, tenant, target, residency, { actor: opts.startedBy ?? op.startedBy, details: { operation: 'backup', operationId: op.id } })
    try {
      const publish = remote ? (file: string) => this.uploadBackup(op, remote, file) : undefined
      return await this.d.operations.holding(() => this.runBackup(op, tenant, path, { gzip: opts.gzip ?? true, key, pace: opts.pace ?? false, publish }, opts.onProgress))
    } catch (err) {
      await this.rollBackBackup(op).catch(() => undefined)
      throw err
    }
  }

  /** Where an `s3://` backup goes: the key (`<prefix><slug>-<time>.tar` for a prefix) and its local spool file. */
  private s3Backup(tenant: Tenant, dest: string): S3Backup {
    const given = parseS3Url(dest)
    this.requireS3(dest)
    const asPrefix = given.key === '' || given.key.endsWith('/')
    const loc = asPrefix ? { bucket: given.bucket, key: `${given.key}${tenant.slug}-${new Date().toISOString().replace(/[:.]/g, '-')}.tar` } : given
    return { url: s3Url(loc), loc, local: resolvePath(join(this.spoolRoot(), `tenantry-backup-${randomUUID()}.tar`)) }
  }

  /** Upload a packed archive to S3, then remove the local file; the upload id is recorded so a rollback can abort it. */
  private async uploadBackup(op: Operation, remote: S3Backup, file: string): Promise<string> {
    await this.d.operations.step(op.id, 'upload')
    await s3UploadArchive(await this.s3Sdk(remote.url), remote.loc, file, op.id, (uploadId) => this.d.operations.step(op.id, 'upload', { uploadId }))
    rmSync(file, { force: true })
    // Killed here, the object exists but no catalog row: the rollback deletes it.
    await faultPoint('backup:uploaded')
    return remote.url
  }

  private spoolRoot(): string {
    return this.d.options.spoolDir ?? process.env.TENANTRY_SPOOL_DIR ?? tmpdir()
  }

  /** An S3 location needs a client configuration: refused before anything is written when there is none. */
  private requireS3(url: string): S3Access {
    if (!this.d.s3?.configured) {
      throw new TenantryError('CONFIG_INVALID', `'${url}' is in S3, but no S3 client is configured: set portability.s3 (or storage.s3.client) with a region or endpoint in createTenantry, or AWS_REGION (and AWS_ENDPOINT_URL_S3 for an S3-compatible store) in the environment.`, { details: { option: 'portability.s3' } })
    }
    return this.d.s3
  }

  private s3Sdk(url: string): Promise<S3Sdk> {
    return this.requireS3(url).sdk()
  }

  private async runBackup(op: Operation, tenant: Tenant, path: string, o: { gzip: boolean; key: Buffer | null; pace: boolean | PaceOptions; publish?: (file: string) => Promise<string> }, onProgress?: (p: PortabilityProgress) => void): Promise<BackupResult> {
    const started = Date.now()
    const room = this.roomOf(tenant)
    const archiveId = randomUUID()
    const spoolDir = `${path}.spool`
    rmSync(spoolDir, { recursive: true, force: true })
    mkdirSync(spoolDir, { recursive: true })
    await faultPoint('backup:snapshot')
    const target = this.d.dataPlane.migrationTarget(tenant)
    const driver = this.d.dataPlane.driver(room.server)
    const token = tenantToken(this.d.dataPlane.tenantKey, tenant.id)
    const pacer = await backupPacer(driver, room.server, this.width(driver, Infinity), o.pace) // before the snapshot: the tables are not known yet
    // A paced backup's backends also yield the server's CPU to everyone else's, where they can.
    const priority = pacer && driver.backendPriority ? await driver.backendPriority().catch(() => ({ available: false, autogroup: null })) : undefined
    const nice = priority?.available ? BACKUP_NICE : undefined
    const { tables, migrations, spooled } = await driver.copyTransaction(room.database, 'snapshot', async (tx) => {
      // An owner under FORCEd row-level security would otherwise copy no rows at all.
      await tx.query(...args(sql.pointAtTenant(token)))
      const tables = await tenantTables(tx, room.schema)
      const ledger = await tx.query<{ version: string; name: string; checksum: string }>('SELECT version, name, checksum FROM tenantry.migrations WHERE target = $1 ORDER BY version', [target.schema])
      let rows = 0
      let done = 0
      // Each table spools to its own file, so tables can be read at once (one exported snapshot);
      // the tar is packed from the spool files in table order afterwards.
      const spooled = await eachTableAtSnapshot(tx, { driver, database: room.database, token, nice }, tables, this.width(driver, tables.length), async (w, table, i) => {
        const format = copyFormatFor(table)
        const s = spoolTable(spoolDir, i, table, { gzip: o.gzip, key: o.key, archiveId, format, gate: pacer ? pacedStream(pacer) : undefined })
        const [copied, r] = await Promise.all([copyTableOut(w, room.schema, tenant.id, table, s.sink, format), s.done])
        const sha256 = await entrySha256(s.file, s.entry, copied)
        rows += copied
        onProgress?.({ phase: 'backup', table: table.name, tablesDone: ++done, tables: tables.length, rows })
        return { entry: s.entry, file: s.file, name: table.name, columns: table.columns, types: table.types ?? [], format, rows: copied, sha256, ...r }
      })
      return { tables, migrations: ledger.rows, spooled }
    }, { nice }).finally(() => pacer?.stop())
    await this.d.operations.step(op.id, 'pack')
    await faultPoint('backup:pack')
    const manifest: ArchiveManifest = {
      format: 'tenantry-archive',
      formatVersion: ARCHIVE_FORMAT_VERSION,
      archiveId,
      tenantryVersion: this.d.version,
      createdAt: new Date().toISOString(),
      tenant: { id: tenant.id, slug: tenant.slug, name: tenant.name, tier: tenant.tier, plan: tenant.plan, region: tenant.region, config: tenant.config },
      source: room,
      migrations,
      compression: o.gzip ? 'gzip' : 'none',
      encryption: o.key ? { algorithm: 'aes-256-gcm', key: 'tenant-data-key', tenantId: tenant.id } : null,
      tables: spooled.map((s) => ({ name: s.name, columns: s.columns, types: s.types, format: s.format, rows: s.rows, sha256: s.sha256, entry: s.entry, bytes: s.bytes })),
      rows: spooled.reduce((n, s) => n + s.rows, 0),
    }
    // Written beside the target and renamed into place: a killed backup leaves no file that looks complete.
    const bytes = await packArchive(`${path}.partial`, manifest, spooled, o.key)
    renameSync(`${path}.partial`, path)
    rmSync(spoolDir, { recursive: true, force: true })
    // An S3 backup: the finished file is uploaded, and the object's URL is what is recorded.
    const where = o.publish ? await o.publish(path) : path
    const record: BackupRecord = {
      id: archiveId, tenantId: tenant.id, slug: tenant.slug, tier: tenant.tier, path: where, rows: manifest.rows, bytes,
      encrypted: o.key !== null, compressed: o.gzip, operationId: op.id, createdAt: new Date(manifest.createdAt),
    }
    await this.d.admin.transaction(async (tx) => {
      await tx.query(...args(sql.insertBackup({ ...record, manifest })))
      await this.d.operations.finish(op.id, 'done', null, { path: where, rows: manifest.rows, bytes, tables: tables.length }, tx, 'done')
    })
    return { ...record, tables: spooled.map((s) => ({ name: s.name, rows: s.rows })), ms: Date.now() - started, ...(pacer ? { pace: pacer.report() } : {}), ...(priority ? { priority } : {}) }
  }

  /**
   * A backup that failed or whose process died: its partial files are removed, nothing is recorded.
   * An S3 backup also loses its local file, its multipart upload is aborted (the id recorded at
   * step `upload`), and an object the upload completed before the catalog recorded it is deleted
   * (the key was free when the backup started): no object is left under the key.
   */
  private async rollBackBackup(op: Operation): Promise<void> {
    const p = op.params as { path: string; spool?: string }
    const local = p.spool ?? p.path
    rmSync(`${local}.partial`, { force: true })
    rmSync(`${local}.spool`, { recursive: true, force: true })
    const recorded = await this.d.admin.query('SELECT 1 FROM tenantry.backups WHERE operation_id = $1', [op.id])
    if (p.spool !== undefined) rmSync(local, { force: true })
    if (recorded.rowCount > 0) {
      await this.d.operations.finish(op.id, 'done')
      return
    }
    if (p.spool === undefined) {
      await this.d.operations.finish(op.id, 'rolled_back', 'The backup did not finish; its partial files were removed. Run it again.')
      return
    }
    const loc = parseS3Url(p.path)
    const uploadId = ((await this.d.operations.get(op.id))?.progress as { uploadId?: string } | undefined)?.uploadId
    const notes: string[] = []
    if (uploadId) {
      await s3AbortUpload(await this.s3Sdk(p.path), loc, uploadId).catch((err: Error) => {
        const why = (err.cause ?? err) as Error
        notes.push(` Its multipart upload ${uploadId} could not be aborted (${why.name}: ${why.message}): abort it by hand, or let a lifecycle rule (AbortIncompleteMultipartUpload) remove its parts; it never becomes an object.`)
      })
    }
    let cleared = true
    try {
      const sdk = await this.s3Sdk(p.path)
      const found = await s3ObjectHead(sdk, loc)
      // Only this operation's own object (its metadata says so): another writer's stays.
      if (found?.operation === op.id) await s3DeleteObject(sdk, loc)
      else if (found) {
        cleared = false
        notes.push(` The object under '${p.path}' was written by another writer, not this backup: it was left as it is.`)
      }
    } catch (err) {
      cleared = false
      notes.push(` Checking '${p.path}' failed (${(err as Error).message}): make sure no object is left under that key.`)
    }
    await this.d.operations.finish(op.id, 'rolled_back', `The backup did not finish; its partial files were removed${cleared ? ` and no object is left under '${p.path}'` : ''}. Run it again.${notes.join('')}`)
  }

  /** Archives written, newest first (of one tenant when given). */
  async listBackups(opts: { tenant?: string; limit?: number } = {}): Promise<BackupRecord[]> {
    let tenantId: string | undefined
    if (opts.tenant !== undefined) {
      if (isUuid(opts.tenant)) tenantId = opts.tenant
      else {
        const t = await this.d.catalog.bySlug(opts.tenant)
        if (!t) {
          const old = await this.d.admin.query<{ tenant_id: string }>('SELECT tenant_id FROM tenantry.backups WHERE slug = $1 ORDER BY created_at DESC LIMIT 1', [opts.tenant])
          if (!old.rows[0]) throw new TenantryError('TENANT_NOT_FOUND', `No tenant or backup has the slug '${printable(opts.tenant)}'.`)
          tenantId = old.rows[0].tenant_id
        } else tenantId = t.id
      }
    }
    const res = await this.d.admin.query<{ id: string; tenant_id: string; slug: string; tier: Tier; path: string; rows: string | number; bytes: string | number; encrypted: boolean; compressed: boolean; operation_id: string | null; created_at: Date | string }>(
      ...args(sql.listBackups({ tenantId, limit: opts.limit ?? 100 })),
    )
    return res.rows.map((r) => ({
      id: r.id, tenantId: r.tenant_id, slug: r.slug, tier: r.tier, path: r.path, rows: Number(r.rows), bytes: Number(r.bytes),
      encrypted: r.encrypted, compressed: r.compressed, operationId: r.operation_id, createdAt: new Date(r.created_at),
    }))
  }

  // ---- restore -------------------------------------------------------------------------------

  /**
   * Restore an archive into any tier and server: the archive is verified whole (checksums, and
   * authentication when encrypted) before anything is written; then loaded into a room nobody
   * is served from, migrated forward, and switched to in one catalog transaction.
   */
  async restore(archivePath: string, opts: RestoreOptions = {}): Promise<RestoreResult> {
    if (opts.tier !== undefined && !TIERS.includes(opts.tier)) throw new TenantryError('VALIDATION_FAILED', `Tier '${printable(String(opts.tier))}' is not one of ${TIERS.join(', ')}.`)
    if (opts.as !== undefined) assertSlug(opts.as)
    requireMigrations(this.d.files)
    if (!isS3Url(archivePath)) return this.restoreFile(resolvePath(String(archivePath ?? '')), null, opts)
    // From S3: downloaded whole first (the archive is read twice: verified, then loaded), and the
    // local copy removed whatever happens.
    const loc = parseS3Url(archivePath)
    if (loc.key === '' || loc.key.endsWith('/')) throw new TenantryError('VALIDATION_FAILED', `'${printable(archivePath)}' is a prefix; name the archive's key (tenantry backups list shows them).`)
    const sdk = await this.s3Sdk(archivePath)
    let dir: string
    try {
      dir = mkdtempSync(join(this.spoolRoot(), 'tenantry-restore-'))
    } catch (err) {
      throw new TenantryError('VALIDATION_FAILED', `Cannot make a temporary directory in the spool directory '${this.spoolRoot()}' (${(err as NodeJS.ErrnoException).code}) to download '${printable(archivePath)}' into; set portability.spoolDir or TENANTRY_SPOOL_DIR to a directory this process may write to.`, { cause: err })
    }
    try {
      const file = join(dir, 'archive.tar')
      await s3DownloadArchive(sdk, loc, file)
      return await this.restoreFile(file, s3Url(loc), opts)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  }

  /** Restore from a local archive file; `source` is the `s3://` URL it was downloaded from. */
  private async restoreFile(path: string, source: string | null, opts: RestoreOptions): Promise<RestoreResult> {
    const { manifest, json, mac } = await readManifest(path)
    const key = manifest.encryption ? await this.keys.dataKey(manifest.encryption.tenantId) : null
    if (key) checkManifestMac(path, key, json, mac)
    this.checkMigrations(manifest)

    // Where it goes.
    const slug = opts.as ?? manifest.tenant.slug
    const bySlug = await this.d.catalog.bySlug(slug)
    const sameId = opts.as === undefined ? await this.d.catalog.byId(manifest.tenant.id) : null
    if (sameId && sameId.slug !== slug) throw new TenantryError('CONFLICT', `The archive's tenant ${manifest.tenant.id} exists as '${sameId.slug}'; restore with --as <slug> for a copy.`)
    const existing = bySlug
    if (existing && !opts.replace) {
      throw new TenantryError('CONFLICT', `Tenant '${slug}' exists. Restore over it with --replace (loaded beside it, then switched to), or as a copy with --as <new-slug>.`, { details: { slug } })
    }
    if (existing && existing.status === 'provisioning') throw new TenantryError('TENANT_NOT_READY', `Tenant '${slug}' is provisioning; wait for it to finish.`)
    const id = existing?.id ?? (opts.as !== undefined ? randomUUID() : manifest.tenant.id)
    const tier = opts.tier ?? existing?.tier ?? (manifest.tenant.tier as Tier)
    const server = await this.pickServer(opts.server ?? existing?.placement.server ?? manifest.source.server, opts.server !== undefined)
    const target = { kind: 'server' as const, name: server, region: this.d.dataPlane.server(server).region }
    const residency = checkResidency({ slug, region: existing?.region ?? manifest.tenant.region ?? null }, target, { force: opts.forceResidency })
    const placement = this.stagingPlacement(id, tier, server, existing)
    // The whole archive is read and checked before anything is written.
    let verified = 0
    await verifyArchive(path, manifest, key, this.width(this.d.dataPlane.driver(server), manifest.tables.length), (t) => {
      opts.onProgress?.({ phase: 'verify', table: t.name, tablesDone: ++verified, tables: manifest.tables.length, rows: 0 })
    })
    if (residency.forced && this.d.audit) await auditForcedResidency(this.d.audit, { id, slug }, target, residency, { actor: opts.startedBy ?? 'library', details: { operation: 'restore' } })
    const op = await this.d.operations.start('restore', {
      tenantId: id, slug, startedBy: opts.startedBy, step: 'prepare',
      params: { path: source ?? path, ...(source ? { spool: path } : {}), archiveId: manifest.archiveId, tier, placement, replace: Boolean(existing), previous: existing ? { tier: existing.tier, placement: existing.placement } : null },
    }, undefined)
    opts.onStart?.(op.id)
    return this.d.operations.holding(async () => {
      let tenant: Tenant
      if (existing) tenant = existing
      else {
        tenant = await this.d.catalog.insertTenant({
          id, slug, name: manifest.tenant.name, status: 'provisioning', tier, plan: manifest.tenant.plan, region: manifest.tenant.region ?? this.d.dataPlane.server(server).region,
          server, database: placement.database, schema: placement.schema ?? null, config: manifest.tenant.config ?? {},
        }).catch(async (err) => {
          await this.d.operations.finish(op.id, 'rolled_back', (err as Error).message)
          throw err
        })
      }
      const staging: Tenant = { ...tenant, tier, placement }
      try {
        const apply = await this.restoreFiles(manifest, staging)
        const have = new Set(manifest.migrations.map((m) => m.version))
        const forward = apply.files.filter((f) => !have.has(f.version)).map((f) => `${f.version}_${f.name}`)
        const loaded = await this.load(op, path, manifest, key, staging, existing, apply, opts.onProgress)
        await faultPoint('restore:switch')
        const result = { archiveId: manifest.archiveId, rows: loaded.reduce((n, t) => n + t.rows, 0), tables: loaded, migratedForward: forward, replaced: Boolean(existing) }
        const done = existing ? await this.switchTo(op, existing, staging, result) : await this.d.catalog.setStatus(id, 'active', null, async (tx) => {
          await this.d.operations.finish(op.id, 'done', null, result, tx, 'done')
        })
        return { tenant: done, operationId: op.id, ...result }
      } catch (err) {
        await this.rollBackRestore(op, staging, existing).catch(() => undefined)
        if (err instanceof TenantryError) throw err
        throw new TenantryError('RESTORE_FAILED', `Restoring '${slug}' failed and was rolled back${existing ? '; its previous data still serves' : ''}: ${(err as Error)?.message ?? String(err)}`, { cause: err, details: { operationId: op.id } })
      }
    })
  }

  /**
   * Archive migrations must be a prefix of this installation's, with the same checksums: the app's
   * (`NNNN`) and each plugin's (`<plugin>:<NNNN>`). A plugin this installation does not know →
   * `ARCHIVE_INCOMPATIBLE` naming it (`details.plugins`), before anything is written.
   */
  private checkMigrations(manifest: ArchiveManifest): void {
    const files = new Map([this.d.files, ...(this.plugins?.sets.values() ?? [])].flat().map((f) => [f.version, f]))
    const unknown = [...new Set(manifest.migrations.map((m) => pluginOf(m.version)).filter((p): p is string => p !== null && !this.plugins?.sets.has(p)))]
    if (unknown.length > 0) {
      throw new TenantryError('ARCHIVE_INCOMPATIBLE', `The archive holds the tables of plugin${unknown.length > 1 ? 's' : ''} ${unknown.map((p) => `'${printable(p)}'`).join(', ')}, which this installation does not have; register ${unknown.length > 1 ? 'them' : 'it'} (createTenantry's plugins) and restore again.`, { details: { plugins: unknown } })
    }
    for (const m of manifest.migrations) {
      const f = files.get(m.version)
      if (!f) throw new TenantryError('ARCHIVE_INCOMPATIBLE', `The archive was taken at migration ${m.version}_${m.name}, which this installation does not have; restore it with the app version that has that migration.`)
      if (f.checksum !== m.checksum) throw new TenantryError('ARCHIVE_INCOMPATIBLE', `Migration ${m.version}_${m.name} differs from the one the archive was taken at (checksum): the archive's tables may not fit.`)
    }
  }

  /**
   * The files the restored room gets: the app's, then the whole set of every plugin the archive
   * was taken with or the restored tenant has (its plan and config), forward only. Plugin tables
   * the archive lacks are made and stay empty.
   */
  private async restoreFiles(manifest: ArchiveManifest, staging: Tenant): Promise<RestoreFiles> {
    const plugins = this.plugins
    if (!plugins) return { files: this.d.files }
    const wanted = new Set([...manifest.migrations.map((m) => pluginOf(m.version)), ...(await plugins.forTenant(staging)).map((f) => f.plugin)])
    const extra = [...plugins.sets].filter(([name]) => wanted.has(name)).flatMap(([, files]) => files)
    return { files: [...this.d.files, ...extra], around: plugins.around }
  }

  /** Make the staging room at the archive's migrations, load every table in one transaction, then migrate it forward. */
  private async load(op: Operation, path: string, manifest: ArchiveManifest, key: Buffer | null, staging: Tenant, existing: Tenant | null, apply: RestoreFiles, onProgress?: (p: PortabilityProgress) => void): Promise<{ name: string; rows: number }[]> {
    const { dataPlane } = this.d
    const { files } = apply
    const around = apply.around ? { around: apply.around } : {}
    const ctx = dataPlane.tierContext(staging.placement.server)
    const strategy = TIER_STRATEGIES[staging.tier]
    const room = this.roomOf(staging)
    const target = dataPlane.migrationTarget(staging)
    const admin = ctx.driver.admin(target.database)
    await faultPoint('restore:prepare')
    // No template clone: the template is at the latest migration, the archive may be older.
    const noTemplate: TemplateSource = { cloneInto: async () => false }
    const preamble = await strategy.prepare(ctx, staging, noTemplate)
    const have = new Set(manifest.migrations.map((m) => m.version))
    const pooled = staging.tier === 'pooled'
    // The pooled tables serve other tenants: they are brought to the latest migration, never held
    // back to the archive's; an older archive's columns are loaded by name.
    // The app's files the archive has build the room in one transaction; its plugins' files follow,
    // each checked against invariants 1–2 like in a fleet run.
    if (pooled) await migrateTarget(admin, target, files, around)
    else {
      await createTarget(admin, target, files.filter((f) => have.has(f.version) && f.plugin === undefined), preamble)
      await migrateTarget(admin, target, files.filter((f) => have.has(f.version)), around)
    }
    await this.d.operations.step(op.id, 'load')
    await faultPoint('restore:load')
    const replacingPooledInPlace = pooled && existing?.tier === 'pooled' && existing.placement.server === staging.placement.server
    const token = tenantToken(dataPlane.tenantKey, staging.id)
    const width = this.width(ctx.driver, manifest.tables.length)
    const waves = width > 1 && !replacingPooledInPlace ? loadWaves(await tenantTables(admin, room.schema)) : null
    if (waves) {
      const counts = await this.loadInWaves(path, manifest, key, staging, room, waves, width, token, onProgress)
      await ctx.driver.copyTransaction(room.database, 'write', async (tx) => {
        await tx.query(...args(sql.pointAtTenant(token)))
        await raiseSequences(tx, room.schema, staging.id, waves.flat())
      })
      if (!pooled) await migrateTarget(admin, target, files, around)
      return counts
    }
    const counts: { name: string; rows: number }[] = []
    await ctx.driver.copyTransaction(room.database, 'write', async (tx) => {
      const tables = await tenantTables(tx, room.schema)
      const byName = new Map(tables.map((t) => [t.name, t]))
      for (const t of manifest.tables) {
        if (!byName.has(t.name)) throw new TenantryError('ARCHIVE_INCOMPATIBLE', `The archive's table '${t.name}' does not exist in the restore target.`)
      }
      // An owner under FORCEd row-level security sees and writes only the tenant it is pointed at.
      await tx.query(...args(sql.pointAtTenant(tenantToken(dataPlane.tenantKey, staging.id))))
      const direct = await copiesDirectly(tx)
      if (replacingPooledInPlace) {
        // Pooled over pooled on one server: old rows out and new rows in, in this one transaction.
        for (const t of [...tables].reverse()) await tx.query(...args(sql.deleteTenantRows(room.schema, t.name, staging.id)))
      }
      let rows = 0
      let i = 0
      await readTables(path, manifest, key, async (entry, plain) => {
        const format = formatOf(entry)
        // Every row must be the archive's tenant's, restored as it or as a copy (a role that
        // bypasses row-level security would otherwise load whatever an edited archive holds).
        const source: Readable = plain.pipe(rewriteTenantId(manifest.tenant.id, staging.id, format))
        const n = await copyTableIn(tx, room.schema, byName.get(entry.name)!, source, direct, { columns: entry.columns, format, types: entry.types })
        rows += n
        counts.push({ name: entry.name, rows: n })
        onProgress?.({ phase: 'load', table: entry.name, tablesDone: ++i, tables: manifest.tables.length, rows })
        return n
      })
      await raiseSequences(tx, room.schema, staging.id, tables)
    })
    if (!pooled) await migrateTarget(admin, target, files, around)
    return counts
  }

  /**
   * The parallel load: the tables of a wave (loadWaves) at once, `width` at most, each read from
   * the archive on its own and loaded in its own transaction. Only into a room nobody is served
   * from — a new tenant (still `provisioning`) or a staging room — so that tables committed one by
   * one are never seen half-restored; a failure or a kill rolls the room back as a whole.
   */
  private async loadInWaves(path: string, manifest: ArchiveManifest, key: Buffer | null, staging: Tenant, room: Room, waves: TenantTable[][], width: number, token: string, onProgress?: (p: PortabilityProgress) => void): Promise<{ name: string; rows: number }[]> {
    const driver = this.d.dataPlane.driver(room.server)
    const byName = new Map(waves.flat().map((t) => [t.name, t]))
    for (const t of manifest.tables) {
      if (!byName.has(t.name)) throw new TenantryError('ARCHIVE_INCOMPATIBLE', `The archive's table '${t.name}' does not exist in the restore target.`)
    }
    const indexOf = new Map(manifest.tables.map((t, i) => [t.name, i]))
    const counts = new Map<string, number>()
    let rows = 0
    for (const wave of waves) {
      await mapLimited(wave.filter((t) => indexOf.has(t.name)), width, (t) => driver.copyTransaction(room.database, 'write', async (tx) => {
        await tx.query(...args(sql.pointAtTenant(token)))
        const direct = await copiesDirectly(tx)
        await readTable(path, manifest, key, indexOf.get(t.name)!, async (entry, plain) => {
          const format = formatOf(entry)
          const source: Readable = plain.pipe(rewriteTenantId(manifest.tenant.id, staging.id, format))
          const n = await copyTableIn(tx, room.schema, t, source, direct, { columns: entry.columns, format, types: entry.types })
          counts.set(entry.name, n)
          rows += n
          onProgress?.({ phase: 'load', table: entry.name, tablesDone: counts.size, tables: manifest.tables.length, rows })
          return n
        })
      }).then(() => faultPoint('restore:table')))
    }
    return manifest.tables.map((t) => ({ name: t.name, rows: counts.get(t.name)! }))
  }

  /** Tables copied at once on `driver` (1 on PGlite). */
  private width(driver: ServerDriver, tables: number): number {
    return copyWidth(driver, tables, this.d.options.parallelTables)
  }

  /** Switch an existing tenant to the loaded room in one catalog transaction, then remove its old room. */
  private async switchTo(op: Operation, existing: Tenant, staging: Tenant, result: object): Promise<Tenant> {
    const inPlace = staging.tier === 'pooled' && existing.tier === 'pooled' && existing.placement.server === staging.placement.server
    let tenant = existing
    if (!inPlace) {
      await this.d.operations.step(op.id, 'switch')
      tenant = await this.d.catalog.setPlacement(existing.id, staging.tier, staging.placement)
      await faultPoint('restore:cleanup')
      await this.removeRoom(existing, staging.tier !== 'pooled')
    }
    await this.d.operations.finish(op.id, 'done', null, result, undefined, 'done')
    return tenant
  }

  /** A failed or interrupted restore: the staging room goes; a new tenant's catalog row goes too. */
  private async rollBackRestore(op: Operation, staging: Tenant, existing: Tenant | null): Promise<void> {
    await this.d.operations.step(op.id, 'rollback')
    if (existing && staging.tier === 'pooled' && existing.tier === 'pooled' && existing.placement.server === staging.placement.server) {
      // Pooled over pooled is one transaction: the tenant has either its old rows or the archive's, never a mix.
      await this.d.operations.finish(op.id, 'failed', "Interrupted: the load is one transaction, so the tenant serves either its previous rows or the archive's, never a mix. Run the restore again to be sure of the archive's.")
      return
    }
    const current = await this.d.catalog.byId(staging.id)
    const switched = existing && current && samePlacement(current.placement, staging.placement) && current.tier === staging.tier
    if (switched) {
      // Killed after the switch: the restore is done, only the old room may be left.
      await this.removeRoom({ ...existing, tier: (op.params.previous as { tier: Tier }).tier, placement: (op.params.previous as { placement: Placement }).placement }, staging.tier !== 'pooled').catch(() => undefined)
      await this.d.operations.finish(op.id, 'done', null, undefined, undefined, 'done')
      return
    }
    await this.removeRoom(staging, Boolean(existing && existing.tier !== 'pooled'))
    if (!existing) await this.d.catalog.deleteTenantRow(staging.id)
    await this.d.operations.finish(op.id, 'rolled_back', 'The restore did not finish; what it had loaded was removed.')
  }

  private removeRoom(tenant: Tenant, keepRole: boolean): Promise<string[]> {
    return removeTenantRoom(this.d.dataPlane, tenant, keepRole)
  }


  /** Where a restore loads: the tier's own placement, or beside the existing tenant's when replacing. */
  private stagingPlacement(id: string, tier: Tier, server: string, existing: Tenant | null): Placement {
    const naming = this.d.dataPlane.opts.naming
    const base = TIER_STRATEGIES[tier].placement(id, this.d.dataPlane.server(server), naming)
    if (!existing || tier === 'pooled') return base
    // A name the existing room does not have: `_r` and a short random suffix.
    const suffix = `_r${randomUUID().slice(0, 6)}`
    return tier === 'schema' ? { ...base, schema: `${naming.tenantSchema(id)}${suffix}` } : { ...base, database: `${naming.tenantDatabase(id)}${suffix}` }
  }

  private async pickServer(name: string, explicit: boolean): Promise<string> {
    if (this.d.dataPlane.serverNames().includes(name)) return name
    if (explicit) throw new TenantryError('SERVER_NOT_FOUND', `Server '${printable(name)}' is not registered; add it with 'tenantry servers add' or createTenantry's addServer.`, { status: 400 })
    return 'main'
  }

  // ---- erase ---------------------------------------------------------------------------------

  /**
   * Erase a deleted tenant for good and prove it: every row, schema, database, role, catalog entry
   * and archive file of it removed, its data key destroyed (its encrypted archives elsewhere become
   * unreadable), then every tenant table of every server scanned for its id. The certificate is
   * kept in the catalog. Only a deleted tenant unless `force`.
   */
  async erase(slugOrId: string, opts: { force?: boolean; startedBy?: string; onStart?: (operationId: string) => void } = {}): Promise<ErasureCertificate> {
    const tenant = await this.mustFind(slugOrId)
    if (tenant.status === 'provisioning') throw new TenantryError('CONFLICT', `Tenant '${tenant.slug}' is provisioning; it cannot be erased now.`)
    if (tenant.status !== 'deleted' && !opts.force) {
      throw new TenantryError('CONFLICT', `Tenant '${tenant.slug}' is ${tenant.status}: delete it first ('tenants delete ${tenant.slug}'), or erase with --force.`, { details: { status: tenant.status } })
    }
    const op = await this.d.operations.start('erase', { tenantId: tenant.id, slug: tenant.slug, params: { tenant }, step: 'inventory', startedBy: opts.startedBy })
    opts.onStart?.(op.id)
    return this.d.operations.holding(() => this.runErase(op, tenant))
  }

  private async runErase(op: Operation, tenant: Tenant): Promise<ErasureCertificate> {
    const progress = op.progress as { before?: ErasureCertificate['scan']; removed?: string[]; archives?: ErasureCertificate['archives']; startedAt?: string }
    const startedAt = progress.startedAt ?? op.createdAt.toISOString()
    const before = progress.before ?? (await this.scan(tenant))
    await this.d.operations.step(op.id, 'remove', { before, startedAt })
    await faultPoint('erase:remove')
    const removed = progress.removed ?? []
    if (await this.d.catalog.byId(tenant.id)) {
      removed.push(...(await this.removeRoom(tenant, false)))
      const domains = await this.d.catalog.domainsOf(tenant.id)
      await this.d.catalog.deleteTenantRow(tenant.id)
      removed.push(`catalog row of '${tenant.slug}'${domains.length ? ` and domains ${domains.join(', ')}` : ''}`)
    }
    if (this.d.objectStore) {
      // Idempotent: a resumed erasure removes what is left and finds nothing the second time.
      const n = await this.d.objectStore.removeTenant(tenant)
      if (n > 0) removed.push(`${n} objects under tenants/${tenant.id}/ in object storage`)
    }
    const archives = progress.archives ?? []
    for (const b of (await this.d.admin.query<{ id: string; path: string; encrypted: boolean }>(...args(sql.backupsOf(tenant.id)))).rows) {
      if (isS3Url(b.path)) {
        archives.push({ path: b.path, encrypted: b.encrypted, action: await this.eraseS3Archive(b.path) })
        continue
      }
      const present = existsSync(b.path)
      if (present) rmSync(b.path, { force: true })
      archives.push({ path: b.path, encrypted: b.encrypted, action: present ? 'file deleted' : 'file not found here (moved or already deleted)' })
    }
    await this.d.admin.query(...args(sql.deleteBackupRows(tenant.id)))
    const usage = await this.d.admin.query(...args(sql.deleteUsageRows(tenant.id)))
    if (usage.rowCount > 0) removed.push(`${usage.rowCount} usage rows from tenantry.usage`)
    await this.d.operations.step(op.id, 'shred', { before, startedAt, removed, archives })
    await faultPoint('erase:shred')
    const destroyedAt = await this.keys.destroy(tenant.id)
    await this.d.operations.step(op.id, 'verify', { before, startedAt, removed, archives })
    const after = await this.scan(tenant)
    const catalogRows = (await this.d.admin.query<{ t: string; n: string | number }>(...args(sql.catalogRowsOf(tenant.id)))).rows.map((r) => ({ table: r.t, after: Number(r.n) }))
    const objects = await this.objectsLeft(tenant)
    const key = (s: { server: string; database: string; table: string }) => `${s.server}/${s.database}/${s.table}`
    const afterBy = new Map(after.map((s) => [key(s), s.after]))
    const scan = [...new Map([...before, ...after].map((s) => [key(s), s])).values()].map((s) => ({
      server: s.server, database: s.database, table: s.table,
      before: before.find((b) => key(b) === key(s))?.before ?? 0,
      after: afterBy.get(key(s)) ?? 0,
    }))
    const rowsAfter = scan.reduce((n, s) => n + s.after, 0) + catalogRows.reduce((n, c) => n + c.after, 0)
    const certificate: ErasureCertificate = {
      certificateId: randomUUID(),
      operationId: op.id,
      tenant: { id: tenant.id, slug: tenant.slug, tier: tenant.tier, placement: tenant.placement },
      startedAt,
      completedAt: new Date().toISOString(),
      removed,
      scan,
      catalog: catalogRows,
      objects,
      archives,
      cryptoShredding: {
        dataKeyDestroyedAt: destroyedAt?.toISOString() ?? null,
        statement: destroyedAt
          ? "The tenant's archive data key was destroyed: every encrypted archive of this tenant, wherever a copy is kept, can no longer be decrypted."
          : 'The tenant never had an archive data key: it had no encrypted archives. Unencrypted archive files outside the paths listed were not reachable by this erasure.',
      },
      rowsBefore: scan.reduce((n, s) => n + s.before, 0),
      rowsAfter,
      verified: rowsAfter === 0 && objects.every((o) => !o.existsAfter),
    }
    await this.d.admin.transaction(async (tx) => {
      await tx.query(...args(sql.insertCertificate({ id: certificate.certificateId, tenantId: tenant.id, slug: tenant.slug, operationId: op.id, certificate })))
      await this.d.operations.finish(op.id, certificate.verified ? 'done' : 'failed', certificate.verified ? null : 'Rows or objects of the tenant were found after erasure; see the certificate.', { certificateId: certificate.certificateId }, tx, 'certificate')
    })
    return certificate
  }

  /**
   * Delete one archive object of an erased tenant from S3, and say what happened for the
   * certificate. An object this process cannot reach (no S3 configuration, an error) is not
   * deleted and the certificate says so: an encrypted one is still unreadable once the data key is
   * destroyed; an unencrypted one must be deleted by hand.
   */
  private async eraseS3Archive(url: string): Promise<string> {
    try {
      const loc = parseS3Url(url)
      const sdk = await this.s3Sdk(url)
      if (!(await s3ObjectExists(sdk, loc))) return 'S3 object not found (moved or already deleted)'
      await s3DeleteObject(sdk, loc)
      if (await s3ObjectExists(sdk, loc)) return 'S3 object still present after DeleteObject: delete it by hand'
      return 'S3 object deleted (in a versioned bucket, earlier versions stay until removed by hand or a lifecycle rule)'
    } catch (err) {
      return `S3 object NOT deleted: ${(err as TenantryError).code ?? 'ERROR'}: ${(err as Error).message}`
    }
  }

  /** Rows of the tenant id in every table with a tenant_id column, in every database of every server. */
  private async scan(tenant: Tenant): Promise<ErasureCertificate['scan']> {
    const out: ErasureCertificate['scan'] = []
    const tenants = await this.d.catalog.list()
    for (const name of this.d.dataPlane.serverNames()) {
      const driver = this.d.dataPlane.driver(name)
      const databases = new Set([this.d.dataPlane.server(name).mainDatabase, ...tenants.filter((t) => t.tier === 'database' && t.placement.server === name).map((t) => t.placement.database)])
      if (tenant.tier === 'database' && tenant.placement.server === name && (await driver.databaseExists(tenant.placement.database))) databases.add(tenant.placement.database)
      for (const database of databases) {
        const admin = driver.admin(database)
        for (const t of (await admin.query<{ schema: string; table: string }>(sql.TABLES_WITH_TENANT_ID.text)).rows) {
          const c = sql.countTenantRows(t.schema, t.table, tenant.id)
          const n = Number((await admin.query<{ n: string | number }>(c.text, c.values)).rows[0].n)
          out.push({ server: name, database, table: `${t.schema}.${t.table}`, before: n, after: n })
        }
      }
    }
    return out
  }

  private async objectsLeft(tenant: Tenant): Promise<ErasureCertificate['objects']> {
    const naming = this.d.dataPlane.opts.naming
    const driver = this.d.dataPlane.driver(tenant.placement.server)
    const main = driver.admin(this.d.dataPlane.server(tenant.placement.server).mainDatabase)
    const objects: ErasureCertificate['objects'] = []
    if (tenant.tier === 'schema') {
      const r = await main.query('SELECT 1 FROM pg_namespace WHERE nspname = $1', [tenant.placement.schema])
      objects.push({ object: `schema ${tenant.placement.schema}`, existsAfter: r.rowCount > 0 })
    }
    if (tenant.tier === 'database') objects.push({ object: `database ${tenant.placement.database}`, existsAfter: await driver.databaseExists(tenant.placement.database) })
    if (tenant.tier !== 'pooled') {
      const r = await main.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [naming.tenantRole(tenant.id)])
      objects.push({ object: `role ${naming.tenantRole(tenant.id)}`, existsAfter: r.rowCount > 0 })
    }
    if (this.d.objectStore) objects.push({ object: `object storage prefix tenants/${tenant.id}/`, existsAfter: await this.d.objectStore.hasObjects(tenant) })
    return objects
  }

  /** Erasure certificates kept in the catalog (of one tenant slug or id). */
  async certificates(slugOrId?: string): Promise<(ErasureCertificate | SubjectErasureCertificate)[]> {
    const filter = slugOrId === undefined ? {} : isUuid(slugOrId) ? { tenantId: slugOrId } : { slug: slugOrId }
    const res = await this.d.admin.query<{ certificate: ErasureCertificate | SubjectErasureCertificate | string }>(...args(sql.certificatesOf(filter)))
    return res.rows.map((r) => (typeof r.certificate === 'string' ? JSON.parse(r.certificate) : r.certificate))
  }

  // ---- GDPR export and data subjects ------------------------------------------------------

  /**
   * Export a tenant's rows (Art. 20) as JSON lines or CSV, one file per table and a manifest, from
   * one consistent snapshot; with `subject`, only the rows whose marked columns equal it.
   */
  async export(slugOrId: string, opts: ExportOptions): Promise<ExportResult> {
    if (!EXPORT_FORMATS.includes(opts?.format)) throw new TenantryError('VALIDATION_FAILED', `Export format '${printable(String(opts?.format))}' is not one of ${EXPORT_FORMATS.join(', ')}.`)
    if (opts.subject !== undefined && (typeof opts.subject !== 'string' || opts.subject.length === 0 || opts.subject.length > 1000)) {
      throw new TenantryError('VALIDATION_FAILED', 'A subject value must be 1–1000 characters.')
    }
    const tenant = await this.mustFind(slugOrId)
    const room = this.roomOf(tenant)
    const base = opts.to ?? process.env.TENANTRY_BACKUP_DIR ?? this.d.options.backupDir ?? './backups'
    if (isS3Url(base)) {
      throw new TenantryError('VALIDATION_FAILED', `An export is a directory of files and is written to a local directory, not to '${printable(base)}'; give it one with --to (export's \`to\`).`)
    }
    const path = resolvePath(join(base, `${tenant.slug}-export${opts.subject !== undefined ? '-subject' : ''}-${new Date().toISOString().replace(/[:.]/g, '-')}`))
    const partial = `${path}.partial`
    const op = await this.d.operations.start('export', { tenantId: tenant.id, slug: tenant.slug, params: { path, format: opts.format, subject: opts.subject !== undefined }, step: 'snapshot', startedBy: opts.startedBy })
    opts.onStart?.(op.id)
    return this.d.operations.holding(async () => {
      try {
        mkdirSync(partial, { recursive: true })
        const tables = await this.d.dataPlane.driver(room.server).copyTransaction(room.database, 'snapshot', async (tx) => {
          await tx.query(...args(sql.pointAtTenant(tenantToken(this.d.dataPlane.tenantKey, tenant.id))))
          const marks = opts.subject !== undefined ? await subjectColumns(tx, room.schema) : null
          if (marks && marks.size === 0) {
            throw new TenantryError('CONFIG_INVALID', `No column of ${tenant.slug}'s tables is marked as identifying a person: add COMMENT ON COLUMN <table>.<column> IS '${SUBJECT_MARK}' in a migration (docs/portability.md).`)
          }
          if (opts.subject !== undefined) await tx.query(...args(sql.pointAtSubject(opts.subject)))
          const out: ExportResult['tables'] = []
          for (const table of await tenantTables(tx, room.schema)) {
            if (marks && !marks.has(table.name)) continue
            const file = `${table.name}.${opts.format}`
            await faultPoint('export:table')
            const r = await exportTable(tx, { schema: room.schema, table, tenantId: tenant.id, format: opts.format, subjectColumns: marks?.get(table.name), file: join(partial, file) })
            out.push({ name: table.name, file, ...r })
          }
          return out
        })
        const rows = tables.reduce((n, t) => n + t.rows, 0)
        const manifest = {
          format: `tenantry-export-${opts.format}`, tenantryVersion: this.d.version, exportedAt: new Date().toISOString(),
          tenant: { id: tenant.id, slug: tenant.slug, name: tenant.name }, subject: opts.subject !== undefined ? { columns: SUBJECT_MARK } : null,
          tables, rows,
        }
        writeFileSync(join(partial, 'manifest.json'), JSON.stringify(manifest, null, 2))
        renameSync(partial, path)
        await this.d.operations.finish(op.id, 'done', null, { path, rows }, undefined, 'done')
        return { path, slug: tenant.slug, format: opts.format, subject: opts.subject !== undefined, rows, tables, operationId: op.id }
      } catch (err) {
        await this.rollBackExport(op, path).catch(() => undefined)
        throw err
      }
    })
  }

  private async rollBackExport(op: Operation, path: string): Promise<void> {
    rmSync(`${path}.partial`, { recursive: true, force: true })
    await this.d.operations.finish(op.id, 'rolled_back', 'The export did not finish; its partial directory was removed. Run it again.')
  }

  /**
   * Erase one data subject's rows (Art. 17) from a tenant: every row whose marked columns equal
   * the value, deleted in one transaction and counted again to verify; the certificate (naming the
   * subject only by hash) is kept with the tenant's erasure certificates.
   */
  async eraseSubject(slugOrId: string, subject: string, opts: { startedBy?: string; onStart?: (operationId: string) => void } = {}): Promise<SubjectErasureCertificate> {
    if (typeof subject !== 'string' || subject.length === 0 || subject.length > 1000) throw new TenantryError('VALIDATION_FAILED', 'A subject value must be 1–1000 characters.')
    const tenant = await this.mustFind(slugOrId)
    const room = this.roomOf(tenant)
    const subjectSha256 = createHash('sha256').update(subject).digest('hex')
    const ctx = this.d.dataPlane.driver(room.server)
    const marks = await subjectColumns(ctx.admin(room.database), room.schema)
    if (marks.size === 0) throw new TenantryError('CONFIG_INVALID', `No column of ${tenant.slug}'s tables is marked as identifying a person: add COMMENT ON COLUMN <table>.<column> IS '${SUBJECT_MARK}' in a migration (docs/portability.md).`)
    const op = await this.d.operations.start('erase-subject', { tenantId: tenant.id, slug: tenant.slug, params: { subjectSha256 }, step: 'erase', startedBy: opts.startedBy })
    opts.onStart?.(op.id)
    return this.d.operations.holding(async () => {
      const tables = (await tenantTables(ctx.admin(room.database), room.schema)).filter((t) => marks.has(t.name)).reverse()
      const report = await ctx.copyTransaction(room.database, 'write', async (tx) => {
        await tx.query(...args(sql.pointAtTenant(tenantToken(this.d.dataPlane.tenantKey, tenant.id))))
        await tx.query(...args(sql.pointAtSubject(subject)))
        const out: SubjectErasureCertificate['tables'] = []
        for (const t of tables) {
          const cols = marks.get(t.name)!
          const before = Number((await tx.query<{ n: string }>(...args(sql.subjectRows('COUNT', room.schema, t.name, tenant.id, cols)))).rows[0].n)
          await tx.query(...args(sql.subjectRows('DELETE', room.schema, t.name, tenant.id, cols)))
          const after = Number((await tx.query<{ n: string }>(...args(sql.subjectRows('COUNT', room.schema, t.name, tenant.id, cols)))).rows[0].n)
          out.push({ table: `${room.schema}.${t.name}`, columns: cols, before, after })
        }
        return out
      }).catch(async (err) => {
        await this.d.operations.finish(op.id, 'failed', (err as Error).message)
        throw err
      })
      const rowsAfter = report.reduce((n, t) => n + t.after, 0)
      const certificate: SubjectErasureCertificate = {
        kind: 'subject', certificateId: randomUUID(), operationId: op.id, tenant: { id: tenant.id, slug: tenant.slug }, subjectSha256,
        completedAt: new Date().toISOString(), tables: report, rowsBefore: report.reduce((n, t) => n + t.before, 0), rowsAfter, verified: rowsAfter === 0,
      }
      await this.d.admin.transaction(async (tx) => {
        await tx.query(...args(sql.insertCertificate({ id: certificate.certificateId, tenantId: tenant.id, slug: tenant.slug, operationId: op.id, certificate })))
        await this.d.operations.finish(op.id, 'done', null, { certificateId: certificate.certificateId }, tx, 'done')
      })
      return certificate
    })
  }

  // ---- operations ----------------------------------------------------------------------------

  /**
   * Finish an operation of this part whose process died: a backup is rolled back (its partial
   * files removed), a restore rolled back (its staging room removed; a tenant already switched
   * stays switched), an erasure goes forward (every step is idempotent).
   */
  async resume(op: Operation): Promise<void> {
    if (op.kind === 'backup') return this.rollBackBackup(op)
    if (op.kind === 'export') return this.rollBackExport(op, String(op.params.path))
    if (op.kind === 'erase-subject') {
      // One transaction: it committed whole or not at all; the value is not kept to run it again.
      await this.d.operations.finish(op.id, 'failed', 'Interrupted: the subject\'s rows were deleted in one transaction, wholly or not at all. Run the erasure again to be sure (it reports 0 rows if they are gone).')
      return
    }
    if (op.kind === 'restore') {
      const p = op.params as { tier: Tier; placement: Placement; previous: { tier: Tier; placement: Placement } | null; spool?: string }
      // The local copy of an archive downloaded from S3 (its own temporary directory).
      if (p.spool !== undefined) rmSync(dirname(p.spool), { recursive: true, force: true })
      const current = await this.d.catalog.byId(op.tenantId!)
      const previous = p.previous && current ? { ...current, tier: p.previous.tier, placement: p.previous.placement } : null
      const staging = current ? { ...current, tier: p.tier, placement: p.placement } : ({ id: op.tenantId!, slug: op.slug!, tier: p.tier, placement: p.placement } as Tenant)
      return this.d.operations.holding(() => this.rollBackRestore(op, staging, previous))
    }
    if (op.kind === 'erase') {
      const recorded = op.params.tenant as Tenant
      const tenant = { ...recorded, createdAt: new Date(recorded.createdAt), updatedAt: new Date(recorded.updatedAt), deletedAt: null }
      await this.d.operations.holding(() => this.runErase(op, tenant))
    }
  }

  /** The operation kinds {@link resume} finishes. */
  readonly kinds: readonly string[] = ['backup', 'restore', 'erase', 'export', 'erase-subject']

  private roomOf(tenant: Tenant): Room {
    const target: MigrationTarget = this.d.dataPlane.migrationTarget(tenant)
    return { server: tenant.placement.server, database: target.database, schema: target.schema }
  }

  private archivePath(tenant: Tenant, to: string | undefined): string {
    const dest = to ?? process.env.TENANTRY_BACKUP_DIR ?? this.d.options.backupDir ?? './backups'
    if (typeof dest !== 'string' || dest.length === 0) throw new TenantryError('VALIDATION_FAILED', 'A backup target must be a file or directory path.')
    const asDir = dest.endsWith('/') || (existsSync(dest) && statSync(dest).isDirectory()) || to === undefined
    const dir = asDir ? dest : resolvePath(dest, '..')
    try {
      mkdirSync(dir, { recursive: true })
    } catch (err) {
      throw new TenantryError('VALIDATION_FAILED', `Cannot create the backup directory '${dir}' (${(err as NodeJS.ErrnoException).code}).`, { cause: err })
    }
    return asDir ? resolvePath(join(dest, `${tenant.slug}-${new Date().toISOString().replace(/[:.]/g, '-')}.tar`)) : resolvePath(dest)
  }

  private mustFind(slugOrId: string): Promise<Tenant> {
    return mustFindTenant(this.d.catalog, slugOrId)
  }
}

/**
 * Remove one room of a tenant (its rows in a pooled room, its schema or database otherwise);
 * `keepRole` when another room of the tenant still uses its role. Restores and moves remove the
 * room they left with it.
 */
export async function removeTenantRoom(dataPlane: DataPlane, tenant: Tenant, keepRole: boolean): Promise<string[]> {
  const ctx = dataPlane.tierContext(tenant.placement.server)
  if (tenant.tier === 'pooled') {
    const tables = await tenantTables(ctx.driver.admin(tenant.placement.database), dataPlane.opts.pooledSchema)
    return TIER_STRATEGIES.pooled.remove(ctx, tenant, tables.map((t) => t.name).reverse())
  }
  if (!keepRole) return TIER_STRATEGIES[tenant.tier].remove(ctx, tenant, [])
  if (tenant.tier === 'schema') {
    await ctx.driver.admin(tenant.placement.database).transaction(async (tx) => {
      await tx.exec(`DROP SCHEMA IF EXISTS ${quoteIdent(tenant.placement.schema!)} CASCADE`)
      await tx.query('DELETE FROM tenantry.migrations WHERE target = $1', [tenant.placement.schema])
    })
    return [`schema ${tenant.placement.schema}`]
  }
  await ctx.driver.dropDatabase(tenant.placement.database)
  return [`database ${tenant.placement.database}`]
}

function samePlacement(a: Placement, b: Placement): boolean {
  return a.server === b.server && a.database === b.database && (a.schema ?? null) === (b.schema ?? null)
}


function args(s: { text: string; values: unknown[] }): [string, unknown[]] {
  return [s.text, s.values]
}

/** The plugin of a ledger version (`<plugin>:<NNNN>`), or null for the app's. */
function pluginOf(version: string): string | null {
  const i = version.lastIndexOf(':')
  return i < 0 ? null : version.slice(0, i)
}

/**
 * The pacer of one backup (null: not paced). Like a fleet migration's (lifecycle/pacer.ts), with
 * a backup's own settings: decisions every 200 ms; a server below 20 % CPU with the backup held is
 * nobody else's, so the backup runs at its whole width there; on a busy one it starts at a
 * tenth of one stream, takes at most a fifth of what the users leave idle and never more than one
 * stream (its backends' time counts as idle where they are lowered, and several lowered backends
 * at once still made other tenants' p99 1.5–2.2× in bench/portability.ts, one at most 1.1–1.35×). The baseline is taken
 * before the snapshot is, with nothing of the backup running.
 */
async function backupPacer(driver: ServerDriver, server: string, width: number, pace: boolean | PaceOptions): Promise<LoadPacer | null> {
  if (pace === false || !driver.probe) return null
  const pacer = new LoadPacer(() => ({ cpuTimes: driver.cpuTimes && (() => driver.cpuTimes!()), probe: driver.probe && (() => driver.probe!()) }), width, {
    windowMs: 200, freeBelow: 0.2, startLevel: 0.1, maxIdleShare: 0.2, busyMaxLevel: 1, ...(typeof pace === 'object' ? pace : {}),
  })
  await pacer.start(server)
  return pacer
}
