import { copyFileSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createTenantry, type Tenantry } from '../src/index.ts'
import { DEMO_MIGRATIONS, dropPostgresLeftovers, freshDatabase, PG_ADMIN_URL, postgresAvailable } from './helpers/backends.ts'
import { children, cli, CliProcess, show, sleep } from './helpers/cli-process.ts'
import { PrivatePostgres, privatePostgresPossible } from './fixtures/guard-servers.ts'

// Invariant 7 for moves (issue 14): the real `tenantry move` CLI is killed with SIGKILL at each
// step (src/lifecycle/faults.ts stops it there; the kill is real) while this process keeps writing
// to the tenant; the next `operations resume` rolls back (before the switch) or finishes (after
// it). The tenant serves from exactly one placement, and no acknowledged write is lost.

const DB_NAME = 'tenantry_test_moves_kill'
const PREFIX = 'tp_mkill'
const PG_UP = await postgresAvailable()

if (!PG_UP) console.warn('[moves-kill] PostgreSQL is not reachable: the kill -9 tests are SKIPPED (they need a real server).')

describe.skipIf(!PG_UP)('kill -9 of a move at each step, then resume (PostgreSQL)', { timeout: 240_000 }, () => {
  let url: string
  let dir: string
  let env: Record<string, string>
  let db: pg.Pool
  let cluster: pg.Pool
  let t: Tenantry
  const acked: string[] = []

  const row = async () => (await db.query<{ id: string; status: string; tier: string; schema: string | null; database: string; server: string }>("SELECT id, status, tier, schema, database, server FROM tenantry.tenants WHERE slug = 'acme'")).rows[0]
  const ops = async () => (await db.query<{ state: string; step: string }>("SELECT state, step FROM tenantry.operations WHERE kind = 'move' ORDER BY created_at DESC LIMIT 1")).rows[0]
  const names = async () => (await t.withTenant('acme', () => t.db.query<{ name: string }>('SELECT name FROM projects ORDER BY id'))).rows.map((r) => r.name)
  const schemas = async () => (await db.query<{ nspname: string }>("SELECT nspname FROM pg_namespace WHERE nspname LIKE 't\\_%'")).rows.map((r) => r.nspname)
  const databases = async () => (await cluster.query<{ datname: string }>('SELECT datname FROM pg_database WHERE datname LIKE $1', [`${PREFIX}_t_%`])).rows.map((r) => r.datname)
  const fences = async () => (await db.query("SELECT tenant_id FROM tenantry.move_fences").catch(() => ({ rows: [] }))).rows
  // The capture triggers and captured changes of an online move (docs/moves.md) are gone with the fence.
  const captures = async () => [
    ...(await db.query<{ tgname: string }>("SELECT tgname FROM pg_trigger WHERE tgname LIKE 'tenantry\\_move\\_%' ORDER BY tgname")).rows.map((r) => r.tgname),
    ...(await db.query<{ n: number }>('SELECT count(*)::int AS n FROM tenantry.move_changes').catch(() => ({ rows: [{ n: 0 }] }))).rows.filter((r) => r.n > 0).map((r) => `${r.n} changes`),
  ]
  const write = async (name: string) => {
    await t.withTenant('acme', () => t.db.query('INSERT INTO projects (name) VALUES ($1)', [name]))
    acked.push(name)
  }

  beforeAll(async () => {
    await dropPostgresLeftovers(PREFIX, DB_NAME)
    url = await freshDatabase(DB_NAME)
    dir = mkdtempSync(join(tmpdir(), 'tenantry-moves-kill-'))
    copyFileSync(join(DEMO_MIGRATIONS, '0001_projects_and_tasks.sql'), join(dir, '0001_projects_and_tasks.sql'))
    env = { DATABASE_URL: url, TENANTRY_ROLE_PREFIX: PREFIX, TENANTRY_MIGRATIONS: dir }
    db = new pg.Pool({ connectionString: url, max: 3 })
    cluster = new pg.Pool({ connectionString: PG_ADMIN_URL, max: 2 })
    // resumeOperations: false — the test process must not finish what the CLI is supposed to finish.
    t = await createTenantry({ databaseUrl: url, rolePrefix: PREFIX, migrations: dir, resumeOperations: false, observe: { metering: false } })
    await t.provision({ slug: 'acme', tier: 'pooled' })
    await t.provision({ slug: 'bystander', tier: 'pooled' })
    for (const n of ['a', 'b', 'c']) await write(n)
  }, 120_000)

  afterAll(async () => {
    for (const c of children) c.kill('SIGKILL')
    await t?.close()
    await db?.end()
    await cluster?.end()
    if (dir) rmSync(dir, { recursive: true, force: true })
    if (PG_UP) await dropPostgresLeftovers(PREFIX, DB_NAME)
  })

  // The online move's steps in order: the capture triggers are on from move:copy, the fence from move:switch.
  for (const point of ['move:prepare', 'move:capture', 'move:copy', 'move:verify', 'move:catchup', 'move:fence', 'move:switch']) {
    it(`killed at ${point}: the tenant serves from its old room; a write sent meanwhile is kept; resume rolls back; the move then succeeds`, async () => {
      const before = await row()
      const p = new CliProcess(['move', 'acme', '--tier', 'database'], { ...env, TENANTRY_FAULT: `pause:${point}` })
      await p.waitForStderr(new RegExp(`tenantry-fault: paused at ${point}\\n`))
      // Before the fence this write goes through (captured from move:copy on); at move:switch it waits
      // (it does not fail) until the resume below takes the fence off.
      const pending = write(`during-${point}`)
      if (point === 'move:copy') {
        // The capture is on: acme's write is captured by its primary key; another tenant of the pooled table is not (WHEN tenant_id = acme).
        await pending
        await t.withTenant('bystander', () => t.db.query("INSERT INTO projects (name) VALUES ('not-captured')"))
        const changes = await db.query<{ table_name: string; key: { tenant_id: string; id: number }; op: string; tenant_id: string }>('SELECT table_name, key, op, tenant_id FROM tenantry.move_changes ORDER BY seq')
        const id = (await t.withTenant('acme', () => t.db.query<{ id: number }>('SELECT id FROM projects WHERE name = $1', [`during-${point}`]))).rows[0].id
        expect(changes.rows).toEqual([{ table_name: 'projects', key: { tenant_id: before.id, id: Number(id) }, op: 'I', tenant_id: before.id }])
      }
      await sleep(150)
      await p.kill9()
      expect(await row()).toEqual(before)
      const r = await cli(['operations', 'resume', '--json'], env)
      expect(r.code, show(r)).toBe(0)
      await pending
      expect(await ops()).toEqual({ state: 'rolled_back', step: 'rollback' })
      expect(await row()).toEqual(before)
      expect(await fences()).toEqual([])
      expect(await captures()).toEqual([])
      expect(await databases()).toEqual([])
      expect(await names()).toEqual(acked)
    })
  }

  it('killed after the switch: resume finishes; the tenant serves from the new room with every write; suspended meanwhile it stays suspended', async () => {
    const p = new CliProcess(['move', 'acme', '--tier', 'schema', '--grace', '0'], { ...env, TENANTRY_FAULT: 'pause:move:cleanup' })
    await p.waitForStderr(/tenantry-fault: paused at move:cleanup\n/)
    await p.kill9()
    expect((await row()).tier).toBe('schema')
    await write('after-switch')
    expect(await names()).toEqual(acked)
    await t.suspend('acme', 'billing')
    const r = await cli(['operations', 'resume', '--json'], env)
    expect(r.code, show(r)).toBe(0)
    expect(await ops()).toEqual({ state: 'done', step: 'done' })
    expect(await row()).toMatchObject({ status: 'suspended', tier: 'schema' })
    await t.resume('acme')
    expect(await names()).toEqual(acked)
    // A move of a suspended tenant is allowed: its data moves, it stays suspended.
  })

  it.skipIf(!privatePostgresPossible())('the target server stops mid-copy: the move fails with a code and rolls back; the tenant serves from its old room only; the next move replaces the half-made room', async () => {
    const second = await PrivatePostgres.create()
    try {
      await t.addServer({ name: 'third', url: second.url })
      const before = await row()
      const steps: string[] = []
      const failed = await t.move('acme', {
        tier: 'database', server: 'third',
        onProgress: (p) => {
          steps.push(p.step)
          // The first table is loaded into the target's open transaction: the server stops under it (pg_ctl -m immediate, synchronous).
          if (p.step === 'copy' && p.tablesDone === 1) void second.stop()
        },
      }).then(() => null, (err: { code?: string; message?: string }) => err)
      expect(failed?.code, failed?.message).toBe('MOVE_FAILED')
      expect(steps.filter((s, i) => s !== steps[i - 1])).toEqual(['prepare', 'capture', 'copy'])
      expect(await row()).toEqual(before)
      expect(await fences()).toEqual([])
      expect(await captures()).toEqual([])
      expect(await ops()).toEqual({ state: 'rolled_back', step: 'rollback' })
      await write('target-stopped-mid-copy')
      expect(await names()).toEqual(acked)
      await second.start()
      const ok = await cli(['move', 'acme', '--tier', 'database', '--server', 'third', '--grace', '0'], env)
      expect(ok.code, show(ok)).toBe(0)
      expect((await row()).server).toBe('third')
      expect(await names()).toEqual(acked)
    } finally {
      await t.move('acme', { tier: 'pooled', server: 'main', graceMs: 0 }).catch(() => undefined)
      await second.close()
    }
  })

  it.skipIf(!privatePostgresPossible())('the target server stopped: the move fails with a code and rolls back; the tenant serves from its old room; the next move works', async () => {
    const second = await PrivatePostgres.create()
    try {
      await t.addServer({ name: 'second', url: second.url })
      const before = await row()
      await second.stop()
      const r = await cli(['move', 'acme', '--tier', 'database', '--server', 'second'], env)
      expect(r.code, show(r)).toBe(1)
      expect(r.stderr).toMatch(/error (MOVE_FAILED|TENANT_UNAVAILABLE)/)
      expect(await row()).toEqual(before)
      expect(await fences()).toEqual([])
      await write('target-down')
      expect(await names()).toEqual(acked)
      await second.start()
      const ok = await cli(['move', 'acme', '--tier', 'database', '--server', 'second', '--grace', '0'], env)
      expect(ok.code, show(ok)).toBe(0)
      expect((await row()).server).toBe('second')
      expect(await names()).toEqual(acked)
      expect(await schemas()).toEqual([])
    } finally {
      await t.move('acme', { tier: 'pooled', server: 'main', graceMs: 0 }).catch(() => undefined)
      await second.close()
    }
  })
})
