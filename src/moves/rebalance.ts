import { TenantryError } from '../core/errors.ts'
import type { Server, Tier } from '../core/types.ts'
import type { Advice } from '../observe/types.ts'

/** One move that a piece of advice asks for. */
export interface PlannedMove {
  slug: string
  tenantId: string
  fromServer: string
  tier: Tier
  server: string
  kind: Advice['kind']
  reason: string
}

/** What became of one planned move (a result per move, never one exception for all). */
export interface AppliedMove extends PlannedMove {
  status: 'done' | 'failed' | 'skipped'
  operationId?: string
  error?: { code: string; message: string }
  ms?: number
}

export interface ApplyAdviceOptions {
  /** At most this many moves (the advice is ordered most urgent first). Default: all. */
  maxMoves?: number
  /** Moves running at once, never two on one server (as source or target). Default 1. */
  concurrency?: number
  startedBy?: string
}

/**
 * The moves a list of advice asks for: promotions and demotions on the tenant's server; for a
 * server out of balance, its biggest movable tenant to the server of the same region (or any,
 * when neither has one) with the most capacity weight that is not itself out of balance. One move
 * per tenant.
 */
export function planMoves(advice: Advice[], servers: Server[], regionOf: (tenantId: string) => string | null): PlannedMove[] {
  const out: PlannedMove[] = []
  const seen = new Set<string>()
  const hot = new Set(advice.filter((a) => a.kind === 'rebalance').map((a) => a.server))
  for (const a of advice) {
    if ((a.kind === 'promote' || a.kind === 'demote') && a.tenantId && a.slug && a.toTier && !seen.has(a.tenantId)) {
      seen.add(a.tenantId)
      out.push({ slug: a.slug, tenantId: a.tenantId, fromServer: a.server, tier: a.toTier, server: a.server, kind: a.kind, reason: a.reason })
    }
    if (a.kind === 'rebalance') {
      const m = a.movable?.find((x) => !seen.has(x.tenantId))
      if (!m) continue
      const region = regionOf(m.tenantId)
      const to = servers
        .filter((s) => s.name !== a.server && !hot.has(s.name) && (region === null || s.region === null || s.region === region))
        .sort((x, y) => y.capacityWeight - x.capacityWeight || x.name.localeCompare(y.name))[0]
      if (!to) continue
      seen.add(m.tenantId)
      out.push({ slug: m.slug, tenantId: m.tenantId, fromServer: a.server, tier: m.tier, server: to.name, kind: 'rebalance', reason: a.reason })
    }
  }
  return out
}

/**
 * Run planned moves at most `concurrency` at a time and never two touching the same server at
 * once; a failed move is reported and the others go on.
 */
export async function runPlanned(plan: PlannedMove[], opts: ApplyAdviceOptions, move: (p: PlannedMove) => Promise<{ operationId: string; ms: number }>): Promise<AppliedMove[]> {
  const concurrency = opts.concurrency ?? 1
  const max = opts.maxMoves ?? plan.length
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 64) throw new TenantryError('VALIDATION_FAILED', `concurrency must be a whole number from 1 to 64; got ${String(opts.concurrency)}.`)
  if (!Number.isInteger(max) || max < 0) throw new TenantryError('VALIDATION_FAILED', `maxMoves must be a whole number ≥ 0; got ${String(opts.maxMoves)}.`)
  // Moves past maxMoves stay 'skipped'.
  const results: AppliedMove[] = plan.map((p) => ({ ...p, status: 'skipped' as const }))
  const queue = plan.slice(0, max).map((p, i) => ({ p, i }))
  const busy = new Set<string>()
  const running = new Set<Promise<void>>()
  while (queue.length > 0 || running.size > 0) {
    const k = queue.findIndex(({ p }) => !busy.has(p.fromServer) && !busy.has(p.server))
    if (k >= 0 && running.size < concurrency) {
      const [{ p, i }] = queue.splice(k, 1)
      busy.add(p.fromServer).add(p.server)
      const run: Promise<void> = move(p).then(
        (r) => { results[i] = { ...p, status: 'done', operationId: r.operationId, ms: r.ms } },
        (err: unknown) => {
          const e = err as { code?: string; message?: string }
          results[i] = { ...p, status: 'failed', error: { code: e?.code ?? 'INTERNAL', message: e?.message ?? String(err) } }
        },
      ).finally(() => {
        busy.delete(p.fromServer)
        busy.delete(p.server)
        running.delete(run)
      })
      running.add(run)
      continue
    }
    await Promise.race(running)
  }
  return results
}
