/**
 * Scale-out on one machine (issue 5): three app processes, two PostgreSQL servers (the shared test
 * server holds the catalog; a private cluster started here is the second server of the fleet) and
 * one Redis. Tenants of every tier sit on both servers. A suspend made through one process is
 * enforced by all three within 1 s; a tenant's rate limit is one budget across the processes; a
 * fleet migration started on all three at once is one operation whose targets they split.
 *
 * Own database `tenantry_test_scale_out` and role prefix `ts_scale` on the shared server (roles and
 * databases are cluster-wide); the private cluster is removed after. Skipped with a message when
 * Redis or initdb is missing, unless CI=true (then Redis must answer).
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createTenantry, type Tenant, type Tenantry, type Tier } from '../src/index.ts'
import { dropDatabase, freshDatabase, PG_ADMIN_URL, postgresAvailable } from './helpers/backends.ts'
import { PrivatePostgres, privatePostgresPossible, REDIS_URL, redisAvailable } from './fixtures/guard-servers.ts'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const APP = fileURLToPath(new URL('./fixtures/scale-app.ts', import.meta.url))
const DB_NAME = 'tenantry_test_scale_out'
const PREFIX = 'ts_scale'
const RATE = { points: 30, duration: 60 }

const pgOk = await postgresAvailable()
const redisOk = pgOk ? await redisAvailable() : false
const initdbOk = privatePostgresPossible()
if (!initdbOk) console.warn('[scale-out.test] SKIPPED: initdb/pg_ctl not found (a second PostgreSQL server is needed).')
if (!redisOk) console.warn('[scale-out.test] SKIPPED: Redis is not reachable (shared rate limits need it).')

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** One app process, driven over HTTP. */
class AppProcess {
  readonly proc: ChildProcessWithoutNullStreams
  readonly ready: Promise<{ port: number; pid: number }>
  stderr = ''
  port = 0

  constructor(config: Record<string, string>) {
    this.proc = spawn(process.execPath, ['--import', 'tsx', APP, JSON.stringify(config)], { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] })
    this.proc.stderr.on('data', (d) => { this.stderr += String(d) })
    this.ready = new Promise((resolve, reject) => {
      this.proc.once('exit', (code) => reject(new Error(`app process exited (${code}) before it was ready:\n${this.stderr}`)))
      createInterface({ input: this.proc.stdout }).on('line', (line) => {
        try {
          const m = JSON.parse(line) as { event?: string; port: number; pid: number }
          if (m.event === 'ready') {
            this.port = m.port
            resolve(m)
          }
        } catch {
          // the library's own output
        }
      })
    })
  }

  async call(method: string, path: string, opts: { tenant?: string; body?: unknown } = {}): Promise<{ status: number; body: any }> {
    const res = await fetch(`http://127.0.0.1:${this.port}${path}`, {
      method,
      headers: { ...(opts.tenant ? { 'x-tenant': opts.tenant } : {}), ...(opts.body !== undefined ? { 'content-type': 'application/json' } : {}) },
      body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
    })
    return { status: res.status, body: await res.json() }
  }

  async stop(): Promise<void> {
    if (this.proc.exitCode !== null) return
    const exited = new Promise<void>((r) => this.proc.once('exit', () => r()))
    this.call('POST', '/admin/close').catch(() => undefined)
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), 5000)
    await exited
    clearTimeout(timer)
  }
}

async function cleanPostgres(): Promise<void> {
  const c = new pg.Client({ connectionString: PG_ADMIN_URL })
  await c.connect()
  try {
    const dbs = await c.query<{ datname: string }>(`SELECT datname FROM pg_database WHERE datname LIKE $1`, [`${PREFIX}\\_%`])
    for (const { datname } of dbs.rows) await c.query(`DROP DATABASE IF EXISTS "${datname}" WITH (FORCE)`)
    await dropDatabase(DB_NAME)
    const roles = await c.query<{ rolname: string }>(`SELECT rolname FROM pg_roles WHERE rolname LIKE $1 ORDER BY rolname = $2`, [`${PREFIX}\\_%`, `${PREFIX}_app`])
    for (const { rolname } of roles.rows) {
      await c.query(`DROP OWNED BY "${rolname}"`)
      await c.query(`DROP ROLE "${rolname}"`)
    }
  } finally {
    await c.end()
  }
}

describe.skipIf(!pgOk || !redisOk || !initdbOk)('scale-out: 3 app processes, 2 PostgreSQL servers, 1 Redis', { timeout: 180_000 }, () => {
  let second: PrivatePostgres
  let third: PrivatePostgres | undefined
  let setup: Tenantry
  let url: string
  let catalogDb: pg.Client
  const dirs: string[] = []
  const apps: AppProcess[] = []
  const tenants: Tenant[] = []
  let limited: Tenant

  beforeAll(async () => {
    await cleanPostgres()
    url = await freshDatabase(DB_NAME)
    second = await PrivatePostgres.create()
    // The setup process knows only 0001; the app processes bring 0002 (slow on purpose) and migrate.
    const v1 = mkdtempSync(join(tmpdir(), 'tenantry-scale-v1-'))
    const v2 = mkdtempSync(join(tmpdir(), 'tenantry-scale-v2-'))
    dirs.push(v1, v2)
    for (const d of [v1, v2]) copyFileSync(join(ROOT, 'demo/migrations/0001_projects_and_tasks.sql'), join(d, '0001_projects_and_tasks.sql'))
    writeFileSync(join(v2, '0002_archive.sql'), 'SELECT pg_sleep(0.4);\nALTER TABLE projects ADD COLUMN archived boolean NOT NULL DEFAULT false;\n')

    setup = await createTenantry({ databaseUrl: url, rolePrefix: PREFIX, migrations: v1, guard: { redis: null } })
    await setup.addServer({ name: 'second', url: second.url })
    expect((await setup.migrate()).state).toBe('done')
    const tiers: Tier[] = ['pooled', 'schema', 'database']
    for (const server of ['main', 'second']) {
      for (const tier of tiers) tenants.push(await setup.provision({ slug: `so-${server}-${tier}`, tier, server }))
    }
    for (const t of tenants) await setup.handle(t).query('INSERT INTO projects (name) VALUES ($1)', [`${t.slug}-project`])
    await setup.catalog.upsertPlan({ name: 'limited', settings: { limits: { rate: RATE } } })
    limited = await setup.provision({ slug: 'so-limited', tier: 'pooled', plan: 'limited', server: 'second' })

    catalogDb = new pg.Client({ connectionString: url })
    await catalogDb.connect()
    const keyPrefix = `${PREFIX}_${randomBytes(4).toString('hex')}`
    for (let i = 0; i < 3; i++) apps.push(new AppProcess({ databaseUrl: url, rolePrefix: PREFIX, migrations: v2, redisUrl: REDIS_URL, keyPrefix }))
    await Promise.all(apps.map((a) => a.ready))
  })

  afterAll(async () => {
    await Promise.all(apps.map((a) => a.stop()))
    await catalogDb?.end().catch(() => undefined)
    await setup?.close()
    await second?.close()
    await third?.close()
    await cleanPostgres()
    for (const d of dirs) rmSync(d, { recursive: true, force: true })
  })

  it('every process serves every tenant of both servers, each its own rows', async () => {
    expect(tenants.map((t) => `${t.placement.server}/${t.tier}`)).toEqual(['main/pooled', 'main/schema', 'main/database', 'second/pooled', 'second/schema', 'second/database'])
    const seen: string[] = []
    const want: string[] = []
    for (const [i, app] of apps.entries()) {
      for (const t of tenants) {
        const r = await app.call('GET', '/api/projects', { tenant: t.slug })
        seen.push(`app${i} ${t.slug}: ${r.status} ${JSON.stringify(r.body.rows?.map((x: { tenant_id: string; name: string }) => [x.tenant_id, x.name]))}`)
        want.push(`app${i} ${t.slug}: 200 ${JSON.stringify([[t.id, `${t.slug}-project`]])}`)
      }
    }
    expect(seen).toEqual(want)
    expect(new Set((await Promise.all(apps.map((a) => a.ready))).map((r) => r.pid)).size).toBe(3)
  })

  it('a suspend made through one process is enforced by all three within 1 s, and so is the resume', async () => {
    const target = tenants.find((t) => t.placement.server === 'second' && t.tier === 'schema')!
    for (const app of apps) expect((await app.call('GET', '/api/projects', { tenant: target.slug })).status).toBe(200)
    const watch = (want: number) =>
      Promise.all(apps.map(async (app) => {
        const end = Date.now() + 3000
        for (;;) {
          const r = await app.call('GET', '/api/projects', { tenant: target.slug })
          if (r.status === want) return { at: Date.now(), code: r.body.code ?? null }
          if (Date.now() > end) return { at: Infinity, code: r.body.code ?? null }
          await sleep(10)
        }
      }))
    const suspended = watch(403)
    const { body } = await apps[0].call('POST', `/admin/suspend/${target.slug}`)
    const seen = await suspended
    expect(seen.map((s) => s.code)).toEqual(['TENANT_SUSPENDED', 'TENANT_SUSPENDED', 'TENANT_SUSPENDED'])
    for (const s of seen) expect(s.at - body.at).toBeLessThanOrEqual(1000)

    const resumed = watch(200)
    const back = await apps[1].call('POST', `/admin/resume/${target.slug}`)
    for (const s of await resumed) expect(s.at - back.body.at).toBeLessThanOrEqual(1000)
  })

  it("a tenant's rate limit is one budget across the three processes (Redis)", async () => {
    const statuses: number[] = []
    const codes = new Set<string>()
    for (let i = 0; i < RATE.points + 15; i++) {
      const r = await apps[i % 3].call('GET', '/api/projects', { tenant: limited.slug })
      statuses.push(r.status)
      if (r.status !== 200) codes.add(r.body.code)
    }
    expect(statuses.filter((s) => s === 200).length).toBe(RATE.points)
    expect(statuses.slice(RATE.points)).toEqual(Array(15).fill(429))
    expect([...codes]).toEqual(['RATE_LIMITED'])
    // Another tenant on the same processes is not affected.
    expect((await apps[2].call('GET', '/api/projects', { tenant: tenants[0].slug })).status).toBe(200)
  })

  it('a fleet migration started on all three processes at once is one operation, its targets split among them', async () => {
    // Hold the lock `migrate` takes to start or join its operation until all three wait for it.
    const barrier = new pg.Client({ connectionString: url })
    await barrier.connect()
    let results: { status: number; body: any }[]
    try {
      await barrier.query(`SELECT pg_advisory_lock(hashtext('tenantry.migrate.operation'))`)
      const calls = apps.map((a) => a.call('POST', '/admin/migrate', { body: { concurrency: 1 } }))
      for (const deadline = Date.now() + 60_000; ;) {
        const waiting = await barrier.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM pg_locks l JOIN pg_database d ON d.oid = l.database
           WHERE d.datname = $1 AND l.locktype = 'advisory' AND NOT l.granted AND l.objsubid = 1
             AND l.classid = ((hashtext('tenantry.migrate.operation')::bigint >> 32) & 4294967295)::oid
             AND l.objid = (hashtext('tenantry.migrate.operation')::bigint & 4294967295)::oid`,
          [DB_NAME],
        )
        if (waiting.rows[0].n === 3) break
        if (Date.now() > deadline) throw new Error('the three processes never all reached the operation lock')
        await sleep(50)
      }
      await barrier.query(`SELECT pg_advisory_unlock(hashtext('tenantry.migrate.operation'))`)
      results = await Promise.all(calls)
    } finally {
      await barrier.end()
    }
    // 2 pooled targets (one per server), 2 schema and 2 database tenants.
    const total = 6
    for (const r of results) {
      expect(r.status).toBe(200)
      expect(r.body.state).toBe('done')
      expect(r.body.counts).toMatchObject({ total, done: total, failed: 0 })
    }
    expect(new Set(results.map((r) => r.body.operationId)).size).toBe(1)
    const claims = (await catalogDb.query<{ target: string; state: string; claimed_by: string }>(
      'SELECT target, state, claimed_by FROM tenantry.operation_targets WHERE operation_id = $1 ORDER BY target', [results[0].body.operationId],
    )).rows
    expect(claims.length).toBe(total)
    expect(claims.every((c) => c.state === 'done')).toBe(true)
    const pidsOfClaims = new Set(claims.map((c) => Number(c.claimed_by.split(':')[1])))
    const appPids = new Set(results.map((r) => r.body.pid as number))
    expect(appPids.size).toBe(3)
    // Every claim was made by one of the app processes, and more than one of them took part.
    for (const pid of pidsOfClaims) expect(appPids.has(pid)).toBe(true)
    expect(pidsOfClaims.size).toBeGreaterThanOrEqual(2)
    // The new column is there on both servers, in every tier.
    for (const t of tenants) {
      const r = await apps[0].call('GET', '/api/projects', { tenant: t.slug })
      expect(r.status, t.slug).toBe(200)
    }
    for (const t of tenants) expect((await setup.handle(t).query('SELECT archived FROM projects')).rows).toEqual([{ archived: false }])
  })

  it('a server another process adds while the apps run: every app serves the tenants placed there at once, without restart', async () => {
    third = await PrivatePostgres.create()
    await setup.addServer({ name: 'third', url: third.url })
    const placed: Tenant[] = []
    for (const tier of ['pooled', 'schema', 'database'] as Tier[]) placed.push(await setup.provision({ slug: `so-third-${tier}`, tier, server: 'third' }))
    for (const t of placed) await setup.handle(t).query('INSERT INTO projects (name) VALUES ($1)', [`${t.slug}-project`])
    // No waiting: an app that has not heard of the server yet (its notification on the way) looks it up at the first request.
    const seen: string[] = []
    const want: string[] = []
    for (const [i, app] of apps.entries()) {
      for (const t of placed) {
        const r = await app.call('GET', '/api/projects', { tenant: t.slug })
        seen.push(`app${i} ${t.slug}: ${r.status} ${JSON.stringify(r.body.rows?.map((x: { tenant_id: string; name: string }) => [x.tenant_id, x.name]) ?? r.body.code)}`)
        want.push(`app${i} ${t.slug}: 200 ${JSON.stringify([[t.id, `${t.slug}-project`]])}`)
      }
    }
    expect(seen).toEqual(want)
  })
})
