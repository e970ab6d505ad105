import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createTenantry, type Tenantry } from '../src/index.ts'
import { DEMO_MIGRATIONS, dropPostgresLeftovers, freshDatabase, postgresAvailable } from './helpers/backends.ts'
import { cli, show } from './helpers/cli-process.ts'

// The real `tenantry` CLI's portability commands as subprocesses on real PostgreSQL: backup of a
// pooled tenant to a directory, backups list, restore --as a new slug into the database tier (rows
// compared exactly), export --format jsonl, delete + erase with its certificate, and bad input
// (an unknown slug, a tampered archive) refused with a code and an exit code, nothing written.

const DB_NAME = 'tenantry_test_portability_cli'
const PREFIX = 'th_pcli'
const PG_UP = await postgresAvailable()
const MASTER_KEY = 'a1'.repeat(32)
// Each run starts node and compiles the sources through tsx: slow on a loaded machine.
const SLOW = { timeout: 180_000 }

interface Project { id: string; name: string }
interface Task { id: string; project_id: string; title: string; done: boolean }

describe.skipIf(!PG_UP)('tenantry backup / backups list / restore / export / erase (CLI, PostgreSQL)', SLOW, () => {
  let url: string
  let dir: string
  let tenantry: Tenantry
  let env: Record<string, string>
  let archive: string
  let acmeId: string

  const run = (...args: string[]) => cli(args, env)
  const rowsOf = (slug: string) => tenantry.withTenant(slug, async () => ({
    projects: (await tenantry.db.query<Project>('SELECT id::text, name FROM projects ORDER BY id')).rows,
    tasks: (await tenantry.db.query<Task>('SELECT id::text, project_id::text, title, done FROM tasks ORDER BY id')).rows,
  }))
  const EXPECTED = {
    projects: [{ id: '1', name: 'alpha' }, { id: '2', name: 'beta, "quoted"' }, { id: '3', name: 'gamma\nnewline' }],
    tasks: [{ id: '1', project_id: '1', title: 'first', done: false }, { id: '2', project_id: '2', title: 'second', done: true }],
  }
  /** What a refused command may have written: tenants, restore operations, tenant databases. */
  const footprint = async () => {
    const client = new pg.Client({ connectionString: url })
    await client.connect()
    try {
      const dbs = await client.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_database WHERE datname LIKE $1", [`${PREFIX}\\_%`])
      return {
        tenants: (await tenantry.catalog.list()).map((t) => `${t.slug} ${t.tier} ${t.status}`).sort(),
        restores: (await tenantry.operations.list({ kind: 'restore' })).length,
        databases: dbs.rows[0].n,
      }
    } finally {
      await client.end()
    }
  }

  beforeAll(async () => {
    await dropPostgresLeftovers(PREFIX, DB_NAME)
    url = await freshDatabase(DB_NAME)
    dir = mkdtempSync(join(tmpdir(), 'tenantry-portability-cli-'))
    tenantry = await createTenantry({ databaseUrl: url, rolePrefix: PREFIX, migrations: DEMO_MIGRATIONS, observe: { metering: false, metrics: false, tracing: false }, portability: { masterKey: MASTER_KEY } })
    acmeId = (await tenantry.provision({ slug: 'acme', tier: 'pooled' })).id
    await tenantry.provision({ slug: 'bystander', tier: 'pooled' })
    await tenantry.withTenant('acme', async () => {
      for (const p of EXPECTED.projects) await tenantry.db.query('INSERT INTO projects (name) VALUES ($1)', [p.name])
      await tenantry.db.query("INSERT INTO tasks (project_id, title, done) VALUES (1, 'first', false), (2, 'second', true)")
    })
    await tenantry.withTenant('bystander', () => tenantry.db.query("INSERT INTO projects (name) VALUES ('not acme')"))
    env = { DATABASE_URL: url, TENANTRY_ROLE_PREFIX: PREFIX, TENANTRY_MIGRATIONS: DEMO_MIGRATIONS, TENANTRY_MASTER_KEY: MASTER_KEY, TENANTRY_BACKUP_DIR: join(dir, 'default-backups') }
  }, 240_000)

  afterAll(async () => {
    await tenantry?.close()
    if (PG_UP) await dropPostgresLeftovers(PREFIX, DB_NAME)
    if (dir) rmSync(dir, { recursive: true, force: true })
  }, 120_000)

  it('backup <slug> --to dir/ writes one encrypted archive there and prints its record; backups list shows it', async () => {
    expect(await rowsOf('acme')).toEqual(EXPECTED)
    const r = await run('backup', 'acme', '--to', `${join(dir, 'archives')}/`, '--json')
    expect(r.code, show(r)).toBe(0)
    const b = JSON.parse(r.stdout)
    expect([b.slug, b.tenantId, b.tier, b.rows, b.encrypted, b.compressed, b.tables]).toEqual(['acme', acmeId, 'pooled', 5, true, true, [{ name: 'projects', rows: 3 }, { name: 'tasks', rows: 2 }]])
    expect(b.path.startsWith(join(dir, 'archives'))).toBe(true)
    expect(existsSync(b.path)).toBe(true)
    expect(readFileSync(b.path).length).toBe(b.bytes)
    archive = b.path

    const list = await run('backups', 'list', '--json')
    expect(list.code, show(list)).toBe(0)
    expect(JSON.parse(list.stdout).map((x: { slug: string; path: string; rows: number; encrypted: boolean }) => [x.slug, x.path, x.rows, x.encrypted])).toEqual([['acme', archive, 5, true]])
    const text = await run('backups', 'list', '--tenant', 'acme')
    expect(text.code, show(text)).toBe(0)
    expect(text.stdout.split('\n')[0]).toMatch(/^CREATED\s+TENANT\s+TIER\s+ROWS\s+SIZE\s+ENCRYPTED\s+PATH$/)
    expect(text.stdout).toContain(archive)
    expect((await run('backups', 'list', '--tenant', 'bystander')).stdout.trim()).toBe('No backups.')
  })

  it('restore <archive> --as acme-copy --tier database: a new tenant in its own database with exactly the same rows under a new id', async () => {
    const r = await run('restore', archive, '--as', 'acme-copy', '--tier', 'database', '--json')
    expect(r.code, show(r)).toBe(0)
    const out = JSON.parse(r.stdout)
    expect([out.tenant.slug, out.tenant.tier, out.tenant.status, out.rows, out.replaced, out.tables]).toEqual(['acme-copy', 'database', 'active', 5, false, [{ name: 'projects', rows: 3 }, { name: 'tasks', rows: 2 }]])
    expect(out.tenant.id).not.toBe(acmeId)
    expect(out.tenant.placement.database).toMatch(new RegExp(`^${PREFIX}_t_`))
    expect(await rowsOf('acme-copy')).toEqual(EXPECTED)
    expect(await rowsOf('acme')).toEqual(EXPECTED)
    // tenant_id was rewritten: the copy's rows carry its own id
    const ids = await tenantry.withTenant('acme-copy', async () => (await tenantry.db.query<{ tenant_id: string }>('SELECT DISTINCT tenant_id::text FROM projects')).rows)
    expect(ids).toEqual([{ tenant_id: out.tenant.id }])
    // Recorded once, by the restore operation itself: its start and outcome with the OS user and the archive's facts.
    const record = (await tenantry.audit.list({ tenant: 'acme-copy' })).filter((e) => e.details.operationId === out.operationId)
    expect(record.map((e) => [e.action, e.actor.startsWith('cli:'), e.requestId])).toEqual([['operation.restore.done', true, null], ['operation.restore.start', true, null]])
    expect(record[0].details.facts).toMatchObject({ archiveId: out.archiveId, rows: 5, replaced: false })
    expect(await tenantry.audit.list({ action: 'backup.restore' })).toEqual([])
  })

  it('export <slug> --format jsonl writes a manifest and one JSON-lines file per table, row for row', async () => {
    const r = await run('export', 'acme', '--format', 'jsonl', '--to', join(dir, 'exports'), '--json')
    expect(r.code, show(r)).toBe(0)
    const e = JSON.parse(r.stdout)
    expect([e.slug, e.format, e.subject, e.rows, e.tables.map((t: { name: string; file: string; rows: number }) => [t.name, t.file, t.rows])]).toEqual(['acme', 'jsonl', false, 5, [['projects', 'projects.jsonl', 3], ['tasks', 'tasks.jsonl', 2]]])
    const lines = (file: string) => readFileSync(join(e.path, file), 'utf8').trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>)
    expect(lines('projects.jsonl').map((p) => [String(p.id), p.name, p.tenant_id])).toEqual(EXPECTED.projects.map((p) => [p.id, p.name, acmeId]))
    expect(lines('tasks.jsonl').map((t) => [String(t.id), String(t.project_id), t.title, t.done])).toEqual(EXPECTED.tasks.map((t) => [t.id, t.project_id, t.title, t.done]))
    const manifest = JSON.parse(readFileSync(join(e.path, 'manifest.json'), 'utf8'))
    expect([manifest.format, manifest.tenant.slug, manifest.rows]).toEqual(['tenantry-export-jsonl', 'acme', 5])
    const bad = await run('export', 'acme', '--format', 'xml')
    expect(bad.code, show(bad)).toBe(2)
    expect(bad.stderr).toMatch(/--format must be one of jsonl, csv/)
  })

  it('erase refuses a tenant that is not deleted (CONFLICT); after tenants delete it erases it and prints a verified certificate, kept for erasures', async () => {
    const refused = await run('erase', 'acme-copy')
    expect(refused.code, show(refused)).toBe(1)
    expect(refused.stderr).toMatch(/^error CONFLICT: Tenant 'acme-copy' is active: delete it first/m)
    expect((await tenantry.findTenant('acme-copy'))?.status).toBe('active')

    const copy = (await tenantry.findTenant('acme-copy'))!
    // an archive of the copy: the erasure deletes it and destroys the copy's data key
    const backup = await run('backup', 'acme-copy', '--json')
    expect(backup.code, show(backup)).toBe(0)
    const copyArchive = JSON.parse(backup.stdout).path as string
    expect(copyArchive.startsWith(join(dir, 'default-backups'))).toBe(true)
    const del = await run('tenants', 'delete', 'acme-copy')
    expect(del.code, show(del)).toBe(0)
    const r = await run('erase', 'acme-copy', '--json')
    expect(r.code, show(r)).toBe(0)
    const c = JSON.parse(r.stdout)
    expect([c.tenant.id, c.tenant.slug, c.tenant.tier, c.verified, c.rowsBefore, c.rowsAfter]).toEqual([copy.id, 'acme-copy', 'database', true, 5, 0])
    expect(c.scan.every((s: { after: number }) => s.after === 0)).toBe(true)
    expect(c.catalog.every((x: { after: number }) => x.after === 0)).toBe(true)
    expect(c.cryptoShredding.dataKeyDestroyedAt).toEqual(expect.any(String))
    expect(c.archives).toEqual([{ path: copyArchive, encrypted: true, action: 'file deleted' }])
    expect(existsSync(copyArchive)).toBe(false)
    expect(existsSync(archive)).toBe(true)
    expect(await tenantry.findTenant('acme-copy')).toBeNull()
    const client = new pg.Client({ connectionString: url })
    await client.connect()
    try {
      expect((await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [copy.placement.database])).rowCount).toBe(0)
    } finally {
      await client.end()
    }
    // the original and the bystander are untouched
    expect(await rowsOf('acme')).toEqual(EXPECTED)
    expect(await tenantry.withTenant('bystander', async () => (await tenantry.db.query<{ name: string }>('SELECT name FROM projects')).rows)).toEqual([{ name: 'not acme' }])

    const kept = await run('erasures', 'acme-copy', '--json')
    expect(kept.code, show(kept)).toBe(0)
    expect(JSON.parse(kept.stdout).map((x: { certificateId: string; verified: boolean }) => [x.certificateId, x.verified])).toEqual([[c.certificateId, true]])
    const text = await run('erasures', 'acme-copy')
    expect(text.stdout).toMatch(new RegExp(`^Erasure certificate ${c.certificateId} for tenant 'acme-copy'`))
    expect(text.stdout).toMatch(/\nVERIFIED: 5 rows before, 0 rows of tenant /)
  })

  it('bad input: an unknown slug exits 1 with TENANT_NOT_FOUND; a tampered archive exits 1 with ARCHIVE_CORRUPT; nothing is written', async () => {
    const before = await footprint()
    for (const args of [['backup', 'nosuch'], ['export', 'nosuch', '--format', 'csv'], ['erase', 'nosuch', '--force']]) {
      const r = await run(...args)
      expect(r.code, show(r)).toBe(1)
      expect(r.stdout).toBe('')
      expect(r.stderr.trim().split('\n'), args.join(' ')).toEqual([expect.stringMatching(/^error TENANT_NOT_FOUND: .*'nosuch'/)])
    }
    // A row count of the (encrypted) manifest changed: its MAC no longer verifies.
    const bytes = readFileSync(archive)
    const at = bytes.indexOf(Buffer.from('"rows": 3'))
    expect(at).toBeGreaterThan(0)
    const tampered = join(dir, 'tampered.tar')
    writeFileSync(tampered, Buffer.concat([bytes.subarray(0, at), Buffer.from('"rows": 4'), bytes.subarray(at + 9)]))
    const r = await run('restore', tampered, '--as', 'tampered-copy', '--tier', 'database')
    expect(r.code, show(r)).toBe(1)
    expect(r.stdout).toBe('')
    expect(r.stderr.trim().split('\n')).toEqual([expect.stringMatching(/^error ARCHIVE_CORRUPT: /)])
    const missing = await run('restore', join(dir, 'nope.tar'), '--as', 'tampered-copy')
    expect([missing.code, missing.stderr.trim().split(':')[0]]).toEqual([1, 'error NOT_FOUND'])
    const badSlug = await run('restore', archive, '--as', 'Bad Slug')
    expect([badSlug.code, badSlug.stderr.trim().split(':')[0]]).toEqual([1, 'error TENANT_INVALID'])
    expect(await footprint()).toEqual(before)
    expect(await tenantry.findTenant('tampered-copy')).toBeNull()
    expect((await tenantry.portability.listBackups({})).map((b) => b.path)).toEqual([archive])
  })

  it('backup --pace: paced, its own process lowered, and it says whether its backends could be (the prioritize extension, the host\'s autogroup)', async () => {
    const paced = (extra: string[]) => run('backup', 'bystander', '--pace', '--no-encrypt', '--to', `${join(dir, 'paced')}/`, ...extra)
    const none = await paced([])
    expect(none.code, show(none)).toBe(0)
    expect(none.stdout).toMatch(/^Backed up 'bystander' \(pooled\): 1 rows in 2 tables, .*paced/)
    expect(none.stdout.trim().split('\n').pop()).toBe('The backends ran at full priority: the server has no prioritize extension (docs/portability.md#pacing).')
    const available = await tenantry.dataPlane.driver('main').admin(DB_NAME).query("SELECT 1 FROM pg_available_extensions WHERE name = 'prioritize'")
    if (available.rowCount === 0) return // the server lacks the package (.ci/run installs it): the part above still ran
    await tenantry.dataPlane.driver('main').admin(DB_NAME).query('CREATE EXTENSION prioritize')
    try {
      const json = await paced(['--json'])
      expect(json.code, show(json)).toBe(0)
      // The server is this machine: its kernel's setting is the one read here.
      const autogroup = readFileSync('/proc/sys/kernel/sched_autogroup_enabled', 'utf8').trim() === '1'
      expect(JSON.parse(json.stdout)).toMatchObject({ slug: 'bystander', rows: 1, encrypted: false, priority: { available: true, autogroup } })
      const text = await paced([])
      expect(text.code, show(text)).toBe(0)
      expect(text.stdout.trim().split('\n').pop()).toBe(autogroup
        ? "The backends ran at nice 19, but the server's kernel has autogroup on, which makes that inert (docs/portability.md#pacing)."
        : 'The backends ran at nice 19.')
    } finally {
      await tenantry.dataPlane.driver('main').admin(DB_NAME).query('DROP EXTENSION prioritize')
    }
  })
})
