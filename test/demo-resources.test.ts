/**
 * Issue 15's "done when": in the demo, each tenant attaches a file to a task and a daily-summary
 * job runs per tenant, each provably scoped — over HTTP (app.inject), on real PostgreSQL and on
 * PGlite.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { SUMMARY_QUEUE, buildDemoApp, dailySummary, type Summary } from '../demo/app.ts'
import { createTenantry, header, type Tenantry } from '../src/index.ts'
import { DEMO_MIGRATIONS, postgresAvailable, suiteBackends } from './helpers/backends.ts'

const PG_UP = await postgresAvailable()
const DB_NAME = 'tenantry_test_demo_resources'
const ROLE_PREFIX = 'th_dres'

const BACKENDS = suiteBackends(DB_NAME, ROLE_PREFIX, PG_UP)

for (const backend of BACKENDS) {
  describe.skipIf(!backend.enabled)(`demo: attachments and the daily summary (${backend.name})`, () => {
    let tenantry: Tenantry
    let app: FastifyInstance
    let dir: string | undefined
    const task: Record<string, string> = {}
    const call = async (tenant: string, method: 'GET' | 'POST' | 'PUT', url: string, payload?: string | Buffer | object, headers: Record<string, string> = {}) => {
      const r = await app.inject({ method, url, headers: { 'x-tenant': tenant, ...headers }, payload: payload as string })
      return { status: r.statusCode, json: () => r.json(), body: r.body, type: r.headers['content-type'] }
    }

    beforeAll(async () => {
      tenantry = await createTenantry({
        ...(await backend.connection()),
        migrations: DEMO_MIGRATIONS, resolve: [header()], guard: { redis: null }, cache: { redis: null },
        observe: { metering: false, tracing: false }, jobs: { pollIntervalMs: 100, scheduleIntervalMs: 0 },
        storage: { directory: (dir = mkdtempSync(join(tmpdir(), 'tenantry-test-demo-storage-'))), plans: { free: { maxBytes: 300 } } },
      })
      await tenantry.migrate()
      await tenantry.catalog.upsertPlan({ name: 'free', settings: {} })
      await tenantry.provision({ slug: 'acme', tier: 'pooled' })
      await tenantry.provision({ slug: 'globex', tier: 'schema' })
      await tenantry.provision({ slug: 'tiny', tier: 'pooled', plan: 'free' })
      app = await buildDemoApp(tenantry)
      for (const [slug, tasks] of [['acme', 2], ['globex', 1], ['tiny', 1]] as const) {
        const p = (await call(slug, 'POST', '/api/projects', { name: `${slug} launch` })).json()
        for (let i = 0; i < tasks; i++) {
          const t = (await call(slug, 'POST', `/api/projects/${p.id}/tasks`, { title: `task ${i}`, done: i === 0 })).json()
          task[slug] ??= t.id
        }
      }
    })

    afterAll(async () => {
      await app?.close()
      await tenantry?.close()
      await backend.cleanUp()
      if (dir) rmSync(dir, { recursive: true, force: true })
    })

    it('each tenant attaches a file to its task; no other tenant can reach it', async () => {
      const put = await call('acme', 'PUT', `/api/tasks/${task.acme}/attachments/spec.txt`, 'acme spec', { 'content-type': 'text/plain' })
      expect({ status: put.status, key: put.json().key, size: put.json().size }).toEqual({ status: 201, key: `tasks/${task.acme}/spec.txt`, size: 9 })
      expect((await call('globex', 'PUT', `/api/tasks/${task.globex}/attachments/spec.txt`, Buffer.from('globex!'), { 'content-type': 'application/octet-stream' })).status).toBe(201)
      const got = await call('acme', 'GET', `/api/tasks/${task.acme}/attachments/spec.txt`)
      expect({ status: got.status, body: got.body, type: got.type }).toEqual({ status: 200, body: 'acme spec', type: 'text/plain' })
      expect((await call('acme', 'GET', `/api/tasks/${task.acme}/attachments`)).json().map((a: { name: string; size: number }) => [a.name, a.size])).toEqual([['spec.txt', 9]])
      // globex asks for acme's task (its ids may collide with globex's own: the answer is globex's file or 404, never acme's).
      const cross = await call('globex', 'GET', `/api/tasks/${task.acme}/attachments/spec.txt`)
      expect(cross.body).not.toBe('acme spec')
      expect(task.acme === task.globex ? cross.body : cross.status).toBe(task.acme === task.globex ? 'globex!' : 404)
      // A planted path is refused, with the storage's coded 400.
      const planted = await call('acme', 'GET', `/api/tasks/${task.acme}/attachments/%2e%2e%2f%2e%2e%2f${task.globex}%2fspec.txt`)
      expect([planted.status, planted.json().code]).toEqual([400, 'STORAGE_KEY_INVALID'])
      // An attachment for a task the tenant does not have: 404 before anything is stored.
      expect((await call('acme', 'PUT', '/api/tasks/999999/attachments/x.txt', 'x', { 'content-type': 'text/plain' })).status).toBe(404)
      // Over the free plan's 300 bytes: 413, nothing stored.
      const big = await call('tiny', 'PUT', `/api/tasks/${task.tiny}/attachments/big.bin`, Buffer.alloc(400), { 'content-type': 'application/octet-stream' })
      expect([big.status, big.json().code]).toEqual([413, 'STORAGE_QUOTA_EXCEEDED'])
      expect((await call('tiny', 'GET', `/api/tasks/${task.tiny}/attachments`)).json()).toEqual([])
    })

    it('the daily summary job runs per tenant, inside that tenant', async () => {
      const stop = await tenantry.jobs.work(SUMMARY_QUEUE, () => dailySummary(tenantry))
      for (const slug of ['acme', 'globex', 'tiny']) expect((await call(slug, 'POST', '/api/summary')).status).toBe(202)
      await vi.waitFor(async () => {
        for (const slug of ['acme', 'globex', 'tiny']) expect((await call(slug, 'GET', '/api/summary')).status).toBe(200)
      }, { timeout: 20_000 })
      const got = Object.fromEntries(await Promise.all(['acme', 'globex', 'tiny'].map(async (slug) => {
        const { at, from, ...s } = (await call(slug, 'GET', '/api/summary')).json() as Summary & { from: string }
        return [slug, { ...s, from }]
      })))
      expect(got).toEqual({
        acme: { tenant: 'acme', projects: 1, tasks: 2, done: 1, attachments: 1, from: 'cache' },
        globex: { tenant: 'globex', projects: 1, tasks: 1, done: 1, attachments: 1, from: 'cache' },
        tiny: { tenant: 'tiny', projects: 1, tasks: 1, done: 1, attachments: 0, from: 'cache' },
      })
      // Scheduled: the same job from each tenant's cron schedule, once per due time.
      for (const slug of ['acme', 'globex']) await tenantry.withTenant(slug, () => tenantry.jobs.schedule(SUMMARY_QUEUE, '0 6 * * *'))
      expect(await tenantry.jobs.runSchedules(new Date('2030-12-05T06:00:05Z'))).toBe(2)
      await tenantry.withTenant('acme', () => tenantry.cache.flushTenant())
      await vi.waitFor(async () => expect((await call('acme', 'GET', '/api/summary')).json().from).toBe('cache'), { timeout: 20_000 })
      await stop()
      // The stored summary is the tenant's own (storage), after the cache is flushed.
      await tenantry.withTenant('globex', () => tenantry.cache.flushTenant())
      expect((await call('globex', 'GET', '/api/summary')).json()).toMatchObject({ tenant: 'globex', from: 'storage' })
    })
  })
}
