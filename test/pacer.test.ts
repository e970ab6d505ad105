import { execFileSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import pg from 'pg'
import { describe, expect, it, vi } from 'vitest'
import { PgServer } from '../src/data/pg-server.ts'
import { LoadPacer } from '../src/lifecycle/pacer.ts'
import { PG_ADMIN_URL, postgresAvailable } from './helpers/backends.ts'
import { scriptedCpuTimes } from './helpers/gauges.ts'

// The pacer of fleet migrations (issue 18) on its own, with scripted gauges: the CPU times or
// round trips a server would answer with; then the real gauges of a PostgreSQL server.
// (bench/migrate.ts measures the pacing against real load.)

const FAST = { probeIntervalMs: 1, windowMs: 5, recalibrateSeconds: 3600 }

async function until(check: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 2))
  }
}

/** A probe answering `ms()` and counting its calls. */
function scripted(ms: () => number): { probe: () => Promise<number>; calls: number } {
  const p = {
    calls: 0,
    probe: async () => {
      p.calls++
      return ms()
    },
  }
  return p
}

describe('LoadPacer', () => {
  it('starts at one stream and climbs to the concurrency while the server answers as fast as its baseline', async () => {
    const p = scripted(() => 0.25)
    const pacer = new LoadPacer(() => ({ probe: p.probe }), 8, FAST)
    await pacer.start('main')
    expect(pacer.report()).toMatchObject({ gauge: 'rtt', level: 1, baseline: 0.25, slowdowns: 0 })
    await until(() => pacer.report().level === 8, 'level 8')
    // Eight slots at once; the ninth waits for a release.
    for (let i = 0; i < 8; i++) await pacer.acquire()
    let ninth = false
    const waiting = pacer.acquire().then(() => { ninth = true })
    await new Promise((r) => setTimeout(r, 20))
    expect(ninth).toBe(false)
    pacer.release(5)
    await waiting
    expect(ninth).toBe(true)
    expect(pacer.report().slowdowns).toBe(0)
    await pacer.stop()
  })

  it('halves its share while the probe is above 1.25 × baseline + 0.2 ms, down to 0.05 of a stream, and a fraction of a stream rests after each target', async () => {
    let ms = 0.25
    const p = scripted(() => ms)
    const pacer = new LoadPacer(() => ({ probe: p.probe }), 8, FAST)
    await pacer.start('main')
    // 0.5 ms is just under the threshold (1.25 × 0.25 + 0.2 = 0.5125): no slowdown.
    ms = 0.5
    await until(() => pacer.report().level >= 3, 'level 3')
    expect(pacer.report().slowdowns).toBe(0)
    ms = 5
    await until(() => pacer.report().level === 0.05, 'level 0.05')
    const slowed = pacer.report().slowdowns
    // From at least 3 down to 0.05 by halves: 3 → 1.5 → 0.75 → … → 0.05 (at least six halvings).
    expect(slowed).toBeGreaterThanOrEqual(6)

    await pacer.acquire()
    pacer.release(10)
    // The slot rests 10 × (1/0.05 − 1) = 190 ms: not given at once, given after.
    let next = false
    const waiting = pacer.acquire().then(() => { next = true })
    await Promise.resolve()
    expect(next).toBe(false)
    await waiting
    expect(next).toBe(true)
    pacer.release(0)

    // The server recovers: the share grows back.
    ms = 0.25
    await until(() => pacer.report().level === 8, 'level 8 again')
    const r = pacer.report()
    expect(r.slowdowns).toBe(slowed)
    expect(r.meanLevel).toBeGreaterThan(0)
    expect(r.meanLevel).toBeLessThan(8)
    await pacer.stop()
  })

  it('measures a new baseline with nothing of the run running when the run moves on to another server', async () => {
    let running = 0
    const seenRunning: number[] = []
    const main = scripted(() => 0.25)
    const other = scripted(() => {
      seenRunning.push(running)
      return 3
    })
    const pacer = new LoadPacer((server) => ({ probe: server === 'main' ? main.probe : other.probe }), 4, FAST)
    await pacer.start('main')
    await pacer.acquire()
    running++
    pacer.follow('eu')
    // The target that moved on still runs; the next one waits for the new baseline.
    let second = false
    const waiting = pacer.acquire().then(() => { second = true })
    await new Promise((r) => setTimeout(r, 20))
    expect(second).toBe(false)
    running--
    pacer.release(1)
    await waiting
    running++
    // Every probe of the baseline was taken with no target running; the baseline is eu's own.
    // How many probes fit in the measurement window depends on the machine's speed: at least one.
    const calibration = [...seenRunning]
    expect(calibration.length).toBeGreaterThanOrEqual(1)
    expect(calibration).toEqual(calibration.map(() => 0))
    expect(pacer.report().baseline).toBe(3)
    running--
    pacer.release(1)
    await pacer.stop()
  })

  it('paces by the CPU utilisation where the server tells it: at most half of what the users leave idle', async () => {
    let u = 0.6
    const cpuTimes = scriptedCpuTimes(() => u)
    const probe = scripted(() => 50)
    const pacer = new LoadPacer(() => ({ cpuTimes, probe: probe.probe }), 8, FAST)
    await pacer.start('main')
    // The round trip (50 ms, far above anything) is not used: the utilisation is.
    expect(pacer.report()).toMatchObject({ gauge: 'cpu', level: 1, slowdowns: 0 })
    expect(pacer.report().baseline).toBeCloseTo(0.6, 10)
    expect(probe.calls).toBe(0)
    // Below 0.6 + 0.375 × 0.4 = 0.75: faster.
    u = 0.7
    await until(() => pacer.report().level === 8, 'level 8')
    // Between 0.75 and 0.8 (= 0.6 + 0.5 × 0.4): the level holds.
    u = 0.78
    const held = pacer.report()
    await until(() => pacer.report().last === 0.78, 'a measurement at 0.78')
    await new Promise((r) => setTimeout(r, 30))
    expect(pacer.report()).toMatchObject({ level: 8, slowdowns: held.slowdowns })
    // Above 0.8: halves, down to 0.05 of a stream.
    u = 0.95
    await until(() => pacer.report().level === 0.05, 'level 0.05')
    expect(probe.calls).toBe(0)
    await pacer.stop()
  })

  it('runs free on a server no one else uses (freeBelow), and starts low once users are there (startLevel)', async () => {
    let u = 0.05
    const cpuTimes = scriptedCpuTimes(() => u)
    const pacer = new LoadPacer(() => ({ cpuTimes }), 4, { ...FAST, freeBelow: 0.2, startLevel: 0.25, recalibrateSeconds: 0.05 })
    await pacer.start('main')
    // Baseline 5 %: the whole concurrency at once, and no decision holds it back while it runs.
    expect(pacer.report()).toMatchObject({ gauge: 'cpu', level: 4, free: true, slowdowns: 0 })
    await Promise.all([pacer.acquire(), pacer.acquire(), pacer.acquire(), pacer.acquire()])
    u = 1
    await new Promise((r) => setTimeout(r, 20))
    expect(pacer.report()).toMatchObject({ level: 4, free: true, slowdowns: 0 })
    for (let i = 0; i < 4; i++) pacer.release(1)
    // The next baseline (taken with the run held) finds the server busy: a quarter of a stream,
    // then halved down to 0.05 while the utilisation stays above its bound.
    await until(() => pacer.report().free === false, 'a busy baseline')
    await until(() => pacer.report().level === 0.05, 'level 0.05')
    expect(pacer.report().slowdowns).toBeGreaterThanOrEqual(3)
    await pacer.stop()
  })

  it('keeps to busyMaxLevel on a server in use (a paced backup: one stream), and takes the whole concurrency on a free one', async () => {
    let u = 0.5
    const cpuTimes = scriptedCpuTimes(() => u)
    const pacer = new LoadPacer(() => ({ cpuTimes }), 4, { ...FAST, freeBelow: 0.2, startLevel: 0.1, busyMaxLevel: 1, recalibrateSeconds: 0.05 })
    await pacer.start('main')
    expect(pacer.report()).toMatchObject({ gauge: 'cpu', level: 0.1, free: false })
    // Always below its bound (0.5 + 0.375 × 0.5): it grows, ×1.5 from a tenth, and stops at one stream.
    await until(() => pacer.report().level === 1, 'level 1')
    const levels = new Set<number>()
    const until2 = Date.now() + 60
    while (Date.now() < until2) {
      levels.add(pacer.report().level)
      await new Promise((r) => setTimeout(r, 1))
    }
    expect([...levels]).toEqual([1])
    // Free (the next baseline below 20 %): the whole concurrency.
    u = 0.05
    await until(() => pacer.report().level === 4, 'level 4')
    expect(pacer.report().free).toBe(true)
    await pacer.stop()
  })

  it('does not pace a server without a gauge (PGlite): the whole concurrency at once', async () => {
    const pacer = new LoadPacer(() => ({}), 4, FAST)
    await pacer.start('main')
    expect(pacer.report().level).toBe(4)
    await Promise.all([pacer.acquire(), pacer.acquire(), pacer.acquire(), pacer.acquire()])
    await pacer.stop()
  })

  it('a failing probe gives no signal: the level stays where it is, and stop() lets every waiter go', async () => {
    const p = scripted(() => {
      throw new Error('connection reset')
    })
    const pacer = new LoadPacer(() => ({ probe: p.probe }), 2, FAST)
    await pacer.start('main')
    await until(() => p.calls > 20, 'probes while failing')
    expect(pacer.report()).toMatchObject({ level: 1, slowdowns: 0 })
    await pacer.acquire()
    let waited = false
    const waiting = pacer.acquire().then(() => { waited = true })
    await pacer.stop()
    await waiting
    expect(waited).toBe(true)
  })

  it('a waiter whose rest ends while it is being queued is still woken (no waiter left with no timer)', async () => {
    const pacer = new LoadPacer(() => ({ cpuTimes: scriptedCpuTimes(() => 1) }), 2, { windowMs: 5, startLevel: 0.05, recalibrateSeconds: 3600 })
    await pacer.start('main')
    expect(pacer.report()).toMatchObject({ gauge: 'cpu', level: 0.05 })
    await pacer.acquire()
    // A clock that moves 70 ms per reading: the release rests the slot until t + 190 (10 ms × 19);
    // acquire() reads t + 70 (rest on: queued), its wake-up t + 140 (still on) and t + 210 (over).
    let t = Date.now()
    const clock = vi.spyOn(Date, 'now').mockImplementation(() => (t += 70) - 70)
    let admitted = false
    try {
      pacer.release(10)
      const waiting = pacer.acquire().then(() => { admitted = true })
      clock.mockRestore()
      // In real time the rest ends 190 ms from now: the old code set no timer and left the
      // waiter queued for good; within a second it has the slot.
      await Promise.race([waiting, new Promise((r) => setTimeout(r, 1000))])
    } finally {
      clock.mockRestore()
    }
    expect(admitted).toBe(true)
    pacer.release(0)
    await pacer.stop()
  })
})

/** The server offers the prioritize extension (Debian's postgresql-15-prioritize). */
const HAS_PRIORITIZE = (await postgresAvailable()) && await (async () => {
  const c = new pg.Client({ connectionString: PG_ADMIN_URL })
  await c.connect()
  try {
    return (await c.query("SELECT 1 FROM pg_available_extensions WHERE name = 'prioritize'")).rowCount === 1
  } finally {
    await c.end()
  }
})()

describe.skipIf(!(await postgresAvailable()))('the gauges of a PostgreSQL server', () => {
  const ROLE = 'tp_pacer_plain'

  async function withRole<T>(fn: (url: string) => Promise<T>): Promise<T> {
    const admin = new pg.Client({ connectionString: PG_ADMIN_URL })
    await admin.connect()
    try {
      await admin.query(`DROP ROLE IF EXISTS ${ROLE}`)
      await admin.query(`CREATE ROLE ${ROLE} LOGIN NOSUPERUSER`)
      const url = new URL(PG_ADMIN_URL)
      url.username = ROLE
      return await fn(url.toString())
    } finally {
      await admin.query(`DROP ROLE IF EXISTS ${ROLE}`).catch(() => undefined)
      await admin.end()
    }
  }

  const server = (url: string) =>
    new PgServer({ name: 'main', url, appUser: ROLE, budget: 1, acquireTimeoutMs: 1000, idleTimeoutMs: 1000, maxUses: 10, maxSchemas: 10, transactionPooler: false })

  it('a superuser owner reads the host CPU times from /proc/stat; busy never exceeds total and both only grow', async () => {
    const s = server(PG_ADMIN_URL)
    try {
      const a = await s.cpuTimes()
      const b = await s.cpuTimes()
      expect(a).not.toBeNull()
      expect(a!.busy).toBeGreaterThanOrEqual(0)
      expect(a!.busy).toBeLessThanOrEqual(a!.total)
      expect(b!.total).toBeGreaterThanOrEqual(a!.total)
      expect(b!.busy).toBeGreaterThanOrEqual(a!.busy)
      expect(await s.probe()).toBeGreaterThan(0)
    } finally {
      await s.close()
    }
  })

  it('an owner who may not read server files gets null (and is not asked again); the round trip still answers', async () => {
    await withRole(async (url) => {
      const s = server(url)
      try {
        expect(await s.cpuTimes()).toBeNull()
        expect(await s.cpuTimes()).toBeNull()
        expect(await s.probe()).toBeGreaterThan(0)
        // Nor the kernel's autogroup setting; and no prioritize extension in its database.
        expect(await s.backendPriority()).toEqual({ available: false, autogroup: null })
      } finally {
        await s.close()
      }
    })
  })

  // A paced backup's backends (issue 13): lowered through the prioritize extension where the
  // server's database has it (Debian's postgresql-15-prioritize; .ci/run installs it).
  const PRIO_DB = 'tenantry_test_prioritize'
  const PLAIN_DB = 'tenantry_test_prioritize_none'

  it.skipIf(!HAS_PRIORITIZE)('a copy asked to run at nice 19 runs there where the extension is, its connection never serves again; elsewhere nothing is lowered', async () => {
    const admin = new pg.Client({ connectionString: PG_ADMIN_URL })
    await admin.connect()
    const urlOf = (db: string) => Object.assign(new URL(PG_ADMIN_URL), { pathname: `/${db}` }).toString()
    const niceOf = 'SELECT pg_backend_pid() AS pid, get_backend_priority(pg_backend_pid()) AS nice'
    try {
      for (const db of [PRIO_DB, PLAIN_DB]) {
        await admin.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`)
        await admin.query(`CREATE DATABASE ${db}`)
      }
      for (const db of [PRIO_DB, PLAIN_DB]) {
        // get_backend_priority() in both, to read the nice value; set_backend_priority() stays in one.
        const c = new pg.Client({ connectionString: urlOf(db) })
        await c.connect()
        try {
          await c.query('CREATE EXTENSION prioritize')
          if (db === PLAIN_DB) {
            await c.query('ALTER EXTENSION prioritize DROP FUNCTION set_backend_priority(integer, integer)')
            await c.query('DROP FUNCTION set_backend_priority(integer, integer)')
          }
        } finally {
          await c.end()
        }
      }
      // The server is this machine: its kernel's setting is the one read here.
      const autogroup = existsSync('/proc/sys/kernel/sched_autogroup_enabled') ? readFileSync('/proc/sys/kernel/sched_autogroup_enabled', 'utf8').trim() === '1' : null
      const s = server(urlOf(PRIO_DB))
      try {
        expect(await s.backendPriority()).toEqual({ available: true, autogroup })
        const niced = await s.copyTransaction(PRIO_DB, 'snapshot', async (tx) => (await tx.query<{ pid: number; nice: number }>(niceOf)).rows[0], { nice: 19 })
        expect(niced.nice).toBe(19)
        const plain = await s.copyTransaction(PRIO_DB, 'snapshot', async (tx) => (await tx.query<{ pid: number; nice: number }>(niceOf)).rows[0])
        expect(plain.nice).toBe(0)
        expect(plain.pid).not.toBe(niced.pid)
        const gone = await admin.query('SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = $1', [niced.pid])
        expect(gone.rows).toEqual([{ n: 0 }])
      } finally {
        await s.close()
      }
      const none = server(urlOf(PLAIN_DB))
      try {
        expect(await none.backendPriority()).toEqual({ available: false, autogroup })
        const asked = await none.copyTransaction(PLAIN_DB, 'snapshot', async (tx) => (await tx.query<{ nice: number }>(niceOf)).rows[0].nice, { nice: 19 })
        expect(asked).toBe(0)
      } finally {
        await none.close()
      }
    } finally {
      for (const db of [PRIO_DB, PLAIN_DB]) await admin.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`).catch(() => undefined)
      await admin.end()
    }
  })
})

describe.skipIf(process.platform !== 'linux')('lowerProcessPriority', () => {
  it('lowers every thread of the process, the pool\'s already running included, and threads started after; a value already lower stays; SCHED_IDLE on asking', () => {
    const r = JSON.parse(execFileSync(process.execPath, ['--import', 'tsx', 'test/fixtures/lower-priority.ts', '10', '5', 'idle:19'], { encoding: 'utf8' })) as {
      before: number[]; policiesBefore: number[]; steps: { lowered: { threads: number; idle: boolean }; after: number[]; policies: number[] }[]; fresh: number[]
    }
    // Every thread, whatever their number (V8 may start one between two readings).
    const values = (xs: number[]) => [...new Set(xs)]
    expect(r.before.length).toBeGreaterThan(4) // the main thread, V8's and libuv's pool
    expect(values(r.before)).toEqual([0])
    expect(values(r.policiesBefore)).toEqual([0])
    expect(r.steps.map((s) => ({ idle: s.lowered.idle, all: s.lowered.threads >= r.before.length, nice: values(s.after), policy: values(s.policies) }))).toEqual([
      { idle: false, all: true, nice: [10], policy: [0] },
      // Asked for less than the threads already have: nothing raised.
      { idle: false, all: true, nice: [10], policy: [0] },
      // And SCHED_IDLE (5) on every thread.
      { idle: true, all: true, nice: [19], policy: [5] },
    ])
    expect(r.fresh.length).toBeGreaterThan(0)
    expect(r.fresh).toEqual(Array(r.fresh.length).fill(19))
  })
})
