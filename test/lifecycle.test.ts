import { spawn } from 'node:child_process'
import { copyFileSync, mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  createTenantry,
  currentTenant,
  TenantryError,
  type FleetMigrateResult,
  type ProvisionHook,
  type Tenant,
  type Tenantry,
  type TenantryEventMap,
  type TenantryOptions,
} from '../src/index.ts'
import { dropPostgresLeftovers, freshDatabase, postgresAvailable } from './helpers/backends.ts'

// The tenant lifecycle end to end, on PostgreSQL and on PGlite (database-tier tenants only on
// PostgreSQL: on PGlite each costs seconds). Provisioning on every tier, refusals that create
// nothing, hooks and their rollback, fleet migrations with a planted conflict, --max-failures,
// --canary, --only and --dry-run, an edited migration, and offboarding down to purge.

const REPO = fileURLToPath(new URL('..', import.meta.url))
const DB_NAME = 'tenantry_test_lifecycle'
// Roles and databases are cluster-wide on a real server: everything this file makes carries this prefix.
const PREFIX = 'tl_life'
const PG_UP = await postgresAvailable()
type Tier = 'pooled' | 'schema' | 'database'

const EVENT_NAMES: (keyof TenantryEventMap)[] = [
  'tenant.provisioning', 'tenant.provisioned', 'tenant.provision_failed', 'tenant.suspended', 'tenant.resumed', 'tenant.deleted',
  'tenant.purging', 'tenant.purged', 'migration.target_done', 'migration.target_failed', 'operation.resumed', 'error',
]

interface Run { code: number | null; stdout: string; stderr: string }
const show = (r: Run) => `exit ${r.code}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`

/** Run `node bin/tenantry.js ...args` with only `env` for Tenantry/PostgreSQL settings. */
function cli(args: string[], env: Record<string, string>): Promise<Run> {
  const base: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(process.env)) if (!/^(TENANTRY_|DATABASE_URL$|PG[A-Z]+$|DEBUG$)/.test(k)) base[k] = v
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['bin/tenantry.js', ...args], { cwd: REPO, env: { ...base, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c))
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c))
    const timer = setTimeout(() => child.kill('SIGKILL'), 150_000)
    child.on('error', reject)
    child.on('close', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr })
    })
  })
}

/** The coded error a promise rejects with (fails the test when it resolves or throws something else). */
async function codeOf(p: Promise<unknown>): Promise<{ code: string; status: number; message: string; details?: Record<string, unknown> }> {
  try {
    await p
  } catch (err) {
    if (!(err instanceof TenantryError)) throw new Error(`expected a TenantryError, got: ${String(err)}`, { cause: err })
    return { code: err.code, status: err.status, message: err.message, details: err.details }
  }
  throw new Error('expected a rejection, but the promise resolved')
}

interface Backend {
  name: string
  tiers: Tier[]
  /** Open Tenantry on the backend's one store (the previous instance is closed first). */
  open(options: TenantryOptions): Promise<Tenantry>
  /** The CLI environment, where the suite runs the real CLI too (PostgreSQL only). */
  cliEnv?: (migrations: string) => Record<string, string>
  cleanup(): Promise<void>
}

interface Target { label: string; database: string; schema: string; slug: string | null }

function lifecycleSuite(backend: Backend): void {
  const { tiers } = backend
  let t: Tenantry
  let migrations: string
  let mainDb: string
  /** Every event since the current test began (cleared by `fresh()`), and all of them. */
  let events: [string, Record<string, unknown>][] = []
  const allEvents: [string, Record<string, unknown>][] = []
  let hookMode: 'seed' | 'fail' = 'seed'
  const hookRuns: { slug: string; status: string; current: string }[] = []
  const hex = (id: string) => id.replace(/-/g, '')

  /** A provision hook: records its context, seeds one project, and fails on demand. */
  const seedProject: ProvisionHook = async function seedProject({ tenant, db }) {
    hookRuns.push({ slug: tenant.slug, status: tenant.status, current: currentTenant().slug })
    await db.query('INSERT INTO projects (name) VALUES ($1)', [`seed of ${tenant.slug}`])
    if (hookMode === 'fail') throw new Error(`seeding '${tenant.slug}' failed: the billing API is down`)
  }

  async function open(extra: Partial<TenantryOptions> = {}): Promise<void> {
    await t?.close()
    t = await backend.open({ migrations, rolePrefix: PREFIX, onProvision: [seedProject], ...extra })
    mainDb = t.dataPlane.server('main').mainDatabase
    for (const name of EVENT_NAMES) {
      t.events.on(name, (payload: unknown) => {
        events.push([name, payload as Record<string, unknown>])
        allEvents.push([name, payload as Record<string, unknown>])
      })
    }
  }

  const fresh = () => {
    events = []
    hookRuns.length = 0
  }
  const eventNames = () => events.map(([n]) => n)
  const admin = (database = mainDb) => t.dataPlane.driver('main').admin(database)
  const addMigration = (file: string, sql: string) => writeFileSync(join(migrations, file), sql)

  /** Schemas of the main database, and roles and databases of this prefix. */
  async function objects(): Promise<{ schemas: string[]; roles: string[]; databases: string[] }> {
    const schemas = await admin().query<{ n: string }>(`SELECT nspname AS n FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema' ORDER BY 1`)
    const roles = await admin().query<{ n: string }>(`SELECT rolname AS n FROM pg_roles WHERE rolname LIKE $1 ORDER BY 1`, [`${PREFIX}\\_%`])
    const dbs = tiers.includes('database')
      ? (await admin().query<{ n: string }>(`SELECT datname AS n FROM pg_database WHERE datname LIKE $1 ORDER BY 1`, [`${PREFIX}\\_%`])).rows.map((r) => r.n)
      : []
    return { schemas: schemas.rows.map((r) => r.n), roles: roles.rows.map((r) => r.n), databases: dbs }
  }

  function roomOf(tier: Tier, id: string): { schemas: string[]; roles: string[]; databases: string[] } {
    if (tier === 'pooled') return { schemas: [], roles: [], databases: [] }
    if (tier === 'schema') return { schemas: [`t_${hex(id)}`], roles: [`${PREFIX}_t_${hex(id)}`], databases: [] }
    return { schemas: [], roles: [`${PREFIX}_t_${hex(id)}`], databases: [`${PREFIX}_t_${hex(id)}`] }
  }

  const plus = (o: Awaited<ReturnType<typeof objects>>, add: Awaited<ReturnType<typeof objects>>) => ({
    schemas: [...o.schemas, ...add.schemas].sort(),
    roles: [...o.roles, ...add.roles].sort(),
    databases: [...o.databases, ...add.databases].sort(),
  })

  const operationCount = async () => Number((await admin().query<{ n: number }>('SELECT count(*)::int AS n FROM tenantry.operations')).rows[0].n)

  /** Every migration target of the fleet now, sorted by label. */
  async function targetsNow(): Promise<Target[]> {
    const out: Target[] = [{ label: 'main/public', database: mainDb, schema: 'public', slug: null }]
    for (const x of await t.catalog.list()) {
      if (x.status === 'provisioning') continue
      if (x.tier === 'schema') out.push({ label: `main/${x.placement.schema}`, database: mainDb, schema: x.placement.schema!, slug: x.slug })
      if (x.tier === 'database') out.push({ label: `main/${x.placement.database}/public`, database: x.placement.database, schema: 'public', slug: x.slug })
    }
    return out.sort((a, b) => a.label.localeCompare(b.label))
  }

  async function targetOf(slug: string): Promise<Target> {
    const x = (await targetsNow()).find((y) => y.slug === slug)
    if (!x) throw new Error(`no target for '${slug}'`)
    return x
  }

  async function versionsOf(x: Target): Promise<string[]> {
    const res = await admin(x.database).query<{ version: string }>('SELECT version FROM tenantry.migrations WHERE target = $1 ORDER BY version', [x.schema])
    return res.rows.map((r) => r.version)
  }

  /** The type of `table.column` in a target, or null when there is no such column. */
  async function columnType(x: Target, table: string, column: string): Promise<string | null> {
    const res = await admin(x.database).query<{ type: string; nullable: string }>(
      'SELECT data_type AS type, is_nullable AS nullable FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 AND column_name = $3',
      [x.schema, table, column],
    )
    return res.rows[0] ? `${res.rows[0].type}${res.rows[0].nullable === 'NO' ? ' not null' : ''}` : null
  }

  const q = (ident: string) => `"${ident}"`

  /** `migrate` through the real CLI where the backend has it (exit code 1 on failure), else the API. */
  async function migrateViaCli(args: string[]): Promise<FleetMigrateResult> {
    if (!backend.cliEnv) return t.migrate()
    const r = await cli(['migrate', '--json', ...args], backend.cliEnv(migrations))
    let result: FleetMigrateResult
    try {
      result = JSON.parse(r.stdout) as FleetMigrateResult
    } catch {
      throw new Error(`migrate --json printed no JSON:\n${show(r)}`)
    }
    expect(r.code, show(r)).toBe(result.state === 'failed' ? 1 : 0)
    return result
  }

  const sortByTarget = <T extends { target: string }>(xs: T[]) => [...xs].sort((a, b) => a.target.localeCompare(b.target))

  beforeAll(async () => {
    migrations = mkdtempSync(join(tmpdir(), 'tenantry-lifecycle-migrations-'))
    copyFileSync(join(REPO, 'demo/migrations/0001_projects_and_tasks.sql'), join(migrations, '0001_projects_and_tasks.sql'))
    await open()
    expect((await t.migrate()).state).toBe('done')
  })

  afterAll(async () => {
    await t?.close()
    if (migrations) rmSync(migrations, { recursive: true, force: true })
    await backend.cleanup()
    // Events come in pairs: every operation that began ended, with the same operation id.
    const begun = allEvents.filter(([n]) => n === 'tenant.provisioning' || n === 'tenant.purging').map(([, p]) => p.operationId)
    const ended = allEvents.filter(([n]) => ['tenant.provisioned', 'tenant.provision_failed', 'tenant.purged'].includes(n)).map(([, p]) => p.operationId)
    expect(ended.sort()).toEqual(begun.sort())
    expect(allEvents.filter(([n]) => n === 'error')).toEqual([])
  })

  it('provisions a tenant on every tier end to end: room, tables at the latest version, hooks in its context, events, operation', async () => {
    for (const tier of tiers) {
      fresh()
      const slug = `e-${tier}`
      const before = await objects()
      const built: [string, Record<string, unknown>][] = []
      const onTemplate = (name: string) => (p: object) => built.push([name, { ...p, ...('ms' in p ? { ms: typeof p.ms } : {}) }])
      const listeners = (['template.building', 'template.step', 'template.built'] as const).map((n) => [n, onTemplate(n)] as const)
      for (const [n, l] of listeners) t.events.on(n, l)
      const tenant = await t.provision({ slug, tier, name: `E ${tier}` }).finally(() => {
        for (const [n, l] of listeners) t.events.off(n, l)
      })
      expect(tenant).toMatchObject({ slug, name: `E ${tier}`, tier, status: 'active', statusReason: null, plan: 'default' })
      const placement = { server: 'main', database: tier === 'database' ? `${PREFIX}_t_${hex(tenant.id)}` : mainDb, ...(tier === 'schema' ? { schema: `t_${hex(tenant.id)}` } : {}) }
      expect(tenant.placement).toEqual(placement)
      expect(await t.findTenant(slug)).toEqual(tenant)
      // Exactly its room, nothing else (the first database-tier tenant also makes the server's template database).
      const template = tier === 'database' && !before.databases.includes(`${PREFIX}_template`) ? [`${PREFIX}_template`] : []
      expect(await objects()).toEqual(plus(before, { ...roomOf(tier, tenant.id), databases: [...roomOf(tier, tenant.id).databases, ...template] }))
      // Building that template is reported step by step (the CLI's progress bar).
      const where = { server: 'main', database: `${PREFIX}_template` }
      expect(built).toEqual(template.length === 0 ? [] : [
        ['template.building', { ...where, create: true, pending: ['0001_projects_and_tasks'] }],
        ['template.step', { ...where, done: 0, total: 3, label: `creating the template database ${PREFIX}_template` }],
        ['template.step', { ...where, done: 1, total: 3, label: 'migrating the template: 0001_projects_and_tasks' }],
        ['template.built', { ...where, applied: ['0001_projects_and_tasks'], ms: 'number' }],
        ['template.step', { ...where, done: 2, total: 3, label: 'cloning the template' }],
      ])
      if (tier !== 'pooled') expect(await versionsOf(await targetOf(slug))).toEqual(['0001'])

      expect(eventNames()).toEqual(['tenant.provisioning', 'tenant.provisioned'])
      const opId = events[0][1].operationId as string
      expect(events[1][1].operationId).toBe(opId)
      expect((events[0][1].tenant as Tenant).status).toBe('provisioning')
      expect((events[1][1].tenant as Tenant).status).toBe('active')
      const op = await t.operations.get(opId)
      expect(op).toMatchObject({ kind: 'provision', tenantId: tenant.id, slug, state: 'done', step: 'activate', error: null, owner: null })
      expect(op!.progress.ms).toEqual(expect.any(Number))

      // The hook ran once, in the new tenant's context, before it was active; its row is the tenant's.
      expect(hookRuns).toEqual([{ slug, status: 'provisioning', current: slug }])
      const rows = await t.withTenant(slug, () => t.db.query<{ name: string }>('SELECT name FROM projects ORDER BY id'))
      expect(rows.rows).toEqual([{ name: `seed of ${slug}` }])
    }
  })

  it('refuses invalid and taken slugs with coded errors and creates nothing: no row, no operation, no room, no event', async () => {
    fresh()
    const list = await t.catalog.list()
    const ops = await operationCount()
    const before = await objects()
    const uuid = '0b6c7a52-3f1e-4c2d-9a8b-1c2d3e4f5a6b'
    const cases: [string, string, number, string][] = [
      ['Acme', 'TENANT_INVALID', 400, "Tenant slug 'Acme' must be lowercase."],
      ['admin', 'TENANT_INVALID', 400, "Tenant slug 'admin' is reserved."],
      ['a'.repeat(64), 'TENANT_INVALID', 400, `Tenant slug '${'a'.repeat(64)}' is 64 characters long; at most 63 are allowed.`],
      ['xn--acme', 'TENANT_INVALID', 400, "Tenant slug 'xn--acme' must not have '--' in the third and fourth place (reserved for IDN/punycode)."],
      [uuid, 'TENANT_INVALID', 400, `Tenant slug '${uuid}' must not have the form of a uuid (identifiers of that form are read as tenant ids).`],
      ['e-pooled', 'CONFLICT', 409, "The slug 'e-pooled' is already taken; choose another."],
      ['e-schema', 'CONFLICT', 409, "The slug 'e-schema' is already taken; choose another."],
    ]
    for (const tier of tiers) {
      for (const [slug, code, status, message] of cases) {
        expect(await codeOf(t.provision({ slug, tier })), `${slug} (${tier})`).toMatchObject({ code, status, message })
      }
    }
    expect(await t.catalog.list()).toEqual(list)
    expect(await operationCount()).toBe(ops)
    expect(await objects()).toEqual(before)
    expect(events).toEqual([])
    expect(hookRuns).toEqual([])

    if (backend.cliEnv) {
      const r = await cli(['tenants', 'create', 'Admin', '--tier', 'schema'], backend.cliEnv(migrations))
      expect(r).toEqual({ code: 1, stdout: '', stderr: "error TENANT_INVALID: Tenant slug 'Admin' must be lowercase.\n" })
      expect(await t.catalog.list()).toEqual(list)
      expect(await operationCount()).toBe(ops)
    }
  })

  it('without migrations, provision (every tier) and migrate refuse with CONFIG_INVALID and create nothing: no empty tenant (issue 18)', async () => {
    const NO_MIGRATIONS = "No migrations found: pass --migrations <dir> or set TENANTRY_MIGRATIONS (default ./migrations); in code, createTenantry({ migrations: './migrations' })."
    await open({ migrations: undefined })
    try {
      fresh()
      expect(t.migrationFiles).toEqual([])
      const list = await t.catalog.list()
      const ops = await operationCount()
      const before = await objects()
      for (const tier of tiers) {
        expect(await codeOf(t.provision({ slug: `empty-${tier}`, tier })), tier).toEqual({ code: 'CONFIG_INVALID', status: 500, message: NO_MIGRATIONS, details: undefined })
      }
      // Bad input is still reported as bad input first.
      expect(await codeOf(t.provision({ slug: 'Empty', tier: 'schema' }))).toMatchObject({ code: 'TENANT_INVALID', status: 400 })
      for (const opts of [{}, { dryRun: true }]) {
        expect(await codeOf(t.migrate(opts)), JSON.stringify(opts)).toEqual({ code: 'CONFIG_INVALID', status: 500, message: NO_MIGRATIONS, details: undefined })
      }
      expect(await t.catalog.list()).toEqual(list)
      expect(await operationCount()).toBe(ops)
      expect(await objects()).toEqual(before)
      expect(events).toEqual([])

      if (backend.cliEnv) {
        const { TENANTRY_MIGRATIONS: _, ...env } = backend.cliEnv(migrations)
        const r = await cli(['tenants', 'create', 'empty-cli', '--tier', 'schema'], env)
        expect(r).toEqual({ code: 1, stdout: '', stderr: `error CONFIG_INVALID: ${NO_MIGRATIONS}\n` })
        expect(await t.catalog.list()).toEqual(list)
        expect(await operationCount()).toBe(ops)
        expect(await objects()).toEqual(before)
      }
    } finally {
      await open()
    }
  })

  it('a failing provision hook rolls everything back (no row, no room, no rows) and emits tenant.provision_failed', async () => {
    for (const tier of tiers) {
      fresh()
      const slug = `h-${tier}`
      const list = await t.catalog.list()
      const before = await objects()
      hookMode = 'fail'
      try {
        const refused = t.provision({ slug, tier })
        await expect(refused).rejects.toThrow(`seeding '${slug}' failed: the billing API is down`)
        await expect(refused).rejects.toMatchObject({ code: 'PROVISION_FAILED', status: 500 })
      } finally {
        hookMode = 'seed'
      }
      expect(hookRuns).toEqual([{ slug, status: 'provisioning', current: slug }])
      expect(eventNames()).toEqual(['tenant.provisioning', 'tenant.provision_failed'])
      const [, started] = events[0]
      const [, failed] = events[1]
      const id = (started.tenant as Tenant).id
      expect(failed).toMatchObject({ slug, operationId: started.operationId })
      expect((failed.error as Error).message).toBe(`seeding '${slug}' failed: the billing API is down`)

      expect(await t.findTenant(slug)).toBeNull()
      expect(await t.catalog.list()).toEqual(list)
      expect(await objects()).toEqual(before)
      // The hook's own row went with the rest (in the pooled tables it is the only trace).
      const pooledRows = await admin().query<{ n: number }>('SELECT count(*)::int AS n FROM public.projects WHERE tenant_id = $1', [id])
      expect(Number(pooledRows.rows[0].n)).toBe(0)
      const op = await t.operations.get(started.operationId as string)
      expect(op).toMatchObject({ kind: 'provision', slug, state: 'rolled_back', step: 'rollback', error: `seeding '${slug}' failed: the billing API is down`, owner: null })
      expect(op!.finishedAt).toBeInstanceOf(Date)

      // The slug is free again.
      fresh()
      const again = await t.provision({ slug, tier })
      expect(again.status).toBe('active')
      expect(eventNames()).toEqual(['tenant.provisioning', 'tenant.provisioned'])
    }
  })

  it('suspend: the resolver refuses with TENANT_SUSPENDED and the reason; resume serves it again, data untouched', async () => {
    fresh()
    const req = { host: undefined, path: '/', headers: { 'x-tenant': 'e-pooled' } }
    expect((await t.resolve(req)).slug).toBe('e-pooled')
    const suspended = await t.suspend('e-pooled', 'Invoice 42 is overdue.')
    expect(suspended).toMatchObject({ slug: 'e-pooled', status: 'suspended', statusReason: 'Invoice 42 is overdue.' })
    expect(await codeOf(t.resolve(req))).toMatchObject({ code: 'TENANT_SUSPENDED', status: 403, message: "Tenant 'e-pooled' is suspended: Invoice 42 is overdue." })
    expect((await codeOf(t.withTenant('e-pooled', async () => undefined))).code).toBe('TENANT_SUSPENDED')
    const resumed = await t.resume('e-pooled')
    expect(resumed).toMatchObject({ status: 'active', statusReason: null })
    expect((await t.resolve(req)).status).toBe('active')
    expect(eventNames()).toEqual(['tenant.suspended', 'tenant.resumed'])
    const rows = await t.withTenant('e-pooled', () => t.db.query<{ name: string }>('SELECT name FROM projects'))
    expect(rows.rows).toEqual([{ name: 'seed of e-pooled' }])
    expect(await codeOf(t.suspend('nobody-here'))).toMatchObject({ code: 'TENANT_NOT_FOUND', status: 404 })
  })

  it('delete: TENANT_NOT_FOUND, data kept; purge before the retention period is a CONFLICT; restore brings it back suspended', async () => {
    fresh()
    const before = await objects()
    const ops = await operationCount()
    const req = { host: undefined, path: '/', headers: { 'x-tenant': 'e-schema' } }
    const deleted = await t.delete('e-schema')
    expect(deleted.status).toBe('deleted')
    expect(deleted.deletedAt).toBeInstanceOf(Date)
    expect(eventNames()).toEqual(['tenant.deleted'])
    expect(await codeOf(t.resolve(req))).toMatchObject({ code: 'TENANT_NOT_FOUND', status: 404 })
    expect((await codeOf(t.withTenant('e-schema', async () => undefined))).code).toBe('TENANT_NOT_FOUND')
    // Deleting again changes nothing.
    expect((await t.delete('e-schema')).deletedAt).toEqual(deleted.deletedAt)
    expect(eventNames()).toEqual(['tenant.deleted'])

    // Data kept: schema, role and rows all still there.
    expect(await objects()).toEqual(before)
    const kept = await admin().query<{ name: string }>(`SELECT name FROM ${q(deleted.placement.schema!)}.projects`)
    expect(kept.rows).toEqual([{ name: 'seed of e-schema' }])

    const until = new Date(deleted.deletedAt!.getTime() + 30 * 86_400_000).toISOString()
    expect(await codeOf(t.purge('e-schema'))).toEqual({
      code: 'CONFLICT', status: 409, details: { retainedUntil: until },
      message: `Tenant 'e-schema' is kept until ${until} (retention 30 days); purge with --force to remove it now.`,
    })
    expect(await codeOf(t.purge('e-pooled'))).toMatchObject({
      code: 'CONFLICT', status: 409, message: "Tenant 'e-pooled' is active: delete it first ('tenants delete e-pooled'), or purge with --force.",
    })
    expect(await codeOf(t.suspend('e-schema'))).toMatchObject({ code: 'CONFLICT', message: "Tenant 'e-schema' is deleted; it cannot suspend now." })
    expect(await codeOf(t.resume('e-schema'))).toMatchObject({ code: 'CONFLICT', message: "Tenant 'e-schema' is deleted; it cannot resume now." })
    expect(await objects()).toEqual(before)
    expect(await operationCount()).toBe(ops)
    expect(eventNames()).toEqual(['tenant.deleted'])

    const restored = await t.restore('e-schema')
    expect(restored).toMatchObject({ status: 'suspended', statusReason: 'Restored after deletion; resume it to serve it again.', deletedAt: null })
    expect(await codeOf(t.restore('e-schema'))).toMatchObject({ code: 'CONFLICT', message: "Tenant 'e-schema' is suspended; it cannot restore now." })
    expect((await codeOf(t.resolve(req))).code).toBe('TENANT_SUSPENDED')
    await t.resume('e-schema')
    const rows = await t.withTenant('e-schema', () => t.db.query<{ name: string }>('SELECT name FROM projects'))
    expect(rows.rows).toEqual([{ name: 'seed of e-schema' }])
  })

  it('purge --force removes exactly the tenant (room, rows, ledger, domains, catalog row) and reports each thing removed', async () => {
    for (const tier of tiers) {
      const slug = `x-${tier}`
      const before = await objects()
      const list = await t.catalog.list()
      const tenant = await t.provision({ slug, tier })
      await t.withTenant(tenant, async () => {
        const p = await t.db.query<{ id: string }>('SELECT id FROM projects')
        await t.db.query('INSERT INTO tasks (project_id, title) VALUES ($1, $2), ($1, $3)', [p.rows[0].id, 'one', 'two'])
      })
      await t.addDomain(slug, `${slug}.example.com`)
      const target = tier === 'pooled' ? null : await targetOf(slug)
      fresh()

      const r = await t.purge(slug, { force: true, startedBy: 'lifecycle test' })
      const last = `catalog row of '${slug}' and domains ${slug}.example.com`
      const room = tier === 'pooled'
        ? ['2 rows from public.tasks', '1 rows from public.projects']
        : [tier === 'schema' ? `schema t_${hex(tenant.id)}` : `database ${PREFIX}_t_${hex(tenant.id)}`, `role ${PREFIX}_t_${hex(tenant.id)}`]
      expect(r.removed).toEqual([...room, last])
      expect(r.tenant.id).toBe(tenant.id)

      expect(eventNames()).toEqual(['tenant.purging', 'tenant.purged'])
      expect(events[0][1].operationId).toBe(r.operationId)
      expect(events[1][1]).toMatchObject({ operationId: r.operationId, removed: r.removed })
      const op = await t.operations.get(r.operationId)
      expect(op).toMatchObject({ kind: 'purge', slug, tenantId: tenant.id, state: 'done', step: 'catalog', startedBy: 'lifecycle test', owner: null, progress: { removed: r.removed } })

      // Nothing of it is left.
      expect(await t.findTenant(slug)).toBeNull()
      expect(await t.catalog.byDomain(`${slug}.example.com`)).toBeNull()
      expect(await t.catalog.list()).toEqual(list)
      expect(await objects()).toEqual(before)
      const pooledRows = await admin().query<{ n: number }>(
        'SELECT (SELECT count(*) FROM public.projects WHERE tenant_id = $1) + (SELECT count(*) FROM public.tasks WHERE tenant_id = $1) AS n', [tenant.id],
      )
      expect(Number(pooledRows.rows[0].n)).toBe(0)
      if (target && tier === 'schema') expect(await versionsOf(target)).toEqual([])
      expect(await codeOf(t.resolve({ host: undefined, path: '/', headers: { 'x-tenant': slug } }))).toMatchObject({ code: 'TENANT_NOT_FOUND' })
      expect(await codeOf(t.purge(slug, { force: true }))).toMatchObject({ code: 'TENANT_NOT_FOUND', status: 404 })
    }
  })

  it('one tenant fails on a planted conflict: the others finish, the result names it and why; after the fix a re-run completes it', async () => {
    for (const slug of ['m-1', 'm-2', 'm-3']) await t.provision({ slug, tier: 'schema' })
    addMigration('0002_archive.sql', 'ALTER TABLE projects ADD COLUMN archived boolean NOT NULL DEFAULT false;\n')
    await open()
    const victim = await targetOf('m-2')
    await admin().exec(`ALTER TABLE ${q(victim.schema)}.projects ADD COLUMN archived text`)
    const all = await targetsNow()
    fresh()

    const r = await migrateViaCli([])
    expect(r.state).toBe('failed')
    expect(r.halted).toBeUndefined()
    expect(r.counts).toEqual({ total: all.length, done: all.length - 1, failed: 1, skipped: 0, pending: 0 })
    expect(sortByTarget(r.targets).map((x) => ({ target: x.target, tenant: x.tenant, status: x.status, applied: x.applied, error: x.error }))).toEqual(
      all.map((x) =>
        x.label === victim.label
          ? { target: x.label, tenant: 'm-2', status: 'failed', applied: [], error: `Migration 0002_archive failed on ${x.label}: column "archived" of relation "projects" already exists` }
          : { target: x.label, tenant: x.slug, status: 'done', applied: ['0002_archive'], error: undefined },
      ),
    )
    for (const x of all) expect(await versionsOf(x), x.label).toEqual(x.label === victim.label ? ['0001'] : ['0001', '0002'])
    expect(await columnType(victim, 'projects', 'archived')).toBe('text')
    const op = await t.operations.get(r.operationId!)
    expect(op).toMatchObject({ kind: 'migrate', state: 'failed', error: '1 target(s) failed' })
    if (!backend.cliEnv) {
      expect(events.filter(([n]) => n === 'migration.target_failed').map(([, p]) => [p.target, p.tenant])).toEqual([[victim.label, 'm-2']])
      expect(events.filter(([n]) => n === 'migration.target_done')).toHaveLength(all.length - 1)
    }

    // Fixed: the re-run migrates just that one.
    await admin().exec(`ALTER TABLE ${q(victim.schema)}.projects DROP COLUMN archived`)
    const again = await t.migrate()
    expect(again.state).toBe('done')
    expect(sortByTarget(again.targets).map((x) => [x.target, x.status, x.applied])).toEqual(
      all.map((x) => (x.label === victim.label ? [x.label, 'done', ['0002_archive']] : [x.label, 'skipped', []])),
    )
    expect(await versionsOf(victim)).toEqual(['0001', '0002'])
    expect(await columnType(victim, 'projects', 'archived')).toBe('boolean not null')
  })

  it('--max-failures 1 halts the run and leaves the other targets pending', async () => {
    addMigration('0003_labels.sql', "ALTER TABLE tasks ADD COLUMN label text NOT NULL DEFAULT '';\n")
    await open()
    // main/public sorts first: with one worker it is the first target claimed, and it fails.
    await admin().exec('ALTER TABLE public.tasks ADD COLUMN label integer')
    const all = await targetsNow()
    expect(all[0].label).toBe('main/public')
    const r = await t.migrate({ concurrency: 1, maxFailures: 1 })
    expect(r.state).toBe('failed')
    expect(r.halted).toBe('stopped after 1 failures (--max-failures 1)')
    expect(r.counts).toEqual({ total: all.length, done: 0, failed: 1, skipped: 0, pending: all.length - 1 })
    expect(sortByTarget(r.targets).map((x) => [x.target, x.status, x.applied, x.error])).toEqual(
      all.map((x, i) =>
        i === 0
          ? [x.label, 'failed', [], 'Migration 0003_labels failed on main/public: column "label" of relation "tasks" already exists']
          : [x.label, 'pending', [], undefined],
      ),
    )
    const targets = await t.operationTargets(r.operationId!)
    expect(targets.filter((x) => x.claimedBy !== null).map((x) => x.target)).toEqual(['main/public'])
    expect(await t.operations.get(r.operationId!)).toMatchObject({ state: 'failed', error: 'stopped after 1 failures (--max-failures 1)' })
    for (const x of all) expect(await versionsOf(x), x.label).toEqual(['0001', '0002'])
    await admin().exec('ALTER TABLE public.tasks DROP COLUMN label')
  })

  it('--canary: a failing canary starts nothing else; once it passes, the canaries go first and then the rest', async () => {
    const canary = await targetOf('m-1')
    await admin().exec(`ALTER TABLE ${q(canary.schema)}.tasks ADD COLUMN label integer`)
    const all = await targetsNow()
    const r = await t.migrate({ canary: ['m-1'] })
    expect(r.state).toBe('failed')
    expect(r.halted).toBe('a canary target failed; the other targets were not started')
    expect(r.counts).toEqual({ total: all.length, done: 0, failed: 1, skipped: 0, pending: all.length - 1 })
    expect(sortByTarget(r.targets).map((x) => [x.target, x.status])).toEqual(all.map((x) => [x.label, x.label === canary.label ? 'failed' : 'pending']))
    expect(r.targets.find((x) => x.target === canary.label)!.error).toBe(`Migration 0003_labels failed on ${canary.label}: column "label" of relation "tasks" already exists`)
    expect((await t.operationTargets(r.operationId!)).filter((x) => x.claimedBy !== null).map((x) => x.target)).toEqual([canary.label])
    for (const x of all) expect(await versionsOf(x), x.label).toEqual(['0001', '0002'])

    expect(await codeOf(t.migrate({ canary: ['nobody-here'] }))).toMatchObject({ code: 'VALIDATION_FAILED', status: 400, message: "Unknown tenant 'nobody-here' in --canary/--only." })

    await admin().exec(`ALTER TABLE ${q(canary.schema)}.tasks DROP COLUMN label`)
    const other = await targetOf('m-3')
    const ok = await t.migrate({ canary: ['m-1', 'm-3'], concurrency: 2 })
    expect(ok.state).toBe('done')
    expect(ok.counts).toEqual({ total: all.length, done: all.length, failed: 0, skipped: 0, pending: 0 })
    const rows = await admin().query<{ target: string; canary: boolean; claimed_at: Date; finished_at: Date }>(
      'SELECT target, canary, claimed_at, finished_at FROM tenantry.operation_targets WHERE operation_id = $1', [ok.operationId],
    )
    expect(rows.rows.filter((x) => x.canary).map((x) => x.target).sort()).toEqual([canary.label, other.label].sort())
    const lastCanary = Math.max(...rows.rows.filter((x) => x.canary).map((x) => new Date(x.finished_at).getTime()))
    const firstOther = Math.min(...rows.rows.filter((x) => !x.canary).map((x) => new Date(x.claimed_at).getTime()))
    expect(lastCanary).toBeLessThanOrEqual(firstOther)
    for (const x of all) expect(await versionsOf(x), x.label).toEqual(['0001', '0002', '0003'])
  })

  it('--dry-run lists the pending files per target and changes nothing; --only narrows by tier, slug or server; unknown tokens are VALIDATION_FAILED', async () => {
    addMigration('0004_notes.sql', 'ALTER TABLE projects ADD COLUMN note text;\n')
    await open()
    const all = await targetsNow()
    const ops = await operationCount()

    const dry = await t.migrate({ dryRun: true })
    expect(dry).toMatchObject({ operationId: null, state: 'dry-run', counts: { total: all.length, done: 0, failed: 0, skipped: 0, pending: all.length } })
    expect(sortByTarget(dry.targets).map((x) => [x.target, x.tenant, x.status, x.applied])).toEqual(all.map((x) => [x.label, x.slug, 'pending', ['0004_notes']]))

    const schemaOnly = await t.migrate({ dryRun: true, only: ['schema'] })
    expect(schemaOnly.targets.map((x) => x.target).sort()).toEqual(all.filter((x) => x.label.startsWith('main/t_')).map((x) => x.label))
    expect(new Set(schemaOnly.targets.map((x) => x.tier))).toEqual(new Set(['schema']))
    const m2 = await targetOf('m-2')
    expect((await t.planMigrations({ only: ['m-2'] })).map((x) => [x.label, x.slug, x.pending])).toEqual([[m2.label, 'm-2', ['0004_notes']]])
    // A pooled tenant names the pooled target; a server names everything on it.
    expect((await t.planMigrations({ only: ['e-pooled'] })).map((x) => x.label)).toEqual(['main/public'])
    expect((await t.planMigrations({ only: ['main'] })).map((x) => x.label).sort()).toEqual(all.map((x) => x.label))
    expect(await codeOf(t.migrate({ only: ['nope'] }))).toMatchObject({
      code: 'VALIDATION_FAILED', status: 400, message: "--only 'nope' is not a tenant slug, a tier (pooled, schema, database) or a server (main).",
    })
    expect((await codeOf(t.migrate({ only: ['schema', 'nope'], dryRun: true }))).code).toBe('VALIDATION_FAILED')

    if (backend.cliEnv) {
      const env = backend.cliEnv(migrations)
      const plan = await cli(['migrate', '--dry-run'], env)
      expect(plan.code, show(plan)).toBe(0)
      const lines = plan.stdout.trimEnd().split('\n')
      expect(lines[0]).toBe(`Plan: ${all.length} of ${all.length} targets have pending migrations (nothing was changed).`)
      const schemas = all.filter((x) => x.label.startsWith('main/t_'))
      const databases = all.filter((x) => x.label.startsWith(`main/${PREFIX}_t_`))
      expect(lines).toContain('pooled on main (1):')
      expect(lines).toContain(`schema on main (${schemas.length}):`)
      expect(lines).toContain(`database on main (${databases.length}):`)
      expect(lines).toContain('  main/public: 0004_notes')
      for (const x of [...schemas, ...databases]) expect(lines).toContain(`  ${x.label} [${x.slug}]: 0004_notes`)
      const bad = await cli(['migrate', '--only', 'nope'], env)
      expect(bad).toEqual({ code: 1, stdout: '', stderr: "error VALIDATION_FAILED: --only 'nope' is not a tenant slug, a tier (pooled, schema, database) or a server (main).\n" })
    }
    // Nothing was changed by any of it.
    expect(await operationCount()).toBe(ops)
    for (const x of all) {
      expect(await versionsOf(x), x.label).toEqual(['0001', '0002', '0003'])
      expect(await columnType(x, 'projects', 'note'), x.label).toBeNull()
    }

    // A real run narrowed to one tenant migrates that tenant only.
    const one = await t.migrate({ only: ['m-2'] })
    expect(one.state).toBe('done')
    expect(one.targets.map((x) => [x.target, x.status, x.applied])).toEqual([[m2.label, 'done', ['0004_notes']]])
    for (const x of all) expect(await versionsOf(x), x.label).toEqual(x.label === m2.label ? ['0001', '0002', '0003', '0004'] : ['0001', '0002', '0003'])
  })

  it('a tenant provisioned after new migration files exist comes out at the latest version', async () => {
    // 0004 is still pending on every target but m-2's.
    for (const tier of tiers.filter((x) => x !== 'pooled')) {
      const slug = `n-${tier}`
      await t.provision({ slug, tier })
      const x = await targetOf(slug)
      expect(await versionsOf(x), slug).toEqual(['0001', '0002', '0003', '0004'])
      expect(await columnType(x, 'projects', 'note'), slug).toBe('text')
      expect(await columnType(x, 'projects', 'archived'), slug).toBe('boolean not null')
      expect(await columnType(x, 'tasks', 'label'), slug).toBe('text not null')
    }
    const all = await targetsNow()
    const r = await t.migrate()
    expect(r.state).toBe('done')
    const upToDate = new Set(['m-2', ...tiers.map((x) => `n-${x}`)])
    expect(sortByTarget(r.targets).map((x) => [x.target, x.status])).toEqual(all.map((x) => [x.label, x.slug && upToDate.has(x.slug) ? 'skipped' : 'done']))
    for (const x of all) expect(await versionsOf(x), x.label).toEqual(['0001', '0002', '0003', '0004'])
  })

  it('an edited applied migration is refused with MIGRATION_CHECKSUM_MISMATCH and nothing is applied', async () => {
    const original = readFileSync(join(migrations, '0002_archive.sql'), 'utf8')
    writeFileSync(join(migrations, '0002_archive.sql'), `${original}-- edited after it ran\n`)
    addMigration('0005_more.sql', 'ALTER TABLE projects ADD COLUMN more text;\n')
    try {
      await open()
      const all = await targetsNow()
      const ops = await operationCount()
      const message = `Migration 0002_archive was edited after it was applied to main/public. Restore the original file and put the change in a new migration. (and ${all.length - 1} more targets)`
      expect(await codeOf(t.migrate())).toEqual({ code: 'MIGRATION_CHECKSUM_MISMATCH', status: 500, message, details: { targets: all.length } })
      expect((await codeOf(t.migrate({ dryRun: true }))).code).toBe('MIGRATION_CHECKSUM_MISMATCH')
      expect((await codeOf(t.migrate({ only: ['m-3'] }))).message).toBe(
        `Migration 0002_archive was edited after it was applied to ${(await targetOf('m-3')).label}. Restore the original file and put the change in a new migration.`,
      )
      if (backend.cliEnv) {
        const r = await cli(['migrate'], backend.cliEnv(migrations))
        expect(r).toEqual({ code: 1, stdout: '', stderr: `error MIGRATION_CHECKSUM_MISMATCH: ${message}\n` })
      }
      expect(await operationCount()).toBe(ops)
      for (const x of all) {
        expect(await versionsOf(x), x.label).toEqual(['0001', '0002', '0003', '0004'])
        expect(await columnType(x, 'projects', 'more'), x.label).toBeNull()
      }
    } finally {
      writeFileSync(join(migrations, '0002_archive.sql'), original)
      unlinkSync(join(migrations, '0005_more.sql'))
    }
  })

  it('with retentionDays 0 a deleted tenant may be purged without --force; a live one still may not', async () => {
    await open({ retentionDays: 0 })
    fresh()
    expect(await codeOf(t.purge('m-3'))).toMatchObject({ code: 'CONFLICT', message: "Tenant 'm-3' is active: delete it first ('tenants delete m-3'), or purge with --force." })
    await t.delete('e-pooled')
    const r = await t.purge('e-pooled')
    expect(r.removed).toEqual(['0 rows from public.tasks', '1 rows from public.projects', "catalog row of 'e-pooled'"])
    expect(await t.findTenant('e-pooled')).toBeNull()
    expect(eventNames()).toEqual(['tenant.deleted', 'tenant.purging', 'tenant.purged'])
  })
}

async function cleanPostgres(): Promise<void> {
  await dropPostgresLeftovers(PREFIX, DB_NAME)
}

describe.skipIf(!PG_UP)('tenant lifecycle on PostgreSQL', { timeout: 180_000 }, () => {
  let url: string | undefined
  lifecycleSuite({
    name: 'postgres',
    tiers: ['pooled', 'schema', 'database'],
    async open(options) {
      if (!url) {
        await cleanPostgres()
        url = await freshDatabase(DB_NAME)
      }
      return createTenantry({ ...options, databaseUrl: url })
    },
    cliEnv: (migrations) => ({ DATABASE_URL: url!, TENANTRY_ROLE_PREFIX: PREFIX, TENANTRY_MIGRATIONS: migrations }),
    cleanup: cleanPostgres,
  })
})

describe('tenant lifecycle on PGlite', { timeout: 180_000 }, () => {
  // On disk, so that Tenantry can be reopened with new migration files and options.
  const dir = mkdtempSync(join(tmpdir(), 'tenantry-lifecycle-pglite-'))
  lifecycleSuite({
    name: 'pglite',
    tiers: ['pooled', 'schema'],
    open: (options) => createTenantry({ ...options, dataDir: dir }),
    cleanup: async () => rmSync(dir, { recursive: true, force: true }),
  })
})
