import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { hostname, tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createTenantry, type Tenant, type Tenantry } from '../src/index.ts'
import { dropPostgresLeftovers, freshDatabase, PG_ADMIN_URL, postgresAvailable } from './helpers/backends.ts'
import { children, cli, CliProcess, REPO, show, sleep } from './helpers/cli-process.ts'

// Invariant 7 for real: the `tenantry` CLI is killed with SIGKILL (kill -9) in the middle of a
// provision, a fleet migration and a purge, and the next run must finish the work with every
// tenant at one version and nothing orphaned. The fault points (src/lifecycle/faults.ts) only make
// the process stop at a known place; the kill itself is real.

const DB_NAME = 'tenantry_test_lifecycle_kill'
// Roles and databases are cluster-wide on a real server: everything this file makes carries this prefix.
const PREFIX = 'tl_kill'
const PG_UP = await postgresAvailable()
const HOST = hostname()
const HOST_RE = HOST.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
const TIERS = ['pooled', 'schema', 'database'] as const
type Tier = (typeof TIERS)[number]

if (!PG_UP) console.warn('[lifecycle-kill] PostgreSQL is not reachable: the kill -9 tests are SKIPPED (they need a real server).')

/** Run `fn` over `items`, at most `n` at once. */
async function inParallel<T, R>(items: T[], n: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length)
  let next = 0
  await Promise.all(Array.from({ length: n }, async () => {
    while (next < items.length) {
      const i = next++
      out[i] = await fn(items[i])
    }
  }))
  return out
}

async function cleanUpPostgres(): Promise<void> {
  await dropPostgresLeftovers(PREFIX, DB_NAME)
}

describe.skipIf(!PG_UP)('kill -9 of the tenantry CLI, then resume (PostgreSQL)', { timeout: 240_000 }, () => {
  let url: string
  let migrations: string
  let env: Record<string, string>
  let db: pg.Pool
  let cluster: pg.Pool
  const hex = (id: string) => id.replace(/-/g, '')

  /** Admin URL of another database on the test server. */
  const urlOf = (database: string) => {
    const u = new URL(url)
    u.pathname = `/${database}`
    return u.toString()
  }

  async function inDatabase<T>(database: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
    const c = new pg.Client({ connectionString: urlOf(database) })
    await c.connect()
    try {
      return await fn(c)
    } finally {
      await c.end()
    }
  }

  /** Schemas of the main database, and the roles and databases of this file's prefix. */
  async function objects(): Promise<{ schemas: string[]; roles: string[]; databases: string[] }> {
    const schemas = await db.query<{ n: string }>(`SELECT nspname AS n FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema' ORDER BY 1`)
    const roles = await cluster.query<{ n: string }>(`SELECT rolname AS n FROM pg_roles WHERE rolname LIKE $1 ORDER BY 1`, [`${PREFIX}\\_%`])
    const dbs = await cluster.query<{ n: string }>(`SELECT datname AS n FROM pg_database WHERE datname LIKE $1 ORDER BY 1`, [`${PREFIX}\\_%`])
    return { schemas: schemas.rows.map((r) => r.n), roles: roles.rows.map((r) => r.n), databases: dbs.rows.map((r) => r.n) }
  }

  const plus = (o: { schemas: string[]; roles: string[]; databases: string[] }, add: { schemas?: string[]; roles?: string[]; databases?: string[] }) => ({
    schemas: [...o.schemas, ...(add.schemas ?? [])].sort(),
    roles: [...o.roles, ...(add.roles ?? [])].sort(),
    databases: [...o.databases, ...(add.databases ?? [])].sort(),
  })

  /** What a tenant of `tier` owns on the server once provisioned. */
  function roomOf(tier: Tier, id: string): { schemas: string[]; roles: string[]; databases: string[] } {
    if (tier === 'pooled') return { schemas: [], roles: [], databases: [] }
    if (tier === 'schema') return { schemas: [`t_${hex(id)}`], roles: [`${PREFIX}_t_${hex(id)}`], databases: [] }
    return { schemas: [], roles: [`${PREFIX}_t_${hex(id)}`], databases: [`${PREFIX}_t_${hex(id)}`] }
  }

  const tenantRow = async (slug: string) =>
    (await db.query<{ id: string; status: string; tier: Tier; schema: string | null; database: string }>('SELECT id, status, tier, schema, database FROM tenantry.tenants WHERE slug = $1', [slug])).rows[0]

  const opsOf = async (kind: string, slug: string) =>
    (await db.query<{ id: string; state: string; step: string; owner: string | null; error: string | null; progress: Record<string, unknown>; finished_at: Date | null }>(
      'SELECT id, state, step, owner, error, progress, finished_at FROM tenantry.operations WHERE kind = $1 AND slug = $2 ORDER BY created_at', [kind, slug],
    )).rows

  /** Versions in the ledger of a schema/database tenant's own target (or the pooled target). */
  async function ledgerOf(t: { tier: Tier; schema: string | null; database: string }): Promise<string[]> {
    const q = 'SELECT version FROM tenantry.migrations WHERE target = $1 ORDER BY version'
    if (t.tier === 'database') return inDatabase(t.database, async (c) => (await c.query<{ version: string }>(q, ['public'])).rows.map((r) => r.version))
    return (await db.query<{ version: string }>(q, [t.tier === 'schema' ? t.schema : 'public'])).rows.map((r) => r.version)
  }

  /** Whether `column` exists on `table` of a tenant's own target (or the pooled target). */
  async function hasColumn(t: { tier: Tier; schema: string | null; database: string }, table: string, column: string): Promise<boolean> {
    const q = 'SELECT 1 FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 AND column_name = $3'
    if (t.tier === 'database') return inDatabase(t.database, async (c) => (await c.query(q, ['public', table, column])).rowCount === 1)
    return (await db.query(q, [t.tier === 'schema' ? t.schema : 'public', table, column])).rowCount === 1
  }

  async function openInProcess(): Promise<Tenantry> {
    // resumeOperations: false — the test process must not finish what the CLI is supposed to finish.
    return createTenantry({ databaseUrl: url, rolePrefix: PREFIX, migrations, resumeOperations: false })
  }

  beforeAll(async () => {
    await cleanUpPostgres()
    url = await freshDatabase(DB_NAME)
    migrations = mkdtempSync(join(tmpdir(), 'tenantry-kill-migrations-'))
    copyFileSync(join(REPO, 'demo/migrations/0001_projects_and_tasks.sql'), join(migrations, '0001_projects_and_tasks.sql'))
    env = { DATABASE_URL: url, TENANTRY_ROLE_PREFIX: PREFIX, TENANTRY_MIGRATIONS: migrations }
    db = new pg.Pool({ connectionString: url, max: 4 })
    cluster = new pg.Pool({ connectionString: PG_ADMIN_URL, max: 2 })
    const t = await openInProcess()
    try {
      expect((await t.migrate()).state).toBe('done')
      // The first database-tier tenant makes the server's template database; do it now so the
      // object snapshots below compare tenants only.
      await t.provision({ slug: 'seed-db', tier: 'database' })
    } finally {
      await t.close()
    }
  })

  afterAll(async () => {
    for (const c of children) c.kill('SIGKILL')
    await db?.end()
    await cluster?.end()
    if (migrations) rmSync(migrations, { recursive: true, force: true })
    if (PG_UP) await cleanUpPostgres()
  })

  it('provision killed at every fault point, in every tier, is finished by the next command: active, doctor clean, nothing extra', async () => {
    const POINTS = ['provision:room', 'provision:migrate', 'provision:activate'] as const
    // The step recorded when the process stops at each point (the step is written after the point).
    const STEP_AT: Record<(typeof POINTS)[number], string> = { 'provision:room': 'room', 'provision:migrate': 'room', 'provision:activate': 'migrate' }
    const cases = TIERS.flatMap((tier) => POINTS.map((point) => ({ tier, point, slug: `k-${tier}-${point.slice('provision:'.length)}` })))
    const before = await objects()

    const procs = cases.map((c) => new CliProcess(['tenants', 'create', c.slug, '--tier', c.tier], { ...env, TENANTRY_FAULT: `pause:${c.point}` }))
    await Promise.all(procs.map((p, i) => p.waitForStderr(new RegExp(`tenantry-fault: paused at ${cases[i].point}\\n`))))

    // Stopped where we think: the row is provisioning, the operation running and owned by that process.
    const ids = new Map<string, string>()
    let midway = before
    for (const [i, c] of cases.entries()) {
      const row = await tenantRow(c.slug)
      expect(row, c.slug).toMatchObject({ status: 'provisioning', tier: c.tier })
      ids.set(c.slug, row.id)
      const ops = await opsOf('provision', c.slug)
      // A pooled provision records no step of its own (its room and tables already exist): it stays at 'room'.
      const step = c.tier === 'pooled' ? 'room' : STEP_AT[c.point]
      expect(ops.map((o) => ({ state: o.state, step: o.step })), c.slug).toEqual([{ state: 'running', step }])
      expect(ops[0].owner).toMatch(new RegExp(`^${HOST_RE}:${procs[i].pid}:[0-9a-f]{6}$`))
      // What exists at the point: a database is made before the migrate step; role, schema and tables with it.
      const room = roomOf(c.tier, row.id)
      if (c.point === 'provision:activate') midway = plus(midway, room)
      else if (c.point === 'provision:migrate') midway = plus(midway, { databases: room.databases })
    }
    expect(await objects()).toEqual(midway)

    await Promise.all(procs.map((p) => p.kill9()))

    // The next command — any command — takes the orphans over at start-up and finishes them.
    const list = await cli(['tenants', 'list', '--json'], env)
    expect(list.code, show(list)).toBe(0)
    const listed = JSON.parse(list.stdout) as { slug: string; status: string }[]
    expect(listed.filter((t) => t.slug.startsWith('k-')).map((t) => [t.slug, t.status]).sort()).toEqual(cases.map((c) => [c.slug, 'active']).sort())

    // Nothing is left running.
    expect((await db.query(`SELECT id FROM tenantry.operations WHERE state = 'running'`)).rows).toEqual([])

    let expected = before
    for (const c of cases) {
      const row = await tenantRow(c.slug)
      expect(row.status, c.slug).toBe('active')
      const ops = await opsOf('provision', c.slug)
      expect(ops.map((o) => ({ state: o.state, step: o.step, owner: o.owner, error: o.error, finished: o.finished_at !== null })), c.slug).toEqual([
        { state: 'done', step: 'activate', owner: null, error: null, finished: true },
      ])
      if (c.tier !== 'pooled') expect(await ledgerOf(row), c.slug).toEqual(['0001'])
      expected = plus(expected, roomOf(c.tier, ids.get(c.slug)!))
    }
    // Exactly the rooms of the nine tenants: no second schema, database or role from the retries.
    expect(await objects()).toEqual(expected)

    // Doctor is clean, and each one serves requests as its own role.
    const t = await openInProcess()
    try {
      expect((await t.doctor()).findings).toEqual([])
      for (const c of cases) {
        const rows = await t.withTenant(c.slug, () => t.db.query<{ n: number }>('INSERT INTO projects (name) VALUES ($1) RETURNING (SELECT count(*)::int FROM projects) AS n', [c.slug]))
        expect(rows.rows, c.slug).toEqual([{ n: 0 }])
      }
    } finally {
      await t.close()
    }
  })

  it('a resume that is itself killed is taken over again by the next command', async () => {
    const before = await objects()
    const create = new CliProcess(['tenants', 'create', 'k-twice', '--tier', 'schema'], { ...env, TENANTRY_FAULT: 'pause:provision:room' })
    await create.waitForStderr(/tenantry-fault: paused at provision:room\n/)
    await create.kill9()
    // The next command takes the provision over at start-up — and dies too, just before activating it.
    const resumer = new CliProcess(['tenants', 'list', '--json'], { ...env, TENANTRY_FAULT: 'pause:provision:activate' })
    await resumer.waitForStderr(/tenantry-fault: paused at provision:activate\n/)
    const [op] = await opsOf('provision', 'k-twice')
    expect(op).toMatchObject({ state: 'running', step: 'migrate' })
    expect(op.owner).toContain(`:${resumer.pid}:`)
    await resumer.kill9()
    expect(resumer.stdout).toBe('')

    const shown = await cli(['tenants', 'show', 'k-twice', '--json'], env)
    expect(shown.code, show(shown)).toBe(0)
    const tenant = JSON.parse(shown.stdout) as { id: string; status: string }
    expect(tenant.status).toBe('active')
    expect((await opsOf('provision', 'k-twice')).map((o) => [o.id, o.state, o.step, o.owner])).toEqual([[op.id, 'done', 'activate', null]])
    expect(await objects()).toEqual(plus(before, roomOf('schema', tenant.id)))
    expect(await ledgerOf((await tenantRow('k-twice'))!)).toEqual(['0001'])
  })

  it('a command without migrations leaves a killed provision to one that has them: never an active tenant without tables (issue 18)', async () => {
    const NO_MIGRATIONS = "No migrations found: pass --migrations <dir> or set TENANTRY_MIGRATIONS (default ./migrations); in code, createTenantry({ migrations: './migrations' })."
    const before = await objects()
    const create = new CliProcess(['tenants', 'create', 'k-bare', '--tier', 'schema'], { ...env, TENANTRY_FAULT: 'pause:provision:room' })
    await create.waitForStderr(/tenantry-fault: paused at provision:room\n/)
    await create.kill9()
    const [op] = await opsOf('provision', 'k-bare')
    expect(op).toMatchObject({ state: 'running', step: 'room' })
    expect(op.owner).toContain(`:${create.pid}:`)

    // A command without migrations starts and works, but does not take the provision over...
    const { TENANTRY_MIGRATIONS: _, ...bare } = env
    const list = await cli(['tenants', 'list', '--json'], bare)
    expect(list.code, show(list)).toBe(0)
    expect((JSON.parse(list.stdout) as { slug: string; status: string }[]).filter((t) => t.slug === 'k-bare')).toMatchObject([{ status: 'provisioning' }])
    expect(await opsOf('provision', 'k-bare')).toEqual([op])
    // ...and refuses it when asked for by id, with the error of provision and migrate.
    const resume = await cli(['operations', 'resume', op.id], bare)
    expect(resume).toEqual({ code: 1, signal: null, stdout: '', stderr: `error CONFIG_INVALID: ${NO_MIGRATIONS}\n` })
    expect(await opsOf('provision', 'k-bare')).toEqual([op])
    expect(await objects()).toEqual(before)

    // The next command with migrations finishes it, with its tables.
    const shown = await cli(['tenants', 'show', 'k-bare', '--json'], env)
    expect(shown.code, show(shown)).toBe(0)
    const tenant = JSON.parse(shown.stdout) as { id: string; status: string }
    expect(tenant.status).toBe('active')
    expect((await opsOf('provision', 'k-bare')).map((o) => [o.id, o.state, o.step, o.owner])).toEqual([[op.id, 'done', 'activate', null]])
    expect(await objects()).toEqual(plus(before, roomOf('schema', tenant.id)))
    expect(await ledgerOf((await tenantRow('k-bare'))!)).toEqual(['0001'])
  })

  it('a fleet migration killed mid-run leaves every target at exactly one version; the next migrate finishes it', async () => {
    const t = await openInProcess()
    const fleet: Tenant[] = []
    try {
      const specs = [
        ...Array.from({ length: 30 }, (_, i) => ({ slug: `f-s${String(i + 1).padStart(2, '0')}`, tier: 'schema' as const })),
        ...Array.from({ length: 3 }, (_, i) => ({ slug: `f-d${i + 1}`, tier: 'database' as const })),
      ]
      fleet.push(...(await inParallel(specs, 4, (s) => t.provision(s))))
    } finally {
      await t.close()
    }
    writeFileSync(join(migrations, '0002_archive.sql'), 'SELECT pg_sleep(0.05);\nALTER TABLE projects ADD COLUMN archived boolean NOT NULL DEFAULT false;\n')

    const all = (await db.query<{ slug: string; tier: Tier; schema: string | null; database: string }>(
      `SELECT slug, tier, schema, database FROM tenantry.tenants WHERE tier <> 'pooled' ORDER BY slug`,
    )).rows
    const targets = [{ slug: '(pooled)', tier: 'pooled' as Tier, schema: 'public', database: DB_NAME }, ...all]
    const labelOf = (x: { tier: Tier; schema: string | null; database: string }) =>
      x.tier === 'pooled' ? 'main/public' : x.tier === 'schema' ? `main/${x.schema}` : `main/${x.database}/public`
    expect(targets.length).toBeGreaterThanOrEqual(40)

    const run = new CliProcess(['migrate', '--concurrency', '2', '--json'], env)
    // Kill it once a few targets are done and most are not.
    let opId: string | undefined
    let doneAtKill = 0
    const deadline = Date.now() + 90_000
    for (;;) {
      if (Date.now() > deadline) throw new Error(`migrate never got going:\n${run.stdout}\n${run.stderr}`)
      if (run.child.exitCode !== null) throw new Error(`migrate finished before it could be killed:\n${run.stdout}\n${run.stderr}`)
      const op = await db.query<{ id: string }>(`SELECT id FROM tenantry.operations WHERE kind = 'migrate' AND state = 'running'`)
      if (op.rows[0]) {
        opId = op.rows[0].id
        const c = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM tenantry.operation_targets WHERE operation_id = $1 AND state = 'done'`, [opId])
        if (c.rows[0].n >= 3) {
          await run.kill9()
          doneAtKill = c.rows[0].n
          break
        }
      }
      await sleep(15)
    }

    const killed = (await db.query<{ state: string; owner: string }>('SELECT state, owner FROM tenantry.operations WHERE id = $1', [opId])).rows[0]
    expect(killed.state).toBe('running')
    expect(killed.owner).toContain(`:${run.pid}:`)
    const states = (await db.query<{ target: string; state: string }>('SELECT target, state FROM tenantry.operation_targets WHERE operation_id = $1', [opId])).rows
    expect(states).toHaveLength(targets.length)
    const done = new Set(states.filter((s) => s.state === 'done').map((s) => s.target))
    const running = new Set(states.filter((s) => s.state === 'running').map((s) => s.target))
    expect(done.size).toBeGreaterThanOrEqual(doneAtKill)
    expect(done.size).toBeLessThan(targets.length)
    expect(running.size).toBeLessThanOrEqual(2)

    // Every target is at 0001 or at 0002 — ledger row and column together, or neither.
    const migrated = new Set<string>()
    for (const x of targets) {
      const versions = await ledgerOf(x)
      const column = await hasColumn(x, 'projects', 'archived')
      expect({ target: labelOf(x), versions, column }).toEqual(
        column ? { target: labelOf(x), versions: ['0001', '0002'], column: true } : { target: labelOf(x), versions: ['0001'], column: false },
      )
      if (column) migrated.add(labelOf(x))
    }
    // Done targets are migrated; only the two that were running may have committed without being marked.
    for (const d of done) expect(migrated.has(d), d).toBe(true)
    for (const m of migrated) expect(done.has(m) || running.has(m), m).toBe(true)

    const again = await cli(['migrate', '--json'], env)
    expect(again.code, show(again)).toBe(0)
    const result = JSON.parse(again.stdout) as { operationId: string; state: string; targets: { target: string; status: string; applied: string[] }[] }
    expect(result.state).toBe('done')
    expect(result.operationId).not.toBe(opId)
    expect(result.targets.map((r) => [r.target, r.status, r.applied]).sort()).toEqual(
      targets.map((x) => labelOf(x)).map((l) => (migrated.has(l) ? [l, 'skipped', []] : [l, 'done', ['0002_archive']])).sort(),
    )
    for (const x of targets) {
      expect(await ledgerOf(x), labelOf(x)).toEqual(['0001', '0002'])
      expect(await hasColumn(x, 'projects', 'archived'), labelOf(x)).toBe(true)
    }

    // The interrupted operation is not left running: it was failed and says why; the listing shows both.
    const list = await cli(['operations', 'list', '--kind', 'migrate', '--json'], env)
    expect(list.code, show(list)).toBe(0)
    const ops = JSON.parse(list.stdout) as { id: string; state: string; error: string | null; owner: string | null }[]
    // Newest first: this run, the interrupted one, and the first run of beforeAll.
    expect(ops.slice(0, 2).map((o) => [o.id, o.state])).toEqual([[result.operationId, 'done'], [opId, 'failed']])
    expect(ops).toHaveLength(3)
    expect(ops[1].error).toMatch(/^Interrupted: the process running it died/)
    expect(ops[1].owner).toBeNull()
    // A finished operation shows no target as still running on a dead process.
    const stale = await db.query(`SELECT target FROM tenantry.operation_targets WHERE operation_id = $1 AND state = 'running'`, [opId])
    expect(stale.rows).toEqual([])
  })

  it('kill -9 of one of two migrate workers: the other takes its claimed targets over and finishes the run', async () => {
    writeFileSync(join(migrations, '0003_labels.sql'), 'ALTER TABLE tasks ADD COLUMN label text;\n')
    // A stops right after claiming its first targets (one per worker), holding them as `running`.
    // Unpaced: on a loaded machine the pacer lets one worker run, and A would never hold two.
    const a = new CliProcess(['migrate', '--concurrency', '2', '--no-pace', '--json'], { ...env, TENANTRY_FAULT: 'pause:migrate:target' })
    await a.waitForStderr(/paused at migrate:target/)
    let opId = ''
    for (const deadline = Date.now() + 30_000; ;) {
      const held = await db.query<{ operation_id: string; n: number }>(
        `SELECT operation_id, count(*)::int AS n FROM tenantry.operation_targets WHERE state = 'running' AND claimed_by LIKE $1 GROUP BY 1`, [`%:${a.pid}:%`],
      )
      if (held.rows[0]?.n === 2) {
        opId = held.rows[0].operation_id
        break
      }
      if (Date.now() > deadline) throw new Error('A did not claim two targets')
      await sleep(50)
    }
    const b = new CliProcess(['migrate', '--concurrency', '2', '--no-pace', '--json'], env)
    // B joins A's operation (A is alive), then A dies.
    for (const deadline = Date.now() + 90_000; ;) {
      const mine = await db.query(`SELECT 1 FROM tenantry.operation_targets WHERE operation_id = $1 AND claimed_by LIKE $2`, [opId, `%:${b.pid}:%`])
      if (mine.rowCount! > 0) break
      if (b.child.exitCode !== null || Date.now() > deadline) throw new Error(`B never joined:\n${b.stdout}\n${b.stderr}`)
      await sleep(20)
    }
    await a.kill9()

    const r = await b.result()
    expect(r.code, show(r)).toBe(0)
    const result = JSON.parse(r.stdout) as { operationId: string; state: string; counts: { done: number; pending: number; failed: number } }
    expect(result.operationId).toBe(opId)
    expect(result.state).toBe('done')
    expect(result.counts).toMatchObject({ pending: 0, failed: 0 })
    const op = (await db.query<{ state: string }>('SELECT state FROM tenantry.operations WHERE id = $1', [opId])).rows[0]
    expect(op.state).toBe('done')
    const rows = await db.query<{ state: string; by: string; n: number }>(
      `SELECT state, split_part(claimed_by, ':', 2) AS by, count(*)::int AS n FROM tenantry.operation_targets WHERE operation_id = $1 GROUP BY 1, 2 ORDER BY 2`, [opId],
    )
    // Every target done by B, including the two A held when it died.
    expect(rows.rows).toEqual([{ state: 'done', by: String(b.pid), n: result.counts.done }])
    const tenants = (await db.query<{ tier: Tier; schema: string | null; database: string }>(`SELECT tier, schema, database FROM tenantry.tenants WHERE tier <> 'pooled'`)).rows
    for (const x of [{ tier: 'pooled' as Tier, schema: 'public', database: DB_NAME }, ...tenants]) {
      expect(await ledgerOf(x)).toEqual(['0001', '0002', '0003'])
      expect(await hasColumn(x, 'tasks', 'label')).toBe(true)
    }
  })

  it('purge killed before its catalog step is finished by operations resume <id>: nothing of the tenant is left', async () => {
    const before = await objects()
    const t = await openInProcess()
    const victims: Tenant[] = []
    try {
      for (const tier of TIERS) {
        const v = await t.provision({ slug: `p-${tier}`, tier })
        victims.push(v)
        await t.withTenant(v, async () => {
          const p = await t.db.query<{ id: number }>('INSERT INTO projects (name) VALUES ($1) RETURNING id', ['doomed'])
          await t.db.query('INSERT INTO tasks (project_id, title) VALUES ($1, $2), ($1, $3)', [p.rows[0].id, 'a', 'b'])
        })
        await t.addDomain(v.slug, `${v.slug}.example.com`)
        await t.delete(v.slug)
      }
    } finally {
      await t.close()
    }
    const pooled = victims[0]
    const pooledRows = async () =>
      (await db.query<{ n: number }>(
        `SELECT (SELECT count(*) FROM public.projects WHERE tenant_id = $1) + (SELECT count(*) FROM public.tasks WHERE tenant_id = $1) AS n`, [pooled.id],
      )).rows[0].n
    expect(Number(await pooledRows())).toBe(3)

    const procs = victims.map((v) => new CliProcess(['tenants', 'purge', v.slug, '--force', '--json'], { ...env, TENANTRY_FAULT: 'pause:purge:catalog' }))
    await Promise.all(procs.map((p) => p.waitForStderr(/tenantry-fault: paused at purge:catalog\n/)))
    // Stopped after the room was removed, before the catalog row.
    expect(await objects()).toEqual(before)
    expect(Number(await pooledRows())).toBe(0)
    for (const v of victims) {
      expect((await tenantRow(v.slug))?.status, v.slug).toBe('deleted')
      expect((await opsOf('purge', v.slug)).map((o) => o.state), v.slug).toEqual(['running'])
    }
    const [pooledOp] = await opsOf('purge', pooled.slug)
    // The pooled tenant's rows were deleted (that transaction committed) before the pause; what
    // was there was recorded first, so the resumed purge reports it and not 0.
    expect(pooledOp.progress.removing).toEqual(['2 rows from public.tasks', '1 rows from public.projects'])
    await Promise.all(procs.map((p) => p.kill9()))

    // `operations resume <id>`, as a person would after reading `operations list`: opening Tenantry
    // finishes every orphan, that one among them, and the command reports them (exit 0, not CONFLICT).
    const resume = await cli(['operations', 'resume', pooledOp.id, '--json'], env)
    expect(resume.code, show(resume)).toBe(0)
    const resumed = JSON.parse(resume.stdout) as { id: string; kind: string; slug: string; state: string }[]
    expect(resumed.map((o) => [o.kind, o.slug, o.state]).sort()).toEqual(victims.map((v) => ['purge', v.slug, 'done']).sort())
    expect(resumed.find((o) => o.id === pooledOp.id)?.state).toBe('done')

    for (const v of victims) {
      expect(await tenantRow(v.slug), v.slug).toBeUndefined()
      const [op] = await opsOf('purge', v.slug)
      expect(op.state).toBe('done')
      const removed = op.progress.removed as string[]
      const last = `catalog row of '${v.slug}' and domains ${v.slug}.example.com`
      if (v.tier === 'pooled') {
        expect(removed).toEqual(['2 rows from public.tasks', '1 rows from public.projects', last])
      } else {
        const kind = v.tier === 'schema' ? `schema t_${hex(v.id)}` : `database ${PREFIX}_t_${hex(v.id)}`
        expect(removed).toEqual([kind, `role ${PREFIX}_t_${hex(v.id)}`, last])
      }
    }
    expect(await objects()).toEqual(before)
    expect(Number(await pooledRows())).toBe(0)
    const left = await db.query(
      `SELECT 'domain' AS what FROM tenantry.domains WHERE tenant_id = ANY($1::uuid[])
       UNION ALL SELECT 'ledger' FROM tenantry.migrations WHERE target = ANY($2::text[])`,
      [victims.map((v) => v.id), victims.map((v) => `t_${hex(v.id)}`)],
    )
    expect(left.rows).toEqual([])
  })
})
