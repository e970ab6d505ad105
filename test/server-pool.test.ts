import { afterEach, describe, expect, it, vi } from 'vitest'
import { isTenantryError, TenantryError } from '../src/core/errors.ts'
import { ServerPool, type PoolSlot, type ServerPoolOptions } from '../src/data/server-pool.ts'
import { prng as rng } from './helpers/prng.ts'

/** A stand-in for a connection: the pool only ever calls `close()` on it. */
class FakeConn {
  closed = 0
  constructor(
    readonly id: number,
    readonly database: string,
    private readonly onClose: (c: FakeConn) => void,
  ) {}
  async close(): Promise<void> {
    this.closed++
    this.onClose(this)
  }
}

interface Harness {
  pool: ServerPool<FakeConn>
  /** Every connect call, in order, by database. */
  connects: string[]
  /** Every connection closed, in order. */
  closes: FakeConn[]
  /** Connections open right now, counted from connect/close calls (a connect counts from its start). */
  live(): number
  /** The most connections ever open at once. */
  maxLive(): number
}

const pools: ServerPool<FakeConn>[] = []

function harness(
  opts: Partial<ServerPoolOptions<FakeConn>> = {},
  behaviour: { delayMs?: () => number; fail?: (database: string) => boolean } = {},
): Harness {
  const connects: string[] = []
  const closes: FakeConn[] = []
  let live = 0
  let maxLive = 0
  let nextId = 1
  const pool = new ServerPool<FakeConn>({
    server: 'fake',
    budget: 3,
    acquireTimeoutMs: 1000,
    idleTimeoutMs: 60_000,
    maxUses: 1_000_000,
    connect: async (database) => {
      connects.push(database)
      live++
      maxLive = Math.max(maxLive, live)
      const delay = behaviour.delayMs?.() ?? 0
      if (delay > 0) await new Promise((r) => setTimeout(r, delay))
      else await Promise.resolve()
      if (behaviour.fail?.(database)) {
        live--
        throw new Error(`connect to ${database} refused`)
      }
      return new FakeConn(nextId++, database, (c) => {
        live--
        closes.push(c)
      })
    },
    ...opts,
  })
  pools.push(pool)
  return { pool, connects, closes, live: () => live, maxLive: () => maxLive }
}

/** Let pending promise callbacks (connects, hand-overs) run. */
async function flush(): Promise<void> {
  for (let i = 0; i < 10; i++) await Promise.resolve()
}

/** A promise's outcome without awaiting it forever. */
function track<T>(p: Promise<T>): { settled: () => boolean; value: () => T | undefined; error: () => unknown } {
  let settled = false
  let value: T | undefined
  let error: unknown
  p.then(
    (v) => { settled = true; value = v },
    (e) => { settled = true; error = e },
  )
  return { settled: () => settled, value: () => value, error: () => error }
}

afterEach(async () => {
  vi.useRealTimers()
  for (const p of pools.splice(0)) await p.close()
})

describe('ServerPool', () => {
  it('rejects a budget below 1', () => {
    expect(() => harness({ budget: 0 })).toThrowError(expect.objectContaining({ code: 'CONFIG_INVALID' }))
  })

  it.each([1, 2, 3])('never exceeds the budget under 200 random acquire/release across 50 databases (seed %i)', async (seed) => {
    const random = rng(seed)
    const budget = 5
    const h = harness({ budget, acquireTimeoutMs: 10_000 }, { delayMs: () => (random() < 0.5 ? 0 : Math.floor(random() * 3)) })
    const held: PoolSlot<FakeConn>[] = []
    const pending = new Set<Promise<unknown>>()
    const overBudget: number[] = []
    let acquired = 0
    let acquires = 0
    for (let i = 0; i < 200; i++) {
      if (held.length > 0 && random() < 0.45) {
        const slot = held.splice(Math.floor(random() * held.length), 1)[0]
        // Some releases discard (as after an error).
        h.pool.release(slot, random() < 0.1)
      } else {
        acquires++
        const database = `db_${Math.floor(random() * 50)}`
        const p = h.pool.acquire(database).then((slot) => {
          expect(slot.database).toBe(database)
          expect(slot.conn.database).toBe(database)
          expect(slot.conn.closed).toBe(0)
          acquired++
          held.push(slot)
        })
        pending.add(p)
        p.finally(() => pending.delete(p))
      }
      if (h.live() > budget) overBudget.push(h.live())
      if (h.pool.stats().open > budget) overBudget.push(h.pool.stats().open)
      if (random() < 0.5) await new Promise((r) => setTimeout(r, random() < 0.5 ? 0 : 1))
      else await flush()
    }
    // Drain: give everything back until every acquire has been served.
    while (pending.size > 0 || held.length > 0) {
      for (const slot of held.splice(0)) h.pool.release(slot)
      await new Promise((r) => setTimeout(r, 2))
      if (h.live() > budget) overBudget.push(h.live())
    }
    expect(overBudget).toEqual([])
    expect(h.maxLive()).toBeLessThanOrEqual(budget)
    expect(h.pool.stats().peakOpen).toBeLessThanOrEqual(budget)
    expect(acquired).toBe(acquires)
    // The pool's own count agrees with the connect/close calls, and nothing is left busy or waiting.
    const stats = h.pool.stats()
    expect(stats.open).toBe(h.live())
    expect(stats.busy).toBe(0)
    expect(stats.waiting).toBe(0)
    expect(stats.idle).toBe(stats.open)
    // The run was busy enough to matter: it hit the budget and had to evict.
    expect(h.maxLive()).toBe(budget)
    expect(h.closes.length).toBeGreaterThan(0)
    // No connection is closed twice.
    expect(new Set(h.closes).size).toBe(h.closes.length)
  })

  it('reuses an idle connection for the same database', async () => {
    const h = harness()
    const s1 = await h.pool.acquire('a')
    h.pool.release(s1)
    const s2 = await h.pool.acquire('a')
    expect(s2.conn).toBe(s1.conn)
    expect(h.connects).toEqual(['a'])
    h.pool.release(s2)
    // A different database gets its own connection while there is room.
    const s3 = await h.pool.acquire('b')
    expect(s3.conn).not.toBe(s1.conn)
    expect(h.connects).toEqual(['a', 'b'])
    expect(h.closes).toEqual([])
    expect(h.pool.stats()).toMatchObject({ open: 2, busy: 1, idle: 1 })
  })

  it('evicts the least recently released idle connection of another database when the budget is full', async () => {
    const h = harness({ budget: 3 })
    const a = await h.pool.acquire('a')
    const b = await h.pool.acquire('b')
    const c = await h.pool.acquire('c')
    // Released in the order b, a, c: b is the least recently used.
    h.pool.release(b)
    h.pool.release(a)
    h.pool.release(c)
    const d = await h.pool.acquire('d')
    expect(h.closes).toEqual([b.conn])
    expect(h.connects).toEqual(['a', 'b', 'c', 'd'])
    expect(d.conn.database).toBe('d')
    expect(h.live()).toBe(3)
    // a and c are still there and reused without a connect; their own database's idle is taken, not evicted.
    const a2 = await h.pool.acquire('a')
    expect(a2.conn).toBe(a.conn)
    expect(h.connects).toHaveLength(4)
    expect(h.closes).toEqual([b.conn])
    // Next eviction takes c (the only idle one left), for e.
    const e = await h.pool.acquire('e')
    expect(h.closes).toEqual([b.conn, c.conn])
    expect(e.conn.database).toBe('e')
    expect(h.live()).toBe(3)
  })

  it('recency is by release: a reused connection released again moves to the back', async () => {
    const h = harness({ budget: 2 })
    const a = await h.pool.acquire('a')
    const b = await h.pool.acquire('b')
    h.pool.release(a)
    h.pool.release(b)
    // Use a again: now b is the least recently released.
    h.pool.release(await h.pool.acquire('a'))
    await h.pool.acquire('c')
    expect(h.closes).toEqual([b.conn])
    expect(a.conn.closed).toBe(0)
  })

  it('serves waiters first in, first out when switching databases has no grace (switchGraceMs 0)', async () => {
    const h = harness({ budget: 1, acquireTimeoutMs: 10_000, switchGraceMs: 0 })
    const first = await h.pool.acquire('a')
    const order: string[] = []
    const w1 = h.pool.acquire('b').then((s) => { order.push('w1:b'); return s })
    const w2 = h.pool.acquire('a').then((s) => { order.push('w2:a'); return s })
    const w3 = h.pool.acquire('c').then((s) => { order.push('w3:c'); return s })
    const w4 = h.pool.acquire('a').then((s) => { order.push('w4:a'); return s })
    await flush()
    expect(h.pool.stats().waiting).toBe(4)
    expect(order).toEqual([])

    h.pool.release(first)
    const s1 = await w1
    expect(order).toEqual(['w1:b'])
    expect(s1.conn.database).toBe('b')
    // The connection to a made room for b: the budget of 1 holds.
    expect(h.closes).toEqual([first.conn])
    expect(h.live()).toBe(1)

    h.pool.release(s1)
    const s2 = await w2
    await flush()
    expect(order).toEqual(['w1:b', 'w2:a'])
    h.pool.release(s2)
    const s3 = await w3
    await flush()
    expect(order).toEqual(['w1:b', 'w2:a', 'w3:c'])
    h.pool.release(s3)
    const s4 = await w4
    expect(order).toEqual(['w1:b', 'w2:a', 'w3:c', 'w4:a'])
    expect(h.connects).toEqual(['a', 'b', 'a', 'c', 'a'])
    expect(h.maxLive()).toBe(1)
    h.pool.release(s4)
  })

  it('serves waiters FIFO also when room is made by a recycle or a discard', async () => {
    // maxUses 1: every release recycles, so every hand-over goes through the freed budget.
    const h = harness({ budget: 1, acquireTimeoutMs: 10_000, maxUses: 1 })
    const first = await h.pool.acquire('a')
    const order: string[] = []
    const waiters = ['b', 'c', 'd'].map((db) => h.pool.acquire(db).then((s) => { order.push(db); return s }))
    await flush()
    h.pool.release(first)
    const b = await waiters[0]
    await flush()
    expect(order).toEqual(['b'])
    h.pool.release(b)
    const c = await waiters[1]
    await flush()
    expect(order).toEqual(['b', 'c'])
    h.pool.release(c, true)
    expect((await waiters[2]).conn.database).toBe('d')
    expect(order).toEqual(['b', 'c', 'd'])
    expect(h.closes.map((x) => x.database)).toEqual(['a', 'b', 'c'])
    expect(h.maxLive()).toBe(1)
  })

  it('a waiter for the same database gets the released connection itself', async () => {
    const h = harness({ budget: 1, acquireTimeoutMs: 10_000 })
    const s = await h.pool.acquire('a')
    const w = h.pool.acquire('a')
    h.pool.release(s)
    expect((await w).conn).toBe(s.conn)
    expect(h.connects).toEqual(['a'])
    expect(h.closes).toEqual([])
  })

  it('a statement for a database with busy connections waits for one of them instead of closing another database’s idle connection', async () => {
    const h = harness({ budget: 2, acquireTimeoutMs: 10_000, switchGraceMs: 10_000 })
    const a1 = await h.pool.acquire('a')
    h.pool.release(await h.pool.acquire('b'))
    // Budget full (a busy, b idle): the second 'a' waits for a1 rather than evict b.
    const w = h.pool.acquire('a')
    await flush()
    expect(h.pool.stats()).toMatchObject({ open: 2, busy: 1, idle: 1, waiting: 1 })
    h.pool.release(a1)
    expect((await w).conn).toBe(a1.conn)
    expect(h.connects).toEqual(['a', 'b'])
    expect(h.closes).toEqual([])
  })

  it('a waiter of another database is preferred only during its grace; after it, it closes an idle connection of another database', async () => {
    const h = harness({ budget: 2, acquireTimeoutMs: 10_000, switchGraceMs: 30 })
    const a1 = await h.pool.acquire('a')
    const b1 = await h.pool.acquire('b')
    h.pool.release(b1)
    const started = Date.now()
    const w = await h.pool.acquire('a')
    // a1 was never released: after the grace, b's idle connection made room for a new one.
    expect(Date.now() - started).toBeGreaterThanOrEqual(25)
    expect(w.conn).not.toBe(a1.conn)
    expect(h.connects).toEqual(['a', 'b', 'a'])
    expect(h.closes).toEqual([b1.conn])
    h.pool.release(a1)
    h.pool.release(w)
  })

  it('a released connection goes to a waiter of its own database before an older waiter of another database still in its grace', async () => {
    const h = harness({ budget: 2, acquireTimeoutMs: 10_000, switchGraceMs: 10_000 })
    const a1 = await h.pool.acquire('a')
    const b1 = await h.pool.acquire('b')
    const order: string[] = []
    const wb = h.pool.acquire('b').then((x) => { order.push('b'); return x })
    const wa = h.pool.acquire('a').then((x) => { order.push('a'); return x })
    await flush()
    // wb is older, but b1 will be free soon: a1 goes to wa, and no connection is closed or opened.
    h.pool.release(a1)
    expect((await wa).conn).toBe(a1.conn)
    expect(order).toEqual(['a'])
    h.pool.release(b1)
    expect((await wb).conn).toBe(b1.conn)
    expect(order).toEqual(['a', 'b'])
    expect(h.connects).toEqual(['a', 'b'])
    expect(h.closes).toEqual([])
  })

  it('a new acquire does not jump the queue of waiters', async () => {
    const h = harness({ budget: 1, acquireTimeoutMs: 10_000 })
    const s = await h.pool.acquire('a')
    const order: string[] = []
    const w1 = h.pool.acquire('b').then((x) => { order.push('w1'); return x })
    h.pool.release(s)
    // Arrives after the release but before w1's connect finished: it must wait behind w1.
    const late = h.pool.acquire('b').then((x) => { order.push('late'); return x })
    const s1 = await w1
    await flush()
    expect(order).toEqual(['w1'])
    h.pool.release(s1)
    await late
    expect(order).toEqual(['w1', 'late'])
    expect(h.maxLive()).toBe(1)
  })

  it('times out an acquire with POOL_TIMEOUT (503) after acquireTimeoutMs', async () => {
    vi.useFakeTimers()
    const h = harness({ budget: 1, acquireTimeoutMs: 500 })
    const held = await h.pool.acquire('a')
    const waiting = track(h.pool.acquire('b'))
    await vi.advanceTimersByTimeAsync(499)
    expect(waiting.settled()).toBe(false)
    expect(h.pool.stats().waiting).toBe(1)
    await vi.advanceTimersByTimeAsync(1)
    expect(waiting.settled()).toBe(true)
    const err = waiting.error()
    expect(err).toBeInstanceOf(TenantryError)
    expect(isTenantryError(err, 'POOL_TIMEOUT')).toBe(true)
    expect((err as TenantryError).status).toBe(503)
    expect((err as TenantryError).retryAfter).toBe(1)
    expect((err as TenantryError).message).toContain("server 'fake'")
    expect(h.pool.stats().waiting).toBe(0)
    // The timed-out waiter is gone: the next release makes the connection idle, not handed to it.
    h.pool.release(held)
    expect(h.pool.stats()).toMatchObject({ open: 1, busy: 0, idle: 1, waiting: 0 })
    expect(h.connects).toEqual(['a'])
  })

  it('a later waiter with a shorter wait times out first; the earlier one keeps its place and gets the connection', async () => {
    vi.useFakeTimers()
    const h = harness({ budget: 1, acquireTimeoutMs: 1000 })
    const held = await h.pool.acquire('a')
    const long = track(h.pool.acquire('a'))
    const short = track(h.pool.acquire('a', { tenant: 't-short', weight: 1, connectionShare: 1, maxWaiting: 5, waitTimeoutMs: 100 }))
    await vi.advanceTimersByTimeAsync(99)
    expect([long.settled(), short.settled()]).toEqual([false, false])
    await vi.advanceTimersByTimeAsync(1)
    expect([long.settled(), short.settled()]).toEqual([false, true])
    expect(isTenantryError(short.error(), 'POOL_TIMEOUT')).toBe(true)
    expect((short.error() as TenantryError).message).toContain('within 100 ms')
    expect(h.pool.stats().waiting).toBe(1)
    await vi.advanceTimersByTimeAsync(500)
    h.pool.release(held)
    await vi.advanceTimersByTimeAsync(0)
    expect(long.settled()).toBe(true)
    expect(long.error()).toBeUndefined()
    expect(h.pool.stats()).toMatchObject({ open: 1, busy: 1, waiting: 0 })
    // Nothing left to wake for: the idle sweeper (unref'd) is the only timer left.
    expect(vi.getTimerCount()).toBe(1)
  })

  it('release(slot, true) discards the connection', async () => {
    const h = harness()
    const s = await h.pool.acquire('a')
    h.pool.release(s, true)
    expect(h.closes).toEqual([s.conn])
    expect(s.conn.closed).toBe(1)
    expect(h.pool.stats()).toMatchObject({ open: 0, busy: 0, idle: 0 })
    const s2 = await h.pool.acquire('a')
    expect(s2.conn).not.toBe(s.conn)
    expect(h.connects).toEqual(['a', 'a'])
  })

  it('a discard frees the budget for a waiter', async () => {
    const h = harness({ budget: 1, acquireTimeoutMs: 10_000 })
    const s = await h.pool.acquire('a')
    const w = h.pool.acquire('a')
    h.pool.release(s, true)
    const s2 = await w
    expect(s2.conn).not.toBe(s.conn)
    expect(h.closes).toEqual([s.conn])
    expect(h.maxLive()).toBe(1)
  })

  it('recycles a connection after maxUses', async () => {
    const h = harness({ maxUses: 3 })
    const conns: FakeConn[] = []
    for (let i = 0; i < 7; i++) {
      const s = await h.pool.acquire('a')
      conns.push(s.conn)
      h.pool.release(s)
    }
    const ids = conns.map((c) => c.id)
    expect(ids).toEqual([1, 1, 1, 2, 2, 2, 3])
    expect(h.connects).toEqual(['a', 'a', 'a'])
    expect(h.closes.map((c) => c.id)).toEqual([1, 2])
    expect(h.pool.stats()).toMatchObject({ open: 1, idle: 1 })
  })

  it('a failing connect rejects and frees its budget slot', async () => {
    const h = harness({ budget: 1, acquireTimeoutMs: 10_000 }, { fail: (db) => db === 'bad' })
    await expect(h.pool.acquire('bad')).rejects.toThrow('connect to bad refused')
    expect(h.pool.stats()).toMatchObject({ open: 0, busy: 0 })
    // The slot is free again: no wait, no timeout.
    const s = await h.pool.acquire('good')
    expect(s.conn.database).toBe('good')

    // A waiter whose connect fails is rejected, and the next waiter is served.
    const bad = track(h.pool.acquire('bad'))
    const next = h.pool.acquire('c')
    await flush()
    expect(h.pool.stats().waiting).toBe(2)
    h.pool.release(s)
    const c = await next
    expect(bad.settled()).toBe(true)
    expect((bad.error() as Error).message).toBe('connect to bad refused')
    expect(c.conn.database).toBe('c')
    expect(h.pool.stats()).toMatchObject({ open: 1, busy: 1, waiting: 0 })
    expect(h.live()).toBe(1)
  })

  it('close() rejects waiters, closes idle connections and refuses new acquires', async () => {
    const h = harness({ budget: 2, acquireTimeoutMs: 10_000 })
    const busy = await h.pool.acquire('a')
    const idle = await h.pool.acquire('b')
    h.pool.release(idle)
    // Budget full with one busy + one idle: a third database evicts the idle one…
    const c = await h.pool.acquire('c')
    expect(h.closes).toEqual([idle.conn])
    // …and a fourth must wait.
    const w1 = track(h.pool.acquire('d'))
    const w2 = track(h.pool.acquire('a'))
    await flush()
    expect(h.pool.stats().waiting).toBe(2)
    h.pool.release(c)
    // c went to d's waiter (closed to make room for d).
    await flush()
    expect(w1.settled()).toBe(true)
    expect(w1.value()!.conn.database).toBe('d')

    await h.pool.close()
    expect(w2.settled()).toBe(true)
    expect(isTenantryError(w2.error())).toBe(true)
    expect((w2.error() as TenantryError).message).toContain('closed')
    expect(h.pool.stats().waiting).toBe(0)
    await expect(h.pool.acquire('a')).rejects.toThrow(/closed/)
    // Busy connections are closed as they come back.
    h.pool.release(busy)
    h.pool.release(w1.value()!)
    expect(h.live()).toBe(0)
    expect(h.pool.stats()).toMatchObject({ open: 0, busy: 0, idle: 0 })
  })

  it('closes connections idle longer than idleTimeoutMs', async () => {
    vi.useFakeTimers()
    const h = harness({ idleTimeoutMs: 1000 })
    const a = await h.pool.acquire('a')
    h.pool.release(a)
    await vi.advanceTimersByTimeAsync(500)
    const b = await h.pool.acquire('b')
    h.pool.release(b)
    await vi.advanceTimersByTimeAsync(600)
    // a has been idle 1100 ms, b 600 ms.
    expect(h.closes).toEqual([a.conn])
    await vi.advanceTimersByTimeAsync(1000)
    expect(h.closes).toEqual([a.conn, b.conn])
    expect(h.pool.stats()).toMatchObject({ open: 0, idle: 0, databases: 0 })
  })

  it('closeDatabase closes only that database’s idle connections', async () => {
    const h = harness()
    const a1 = await h.pool.acquire('a')
    const a2 = await h.pool.acquire('a')
    const b = await h.pool.acquire('b')
    h.pool.release(a1)
    h.pool.release(a2)
    h.pool.release(b)
    expect(await h.pool.closeDatabase('a')).toBe(2)
    expect(new Set(h.closes)).toEqual(new Set([a1.conn, a2.conn]))
    expect(h.pool.stats()).toMatchObject({ open: 1, idle: 1 })
    expect((await h.pool.acquire('b')).conn).toBe(b.conn)
  })
})
