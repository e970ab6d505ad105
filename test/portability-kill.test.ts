import { copyFileSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createTenantry, type Tenantry } from '../src/index.ts'
import { DEMO_MIGRATIONS, dropPostgresLeftovers, freshDatabase, PG_ADMIN_URL, postgresAvailable } from './helpers/backends.ts'
import { children, cli, CliProcess, show } from './helpers/cli-process.ts'

// Invariant 7 for backup, restore and erase: the real `tenantry` CLI is killed with SIGKILL at the
// fault points of each operation (src/lifecycle/faults.ts stops it there; the kill is real), and the
// next command rolls back or finishes — never a half-restored tenant served.

const DB_NAME = 'tenantry_test_portability_kill'
const PREFIX = 'tp_pkill'
const PG_UP = await postgresAvailable()
const MASTER = 'c3'.repeat(32)

if (!PG_UP) console.warn('[portability-kill] PostgreSQL is not reachable: the kill -9 tests are SKIPPED (they need a real server).')

describe.skipIf(!PG_UP)('kill -9 of backup, restore and erase, then resume (PostgreSQL)', { timeout: 240_000 }, () => {
  let url: string
  let dir: string
  let env: Record<string, string>
  let db: pg.Pool
  let cluster: pg.Pool
  let t: Tenantry
  let archive: string

  const tenantRow = async (slug: string) =>
    (await db.query<{ id: string; status: string; tier: string; schema: string | null; database: string }>('SELECT id, status, tier, schema, database FROM tenantry.tenants WHERE slug = $1', [slug])).rows[0]
  const opsOf = async (kind: string, slug: string) =>
    (await db.query<{ state: string; step: string; error: string | null }>('SELECT state, step, error FROM tenantry.operations WHERE kind = $1 AND slug = $2 ORDER BY created_at', [kind, slug])).rows
  const names = async (slug: string) => (await t.withTenant(slug, () => t.db.query<{ name: string }>('SELECT name FROM projects ORDER BY id'))).rows.map((r) => r.name)
  const schemaExists = async (schema: string) => (await db.query('SELECT 1 FROM pg_namespace WHERE nspname = $1', [schema])).rowCount === 1
  const databasesLike = async (prefix: string) => (await cluster.query<{ datname: string }>('SELECT datname FROM pg_database WHERE datname LIKE $1', [`${prefix}%`])).rows.map((r) => r.datname)

  /** Run a CLI command until it stops at `point`, kill -9 it. */
  async function killAt(args: string[], point: string): Promise<void> {
    const p = new CliProcess(args, { ...env, TENANTRY_FAULT: `pause:${point}` })
    await p.waitForStderr(new RegExp(`tenantry-fault: paused at ${point}\\n`))
    await p.kill9()
  }

  async function resume(): Promise<void> {
    const r = await cli(['operations', 'resume', '--json'], env)
    expect(r.code, show(r)).toBe(0)
    expect((await db.query("SELECT kind, slug FROM tenantry.operations WHERE state = 'running'")).rows).toEqual([])
  }

  beforeAll(async () => {
    await dropPostgresLeftovers(PREFIX, DB_NAME)
    url = await freshDatabase(DB_NAME)
    dir = mkdtempSync(join(tmpdir(), 'tenantry-portability-kill-'))
    copyFileSync(join(DEMO_MIGRATIONS, '0001_projects_and_tasks.sql'), join(dir, '0001_projects_and_tasks.sql'))
    env = { DATABASE_URL: url, TENANTRY_ROLE_PREFIX: PREFIX, TENANTRY_MIGRATIONS: dir, TENANTRY_MASTER_KEY: MASTER }
    db = new pg.Pool({ connectionString: url, max: 3 })
    cluster = new pg.Pool({ connectionString: PG_ADMIN_URL, max: 2 })
    // resumeOperations: false — the test process must not finish what the CLI is supposed to finish.
    t = await createTenantry({ databaseUrl: url, rolePrefix: PREFIX, migrations: dir, resumeOperations: false, observe: { metering: false }, portability: { masterKey: MASTER } })
    await t.provision({ slug: 'src', tier: 'pooled' })
    await t.provision({ slug: 'live', tier: 'schema' })
    await t.withTenant('src', () => t.db.query("INSERT INTO projects (name) VALUES ('a'), ('b'), ('c')"))
    await t.withTenant('live', () => t.db.query("INSERT INTO projects (name) VALUES ('old')"))
    archive = (await t.portability.backup('src', { to: join(dir, 'src.tar') })).path
  }, 120_000)

  afterAll(async () => {
    for (const c of children) c.kill('SIGKILL')
    await t?.close()
    await db?.end()
    await cluster?.end()
    if (dir) rmSync(dir, { recursive: true, force: true })
    if (PG_UP) await dropPostgresLeftovers(PREFIX, DB_NAME)
  })

  it('CLI: tables on stdout, usage errors exit 2, refusals exit 1 with their code', async () => {
    const list = await cli(['backups', 'list', '--tenant', 'src'], env)
    expect(list.code, show(list)).toBe(0)
    expect(list.stdout.split('\n')[0].split(/\s{2,}/)).toEqual(['CREATED', 'TENANT', 'TIER', 'ROWS', 'SIZE', 'ENCRYPTED', 'PATH'])
    expect(list.stdout).toContain(`src     pooled  3     `)
    const badFormat = await cli(['export', 'src', '--format', 'xml'], env)
    expect([badFormat.code, badFormat.stderr.includes('--format must be one of jsonl, csv')]).toEqual([2, true])
    const badTier = await cli(['restore', archive, '--tier', 'cluster'], env)
    expect(badTier.code).toBe(2)
    const corrupt = await cli(['restore', join(dir, '0001_projects_and_tasks.sql'), '--as', 'never'], env)
    expect([corrupt.code, corrupt.stderr.trim().split(':')[0], corrupt.stdout]).toEqual([1, 'error ARCHIVE_CORRUPT', ''])
    const taken = await cli(['restore', archive], env)
    expect([taken.code, taken.stderr.trim().split(':')[0]]).toEqual([1, 'error CONFLICT'])
    const live = await cli(['erase', 'live'], env)
    expect([live.code, live.stderr.trim().split(':')[0]]).toEqual([1, 'error CONFLICT'])
    expect(await tenantRow('never')).toBeUndefined()
  })

  it('a backup killed after its snapshot is rolled back: no partial file, no record; the next backup works', async () => {
    const target = join(dir, 'killed.tar')
    await killAt(['backup', 'src', '--to', target], 'backup:pack')
    expect(existsSync(`${target}.spool`)).toBe(true)
    // The audit intent committed with the operation row, so the killed backup is on record.
    const intent = (await t.audit.list({ tenant: 'src', action: 'operation.backup.start', limit: 1 }))[0]
    expect(intent.actor).toMatch(/^cli:/)
    await resume()
    const outcome = (await t.audit.list({ tenant: 'src', action: 'operation.backup.rolled_back' })).map((e) => [e.actor, e.details.operationId])
    expect(outcome).toEqual([[intent.actor, intent.details.operationId]])
    expect(await opsOf('backup', 'src')).toEqual([
      { state: 'done', step: 'done', error: null },
      { state: 'rolled_back', step: 'pack', error: 'The backup did not finish; its partial files were removed. Run it again.' },
    ])
    expect(readdirSync(dir).filter((f) => f.startsWith('killed'))).toEqual([])
    expect((await t.portability.listBackups({ tenant: 'src' })).length).toBe(1)
    const again = await cli(['backup', 'src', '--to', target, '--json'], env)
    expect(again.code, show(again)).toBe(0)
    expect(JSON.parse(again.stdout)).toMatchObject({ path: target, rows: 3, encrypted: true })
    // The CLI's backup is recorded once: its operation's start and outcome (with the archive's path and rows), no summary entry.
    const done = (await t.audit.list({ tenant: 'src', action: 'operation.backup.done', limit: 1 }))[0]
    expect([done.actor, done.details.facts]).toEqual([intent.actor, expect.objectContaining({ path: target, rows: 3 })])
    expect(await t.audit.list({ action: 'backup.create' })).toEqual([])
  })

  it('a restore as a new tenant killed before or after its load is never served, and is rolled back with its database', async () => {
    for (const [point, slug] of [['restore:load', 'copy-a'], ['restore:switch', 'copy-b']] as const) {
      await killAt(['restore', archive, '--as', slug, '--tier', 'database'], point)
      const row = await tenantRow(slug)
      expect(row.status).toBe('provisioning')
      expect(await t.withTenant(slug, async () => 'served').catch((e) => e.code)).toBe('TENANT_NOT_READY')
      expect(await databasesLike(row.database)).toEqual([row.database])
      await resume()
      expect(await tenantRow(slug)).toBeUndefined()
      expect(await databasesLike(row.database)).toEqual([])
      expect(await opsOf('restore', slug)).toEqual([{ state: 'rolled_back', step: 'rollback', error: 'The restore did not finish; what it had loaded was removed.' }])
    }
  })

  it('a parallel restore as a new pooled tenant killed after a table committed is never served; its committed rows are removed', async () => {
    await killAt(['restore', archive, '--as', 'copy-p', '--tier', 'pooled'], 'restore:table')
    const row = await tenantRow('copy-p')
    expect([row.status, row.tier]).toEqual(['provisioning', 'pooled'])
    expect(await t.withTenant('copy-p', async () => 'served').catch((e) => e.code)).toBe('TENANT_NOT_READY')
    const rowsOf = async () => (await db.query<{ n: string }>('SELECT count(*) AS n FROM public.projects WHERE tenant_id = $1', [row.id])).rows[0].n
    expect(await rowsOf()).toBe('3') // projects committed on its own; tasks (the next wave) not started
    await resume()
    expect(await tenantRow('copy-p')).toBeUndefined()
    expect(await rowsOf()).toBe('0')
    expect(await opsOf('restore', 'copy-p')).toEqual([{ state: 'rolled_back', step: 'rollback', error: 'The restore did not finish; what it had loaded was removed.' }])
  })

  it('--replace killed before the switch leaves the old data serving; killed after it, the next command finishes it', async () => {
    const before = await tenantRow('live')
    await killAt(['restore', archive, '--as', 'live', '--replace'], 'restore:switch')
    const staging = (await db.query<{ n: string }>("SELECT nspname AS n FROM pg_namespace WHERE nspname LIKE $1 || '\\_r%'", [before.schema])).rows.map((r) => r.n)
    expect(staging.length).toBe(1)
    expect(await names('live')).toEqual(['old'])
    await resume()
    expect(await names('live')).toEqual(['old'])
    expect(await schemaExists(staging[0])).toBe(false)
    expect(await tenantRow('live')).toEqual(before)

    await killAt(['restore', archive, '--as', 'live', '--replace'], 'restore:cleanup')
    const switched = await tenantRow('live')
    expect(switched.schema).not.toBe(before.schema)
    expect(await names('live')).toEqual(['a', 'b', 'c'])
    expect(await schemaExists(before.schema!)).toBe(true)
    await resume()
    expect(await schemaExists(before.schema!)).toBe(false)
    expect(await names('live')).toEqual(['a', 'b', 'c'])
    expect((await opsOf('restore', 'live')).map((o) => o.state)).toEqual(['rolled_back', 'done'])
  })

  it('an export killed mid-table is rolled back: its partial directory removed; the next export works', async () => {
    const to = join(dir, 'exports')
    await killAt(['export', 'live', '--format', 'jsonl', '--to', to], 'export:table')
    expect(readdirSync(to).filter((f) => f.endsWith('.partial')).length).toBe(1)
    await resume()
    expect(readdirSync(to)).toEqual([])
    expect(await opsOf('export', 'live')).toEqual([{ state: 'rolled_back', step: 'snapshot', error: 'The export did not finish; its partial directory was removed. Run it again.' }])
    const again = await cli(['export', 'live', '--format', 'csv', '--to', to, '--json'], env)
    expect(again.code, show(again)).toBe(0)
    expect(JSON.parse(again.stdout)).toMatchObject({ slug: 'live', format: 'csv', rows: 3, tables: [{ name: 'projects', rows: 3 }, { name: 'tasks', rows: 0 }] })
  })

  it('an erase killed after removing the rows goes forward: the key is destroyed and the certificate verified', async () => {
    await t.delete('src')
    await killAt(['erase', 'src'], 'erase:shred')
    expect(await tenantRow('src')).toBeUndefined()
    expect((await db.query('SELECT wrapped_key IS NOT NULL AS live FROM tenantry.tenant_keys')).rows).toEqual([{ live: true }])
    await resume()
    expect((await db.query('SELECT wrapped_key IS NOT NULL AS live FROM tenantry.tenant_keys')).rows).toEqual([{ live: false }])
    expect(await opsOf('erase', 'src')).toEqual([{ state: 'done', step: 'certificate', error: null }])
    const certs = await cli(['erasures', 'src', '--json'], env)
    expect(certs.code, show(certs)).toBe(0)
    const [cert] = JSON.parse(certs.stdout)
    expect([cert.verified, cert.rowsBefore, cert.rowsAfter, cert.removed]).toEqual([true, 3, 0, ['0 rows from public.tasks', '3 rows from public.projects', "catalog row of 'src'"]])
    expect(cert.archives.map((a: { action: string }) => a.action)).toEqual(['file deleted', 'file deleted'])
  })
})
