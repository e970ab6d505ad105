import { spawn } from 'node:child_process'
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { hostname, tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createTenantry, type Tenant } from '../src/index.ts'
import { dropPostgresLeftovers, freshDatabase, postgresAvailable } from './helpers/backends.ts'

// Several workers share one fleet migration: two `tenantry migrate` processes started together
// join one operation, split its targets, and no target is migrated twice.

const REPO = fileURLToPath(new URL('..', import.meta.url))
const DB_NAME = 'tenantry_test_lifecycle_workers'
// Roles and databases are cluster-wide on a real server: everything this file makes carries this prefix.
const PREFIX = 'tl_workers'
const PG_UP = await postgresAvailable()
const TENANTS = 40

if (!PG_UP) console.warn('[lifecycle-workers] PostgreSQL is not reachable: the concurrent-worker tests are SKIPPED (they need a real server).')

interface Run { pid: number; code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }
const show = (r: Run) => `exit ${r.code}${r.signal ? ` (${r.signal})` : ''}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`

function envWith(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(process.env)) if (!/^(TENANTRY_|DATABASE_URL$|PG[A-Z]+$|DEBUG$)/.test(k)) env[k] = v
  return { ...env, ...extra }
}

/** Start `node bin/tenantry.js ...args`; its pid at once, its outcome later. */
function start(args: string[], env: Record<string, string>): { pid: number; done: Promise<Run> } {
  const child = spawn(process.execPath, ['bin/tenantry.js', ...args], { cwd: REPO, env: envWith(env), stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c))
  child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c))
  const timer = setTimeout(() => child.kill('SIGKILL'), 150_000)
  const done = new Promise<Run>((resolve, reject) => {
    child.on('error', reject)
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      resolve({ pid: child.pid!, code, signal, stdout, stderr })
    })
  })
  return { pid: child.pid!, done }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

async function cleanUpPostgres(): Promise<void> {
  await dropPostgresLeftovers(PREFIX, DB_NAME)
}

describe.skipIf(!PG_UP)('two migrate processes at once (PostgreSQL)', { timeout: 240_000 }, () => {
  let url: string
  let migrations: string
  let env: Record<string, string>
  let db: pg.Pool
  const tenants: Tenant[] = []

  beforeAll(async () => {
    await cleanUpPostgres()
    url = await freshDatabase(DB_NAME)
    migrations = mkdtempSync(join(tmpdir(), 'tenantry-workers-migrations-'))
    copyFileSync(join(REPO, 'demo/migrations/0001_projects_and_tasks.sql'), join(migrations, '0001_projects_and_tasks.sql'))
    env = { DATABASE_URL: url, TENANTRY_ROLE_PREFIX: PREFIX, TENANTRY_MIGRATIONS: migrations }
    db = new pg.Pool({ connectionString: url, max: 3 })
    const t = await createTenantry({ databaseUrl: url, rolePrefix: PREFIX, migrations })
    try {
      expect((await t.migrate()).state).toBe('done')
      const slugs = Array.from({ length: TENANTS }, (_, i) => `w-${String(i + 1).padStart(2, '0')}`)
      let next = 0
      await Promise.all(Array.from({ length: 4 }, async () => {
        while (next < slugs.length) tenants.push(await t.provision({ slug: slugs[next++], tier: 'schema' }))
      }))
    } finally {
      await t.close()
    }
    writeFileSync(join(migrations, '0002_slow_archive.sql'), 'SELECT pg_sleep(0.05);\nALTER TABLE projects ADD COLUMN archived boolean NOT NULL DEFAULT false;\n')
  })

  afterAll(async () => {
    await db?.end()
    if (migrations) rmSync(migrations, { recursive: true, force: true })
    if (PG_UP) await cleanUpPostgres()
  })

  it('split the targets of one operation: both exit 0, each did part, every target migrated exactly once', async () => {
    expect(tenants).toHaveLength(TENANTS)
    const targets = ['main/public', ...tenants.map((t) => `main/${t.placement.schema}`)].sort()
    const migrateOps = async () => (await db.query<{ id: string; state: string }>(`SELECT id, state FROM tenantry.operations WHERE kind = 'migrate' ORDER BY created_at`)).rows
    const before = await migrateOps()
    expect(before.map((o) => o.state)).toEqual(['done'])

    // Start both behind a barrier: hold the lock `migrate` takes to start or join its operation,
    // so neither can finish before the other has even connected (a process takes seconds to start).
    const barrier = new pg.Client({ connectionString: url })
    await barrier.connect()
    let a: ReturnType<typeof start>
    let b: ReturnType<typeof start>
    try {
      await barrier.query(`SELECT pg_advisory_lock(hashtext('tenantry.migrate.operation'))`)
      a = start(['migrate', '--concurrency', '2', '--json'], env)
      b = start(['migrate', '--concurrency', '2', '--json'], env)
      for (const deadline = Date.now() + 120_000; ;) {
        const waiting = await barrier.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM pg_locks l JOIN pg_database d ON d.oid = l.database
           WHERE d.datname = $1 AND l.locktype = 'advisory' AND NOT l.granted AND l.objsubid = 1
             AND l.classid = ((hashtext('tenantry.migrate.operation')::bigint >> 32) & 4294967295)::oid
             AND l.objid = (hashtext('tenantry.migrate.operation')::bigint & 4294967295)::oid`,
          [DB_NAME],
        )
        if (waiting.rows[0].n === 2) break
        if (Date.now() > deadline) throw new Error('the two migrate processes never both reached the operation lock')
        await sleep(50)
      }
    } finally {
      await barrier.end()
    }
    const [ra, rb] = await Promise.all([a.done, b.done])
    expect(ra.code, show(ra)).toBe(0)
    expect(rb.code, show(rb)).toBe(0)

    // Both joined one operation and report the same, complete result.
    type Result = { operationId: string; state: string; targets: { target: string; status: string; applied: string[] }[]; counts: Record<string, number> }
    const resA = JSON.parse(ra.stdout) as Result
    const resB = JSON.parse(rb.stdout) as Result
    expect(resA.operationId).toMatch(/^[0-9a-f-]{36}$/)
    expect(resB.operationId).toBe(resA.operationId)
    for (const r of [resA, resB]) {
      expect(r.state).toBe('done')
      expect(r.counts).toEqual({ total: TENANTS + 1, done: TENANTS + 1, failed: 0, skipped: 0, pending: 0 })
      expect(r.targets.map((x) => [x.target, x.status, x.applied])).toEqual(targets.map((x) => [x, 'done', ['0002_slow_archive']]))
    }
    const after = await migrateOps()
    expect(after).toEqual([...before, { id: resA.operationId, state: 'done' }])

    // Each process claimed part of the targets, and every target was claimed and done once.
    const rows = (await db.query<{ target: string; state: string; claimed_by: string; applied: string[] }>(
      `SELECT target, state, claimed_by, applied FROM tenantry.operation_targets WHERE operation_id = $1 ORDER BY target`, [resA.operationId],
    )).rows
    expect(rows.map((r) => [r.target, r.state, r.applied])).toEqual(targets.map((x) => [x, 'done', ['0002_slow_archive']]))
    const byWorker = new Map<string, number>()
    for (const r of rows) byWorker.set(r.claimed_by, (byWorker.get(r.claimed_by) ?? 0) + 1)
    expect(byWorker.size).toBe(2)
    const pids = [...byWorker.keys()].map((w) => {
      const [host, pid, rand] = w.split(':')
      expect(host).toBe(hostname())
      expect(rand).toMatch(/^[0-9a-f]{6}$/)
      return Number(pid)
    })
    expect(pids.sort()).toEqual([ra.pid, rb.pid].sort())
    for (const [worker, n] of byWorker) expect(n, worker).toBeGreaterThan(0)

    // One ledger row per target and version, and the column made once (a second ALTER would have failed).
    const ledger = (await db.query<{ target: string; versions: string[] }>(
      `SELECT target, array_agg(version ORDER BY version) AS versions FROM tenantry.migrations GROUP BY target ORDER BY target`,
    )).rows
    expect(ledger).toEqual(targets.map((x) => ({ target: x.slice('main/'.length), versions: ['0001', '0002'] })).sort((p, q) => p.target.localeCompare(q.target)))
    const columns = await db.query<{ schema: string }>(
      `SELECT table_schema AS schema FROM information_schema.columns WHERE table_name = 'projects' AND column_name = 'archived' ORDER BY 1`,
    )
    expect(columns.rows.map((r) => r.schema)).toEqual(targets.map((x) => x.slice('main/'.length)).sort())

    // A third run finds nothing to do and starts no operation.
    const t = await createTenantry({ databaseUrl: url, rolePrefix: PREFIX, migrations, resumeOperations: false })
    try {
      const third = await t.migrate()
      expect(third.state).toBe('up-to-date')
      expect(third.operationId).toBeNull()
    } finally {
      await t.close()
    }
    expect(await migrateOps()).toEqual(after)
  })
})
