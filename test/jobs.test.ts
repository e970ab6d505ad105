/**
 * Issue 15, part 2: background jobs that keep their tenant, on pg-boss — the same suite on real
 * PostgreSQL and on the embedded PGlite (pg-boss through its `db` option). Jobs without a tenant,
 * with a forged, copied or unknown one, or of a suspended tenant are refused and never run; one
 * tenant's backlog does not starve another's job; cron schedules fire per tenant, once.
 */
import { createHmac, randomUUID } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { createTenantry, currentTenant, withTenant, type Tenant, type TenantJob, type Tenantry } from '../src/index.ts'
import type { JobQueue } from '../src/jobs/index.ts'
import { DEMO_MIGRATIONS, outcome, postgresAvailable, suiteBackends } from './helpers/backends.ts'

const PG_UP = await postgresAvailable()
const DB_NAME = 'tenantry_test_jobs'
const ROLE_PREFIX = 'th_jobs'

const BACKENDS = suiteBackends(DB_NAME, ROLE_PREFIX, PG_UP)

for (const backend of BACKENDS) {
  describe.skipIf(!backend.enabled)(`tenant jobs (${backend.name})`, () => {
    let tenantry: Tenantry
    const t: Record<string, Tenant> = {}
    let queue: JobQueue

    async function jobRow(id: string): Promise<{ state: string; output: any }> {
      const admin = tenantry.dataPlane.driver('main').admin(tenantry.dataPlane.server('main').mainDatabase)
      const { rows } = await admin.query<{ state: string; output: any }>('SELECT state, output FROM pgboss.job WHERE id = $1', [id])
      return rows[0]!
    }

    beforeAll(async () => {
      tenantry = await createTenantry({
        ...(await backend.connection()),
        migrations: DEMO_MIGRATIONS, guard: { redis: null }, cache: { redis: null },
        observe: { metering: false, tracing: false }, jobs: { pollIntervalMs: 100, scheduleIntervalMs: 0 },
      })
      await tenantry.migrate()
      for (const slug of ['jobs-a', 'jobs-b', 'jobs-sus']) {
        t[slug] = await tenantry.provision({ slug, tier: slug === 'jobs-b' ? 'schema' : 'pooled' })
        await tenantry.withTenant(slug, () => tenantry.db.query('INSERT INTO projects (name) VALUES ($1)', [`project of ${slug}`]))
      }
      queue = (tenantry.jobs as unknown as { queue: JobQueue }).queue
    })

    afterAll(async () => {
      await tenantry?.close()
      await backend.cleanUp()
    })

    it('refuses to send outside a tenant context, and bad queue names and payloads', async () => {
      expect(await outcome(tenantry.jobs.send('q', {}))).toBe('TENANT_CONTEXT_MISSING')
      expect(await outcome(tenantry.jobs.schedule('q', '* * * * *'))).toBe('TENANT_CONTEXT_MISSING')
      await withTenant(t['jobs-a']!, async () => {
        expect(await outcome(tenantry.jobs.send('bad queue', {}))).toBe('VALIDATION_FAILED')
        expect(await outcome(tenantry.jobs.send('', {}))).toBe('VALIDATION_FAILED')
        expect(await outcome(tenantry.jobs.send('q', { n: 1n }))).toBe('VALIDATION_FAILED')
        expect(await outcome(tenantry.jobs.send('q', {}, { retryLimit: -1 }))).toBe('VALIDATION_FAILED')
      })
    })

    it('runs each job inside the tenant that sent it: db, cache and context scoped', async () => {
      const seen: { job: string; tenant: string; context: string; projects: string[]; cached: unknown }[] = []
      const stop = await tenantry.jobs.work('scoped', async (job: TenantJob<{ n: number }>) => {
        const { rows } = await tenantry.db.query<{ name: string }>('SELECT name FROM projects ORDER BY id')
        const cached = await tenantry.cache.get('who')
        seen.push({ job: job.id, tenant: job.tenant.slug, context: currentTenant().slug, projects: rows.map((r) => r.name), cached })
        return { ok: job.data.n }
      }, { concurrency: 2 })
      const ids: Record<string, string> = {}
      for (const slug of ['jobs-a', 'jobs-b']) {
        await tenantry.withTenant(slug, async () => {
          await tenantry.cache.set('who', slug)
          ids[slug] = await tenantry.jobs.send('scoped', { n: slug.length })
        })
      }
      await vi.waitFor(() => expect(seen.length).toBe(2), { timeout: 20_000 })
      await stop()
      expect(seen.sort((x, y) => x.tenant.localeCompare(y.tenant)).map(({ job, ...r }) => ({ ...r, id: job }))).toEqual([
        { id: ids['jobs-a'], tenant: 'jobs-a', context: 'jobs-a', projects: ['project of jobs-a'], cached: 'jobs-a' },
        { id: ids['jobs-b'], tenant: 'jobs-b', context: 'jobs-b', projects: ['project of jobs-b'], cached: 'jobs-b' },
      ])
      await vi.waitFor(async () => expect((await jobRow(ids['jobs-a']!)).state).toBe('completed'))
      expect((await jobRow(ids['jobs-a']!)).output).toEqual({ ok: 6 })
    })

    it('fails closed: no tenant, forged, copied, unknown and suspended jobs are refused and never run', async () => {
      const ran: string[] = []
      const refused: { jobId: string; code: string }[] = []
      tenantry.events.on('job.refused', (e) => refused.push({ jobId: e.jobId, code: (e.error as unknown as { code: string }).code }))
      await tenantry.jobs.work('guarded', async (job) => { ran.push(job.id) })
      await queue.ensureQueue('guarded')
      const a = t['jobs-a']!
      const b = t['jobs-b']!
      const key = tenantry.catalog.tenantKey
      const sig = (k: string, q: string, id: string, tenant: string) => createHmac('sha256', k).update(`tenantry.job\n${q}\n${id}\n${tenant}`).digest('hex')
      await tenantry.suspend('jobs-sus', 'test')
      const cases: Record<string, { id: string; data: unknown; code: string }> = {}
      const add = (name: string, data: (id: string) => unknown, code: string) => {
        const id = randomUUID()
        cases[name] = { id, data: data(id), code }
      }
      add('no envelope', () => ({ hello: 'world' }), 'JOB_TENANT_INVALID')
      add('null data', () => null, 'JOB_TENANT_INVALID')
      add('no signature', () => ({ tenantry: { tenant: a.id, vt: 0 }, data: 1 }), 'JOB_TENANT_INVALID')
      add('forged signature', () => ({ tenantry: { tenant: b.id, sig: 'f'.repeat(64), vt: 0 }, data: 1 }), 'JOB_TENANT_INVALID')
      add('wrong key', (id) => ({ tenantry: { tenant: b.id, sig: sig('another installation', 'guarded', id, b.id), vt: 0 }, data: 1 }), 'JOB_TENANT_INVALID')
      const copiedFrom = randomUUID()
      add('signature copied from another job of A onto B', () => ({ tenantry: { tenant: b.id, sig: sig(key, 'guarded', copiedFrom, a.id), vt: 0 }, data: 1 }), 'JOB_TENANT_INVALID')
      add('signature of A with the tenant swapped to B', (id) => ({ tenantry: { tenant: b.id, sig: sig(key, 'guarded', id, a.id), vt: 0 }, data: 1 }), 'JOB_TENANT_INVALID')
      add('signed for another queue', (id) => ({ tenantry: { tenant: a.id, sig: sig(key, 'other', id, a.id), vt: 0 }, data: 1 }), 'JOB_TENANT_INVALID')
      const ghost = randomUUID()
      add('unknown tenant (validly signed)', (id) => ({ tenantry: { tenant: ghost, sig: sig(key, 'guarded', id, ghost), vt: 0 }, data: 1 }), 'TENANT_NOT_FOUND')
      add('suspended tenant', (id) => ({ tenantry: { tenant: t['jobs-sus']!.id, sig: sig(key, 'guarded', id, t['jobs-sus']!.id), vt: 0 }, data: 1 }), 'TENANT_SUSPENDED')
      add('valid (control)', (id) => ({ tenantry: { tenant: a.id, sig: sig(key, 'guarded', id, a.id), vt: 0 }, data: 1 }), 'ok')
      await queue.send(Object.values(cases).map((c) => ({ id: c.id, queue: 'guarded', data: c.data, priority: 0, retryLimit: 0 })))
      await vi.waitFor(async () => {
        for (const c of Object.values(cases)) expect(['failed', 'completed']).toContain((await jobRow(c.id)).state)
      }, { timeout: 30_000 })
      expect(ran).toEqual([cases['valid (control)']!.id])
      for (const [name, c] of Object.entries(cases)) {
        const row = await jobRow(c.id)
        expect({ name, state: row.state, code: row.output?.code ?? 'ok' }).toEqual({ name, state: c.code === 'ok' ? 'completed' : 'failed', code: c.code })
      }
      expect(refused.map((r) => r.jobId).sort()).toEqual(Object.values(cases).filter((c) => c.code !== 'ok').map((c) => c.id).sort())
      expect(tenantry.jobs.stats().refused).toEqual({ JOB_TENANT_INVALID: 8, TENANT_NOT_FOUND: 1, TENANT_SUSPENDED: 1 })
      await tenantry.resume('jobs-sus')
    })

    it('serves tenants fairly: a single job is not stuck behind another tenant\'s backlog', async () => {
      const order: string[] = []
      await tenantry.withTenant('jobs-a', () => tenantry.jobs.sendMany('fair', Array.from({ length: 300 }, (_, i) => ({ i }))))
      const quiet = await tenantry.withTenant('jobs-b', () => tenantry.jobs.send('fair', { quiet: true }))
      const stop = await tenantry.jobs.work('fair', async (job) => { order.push(job.id === quiet ? 'B' : 'a') }, { concurrency: 1 })
      await vi.waitFor(() => expect(order).toContain('B'), { timeout: 30_000 })
      await stop()
      // A's first job has the same virtual time as B's (B starts at the queue's floor); B's is next.
      expect(order.indexOf('B')).toBeLessThanOrEqual(1)
    })

    it('claims a job sent while the worker was claiming at once, not after the poll interval', async () => {
      // The worker's first claim finds the queue empty and is held; the send lands meanwhile (its
      // wake finds no sleeping worker). The worker must claim again, not sleep for ten minutes.
      const jobs = tenantry.jobs as unknown as { opts: { pollIntervalMs: number } }
      const pollMs = jobs.opts.pollIntervalMs
      const realFetch = queue.fetch
      let entered!: () => void
      const inClaim = new Promise<void>((r) => (entered = r))
      let release!: () => void
      const held = new Promise<void>((r) => (release = r))
      let armed = true
      queue.fetch = async function (this: JobQueue, q, n, skip) {
        const got = await realFetch.call(this, q, n, skip)
        if (q === 'race' && armed) {
          armed = false
          expect(got).toEqual([])
          entered()
          await held
        }
        return got
      }
      const ran: string[] = []
      let stop: (() => Promise<void>) | undefined
      try {
        jobs.opts.pollIntervalMs = 600_000
        stop = await tenantry.jobs.work('race', async (job) => { ran.push(job.id) })
        await inClaim
        const id = await tenantry.withTenant('jobs-a', () => tenantry.jobs.send('race', { n: 1 }))
        release()
        await vi.waitFor(() => expect(ran).toEqual([id]), { timeout: 15_000 })
      } finally {
        jobs.opts.pollIntervalMs = pollMs
        queue.fetch = realFetch
        release()
        await stop?.()
      }
    })

    it('claims through an index in claim order on every queue partition', async () => {
      const admin = tenantry.dataPlane.driver('main').admin(tenantry.dataPlane.server('main').mainDatabase)
      const parent = await admin.query<{ indexdef: string }>("SELECT indexdef FROM pg_indexes WHERE schemaname = 'pgboss' AND indexname = 'tenantry_claim'")
      expect(parent.rows.map((r) => r.indexdef)).toEqual([
        "CREATE INDEX tenantry_claim ON ONLY pgboss.job USING btree (name, priority DESC, created_on, id) WHERE (state < 'active'::pgboss.job_state)",
      ])
      // Every queue's partition carries it (those made before and after the index was created).
      const { rows } = await admin.query<{ partition: string; has: boolean }>(`
        SELECT c.relname AS partition, EXISTS (
          SELECT 1 FROM pg_inherits ii JOIN pg_index x ON x.indexrelid = ii.inhrelid
          WHERE ii.inhparent = 'pgboss.tenantry_claim'::regclass AND x.indrelid = c.oid) AS has
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'pgboss.job'::regclass`)
      const queues = await admin.query<{ name: string }>('SELECT name FROM pgboss.queue ORDER BY name')
      expect(queues.rows.map((q) => q.name)).toEqual(['fair', 'guarded', 'race', 'scoped'])
      expect(rows.map((r) => r.has)).toEqual([true, true, true, true])
    })

    it("caps a tenant's running jobs at its share of the worker: another tenant's job runs beside a blocked backlog", async () => {
      expect(await outcome(tenantry.jobs.work('capped', async () => undefined, { concurrency: 3, maxPerTenant: 0 }))).toBe('VALIDATION_FAILED')
      expect(await outcome(tenantry.jobs.work('capped', async () => undefined, { concurrency: 3, maxPerTenant: 4 }))).toBe('VALIDATION_FAILED')
      let release!: () => void
      const gate = new Promise<void>((r) => (release = r))
      const running = new Map<string, number>()
      const peak = new Map<string, number>()
      const ran: string[] = []
      const stop = await tenantry.jobs.work('capped', async (job) => {
        const slug = job.tenant.slug
        running.set(slug, (running.get(slug) ?? 0) + 1)
        peak.set(slug, Math.max(peak.get(slug) ?? 0, running.get(slug)!))
        ran.push(slug)
        if (slug === 'jobs-a') await gate
        running.set(slug, running.get(slug)! - 1)
      }, { concurrency: 3, maxPerTenant: 2 })
      try {
        await tenantry.withTenant('jobs-a', () => tenantry.jobs.sendMany('capped', Array.from({ length: 20 }, (_, i) => ({ i }))))
        await vi.waitFor(() => expect(running.get('jobs-a')).toBe(2), { timeout: 10_000 })
        // A's jobs hold two slots and stay blocked; the third slot is not A's to take.
        await tenantry.withTenant('jobs-b', () => tenantry.jobs.send('capped', { quiet: true }))
        await vi.waitFor(() => expect(ran).toContain('jobs-b'), { timeout: 10_000 })
        expect(running.get('jobs-a')).toBe(2)
        expect(ran.filter((s) => s === 'jobs-a')).toHaveLength(2)
      } finally {
        release()
      }
      await vi.waitFor(() => expect(ran.filter((s) => s === 'jobs-a')).toHaveLength(20), { timeout: 30_000 })
      await stop()
      expect(Object.fromEntries(peak)).toEqual({ 'jobs-a': 2, 'jobs-b': 1 })
    })

    it('fires cron schedules per tenant, once per time across calls, in the tenant', async () => {
      const got: { tenant: string; data: unknown }[] = []
      const stop = await tenantry.jobs.work('summary', async (job) => { got.push({ tenant: currentTenant().slug, data: job.data }) })
      expect(await outcome(withTenant(t['jobs-a']!, () => tenantry.jobs.schedule('summary', 'not cron')))).toBe('VALIDATION_FAILED')
      expect(await outcome(withTenant(t['jobs-a']!, () => tenantry.jobs.schedule('summary', '0 6 * * *', null, { tz: 'Mars/Olympus' })))).toBe('VALIDATION_FAILED')
      await withTenant(t['jobs-a']!, () => tenantry.jobs.schedule('summary', '0 6 * * *', { kind: 'daily' }))
      await withTenant(t['jobs-b']!, () => tenantry.jobs.schedule('summary', '30 6 * * *', { kind: 'daily-b' }, { tz: 'Europe/Berlin' }))
      expect((await withTenant(t['jobs-a']!, () => tenantry.jobs.schedules())).map((s) => [s.queue, s.name, s.cron, s.tz])).toEqual([['summary', 'default', '0 6 * * *', 'UTC']])
      // Times before a schedule was made never fire (its latest due time today is before now).
      expect(await tenantry.jobs.runSchedules()).toBe(0)
      // 06:00:30 UTC: A's 06:00 is due; B's 06:30 Berlin (05:30 UTC) fell due too (first firing).
      expect(await tenantry.jobs.runSchedules(new Date('2030-12-05T06:00:30Z'))).toBe(2)
      expect(await tenantry.jobs.runSchedules(new Date('2030-12-05T06:00:40Z'))).toBe(0)
      expect(await tenantry.jobs.runSchedules(new Date('2030-12-06T05:29:00Z'))).toBe(0)
      expect(await tenantry.jobs.runSchedules(new Date('2030-12-06T05:30:00Z'))).toBe(1)
      await vi.waitFor(() => expect(got.length).toBe(3), { timeout: 20_000 })
      await stop()
      expect(got.sort((x, y) => x.tenant.localeCompare(y.tenant))).toEqual([
        { tenant: 'jobs-a', data: { kind: 'daily' } },
        { tenant: 'jobs-b', data: { kind: 'daily-b' } },
        { tenant: 'jobs-b', data: { kind: 'daily-b' } },
      ])
      expect(await withTenant(t['jobs-a']!, () => tenantry.jobs.unschedule('summary'))).toBe(true)
      expect(await withTenant(t['jobs-a']!, () => tenantry.jobs.schedules())).toEqual([])
    })
  })
}
