import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import pg from 'pg'
import { createTenantry, type Tenantry } from '../src/runtime.ts'
import { DEMO_MIGRATIONS, dropDatabase, dropPostgresLeftovers, freshDatabase, PG_ADMIN_URL, postgresAvailable } from './helpers/backends.ts'

const DB_NAME = 'tenantry_test_xproc'
// Roles are cluster-wide on a real server: everything this file makes carries this prefix.
const PREFIX = 'tc_xproc'
const ROOT = fileURLToPath(new URL('..', import.meta.url))
const CHILD = fileURLToPath(new URL('./fixtures/catalog-child.ts', import.meta.url))

type Reply = Record<string, any> & { id: number; ok: boolean }

/** A child process with its own Tenantry, spoken to in JSON lines. */
class Child {
  readonly proc: ChildProcessWithoutNullStreams
  private nextId = 1
  private readonly pending = new Map<number, { resolve(r: Reply): void; reject(e: Error): void }>()
  readonly ready: Promise<void>
  stderr = ''
  exited = false

  constructor(readonly name: string, databaseUrl: string) {
    this.proc = spawn(process.execPath, ['--import', 'tsx', CHILD, JSON.stringify({ databaseUrl, rolePrefix: PREFIX })], {
      cwd: ROOT,
      // Its connections carry its name, so the test can find (and kill) this process's listener.
      env: { ...process.env, PGAPPNAME: `${PREFIX}_${name}` },
      stdio: ['pipe', 'pipe', 'pipe'],
    })
    this.proc.stderr.on('data', (d) => { this.stderr += String(d) })
    let onReady!: () => void
    let onFail!: (e: Error) => void
    this.ready = new Promise<void>((resolve, reject) => { onReady = resolve; onFail = reject })
    this.proc.on('exit', (code, signal) => {
      this.exited = true
      const err = new Error(`child ${name} exited (code ${code}, signal ${signal}); stderr:\n${this.stderr}`)
      onFail(err)
      for (const p of this.pending.values()) p.reject(err)
      this.pending.clear()
    })
    createInterface({ input: this.proc.stdout }).on('line', (line) => {
      let msg: Reply
      try {
        msg = JSON.parse(line)
      } catch {
        return // the library's own output
      }
      if (msg.event === 'ready') onReady()
      const p = this.pending.get(msg.id)
      if (p) {
        this.pending.delete(msg.id)
        p.resolve(msg)
      }
    })
  }

  async request(cmd: string, args: Record<string, unknown> = {}): Promise<Reply> {
    const id = this.nextId++
    const reply = await new Promise<Reply>((resolve, reject) => {
      this.pending.set(id, { resolve, reject })
      this.proc.stdin.write(`${JSON.stringify({ id, cmd, ...args })}\n`)
    })
    if (!reply.ok) throw new Error(`child ${this.name}: ${cmd} failed: ${reply.error} (${reply.code})`)
    return reply
  }

  /** Ask it to close; kill it if it does not exit promptly. */
  async stop(): Promise<void> {
    if (this.exited) return
    const exited = new Promise<void>((resolve) => this.proc.once('exit', () => resolve()))
    this.request('close').catch(() => undefined)
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), 3000)
    await exited
    clearTimeout(timer)
  }
}

async function cleanPostgres(): Promise<void> {
  await dropPostgresLeftovers(PREFIX, DB_NAME)
}

const pgOk = await postgresAvailable()
if (!pgOk) console.warn('[cross-process.test] SKIPPED: needs a real PostgreSQL server (LISTEN/NOTIFY between OS processes); none answers at ' + PG_ADMIN_URL)

describe.skipIf(!pgOk)('catalog cache invalidation across OS processes (PostgreSQL only)', () => {
  let url: string
  let setup: Tenantry | undefined
  let admin: pg.Client | undefined
  let a: Child | undefined
  let b: Child | undefined

  /** Backends of a child's LISTEN connection in the test database. */
  const listeners = async (child: Child) =>
    (
      await admin!.query<{ pid: number }>(
        `SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name = $2 AND query LIKE 'LISTEN%' ORDER BY pid`,
        [DB_NAME, `${PREFIX}_${child.name}`],
      )
    ).rows.map((r) => r.pid)

  beforeAll(async () => {
    await cleanPostgres()
    url = await freshDatabase(DB_NAME)
    setup = await createTenantry({ databaseUrl: url, migrations: DEMO_MIGRATIONS, rolePrefix: PREFIX })
    await setup.provision({ slug: 'acme', tier: 'pooled', name: 'Acme' })
    admin = new pg.Client({ connectionString: url })
    await admin.connect()
    a = new Child('a', url)
    b = new Child('b', url)
    await Promise.all([a.ready, b.ready])
  })

  afterAll(async () => {
    await Promise.all([a?.stop(), b?.stop()])
    // Belt and braces: nothing of ours may outlive the test run.
    for (const c of [a, b]) if (c && !c.exited) c.proc.kill('SIGKILL')
    await admin?.end().catch(() => undefined)
    await setup?.close()
    await dropDatabase(DB_NAME)
    await cleanPostgres()
  })

  it('runs two separate processes, each with its own cache and its own listener', async () => {
    expect(a!.proc.pid).not.toBe(b!.proc.pid)
    expect(a!.proc.pid).not.toBe(process.pid)
    expect(await listeners(a!)).toHaveLength(1)
    expect(await listeners(b!)).toHaveLength(1)
  })

  it('a status change in process B is seen by process A within 1 second', async () => {
    // A warms its cache.
    const first = await a!.request('lookup', { slug: 'acme' })
    expect(first.tenant).toMatchObject({ slug: 'acme', status: 'active', statusReason: null, name: 'Acme' })
    const second = await a!.request('lookup', { slug: 'acme' })
    expect(second.same).toBe(true)

    // A's lookups are served from its cache: a change behind the catalog's back (no NOTIFY) is not seen.
    await admin!.query(`UPDATE tenantry.tenants SET name = 'Acme (renamed silently)' WHERE slug = 'acme'`)
    const stale = await a!.request('lookup', { slug: 'acme' })
    expect(stale.same).toBe(true)
    expect(stale.tenant.name).toBe('Acme')

    // A polls its catalog (every 2 ms) while B suspends the tenant through B's catalog.
    const before = stale.invalidations as number
    const watching = a!.request('waitFor', { slug: 'acme', status: 'suspended', reason: 'Invoice 7 unpaid', timeoutMs: 5000 })
    await new Promise((r) => setTimeout(r, 50))
    const change = await b!.request('setStatus', { slug: 'acme', status: 'suspended', reason: 'Invoice 7 unpaid' })
    const seen = await watching

    expect(seen.seen).toBe(true)
    expect(seen.tenant).toMatchObject({ status: 'suspended', statusReason: 'Invoice 7 unpaid', name: 'Acme (renamed silently)' })
    // It was the notification, not the 60 s TTL, that cleared A's cache.
    expect(seen.invalidations).toBeGreaterThan(before)
    const delay = seen.seenAt - change.committedAt
    const fromStart = seen.seenAt - change.startedAt
    console.log(`[cross-process] B→A invalidation: seen ${delay} ms after B's commit returned (${fromStart} ms after B started the change; ${seen.polls} polls)`)
    expect(fromStart).toBeLessThanOrEqual(1000)
    expect(delay).toBeLessThanOrEqual(1000)
  })

  it('after its listener connection is killed, A reconnects and sees changes again', async () => {
    // A's cache holds 'suspended'.
    const warm = await a!.request('lookup', { slug: 'acme' })
    expect(warm.tenant.status).toBe('suspended')
    expect((await a!.request('lookup', { slug: 'acme' })).same).toBe(true)

    const old = await listeners(a!)
    expect(old).toHaveLength(1)
    const killed = await admin!.query(
      `SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE datname = $1 AND application_name = $2 AND query LIKE 'LISTEN%'`,
      [DB_NAME, `${PREFIX}_a`],
    )
    expect(killed.rows).toEqual([{ ok: true }])
    const killedAt = Date.now()

    // 1) A change made while A is (probably) still disconnected: its notification is lost to A, so A
    //    must forget its cache when it reconnects.
    const watching = a!.request('waitFor', { slug: 'acme', status: 'active', timeoutMs: 5000 })
    const change = await b!.request('setStatus', { slug: 'acme', status: 'active' })
    const seen = await watching
    expect(seen.seen).toBe(true)
    expect(seen.tenant).toMatchObject({ status: 'active', statusReason: null })
    const afterKill = seen.seenAt - killedAt
    console.log(`[cross-process] change during A's listener outage seen ${seen.seenAt - change.committedAt} ms after B's commit, ${afterKill} ms after the kill`)
    expect(afterKill).toBeLessThanOrEqual(2000)

    // A has a new listener connection (another backend).
    let now: number[] = []
    const deadline = Date.now() + 5000
    while (Date.now() < deadline) {
      now = await listeners(a!)
      if (now.length === 1 && now[0] !== old[0]) break
      await new Promise((r) => setTimeout(r, 20))
    }
    expect(now).toHaveLength(1)
    expect(now[0]).not.toBe(old[0])
    console.log(`[cross-process] A's listener back ${Date.now() - killedAt} ms after the kill`)

    // 2) A change after the reconnect arrives by notification on the new connection.
    const cached = await a!.request('lookup', { slug: 'acme' })
    expect((await a!.request('lookup', { slug: 'acme' })).same).toBe(true)
    const watching2 = a!.request('waitFor', { slug: 'acme', status: 'suspended', reason: 'again', timeoutMs: 5000 })
    await new Promise((r) => setTimeout(r, 50))
    const change2 = await b!.request('setStatus', { slug: 'acme', status: 'suspended', reason: 'again' })
    const seen2 = await watching2
    expect(seen2.seen).toBe(true)
    expect(seen2.invalidations).toBeGreaterThan(cached.invalidations)
    const delay2 = seen2.seenAt - change2.committedAt
    console.log(`[cross-process] after reconnect: B→A invalidation seen ${delay2} ms after B's commit`)
    expect(seen2.seenAt - change2.startedAt).toBeLessThanOrEqual(1000)
  })
})
