/**
 * Scale finding (issue 5), fixed: under a steady mixed load over a few tenant databases, the
 * per-server pool used to keep closing idle connections of one database to open new ones for
 * another, although the budget was larger than the statements in flight (every such statement
 * paid for a new backend: fork, authentication, catalog cache). Before the fix: 6.9 (two
 * databases) and 18.1 (three) new connections per 100 statements here; `npm run bench -- db-scale`
 * measured 3 and 6 on PostgreSQL 15 with statements/s falling 3–6×.
 *
 * The fix (`switchGraceMs` in src/data/server-pool.ts): a statement for a database whose own
 * connections are all busy waits briefly for one of them instead of evicting another database's
 * idle connection, and a released connection goes to a waiter of its own database before a
 * waiter of another database that is still within that grace.
 */
import { describe, expect, it } from 'vitest'
import { ServerPool } from '../src/data/server-pool.ts'

class FakeConn {
  constructor(readonly database: string) {}
  async close(): Promise<void> {}
}

async function mixedLoad(databases: number, opts: { budget: number; inFlight: number; statements: number }): Promise<{ connects: number; perHundred: number }> {
  let connects = 0
  const pool = new ServerPool<FakeConn>({
    server: 'fake',
    budget: opts.budget,
    acquireTimeoutMs: 5000,
    idleTimeoutMs: 60_000,
    maxUses: 1_000_000,
    connect: async (database) => {
      connects++
      // A new backend costs far more than a statement (here 3 ms against 1 ms).
      await new Promise((r) => setTimeout(r, 3))
      return new FakeConn(database)
    },
  })
  let issued = 0
  // A fixed pseudo-random sequence of databases and statement times (mulberry32), so a run replays.
  let seed = 0x5ca1e
  const random = () => {
    seed = (seed + 0x6d2b79f5) >>> 0
    let t = seed
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  const worker = async () => {
    while (issued < opts.statements) {
      issued++
      const slot = await pool.acquire(`db${Math.floor(random() * databases)}`)
      // Statements take 0–2 ms: releases and acquires interleave as they do on a real server.
      await new Promise((r) => setTimeout(r, Math.floor(random() * 3)))
      pool.release(slot)
    }
  }
  await Promise.all(Array.from({ length: opts.inFlight }, () => worker()))
  await pool.close()
  return { connects, perHundred: (connects / opts.statements) * 100 }
}

describe('ServerPool under a mixed load over a few databases', () => {
  it('one database: the connections are opened once and reused (the baseline)', async () => {
    const r = await mixedLoad(1, { budget: 20, inFlight: 16, statements: 3000 })
    expect(r.connects).toBeLessThanOrEqual(20)
  })

  it('two databases, budget 20 > 16 in flight: at most 1 new connection per 100 statements once warm', async () => {
    const r = await mixedLoad(2, { budget: 20, inFlight: 16, statements: 3000 })
    expect(r.perHundred).toBeLessThanOrEqual(1)
  })

  it('three databases, budget 20 > 16 in flight: at most 1 new connection per 100 statements once warm', async () => {
    const r = await mixedLoad(3, { budget: 20, inFlight: 16, statements: 3000 })
    expect(r.perHundred).toBeLessThanOrEqual(1)
  })
})
