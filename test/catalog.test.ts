import { randomUUID } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { TenantryError } from '../src/core/errors.ts'
import { Catalog } from '../src/catalog/catalog.ts'
import { CATALOG_CHANNEL } from '../src/catalog/sql.ts'
import type { Tenant } from '../src/core/types.ts'
import type { AdminQueryable } from '../src/data/driver.ts'
import { createTenantry, type Tenantry } from '../src/runtime.ts'
import { dropDatabase, dropPostgresLeftovers, freshDatabase, postgresAvailable } from './helpers/backends.ts'

const DB_NAME = 'tenantry_test_catalog'
// Roles and databases are cluster-wide on a real server: everything this file makes carries this prefix.
const PREFIX = 'tc_catalog'

/** The coded error a promise rejects with (fails the test when it resolves or throws something else). */
async function codeOf(p: Promise<unknown>): Promise<{ code: string; status: number; message: string }> {
  try {
    await p
  } catch (err) {
    if (!(err instanceof TenantryError)) throw new Error(`expected a TenantryError, got: ${String(err)}`, { cause: err })
    return { code: err.code, status: err.status, message: err.message }
  }
  throw new Error('expected a rejection, but the promise resolved')
}

/** Schemas, roles and databases that exist now (what a provision would create). */
async function snapshot(admin: AdminQueryable): Promise<{ schemas: string[]; roles: string[]; databases: string[] }> {
  const schemas = await admin.query<{ n: string }>(
    `SELECT nspname AS n FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema' ORDER BY 1`,
  )
  const roles = await admin.query<{ n: string }>(`SELECT rolname AS n FROM pg_roles WHERE rolname LIKE $1 ORDER BY 1`, [`${PREFIX}\\_%`])
  const dbs = await admin.query<{ n: string }>(`SELECT datname AS n FROM pg_database WHERE datname LIKE $1 ORDER BY 1`, [`${PREFIX}\\_%`])
  return { schemas: schemas.rows.map((r) => r.n), roles: roles.rows.map((r) => r.n), databases: dbs.rows.map((r) => r.n) }
}

const slugs = (ts: Tenant[]) => ts.map((t) => t.slug)

function catalogSuite(open: () => Promise<Tenantry>, opts: { databaseTier: boolean; cleanup?: () => Promise<void> }): void {
  let tenantry: Tenantry
  let admin: AdminQueryable
  let mainDatabase: string

  beforeAll(async () => {
    tenantry = await open()
    const servers = await tenantry.catalog.listServers()
    expect(servers.map((s) => s.name)).toEqual(['main'])
    mainDatabase = servers[0].mainDatabase
    admin = tenantry.dataPlane.driver('main').admin(mainDatabase)
  })

  afterAll(async () => {
    await tenantry?.close()
    await opts.cleanup?.()
  })

  const insert = (slug: string, extra: Partial<{ id: string; status: 'active' | 'suspended'; config: Record<string, unknown> }> = {}) =>
    tenantry.catalog.insertTenant({
      id: extra.id ?? randomUUID(),
      slug,
      name: `${slug} Inc.`,
      status: extra.status ?? 'active',
      tier: 'pooled',
      plan: 'default',
      region: null,
      server: 'main',
      database: mainDatabase,
      schema: null,
      config: extra.config ?? {},
    })

  it('inserts a tenant and finds it by slug, id and domain', async () => {
    const id = randomUUID()
    const before = Date.now()
    const inserted = await insert('acme', { id, config: { color: 'red', seats: 5 } })
    expect(inserted).toMatchObject({
      id,
      slug: 'acme',
      name: 'acme Inc.',
      status: 'active',
      statusReason: null,
      tier: 'pooled',
      plan: 'default',
      region: null,
      placement: { server: 'main', database: mainDatabase },
      config: { color: 'red', seats: 5 },
    })
    expect(inserted.placement).not.toHaveProperty('schema')
    expect(inserted.createdAt).toBeInstanceOf(Date)
    expect(Math.abs(inserted.createdAt.getTime() - before)).toBeLessThan(60_000)

    const bySlug = await tenantry.catalog.bySlug('acme')
    const byId = await tenantry.catalog.byId(id)
    expect(bySlug).toEqual(inserted)
    expect(byId).toEqual(inserted)

    await tenantry.catalog.addDomain(id, 'app.acme.example')
    await tenantry.catalog.addDomain(id, 'acme.example')
    expect(await tenantry.catalog.domainsOf(id)).toEqual(['acme.example', 'app.acme.example'])
    expect((await tenantry.catalog.byDomain('app.acme.example'))?.id).toBe(id)
    expect((await tenantry.catalog.byDomain('acme.example'))?.slug).toBe('acme')

    // Unknown keys are null, not errors.
    expect(await tenantry.catalog.bySlug('nobody')).toBeNull()
    expect(await tenantry.catalog.byId(randomUUID())).toBeNull()
    expect(await tenantry.catalog.byDomain('nobody.example')).toBeNull()

    await tenantry.catalog.removeDomain('app.acme.example')
    expect(await tenantry.catalog.byDomain('app.acme.example')).toBeNull()
    expect(await tenantry.catalog.domainsOf(id)).toEqual(['acme.example'])
  })

  it('a taken slug is a CONFLICT and changes nothing', async () => {
    const before = await tenantry.catalog.list()
    const e = await codeOf(insert('acme'))
    expect(e.code).toBe('CONFLICT')
    expect(e.status).toBe(409)
    expect(e.message).toContain("'acme'")
    expect(await tenantry.catalog.list()).toEqual(before)
    // provision() reports the same for a taken slug, in every tier, before it creates anything.
    const objects = await snapshot(admin)
    for (const tier of ['pooled', 'schema', 'database'] as const) {
      expect((await codeOf(tenantry.provision({ slug: 'acme', tier }))).code).toBe('CONFLICT')
    }
    expect(await tenantry.catalog.list()).toEqual(before)
    expect(await snapshot(admin)).toEqual(objects)
  })

  it('a domain that already belongs to a tenant is DOMAIN_TAKEN (409)', async () => {
    const other = await insert('globex')
    const e = await codeOf(tenantry.catalog.addDomain(other.id, 'acme.example'))
    expect(e.code).toBe('DOMAIN_TAKEN')
    expect(e.status).toBe(409)
    expect((await tenantry.catalog.byDomain('acme.example'))?.slug).toBe('acme')
    expect(await tenantry.catalog.domainsOf(other.id)).toEqual([])
  })

  it('caches lookups and a change through the catalog clears the cache at once', async () => {
    const c = tenantry.catalog
    const a1 = await c.bySlug('acme')
    const a2 = await c.bySlug('acme')
    expect(a2).toBe(a1)
    const i1 = await c.byId(a1!.id)
    expect(await c.byId(a1!.id)).toBe(i1)
    const d1 = await c.byDomain('acme.example')
    expect(await c.byDomain('acme.example')).toBe(d1)

    // Proof that the cache is really served: a change behind the catalog's back (no NOTIFY) is not seen…
    await admin.query(`UPDATE tenantry.tenants SET name = 'Renamed behind the back' WHERE id = $1`, [a1!.id])
    expect(await c.bySlug('acme')).toBe(a1)
    expect((await c.byId(a1!.id))!.name).toBe('acme Inc.')
    // …until the cache is cleared.
    c.clearCache()
    expect((await c.bySlug('acme'))!.name).toBe('Renamed behind the back')

    // A change through the catalog: the very next lookup (no waiting for a notification) is fresh.
    const warm = await c.bySlug('acme')
    const warmDomain = await c.byDomain('acme.example')
    const changed = await c.setStatus(a1!.id, 'suspended', 'cache test')
    const s = await c.bySlug('acme')
    const i = await c.byId(a1!.id)
    const d = await c.byDomain('acme.example')
    expect(s).not.toBe(warm)
    expect(d).not.toBe(warmDomain)
    expect(s!.status).toBe('suspended')
    expect(i!.status).toBe('suspended')
    expect(d!.status).toBe('suspended')
    expect(s).toEqual(changed)

    const renamed = await c.updateTenant(a1!.id, { name: 'Acme Corporation', config: { color: 'blue' } })
    expect(renamed.name).toBe('Acme Corporation')
    const after = await c.bySlug('acme')
    expect(after!.name).toBe('Acme Corporation')
    expect(after!.config).toEqual({ color: 'blue' })
    expect(after!.status).toBe('suspended')
    await c.setStatus(a1!.id, 'active')
    expect((await c.bySlug('acme'))!.status).toBe('active')
  })

  it('bounds the cache: lookups of identifiers naming no tenant cannot grow it without end, nor push known tenants out', async () => {
    const c = tenantry.catalog
    c.clearCache()
    const known = await c.bySlug('acme')
    expect(known).not.toBeNull()
    const { maxMisses } = c.cacheStats()
    const unknown = Array.from({ length: maxMisses + 500 }, (_, i) => `nobody-${i}`)
    for (let i = 0; i < unknown.length; i += 250) {
      expect(await Promise.all(unknown.slice(i, i + 250).map((slug) => c.bySlug(slug)))).toEqual(Array(Math.min(250, unknown.length - i)).fill(null))
    }
    expect(c.cacheStats()).toMatchObject({ entries: 1, misses: maxMisses })
    // The known tenant is still served from the cache (the same object).
    expect(await c.bySlug('acme')).toBe(known)
  })

  it('clears its own cache on a change without waiting for any notification', async () => {
    // A second catalog on the same database that does not listen: only its own changes clear its cache.
    const quiet = new Catalog({ admin })
    await quiet.init()
    try {
      const warm = await quiet.bySlug('globex')
      expect(await quiet.bySlug('globex')).toBe(warm)
      // A change through the other catalog is not seen here (no listener, 60 s TTL)…
      await tenantry.catalog.setStatus(warm!.id, 'suspended', 'elsewhere')
      await new Promise((r) => setTimeout(r, 50))
      expect(await quiet.bySlug('globex')).toBe(warm)
      // …but its own change is, on the very next lookup.
      await quiet.setStatus(warm!.id, 'active')
      const fresh = await quiet.bySlug('globex')
      expect(fresh).not.toBe(warm)
      expect(fresh).toMatchObject({ status: 'active', statusReason: null })
      // A failed change clears it too (the transaction's outcome is not assumed).
      const cached = await quiet.bySlug('globex')
      await expect(quiet.setStatus(randomUUID(), 'suspended')).rejects.toThrow()
      expect(await quiet.bySlug('globex')).not.toBe(cached)
    } finally {
      await quiet.close()
    }
  })

  it('a change is announced on the notification channel; the catalog that made it skips its own echo', async () => {
    const c = tenantry.catalog
    const heard: string[] = []
    const stop = await tenantry.dataPlane.driver('main').listen(CATALOG_CHANNEL, (payload) => heard.push(payload))
    try {
      const before = c.invalidations
      const acme = (await c.bySlug('acme'))!
      await c.updateTenant(acme.id, { name: 'Acme Corporation' })
      const deadline = Date.now() + 5000
      while (heard.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10))
      expect(heard).toHaveLength(1)
      expect(heard[0].endsWith(`:${acme.id}`)).toBe(true)
      // Its own cache was cleared by the change itself; the echo, heard by now on the same
      // server, clears nothing more: what was cached since the change stays cached.
      const cached = (await c.bySlug('acme'))!
      await new Promise((r) => setTimeout(r, 50))
      expect(c.invalidations).toBe(before)
      expect(await c.bySlug('acme')).toBe(cached)
    } finally {
      await stop()
    }
  })

  it('suspends a tenant with a reason and reactivates it', async () => {
    const acme = (await tenantry.catalog.bySlug('acme'))!
    const suspended = await tenantry.catalog.setStatus(acme.id, 'suspended', 'Invoice 42 is unpaid')
    expect(suspended).toMatchObject({ id: acme.id, status: 'suspended', statusReason: 'Invoice 42 is unpaid' })
    expect(suspended.updatedAt.getTime()).toBeGreaterThanOrEqual(acme.updatedAt.getTime())
    expect(await tenantry.catalog.bySlug('acme')).toMatchObject({ status: 'suspended', statusReason: 'Invoice 42 is unpaid' })
    expect(slugs(await tenantry.catalog.list({ status: 'suspended' }))).toEqual(['acme'])

    // The runtime refuses to serve it, with the reason.
    const e = await codeOf(tenantry.withTenant('acme', async () => 1))
    expect(e.code).toBe('TENANT_SUSPENDED')
    expect(e.status).toBe(403)
    expect(e.message).toContain('Invoice 42 is unpaid')

    const active = await tenantry.catalog.setStatus(acme.id, 'active')
    expect(active).toMatchObject({ status: 'active', statusReason: null })
    expect(await tenantry.withTenant('acme', async () => 'served')).toBe('served')
    expect(slugs(await tenantry.catalog.list({ status: 'suspended' }))).toEqual([])

    expect((await codeOf(tenantry.catalog.setStatus(randomUUID(), 'suspended', 'x'))).code).toBe('TENANT_NOT_FOUND')
  })

  it('provisions a valid tenant (the snapshot below sees what provisioning makes)', async () => {
    const before = await snapshot(admin)
    const t = await tenantry.provision({ slug: 'initech', tier: 'schema', name: 'Initech' })
    expect(t).toMatchObject({ slug: 'initech', name: 'Initech', status: 'active', tier: 'schema' })
    expect(t.placement.schema).toBe(`t_${t.id.replace(/-/g, '')}`)
    const after = await snapshot(admin)
    expect(after.schemas).toEqual([...before.schemas, t.placement.schema!].sort())
    expect(after.roles).toEqual([...before.roles, `${PREFIX}_t_${t.id.replace(/-/g, '')}`].sort())
    expect((await tenantry.catalog.bySlug('initech'))?.id).toBe(t.id)
  })

  it.skipIf(!opts.databaseTier)('provisions a database-tier tenant (its database shows in the snapshot)', async () => {
    const before = await snapshot(admin)
    const t = await tenantry.provision({ slug: 'hooli', tier: 'database' })
    expect(t).toMatchObject({ slug: 'hooli', status: 'active', tier: 'database', placement: { server: 'main', database: `${PREFIX}_t_${t.id.replace(/-/g, '')}` } })
    const after = await snapshot(admin)
    // The first database tenant of a server also creates its template database (kept migrated).
    expect(after.databases).toEqual([...new Set([...before.databases, t.placement.database, `${PREFIX}_template`])].sort())
    expect(after.roles).toEqual([...before.roles, `${PREFIX}_t_${t.id.replace(/-/g, '')}`].sort())
  })

  const invalidSlugs: [string, string][] = [
    ['ACME', 'uppercase'],
    ['www', 'reserved'],
    ['a_b', 'underscore'],
    ['a'.repeat(64), '64 characters'],
    ['xn--abc', 'punycode'],
    ['', 'empty'],
  ]

  for (const tier of ['pooled', 'schema', 'database'] as const) {
    it(`provision with an invalid slug is TENANT_INVALID and creates nothing (${tier} tier)`, async () => {
      const list = await tenantry.catalog.list()
      const before = await snapshot(admin)
      for (const [slug, why] of invalidSlugs) {
        const e = await codeOf(tenantry.provision({ slug, tier }))
        expect({ why, code: e.code, status: e.status }).toEqual({ why, code: 'TENANT_INVALID', status: 400 })
        expect(await tenantry.catalog.bySlug(slug)).toBeNull()
      }
      expect(await tenantry.catalog.list()).toEqual(list)
      expect(await snapshot(admin)).toEqual(before)
    })
  }

  it('provision with an invalid tier is VALIDATION_FAILED and creates nothing', async () => {
    const list = await tenantry.catalog.list()
    const before = await snapshot(admin)
    for (const tier of ['shared', 'SCHEMA', '', undefined]) {
      const e = await codeOf(tenantry.provision({ slug: 'umbrella', tier: tier as never }))
      expect({ tier, code: e.code, status: e.status }).toEqual({ tier, code: 'VALIDATION_FAILED', status: 400 })
    }
    expect(await tenantry.catalog.bySlug('umbrella')).toBeNull()
    expect(await tenantry.catalog.list()).toEqual(list)
    expect(await snapshot(admin)).toEqual(before)
  })

  it('provision on an unknown server is SERVER_NOT_FOUND and creates nothing', async () => {
    const list = await tenantry.catalog.list()
    const before = await snapshot(admin)
    const e = await codeOf(tenantry.provision({ slug: 'umbrella', tier: 'schema', server: 'nowhere' }))
    expect(e.code).toBe('SERVER_NOT_FOUND')
    // The caller named the server: a client mistake, not a 500.
    expect(e.status).toBe(400)
    expect(e.message).toContain("'nowhere'")
    expect(await tenantry.catalog.bySlug('umbrella')).toBeNull()
    expect(await tenantry.catalog.list()).toEqual(list)
    expect(await snapshot(admin)).toEqual(before)
  })

  it('bad input to a catalog change is a coded 4xx error (never a raw database error) and changes nothing', async () => {
    const acme = (await tenantry.catalog.bySlug('acme'))!
    const list = await tenantry.catalog.list()

    const plan = await codeOf(tenantry.catalog.updateTenant(acme.id, { plan: 'no-such-plan' }))
    expect(plan).toMatchObject({ code: 'VALIDATION_FAILED', status: 400 })
    expect(plan.message).toContain("'no-such-plan'")

    const status = await codeOf(tenantry.catalog.setStatus(acme.id, 'frozen' as never))
    expect(status).toMatchObject({ code: 'VALIDATION_FAILED', status: 400 })
    expect(status.message).toContain("'frozen'")

    const domain = await codeOf(tenantry.catalog.addDomain(randomUUID(), 'orphan.example'))
    expect(domain).toMatchObject({ code: 'TENANT_NOT_FOUND', status: 404 })
    expect(await tenantry.catalog.byDomain('orphan.example')).toBeNull()

    expect(await tenantry.catalog.list()).toEqual(list)
  })

  it('a malformed id finds no tenant (null, not a database error)', async () => {
    expect(await tenantry.catalog.byId('not-a-uuid')).toBeNull()
    expect(await tenantry.catalog.byId("'; DROP TABLE tenantry.tenants; --")).toBeNull()
    expect(await tenantry.catalog.byId('')).toBeNull()
    // A well-formed id in capitals still finds its tenant, as PostgreSQL's uuid type does.
    const acme = (await tenantry.catalog.bySlug('acme'))!
    expect((await tenantry.catalog.byId(acme.id.toUpperCase()))?.slug).toBe('acme')
  })

  it('lists tenants sorted by slug, filtered by status and tier', async () => {
    const all = slugs(await tenantry.catalog.list())
    expect(all).toEqual(opts.databaseTier ? ['acme', 'globex', 'hooli', 'initech'] : ['acme', 'globex', 'initech'])
    expect(slugs(await tenantry.catalog.list({ tier: 'schema' }))).toEqual(['initech'])
    expect(slugs(await tenantry.catalog.list({ tier: 'pooled', status: 'active' }))).toEqual(['acme', 'globex'])
  })
}

async function cleanPostgres(): Promise<void> {
  await dropPostgresLeftovers(PREFIX, DB_NAME)
}

describe.skipIf(!(await postgresAvailable()))('catalog on PostgreSQL', () => {
  catalogSuite(
    async () => {
      await cleanPostgres()
      const url = await freshDatabase(DB_NAME)
      return createTenantry({ databaseUrl: url, rolePrefix: PREFIX, migrations: 'demo/migrations' })
    },
    {
      databaseTier: true,
      cleanup: async () => {
        await dropDatabase(DB_NAME)
        await cleanPostgres()
      },
    },
  )
})

describe('catalog on PGlite', () => {
  catalogSuite(() => createTenantry({ dataDir: 'memory', rolePrefix: PREFIX, migrations: 'demo/migrations' }), { databaseTier: false })
})
