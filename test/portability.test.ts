import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { copyTenant, createTenantry, type Tenant, type Tenantry } from '../src/index.ts'
import { tenantToken } from '../src/data/tenant-token.ts'
import { readManifest } from '../src/portability/archive.ts'
import { backends, DEMO_MIGRATIONS, outcome, postgresAvailable, type Backend } from './helpers/backends.ts'
import { PrivatePostgres, privatePostgresPossible } from './fixtures/guard-servers.ts'

// Per-tenant backup, restore and verified erasure (issue 13), on PostgreSQL and on PGlite: archives
// of a pooled tenant restored as copies in other tiers (PostgreSQL: a database-tier tenant on a
// second server), --replace, refused archives that write nothing, migrations forward, and erasure
// with its certificate and crypto-shredding.

const DB_NAME = 'tenantry_test_portability'
const PREFIX = 'tp_port'
const PG_UP = await postgresAvailable()
const MASTER = 'a1'.repeat(32)
const OTHER_MASTER = 'b2'.repeat(32)

const BACKENDS = backends(DB_NAME, PREFIX, PG_UP)

const PROJECT_NAMES = ['plain', 'tab\there', 'line\nbreak', 'back\\slash', 'ünïcødé ✓', '\\N is not null']

interface Row { id: string; name: string }
interface TaskRow { id: string; project_id: string; title: string; done: boolean }

function portabilitySuite(backend: Backend): void {
  describe.skipIf(!backend.enabled)(`portability (${backend.name})`, () => {
    let tenantry: Tenantry
    let url: string | undefined
    let second: PrivatePostgres | undefined
    let dir: string
    let migrations: string
    let archive: string
    let plainArchive: string
    let acme: Tenant
    const copyTier = backend.name === 'PostgreSQL' ? 'database' : 'schema'

    const projects = (slug: string) => tenantry.withTenant(slug, async () => (await tenantry.db.query<Row>('SELECT id, name FROM projects ORDER BY id')).rows)
    const tasks = (slug: string) => tenantry.withTenant(slug, async () => (await tenantry.db.query<TaskRow>('SELECT id, project_id, title, done FROM tasks ORDER BY id')).rows)
    const tenantCount = async () => (await tenantry.catalog.list()).length

    beforeAll(async () => {
      dir = mkdtempSync(join(tmpdir(), 'tenantry-portability-'))
      migrations = join(dir, 'migrations')
      mkdirSync(migrations)
      // The demo's tables, and two columns that identify a person, marked for data-subject export and erasure.
      writeFileSync(join(migrations, '0001_projects_and_tasks.sql'), `${readFileSync(join(DEMO_MIGRATIONS, '0001_projects_and_tasks.sql'), 'utf8')}
ALTER TABLE projects ADD COLUMN owner_email text;
COMMENT ON COLUMN projects.owner_email IS 'Who owns it. tenantry:subject';
ALTER TABLE tasks ADD COLUMN assignee text;
COMMENT ON COLUMN tasks.assignee IS 'tenantry:subject';
`)
      url = await backend.url()
      tenantry = await createTenantry({
        ...(url ? { databaseUrl: url, rolePrefix: PREFIX } : { dataDir: 'memory' }),
        migrations,
        observe: { metering: false, metrics: false, tracing: false },
        portability: { masterKey: MASTER, backupDir: join(dir, 'backups') },
      })
      if (url && privatePostgresPossible()) {
        second = await PrivatePostgres.create()
        await tenantry.addServer({ name: 'second', url: second.url })
      }
      acme = await tenantry.provision({ slug: 'acme', tier: 'pooled' })
      await tenantry.provision({ slug: 'bystander', tier: 'pooled' })
      await tenantry.withTenant('acme', async () => {
        for (const name of PROJECT_NAMES) await tenantry.db.query('INSERT INTO projects (name) VALUES ($1)', [name])
        await tenantry.db.query("INSERT INTO tasks (project_id, title, done, assignee) VALUES (1, 'first', true, 'ann@example.com'), (2, 'second', false, 'bob@example.com'), (2, 'third', true, 'ann@example.com')")
        await tenantry.db.query("UPDATE projects SET owner_email = 'ann@example.com' WHERE id = 3")
      })
      await tenantry.withTenant('bystander', async () => {
        await tenantry.db.query("INSERT INTO projects (name) VALUES ('theirs')")
        await tenantry.db.query("INSERT INTO tasks (project_id, title) VALUES (7, 'x')").catch(() => undefined)
      })
    }, 240_000)

    afterAll(async () => {
      await tenantry?.close()
      await second?.close()
      await backend.cleanUp()
      rmSync(dir, { recursive: true, force: true })
    }, 120_000)

    it('backs a pooled tenant up into an archive whose manifest names tenant, tier, ledger, tables, rows and checksums', async () => {
      const r = await tenantry.portability.backup('acme')
      archive = r.path
      expect(r.path.startsWith(join(dir, 'backups'))).toBe(true)
      expect(r).toMatchObject({ slug: 'acme', tier: 'pooled', rows: 9, encrypted: true, compressed: true, tables: [{ name: 'projects', rows: 6 }, { name: 'tasks', rows: 3 }] })
      const { manifest, mac } = await readManifest(r.path)
      expect(manifest.tenant).toMatchObject({ id: acme.id, slug: 'acme', tier: 'pooled' })
      expect(manifest.migrations.map((m) => m.version)).toEqual(['0001'])
      expect(manifest.tables.map((t) => [t.name, t.rows, t.entry])).toEqual([
        ['projects', 6, 'tables/000-projects.pgcopy.gz.enc'],
        ['tasks', 3, 'tables/001-tasks.pgcopy.gz.enc'],
      ])
      expect(manifest.tables[0].columns[0]).toBe('tenant_id')
      // Format version 2: every column type is built in, so both tables are in binary COPY form.
      expect([manifest.formatVersion, manifest.tables.map((t) => t.format)]).toEqual([2, ['binary', 'binary']])
      expect(manifest.tables[0].types).toEqual(['uuid', 'bigint', 'text', 'timestamp with time zone', 'text'])
      expect(manifest.tables.every((t) => /^[0-9a-f]{64}$/.test(t.sha256))).toBe(true)
      expect(manifest.encryption).toEqual({ algorithm: 'aes-256-gcm', key: 'tenant-data-key', tenantId: acme.id })
      expect(mac).toMatch(/^[0-9a-f]{64}$/)
      expect(manifest.tenantryVersion).toBe(JSON.parse(readFileSync('package.json', 'utf8')).version)
      // No bytes of the rows in the clear.
      expect(readFileSync(r.path).includes(Buffer.from('line'))).toBe(false)
      const op = await tenantry.operations.get(r.operationId!)
      expect([op?.kind, op?.state, op?.step]).toEqual(['backup', 'done', 'done'])
      expect(existsSync(`${r.path}.spool`) || existsSync(`${r.path}.partial`)).toBe(false)

      const plain = await tenantry.portability.backup('acme', { to: join(dir, 'plain.tar'), encrypt: false, gzip: false })
      plainArchive = plain.path
      expect(plain).toMatchObject({ path: join(dir, 'plain.tar'), encrypted: false, compressed: false, rows: 9 })
      expect((await tenantry.portability.listBackups({ tenant: 'acme' })).map((b) => [b.path, b.rows, b.encrypted])).toEqual([
        [plain.path, 9, false],
        [r.path, 9, true],
      ])
      expect(await outcome(tenantry.portability.backup('acme', { to: plain.path }))).toBe('CONFLICT')
      expect(await outcome(tenantry.portability.backup('nobody'))).toBe('TENANT_NOT_FOUND')
      expect(await outcome(tenantry.portability.backup('acme', { to: join(plain.path, 'inside-a-file.tar') }))).toBe('VALIDATION_FAILED')
      // An archive file removed behind Tenantry's back (erasure reports it as not found).
      await tenantry.portability.backup('acme', { to: join(dir, 'never.tar') })
      rmSync(join(dir, 'never.tar'))
      await tenantry.portability.listBackups().then((all) => expect(all.length).toBe(3))
    })

    it(`restores it as a new ${copyTier}-tier tenant${backend.name === 'PostgreSQL' ? ' on another server' : ''} with exactly the same rows, tenant_id rewritten and sequences past them`, async () => {
      const server = second ? 'second' : 'main'
      const r = await tenantry.portability.restore(archive, { as: 'acme-copy', tier: copyTier, server })
      expect(r.tenant).toMatchObject({ slug: 'acme-copy', tier: copyTier, status: 'active', placement: { server } })
      expect(r.tenant.id).not.toBe(acme.id)
      expect([r.rows, r.replaced, r.migratedForward, r.tables]).toEqual([9, false, [], [{ name: 'projects', rows: 6 }, { name: 'tasks', rows: 3 }]])
      expect(await projects('acme-copy')).toEqual(await projects('acme'))
      expect(await tasks('acme-copy')).toEqual(await tasks('acme'))
      expect((await projects('acme-copy')).map((p) => p.name)).toEqual(PROJECT_NAMES)
      const ids = await tenantry.withTenant('acme-copy', async () => (await tenantry.db.query<{ tenant_id: string }>('SELECT DISTINCT tenant_id FROM projects')).rows)
      expect(ids).toEqual([{ tenant_id: r.tenant.id }])
      const added = await tenantry.withTenant('acme-copy', async () => (await tenantry.db.query<{ id: string }>("INSERT INTO projects (name) VALUES ('after') RETURNING id")).rows[0].id)
      expect(added).toBe('7')
      expect((await projects('bystander')).map((p) => p.name)).toEqual(['theirs'])
      expect((await tenantry.operations.list({ kind: 'restore' }))[0]).toMatchObject({ state: 'done', slug: 'acme-copy' })
    }, 120_000)

    it('exports a tenant as JSON lines and CSV with a manifest, and one data subject\'s rows through the column marks', async () => {
      const j = await tenantry.portability.export('acme', { format: 'jsonl', to: join(dir, 'exports') })
      expect(j.tables.map((t) => [t.name, t.file, t.rows])).toEqual([['projects', 'projects.jsonl', 6], ['tasks', 'tasks.jsonl', 3]])
      const lines = readFileSync(join(j.path, 'projects.jsonl'), 'utf8').trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>)
      expect(lines.map((l) => l.name)).toEqual(PROJECT_NAMES)
      expect(lines.every((l) => l.tenant_id === acme.id)).toBe(true)
      const manifest = JSON.parse(readFileSync(join(j.path, 'manifest.json'), 'utf8'))
      expect([manifest.format, manifest.tenant.slug, manifest.rows]).toEqual(['tenantry-export-jsonl', 'acme', 9])
      const c = await tenantry.portability.export('acme', { format: 'csv', to: join(dir, 'exports') })
      const csv = readFileSync(join(c.path, 'projects.csv'), 'utf8')
      expect(csv.split('\n')[0]).toBe('tenant_id,id,name,created_at,owner_email')
      expect(csv).toContain('"line\nbreak"')
      expect(c.tables.map((t) => t.rows)).toEqual([6, 3])

      const ann = await tenantry.portability.export('acme', { format: 'jsonl', subject: 'ann@example.com', to: join(dir, 'exports') })
      expect(ann.tables.map((t) => [t.name, t.rows])).toEqual([['projects', 1], ['tasks', 2]])
      expect(readFileSync(join(ann.path, 'tasks.jsonl'), 'utf8').trimEnd().split('\n').map((l) => JSON.parse(l).title)).toEqual(['first', 'third'])
      expect(await outcome(tenantry.portability.export('acme', { format: 'xml' as never }))).toBe('VALIDATION_FAILED')
      expect(await outcome(tenantry.portability.export('acme', { format: 'csv', subject: '' }))).toBe('VALIDATION_FAILED')
      expect((await tenantry.operations.list({ kind: 'export' })).map((o) => o.state)).toEqual(['done', 'done', 'done'])
    })

    it('erases one data subject from a copy through the column marks, verified, naming the subject only by hash', async () => {
      const cert = await tenantry.portability.eraseSubject('acme-copy', 'ann@example.com')
      expect(cert.tables.map((t) => [t.table.split('.')[1], t.columns, t.before, t.after])).toEqual([['tasks', ['assignee'], 2, 0], ['projects', ['owner_email'], 1, 0]])
      expect([cert.verified, cert.rowsBefore, cert.rowsAfter]).toEqual([true, 3, 0])
      expect(JSON.stringify(cert)).not.toContain('ann@')
      expect((await tasks('acme-copy')).map((t) => t.title)).toEqual(['second'])
      expect((await projects('acme-copy')).length).toBe(5 + 1)
      expect((await tasks('acme')).length).toBe(3)
      expect((await tenantry.portability.certificates('acme-copy'))[0]).toMatchObject({ kind: 'subject', certificateId: cert.certificateId })
      // Put the copy back to the archive's rows for the tests after this one.
      await tenantry.portability.restore(archive, { as: 'acme-copy', replace: true })
    }, 120_000)

    it('the copy engine copies one tenant between placements on its own (what a move reuses), tenant_id rewritten', async () => {
      // PostgreSQL: COPY streamed to a database on another server; PGlite: within one database.
      const target = await tenantry.provision({ slug: 'moved', tier: copyTier, server: second ? 'second' : 'main' })
      const place = (t: Tenant) => {
        const m = tenantry.dataPlane.migrationTarget(t)
        return { driver: tenantry.dataPlane.driver(t.placement.server), database: m.database, schema: m.schema, tenantId: t.id, token: tenantToken(tenantry.dataPlane.tenantKey, t.id) }
      }
      const counts = await copyTenant(place(acme), place(target))
      expect(counts).toEqual([{ table: 'projects', rows: 6 }, { table: 'tasks', rows: 3 }])
      expect(await projects('moved')).toEqual(await projects('acme'))
      expect(await tasks('moved')).toEqual(await tasks('acme'))
      // All or nothing: copying again collides with the rows now there, and leaves them as they are.
      expect(await outcome(copyTenant(place(acme), place(target)))).toBe('pg:23505')
      expect((await projects('moved')).length).toBe(6)
      await tenantry.delete('moved')
      await tenantry.purge('moved', { force: true })
    }, 120_000)

    it('refuses corrupt, truncated, tampered, wrongly keyed and conflicting archives before anything is written', async () => {
      const before = await tenantCount()
      const restoresBefore = (await tenantry.operations.list({ kind: 'restore' })).length
      const bytes = readFileSync(archive)
      const plainBytes = readFileSync(plainArchive)
      const variant = (name: string, data: Buffer) => {
        const p = join(dir, name)
        writeFileSync(p, data)
        return p
      }
      const flip = (b: Buffer, at: number) => {
        const c = Buffer.from(b)
        c[at] ^= 0x01
        return c
      }
      const rowAt = plainBytes.indexOf(Buffer.from('back\\slash')) // binary COPY: the value's bytes as they are
      expect(rowAt).toBeGreaterThan(0)
      // The tar header of the tasks entry (the name also appears in the manifest, earlier), then its data.
      const tasksData = bytes.lastIndexOf(Buffer.from('tables/001-tasks.pgcopy.gz.enc')) + 512
      const tasksSize = (await readManifest(archive)).manifest.tables[1].bytes
      const manifestRows = plainBytes.indexOf(Buffer.from('"rows": 6'))
      const encManifestRows = bytes.indexOf(Buffer.from('"rows": 6'))
      const swap = (b: Buffer, at: number) => Buffer.concat([b.subarray(0, at), Buffer.from('"rows": 5'), b.subarray(at + 9)])
      const cases: [string, string, string][] = [
        ['truncated', variant('truncated.tar', bytes.subarray(0, Math.floor(bytes.length / 2))), 'ARCHIVE_CORRUPT'],
        ['cut at a table', variant('cut.tar', bytes.subarray(0, 1536)), 'ARCHIVE_CORRUPT'],
        ['a row changed (plain)', variant('row.tar', flip(plainBytes, rowAt + 1)), 'ARCHIVE_CORRUPT'],
        ['a manifest count changed (plain)', variant('count.tar', swap(plainBytes, manifestRows)), 'ARCHIVE_CORRUPT'],
        ['a manifest count changed (encrypted: MAC)', variant('mac.tar', swap(bytes, encManifestRows)), 'ARCHIVE_CORRUPT'],
        ['a ciphertext byte changed', variant('cipher.tar', flip(bytes, tasksData + 20)), 'ARCHIVE_CORRUPT'],
        ['the iv changed', variant('iv.tar', flip(bytes, tasksData + 3)), 'ARCHIVE_CORRUPT'],
        ['the tag changed', variant('tag.tar', flip(bytes, tasksData + tasksSize - 1)), 'ARCHIVE_CORRUPT'],
        ['not an archive', variant('text.tar', Buffer.from('hello\n'.repeat(200))), 'ARCHIVE_CORRUPT'],
        ['empty', variant('empty.tar', Buffer.alloc(0)), 'ARCHIVE_CORRUPT'],
        ['missing', join(dir, 'nope.tar'), 'NOT_FOUND'],
      ]
      for (const [what, path, code] of cases) expect([what, await outcome(tenantry.portability.restore(path, { as: 'never' }))]).toEqual([what, code])
      expect(await outcome(tenantry.portability.restore(archive))).toBe('CONFLICT')
      expect(await outcome(tenantry.portability.restore(archive, { as: 'Bad Slug' }))).toBe('TENANT_INVALID')
      expect(await outcome(tenantry.portability.restore(archive, { as: 'never', tier: 'cluster' as never }))).toBe('VALIDATION_FAILED')
      expect(await outcome(tenantry.portability.restore(archive, { as: 'never', server: 'atlantis' }))).toBe('SERVER_NOT_FOUND')
      if (url) {
        const wrongKey = await createTenantry({ databaseUrl: url, rolePrefix: PREFIX, migrations, resumeOperations: false, observe: { metering: false }, portability: { masterKey: OTHER_MASTER } })
        const noKey = await createTenantry({ databaseUrl: url, rolePrefix: PREFIX, migrations, resumeOperations: false, observe: { metering: false }, portability: { masterKey: '' } })
        try {
          expect(await outcome(wrongKey.portability.restore(archive, { as: 'never' }))).toBe('ARCHIVE_KEY_INVALID')
          expect(await outcome(noKey.portability.restore(archive, { as: 'never' }))).toBe('ARCHIVE_KEY_INVALID')
          // The unencrypted archive needs no key.
          expect(await outcome(noKey.portability.restore(plainArchive, { as: 'never', tier: 'schema' }))).toBe('ok')
          await noKey.delete('never')
          await noKey.portability.erase('never')
        } finally {
          await wrongKey.close()
          await noKey.close()
        }
      }
      expect(await tenantCount()).toBe(before)
      expect(await tenantry.findTenant('never')).toBeNull()
      expect((await tenantry.operations.list({ kind: 'restore' })).length).toBe(restoresBefore + (url ? 1 : 0))
      expect(await outcome(createTenantry({ dataDir: 'memory', portability: { masterKey: 'short' } }))).toBe('CONFIG_INVALID')
    }, 120_000)

    it('--replace swaps a changed tenant back to the archive: pooled in one transaction, other tiers by switching to a staging room', async () => {
      const original = { p: await projects('acme'), t: await tasks('acme') }
      await tenantry.withTenant('acme', async () => {
        await tenantry.db.query("UPDATE projects SET name = 'renamed' WHERE id = 1")
        await tenantry.db.query('DELETE FROM tasks WHERE id = 3')
        await tenantry.db.query("INSERT INTO projects (name) VALUES ('extra')")
      })
      const r = await tenantry.portability.restore(archive, { replace: true })
      expect([r.tenant.id, r.tenant.tier, r.replaced, r.rows]).toEqual([acme.id, 'pooled', true, 9])
      expect(await projects('acme')).toEqual(original.p)
      expect(await tasks('acme')).toEqual(original.t)
      expect((await projects('bystander')).map((p) => p.name)).toEqual(['theirs'])

      const copy = (await tenantry.findTenant('acme-copy'))!
      const r2 = await tenantry.portability.restore(plainArchive, { as: 'acme-copy', replace: true })
      expect([r2.tenant.id, r2.tenant.tier, r2.replaced]).toEqual([copy.id, copyTier, true])
      expect(r2.tenant.placement).not.toEqual(copy.placement)
      expect(await projects('acme-copy')).toEqual(original.p)
      const driver = tenantry.dataPlane.driver(copy.placement.server)
      if (copyTier === 'database') expect(await driver.databaseExists(copy.placement.database)).toBe(false)
      else expect((await driver.admin(copy.placement.database).query('SELECT 1 FROM pg_namespace WHERE nspname = $1', [copy.placement.schema])).rowCount).toBe(0)

      // Into another tier: the pooled tenant becomes a schema-tier tenant with the archive's rows.
      const r3 = await tenantry.portability.restore(archive, { replace: true, tier: 'schema' })
      expect([r3.tenant.id, r3.tenant.tier]).toEqual([acme.id, 'schema'])
      expect(await projects('acme')).toEqual(original.p)
      const left = await tenantry.dataPlane.driver('main').admin(acme.placement.database).query<{ n: string }>('SELECT count(*) AS n FROM public.projects WHERE tenant_id = $1', [acme.id])
      expect(Number(left.rows[0].n)).toBe(0)
    }, 180_000)

    it('erases a deleted tenant, proves no row is left in any tenant table, destroys its data key and keeps the certificate', async () => {
      const kept = join(dir, 'kept-copy.tar')
      copyFileSync(archive, kept)
      expect(await outcome(tenantry.portability.erase('acme'))).toBe('CONFLICT')
      await tenantry.delete('acme')
      const cert = await tenantry.portability.erase('acme')
      expect(cert.verified).toBe(true)
      expect([cert.rowsBefore, cert.rowsAfter]).toEqual([9, 0])
      expect(cert.tenant).toMatchObject({ id: acme.id, slug: 'acme', tier: 'schema' })
      expect(cert.scan.filter((s) => s.before > 0).map((s) => [s.table.split('.')[1], s.before, s.after])).toEqual([['projects', 6, 0], ['tasks', 3, 0]])
      // Every tenant table of every server was scanned: the pooled tables and the copy's room too.
      expect(cert.scan.some((s) => s.table === 'public.projects')).toBe(true)
      if (second) expect(cert.scan.some((s) => s.server === 'second')).toBe(true)
      expect(cert.catalog.every((c) => c.after === 0)).toBe(true)
      expect(cert.objects.map((o) => [o.object.split(' ')[0], o.existsAfter])).toEqual([['schema', false], ['role', false], ['object', false]])
      expect(cert.archives.map((a) => [a.path, a.action])).toEqual([
        [archive, 'file deleted'],
        [plainArchive, 'file deleted'],
        [join(dir, 'never.tar'), 'file not found here (moved or already deleted)'],
      ])
      expect(cert.cryptoShredding.dataKeyDestroyedAt).not.toBeNull()
      expect(existsSync(archive) || existsSync(plainArchive)).toBe(false)
      expect(await outcome(tenantry.portability.restore(kept, { as: 'acme-back' }))).toBe('ARCHIVE_KEY_INVALID')
      expect(await tenantry.findTenant('acme')).toBeNull()
      expect((await tenantry.portability.certificates('acme')).map((c) => c.certificateId)).toEqual([cert.certificateId])
      expect((await projects('bystander')).map((p) => p.name)).toEqual(['theirs'])
      expect((await projects('acme-copy')).length).toBe(6)
      expect(await tenantry.portability.listBackups({ tenant: 'acme' }).catch((e) => e.code)).toBe('TENANT_NOT_FOUND')
    }, 120_000)

    it.skipIf(backend.name !== 'PostgreSQL')('restores an archive taken at an older migration and migrates it forward', async () => {
      if (!url) throw new Error('no PostgreSQL URL')
      const old = await tenantry.portability.backup('acme-copy', { to: join(dir, 'old.tar') })
      writeFileSync(join(migrations, '0002_priority.sql'), 'ALTER TABLE tasks ADD COLUMN priority integer NOT NULL DEFAULT 3;')
      const newer = await createTenantry({ databaseUrl: url, rolePrefix: PREFIX, migrations, resumeOperations: false, observe: { metering: false }, portability: { masterKey: MASTER } })
      try {
        if (second) await newer.addServer({ name: 'second', url: second.url })
        const r = await newer.portability.restore(old.path, { as: 'acme-v2', tier: 'schema' })
        expect(r.migratedForward).toEqual(['0002_priority'])
        const rows = await newer.withTenant('acme-v2', async () => (await newer.db.query<{ title: string; priority: number }>('SELECT title, priority FROM tasks ORDER BY id')).rows)
        expect(rows).toEqual([{ title: 'first', priority: 3 }, { title: 'second', priority: 3 }, { title: 'third', priority: 3 }])
        // An archive whose migration this installation lacks is refused.
        rmSync(join(migrations, '0002_priority.sql'))
        const v2 = await newer.portability.backup('acme-v2', { to: join(dir, 'v2.tar') })
        expect(await outcome(tenantry.portability.restore(v2.path, { as: 'acme-v3' }))).toBe('ARCHIVE_INCOMPATIBLE')
      } finally {
        await newer.close()
      }
    }, 120_000)
  })
}

for (const backend of BACKENDS) portabilitySuite(backend)
