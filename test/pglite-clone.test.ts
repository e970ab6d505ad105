import { randomUUID } from 'node:crypto'
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createTenantry, loadMigrations, type Tenant, type Tenantry } from '../src/index.ts'
import type { AdminQueryable } from '../src/data/driver.ts'
import { PgliteServer } from '../src/data/pglite-server.ts'
import { databaseTier } from '../src/data/tiers/database-tier.ts'
import { createTarget } from '../src/lifecycle/migrator.ts'
import { outcome } from './helpers/backends.ts'

// Database-tier tenants on PGlite are copies of a template data directory kept at the latest
// migration (issue 3). A copy must be exactly what running the migrations builds, and a copy
// killed midway must leave nothing that passes for a database.

const REPO = fileURLToPath(new URL('..', import.meta.url))
const PREFIX = 'tl_clone'

/** What a tenant database is made of, with the tenant's role written as `<tenant role>`. */
async function shapeOf(admin: AdminQueryable, tenantRole: string): Promise<Record<string, unknown[]>> {
  const norm = (v: unknown) => JSON.parse(JSON.stringify(v).replaceAll(tenantRole, '<tenant role>'))
  const q = async (sql: string) => norm((await admin.query(sql)).rows)
  return {
    tables: await q(`SELECT n.nspname, c.relname, c.relkind, c.relrowsecurity, c.relforcerowsecurity, c.relacl::text AS acl
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname IN ('public', 'tenantry') ORDER BY 1, 2`),
    columns: await q(`SELECT table_schema, table_name, column_name, data_type, is_nullable, column_default
      FROM information_schema.columns WHERE table_schema IN ('public', 'tenantry') ORDER BY 1, 2, ordinal_position`),
    policies: await q(`SELECT tablename, policyname, roles::text, cmd, qual, with_check FROM pg_policies ORDER BY 1, 2`),
    constraints: await q(`SELECT conrelid::regclass::text AS rel, conname, pg_get_constraintdef(oid) AS def FROM pg_constraint
      WHERE connamespace IN ('public'::regnamespace, 'tenantry'::regnamespace) ORDER BY 1, 2`),
    roles: await q(`SELECT rolname, rolsuper, rolinherit, rolcanlogin, rolbypassrls, rolcreatedb, rolcreaterole FROM pg_roles
      WHERE rolname LIKE '${PREFIX}\\_%' ORDER BY 1`),
    members: await q(`SELECT r.rolname AS role, m.rolname AS member FROM pg_auth_members a
      JOIN pg_roles r ON r.oid = a.roleid JOIN pg_roles m ON m.oid = a.member WHERE r.rolname LIKE '${PREFIX}\\_%' ORDER BY 1, 2`),
    schemas: await q(`SELECT nspname, nspacl::text AS acl FROM pg_namespace WHERE nspname IN ('public', 'tenantry') ORDER BY 1`),
    database: await q(`SELECT datacl::text AS acl FROM pg_database WHERE datname = current_database()`),
    functions: await q(`SELECT p.proname, p.prosecdef, p.proacl::text AS acl, md5(p.prosrc) AS src FROM pg_proc p
      WHERE p.pronamespace = 'tenantry'::regnamespace ORDER BY 1`),
    ledger: await q(`SELECT target, version, name, checksum FROM tenantry.migrations ORDER BY 1, 2`),
    key: await q(`SELECT key FROM tenantry.secret`),
  }
}

describe('database tier on PGlite: tenants copied from the template directory', { timeout: 180_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'tenantry-pglite-clone-'))
  const migrations = mkdtempSync(join(tmpdir(), 'tenantry-pglite-clone-migrations-'))
  const databases = join(dir, 'databases')
  let t: Tenantry

  async function open(): Promise<void> {
    await t?.close()
    t = await createTenantry({ dataDir: dir, migrations, rolePrefix: PREFIX })
  }

  const ledgerOf = async (tenant: Tenant) =>
    (await t.dataPlane.driver('main').admin(tenant.placement.database).query<{ version: string; name: string; checksum: string }>(
      'SELECT version, name, checksum FROM tenantry.migrations WHERE target = $1 ORDER BY version', ['public'],
    )).rows
  const expectedLedger = () => loadMigrations(migrations).map((f) => ({ version: f.version, name: f.name, checksum: f.checksum }))

  beforeAll(async () => {
    copyFileSync(join(REPO, 'demo/migrations/0001_projects_and_tasks.sql'), join(migrations, '0001_projects_and_tasks.sql'))
    await open()
    expect((await t.migrate()).state).toBe('done')
  })

  afterAll(async () => {
    await t?.close()
    rmSync(dir, { recursive: true, force: true })
    rmSync(migrations, { recursive: true, force: true })
  })

  /** The template events of one call, `ms` of template.built replaced by its type. */
  async function templateEvents<T>(fn: () => Promise<T>): Promise<{ result: T; events: [string, Record<string, unknown>][] }> {
    const events: [string, Record<string, unknown>][] = []
    const on = (name: 'template.building' | 'template.step' | 'template.built') => (p: object) => events.push([name, { ...p }])
    const listeners = (['template.building', 'template.step', 'template.built'] as const).map((n) => [n, on(n)] as const)
    for (const [n, l] of listeners) t.events.on(n, l)
    try {
      const result = await fn()
      for (const [, p] of events) if ('ms' in p) p.ms = typeof p.ms
      return { result, events }
    } finally {
      for (const [n, l] of listeners) t.events.off(n, l)
    }
  }

  it('a cloned tenant has the ledger at the latest version, passes the doctor and serves only its own rows', async () => {
    // The first database tenant builds the template, step by step (the CLI's progress bar); the next one only copies it.
    const where = { server: 'main', database: `${PREFIX}_template` }
    const first = await templateEvents(() => t.provision({ slug: 'clone-a', tier: 'database' }))
    expect(first.events).toEqual([
      ['template.building', { ...where, create: true, pending: ['0001_projects_and_tasks'] }],
      ['template.step', { ...where, done: 0, total: 3, label: `creating the template database ${PREFIX}_template` }],
      ['template.step', { ...where, done: 1, total: 3, label: 'migrating the template: 0001_projects_and_tasks' }],
      ['template.built', { ...where, applied: ['0001_projects_and_tasks'], ms: 'number' }],
      ['template.step', { ...where, done: 2, total: 3, label: 'cloning the template' }],
    ])
    const second = await templateEvents(() => t.provision({ slug: 'clone-b', tier: 'database' }))
    expect(second.events).toEqual([])
    const [a, b] = [first.result, second.result]
    expect([a.status, b.status]).toEqual(['active', 'active'])
    // The template sits beside the tenants; no copy is left half-way.
    expect(readdirSync(databases).sort()).toEqual([a.placement.database, b.placement.database, `${PREFIX}_template`].sort())
    for (const x of [a, b]) expect(await ledgerOf(x), x.slug).toEqual(expectedLedger())

    expect(await t.doctor()).toEqual({ findings: [], tables: 6 })

    await t.withTenant('clone-a', () => t.db.query("INSERT INTO projects (name) VALUES ('of a')"))
    await t.withTenant('clone-b', () => t.db.query("INSERT INTO projects (name) VALUES ('of b')"))
    const seen = async (slug: string) => (await t.withTenant(slug, () => t.db.query<{ name: string; tenant_id: string }>('SELECT name, tenant_id FROM projects'))).rows
    expect(await seen('clone-a')).toEqual([{ name: 'of a', tenant_id: a.id }])
    expect(await seen('clone-b')).toEqual([{ name: 'of b', tenant_id: b.id }])
    // Row-level security holds inside a copy too: a row of a planted in b's database is not served
    // to b, and b cannot write one (the policy's WITH CHECK, reported as CROSS_TENANT_WRITE).
    const driver = t.dataPlane.driver('main')
    await driver.admin(b.placement.database).query('INSERT INTO projects (tenant_id, name) VALUES ($1, $2)', [a.id, 'planted'])
    expect(await seen('clone-b')).toEqual([{ name: 'of b', tenant_id: b.id }])
    const forged = t.withTenant('clone-b', () => t.db.query('INSERT INTO projects (tenant_id, name) VALUES ($1, $2)', [a.id, 'forged']))
    expect(await outcome(forged)).toBe('CROSS_TENANT_WRITE')
    await driver.admin(b.placement.database).query("DELETE FROM projects WHERE name = 'planted'")
  })

  it('a copy is the database the migration path builds: tables, forced RLS, policies, roles, grants, ledger, key', async () => {
    const cloned = (await t.catalog.bySlug('clone-a'))!
    const naming = t.dataPlane.opts.naming
    const ctx = t.dataPlane.tierContext('main')
    // The same tier, told that nothing can be cloned: the path PGlite took before the template.
    const id = randomUUID()
    const built: Tenant = { ...cloned, id, slug: 'built', placement: { server: 'main', database: naming.tenantDatabase(id) } }
    const preamble = await databaseTier.prepare(ctx, built, { cloneInto: async () => false })
    await createTarget(ctx.driver.admin(built.placement.database), t.dataPlane.migrationTarget(built), loadMigrations(migrations), preamble)
    try {
      const want = await shapeOf(ctx.driver.admin(built.placement.database), naming.tenantRole(built.id))
      const got = await shapeOf(ctx.driver.admin(cloned.placement.database), naming.tenantRole(cloned.id))
      expect(got).toEqual(want)
      expect(got.tables.filter((r) => (r as { relforcerowsecurity: boolean }).relforcerowsecurity)).toHaveLength(2)
      expect([got.policies.length, got.roles.length, got.members.length, got.ledger.length]).toEqual([2, 2, 1, 1])
    } finally {
      await ctx.driver.dropDatabase(built.placement.database)
    }
  })

  it('a tenant provisioned after a new migration was added comes out at the latest version', async () => {
    writeFileSync(join(migrations, '0002_notes.sql'), 'ALTER TABLE projects ADD COLUMN note text;\n')
    await open()
    const where = { server: 'main', database: `${PREFIX}_template` }
    const { result: c, events } = await templateEvents(() => t.provision({ slug: 'clone-c', tier: 'database' }))
    expect(events).toEqual([
      ['template.building', { ...where, create: false, pending: ['0002_notes'] }],
      ['template.step', { ...where, done: 0, total: 2, label: 'migrating the template: 0002_notes' }],
      ['template.built', { ...where, applied: ['0002_notes'], ms: 'number' }],
      ['template.step', { ...where, done: 1, total: 2, label: 'cloning the template' }],
    ])
    expect((await ledgerOf(c)).map((r) => r.version)).toEqual(['0001', '0002'])
    expect(await ledgerOf(c)).toEqual(expectedLedger())
    await t.withTenant('clone-c', () => t.db.query("INSERT INTO projects (name, note) VALUES ('of c', 'new column')"))
    expect((await t.withTenant('clone-c', () => t.db.query('SELECT name, note FROM projects'))).rows).toEqual([{ name: 'of c', note: 'new column' }])
    // The template was brought up first; the tenants made before it wait for the fleet migration.
    const template = t.dataPlane.driver('main').admin(`${PREFIX}_template`)
    expect((await template.query<{ version: string }>('SELECT version FROM tenantry.migrations ORDER BY 1')).rows.map((r) => r.version)).toEqual(['0001', '0002'])
    expect((await ledgerOf((await t.catalog.bySlug('clone-a'))!)).map((r) => r.version)).toEqual(['0001'])
    expect((await t.migrate()).state).toBe('done')
    expect(await t.doctor()).toEqual({ findings: [], tables: 8 })
  })

  it('purge removes a cloned tenant database; the template stays', async () => {
    const b = (await t.catalog.bySlug('clone-b'))!
    await t.purge('clone-b', { force: true })
    expect(existsSync(join(databases, b.placement.database))).toBe(false)
    expect(existsSync(join(databases, `${PREFIX}_template`, 'PG_VERSION'))).toBe(true)
  })
})

describe('PgliteServer.cloneDatabase', { timeout: 120_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'tenantry-pglite-copy-'))
  const server = new PgliteServer({ name: 'main', dataDir: dir, mainDatabase: 'main' })

  afterAll(async () => {
    await server.close()
    rmSync(dir, { recursive: true, force: true })
  })

  it('a copy killed midway leaves nothing that counts as a database, and the next clone replaces the leftovers', async () => {
    await server.createDatabase('tpl')
    await server.admin('tpl').exec("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('from the template');")
    // What a kill leaves: a partial copy under the hidden name, and a directory an interrupted initdb began.
    mkdirSync(join(dir, 'databases', '.copy.clone', 'base'), { recursive: true })
    writeFileSync(join(dir, 'databases', '.copy.clone', 'base', 'junk'), 'half a file')
    mkdirSync(join(dir, 'databases', 'copy', 'global'), { recursive: true })
    expect(await server.databaseExists('copy')).toBe(false)

    expect(await server.cloneDatabase('tpl', 'copy')).toBe(true)
    expect(readdirSync(join(dir, 'databases')).sort()).toEqual(['copy', 'tpl'])
    expect((await server.admin('copy').query('SELECT v FROM kept')).rows).toEqual([{ v: 'from the template' }])
    // The template is usable again after the copy, and the two are independent.
    await server.admin('copy').exec("INSERT INTO kept VALUES ('only in the copy')")
    expect((await server.admin('tpl').query('SELECT v FROM kept')).rows).toEqual([{ v: 'from the template' }])
    expect(await outcome(server.cloneDatabase('tpl', 'copy'))).toBe('CONFLICT')
  })

  it('in memory there is nothing to copy: the caller runs the migrations', async () => {
    const memory = new PgliteServer({ name: 'mem', dataDir: 'memory', mainDatabase: 'main' })
    expect(memory.canClone).toBe(false)
    expect(await memory.cloneDatabase('tpl', 'copy')).toBe(false)
    await memory.close()
  })
})
