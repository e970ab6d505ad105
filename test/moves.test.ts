import { AsyncResource } from 'node:async_hooks'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Fastify from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { tenantryAdmin } from '../src/admin/plugin.ts'
import { adminTokens } from '../src/admin/tokens.ts'
import { createTenantry, type Tenant, type Tenantry, type Tier } from '../src/index.ts'
import { backends, DEMO_MIGRATIONS, outcome, postgresAvailable, type Backend } from './helpers/backends.ts'
import { PrivatePostgres, privatePostgresPossible } from './fixtures/guard-servers.ts'

// Moves between tiers and servers (issue 14), on PostgreSQL and on PGlite: every tier pair on one
// server, a move to a second server (PostgreSQL), writes during a move that wait and land at the new
// placement, verification, rollback within the grace period, cleanup, bad input refused with codes.

const DB_NAME = 'tenantry_test_moves'
const PREFIX = 'tp_moves'
const PG_UP = await postgresAvailable()
const BACKENDS = backends(DB_NAME, PREFIX, PG_UP)

interface Row { id: string; name: string }

function movesSuite(backend: Backend): void {
  describe.skipIf(!backend.enabled)(`moves (${backend.name})`, () => {
    let tenantry: Tenantry
    let second: PrivatePostgres | undefined
    let dir: string
    let acme: Tenant
    let bystander: string[]

    const names = (slug: string) => tenantry.withTenant(slug, async () => (await tenantry.db.query<Row>('SELECT id, name FROM projects ORDER BY id')).rows.map((r) => `${r.id}:${r.name}`))
    const taskCount = (slug: string) => tenantry.withTenant(slug, async () => Number((await tenantry.db.query<{ n: string }>('SELECT count(*) AS n FROM tasks')).rows[0].n))

    beforeAll(async () => {
      dir = mkdtempSync(join(tmpdir(), 'tenantry-moves-'))
      const url = await backend.url()
      tenantry = await createTenantry({
        ...(url ? { databaseUrl: url, rolePrefix: PREFIX } : { dataDir: 'memory' }),
        migrations: DEMO_MIGRATIONS,
        observe: { metering: false, metrics: false, tracing: false },
        moves: { graceMs: 60_000 },
      })
      if (url && privatePostgresPossible()) {
        second = await PrivatePostgres.create()
        await tenantry.addServer({ name: 'second', url: second.url, region: 'eu' })
      }
      acme = await tenantry.provision({ slug: 'acme', tier: 'pooled' })
      await tenantry.provision({ slug: 'bystander', tier: 'pooled' })
      await tenantry.withTenant('acme', async () => {
        for (const n of ['one', 'two', 'three']) await tenantry.db.query('INSERT INTO projects (name) VALUES ($1)', [n])
        await tenantry.db.query("INSERT INTO tasks (project_id, title) VALUES (1, 'a'), (2, 'b')")
      })
      await tenantry.withTenant('bystander', async () => { await tenantry.db.query("INSERT INTO projects (name) VALUES ('theirs')") })
      bystander = await names('bystander')
      expect(bystander).toHaveLength(1)
    }, 240_000)

    afterAll(async () => {
      await tenantry?.close()
      await second?.close()
      await backend.cleanUp()
      rmSync(dir, { recursive: true, force: true })
    }, 120_000)

    // pooled → schema → database → pooled → database → schema → pooled: all six pairs.
    const path: Tier[] = ['schema', 'database', 'pooled', 'database', 'schema', 'pooled']
    let expected = ['1:one', '2:two', '3:three']
    for (const [i, tier] of path.entries()) {
      it(`moves acme to ${tier} (step ${i + 1} of the six tier pairs) with every row verified, and the sequences go on`, async () => {
        const before = (await tenantry.catalog.bySlug('acme'))!
        const r = await tenantry.move('acme', { tier })
        expect([r.from.tier, r.to.tier]).toEqual([before.tier, tier])
        expect(r.tenant.tier).toBe(tier)
        expect(r.tables.map((t) => [t.table, t.rows])).toEqual([['projects', expected.length], ['tasks', 2]])
        expect(r.tables.every((t) => t.sourceChecksum === t.targetChecksum)).toBe(true)
        expect((await tenantry.catalog.bySlug('acme'))!.tier).toBe(tier)
        expect(await names('acme')).toEqual(expected)
        expect(await taskCount('acme')).toBe(2)
        const n = String(expected.length + 1)
        await tenantry.withTenant('acme', () => tenantry.db.query('INSERT INTO projects (name) VALUES ($1)', [`after-${tier}`]))
        expected = [...expected, `${n}:after-${tier}`]
        expect(await names('acme')).toEqual(expected)
        expect(await names('bystander')).toEqual(bystander)
        const op = await tenantry.operations.get(r.operationId)
        expect([op?.kind, op?.state, op?.step]).toEqual(['move', 'done', 'done'])
        const audit = await tenantry.audit.list({ action: 'tenant.move', limit: 1 })
        expect(audit[0]).toMatchObject({ action: 'tenant.move', tenantId: acme.id })
      }, 120_000)
    }

    it('a write sent while the fence is up waits and lands at the new placement; none is lost', async () => {
      let stop = false
      const acked: string[] = []
      const writer = (async () => {
        for (let i = 0; !stop; i++) {
          await tenantry.withTenant('acme', () => tenantry.db.query('INSERT INTO projects (name) VALUES ($1)', [`w${i}`]))
          acked.push(`w${i}`)
          await new Promise((r) => setTimeout(r, 2))
        }
      })()
      await new Promise((r) => setTimeout(r, 50))
      const r = await tenantry.move('acme', { tier: 'schema', graceMs: 0 })
      await new Promise((r) => setTimeout(r, 50))
      stop = true
      await writer
      expect(r.keptUntil).toBeNull()
      const have = new Set((await names('acme')).map((n) => n.split(':')[1]))
      expect(acked.length).toBeGreaterThan(3)
      expect(acked.filter((w) => !have.has(w))).toEqual([])
      expect((await tenantry.catalog.bySlug('acme'))!.tier).toBe('schema')
      expect(await tenantry.moves.keptRooms(acme.id)).toEqual([])
    }, 120_000)

    it(`inserts, updates and deletes made while the snapshot is copied are all at the new placement (${backend.name === 'PostgreSQL' ? 'online: captured and caught up' : 'offline: they wait for the fence'})`, async () => {
      const now = (await tenantry.catalog.bySlug('acme'))!
      const to: Tier = now.tier === 'pooled' ? 'database' : 'pooled'
      const before = await names('acme')
      const titles = () => tenantry.withTenant('acme', async () => (await tenantry.db.query<{ title: string }>('SELECT title FROM tasks ORDER BY title')).rows.map((r) => r.title))
      expect(await titles()).toEqual(['a', 'b'])
      const firstId = before[0].split(':')[0]
      let writes: Promise<unknown> | undefined
      // onProgress runs inside the copy's own async context: the writes are the application's, so they start from this test's.
      const outside = AsyncResource.bind((fn: () => Promise<unknown>) => fn())
      const r = await tenantry.move('acme', {
        tier: to, graceMs: 0,
        onProgress: (p) => {
          if (p.step !== 'copy' || writes) return
          writes = outside(() => tenantry.withTenant('acme', async () => {
            await tenantry.db.query("UPDATE projects SET name = 'renamed' WHERE id = $1", [firstId])
            const id = (await tenantry.db.query<{ id: string }>("INSERT INTO projects (name) VALUES ('during-copy') RETURNING id")).rows[0].id
            await tenantry.db.query("INSERT INTO tasks (project_id, title) VALUES ($1, 'during-copy')", [id])
            await tenantry.db.query("DELETE FROM tasks WHERE title = 'b'")
          }))
        },
      })
      await writes
      expect(r.mode).toBe(backend.name === 'PostgreSQL' ? 'online' : 'offline')
      const after = await names('acme')
      expect(after.slice(0, before.length)).toEqual([`${firstId}:renamed`, ...before.slice(1)])
      expect(after.slice(before.length)).toEqual([expect.stringMatching(/^[0-9]+:during-copy$/)])
      expect(await titles()).toEqual(['a', 'during-copy'])
      expect(await names('bystander')).toEqual(bystander)
      // Back as it was for the tests after this one.
      await tenantry.withTenant('acme', async () => {
        await tenantry.db.query("DELETE FROM tasks WHERE title = 'during-copy'")
        await tenantry.db.query("INSERT INTO tasks (project_id, title) VALUES (2, 'b')")
      })
      await tenantry.move('acme', { tier: now.tier, graceMs: 0 })
    }, 120_000)

    it('rolls back within the grace period and cleans the kept room up', async () => {
      const count = (await names('acme')).length
      const r = await tenantry.move('acme', { tier: 'database' })
      expect((await tenantry.moves.keptRooms(acme.id)).map((k) => [k.tier, k.toTier])).toEqual([['schema', 'database']])
      await tenantry.withTenant('acme', () => tenantry.db.query("INSERT INTO projects (name) VALUES ('in-database')"))
      const back = await tenantry.moves.rollback('acme')
      expect(back.to.tier).toBe('schema')
      expect((await names('acme')).length).toBe(count + 1)
      expect((await names('acme')).at(-1)).toMatch(/:in-database$/)
      expect(r.operationId).not.toBe(back.operationId)
      const removed = await tenantry.moves.cleanup({ all: true })
      expect(removed.map((k) => k.tier)).toEqual(['database'])
      expect(await tenantry.moves.keptRooms()).toEqual([])
      expect(await outcome(tenantry.moves.rollback('acme'))).toBe('NOT_FOUND')
    }, 120_000)

    it('applies placement advice as moves (advise --apply): a promotion of acme is carried out, a failing one is reported', async () => {
      const now = (await tenantry.catalog.bySlug('acme'))!
      const up: Tier = now.tier === 'database' ? 'schema' : 'database'
      const advice = [
        { kind: 'promote' as const, tenantId: acme.id, slug: 'acme', server: 'main', fromTier: now.tier, toTier: up, reason: 'test', figures: {} },
        { kind: 'promote' as const, tenantId: '00000000-0000-4000-8000-000000000000', slug: 'ghost', server: 'main', fromTier: 'pooled' as Tier, toTier: 'schema' as Tier, reason: 'test', figures: {} },
      ]
      const results = await tenantry.moves.applyAdvice(advice, await tenantry.catalog.listServers(), { startedBy: 'test' })
      expect(results.map((r) => [r.slug, r.status, r.error?.code ?? null])).toEqual([['acme', 'done', null], ['ghost', 'failed', 'TENANT_NOT_FOUND']])
      expect((await tenantry.catalog.bySlug('acme'))!.tier).toBe(up)
      expect(await names('bystander')).toEqual(bystander)
    }, 120_000)

    it('the automatic promotion policy carries out promotions only, at most maxMoves, started by policy:auto-promote', async () => {
      const now = (await tenantry.catalog.bySlug('acme'))!
      const up: Tier = now.tier === 'database' ? 'schema' : 'database'
      const bystanderTier = (await tenantry.catalog.bySlug('bystander'))!.tier
      const advice = [
        { kind: 'demote' as const, tenantId: (await tenantry.catalog.bySlug('bystander'))!.id, slug: 'bystander', server: 'main', fromTier: bystanderTier, toTier: 'pooled' as Tier, reason: 'test', figures: {} },
        { kind: 'promote' as const, tenantId: acme.id, slug: 'acme', server: 'main', fromTier: now.tier, toTier: up, reason: 'test', figures: {} },
        { kind: 'promote' as const, tenantId: '00000000-0000-4000-8000-000000000000', slug: 'ghost', server: 'main', fromTier: 'pooled' as Tier, toTier: 'schema' as Tier, reason: 'test', figures: {} },
      ]
      const results = await tenantry.moves.autoPromote(advice, await tenantry.catalog.listServers())
      expect(results.map((r) => [r.slug, r.status])).toEqual([['acme', 'done'], ['ghost', 'skipped']])
      expect((await tenantry.catalog.bySlug('acme'))!.tier).toBe(up)
      expect((await tenantry.catalog.bySlug('bystander'))!.tier).toBe(bystanderTier)
      const audit = await tenantry.audit.list({ action: 'tenant.move', limit: 1 })
      expect(audit[0]).toMatchObject({ actor: 'policy:auto-promote', tenantId: acme.id })
    }, 120_000)

    it('refuses bad input with a code and changes nothing', async () => {
      const before = (await tenantry.catalog.bySlug('acme'))!
      expect(await outcome(tenantry.move('nobody', { tier: 'schema' }))).toBe('TENANT_NOT_FOUND')
      expect(await outcome(tenantry.move('acme', { tier: 'sideways' as Tier }))).toBe('VALIDATION_FAILED')
      expect(await outcome(tenantry.move('acme', { tier: before.tier }))).toBe('VALIDATION_FAILED')
      expect(await outcome(tenantry.move('acme', { tier: 'schema', server: 'nowhere' }))).toBe('SERVER_NOT_FOUND')
      expect(await outcome(tenantry.move('acme', { tier: 'database', graceMs: -1 }))).toBe('VALIDATION_FAILED')
      const after = (await tenantry.catalog.bySlug('acme'))!
      expect([after.tier, after.placement]).toEqual([before.tier, before.placement])
    })

    it('the admin API moves a tenant (POST /tenants/:slug/move): 409 MOVE_IN_PROGRESS for a second move at once, 400 for a bad body, 403 for a viewer', async () => {
      const app = Fastify()
      await app.register(tenantryAdmin, { prefix: '/admin', tenantry, console: false })
      await app.ready()
      try {
        const store = await adminTokens(tenantry)
        const op = (await store.create({ name: 'moves-operator', role: 'operator' }, 'test:moves')).token
        const viewer = (await store.create({ name: 'moves-viewer', role: 'viewer' }, 'test:moves')).token
        const call = (token: string, url: string, payload: object) => app.inject({ method: 'POST', url: `/admin/api${url}`, headers: { authorization: `Bearer ${token}` }, payload })
        const bad = await call(op, '/tenants/acme/move', { tier: 'sideways' })
        expect([bad.statusCode, bad.json().code]).toEqual([400, 'VALIDATION_FAILED'])
        const denied = await call(viewer, '/tenants/acme/move', { tier: 'database' })
        expect(denied.statusCode).toBe(403)
        const before = (await tenantry.catalog.bySlug('acme'))!
        const other = before.tier === 'database' ? 'schema' : 'database'
        // Another move of acme is running (its operation is recorded; a second process would be running it).
        const running = await tenantry.operations.start('move', { tenantId: acme.id, slug: 'acme', params: {}, step: 'copy' })
        const busy = await call(op, '/tenants/acme/move', { tier: other })
        expect([busy.statusCode, busy.json().code]).toEqual([409, 'MOVE_IN_PROGRESS'])
        expect((await tenantry.catalog.bySlug('acme'))!.tier).toBe(before.tier)
        await tenantry.operations.finish(running.id, 'failed', 'test')
        const ok = await call(op, '/tenants/acme/move', { tier: other, graceMs: 0 })
        expect(ok.statusCode, ok.body).toBe(200)
        expect(ok.json().tenant.tier).toBe(other)
        expect((await tenantry.catalog.bySlug('acme'))!.tier).toBe(other)
        const missing = await call(op, '/tenants/nobody/move', { tier: 'schema' })
        expect([missing.statusCode, missing.json().code]).toEqual([404, 'TENANT_NOT_FOUND'])
      } finally {
        await app.close()
      }
    }, 120_000)

    it.skipIf(backend.name !== 'PostgreSQL' || !privatePostgresPossible())('moves to a database on another server; another region is refused unless forced', async () => {
      await tenantry.catalog.change(acme.id, (tx) => tx.query("UPDATE tenantry.tenants SET region = 'us' WHERE id = $1", [acme.id]))
      expect(await outcome(tenantry.move('acme', { tier: 'database', server: 'second' }))).toBe('RESIDENCY_VIOLATION')
      expect((await tenantry.catalog.bySlug('acme'))!.placement.server).toBe('main')
      const count = (await names('acme')).length
      const r = await tenantry.move('acme', { tier: 'database', server: 'second', force: true })
      expect(r.tenant.placement.server).toBe('second')
      expect((await names('acme')).length).toBe(count)
      const audit = await tenantry.audit.list({ action: 'tenant.move', limit: 1 })
      expect(audit[0].details).toMatchObject({ force: true })
      const back = await tenantry.move('acme', { tier: 'pooled', server: 'main', force: true, graceMs: 0 })
      expect(back.tenant.placement.server).toBe('main')
      expect((await names('acme')).length).toBe(count)
    }, 180_000)
  })
}

for (const b of BACKENDS) movesSuite(b)
