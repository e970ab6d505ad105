/**
 * Connection recycling on real PostgreSQL: a connection is closed once it has served
 * `maxSchemasPerConnection` distinct schemas (what bounds its backend's catalog cache), and a
 * connection that serves one schema (pooled tenants) is kept however many statements it runs.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { resolve } from 'node:path'
import { createTenantry, type Tenant, type Tenantry } from '../src/index.ts'
import { dropDatabase, dropPostgresLeftovers, freshDatabase, postgresAvailable } from './helpers/backends.ts'

const PG_OK = await postgresAvailable()
const DB = 'tenantry_test_pool_recycle'
const PREFIX = 'ts_recycle'
const MIGRATIONS = resolve(import.meta.dirname, '../demo/migrations')

describe.skipIf(!PG_OK)('connection recycling by schemas served (PostgreSQL)', () => {
  let tenantry: Tenantry
  const schemaTenants: Tenant[] = []
  let pooled: Tenant

  beforeAll(async () => {
    await dropPostgresLeftovers(PREFIX, DB)
    const url = await freshDatabase(DB)
    // One connection, so every statement runs on the same one until it is recycled.
    tenantry = await createTenantry({ databaseUrl: url, migrations: MIGRATIONS, rolePrefix: PREFIX, connectionBudget: 1, maxSchemasPerConnection: 2, guard: { redis: null } })
    await tenantry.migrate()
    for (const slug of ['sa', 'sb', 'sc']) schemaTenants.push(await tenantry.provision({ slug, tier: 'schema' }))
    pooled = await tenantry.provision({ slug: 'pa', tier: 'pooled' })
  }, 120_000)

  afterAll(async () => {
    await tenantry?.close()
    await dropDatabase(DB)
    await dropPostgresLeftovers(PREFIX, DB)
  })

  const backend = async (t: Tenant) => (await tenantry.handle(t).query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0].pid

  it('keeps a connection that serves one schema, whatever the number of statements', async () => {
    const pids = new Set<number>()
    for (let i = 0; i < 50; i++) pids.add(await backend(pooled))
    expect(pids.size).toBe(1)
  })

  it('closes a connection after the statement that makes it exceed maxSchemasPerConnection distinct schemas', async () => {
    const [a, b, c] = schemaTenants
    // A fresh connection: the one kept above has served 'public' already.
    await tenantry.dataPlane.driver('main').releaseDatabase(tenantry.dataPlane.target(a).database)
    const p1 = await backend(a)
    expect(await backend(b)).toBe(p1) // 2 schemas: kept
    expect(await backend(a)).toBe(p1) // still 2
    const p2 = await backend(c) // the third schema runs on it, then it is closed
    expect(p2).toBe(p1)
    const p3 = await backend(a)
    expect(p3).not.toBe(p1)
    // Every tenant still reads only its own rows on the new connection.
    for (const t of [a, b, c, pooled]) {
      const rows = (await tenantry.handle(t).query<{ n: string }>('SELECT count(*) AS n FROM projects')).rows
      expect(rows).toEqual([{ n: '0' }])
    }
  })
})
