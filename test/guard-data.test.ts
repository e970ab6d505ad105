/**
 * The guard in the data plane, on real PostgreSQL: fair share of a saturated server pool (the
 * quiet tenant first, weights), a tenant's cap on its share of connections with a bounded queue
 * and a timeout, and statement budgets (transaction-local statement_timeout).
 *
 * Database `tenantry_test_guard_data`, role prefix `tg_data`; both dropped afterwards.
 */
import Fastify from 'fastify'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { tenantryPlugin } from '../src/adapters/fastify.ts'
import { createTenantry, header, isTenantryError, type GuardOptions, type Tenant, type Tenantry } from '../src/index.ts'
import { DEMO_MIGRATIONS, dropDatabase, freshDatabase, PG_ADMIN_URL, postgresAvailable } from './helpers/backends.ts'

const PREFIX = 'tg_data'
const DB_NAME = 'tenantry_test_guard_data'
const PG_OK = await postgresAvailable()

const PLANS = {
  heavy: { weight: 2 },
  capped: { connectionShare: 0.5, queue: 1, queueTimeoutMs: 300 },
  tight: { statementTimeoutMs: 200 },
  unbudgeted: { statementTimeoutMs: null },
}

let dbUrl = ''
const open: Tenantry[] = []

async function dropLeftovers(): Promise<void> {
  const admin = new pg.Client({ connectionString: PG_ADMIN_URL })
  await admin.connect()
  try {
    await dropDatabase(DB_NAME)
    const roles = await admin.query<{ rolname: string }>('SELECT rolname FROM pg_roles WHERE rolname LIKE $1', [`${PREFIX.replace(/_/g, '\\_')}\\_%`])
    for (const { rolname } of roles.rows) {
      await admin.query(`DROP OWNED BY "${rolname}"`)
      await admin.query(`DROP ROLE "${rolname}"`)
    }
  } finally {
    await admin.end()
  }
}

async function runtime(connectionBudget: number, guard: GuardOptions = {}): Promise<Tenantry> {
  const t = await createTenantry({ databaseUrl: dbUrl, migrations: DEMO_MIGRATIONS, rolePrefix: PREFIX, resolve: [header()], connectionBudget, guard: { redis: null, planRefreshMs: 0, ...guard } })
  open.push(t)
  return t
}

async function tenantOf(tenantry: Tenantry, slug: string, plan?: string): Promise<Tenant> {
  return (await tenantry.findTenant(slug)) ?? tenantry.provision({ slug, tier: 'pooled', plan })
}

function gate(): { wait: Promise<void>; open(): void } {
  let release!: () => void
  const wait = new Promise<void>((r) => { release = r })
  return { wait, open: release }
}

async function until(check: () => boolean, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > end) throw new Error(`condition not met within ${timeoutMs} ms: ${check.toString()}`)
    await new Promise((r) => setTimeout(r, 5))
  }
}

/** Hold one connection for `tenant` until the returned gate opens. */
async function hold(tenantry: Tenantry, tenant: Tenant): Promise<{ open(): void; done: Promise<void> }> {
  const g = gate()
  let started!: () => void
  const begun = new Promise<void>((r) => { started = r })
  const done = tenantry.handle(tenant).transaction(async (tx) => {
    await tx.query('SELECT 1')
    started()
    await g.wait
  })
  await begun
  return { open: g.open, done }
}

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p
    return 'ok'
  } catch (err) {
    return isTenantryError(err) ? err.code : `error:${(err as Error).message}`
  }
}

describe.skipIf(!PG_OK)('guard in the data plane (PostgreSQL)', () => {
  let guarded: Tenantry
  let plain: Tenantry

  beforeAll(async () => {
    await dropLeftovers()
    dbUrl = await freshDatabase(DB_NAME)
    guarded = await runtime(5)
    for (const [name, limits] of Object.entries(PLANS)) await guarded.catalog.upsertPlan({ name, settings: { limits } })
    await guarded.guard.reloadPlans()
    plain = await runtime(5, { enabled: false })
  })

  afterAll(async () => {
    for (const t of open) await t.close().catch(() => undefined)
    await dropLeftovers()
  })

  describe('fair share of a saturated pool', () => {
    /** Saturate the pool with `noisy`, queue three of its statements, then one of `quiet`; free one connection. */
    async function scenario(tenantry: Tenantry, noisy: Tenant, quiet: Tenant): Promise<string[]> {
      const holders = []
      for (let i = 0; i < 5; i++) holders.push(await hold(tenantry, noisy))
      const waiting = () => tenantry.dataPlane.stats().main.waiting
      const order: string[] = []
      const pending: Promise<unknown>[] = []
      for (let i = 1; i <= 3; i++) {
        pending.push(tenantry.handle(noisy).query('SELECT 1').then(() => order.push(`noisy-${i}`)))
        await until(() => waiting() === i)
      }
      pending.push(tenantry.handle(quiet).query('SELECT 1').then(() => order.push('quiet')))
      await until(() => waiting() === 4)
      holders[0].open()
      await Promise.all(pending)
      for (const h of holders) h.open()
      await Promise.all(holders.map((h) => h.done))
      return order
    }

    it('serves the quiet tenant first when the pool is saturated by a noisy one', async () => {
      const order = await scenario(guarded, await tenantOf(guarded, 'fs-noisy'), await tenantOf(guarded, 'fs-quiet'))
      expect(order).toEqual(['quiet', 'noisy-1', 'noisy-2', 'noisy-3'])
    })

    it('without the guard the same scenario is plain first come, first served (the test can fail)', async () => {
      const order = await scenario(plain, await tenantOf(plain, 'fs-noisy'), await tenantOf(plain, 'fs-quiet'))
      expect(order).toEqual(['noisy-1', 'noisy-2', 'noisy-3', 'quiet'])
    })

    it('weights: a weight-2 tenant is owed twice the connections of a weight-1 tenant', async () => {
      const heavy = await tenantOf(guarded, 'fs-heavy', 'heavy')
      const light = await tenantOf(guarded, 'fs-light')
      const heavyHolders = [await hold(guarded, heavy), await hold(guarded, heavy), await hold(guarded, heavy)]
      const lightHolders = [await hold(guarded, light), await hold(guarded, light)]
      const waiting = () => guarded.dataPlane.stats().main.waiting
      const order: string[] = []
      const light1 = guarded.handle(light).query('SELECT 1').then(() => order.push('light'))
      await until(() => waiting() === 1)
      const heavy1 = guarded.handle(heavy).query('SELECT 1').then(() => order.push('heavy'))
      await until(() => waiting() === 2)
      // heavy now holds 2 per weight 2 = 1, light 2 per weight 1 = 2: heavy's waiter goes first,
      // although light's came first (unweighted, 2 against 2 would be first come, first served).
      heavyHolders[0].open()
      await Promise.all([light1, heavy1])
      expect(order).toEqual(['heavy', 'light'])
      for (const h of [...heavyHolders, ...lightHolders]) h.open()
      await Promise.all([...heavyHolders, ...lightHolders].map((h) => h.done))
    })
  })

  describe("a tenant's share of connections", () => {
    it('caps the tenant at its share while others get connections at once; a bounded queue, then TENANT_BUSY', async () => {
      const noisy = await tenantOf(guarded, 'cap-noisy', 'capped')
      const quiet = await tenantOf(guarded, 'cap-quiet')
      // Share 0.5 of a budget of 5: two connections.
      const holders = [await hold(guarded, noisy), await hold(guarded, noisy)]
      const started = Date.now()
      let third = 'pending'
      const thirdDone = code(guarded.handle(noisy).query('SELECT 1')).then((c) => { third = c })
      await until(() => guarded.dataPlane.stats().main.waiting === 1)
      // Three connections are free, and the quiet tenant gets them at once.
      const quietCodes = await Promise.all([1, 2, 3].map(() => code(guarded.handle(quiet).query('SELECT pg_sleep(0.05)'))))
      expect(quietCodes).toEqual(['ok', 'ok', 'ok'])
      expect(third).toBe('pending')
      // Its queue holds one statement: the next is refused at once.
      let refused: unknown
      await guarded.handle(noisy).query('SELECT 1').catch((e) => { refused = e })
      expect(isTenantryError(refused, 'TENANT_BUSY')).toBe(true)
      expect((refused as { status: number }).status).toBe(503)
      expect((refused as { retryAfter: number }).retryAfter).toBe(1)
      expect((refused as { details: unknown }).details).toEqual({ layer: 'connections', server: 'main', held: 2, cap: 2 })
      // The queued one gives up after the plan's queue timeout.
      await thirdDone
      expect(third).toBe('TENANT_BUSY')
      expect(Date.now() - started).toBeGreaterThanOrEqual(250)
      for (const h of holders) h.open()
      await Promise.all(holders.map((h) => h.done))
      expect(await code(guarded.handle(noisy).query('SELECT 1'))).toBe('ok')
      expect(guarded.guard.rejections()[noisy.id]).toEqual({ connections: 2 })
      expect(guarded.guard.rejections()[quiet.id]).toBeUndefined()
    })
  })

  describe('statement budgets', () => {
    let single: Tenantry

    beforeAll(async () => {
      // The server's own setting, which a plan without a budget keeps (new sessions only: set first).
      const admin = new pg.Client({ connectionString: dbUrl })
      await admin.connect()
      await admin.query(`ALTER DATABASE "${DB_NAME}" SET statement_timeout = '7s'`)
      await admin.end()
      // One connection: every tenant below runs on the same backend, so a budget that outlived its
      // transaction would show up in the next tenant's statement.
      single = await runtime(1)
    })

    it("cancels a tenant's runaway query at its budget with STATEMENT_TIMEOUT; the setting never outlives the transaction", async () => {
      const tight = await tenantOf(single, 'sb-tight', 'tight')
      const normal = await tenantOf(single, 'sb-normal')
      const unbudgeted = await tenantOf(single, 'sb-unbudgeted', 'unbudgeted')
      const setting = async (t: Tenant) => (await single.handle(t).query<{ v: string }>("SELECT current_setting('statement_timeout') AS v")).rows[0].v

      let started = Date.now()
      let err: unknown
      await single.handle(tight).query('SELECT pg_sleep(5)').catch((e) => { err = e })
      expect(isTenantryError(err, 'STATEMENT_TIMEOUT')).toBe(true)
      expect((err as { status: number }).status).toBe(504)
      expect(Date.now() - started).toBeLessThan(3000)

      expect([await setting(tight), await setting(normal), await setting(unbudgeted), await setting(tight)]).toEqual(['200ms', '30s', '7s', '200ms'])
      expect(await code(single.handle(normal).query('SELECT pg_sleep(0.4)'))).toBe('ok')

      started = Date.now()
      expect(await code(single.handle(tight).transaction(async (tx) => { await tx.query('SELECT 1'); await tx.query('SELECT pg_sleep(5)') }))).toBe('STATEMENT_TIMEOUT')
      expect(Date.now() - started).toBeLessThan(3000)
      expect(await code(single.handle(normal).transaction((tx) => tx.query('SELECT pg_sleep(0.3)')))).toBe('ok')
      expect(await code(single.handle(tight).query('SELECT 1'))).toBe('ok')
      expect(single.guard.rejections()[tight.id]).toEqual({ statement: 2 })
    })

    it('answers 504 STATEMENT_TIMEOUT over HTTP, and other tenants keep being served', async () => {
      const tight = await tenantOf(single, 'sb-tight')
      const normal = await tenantOf(single, 'sb-normal')
      const app = Fastify()
      await app.register(tenantryPlugin, { tenantry: single })
      app.get('/slow', async (req) => (await req.db.query<{ ok: number }>('SELECT pg_sleep(5), 1 AS ok')).rows[0])
      app.get('/fast', async (req) => (await req.db.query<{ ok: number }>('SELECT 1 AS ok')).rows[0])
      const [slow, fast] = await Promise.all([
        app.inject({ url: '/slow', headers: { 'x-tenant': tight.slug } }),
        app.inject({ url: '/fast', headers: { 'x-tenant': normal.slug } }),
      ])
      expect([slow.statusCode, slow.json().code]).toEqual([504, 'STATEMENT_TIMEOUT'])
      expect([fast.statusCode, fast.json()]).toEqual([200, { ok: 1 }])
      await app.close()
    })
  })
})
