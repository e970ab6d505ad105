/**
 * Circuit breakers for real: a second PostgreSQL server (a private cluster made with initdb in a
 * temp dir) holds one database-tier tenant; it is stopped (`pg_ctl stop -m immediate`) while the
 * other tenants keep working. That tenant must get 503 TENANT_UNAVAILABLE fast, every other tenant
 * 100% success; after the restart the breakers half-open and the tenant recovers by itself.
 *
 * The catalog and the other tenants are on the shared server (database `tenantry_test_guard_brk`,
 * role prefix `tg_brk`), all dropped afterwards; the private cluster is deleted.
 */
import { fileURLToPath } from 'node:url'
import type { FastifyInstance } from 'fastify'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildDemoApp } from '../demo/app.ts'
import { createTenantry, header, type Tenant, type Tenantry } from '../src/index.ts'
import { dropDatabase, freshDatabase, PG_ADMIN_URL, postgresAvailable } from './helpers/backends.ts'
import { PrivatePostgres, privatePostgresPossible } from './fixtures/guard-servers.ts'

const PREFIX = 'tg_brk'
const DB_NAME = 'tenantry_test_guard_brk'
const MIGRATIONS = fileURLToPath(new URL('../demo/migrations', import.meta.url))
const PG_OK = await postgresAvailable()
const CAN_MAKE_CLUSTER = privatePostgresPossible()
if (PG_OK && !CAN_MAKE_CLUSTER) {
  if (process.env.CI === 'true') throw new Error('CI=true but initdb/pg_ctl are not installed: the circuit-breaker test cannot run.')
  console.warn('[tenantry tests] initdb/pg_ctl not found: the circuit-breaker test with a second PostgreSQL server is SKIPPED.')
}

const HALF_OPEN_MS = 3000
const THRESHOLD = 3

async function dropLeftovers(): Promise<void> {
  const admin = new pg.Client({ connectionString: PG_ADMIN_URL })
  await admin.connect()
  try {
    const like = (s: string) => s.replace(/_/g, '\\_')
    const dbs = await admin.query<{ datname: string }>('SELECT datname FROM pg_database WHERE datname LIKE $1', [`${like(PREFIX)}\\_%`])
    for (const { datname } of dbs.rows) await admin.query(`DROP DATABASE IF EXISTS "${datname}" WITH (FORCE)`)
    await dropDatabase(DB_NAME)
    const roles = await admin.query<{ rolname: string }>('SELECT rolname FROM pg_roles WHERE rolname LIKE $1', [`${like(PREFIX)}\\_%`])
    for (const { rolname } of roles.rows) {
      await admin.query(`DROP OWNED BY "${rolname}"`)
      await admin.query(`DROP ROLE "${rolname}"`)
    }
  } finally {
    await admin.end()
  }
}

describe.skipIf(!PG_OK || !CAN_MAKE_CLUSTER)('circuit breakers: a second PostgreSQL server stopped', () => {
  let second: PrivatePostgres
  let tenantry: Tenantry
  let app: FastifyInstance
  const tenants = new Map<string, Tenant>()

  beforeAll(async () => {
    await dropLeftovers()
    const [dbUrl, cluster] = await Promise.all([freshDatabase(DB_NAME), PrivatePostgres.create()])
    second = cluster
    tenantry = await createTenantry({
      databaseUrl: dbUrl,
      rolePrefix: PREFIX,
      migrations: MIGRATIONS,
      resolve: [header()],
      acquireTimeoutMs: 3000,
      guard: { redis: null, breaker: { threshold: THRESHOLD, halfOpenAfterMs: HALF_OPEN_MS } },
    })
    await tenantry.addServer({ name: 'second', url: second.url })
    expect((await tenantry.migrate()).targets.filter((r) => r.status === 'failed')).toEqual([])
    for (const [slug, tier, server] of [
      ['alpha', 'pooled', 'main'],
      ['beta', 'schema', 'main'],
      ['gamma', 'database', 'main'],
      ['delta', 'database', 'second'],
    ] as const) {
      tenants.set(slug, await tenantry.provision({ slug, tier, server }))
    }
    app = await buildDemoApp(tenantry)
    for (const slug of tenants.keys()) {
      const res = await app.inject({ method: 'POST', url: '/api/projects', headers: { 'x-tenant': slug }, payload: { name: `${slug} project` } })
      expect(res.statusCode).toBe(201)
    }
  }, 180_000)

  afterAll(async () => {
    await app?.close()
    await tenantry?.close()
    await second?.close()
    await dropLeftovers()
  })

  async function list(slug: string): Promise<{ status: number; code?: string; retryAfter?: string; ms: number; names?: string[] }> {
    const started = performance.now()
    const res = await app.inject({ method: 'GET', url: '/api/projects', headers: { 'x-tenant': slug } })
    const ms = performance.now() - started
    const body = res.json()
    return res.statusCode === 200
      ? { status: 200, ms, names: (body as { name: string }[]).map((p) => p.name) }
      : { status: res.statusCode, code: body.code, retryAfter: res.headers['retry-after'] as string | undefined, ms }
  }

  it('fails the stopped server’s tenant fast with TENANT_UNAVAILABLE, serves every other tenant, and recovers by itself', async () => {
    const delta = tenants.get('delta')!
    const database = delta.placement.database
    const others = ['alpha', 'beta', 'gamma']
    expect((await list('delta')).status).toBe(200)

    await second.stop()

    // Ten rounds: delta alone (sequentially, to count exactly), then the three others together.
    const deltaReplies = []
    const otherReplies = []
    const stoppedAt = Date.now()
    for (let round = 0; round < 10; round++) {
      deltaReplies.push(await list('delta'))
      otherReplies.push(...(await Promise.all(others.map(list))))
    }
    expect(Date.now() - stoppedAt).toBeLessThan(HALF_OPEN_MS) // no half-open trial happened in between
    expect(deltaReplies.map((r) => [r.status, r.code])).toEqual(Array(10).fill([503, 'TENANT_UNAVAILABLE']))
    expect(deltaReplies.every((r) => r.retryAfter !== undefined && Number(r.retryAfter) >= 1)).toBe(true)
    // Fast: a refused connection, then the open breaker; never a wait for a timeout.
    expect(Math.max(...deltaReplies.map((r) => r.ms))).toBeLessThan(1000)
    expect(otherReplies.map((r) => r.status)).toEqual(Array(30).fill(200))
    expect(otherReplies.map((r) => r.names)).toEqual(Array(10).fill(others.map((s) => [`${s} project`])).flat())

    // The first THRESHOLD failures were real connection failures; the rest were turned away by the breakers.
    expect(tenantry.guard.rejections()[delta.id]).toEqual({ circuit: 10 - THRESHOLD })
    for (const slug of others) expect(tenantry.guard.rejections()[tenants.get(slug)!.id]).toBeUndefined()
    expect([tenantry.guard.breakerState('second'), tenantry.guard.breakerState('second', database), tenantry.guard.breakerState('main')]).toEqual([
      'open',
      'open',
      'closed',
    ])

    const events: string[] = []
    tenantry.guard.on('breaker.closed', (e: { scope: string; server: string }) => events.push(`closed ${e.scope} ${e.server}`))
    await second.start()

    // Half-open after HALF_OPEN_MS: one trial statement closes both breakers.
    const restartedAt = Date.now()
    let recovered: Awaited<ReturnType<typeof list>> | undefined
    while (Date.now() - restartedAt < 20_000) {
      const r = await list('delta')
      if (r.status === 200) {
        recovered = r
        break
      }
      expect([r.status, r.code]).toEqual([503, 'TENANT_UNAVAILABLE'])
      expect(r.ms).toBeLessThan(1000)
      await new Promise((res) => setTimeout(res, 100))
    }
    expect(recovered?.names).toEqual(['delta project'])
    expect(events.sort()).toEqual(['closed database second', 'closed server second'])
    expect([tenantry.guard.breakerState('second'), tenantry.guard.breakerState('second', database)]).toEqual(['closed', 'closed'])
    const after = await Promise.all(Array.from({ length: 20 }, (_, i) => list(['alpha', 'beta', 'gamma', 'delta'][i % 4])))
    expect(after.map((r) => r.status)).toEqual(Array(20).fill(200))
  })
})
