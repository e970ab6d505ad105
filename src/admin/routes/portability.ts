import { createReadStream, existsSync, readdirSync, statSync } from 'node:fs'
import { basename, join } from 'node:path'
import type { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import type { FastifyReply, FastifyRequest } from 'fastify'
import * as tar from 'tar-stream'
import { TenantryError } from '../../core/errors.ts'
import { TIERS, type Tier } from '../../core/types.ts'
import { tenantJson } from '../../cli/format.ts'
import { EXPORT_FORMATS, type BackupRecord, type ErasureCertificate, type ExportFormat, type SubjectErasureCertificate, type PortabilityProgress } from '../../portability/index.ts'
import type { AdminRoutes } from '../context.ts'
import { startOperation } from '../operation-start.ts'
import { SERVER_PATTERN, SLUG_PATTERN, UUID_PATTERN, errors, slugParam } from '../schemas.ts'

const TAG = ['backups']
const started = { 200: { type: 'object', additionalProperties: true }, 202: { type: 'object', additionalProperties: true } }
const limitQuery = { type: 'integer', minimum: 1, maximum: 1000, default: 100 } as const
const backupParams = {
  type: 'object', required: ['slug', 'id'], additionalProperties: false,
  properties: { slug: slugParam.properties.slug, id: { type: 'string', pattern: UUID_PATTERN, description: 'backup id' } },
} as const
const backupSchema = {
  type: 'object',
  properties: {
    id: { type: 'string' }, tenantId: { type: 'string' }, slug: { type: 'string' }, tier: { type: 'string', enum: [...TIERS] },
    path: { type: 'string' }, rows: { type: 'integer' }, bytes: { type: 'integer' }, encrypted: { type: 'boolean' }, compressed: { type: 'boolean' },
    operationId: { type: ['string', 'null'] }, createdAt: { type: 'string', format: 'date-time' },
    download: { type: 'string', description: 'where to download the archive (operator role)' },
  },
} as const

/** A backup with the URL its archive downloads from. */
const backupJson = (b: BackupRecord) => ({ ...b, download: `tenants/${b.slug}/backups/${b.id}/archive` })

/** Progress of a backup or restore as a percent: verify is the first half of a restore, load the second; 100 only when it is recorded done. */
function percentOf(p: PortabilityProgress): number {
  const share = p.tables === 0 ? 1 : p.tablesDone / p.tables
  const base = p.phase === 'verify' ? share * 50 : p.phase === 'load' ? 50 + share * 49 : share * 99
  return Math.min(99, Math.floor(base))
}

/** Stream a file as a download (already compressed: no second gzip). */
function sendFile(reply: FastifyReply, path: string, type: string): FastifyReply {
  return reply.header('content-disposition', `attachment; filename="${basename(path)}"`).header('cache-control', 'no-store')
    .header('content-length', statSync(path).size).type(type).send(createReadStream(path))
}

/** An export directory (manifest and one file per table) as one tar stream, a file at a time. */
function tarOf(dir: string): Readable {
  const pack = tar.pack()
  void (async () => {
    for (const name of readdirSync(dir).sort()) {
      const file = join(dir, name)
      const entry = pack.entry({ name: `${basename(dir)}/${name}`, size: statSync(file).size })
      await pipeline(createReadStream(file), entry)
    }
    pack.finalize()
  })().catch((err) => pack.destroy(err as Error))
  return pack as unknown as Readable
}

/**
 * Backups, restores, GDPR exports and erasures (docs/portability.md) through `tenantry.portability`,
 * the calls `tenantry backup|restore|export|erase` make, each a durable operation answered with 202
 * and its id. Archives and exports are written only into the directories the plugin was given
 * (`backups.targets`, or the library's default); downloads stream what the catalog recorded.
 */
export const portabilityRoutes: AdminRoutes = (app, ctx) => {
  const { tenantry } = ctx
  const targets = Object.keys(ctx.backupTargets)
  const targetField = targets.length ? { target: { type: 'string', enum: targets, description: 'a directory named in the plugin\'s backups.targets (default: the backup directory)' } } : {}
  const dirOf = (target?: string) => (target === undefined ? undefined : `${ctx.backupTargets[target].replace(/\/+$/, '')}/`)
  const slugOf = (r: FastifyRequest) => (r.params as { slug: string }).slug
  const actor = (r: FastifyRequest) => r.admin.actor
  const track = (id: () => string | undefined) => (p: PortabilityProgress) => { const op = id(); if (op) ctx.liveProgress.set(op, percentOf(p)) }

  /** A backup of the tenant the path names (a purged tenant's backups are still found by slug), or 404. */
  async function mustFindBackup(request: FastifyRequest): Promise<BackupRecord> {
    const { slug, id } = request.params as { slug: string; id: string }
    const backup = (await tenantry.portability.listBackups({ tenant: slug, limit: 100_000 })).find((b) => b.id === id.toLowerCase())
    if (!backup) throw new TenantryError('NOT_FOUND', `Tenant '${slug}' has no backup '${id}'.`, { details: { field: 'id' } })
    return backup
  }

  app.get('/backups', {
    schema: {
      tags: TAG, summary: 'Archives written, newest first',
      querystring: { type: 'object', additionalProperties: false, properties: { tenant: { type: 'string', pattern: SLUG_PATTERN }, limit: limitQuery } },
      response: { 200: { type: 'array', items: backupSchema }, ...errors(404) },
    },
  }, async function listBackups(request) {
    const q = request.query as { tenant?: string; limit: number }
    return (await tenantry.portability.listBackups(q)).map(backupJson)
  })

  app.get('/tenants/:slug/backups', {
    schema: {
      tags: TAG, summary: "A tenant's archives, newest first", params: slugParam,
      querystring: { type: 'object', additionalProperties: false, properties: { limit: limitQuery } },
      response: { 200: { type: 'array', items: backupSchema }, ...errors(404) },
    },
  }, async function tenantBackups(request) {
    return (await tenantry.portability.listBackups({ tenant: slugOf(request), limit: (request.query as { limit: number }).limit })).map(backupJson)
  })

  app.post('/tenants/:slug/backups', {
    schema: {
      tags: TAG, summary: 'Back up a tenant (a durable operation): 202 with its operation id', params: slugParam,
      body: {
        type: 'object', additionalProperties: false,
        properties: { ...targetField, gzip: { type: 'boolean', default: true }, encrypt: { type: 'boolean', description: 'default: when a master key is set' }, pace: { type: 'boolean', default: false, description: "pace the copy by the server's load, its backends at the lowest priority where the server has the prioritize extension (default: full speed, like pg_dump)" } },
      },
      response: { ...started, ...errors(404, 409) },
    },
    config: { adminRole: 'operator' },
  }, async function backUp(request, reply) {
    const body = request.body as { target?: string; gzip: boolean; encrypt?: boolean; pace: boolean }
    let op: string | undefined
    return startOperation(ctx, request, reply, {
      run: (onStart) => tenantry.portability.backup(slugOf(request), {
        to: dirOf(body.target), gzip: body.gzip, encrypt: body.encrypt, pace: body.pace, startedBy: actor(request), onStart: (id) => { op = id; onStart(id) }, onProgress: track(() => op),
      }),
    })
  })

  app.get('/tenants/:slug/backups/:id/archive', {
    schema: { tags: TAG, summary: 'Download an archive (application/x-tar); the tenant\'s data leaves the server: operator role', params: backupParams, response: { 200: { description: 'the archive', content: { 'application/x-tar': { schema: { type: 'string', format: 'binary' } } } }, ...errors(404) } },
    config: { adminRole: 'operator' },
    compress: false,
  }, async function downloadBackup(request, reply) {
    const backup = await mustFindBackup(request)
    if (backup.path.startsWith('s3://')) {
      throw new TenantryError('NOT_FOUND', `Backup ${backup.id}'s archive is in S3 ('${backup.path}'), not on this server's disk: download it from the bucket, or restore it by id.`, { details: { field: 'id' } })
    }
    if (!existsSync(backup.path) || !statSync(backup.path).isFile()) {
      throw new TenantryError('NOT_FOUND', `Backup ${backup.id}'s archive '${basename(backup.path)}' is not on this server's disk (written elsewhere, or removed).`, { details: { field: 'id' } })
    }
    await ctx.tenantry.audit.append({ actor: actor(request), requestId: request.id, action: 'backup.download', tenantId: backup.tenantId, slug: backup.slug, details: { backupId: backup.id } })
    return sendFile(reply, backup.path, 'application/x-tar')
  })

  app.post('/tenants/:slug/backups/:id/restore', {
    schema: {
      tags: TAG, summary: 'Restore a backup (a durable operation, after the archive was verified whole): the same tenant, over it with replace, or a copy with as',
      params: backupParams,
      body: {
        type: 'object', additionalProperties: false,
        properties: {
          as: { type: 'string', pattern: SLUG_PATTERN, description: 'restore as a new tenant (new id)' },
          tier: { type: 'string', enum: [...TIERS] },
          server: { type: 'string', pattern: SERVER_PATTERN },
          replace: { type: 'boolean', default: false, description: 'restore over the existing tenant (atomic switch)' },
          forceResidency: { type: 'boolean', default: false },
        },
      },
      response: { ...started, ...errors(404, 409) },
    },
    config: { adminRole: 'admin' },
  }, async function restoreBackup(request, reply) {
    const backup = await mustFindBackup(request)
    const body = request.body as { as?: string; tier?: Tier; server?: string; replace: boolean; forceResidency: boolean }
    let op: string | undefined
    return startOperation(ctx, request, reply, {
      run: (onStart) => tenantry.portability.restore(backup.path, {
        ...body, startedBy: actor(request), onStart: (id) => { op = id; onStart(id) }, onProgress: track(() => op),
      }),
      done: (r) => ({ ...r, tenant: tenantJson(r.tenant) }),
    })
  })

  app.post('/tenants/:slug/exports', {
    schema: {
      tags: TAG, summary: "GDPR export (Art. 20) of every table, or one subject's rows: 202 with its operation id; download it at exports/{operationId}/archive",
      params: slugParam,
      body: {
        type: 'object', required: ['format'], additionalProperties: false,
        properties: { format: { type: 'string', enum: [...EXPORT_FORMATS] }, subject: { type: 'string', minLength: 1, maxLength: 1000, description: 'only the rows whose subject-marked columns equal this' }, ...targetField },
      },
      response: { ...started, ...errors(404, 409) },
    },
    config: { adminRole: 'operator' },
  }, async function exportTenant(request, reply) {
    const body = request.body as { format: ExportFormat; subject?: string; target?: string }
    return startOperation(ctx, request, reply, {
      run: (onStart) => tenantry.portability.export(slugOf(request), { format: body.format, subject: body.subject, to: dirOf(body.target), startedBy: actor(request), onStart }),
    })
  })

  app.get('/exports/:id/archive', {
    schema: { tags: TAG, summary: "Download a finished export's directory as one tar stream", params: { type: 'object', required: ['id'], additionalProperties: false, properties: { id: { type: 'string', pattern: UUID_PATTERN, description: 'the export\'s operation id' } } }, response: { 200: { description: 'the export', content: { 'application/x-tar': { schema: { type: 'string', format: 'binary' } } } }, ...errors(404, 409) } },
    config: { adminRole: 'operator' },
    compress: false,
  }, async function downloadExport(request, reply) {
    const id = (request.params as { id: string }).id.toLowerCase()
    const op = await tenantry.operations.get(id)
    if (!op || op.kind !== 'export') throw new TenantryError('NOT_FOUND', `No export has the operation id '${id}'.`, { details: { field: 'id' } })
    if (op.state !== 'done') throw new TenantryError('CONFLICT', `Export ${id} is ${op.state}; download it once it is done.`, { details: { state: op.state } })
    // The directory the library recorded when it started, never a path from the request.
    const dir = (op.params as { path?: string }).path
    if (!dir || !existsSync(dir) || !statSync(dir).isDirectory()) throw new TenantryError('NOT_FOUND', `Export ${id} is not on this server's disk (removed, or written elsewhere).`, { details: { field: 'id' } })
    await tenantry.audit.append({ actor: actor(request), requestId: request.id, action: 'export.download', tenantId: op.tenantId, slug: op.slug, details: { operationId: id } })
    return reply.header('content-disposition', `attachment; filename="${basename(dir)}.tar"`).header('cache-control', 'no-store').type('application/x-tar').send(tarOf(dir))
  })

  app.post('/tenants/:slug/erase', {
    schema: {
      tags: TAG, summary: 'Verified erasure (Art. 17) of a deleted tenant, or of one subject\'s rows: 202 with its operation id; the certificate at erasures',
      params: slugParam,
      body: {
        type: 'object', additionalProperties: false,
        properties: { force: { type: 'boolean', default: false, description: 'erase a tenant that was not deleted' }, subject: { type: 'string', minLength: 1, maxLength: 1000 } },
      },
      response: { ...started, ...errors(404, 409) },
    },
    config: { adminRole: 'admin' },
  }, async function eraseTenant(request, reply) {
    const slug = slugOf(request)
    const body = request.body as { force: boolean; subject?: string }
    if (body.subject !== undefined && body.force) throw new TenantryError('VALIDATION_FAILED', 'force applies to erasing a whole tenant; a subject\'s erasure keeps the tenant.', { details: { field: 'force', in: 'body', rule: 'exclusive' } })
    return startOperation<ErasureCertificate | SubjectErasureCertificate>(ctx, request, reply, {
      run: (onStart) => body.subject !== undefined
        ? tenantry.portability.eraseSubject(slug, body.subject, { startedBy: actor(request), onStart })
        : tenantry.portability.erase(slug, { force: body.force, startedBy: actor(request), onStart }),
    })
  })

  app.get('/erasures', {
    schema: {
      tags: TAG, summary: 'Erasure certificates kept in the catalog (a subject is named only by its sha256)',
      querystring: { type: 'object', additionalProperties: false, properties: { tenant: { type: 'string', pattern: SLUG_PATTERN } } },
      response: { 200: { type: 'array', items: { type: 'object', additionalProperties: true } }, ...errors() },
    },
  }, async function listErasures(request) {
    return tenantry.portability.certificates((request.query as { tenant?: string }).tenant)
  })
}
