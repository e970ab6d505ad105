/**
 * Issue 13, item 2: S3 as a backup target and restore source. A real S3-protocol server (s3rver on
 * loopback, started here; no mocks) and the catalog on real PostgreSQL and on PGlite: a pooled
 * tenant backed up to s3://…, listed, restored as a new tenant with the exact rows; a missing key,
 * an existing key, an unreachable bucket and a missing S3 configuration refused with their codes
 * and nothing changed; residency by s3:// prefix; erasure deleting the tenant's archive objects;
 * and (PostgreSQL) the real CLI killed with SIGKILL in the middle of a multipart upload, then
 * rolled back by `operations resume` with no object and no local file left.
 */
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { DeleteObjectCommand, HeadObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3'
import Fastify from 'fastify'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createTenantry, type Tenantry } from '../src/index.ts'
import { tenantryAdmin } from '../src/admin/plugin.ts'
import { adminTokens } from '../src/admin/tokens.ts'
import { backupTarget } from '../src/security/residency.ts'
import { S3_ENV } from '../src/storage/s3-client.ts'
import { backends, DEMO_MIGRATIONS, outcome, postgresAvailable, type Backend } from './helpers/backends.ts'
import { children, cli, CliProcess, show } from './helpers/cli-process.ts'
import { startS3, type S3Fixture } from './fixtures/s3-server.ts'

const DB_NAME = 'tenantry_test_portability_s3'
const PREFIX = 'tp_ps3'
const PG_UP = await postgresAvailable()
const MASTER = 'd4'.repeat(32)
const BUCKET = 'tenantry-backups'

interface Project { id: string; name: string }
interface Task { id: string; project_id: string; title: string; done: boolean }

function s3Suite(backend: Backend): void {
  describe.skipIf(!backend.enabled)(`backups in S3 (s3rver, catalog on ${backend.name})`, { timeout: 240_000 }, () => {
    let tenantry: Tenantry
    let url: string | undefined
    let s3: S3Fixture
    let raw: S3Client
    let dir: string
    let spool: string
    let migrations: string
    let env: Record<string, string>

    const keys = async (prefix = '') => ((await raw.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: prefix }))).Contents ?? []).map((o) => o.Key!).sort()
    const head = (key: string) => raw.send(new HeadObjectCommand({ Bucket: BUCKET, Key: key }))
    const projects = (slug: string) => tenantry.withTenant(slug, async () => (await tenantry.db.query<Project>('SELECT id, name FROM projects ORDER BY id')).rows)
    const tasks = (slug: string) => tenantry.withTenant(slug, async () => (await tenantry.db.query<Task>('SELECT id, project_id, title, done FROM tasks ORDER BY id')).rows)
    const backupOps = async () => (await tenantry.operations.list({ kind: 'backup', limit: 1000 })).map((o) => ({ state: o.state, path: o.params.path }))
    const keyOf = (s3url: string) => s3url.slice(`s3://${BUCKET}/`.length)

    beforeAll(async () => {
      s3 = await startS3(BUCKET)
      raw = new S3Client(s3.client)
      dir = mkdtempSync(join(tmpdir(), 'tenantry-portability-s3-'))
      spool = join(dir, 'spool')
      mkdirSync(spool)
      migrations = join(dir, 'migrations')
      mkdirSync(migrations)
      copyFileSync(join(DEMO_MIGRATIONS, '0001_projects_and_tasks.sql'), join(migrations, '0001_projects_and_tasks.sql'))
      url = await backend.url()
      tenantry = await createTenantry({
        ...(url ? { databaseUrl: url, rolePrefix: PREFIX } : { dataDir: 'memory' }),
        migrations, resumeOperations: false,
        observe: { metering: false, metrics: false, tracing: false },
        portability: { masterKey: MASTER, s3: s3.client, spoolDir: spool, backupRegions: { [`s3://${BUCKET}/eu/`]: 'eu' } },
      })
      await tenantry.provision({ slug: 'acme', tier: 'pooled' })
      await tenantry.provision({ slug: 'bystander', tier: 'pooled' })
      await tenantry.withTenant('acme', async () => {
        await tenantry.db.query("INSERT INTO projects (name) VALUES ('alpha'), ('tab\there'), ('ünïcødé ✓')")
        await tenantry.db.query("INSERT INTO tasks (project_id, title, done) VALUES (1, 'first', true), (2, 'second', false)")
      })
      await tenantry.withTenant('bystander', () => tenantry.db.query("INSERT INTO projects (name) VALUES ('theirs')"))
      env = {
        DATABASE_URL: url ?? '', TENANTRY_ROLE_PREFIX: PREFIX, TENANTRY_MIGRATIONS: migrations, TENANTRY_MASTER_KEY: MASTER, TENANTRY_SPOOL_DIR: spool,
        // The CLI's S3 client is configured the ordinary way: the AWS SDK's environment variables.
        AWS_ENDPOINT_URL_S3: s3.endpoint, AWS_REGION: 'us-east-1', AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER',
        AWS_REQUEST_CHECKSUM_CALCULATION: 'WHEN_REQUIRED', AWS_RESPONSE_CHECKSUM_VALIDATION: 'WHEN_REQUIRED',
      }
    }, 240_000)

    afterAll(async () => {
      for (const c of children) c.kill('SIGKILL')
      await tenantry?.close()
      raw?.destroy()
      await s3?.close()
      await backend.cleanUp()
      if (dir) rmSync(dir, { recursive: true, force: true })
    }, 120_000)

    it('backs a pooled tenant up to an s3:// prefix: <prefix><slug>-<time>.tar, the URL recorded, no local file left', async () => {
      const r = await tenantry.portability.backup('acme', { to: `s3://${BUCKET}/nightly/` })
      expect(r.path).toMatch(new RegExp(`^s3://${BUCKET}/nightly/acme-\\d{4}-\\d\\d-\\d\\dT\\d\\d-\\d\\d-\\d\\d-\\d{3}Z\\.tar$`))
      expect(r).toMatchObject({ slug: 'acme', tier: 'pooled', rows: 5, encrypted: true, compressed: true, tables: [{ name: 'projects', rows: 3 }, { name: 'tasks', rows: 2 }] })
      expect(await keys()).toEqual([keyOf(r.path)])
      const object = await head(keyOf(r.path))
      expect([object.ContentLength, object.ContentType, object.Metadata]).toEqual([r.bytes, 'application/x-tar', { 'tenantry-operation': r.operationId }])
      expect(readdirSync(spool)).toEqual([])
      const listed = await tenantry.portability.listBackups({ tenant: 'acme' })
      expect(listed.map((b) => [b.path, b.rows, b.bytes, b.encrypted])).toEqual([[r.path, 5, r.bytes, true]])
      expect(await backupOps()).toEqual([{ state: 'done', path: r.path }])
    })

    it('restores the S3 archive as a new tenant in another tier with the exact rows; the download is removed', async () => {
      const [b] = await tenantry.portability.listBackups({ tenant: 'acme' })
      const r = await tenantry.portability.restore(b.path, { as: 'acme-copy', tier: 'schema' })
      expect([r.tenant.slug, r.tenant.tier, r.rows, r.tables]).toEqual(['acme-copy', 'schema', 5, [{ name: 'projects', rows: 3 }, { name: 'tasks', rows: 2 }]])
      expect(await projects('acme-copy')).toEqual(await projects('acme'))
      expect((await projects('acme-copy')).map((p) => p.name)).toEqual(['alpha', 'tab\there', 'ünïcødé ✓'])
      expect(await tasks('acme-copy')).toEqual([
        { id: '1', project_id: '1', title: 'first', done: true },
        { id: '2', project_id: '2', title: 'second', done: false },
      ])
      const op = (await tenantry.operations.list({ kind: 'restore', limit: 10 }))[0]
      expect([op.state, op.params.path, op.params.spool === undefined]).toEqual(['done', b.path, false])
      expect(readdirSync(spool)).toEqual([])
    })

    it('refuses a missing key (NOT_FOUND), a prefix and a malformed URL (VALIDATION_FAILED): no tenant, no operation, no temporary file', async () => {
      const tenants = (await tenantry.catalog.list()).length
      const restores = (await tenantry.operations.list({ kind: 'restore', limit: 100 })).length
      expect(await outcome(tenantry.portability.restore(`s3://${BUCKET}/nightly/nope.tar`, { as: 'ghost' }))).toBe('NOT_FOUND')
      expect(await outcome(tenantry.portability.restore(`s3://${BUCKET}/nightly/`, { as: 'ghost' }))).toBe('VALIDATION_FAILED')
      expect(await outcome(tenantry.portability.restore('s3://Not_A_Bucket/x.tar', { as: 'ghost' }))).toBe('VALIDATION_FAILED')
      expect(await outcome(tenantry.portability.backup('acme', { to: `s3://${BUCKET}/a/../b.tar` }))).toBe('VALIDATION_FAILED')
      expect(await outcome(tenantry.portability.export('acme', { format: 'jsonl', to: `s3://${BUCKET}/exports/` }))).toBe('VALIDATION_FAILED')
      expect(await tenantry.operations.list({ kind: 'export' })).toEqual([])
      expect(await tenantry.catalog.bySlug('ghost')).toBeNull()
      expect((await tenantry.catalog.list()).length).toBe(tenants)
      expect((await tenantry.operations.list({ kind: 'restore', limit: 100 })).length).toBe(restores)
      expect(readdirSync(spool)).toEqual([])
    })

    it('writes a full key like a file path, and refuses to overwrite it (CONFLICT): the object, the catalog and the operations unchanged', async () => {
      const to = `s3://${BUCKET}/fixed/acme.tar`
      const first = await tenantry.portability.backup('acme', { to, gzip: false })
      expect([first.path, first.compressed]).toEqual([to, false])
      const before = await head('fixed/acme.tar')
      const records = await tenantry.portability.listBackups()
      const ops = await backupOps()
      expect(await outcome(tenantry.portability.backup('acme', { to }))).toBe('CONFLICT')
      const after = await head('fixed/acme.tar')
      expect([after.ETag, after.ContentLength, after.LastModified]).toEqual([before.ETag, before.ContentLength, before.LastModified])
      expect(await tenantry.portability.listBackups()).toEqual(records)
      expect(await backupOps()).toEqual(ops)
      expect(readdirSync(spool)).toEqual([])
    })

    it('a bucket that does not exist fails the upload (STORAGE_UNAVAILABLE): the operation rolled back, nothing recorded or left', async () => {
      const records = (await tenantry.portability.listBackups()).length
      expect(await outcome(tenantry.portability.backup('acme', { to: 's3://no-such-bucket/x/' }))).toBe('STORAGE_UNAVAILABLE')
      const last = (await tenantry.operations.list({ kind: 'backup', limit: 1 }))[0]
      expect([last.state, String(last.params.path).startsWith('s3://no-such-bucket/x/acme-'), last.error]).toEqual([
        'rolled_back', true, `The backup did not finish; its partial files were removed and no object is left under '${last.params.path}'. Run it again.`,
      ])
      expect((await tenantry.portability.listBackups()).length).toBe(records)
      expect(readdirSync(spool)).toEqual([])
    })

    it('keeps residency by s3:// prefix: a us tenant is refused s3://…/eu/ (RESIDENCY_VIOLATION, nothing written) unless forced', async () => {
      expect(backupTarget(`s3://${BUCKET}/eu/x.tar`, { [`s3://${BUCKET}/eu/`]: 'eu' })).toEqual({ kind: 'backup', name: `s3://${BUCKET}/eu/`, region: 'eu' })
      expect(backupTarget(`s3://${BUCKET}/europe/x.tar`, { [`s3://${BUCKET}/eu`]: 'eu' }).region).toBeNull()
      expect(backupTarget(`s3://${BUCKET}/eu/x.tar`, { [`s3://${BUCKET}`]: 'us', [`s3://${BUCKET}/eu`]: 'eu' }).region).toBe('eu')
      await tenantry.provision({ slug: 'us-co', tier: 'pooled', region: 'us' })
      expect(await outcome(tenantry.portability.backup('us-co', { to: `s3://${BUCKET}/eu/` }))).toBe('RESIDENCY_VIOLATION')
      expect(await keys('eu/')).toEqual([])
      const forced = await tenantry.portability.backup('us-co', { to: `s3://${BUCKET}/eu/`, forceResidency: true })
      expect(await keys('eu/')).toEqual([keyOf(forced.path)])
      const audit = await tenantry.audit.list({ tenant: 'us-co', action: 'residency.force' })
      expect(audit.map((e) => [e.details.target, e.details.targetRegion, e.details.tenantRegion])).toEqual([[`s3://${BUCKET}/eu/`, 'eu', 'us']])
    })

    it("erasure deletes the tenant's archive objects from S3 and says so in the certificate", async () => {
      await tenantry.provision({ slug: 'gone', tier: 'pooled' })
      await tenantry.withTenant('gone', () => tenantry.db.query("INSERT INTO projects (name) VALUES ('bye')"))
      const a = await tenantry.portability.backup('gone', { to: `s3://${BUCKET}/erase/` })
      const b = await tenantry.portability.backup('gone', { to: `s3://${BUCKET}/erase/second.tar` })
      await raw.send(new DeleteObjectCommand({ Bucket: BUCKET, Key: 'erase/second.tar' }))
      expect(await keys('erase/')).toEqual([keyOf(a.path)])
      await tenantry.delete('gone')
      const cert = await tenantry.portability.erase('gone')
      expect(cert.archives.sort((x, y) => x.path.localeCompare(y.path))).toEqual([
        { path: a.path, encrypted: true, action: 'S3 object deleted (in a versioned bucket, earlier versions stay until removed by hand or a lifecycle rule)' },
        { path: b.path, encrypted: true, action: 'S3 object not found (moved or already deleted)' },
      ].sort((x, y) => x.path.localeCompare(y.path)))
      expect(cert.verified).toBe(true)
      expect(await keys('erase/')).toEqual([])
      expect((await tenantry.portability.listBackups()).filter((x) => x.slug === 'gone')).toEqual([])
    })

    it('the admin API backs up into an s3:// target and restores from it by id; no download of an S3 archive, no export into S3', async () => {
      const app = Fastify()
      await app.register(tenantryAdmin, { prefix: '/admin', tenantry, docs: false, console: false, backups: { targets: { offsite: `s3://${BUCKET}/admin/` } }, auth: { jwt: { secret: 'portability-s3-test-secret-of-length', issuer: 'https://id.test', audience: 'tenantry-admin' } } })
      await app.ready()
      try {
        const store = await adminTokens(tenantry)
        const operator = (await store.create({ name: 's3-operator', role: 'operator' }, 'test:setup')).token
        const admin = (await store.create({ name: 's3-admin', role: 'admin' }, 'test:setup')).token
        const call = (method: 'GET' | 'POST', path: string, token: string, payload?: object) => app.inject({ method, url: `/admin/api${path}`, headers: { authorization: `Bearer ${token}` }, payload })
        const finished = async (id: string) => {
          for (;;) {
            const op = (await call('GET', `/operations/${id}`, operator)).json()
            if (op.state !== 'running') return op
            await new Promise((r) => setTimeout(r, 50))
          }
        }
        const started = await call('POST', '/tenants/acme/backups', operator, { target: 'offsite' })
        expect(started.statusCode).toBe(202)
        expect((await finished(started.json().operationId)).state).toBe('done')
        const [b] = (await call('GET', '/tenants/acme/backups?limit=1', operator)).json() as { id: string; path: string; rows: number }[]
        expect([b.path.startsWith(`s3://${BUCKET}/admin/acme-`), b.rows]).toEqual([true, 5])
        expect(await keys('admin/')).toEqual([keyOf(b.path)])
        const download = await call('GET', `/tenants/acme/backups/${b.id}/archive`, operator)
        expect([download.statusCode, download.json().code]).toEqual([404, 'NOT_FOUND'])
        const restore = await call('POST', `/tenants/acme/backups/${b.id}/restore`, admin, { as: 'acme-admin', tier: 'pooled' })
        expect(restore.statusCode).toBe(202)
        expect((await finished(restore.json().operationId)).state).toBe('done')
        expect(await projects('acme-admin')).toEqual(await projects('acme'))
        const exportTo = await call('POST', '/tenants/acme/exports', operator, { format: 'jsonl', target: 'offsite' })
        expect([exportTo.statusCode, exportTo.json().code]).toEqual([400, 'VALIDATION_FAILED'])
        expect(readdirSync(spool)).toEqual([])
      } finally {
        await app.close()
      }
    })

    it.skipIf(backend.name !== 'PostgreSQL')('an erasure by a process without S3 configuration says the archive object was NOT deleted, and leaves it', async () => {
      await tenantry.provision({ slug: 'far', tier: 'pooled' })
      const b = await tenantry.portability.backup('far', { to: `s3://${BUCKET}/far/` })
      await tenantry.delete('far')
      const saved = Object.fromEntries(S3_ENV.map((k) => [k, process.env[k]]))
      for (const k of S3_ENV) delete process.env[k]
      const bare = await createTenantry({ databaseUrl: url!, rolePrefix: PREFIX, migrations, resumeOperations: false, observe: { metering: false, metrics: false, tracing: false }, portability: { masterKey: MASTER } })
      try {
        const cert = await bare.portability.erase('far')
        expect(cert.archives).toEqual([{
          path: b.path, encrypted: true,
          action: `S3 object NOT deleted: CONFIG_INVALID: '${b.path}' is in S3, but no S3 client is configured: set portability.s3 (or storage.s3.client) with a region or endpoint in createTenantry, or AWS_REGION (and AWS_ENDPOINT_URL_S3 for an S3-compatible store) in the environment.`,
        }])
        expect([cert.verified, cert.cryptoShredding.dataKeyDestroyedAt !== null]).toEqual([true, true])
      } finally {
        await bare.close()
        for (const [k, v] of Object.entries(saved)) if (v !== undefined) process.env[k] = v
      }
      expect(await keys('far/')).toEqual([keyOf(b.path)])
      // The object left behind is encrypted under the destroyed key: unreadable.
      expect(await outcome(tenantry.portability.restore(b.path, { as: 'far-again' }))).toBe('ARCHIVE_KEY_INVALID')
    })

    it.skipIf(backend.name !== 'PostgreSQL')('the CLI killed -9 in the middle of a multipart upload: resume leaves no object and no local file; the next backup works', async () => {
      // Over 5 MB uncompressed, so the archive goes up in parts; the CLI stops after the first.
      await tenantry.provision({ slug: 'big', tier: 'pooled' })
      await tenantry.withTenant('big', () => tenantry.db.query('INSERT INTO projects (name) SELECT repeat(md5(g::text), 3) FROM generate_series(1, 70000) g'))
      const p = new CliProcess(['backup', 'big', '--to', `s3://${BUCKET}/killed/`, '--no-gzip', '--no-encrypt'], { ...env, TENANTRY_FAULT: 'pause:backup:upload' })
      await p.waitForStderr(/tenantry-fault: paused at backup:upload\n/)
      await p.kill9()
      const db = new pg.Pool({ connectionString: url, max: 1 })
      try {
        const killed = (await db.query<{ state: string; step: string; params: { path: string; spool: string }; progress: { uploadId?: string } }>("SELECT state, step, params, progress FROM tenantry.operations WHERE kind = 'backup' AND slug = 'big'")).rows
        expect(killed.map((o) => [o.state, o.step, typeof o.progress.uploadId])).toEqual([['running', 'upload', 'string']])
        const { path: target, spool: local } = killed[0].params
        expect(target).toMatch(new RegExp(`^s3://${BUCKET}/killed/big-.*\\.tar$`))
        expect(readdirSync(spool)).toEqual([local.slice(spool.length + 1)])
        expect(await keys('killed/')).toEqual([])

        const resume = await cli(['operations', 'resume', '--json'], env)
        expect(resume.code, show(resume)).toBe(0)
        const after = (await db.query<{ state: string; error: string }>("SELECT state, error FROM tenantry.operations WHERE kind = 'backup' AND slug = 'big'")).rows
        // s3rver answers AbortMultipartUpload with 405 (it has no such call): the rollback says so,
        // and the object was never made. Against S3 the upload is aborted and the note is absent.
        expect(after).toEqual([{
          state: 'rolled_back',
          error: `The backup did not finish; its partial files were removed and no object is left under '${target}'. Run it again. Its multipart upload ${killed[0].progress.uploadId} could not be aborted (MethodNotAllowed: The specified method is not allowed against this resource.): abort it by hand, or let a lifecycle rule (AbortIncompleteMultipartUpload) remove its parts; it never becomes an object.`,
        }])
        expect(readdirSync(spool)).toEqual([])
        expect(await keys('killed/')).toEqual([])
        expect(await tenantry.portability.listBackups({ tenant: 'big' })).toEqual([])

        const again = await cli(['backup', 'big', '--to', `s3://${BUCKET}/killed/`, '--no-gzip', '--no-encrypt', '--json'], env)
        expect(again.code, show(again)).toBe(0)
        const done = JSON.parse(again.stdout) as { path: string; rows: number; bytes: number }
        expect(done.rows).toBe(70000)
        expect(await keys('killed/')).toEqual([keyOf(done.path)])
        expect((await head(keyOf(done.path))).ContentLength).toBe(done.bytes)
        expect(done.bytes).toBeGreaterThan(5 * 1024 * 1024)
        const listed = await cli(['backups', 'list', '--tenant', 'big'], env)
        expect(listed.code, show(listed)).toBe(0)
        expect(listed.stdout.trim().split('\n').slice(2).map((l) => l.split(/\s{2,}/).at(-1))).toEqual([done.path])
        expect(readdirSync(spool)).toEqual([])

        // Killed after the upload completed, before the catalog recorded it: the object is deleted.
        const late = new CliProcess(['backup', 'acme', '--to', `s3://${BUCKET}/late/`], { ...env, TENANTRY_FAULT: 'pause:backup:uploaded' })
        await late.waitForStderr(/tenantry-fault: paused at backup:uploaded\n/)
        await late.kill9()
        const lateOp = (await db.query<{ params: { path: string } }>("SELECT params FROM tenantry.operations WHERE kind = 'backup' AND state = 'running'")).rows
        expect(lateOp.length).toBe(1)
        expect(await keys('late/')).toEqual([keyOf(lateOp[0].params.path)])
        expect(readdirSync(spool)).toEqual([])
        const resumed = await cli(['operations', 'resume', '--json'], env)
        expect(resumed.code, show(resumed)).toBe(0)
        expect((await db.query("SELECT state, error FROM tenantry.operations WHERE params->>'path' = $1", [lateOp[0].params.path])).rows).toEqual([
          { state: 'rolled_back', error: `The backup did not finish; its partial files were removed and no object is left under '${lateOp[0].params.path}'. Run it again.` },
        ])
        expect(await keys('late/')).toEqual([])
        expect((await tenantry.portability.listBackups({ tenant: 'acme' })).map((b) => b.path).filter((p) => p.includes('/late/'))).toEqual([])

        // The same, but another writer replaced the object meanwhile: the rollback leaves theirs alone.
        const other = new CliProcess(['backup', 'acme', '--to', `s3://${BUCKET}/late/`], { ...env, TENANTRY_FAULT: 'pause:backup:uploaded' })
        await other.waitForStderr(/tenantry-fault: paused at backup:uploaded\n/)
        await other.kill9()
        const otherPath = (await db.query<{ params: { path: string } }>("SELECT params FROM tenantry.operations WHERE kind = 'backup' AND state = 'running'")).rows[0].params.path
        await raw.send(new PutObjectCommand({ Bucket: BUCKET, Key: keyOf(otherPath), Body: 'not ours' }))
        expect((await cli(['operations', 'resume', '--json'], env)).code).toBe(0)
        expect((await db.query("SELECT state, error FROM tenantry.operations WHERE params->>'path' = $1", [otherPath])).rows).toEqual([
          { state: 'rolled_back', error: `The backup did not finish; its partial files were removed. Run it again. The object under '${otherPath}' was written by another writer, not this backup: it was left as it is.` },
        ])
        expect([await keys('late/'), (await head(keyOf(otherPath))).ContentLength]).toEqual([[keyOf(otherPath)], 8])

        // A spool directory that cannot be written: refused with its code, nothing written.
        const noSpool = { ...env, TENANTRY_SPOOL_DIR: join(dir, 'no', 'such', 'dir') }
        const badBackup = await cli(['backup', 'big', '--to', `s3://${BUCKET}/killed/`], noSpool)
        const badRestore = await cli(['restore', done.path, '--as', 'big-copy'], noSpool)
        // (stderr may open with Node's warnings of the AWS SDK; the error is its own line)
        const errorLine = (text: string) => text.split('\n').find((l) => l.startsWith('error '))?.split(':')[0]
        expect([badBackup.code, errorLine(badBackup.stderr), badRestore.code, errorLine(badRestore.stderr)]).toEqual([1, 'error VALIDATION_FAILED', 1, 'error VALIDATION_FAILED'])
        expect(await keys('killed/')).toEqual([keyOf(done.path)])
        expect(await tenantry.catalog.bySlug('big-copy')).toBeNull()
      } finally {
        await db.end()
      }
    })
  })
}

for (const backend of backends(DB_NAME, PREFIX, PG_UP)) s3Suite(backend)

describe('an s3:// target without any S3 configuration', { timeout: 120_000 }, () => {
  it('is refused with CONFIG_INVALID naming what to set, before anything is written', async () => {
    const saved = Object.fromEntries(S3_ENV.map((k) => [k, process.env[k]]))
    for (const k of S3_ENV) delete process.env[k]
    const dir = mkdtempSync(join(tmpdir(), 'tenantry-portability-s3-none-'))
    const t = await createTenantry({ dataDir: 'memory', migrations: DEMO_MIGRATIONS, resumeOperations: false, observe: { metering: false, metrics: false, tracing: false }, portability: { spoolDir: dir } })
    try {
      await t.provision({ slug: 'acme', tier: 'pooled' })
      const err = await t.portability.backup('acme', { to: 's3://backups/nightly/' }).catch((e: unknown) => e as { code: string; message: string })
      expect(err).toMatchObject({ code: 'CONFIG_INVALID' })
      expect((err as { message: string }).message).toBe("'s3://backups/nightly/' is in S3, but no S3 client is configured: set portability.s3 (or storage.s3.client) with a region or endpoint in createTenantry, or AWS_REGION (and AWS_ENDPOINT_URL_S3 for an S3-compatible store) in the environment.")
      expect(await outcome(t.portability.restore('s3://backups/acme.tar', { as: 'copy' }))).toBe('CONFIG_INVALID')
      expect(await t.operations.list({ kind: 'backup' })).toEqual([])
      expect(await t.portability.listBackups()).toEqual([])
      expect(readdirSync(dir)).toEqual([])
    } finally {
      await t.close()
      for (const [k, v] of Object.entries(saved)) if (v !== undefined) process.env[k] = v
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
