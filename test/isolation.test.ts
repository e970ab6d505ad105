/**
 * Adversarial isolation, on real PostgreSQL and on PGlite: six tenants over every tier (two per
 * tier), each seeded with distinct rows carrying its own marker, attacked with forged ids, forged
 * tenant_ids, session-changing SQL, missing context and hundreds of interleaved concurrent
 * statements. Every assertion is exact: no row of another tenant is ever returned or changed.
 *
 * The PostgreSQL half uses its own database (`tenantry_test_isolation`) and role prefix
 * (`tc_isolation`): roles and databases are cluster-wide, so afterAll drops both.
 */
import { fileURLToPath } from 'node:url'
import type { Generated } from 'kysely'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { currentTenant } from '../src/context/context.ts'
import { TenantryError } from '../src/core/errors.ts'
import type { Tenant, Tier } from '../src/core/types.ts'
import { naming } from '../src/data/naming.ts'
import { createTenantry, type Tenantry } from '../src/runtime.ts'
import { prng } from './helpers/prng.ts'
import { dropDatabase, freshDatabase, PG_ADMIN_URL, postgresAvailable, outcome, dropPostgresLeftovers as dropLeftovers } from './helpers/backends.ts'

// test/context-store.test.ts runs this suite again with the OpenTelemetry SDK registered (the
// tenant scope then lives in its context), on a database and role prefix of its own.
const OTEL = process.env.TENANTRY_ISOLATION_OTEL === '1'
const PREFIX = OTEL ? 'tc_isotel' : 'tc_isolation'
const DB_NAME = OTEL ? 'tenantry_test_isotel' : 'tenantry_test_isolation'
const MIGRATIONS = fileURLToPath(new URL('../demo/migrations', import.meta.url))
const NAMES = naming(PREFIX)

type Backend = 'postgres' | 'pglite'

interface DB {
  projects: { tenant_id: Generated<string>; id: Generated<string>; name: string; created_at: Generated<Date> }
  tasks: {
    tenant_id: Generated<string>
    id: Generated<string>
    project_id: string
    title: string
    done: Generated<boolean>
    created_at: Generated<Date>
  }
}

/** Two tenants per tier (PGlite: a database-tier tenant is a whole instance, so at most two). */
const SPECS: { slug: string; tier: Tier }[] = [
  { slug: 'iso-pooled-a', tier: 'pooled' },
  { slug: 'iso-pooled-b', tier: 'pooled' },
  { slug: 'iso-schema-c', tier: 'schema' },
  { slug: 'iso-schema-d', tier: 'schema' },
  { slug: 'iso-db-e', tier: 'database' },
  { slug: 'iso-db-f', tier: 'database' },
]

interface ProjectRow { tenant_id: string; id: string; name: string }
interface TaskRow { tenant_id: string; id: string; project_id: string; title: string }

/** Tenant number n (1-based) owns project ids n01..n03 and task ids n01..n02: unique across all tenants. */
function seedOf(tenant: Tenant, n: number): { projects: ProjectRow[]; tasks: TaskRow[] } {
  const id = (k: number) => String(n * 100 + k)
  return {
    projects: [1, 2, 3].map((k) => ({ tenant_id: tenant.id, id: id(k), name: `${tenant.slug}-p${k}` })),
    tasks: [1, 2].map((k) => ({ tenant_id: tenant.id, id: id(k), project_id: id(1), title: `${tenant.slug}-t${k}` })),
  }
}

const dropPostgresLeftovers = () => dropLeftovers(PREFIX, DB_NAME)

/** What the pg driver's pool looks like from outside (runtime shape of PgServer's private `pool`). */
interface PoolPeek {
  pool?: {
    stats(): { idle: number; busy: number }
    acquire(database: string): Promise<{ conn: { client: pg.Client } }>
    release(slot: unknown, discard?: boolean): void
  }
}

function isolationSuite(backend: Backend): void {
  let tenantry: Tenantry
  let testDbUrl: string | undefined
  const tenants: Tenant[] = []
  const seeds = new Map<string, { projects: ProjectRow[]; tasks: TaskRow[] }>()
  const others = (t: Tenant) => tenants.filter((o) => o.id !== t.id)
  const pairs = () => tenants.flatMap((a) => others(a).map((b) => [a, b] as const))
  const slugOf = (id: string) => tenants.find((t) => t.id === id)?.slug ?? `<unknown ${id}>`
  const idsOf = (t: Tenant) => seeds.get(t.id)!.projects.map((p) => p.id)
  const byTier = (tier: Tier) => tenants.filter((t) => t.tier === tier)

  const selectProjects = (t: Tenant) =>
    tenantry.handle(t).query<ProjectRow>('SELECT tenant_id, id, name FROM projects ORDER BY id').then((r) => r.rows)
  const selectTasks = (t: Tenant) =>
    tenantry.handle(t).query<TaskRow>('SELECT tenant_id, id, project_id, title FROM tasks ORDER BY id').then((r) => r.rows)

  /** Every tenant, through its own handle, sees exactly its seed. */
  async function expectSeedsIntact(): Promise<void> {
    const seen = []
    for (const t of tenants) seen.push({ slug: t.slug, projects: await selectProjects(t), tasks: await selectTasks(t) })
    expect(seen).toEqual(tenants.map((t) => ({ slug: t.slug, ...seeds.get(t.id)! })))
  }

  /**
   * Every row in every place a tenant's tables live, read as the owner (a superuser, which bypasses
   * RLS): proves nothing was written anywhere, including rows no tenant could see.
   */
  async function everything(): Promise<Record<string, string[]>> {
    const places = new Map<string, { database: string; schema: string }>()
    for (const t of tenants) {
      const target = tenantry.dataPlane.migrationTarget(t)
      places.set(t.tier === 'pooled' ? 'pooled' : t.slug, { database: target.database, schema: target.schema })
    }
    const out: Record<string, string[]> = {}
    for (const [label, { database, schema }] of places) {
      const admin = tenantry.dataPlane.driver('main').admin(database)
      const projects = await admin.query<{ tenant_id: string; name: string }>(`SELECT tenant_id::text, name FROM "${schema}".projects`)
      const tasks = await admin.query<{ tenant_id: string; title: string }>(`SELECT tenant_id::text, title FROM "${schema}".tasks`)
      out[label] = [...projects.rows.map((r) => `${slugOf(r.tenant_id)}: ${r.name}`).sort(), ...tasks.rows.map((r) => `${slugOf(r.tenant_id)}: ${r.title}`).sort()]
    }
    return out
  }
  function expectedEverything(): Record<string, string[]> {
    const rows = (ts: Tenant[]) => {
      const all = ts.flatMap((t) => seeds.get(t.id)!)
      return [...all.flatMap((s) => s.projects.map((p) => `${slugOf(p.tenant_id)}: ${p.name}`)).sort(), ...all.flatMap((s) => s.tasks.map((x) => `${slugOf(x.tenant_id)}: ${x.title}`)).sort()]
    }
    const out: Record<string, string[]> = { pooled: rows(byTier('pooled')) }
    for (const t of tenants.filter((x) => x.tier !== 'pooled')) out[t.slug] = rows([t])
    return out
  }
  async function expectNothingWrittenAnywhere(): Promise<void> {
    expect(await everything()).toEqual(expectedEverything())
    await expectSeedsIntact()
  }

  /** The session of the next user of each connection (or PGlite instance): no tenant setting left. */
  async function idleSessions(): Promise<{ tenant: string; role: string; search_path: string }[]> {
    const sql = "SELECT coalesce(current_setting('tenantry.tenant_id', true), '') AS tenant, current_user::text AS role, current_setting('search_path') AS search_path"
    const driver = tenantry.dataPlane.driver('main')
    if (driver.kind === 'pglite') {
      // One session per instance, shared by every statement: the admin connection *is* the next user.
      const databases = [...new Set(tenants.map((t) => t.placement.database))]
      const out = []
      for (const db of databases) out.push(...(await driver.admin(db).query<{ tenant: string; role: string; search_path: string }>(sql)).rows)
      return out
    }
    // If this breaks, PgServer's pool moved: find the new way to reach the idle connections.
    const pool = (driver as unknown as PoolPeek).pool
    expect(pool, 'PgServer.pool is reachable').toBeDefined()
    const idle = pool!.stats().idle
    expect(idle).toBeGreaterThan(0)
    const slots = []
    const mainDb = tenantry.dataPlane.server('main').mainDatabase
    try {
      for (let i = 0; i < idle; i++) slots.push(await pool!.acquire(mainDb))
      const out = []
      for (const slot of slots) out.push(...(await slot.conn.client.query<{ tenant: string; role: string; search_path: string }>(sql)).rows)
      return out
    } finally {
      for (const slot of slots) pool!.release(slot)
    }
  }
  /** Reset the sessions idleSessions() reads (PostgreSQL: close the idle connections). */
  async function scrubIdleSessions(): Promise<void> {
    const driver = tenantry.dataPlane.driver('main')
    if (driver.kind === 'pglite') {
      for (const db of new Set(tenants.map((t) => t.placement.database))) await driver.admin(db).query('RESET ALL')
      return
    }
    const pool = (driver as unknown as PoolPeek).pool!
    const slots = []
    for (let i = pool.stats().idle; i > 0; i--) slots.push(await pool.acquire(tenantry.dataPlane.server('main').mainDatabase))
    for (const slot of slots) pool.release(slot, true)
  }
  const cleanSession = () =>
    backend === 'pglite'
      ? { tenant: '', role: 'postgres', search_path: 'public' } // PGlite's default search_path
      : { tenant: '', role: NAMES.appRole, search_path: '"$user", public' }

  /** What a tenant's own session looks like inside one of its statements. */
  const sessionOf = (t: Tenant) => ({
    tenant: t.id,
    role: t.tier === 'pooled' ? NAMES.appRole : NAMES.tenantRole(t.id),
    search_path: t.tier === 'schema' ? `"${NAMES.tenantSchema(t.id)}"` : '"public"',
  })
  // The tenant as the policies see it: the signed setting, verified by tenantry.tenant_id().
  const SESSION_SQL = "SELECT tenantry.tenant_id()::text AS tenant, current_user::text AS role, current_setting('search_path') AS search_path"

  beforeAll(async () => {
    if (backend === 'postgres') {
      await dropPostgresLeftovers()
      testDbUrl = await freshDatabase(DB_NAME)
    }
    // A small connection budget on PostgreSQL: 300 concurrent statements share 10 connections, so
    // every connection serves many tenants in turn (sequential tests reuse the same one outright).
    tenantry = await createTenantry({
      databaseUrl: testDbUrl,
      dataDir: 'memory',
      migrations: MIGRATIONS,
      rolePrefix: PREFIX,
      connectionBudget: 10,
      acquireTimeoutMs: 30_000,
    })
    expect((await tenantry.migrate()).targets.map((r) => r.status)).toEqual(['done'])
    for (const spec of SPECS) tenants.push(await tenantry.provision(spec))
    for (const [i, t] of tenants.entries()) {
      const seed = seedOf(t, i + 1)
      seeds.set(t.id, seed)
      const h = tenantry.handle(t)
      for (const p of seed.projects) await h.query('INSERT INTO projects (id, name) VALUES ($1, $2)', [p.id, p.name])
      for (const x of seed.tasks) await h.query('INSERT INTO tasks (id, project_id, title) VALUES ($1, $2, $3)', [x.id, x.project_id, x.title])
    }
  })

  afterAll(async () => {
    await tenantry?.close()
    if (backend === 'postgres') await dropPostgresLeftovers()
  })

  it('each tenant reads exactly its own rows, through every path', async () => {
    expect(tenants.map((t) => t.tier)).toEqual(['pooled', 'pooled', 'schema', 'schema', 'database', 'database'])
    await expectNothingWrittenAnywhere()
    for (const t of tenants) {
      const seed = seeds.get(t.id)!
      const ambient = await tenantry.withTenant(t.slug, () => tenantry.db.query('SELECT tenant_id, id, name FROM projects ORDER BY id'))
      expect(ambient.rows).toEqual(seed.projects)
      const kysely = await tenantry.handle(t).kysely<DB>().selectFrom('projects').select(['tenant_id', 'id', 'name']).orderBy('id').execute()
      expect(kysely).toEqual(seed.projects)
      const inTx = await tenantry.handle(t).transaction(async (tx) => (await tx.query('SELECT tenant_id, id, project_id, title FROM tasks ORDER BY id')).rows)
      expect(inTx).toEqual(seed.tasks)
      const joined = await tenantry.handle(t).query('SELECT count(*) AS n FROM projects p JOIN tasks x ON x.project_id = p.id')
      expect(joined.rows).toEqual([{ n: '2' }])
    }
  })

  it('a tenant never reads another tenant’s rows: by id, by tenant_id, by negation, by join', async () => {
    const leaks: unknown[] = []
    for (const [a, b] of pairs()) {
      const h = tenantry.handle(a)
      const results = [
        await h.query('SELECT tenant_id, id, name FROM projects WHERE id = ANY($1::bigint[])', [idsOf(b)]),
        await h.query('SELECT tenant_id, id, name FROM projects WHERE tenant_id = $1', [b.id]),
        await h.query('SELECT tenant_id, id, title FROM tasks WHERE tenant_id = $1 OR id = ANY($2::bigint[])', [b.id, idsOf(b)]),
        await h.query('SELECT tenant_id, id, name FROM projects WHERE tenant_id <> $1', [a.id]),
        await h.query('SELECT p.name, x.title FROM projects p JOIN tasks x ON x.tenant_id = $1 OR p.tenant_id = $1', [b.id]),
        await h.kysely<DB>().selectFrom('projects').selectAll().where('tenant_id', '=', b.id).execute().then((rows) => ({ rows })),
      ]
      for (const r of results) if (r.rows.length > 0) leaks.push({ asker: a.slug, other: b.slug, rows: r.rows })
    }
    expect(leaks).toEqual([])
  })

  it('another tenant’s schema and the pooled tables are out of reach by qualified name', async () => {
    const seen: string[] = []
    const expected: string[] = []
    for (const [a, b] of pairs()) {
      if (b.tier !== 'schema') continue
      seen.push(`${a.slug} -> ${b.slug}: ${await outcome(tenantry.handle(a).query(`SELECT * FROM "${NAMES.tenantSchema(b.id)}".projects`))}`)
      // Same database: no USAGE on the schema. Another database: the schema does not exist there.
      expected.push(`${a.slug} -> ${b.slug}: ${a.tier === 'database' ? 'pg:42P01' : 'pg:42501'}`)
    }
    for (const a of byTier('schema')) {
      seen.push(`${a.slug} -> pooled: ${await outcome(tenantry.handle(a).query('SELECT * FROM public.projects'))}`)
      expected.push(`${a.slug} -> pooled: pg:42501`)
    }
    expect(seen).toEqual(expected)
    await expectSeedsIntact()
  })

  it('a forged tenant_id in an INSERT is CROSS_TENANT_WRITE and writes nothing anywhere', async () => {
    const seen: string[] = []
    for (const [a, b] of pairs()) {
      const h = tenantry.handle(a)
      const attempts = [
        () => h.query('INSERT INTO projects (tenant_id, name) VALUES ($1, $2)', [b.id, `forged-by-${a.slug}`]),
        () => h.query('INSERT INTO projects (tenant_id, id, name) VALUES ($1, $2, $3)', [b.id, '999001', 'forged-with-id']),
        // One own row and one forged: neither may be written.
        () => h.query('INSERT INTO projects (tenant_id, name) VALUES ($1, $2), ($3, $4)', [a.id, 'own-half', b.id, 'forged-half']),
        () => h.query('INSERT INTO tasks (tenant_id, project_id, title) VALUES ($1, $2, $3)', [b.id, idsOf(b)[0], 'forged-task']),
        () => h.query('INSERT INTO projects (tenant_id, name) SELECT $1::uuid, name || \'-copy\' FROM projects', [b.id]),
        // Upsert onto another tenant's existing key.
        () => h.query('INSERT INTO projects (tenant_id, id, name) VALUES ($1, $2, $3) ON CONFLICT (tenant_id, id) DO UPDATE SET name = EXCLUDED.name', [b.id, idsOf(b)[0], 'pwned']),
        () => h.kysely<DB>().insertInto('projects').values({ tenant_id: b.id, name: 'forged-kysely' }).execute(),
        () => h.transaction(async (tx) => {
          await tx.query("INSERT INTO projects (name) VALUES ('own-in-tx')")
          await tx.query('INSERT INTO projects (tenant_id, name) VALUES ($1, $2)', [b.id, 'forged-in-tx'])
        }),
      ]
      for (const [i, attempt] of attempts.entries()) seen.push(`${a.slug} as ${b.slug} #${i}: ${await outcome(attempt())}`)
    }
    expect(seen).toEqual(pairs().flatMap(([a, b]) => Array.from({ length: 8 }, (_, i) => `${a.slug} as ${b.slug} #${i}: CROSS_TENANT_WRITE`)))
    await expectNothingWrittenAnywhere()
  })

  it('UPDATE and DELETE aimed at another tenant’s rows change 0 rows', async () => {
    const counts: string[] = []
    for (const [a, b] of pairs()) {
      const h = tenantry.handle(a)
      const results = [
        await h.query("UPDATE projects SET name = 'pwned' WHERE id = ANY($1::bigint[]) RETURNING id", [idsOf(b)]),
        await h.query("UPDATE projects SET name = 'pwned' WHERE tenant_id = $1", [b.id]),
        await h.query('UPDATE tasks SET done = true WHERE tenant_id = $1 OR id = ANY($2::bigint[])', [b.id, idsOf(b)]),
        await h.query('DELETE FROM tasks WHERE id = ANY($1::bigint[]) RETURNING id', [idsOf(b)]),
        await h.query('DELETE FROM projects WHERE tenant_id = $1', [b.id]),
        await h.query('DELETE FROM projects WHERE id = ANY($1::bigint[])', [idsOf(b)]),
      ]
      const k = await h.kysely<DB>().updateTable('projects').set({ name: 'pwned' }).where('id', 'in', idsOf(b)).executeTakeFirst()
      counts.push(`${a.slug} on ${b.slug}: ${results.map((r) => `${r.rowCount}/${r.rows.length}`).join(' ')} kysely ${k.numUpdatedRows}`)
    }
    expect(counts).toEqual(pairs().map(([a, b]) => `${a.slug} on ${b.slug}: 0/0 0/0 0/0 0/0 0/0 0/0 kysely 0`))
    await expectNothingWrittenAnywhere()
  })

  it('moving a row to another tenant (UPDATE … SET tenant_id) is CROSS_TENANT_WRITE', async () => {
    const seen: string[] = []
    for (const [a, b] of pairs()) {
      const h = tenantry.handle(a)
      const attempts = [
        () => h.query('UPDATE projects SET tenant_id = $1', [b.id]),
        () => h.query('UPDATE projects SET tenant_id = $1 WHERE id = $2', [b.id, idsOf(a)[1]]),
        () => h.query('UPDATE tasks SET tenant_id = $1', [b.id]),
        () => h.kysely<DB>().updateTable('projects').set({ tenant_id: b.id }).where('id', '=', idsOf(a)[2]).execute(),
      ]
      for (const [i, attempt] of attempts.entries()) seen.push(`${a.slug} to ${b.slug} #${i}: ${await outcome(attempt())}`)
    }
    expect(seen).toEqual(pairs().flatMap(([a, b]) => [0, 1, 2, 3].map((i) => `${a.slug} to ${b.slug} #${i}: CROSS_TENANT_WRITE`)))
    await expectNothingWrittenAnywhere()
  })

  it('tenant SQL without a context is TENANT_CONTEXT_MISSING, and fails closed after the context ends', async () => {
    let called = false
    const codes = [
      await outcome(tenantry.db.query('SELECT * FROM projects')),
      await outcome(tenantry.db.transaction(async () => { called = true })),
      await outcome(tenantry.db.kysely<DB>().selectFrom('projects').selectAll().execute()),
      await outcome(tenantry.db.kysely<DB>().transaction().execute(async () => { called = true })),
      await outcome(Promise.resolve().then(() => tenantry.db.tenant)),
      await outcome(Promise.resolve().then(() => currentTenant())),
    ]
    expect(codes).toEqual(Array(6).fill('TENANT_CONTEXT_MISSING'))
    expect(called).toBe(false)

    // A closure made inside a context but run after it ended has no tenant: it fails, it does not guess.
    const [a] = tenants
    let later: (() => Promise<unknown>) | undefined
    await tenantry.withTenant(a.slug, async () => { later = () => tenantry.db.query('SELECT * FROM projects') })
    expect(await outcome(later!())).toBe('TENANT_CONTEXT_MISSING')
    // Work scheduled inside the context keeps it, even when it runs after withTenant returned.
    let deferred!: Promise<ProjectRow[]>
    await tenantry.withTenant(a.slug, async () => {
      deferred = new Promise((resolve, reject) =>
        setTimeout(() => tenantry.db.query<ProjectRow>('SELECT tenant_id, id, name FROM projects ORDER BY id').then((r) => resolve(r.rows), reject), 20),
      )
    })
    expect(await outcome(tenantry.db.query('SELECT 1'))).toBe('TENANT_CONTEXT_MISSING')
    expect(await deferred).toEqual(seeds.get(a.id)!.projects)
    expect(await outcome(tenantry.withTenant('iso-nobody', async () => undefined))).toBe('TENANT_NOT_FOUND')
  })

  it('a handle bound to A used inside withTenant(B) still serves A; the ambient handle serves B', async () => {
    // Documented behaviour: a handle is bound to its tenant for good; the context only drives tenantry.db.
    for (const [a, b] of pairs()) {
      const seen = await tenantry.withTenant(b.slug, async () => ({
        bound: await selectProjects(a),
        ambient: (await tenantry.db.query<ProjectRow>('SELECT tenant_id, id, name FROM projects ORDER BY id')).rows,
        nested: await tenantry.withTenant(a.slug, async () => (await tenantry.db.query<ProjectRow>('SELECT tenant_id, id, name FROM projects ORDER BY id')).rows),
        after: (await tenantry.db.query<ProjectRow>('SELECT tenant_id, id, name FROM projects ORDER BY id')).rows,
      }))
      expect(seen).toEqual({ bound: seeds.get(a.id)!.projects, ambient: seeds.get(b.id)!.projects, nested: seeds.get(a.id)!.projects, after: seeds.get(b.id)!.projects })
    }
  })

  it('300 interleaved concurrent statements of all tenants, failing ones included, each see only their own tenant', async () => {
    const random = prng(0x7e4a47)
    const pick = <T,>(xs: readonly T[]) => xs[Math.floor(random() * xs.length)]
    const KINDS = ['select', 'byOtherId', 'otherTenantId', 'session', 'ambient', 'kysely', 'txRollback', 'div0', 'constraint', 'forged', 'forbidden', 'txFailMid', 'moveRow', 'updateOther'] as const
    type Kind = (typeof KINDS)[number]
    const ROLLBACK = new Error('roll back on purpose')

    const run = async (kind: Kind, t: Tenant, o: Tenant): Promise<unknown> => {
      const h = tenantry.handle(t)
      const projects = 'SELECT tenant_id, id, name FROM projects ORDER BY id'
      switch (kind) {
        case 'select': return (await h.query(projects)).rows
        case 'byOtherId': return (await h.query('SELECT tenant_id, id, name FROM projects WHERE id = ANY($1::bigint[])', [idsOf(o)])).rows
        case 'otherTenantId': return (await h.query('SELECT tenant_id, id, title FROM tasks WHERE tenant_id = $1', [o.id])).rows
        case 'session': return (await h.query(`${SESSION_SQL} FROM pg_sleep(0.002)`)).rows
        case 'ambient': return tenantry.withTenant(t.slug, async () => (await tenantry.db.query(projects)).rows)
        case 'kysely': return h.kysely<DB>().selectFrom('projects').select(['tenant_id', 'id', 'name']).orderBy('id').execute()
        case 'txRollback': {
          let inside: unknown
          const code = await outcome(h.transaction(async (tx) => {
            await tx.query('INSERT INTO projects (name) VALUES ($1)', [`${t.slug}-temp`])
            inside = (await tx.query('SELECT tenant_id, name FROM projects ORDER BY name')).rows
            throw ROLLBACK
          }))
          return { code, inside }
        }
        case 'div0': return outcome(h.query('SELECT tenant_id, 1 / (count(*) - count(*)) FROM projects GROUP BY tenant_id'))
        case 'constraint': return outcome(h.query("INSERT INTO projects (name) VALUES ('')"))
        case 'forged': return outcome(h.query('INSERT INTO projects (tenant_id, name) VALUES ($1, $2)', [o.id, 'forged']))
        case 'forbidden': return outcome(h.query("SELECT set_config('tenantry.tenant_id', $1, false)", [o.id]))
        case 'txFailMid': return outcome(h.transaction(async (tx) => {
          await tx.query("UPDATE projects SET name = 'changed'")
          await tx.query('SELECT 1 / 0')
        }))
        case 'moveRow': return outcome(h.query('UPDATE projects SET tenant_id = $1', [o.id]))
        case 'updateOther': {
          const r = await h.query("UPDATE projects SET name = 'pwned' WHERE id = ANY($1::bigint[])", [idsOf(o)])
          return r.rowCount
        }
      }
    }
    const expected = (kind: Kind, t: Tenant): unknown => {
      const own = seeds.get(t.id)!.projects
      switch (kind) {
        case 'select': case 'ambient': case 'kysely': return own
        case 'byOtherId': case 'otherTenantId': return []
        case 'session': return [sessionOf(t)]
        case 'txRollback': return {
          code: 'error:roll back on purpose',
          inside: [...own.map((p) => ({ tenant_id: t.id, name: p.name })), { tenant_id: t.id, name: `${t.slug}-temp` }],
        }
        case 'div0': case 'txFailMid': return 'pg:22012'
        case 'constraint': return 'VALIDATION_FAILED'
        case 'forged': case 'moveRow': return 'CROSS_TENANT_WRITE'
        case 'forbidden': return 'STATEMENT_FORBIDDEN'
        case 'updateOther': return 0
      }
    }

    const plan = Array.from({ length: 300 }, (_, i) => {
      const t = pick(tenants)
      return { i, kind: pick(KINDS), t, o: pick(others(t)) }
    })
    const actual = await Promise.all(plan.map(async ({ i, kind, t, o }) => ({ i, kind, tenant: t.slug, result: await run(kind, t, o).catch((err: unknown) => `unexpected: ${String(err)}`) })))
    expect(actual).toEqual(plan.map(({ i, kind, t }) => ({ i, kind, tenant: t.slug, result: expected(kind, t) })))
    // Every kind and every tenant took part.
    expect(new Set(plan.map((p) => p.kind)).size).toBe(KINDS.length)
    expect(new Set(plan.map((p) => p.t.slug)).size).toBe(tenants.length)
    await expectNothingWrittenAnywhere()
    expect(new Set((await idleSessions()).map((s) => JSON.stringify(s)))).toEqual(new Set([JSON.stringify(cleanSession())]))
  })

  it('after an error mid-pipeline, the next statement — of the same or another tenant — sees only its own rows', async () => {
    // LESSONS: a setting must never survive into the next user of a connection.
    const failures: [string, (t: Tenant, o: Tenant) => Promise<unknown>, string][] = [
      ['division by zero', (t) => tenantry.handle(t).query('SELECT 1 / 0'), 'pg:22012'],
      ['constraint violation', (t) => tenantry.handle(t).query("INSERT INTO projects (name) VALUES ('')"), 'VALIDATION_FAILED'],
      ['foreign key violation', (t) => tenantry.handle(t).query("INSERT INTO tasks (project_id, title) VALUES (424242, 'x')"), 'VALIDATION_FAILED'],
      ['forged tenant_id', (t, o) => tenantry.handle(t).query('INSERT INTO projects (tenant_id, name) VALUES ($1, $2)', [o.id, 'x']), 'CROSS_TENANT_WRITE'],
      ['bad parameter', (t) => tenantry.handle(t).query('SELECT * FROM projects WHERE id = $1', ['not-a-number']), 'VALIDATION_FAILED'],
      ['unknown table', (t) => tenantry.handle(t).query('SELECT * FROM no_such_table'), 'pg:42P01'],
      ['multi-statement', (t) => tenantry.handle(t).query('SELECT 1; SELECT 2'), 'pg:42601'],
      ['forbidden', (t) => tenantry.handle(t).query('RESET ALL'), 'STATEMENT_FORBIDDEN'],
      ['error mid-transaction', (t) => tenantry.handle(t).transaction(async (tx) => {
        await tx.query("UPDATE projects SET name = 'changed'")
        await tx.query('SELECT 1 / 0')
      }), 'pg:22012'],
      ['throw mid-transaction', (t) => tenantry.handle(t).transaction(async (tx) => {
        await tx.query("DELETE FROM projects")
        throw new Error('app error')
      }), 'error:app error'],
    ]
    const seen: string[] = []
    const want: string[] = []
    // Each tenant fails, then its ring neighbours at distance 1 and 3 go next: same tier and every
    // tier-to-tier hand-over (pooled→pooled, pooled→schema, schema→database, database→pooled, …).
    const ring = tenants.flatMap((a, i) => [1, 3].map((d) => [a, tenants[(i + d) % tenants.length]] as const))
    for (const [a, b] of ring) {
      for (const [name, fail, code] of failures) {
        const got = await outcome(fail(a, b))
        const next = [await selectProjects(b), (await tenantry.handle(b).query(SESSION_SQL)).rows, await selectProjects(a)]
        seen.push(`${a.slug} ${name}: ${got} / ${JSON.stringify(next)}`)
        want.push(`${a.slug} ${name}: ${code} / ${JSON.stringify([seeds.get(b.id)!.projects, [sessionOf(b)], seeds.get(a.id)!.projects])}`)
      }
    }
    expect(seen).toEqual(want)
    await expectNothingWrittenAnywhere()
    expect(new Set((await idleSessions()).map((s) => JSON.stringify(s)))).toEqual(new Set([JSON.stringify(cleanSession())]))
  })

  it('a statement sees its own tenant in current_setting, never another', async () => {
    const seen = await Promise.all(tenants.flatMap((t) => [1, 2, 3].map(async () => (await tenantry.handle(t).query(SESSION_SQL)).rows)))
    expect(seen).toEqual(tenants.flatMap((t) => [1, 2, 3].map(() => [sessionOf(t)])))
  })

  // `"set_config"(…)`, `pg_catalog."set_config"` and `U&"set\005fconfig"` are set_config to PostgreSQL.
  it('a quoted "set_config" inside a transaction cannot switch to another pooled tenant', async () => {
    const [a, b] = byTier('pooled')
    const got = await tenantry.handle(a).transaction(async (tx) => {
      await tx.query(`SELECT "set_config"('tenantry.tenant_id', $1, true)`, [b.id])
      return (await tx.query<ProjectRow>('SELECT tenant_id, id, name FROM projects ORDER BY id')).rows
    }).catch((err: unknown) => outcome(Promise.reject(err)))
    // Refused, or at least no row of another tenant; today it returns exactly B's rows.
    const leaked = Array.isArray(got) ? got.filter((r) => r.tenant_id !== a.id) : []
    expect(leaked).toEqual([])
  })

  // A *session* setting would survive into the next user of the connection (LESSONS).
  it('a session-level setting smuggled in with a quoted "set_config" does not survive the statement', async () => {
    const [a, b] = byTier('pooled')
    const code = await outcome(tenantry.handle(a).query(`SELECT "set_config"('tenantry.tenant_id', $1, false)`, [b.id]))
    const idle = await idleSessions()
    await scrubIdleSessions() // whatever happened, the tests that follow start clean
    expect({ code, idle: [...new Set(idle.map((s) => s.tenant))] }).toEqual({ code: 'STATEMENT_FORBIDDEN', idle: [''] })
  })

  // `UPDATE pg_settings SET setting = … WHERE name = …` is set_config(name, value, false) behind the
  // view's rule: it would leave a session setting on the connection (or the whole PGlite instance).
  it('UPDATE pg_settings cannot leave a session setting for the next user of the connection', async () => {
    const [c] = byTier('schema')
    // A connection of this tenant's database is idle in the pool, for the check below to look at.
    await tenantry.handle(c).query('SELECT 1')
    const code = await outcome(tenantry.handle(c).query("UPDATE pg_settings SET setting = 'public, tenantry' WHERE name = 'search_path'"))
    const idle = await idleSessions()
    await scrubIdleSessions()
    expect({ code, search_paths: [...new Set(idle.map((s) => s.search_path))] }).toEqual({ code: 'STATEMENT_FORBIDDEN', search_paths: [cleanSession().search_path] })
  })

  // PGlite's session user is a superuser: a disguised set_config('role', 'postgres') would escalate a
  // tenant transaction past RLS there. On PostgreSQL the app role may not become postgres (42501).
  it('a disguised SET ROLE cannot escalate a tenant transaction', async () => {
    const [a] = byTier('pooled')
    const res = await outcome(tenantry.handle(a).transaction(async (tx) => {
      await tx.query(`SELECT "set_config"('role', 'postgres', true)`)
      const rows = (await tx.query<ProjectRow>('SELECT tenant_id, id, name FROM projects ORDER BY id')).rows
      if (JSON.stringify(rows) !== JSON.stringify(seeds.get(a.id)!.projects)) throw new Error(`saw ${rows.length} rows of ${[...new Set(rows.map((r) => slugOf(r.tenant_id)))].join(', ')}`)
    }))
    expect(['STATEMENT_FORBIDDEN', 'pg:42501']).toContain(res)
  })

  if (backend === 'postgres') {
    it('a raw connection as the app role sees no tenant rows and reaches no tenant schema or database', async () => {
      const urlAsApp = (database: string) => {
        const url = new URL(PG_ADMIN_URL)
        url.username = NAMES.appRole
        url.password = ''
        url.pathname = `/${database}`
        return url.toString()
      }
      const client = new pg.Client({ connectionString: urlAsApp(DB_NAME) })
      await client.connect()
      const [a] = tenants
      const [c] = byTier('schema')
      const [e] = byTier('database')
      try {
        const q = async (text: string, values: unknown[] = []) => {
          try {
            return (await client.query(text, values)).rows
          } catch (err) {
            return `pg:${(err as { code?: string }).code}`
          }
        }
        expect({
          whoami: await q("SELECT current_user::text AS role, current_setting('tenantry.tenant_id', true) AS tenant"),
          projects: await q('SELECT count(*) AS n FROM projects'),
          tasks: await q('SELECT count(*) AS n FROM tasks'),
          byTenant: await q('SELECT * FROM projects WHERE tenant_id = $1', [a.id]),
          byId: await q('SELECT * FROM projects WHERE id = ANY($1::bigint[])', [idsOf(a)]),
          insertForged: await q('INSERT INTO projects (tenant_id, name) VALUES ($1, $2)', [a.id, 'raw']),
          insertBare: await q("INSERT INTO projects (name) VALUES ('raw')"),
          updateAll: await q("UPDATE projects SET name = 'raw' RETURNING id"),
          deleteAll: await q('DELETE FROM projects RETURNING id'),
          schemaTenant: await q(`SELECT * FROM "${NAMES.tenantSchema(c.id)}".projects`),
        }).toEqual({
          whoami: [{ role: NAMES.appRole, tenant: null }],
          projects: [{ n: '0' }],
          tasks: [{ n: '0' }],
          byTenant: [],
          byId: [],
          insertForged: 'pg:42501', // RLS WITH CHECK: no tenant set, no row passes
          insertBare: 'pg:42501', // tenant_id defaults to NULL, which no policy lets in (checked before NOT NULL)
          updateAll: [],
          deleteAll: [],
          schemaTenant: 'pg:42501', // no USAGE on the tenant's schema (the app role does not inherit)
        })
      } finally {
        await client.end()
      }
      // The database tier: the app role may connect (to SET ROLE later) but reads nothing as itself.
      const other = new pg.Client({ connectionString: urlAsApp(e.placement.database) })
      await other.connect()
      try {
        expect(await outcome(other.query('SELECT count(*) FROM projects'))).toBe('pg:42501')
      } finally {
        await other.end()
      }
      await expectNothingWrittenAnywhere()
    })

    it('SQL that bypasses every Tenantry check cannot forge the tenant setting: it is signed', async () => {
      // A raw connection as the app role is what an attacker with arbitrary SQL would have: no
      // statement guard at all. set_config() is open to every role, so the setting itself must be
      // worthless without the installation key.
      const url = new URL(PG_ADMIN_URL)
      url.username = NAMES.appRole
      url.password = ''
      url.pathname = `/${DB_NAME}`
      const client = new pg.Client({ connectionString: url.toString() })
      await client.connect()
      const [a, b] = byTier('pooled')
      const [c] = byTier('schema')
      const forge = async (value: string, role?: string, searchPath?: string) => {
        await client.query('BEGIN')
        try {
          await client.query("SELECT set_config('tenantry.tenant_id', $1, true)", [value])
          if (role) await client.query("SELECT set_config('role', $1, true), set_config('search_path', $2, true)", [role, searchPath])
          const rows = (await client.query('SELECT tenant_id FROM projects')).rows
          return { seen: rows.length, verified: (await client.query('SELECT tenantry.tenant_id() AS t')).rows[0].t }
        } finally {
          await client.query('ROLLBACK')
        }
      }
      try {
        const sig = '0'.repeat(64)
        expect({
          bareId: await forge(b.id),
          madeUpSignature: await forge(`${b.id}.${sig}`),
          otherTenantsSignatureOnMyId: await forge(`${a.id}.${sig.replace(/0/g, 'f')}`),
          asSchemaTenantRole: await forge(`${c.id}.${sig}`, NAMES.tenantRole(c.id), `"${NAMES.tenantSchema(c.id)}"`),
        }).toEqual({
          bareId: { seen: 0, verified: null },
          madeUpSignature: { seen: 0, verified: null },
          otherTenantsSignatureOnMyId: { seen: 0, verified: null },
          asSchemaTenantRole: { seen: 0, verified: null },
        })
        // And the key itself is out of reach of the app role.
        expect(await outcome(client.query('SELECT key FROM tenantry.secret'))).toBe('pg:42501')
        // Nor through the function tenant_id() reads it with (folded into tenant_id()'s own plan).
        expect(await outcome(client.query('SELECT tenantry.secret_key()'))).toBe('pg:42501')
      } finally {
        await client.end()
      }
    })
  }

  it('the attacks left every tenant exactly as seeded', async () => {
    await expectNothingWrittenAnywhere()
    expect(new Set((await idleSessions()).map((s) => JSON.stringify(s)))).toEqual(new Set([JSON.stringify(cleanSession())]))
  })
}

const pgOk = await postgresAvailable()

describe.skipIf(!pgOk)(`isolation on PostgreSQL${OTEL ? ', scopes in the OpenTelemetry context' : ''}`, () => isolationSuite('postgres'))
describe(`isolation on PGlite${OTEL ? ', scopes in the OpenTelemetry context' : ''}`, () => isolationSuite('pglite'))
