import { spawn } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { TenantryError } from '../src/core/errors.ts'
import type { Tenant } from '../src/core/types.ts'
import { DataPlane } from '../src/data/data-plane.ts'
import type { AdminQueryable } from '../src/data/driver.ts'
import { adviseFrom, formatBytes, formatPeriod, resolveAdviseOptions } from '../src/observe/advise.ts'
import type { UsageRecord, UsageService } from '../src/observe/types.ts'
import { createUsageService, type UsageServiceDeps } from '../src/observe/usage-service.ts'
import { createTenantry, type Tenantry } from '../src/runtime.ts'
import { PG_ADMIN_URL, dropPostgresLeftovers, freshDatabase, postgresAvailable } from './helpers/backends.ts'

// The control-plane side of usage metering (issue 11), on PostgreSQL and on PGlite: records of
// several processes adding up, usage by bucket, top tenants with their shares, placement advice
// for a constructed fleet, storage sampling on every tier, retention, and the coded refusals.

const DB_NAME = 'tenantry_test_observe_usage'
// Roles and databases are cluster-wide on a real server: everything this file makes carries this prefix.
const PREFIX = 'to_usage'
const PG_UP = await postgresAvailable()
const MIN = 60_000
const HOUR = 3_600_000

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

/** A record with zero counters and no storage sample, `fields` on top. */
function rec(tenantId: string, intervalStart: Date, fields: Partial<UsageRecord> = {}): UsageRecord {
  return { tenantId, intervalStart, intervalMs: MIN, requests: 0, errors: 0, rejections: 0, statements: 0, dbTimeMs: 0, rows: 0, storageBytes: null, ...fields }
}

/** An owner connection that counts the statements sent through it. */
function counting(admin: AdminQueryable): { admin: AdminQueryable; statements: string[] } {
  const statements: string[] = []
  return {
    statements,
    admin: {
      query: (text, values) => { statements.push(text); return admin.query(text, values) },
      exec: (text) => { statements.push(text); return admin.exec(text) },
      transaction: (fn) => admin.transaction(fn),
    },
  }
}

interface Backend {
  name: string
  kind: 'pg' | 'pglite'
  open(): Promise<Tenantry>
  cleanup(): Promise<void>
}

function usageSuite(backend: Backend): void {
  let t: Tenantry
  let admin: AdminQueryable
  let mainDb: string
  let usage: UsageService
  let counted: ReturnType<typeof counting>
  const errors: [string, string][] = []
  let acme: Tenant, globex: Tenant, initech: Tenant, hooli: Tenant, umbrella: Tenant
  /** Start of the current metering interval when the suite began (records "now" go just before it). */
  let cur: number

  const deps = (extra: Partial<UsageServiceDeps> = {}): UsageServiceDeps => ({
    admin,
    catalog: t.catalog,
    dataPlane: t.dataPlane,
    options: { intervalMs: MIN, retentionDays: 90, storageSampleMs: 15 * MIN },
    onError: (err, context) => errors.push([err instanceof TenantryError ? err.code : String(err), context]),
    ...extra,
  })
  const clearUsage = () => admin.query('DELETE FROM tenantry.usage')
  const ago = (ms: number) => new Date(cur - ms)

  async function rawRows(): Promise<Record<string, unknown>[]> {
    const res = await admin.query<Record<string, unknown>>(
      `SELECT tenant_id, interval_start, interval_ms, requests::float8 AS requests, errors::float8 AS errors, rejections::float8 AS rejections,
              statements::float8 AS statements, rows::float8 AS rows, db_time_ms, storage_bytes::float8 AS storage_bytes
       FROM tenantry.usage ORDER BY interval_start, tenant_id`,
    )
    return res.rows.map((r) => ({ ...r, interval_start: new Date(r.interval_start as string) }))
  }

  beforeAll(async () => {
    t = await backend.open()
    mainDb = t.dataPlane.server('main').mainDatabase
    admin = t.dataPlane.driver('main').admin(mainDb)
    expect((await t.migrate()).state).toBe('done')
    acme = await t.provision({ slug: 'acme', tier: 'pooled' })
    globex = await t.provision({ slug: 'globex', tier: 'pooled' })
    initech = await t.provision({ slug: 'initech', tier: 'schema' })
    hooli = await t.provision({ slug: 'hooli', tier: 'database' })
    // A second server of the fleet, three times main's capacity, with one tenant that only the
    // catalog knows (the server is not reachable; advice needs none of it).
    await t.catalog.upsertServer({ name: 'east', url: 'postgres://nobody@east.invalid:5432/east', region: null, capacityWeight: 3, mainDatabase: 'east' })
    umbrella = await t.catalog.insertTenant({
      id: randomUUID(), slug: 'umbrella', name: 'Umbrella', status: 'active', tier: 'pooled', plan: 'default', region: null,
      server: 'east', database: 'east', schema: null, config: {},
    })
    counted = counting(admin)
    usage = createUsageService({ ...deps(), admin: counted.admin })
    await usage.init()
    // Twice, as a second process starting against the same catalog would.
    await createUsageService(deps()).init()
    cur = Math.floor(Date.now() / MIN) * MIN
  })

  afterAll(async () => {
    await usage?.close()
    await t?.close()
    await backend.cleanup()
  })

  it('creates the usage tables, revoked from PUBLIC, without a foreign key to tenants', async () => {
    const cols = await admin.query<{ column_name: string; data_type: string; is_nullable: string }>(
      `SELECT column_name, data_type, is_nullable FROM information_schema.columns WHERE table_schema = 'tenantry' AND table_name = 'usage' ORDER BY ordinal_position`,
    )
    expect(cols.rows.map((c) => `${c.column_name} ${c.data_type}${c.is_nullable === 'NO' ? ' not null' : ''}`)).toEqual([
      'tenant_id uuid not null', 'interval_start timestamp with time zone not null', 'interval_ms integer not null',
      'requests bigint not null', 'errors bigint not null', 'rejections bigint not null', 'statements bigint not null', 'rows bigint not null',
      'db_time_ms double precision not null', 'storage_bytes bigint', 'object_bytes bigint',
    ])
    const cons = await admin.query<{ conname: string; contype: string }>(
      `SELECT conname, contype FROM pg_constraint WHERE conrelid = 'tenantry.usage'::regclass AND contype IN ('p', 'f') ORDER BY conname`,
    )
    expect(cons.rows.map((c) => c.contype)).toEqual(['p'])
    const idx = await admin.query<{ indexdef: string }>(`SELECT indexdef FROM pg_indexes WHERE schemaname = 'tenantry' AND tablename = 'usage' ORDER BY indexname`)
    expect(idx.rows.map((r) => r.indexdef.replace(/^.* USING /, ''))).toEqual(['btree (interval_start)', 'btree (tenant_id, interval_start)'])
    const grants = await admin.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM information_schema.role_table_grants WHERE table_schema = 'tenantry' AND table_name IN ('usage', 'usage_sampling') AND grantee = 'PUBLIC'`,
    )
    expect(grants.rows[0].n).toBe(0)
    const app = t.dataPlane.opts.naming.appRole
    const rights = await admin.query<{ usage: boolean; sampling: boolean }>(
      `SELECT has_table_privilege($1, 'tenantry.usage', 'SELECT') AS usage, has_table_privilege($1, 'tenantry.usage_sampling', 'SELECT') AS sampling`,
      [app],
    )
    expect(rights.rows[0]).toEqual({ usage: false, sampling: false })
  })

  it("adds up two processes' records of the same tenant and interval, one statement per batch; storage is a gauge", async () => {
    await clearUsage()
    const t0 = new Date('2026-03-01T10:00:00.000Z')
    const t1 = new Date('2026-03-01T10:01:00.000Z')
    const other = createUsageService(deps())
    const before = counted.statements.length
    await usage.write([])
    expect(counted.statements.length).toBe(before)
    await usage.write([
      rec(acme.id, t0, { requests: 3, errors: 1, rejections: 2, statements: 5, rows: 7, dbTimeMs: 1.5 }),
      rec(globex.id, t0, { requests: 1, statements: 1, rows: 1, dbTimeMs: 0.25 }),
      rec(acme.id, t1, { requests: 1, dbTimeMs: 4 }),
    ])
    expect(counted.statements.length - before).toBe(1)
    await other.write([rec(acme.id, t0, { requests: 2, errors: 0, rejections: 1, statements: 4, rows: 10, dbTimeMs: 2.25, storageBytes: 4096 })])
    // A record without a sample keeps the sample; a new sample replaces it (not summed).
    await other.write([rec(acme.id, t0, { requests: 1 })])
    await usage.write([rec(globex.id, t0, { storageBytes: 100 }), rec(globex.id, t0, { requests: 2, storageBytes: 200 })])
    const row = (id: string, at: Date, r: number, e: number, j: number, s: number, n: number, db: number, st: number | null) => ({
      tenant_id: id, interval_start: at, interval_ms: MIN, requests: r, errors: e, rejections: j, statements: s, rows: n, db_time_ms: db, storage_bytes: st,
    })
    const [first, second] = [acme.id, globex.id].sort()
    const r0 = (id: string) => (id === acme.id ? row(acme.id, t0, 6, 1, 3, 9, 17, 3.75, 4096) : row(globex.id, t0, 3, 0, 0, 1, 1, 0.25, 200))
    expect(await rawRows()).toEqual([r0(first), r0(second), row(acme.id, t1, 1, 0, 0, 0, 0, 4, null)])
  })

  it('refuses records the table cannot take, before anything is written', async () => {
    await clearUsage()
    const at = new Date('2026-03-01T10:00:00.000Z')
    for (const bad of [
      rec('not-a-uuid', at, { requests: 1 }),
      rec(acme.id, new Date(Number.NaN)),
      rec(acme.id, at, { requests: 1.5 }),
      rec(acme.id, at, { errors: -1 }),
      rec(acme.id, at, { dbTimeMs: Number.POSITIVE_INFINITY }),
      rec(acme.id, at, { storageBytes: 10.5 }),
      rec(acme.id, at, { intervalMs: 0 }),
    ]) {
      expect((await codeOf(usage.write([rec(globex.id, at, { requests: 1 }), bad]))).code).toBe('VALIDATION_FAILED')
    }
    expect(await rawRows()).toEqual([])
  })

  it('usage by minute, hour and day buckets: sums, the latest storage sample of each bucket, by slug or id', async () => {
    await clearUsage()
    const at = (iso: string) => new Date(`2026-03-01T${iso}:00.000Z`)
    await usage.write([
      rec(acme.id, at('10:00'), { requests: 1, errors: 1, statements: 2, rows: 3, dbTimeMs: 1.5, storageBytes: 100 }),
      rec(acme.id, at('10:01'), { requests: 2, rejections: 1, statements: 3, rows: 4, dbTimeMs: 2 }),
      rec(acme.id, at('10:59'), { requests: 4, statements: 1, dbTimeMs: 0.5, storageBytes: 300 }),
      rec(acme.id, at('11:30'), { requests: 8, statements: 8, rows: 8, dbTimeMs: 8 }),
      rec(globex.id, at('10:30'), { requests: 5, dbTimeMs: 5, storageBytes: 50 }),
      // Outside [10:00, 12:00).
      rec(acme.id, at('09:59'), { requests: 100 }),
      rec(acme.id, at('12:00'), { requests: 100 }),
    ])
    const u = (slug: string, id: string, bucket: string, requests: number, errors: number, rejections: number, statements: number, dbTimeMs: number, rows: number, storageBytes: number | null) =>
      ({ tenantId: id, slug, bucket: at(bucket), requests, errors, rejections, statements, dbTimeMs, rows, storageBytes, objectBytes: null })
    const from = at('10:00')
    const to = at('12:00')
    expect(await usage.usage({ tenant: 'acme', from, to, granularity: 'minute' })).toEqual([
      u('acme', acme.id, '10:00', 1, 1, 0, 2, 1.5, 3, 100),
      u('acme', acme.id, '10:01', 2, 0, 1, 3, 2, 4, null),
      u('acme', acme.id, '10:59', 4, 0, 0, 1, 0.5, 0, 300),
      u('acme', acme.id, '11:30', 8, 0, 0, 8, 8, 8, null),
    ])
    const hourly = [u('acme', acme.id, '10:00', 7, 1, 1, 6, 4, 7, 300), u('acme', acme.id, '11:00', 8, 0, 0, 8, 8, 8, null)]
    expect(await usage.usage({ tenant: 'acme', from, to, granularity: 'hour' })).toEqual(hourly)
    expect(await usage.usage({ tenant: 'acme', from, to })).toEqual(hourly)
    expect(await usage.usage({ tenant: acme.id, from, to })).toEqual(hourly)
    expect(await usage.usage({ tenant: acme.id.toUpperCase(), from, to })).toEqual(hourly)
    expect(await usage.usage({ tenant: 'acme', from, to, granularity: 'day' })).toEqual([
      { ...u('acme', acme.id, '00:00', 15, 1, 1, 14, 12, 15, 300), bucket: new Date('2026-03-01T00:00:00.000Z') },
    ])
    // Every tenant: by bucket, then slug.
    expect(await usage.usage({ from, to })).toEqual([hourly[0], u('globex', globex.id, '10:00', 5, 0, 0, 0, 5, 0, 50), hourly[1]])

    // Default period: the last hour, hourly.
    await usage.write([rec(acme.id, ago(0), { requests: 9 })])
    const recent = await usage.usage({ tenant: 'acme' })
    expect(recent.reduce((a, r) => a + r.requests, 0)).toBe(9)
    expect(recent.every((r) => r.bucket.getTime() % HOUR === 0)).toBe(true)
  })

  it("a purged tenant's usage is kept and found by its id (slug null); unknown tenants are TENANT_NOT_FOUND", async () => {
    await clearUsage()
    const gone = randomUUID()
    const at = new Date('2026-03-01T10:00:00.000Z')
    await usage.write([rec(gone, at, { requests: 4, dbTimeMs: 2 })])
    expect(await usage.usage({ tenant: gone, from: at, to: new Date(at.getTime() + HOUR) })).toEqual([
      { tenantId: gone, slug: null, bucket: at, requests: 4, errors: 0, rejections: 0, statements: 0, dbTimeMs: 2, rows: 0, storageBytes: null, objectBytes: null },
    ])
    const nobody = await codeOf(usage.usage({ tenant: 'nobody' }))
    expect(nobody).toEqual({ code: 'TENANT_NOT_FOUND', status: 404, message: "No tenant has the slug or id 'nobody'." })
    expect((await codeOf(usage.usage({ tenant: randomUUID() }))).code).toBe('TENANT_NOT_FOUND')
  })

  it('refuses a bad granularity or period with VALIDATION_FAILED naming the choices', async () => {
    expect(await codeOf(usage.usage({ tenant: 'acme', granularity: 'week' as never }))).toEqual({
      code: 'VALIDATION_FAILED', status: 400, message: "Granularity 'week' is not one of minute, hour, day.",
    })
    const at = new Date('2026-03-01T10:00:00.000Z')
    expect(await codeOf(usage.usage({ tenant: 'acme', from: at, to: at }))).toEqual({
      code: 'VALIDATION_FAILED', status: 400, message: 'The period is empty: from (2026-03-01T10:00:00.000Z) must be before to (2026-03-01T10:00:00.000Z).',
    })
    expect((await codeOf(usage.usage({ tenant: 'acme', from: new Date(at.getTime() + 1), to: at }))).code).toBe('VALIDATION_FAILED')
    expect((await codeOf(usage.usage({ tenant: 'acme', from: new Date('nonsense') }))).code).toBe('VALIDATION_FAILED')
  })

  /** The fleet of the top and advise tests: main (weight 1) and east (weight 3). */
  async function writeFleet(): Promise<void> {
    await clearUsage()
    await usage.write([
      rec(acme.id, ago(50 * MIN), { requests: 400, errors: 2, statements: 800, rows: 1000, dbTimeMs: 2000, storageBytes: 900 }),
      rec(acme.id, ago(10 * MIN), { requests: 200, errors: 1, rejections: 3, statements: 400, rows: 500, dbTimeMs: 2000, storageBytes: 1000 }),
      rec(globex.id, ago(20 * MIN), { requests: 190, statements: 100, dbTimeMs: 1000, storageBytes: 6000 }),
      rec(globex.id, ago(5 * MIN), { requests: 10, statements: 10 }),
      rec(initech.id, ago(30 * MIN), { requests: 10, statements: 50, dbTimeMs: 5000, storageBytes: 3000 }),
      rec(umbrella.id, ago(15 * MIN), { requests: 390, statements: 30, dbTimeMs: 2000, storageBytes: 2000 }),
      // Before the last hour: in the 24-hour period of advise, not in top's hour.
      rec(acme.id, ago(2 * HOUR), { requests: 1000 }),
    ])
  }

  it('top tenants by requests, db_time and storage, with exact shares of their server and of all requests', async () => {
    await writeFleet()
    const row = (x: Tenant, requests: number, errors: number, rejections: number, statements: number, rows: number, dbTimeMs: number, storageBytes: number | null, serverDbTimeShare: number, requestShare: number) => ({
      tenantId: x.id, slug: x.slug, tier: x.tier, plan: 'default', server: x.placement.server,
      requests, errors, rejections, statements, dbTimeMs, rows, storageBytes, objectBytes: null, serverDbTimeShare, requestShare,
    })
    // main's database time: 4000 + 1000 + 5000 = 10000 ms; all requests: 600 + 200 + 10 + 390 = 1200.
    const A = row(acme, 600, 3, 3, 1200, 1500, 4000, 1000, 0.4, 0.5)
    const G = row(globex, 200, 0, 0, 110, 0, 1000, 6000, 0.1, 200 / 1200)
    const I = row(initech, 10, 0, 0, 50, 0, 5000, 3000, 0.5, 10 / 1200)
    const U = row(umbrella, 390, 0, 0, 30, 0, 2000, 2000, 1, 390 / 1200)
    expect(await usage.top({})).toEqual([A, U, G, I])
    expect(await usage.top({ by: 'requests', periodMs: HOUR })).toEqual([A, U, G, I])
    expect(await usage.top({ by: 'db_time' })).toEqual([I, A, U, G])
    expect(await usage.top({ by: 'storage' })).toEqual([G, I, U, A])
    // The server filter keeps the shares (taken over every tenant), the limit cuts after sorting.
    expect(await usage.top({ server: 'main' })).toEqual([A, G, I])
    expect(await usage.top({ server: 'east' })).toEqual([U])
    expect(await usage.top({ server: 'nowhere' })).toEqual([])
    expect(await usage.top({ by: 'db_time', limit: 2 })).toEqual([I, A])
    // A longer period takes in the older record.
    const three = await usage.top({ periodMs: 3 * HOUR, limit: 1 })
    expect(three).toEqual([{ ...A, requests: 1600, requestShare: 1600 / 2200 }])
  })

  it('refuses an unknown sort key, a bad limit or period with VALIDATION_FAILED', async () => {
    expect(await codeOf(usage.top({ by: 'nope' as never }))).toEqual({
      code: 'VALIDATION_FAILED', status: 400, message: "Cannot sort by 'nope': choose one of requests, db_time, storage.",
    })
    for (const limit of [0, 1001, 1.5, Number.NaN]) {
      expect((await codeOf(usage.top({ limit }))).message, String(limit)).toMatch(/^The limit must be a whole number from 1 to 1000; got /)
    }
    expect((await codeOf(usage.top({ periodMs: 0 }))).code).toBe('VALIDATION_FAILED')
    expect((await codeOf(usage.top({ periodMs: -5 }))).code).toBe('VALIDATION_FAILED')
  })

  it('advises exactly: promote a hot pooled tenant (by time and by storage), rebalance the crowded server, demote the idle database tenant', async () => {
    await writeFleet()
    // Every tenant existed the whole period but newco (created now, idle, schema: no advice).
    await admin.query(`UPDATE tenantry.tenants SET created_at = now() - interval '2 days'`)
    const newco = await t.catalog.insertTenant({
      id: randomUUID(), slug: 'newco', name: 'Newco', status: 'active', tier: 'schema', plan: 'default', region: null,
      server: 'main', database: mainDb, schema: 't_newco', config: {},
    })
    try {
      // The fleet's figures are small: the minimums of database time and storage are off here.
      const advice = await usage.advise({ minDbTimeMs: 0, minStorageBytes: 0 })
      expect(advice).toEqual([
        {
          kind: 'promote', tenantId: globex.id, slug: 'globex', server: 'main', fromTier: 'pooled', toTier: 'database',
          reason: "globex (pooled) held 60% of server main's storage (5.9 kB of 9.8 kB, latest samples in the last 24 h); its own database would isolate it.",
          figures: { dbTimeMs: 1000, serverDbTimeMs: 10000, dbTimeShare: 0.1, threshold: 0.5, storageBytes: 6000, serverStorageBytes: 10000, storageShare: 0.6 },
        },
        {
          kind: 'promote', tenantId: acme.id, slug: 'acme', server: 'main', fromTier: 'pooled', toTier: 'schema',
          reason: "acme (pooled) took 40% of server main's database time in the last 24 h (4,000 ms of 10,000 ms); its own schema would isolate it.",
          figures: { dbTimeMs: 4000, serverDbTimeMs: 10000, dbTimeShare: 0.4, threshold: 0.2, storageBytes: 1000, serverStorageBytes: 10000, storageShare: 0.1 },
        },
        {
          kind: 'rebalance', server: 'main',
          reason: "Server main took 83% of the fleet's database time in the last 24 h (10,000 ms of 12,000 ms) but has 25% of its capacity weight (1 of 4); " +
            'move some of its biggest tenants to another server: initech (5,000 ms), acme (4,000 ms), globex (1,000 ms).',
          figures: { dbTimeMs: 10000, fleetDbTimeMs: 12000, dbTimeShare: 10000 / 12000, capacityWeight: 1, totalCapacityWeight: 4, capacityShare: 0.25, imbalanceFactor: 1.5 },
          movable: [
            { tenantId: initech.id, slug: 'initech', tier: 'schema', dbTimeMs: 5000 },
            { tenantId: acme.id, slug: 'acme', tier: 'pooled', dbTimeMs: 4000 },
            { tenantId: globex.id, slug: 'globex', tier: 'pooled', dbTimeMs: 1000 },
          ],
        },
        {
          kind: 'demote', tenantId: hooli.id, slug: 'hooli', server: 'main', fromTier: 'database', toTier: 'schema',
          reason: 'hooli (database) served 0 requests in the last 24 h; the schema tier would free its own database.',
          figures: { requests: 0, idleRequests: 0, periodMs: 24 * HOUR },
        },
      ])
      // initech took exactly half of main's time: not more than dedicatedShare, so no advice;
      // umbrella is alone on east: no neighbour to be isolated from.

      // Other thresholds: globex only crosses pooledShare; east's capacity excuses main; initech's 10 requests are idle.
      const other = await usage.advise({ pooledShare: 0.45, dedicatedShare: 0.7, imbalanceFactor: 4, idleRequests: 10, periodMs: HOUR, minDbTimeMs: 0, minStorageBytes: 0 })
      expect(other.map((a) => `${a.kind} ${a.slug ?? a.server} ${a.fromTier ?? ''}>${a.toTier ?? ''}`)).toEqual([
        'promote globex pooled>schema', 'demote hooli database>schema', 'demote initech schema>pooled',
      ])
      expect(other[2].reason).toBe('initech (schema) served 10 requests in the last 1 h; the pooled tier would free its own schema.')
    } finally {
      await t.catalog.deleteTenantRow(newco.id)
    }
  })

  it('refuses advice thresholds out of range with VALIDATION_FAILED', async () => {
    const cases: [object, string][] = [
      [{ pooledShare: 0 }, 'Advice option pooledShare must be a share above 0 and at most 1; got 0.'],
      [{ pooledShare: 1.5 }, 'Advice option pooledShare must be a share above 0 and at most 1; got 1.5.'],
      [{ dedicatedShare: -0.1 }, 'Advice option dedicatedShare must be a share above 0 and at most 1; got -0.1.'],
      [{ pooledShare: 0.6, dedicatedShare: 0.5 }, 'Advice option pooledShare must be at most dedicatedShare (0.5); got 0.6.'],
      [{ imbalanceFactor: 0.5 }, 'Advice option imbalanceFactor must be a factor of at least 1; got 0.5.'],
      [{ idleRequests: -1 }, 'Advice option idleRequests must be a whole number of at least 0; got -1.'],
      [{ idleRequests: 0.5 }, 'Advice option idleRequests must be a whole number of at least 0; got 0.5.'],
      [{ periodMs: 0 }, 'Advice option periodMs must be a number of milliseconds above 0; got 0.'],
    ]
    for (const [opts, message] of cases) {
      expect(await codeOf(usage.advise(opts)), JSON.stringify(opts)).toEqual({ code: 'VALIDATION_FAILED', status: 400, message })
    }
  })

  it('samples storage of a schema, a database and pooled tenants; pooled estimates follow the rows (3:1)', async () => {
    await clearUsage()
    errors.length = 0
    // As the owner (which bypasses RLS here): 300 projects of acme, 100 of globex, a few of initech and hooli.
    await admin.query(`INSERT INTO public.projects (tenant_id, name) SELECT $1, 'project ' || g FROM generate_series(1, 300) g`, [acme.id])
    await admin.query(`INSERT INTO public.projects (tenant_id, name) SELECT $1, 'project ' || g FROM generate_series(1, 100) g`, [globex.id])
    await admin.query(`INSERT INTO "${initech.placement.schema}".projects (tenant_id, name) SELECT $1, 'p' || g FROM generate_series(1, 50) g`, [initech.id])
    await t.dataPlane.driver('main').admin(hooli.placement.database).query(`INSERT INTO projects (tenant_id, name) SELECT $1, 'p' || g FROM generate_series(1, 50) g`, [hooli.id])

    const sampled = await usage.sampleStorage({ force: true })
    expect(sampled).toBe(4)
    // umbrella's server is not registered here: reported, not thrown.
    expect(errors).toEqual([['SERVER_NOT_FOUND', "sampling the storage of tenants on server 'east'"]])
    const rows = await rawRows()
    const interval = new Date(Math.floor(Date.now() / MIN) * MIN)
    expect(rows.map((r) => r.tenant_id).sort()).toEqual([acme.id, globex.id, initech.id, hooli.id].sort())
    for (const r of rows) {
      expect(r).toMatchObject({ interval_ms: MIN, requests: 0, errors: 0, rejections: 0, statements: 0, rows: 0, db_time_ms: 0 })
      // Stamped with the interval of the sampling (which may just have turned over).
      expect(Math.abs((r.interval_start as Date).getTime() - interval.getTime())).toBeLessThanOrEqual(MIN)
    }
    const bytes = new Map(rows.map((r) => [r.tenant_id as string, r.storage_bytes as number]))

    // The schema tenant: exactly its relations' total size.
    const own = await admin.query<{ b: number }>(
      `SELECT sum(pg_total_relation_size(c.oid))::float8 AS b FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind IN ('r', 'm', 'p')`,
      [initech.placement.schema],
    )
    expect(bytes.get(initech.id)).toBe(own.rows[0].b)
    expect(bytes.get(initech.id)!).toBeGreaterThan(16_384)
    // The database tenant: a whole database (the catalogs alone take megabytes).
    expect(bytes.get(hooli.id)!).toBeGreaterThan(1_000_000)
    // Pooled: projects' size shared out 300:100; tasks has no rows and is nobody's.
    const projects = await admin.query<{ b: number }>(`SELECT pg_total_relation_size('public.projects')::float8 AS b`)
    expect(bytes.get(acme.id)).toBe(Math.round(projects.rows[0].b * 0.75))
    expect(bytes.get(globex.id)).toBe(Math.round(projects.rows[0].b * 0.25))
    expect(bytes.get(acme.id)! / bytes.get(globex.id)!).toBeCloseTo(3, 2)
    expect(bytes.get(globex.id)!).toBeGreaterThan(4096)

    // Another process within storageSampleMs does not sample again; forced, it does.
    const otherProcess = createUsageService(deps())
    expect(await otherProcess.sampleStorage()).toBe(0)
    expect(await usage.sampleStorage()).toBe(0)
    expect(await otherProcess.sampleStorage({ force: true })).toBe(4)
    // With sampling every 0 ms, every call claims the slot.
    expect(await createUsageService(deps({ options: { intervalMs: MIN, retentionDays: 90, storageSampleMs: 0 } })).sampleStorage()).toBe(4)
    // The samples are the tenants' storage in top.
    const top = await usage.top({ by: 'storage', limit: 2 })
    expect(top.map((r) => r.slug)).toEqual(['hooli', bytes.get(initech.id)! > bytes.get(acme.id)! ? 'initech' : 'acme'])
  })

  it("samples object-storage bytes with the database storage into objectBytes; top by storage orders by both together", async () => {
    await clearUsage()
    errors.length = 0
    const objects = new Map([[acme.id, 900_000_000], [globex.id, 1234]])
    const withObjects = createUsageService(deps({ objectBytes: async () => objects }))
    // Every sampled tenant gets its object bytes (0 without objects), umbrella too: its server is
    // not registered here, so its database storage is null but its objects are still metered.
    expect(await withObjects.sampleStorage({ force: true })).toBe(5)
    const res = await admin.query<{ tenant_id: string; storage_bytes: number | null; object_bytes: number | null }>(
      'SELECT tenant_id, storage_bytes::float8 AS storage_bytes, object_bytes::float8 AS object_bytes FROM tenantry.usage',
    )
    const sampled = new Map(res.rows.map((r) => [r.tenant_id, r.object_bytes]))
    expect(sampled).toEqual(new Map([[acme.id, 900_000_000], [globex.id, 1234], [initech.id, 0], [hooli.id, 0], [umbrella.id, 0]]))
    expect(res.rows.find((r) => r.tenant_id === umbrella.id)!.storage_bytes).toBeNull()
    expect(res.rows.filter((r) => r.tenant_id !== umbrella.id).every((r) => Number(r.storage_bytes) > 0)).toBe(true)
    expect(errors).toEqual([['SERVER_NOT_FOUND', "sampling the storage of tenants on server 'east'"]])
    // A gauge like storage: a later record without a sample keeps it, a new sample replaces it.
    await withObjects.write([rec(acme.id, new Date(Math.floor(Date.now() / MIN) * MIN), { requests: 1 })])
    const rows = await withObjects.usage({ tenant: 'acme', granularity: 'minute', from: new Date(Date.now() - 2 * MIN), to: new Date(Date.now() + MIN) })
    expect(rows.map((r) => r.objectBytes).filter((b) => b !== null).at(-1)).toBe(900_000_000)
    // acme's 900 MB of objects put it before hooli's whole database.
    const top = await withObjects.top({ by: 'storage', limit: 2 })
    expect(top.map((r) => [r.slug, r.objectBytes])).toEqual([['acme', 900_000_000], ['hooli', 0]])
    // Object storage that cannot be read is reported; the database storage is still sampled, objectBytes null.
    await clearUsage()
    errors.length = 0
    const failing = createUsageService(deps({ objectBytes: async () => { throw new Error('bucket gone') } }))
    expect(await failing.sampleStorage({ force: true })).toBe(4)
    expect(errors).toEqual([['SERVER_NOT_FOUND', "sampling the storage of tenants on server 'east'"], ['Error: bucket gone', 'sampling the object storage of tenants']])
    expect((await admin.query<{ n: number }>('SELECT count(*)::int AS n FROM tenantry.usage WHERE object_bytes IS NOT NULL')).rows[0].n).toBe(0)
  })

  it('prunes rows past the retention and nothing younger', async () => {
    await clearUsage()
    const day = 24 * HOUR
    await usage.write([rec(acme.id, new Date(Date.now() - 91 * day), { requests: 1 }), rec(acme.id, new Date(Date.now() - 89 * day), { requests: 2 }), rec(globex.id, ago(0), { requests: 3 })])
    expect(await usage.prune()).toBe(1)
    expect((await rawRows()).map((r) => r.requests)).toEqual([2, 3])
    expect(await usage.prune()).toBe(0)
  })

  it('background sampling runs on its timer; failures go to onError, never thrown; close() stops it', async () => {
    await clearUsage()
    errors.length = 0
    const bg = createUsageService(deps({ options: { intervalMs: MIN, retentionDays: 90, storageSampleMs: 30 } }))
    bg.start()
    bg.start()
    const until = Date.now() + 30_000
    while ((await rawRows()).length === 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 50))
    await bg.close()
    expect([...new Set((await rawRows()).map((r) => r.tenant_id))].sort()).toEqual([acme.id, globex.id, initech.id, hooli.id].sort())
    const sampledAt = async () => (await admin.query<{ at: Date }>('SELECT sampled_at AS at FROM tenantry.usage_sampling')).rows[0].at
    const last = await sampledAt()
    await new Promise((r) => setTimeout(r, 200))
    expect(await sampledAt()).toEqual(last)

    const failures: [string, string][] = []
    const broken: AdminQueryable = {
      query: async () => { throw new Error('catalog down') },
      exec: async () => { throw new Error('catalog down') },
      transaction: async () => { throw new Error('catalog down') },
    }
    const failing = createUsageService({ ...deps({ options: { intervalMs: MIN, retentionDays: 90, storageSampleMs: 20 } }), admin: broken, onError: (err, context) => failures.push([(err as Error).message, context]) })
    failing.start()
    while (failures.length === 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 20))
    await failing.close()
    expect(failures[0]).toEqual(['catalog down', 'sampling tenant storage'])
  })

  if (backend.kind === 'pg') {
    it('counts pooled rows tenant by tenant when the owner does not bypass RLS, and gets the same estimates', async () => {
      await clearUsage()
      const role = `${PREFIX}_owner`
      await admin.exec(`DROP ROLE IF EXISTS ${role}; CREATE ROLE ${role} LOGIN NOSUPERUSER NOBYPASSRLS; GRANT SELECT ON public.projects, public.tasks TO ${role};`)
      const url = new URL(PG_ADMIN_URL)
      url.username = role
      url.pathname = `/${mainDb}`
      const plane = new DataPlane({ ...t.dataPlane.opts })
      plane.tenantKey = t.dataPlane.tenantKey
      plane.addServer({ name: 'main', url: url.toString(), region: null, capacityWeight: 1, mainDatabase: mainDb })
      try {
        const check = await plane.driver('main').admin(mainDb).query<{ n: number }>('SELECT count(*)::int AS n FROM public.projects')
        expect(check.rows[0].n).toBe(0)
        const limited = createUsageService(deps({ dataPlane: plane }))
        // initech's schema and hooli's database are not visible to this role: their sizes are still read (catalog functions).
        await limited.sampleStorage({ force: true })
        const viaRole = new Map((await rawRows()).map((r) => [r.tenant_id as string, r.storage_bytes as number]))
        await clearUsage()
        await usage.sampleStorage({ force: true })
        const viaOwner = new Map((await rawRows()).map((r) => [r.tenant_id as string, r.storage_bytes as number]))
        expect(viaRole.get(acme.id)).toBe(viaOwner.get(acme.id))
        expect(viaRole.get(globex.id)).toBe(viaOwner.get(globex.id))
        expect(viaRole.get(acme.id)! / viaRole.get(globex.id)!).toBeCloseTo(3, 2)
      } finally {
        await plane.close()
        await admin.exec(`DROP OWNED BY ${role}; DROP ROLE ${role};`)
      }
    })
  }
}

describe('placement advice (pure)', () => {
  const server = (name: string, capacityWeight: number) => ({ name, capacityWeight })
  const tenant = (slug: string, tier: 'pooled' | 'schema' | 'database', srv = 'main') => ({
    id: randomUUID(), slug, tier, status: 'active' as const,
    createdAt: new Date(0), placement: { server: srv, database: 'main' },
  })
  const row = (x: ReturnType<typeof tenant>, requests: number, dbTimeMs: number, storageBytes: number | null = null) => ({
    tenantId: x.id, slug: x.slug, tier: x.tier, plan: 'default', server: x.placement.server,
    requests, errors: 0, rejections: 0, statements: 0, dbTimeMs, rows: 0, storageBytes, serverDbTimeShare: 0, requestShare: 0,
  })

  it('gives no advice to a fleet in balance, or to a tenant alone on its server', () => {
    const a = tenant('a', 'pooled')
    const b = tenant('b', 'pooled', 'east')
    expect(adviseFrom({ rows: [row(a, 10, 100), row(b, 10, 100)], servers: [server('main', 1), server('east', 1)], tenants: [a, b], periodStart: new Date(), options: resolveAdviseOptions({ minDbTimeMs: 0, minStorageBytes: 0 }) })).toEqual([])
  })

  it('gives no database-time advice below minDbTimeMs and no storage advice below minStorageBytes', () => {
    const a = tenant('a', 'pooled')
    const b = tenant('b', 'pooled')
    const rows = [row(a, 1, 58_999, 90 * 1024 * 1024), row(b, 1, 1000, 9 * 1024 * 1024)]
    const opts = (o: Record<string, number>) => ({ rows, servers: [server('main', 1)], tenants: [a, b], periodStart: new Date(), options: resolveAdviseOptions(o) })
    // 59,999 ms and 99 MiB on main: each just under its default minimum.
    expect(adviseFrom(opts({}))).toEqual([])
    expect(adviseFrom(opts({ minDbTimeMs: 59_999 })).map((x) => [x.kind, x.slug, x.toTier, x.figures.dbTimeShare])).toEqual([['promote', 'a', 'database', 58_999 / 59_999]])
    expect(adviseFrom(opts({ minStorageBytes: 99 * 1024 * 1024 })).map((x) => [x.kind, x.slug, x.figures.storageShare])).toEqual([['promote', 'a', 90 / 99]])
  })

  it('a server of weight 0 that does any work is out of balance', () => {
    const a = tenant('a', 'pooled')
    const b = tenant('b', 'pooled', 'east')
    const advice = adviseFrom({ rows: [row(a, 10, 100), row(b, 10, 1)], servers: [server('main', 0), server('east', 1)], tenants: [a, b], periodStart: new Date(), options: resolveAdviseOptions({ minDbTimeMs: 0, minStorageBytes: 0 }) })
    expect(advice.map((x) => [x.kind, x.server])).toEqual([['rebalance', 'main']])
    expect(advice[0].reason).toContain('but has 0% of its capacity weight (0 of 1)')
  })

  it('formats bytes and periods as people read them', () => {
    expect([512, 1024, 6000, 41.2 * 1024 * 1024, 3 * 1024 ** 3].map(formatBytes)).toEqual(['512 B', '1.0 kB', '5.9 kB', '41.2 MB', '3.0 GB'])
    expect([15 * MIN, HOUR, 24 * HOUR, 7 * 24 * HOUR, 90_000].map(formatPeriod)).toEqual(['15 min', '1 h', '24 h', '7 days', '90 s'])
  })
})

describe.skipIf(!PG_UP)('usage metering on PostgreSQL', { timeout: 180_000 }, () => {
  usageSuite({
    name: 'PostgreSQL',
    kind: 'pg',
    async open() {
      await dropPostgresLeftovers(PREFIX, DB_NAME)
      const url = await freshDatabase(DB_NAME)
      return createTenantry({ databaseUrl: url, rolePrefix: PREFIX, migrations: 'demo/migrations' })
    },
    cleanup: () => dropPostgresLeftovers(PREFIX, DB_NAME),
  })
})

describe('usage metering on PGlite', { timeout: 180_000 }, () => {
  usageSuite({
    name: 'PGlite',
    kind: 'pglite',
    open: () => createTenantry({ dataDir: 'memory', rolePrefix: PREFIX, migrations: 'demo/migrations' }),
    cleanup: async () => undefined,
  })
})

// ---- the CLI: a few end-to-end runs of the real `tenantry` command (each starts node: slow) ------

const REPO = fileURLToPath(new URL('..', import.meta.url))
const CLI_DB = 'tenantry_test_observe_cli'
const CLI_PREFIX = 'to_ucli'

interface Run { code: number | null; stdout: string; stderr: string }
const show = (r: Run) => `exit ${r.code}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`

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

describe('tenantry top: bad usage', { timeout: 180_000 }, () => {
  it('an unknown --by exits 2 and prints the choices', async () => {
    const r = await cli(['top', '--by', 'nope'], {})
    expect(r.code, show(r)).toBe(2)
    expect(r.stdout).toBe('')
    expect(r.stderr).toContain("error: option '--by <key>' argument 'nope' is invalid. Allowed choices are requests, db_time, storage.")
  })
})

describe.skipIf(!PG_UP)('tenantry usage, top and advise against PostgreSQL', { timeout: 180_000 }, () => {
  let env: Record<string, string>
  let acme: Tenant
  let globex: Tenant
  let expectedTop: unknown
  let expectedUsage: unknown
  const at = new Date('2026-03-01T10:00:00.000Z')

  beforeAll(async () => {
    await dropPostgresLeftovers(CLI_PREFIX, CLI_DB)
    const url = await freshDatabase(CLI_DB)
    env = { DATABASE_URL: url, TENANTRY_ROLE_PREFIX: CLI_PREFIX, TENANTRY_MIGRATIONS: 'demo/migrations' }
    const t = await createTenantry({ databaseUrl: url, rolePrefix: CLI_PREFIX, migrations: 'demo/migrations' })
    try {
      expect((await t.migrate()).state).toBe('done')
      acme = await t.provision({ slug: 'acme', tier: 'pooled' })
      globex = await t.provision({ slug: 'globex', tier: 'pooled' })
      const cur = Math.floor(Date.now() / MIN) * MIN
      await t.observe.usage.write([
        rec(acme.id, new Date(cur - 5 * MIN), { requests: 30, errors: 1, rejections: 2, statements: 60, rows: 90, dbTimeMs: 300, storageBytes: 8192 }),
        rec(globex.id, new Date(cur - 6 * MIN), { requests: 10, statements: 10, rows: 10, dbTimeMs: 100 }),
        rec(acme.id, at, { requests: 1, statements: 2, rows: 3, dbTimeMs: 4.5 }),
        rec(acme.id, new Date(at.getTime() + MIN), { requests: 2, storageBytes: 4096 }),
      ])
      expectedTop = JSON.parse(JSON.stringify(await t.top({})))
      expectedUsage = JSON.parse(JSON.stringify(await t.usage({ tenant: 'acme', from: at, to: new Date(at.getTime() + HOUR), granularity: 'minute' })))
    } finally {
      await t.close()
    }
  })

  afterAll(async () => {
    if (PG_UP) await dropPostgresLeftovers(CLI_PREFIX, CLI_DB)
  })

  it('top --json prints the rows written; top prints the table', async () => {
    const json = await cli(['top', '--json'], env)
    expect(json.code, show(json)).toBe(0)
    expect(JSON.parse(json.stdout)).toEqual(expectedTop)
    expect((expectedTop as { slug: string; requests: number; serverDbTimeShare: number }[]).map((r) => [r.slug, r.requests, r.serverDbTimeShare])).toEqual([['acme', 30, 0.75], ['globex', 10, 0.25]])

    const human = await cli(['top', '--by', 'db_time', '--period', '24h'], env)
    expect(human.code, show(human)).toBe(0)
    expect(human.stdout).toBe([
      'Top tenants by db_time in the last 24 h:',
      'TENANT  TIER    SERVER  REQUESTS  ERRORS  REJECTED  STATEMENTS  DB TIME  % OF SERVER DB  STORAGE  OBJECTS',
      '------  ------  ------  --------  ------  --------  ----------  -------  --------------  -------  -------',
      'acme    pooled  main    30        1       2         60          300 ms   75.0%           8.0 kB   -',
      'globex  pooled  main    10        0       0         10          100 ms   25.0%           -        -',
      '',
    ].join('\n'))
  })

  it('usage --json prints the rows written; advise prints one line per advice', async () => {
    const r = await cli(['usage', 'acme', '--json', '--granularity', 'minute', '--from', at.toISOString(), '--to', new Date(at.getTime() + HOUR).toISOString()], env)
    expect(r.code, show(r)).toBe(0)
    expect(JSON.parse(r.stdout)).toEqual(expectedUsage)
    expect(expectedUsage).toEqual([
      { tenantId: acme.id, slug: 'acme', bucket: at.toISOString(), requests: 1, errors: 0, rejections: 0, statements: 2, dbTimeMs: 4.5, rows: 3, storageBytes: null, objectBytes: null },
      { tenantId: acme.id, slug: 'acme', bucket: new Date(at.getTime() + MIN).toISOString(), requests: 2, errors: 0, rejections: 0, statements: 0, dbTimeMs: 0, rows: 0, storageBytes: 4096, objectBytes: null },
    ])
    const advice = await cli(['advise', '--period', '1h'], env)
    expect(advice.code, show(advice)).toBe(0)
    // Two pooled neighbours at 75% and 25% of 400 ms: shares of so little database time (under the
    // default minimum of a minute) are noise, not advice.
    expect(advice.stdout).toBe('No advice: no tenant or server crossed a threshold in the last 1 h.\n')
  })
})
