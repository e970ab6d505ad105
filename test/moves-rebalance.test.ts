import { describe, expect, it } from 'vitest'
import { planMoves, runPlanned, type PlannedMove } from '../src/moves/index.ts'
import type { Advice, Server } from '../src/index.ts'
import { outcome } from './helpers/backends.ts'

// Rebalancing (issue 14): which moves the advice asks for, and how they run — at most `concurrency`
// at once, never two on one server, a failure reported per move while the others go on.

const server = (name: string, capacityWeight: number, region: string | null = null): Server => ({ name, url: `postgres://x/${name}`, region, capacityWeight, mainDatabase: 'app' })
const SERVERS = [server('main', 1, 'eu'), server('big', 4, 'eu'), server('huge', 8, 'us'), server('hot', 1, 'eu')]
const ID = (n: number) => `00000000-0000-4000-8000-00000000000${n}`

describe('planMoves', () => {
  it('promotions and demotions stay on their server; a hot server sheds its biggest tenant to the roomiest server of its region', () => {
    const advice: Advice[] = [
      { kind: 'promote', tenantId: ID(1), slug: 'acme', server: 'main', fromTier: 'pooled', toTier: 'database', reason: 'r1', figures: {} },
      { kind: 'rebalance', server: 'hot', reason: 'r2', figures: {}, movable: [{ tenantId: ID(1), slug: 'acme', tier: 'pooled', dbTimeMs: 9 }, { tenantId: ID(2), slug: 'busy', tier: 'schema', dbTimeMs: 5 }] },
      { kind: 'demote', tenantId: ID(3), slug: 'idle', server: 'big', fromTier: 'database', toTier: 'schema', reason: 'r3', figures: {} },
    ]
    const plan = planMoves(advice, SERVERS, (id) => (id === ID(2) ? 'eu' : null))
    expect(plan.map((p) => [p.slug, p.kind, p.fromServer, p.tier, p.server])).toEqual([
      ['acme', 'promote', 'main', 'database', 'main'],
      // acme is already moving: the next biggest; 'huge' is in another region.
      ['busy', 'rebalance', 'hot', 'schema', 'big'],
      ['idle', 'demote', 'big', 'schema', 'big'],
    ])
  })
})

describe('runPlanned', () => {
  const plan = (slug: string, from: string, to: string): PlannedMove => ({ slug, tenantId: slug, fromServer: from, server: to, tier: 'schema', kind: 'promote', reason: '' })

  it('never runs two moves on one server at once, honours concurrency and max-moves, and reports a failure per move', async () => {
    const live = new Set<string>()
    let peak = 0
    const log: string[] = []
    const results = await runPlanned(
      [plan('a', 's1', 's1'), plan('b', 's1', 's2'), plan('c', 's3', 's3'), plan('d', 's4', 's4'), plan('e', 's5', 's5')],
      { concurrency: 2, maxMoves: 4 },
      async (p) => {
        for (const s of [p.fromServer, p.server]) expect(live.has(`${s}`) && p.fromServer !== p.server ? s : null).toBeNull()
        for (const s of new Set([p.fromServer, p.server])) live.add(s)
        peak = Math.max(peak, [...live].length)
        log.push(`start ${p.slug}`)
        await new Promise((r) => setTimeout(r, 20))
        for (const s of new Set([p.fromServer, p.server])) live.delete(s)
        if (p.slug === 'c') throw Object.assign(new Error('target down'), { code: 'MOVE_FAILED' })
        return { operationId: `op-${p.slug}`, ms: 20 }
      },
    )
    expect(results.map((r) => [r.slug, r.status, r.operationId ?? r.error?.code ?? null])).toEqual([
      ['a', 'done', 'op-a'], ['b', 'done', 'op-b'], ['c', 'failed', 'MOVE_FAILED'], ['d', 'done', 'op-d'], ['e', 'skipped', null],
    ])
    // a and b share s1: b starts only after a; two at once at most.
    expect(log.indexOf('start b')).toBeGreaterThan(log.indexOf('start c'))
    expect(peak).toBeLessThanOrEqual(3)
  })

  it('refuses bad options with a code', async () => {
    expect(await outcome(runPlanned([], { concurrency: 0 }, async () => ({ operationId: '', ms: 0 })))).toBe('VALIDATION_FAILED')
    expect(await outcome(runPlanned([], { maxMoves: -1 }, async () => ({ operationId: '', ms: 0 })))).toBe('VALIDATION_FAILED')
  })
})
