import { TenantryError } from '../core/errors.ts'
import type { Tenant, Tier } from '../core/types.ts'
import type { Advice, AdviseOptions, TopRow } from './types.ts'

/** {@link AdviseOptions} with every default filled in and checked. */
export type ResolvedAdviseOptions = Required<AdviseOptions>

export const ADVISE_DEFAULTS: ResolvedAdviseOptions = {
  periodMs: 24 * 3_600_000,
  pooledShare: 0.2,
  dedicatedShare: 0.5,
  imbalanceFactor: 1.5,
  idleRequests: 0,
  minDbTimeMs: 60_000,
  minStorageBytes: 100 * 1024 * 1024,
}

/**
 * The thresholds of `advise()` with defaults, or `VALIDATION_FAILED` naming the one that is out of
 * range: shares in (0, 1] with `pooledShare ≤ dedicatedShare`, `imbalanceFactor ≥ 1`,
 * `idleRequests` a whole number ≥ 0, `periodMs` > 0.
 *
 * @example
 * ```ts
 * resolveAdviseOptions({ pooledShare: 0.3 }).dedicatedShare // 0.5
 * ```
 */
export function resolveAdviseOptions(options: AdviseOptions = {}): ResolvedAdviseOptions {
  const o = { ...ADVISE_DEFAULTS, ...definedOnly(options) }
  const bad = (name: string, rule: string, value: unknown) =>
    new TenantryError('VALIDATION_FAILED', `Advice option ${name} must be ${rule}; got ${String(value)}.`, { details: { option: name } })
  if (!isNum(o.periodMs) || o.periodMs <= 0) throw bad('periodMs', 'a number of milliseconds above 0', o.periodMs)
  for (const name of ['pooledShare', 'dedicatedShare'] as const) {
    if (!isNum(o[name]) || o[name] <= 0 || o[name] > 1) throw bad(name, 'a share above 0 and at most 1', o[name])
  }
  if (o.pooledShare > o.dedicatedShare) throw bad('pooledShare', `at most dedicatedShare (${o.dedicatedShare})`, o.pooledShare)
  if (!isNum(o.imbalanceFactor) || o.imbalanceFactor < 1) throw bad('imbalanceFactor', 'a factor of at least 1', o.imbalanceFactor)
  if (!Number.isInteger(o.idleRequests) || o.idleRequests < 0) throw bad('idleRequests', 'a whole number of at least 0', o.idleRequests)
  if (!isNum(o.minDbTimeMs) || o.minDbTimeMs < 0) throw bad('minDbTimeMs', 'a number of milliseconds of at least 0', o.minDbTimeMs)
  if (!isNum(o.minStorageBytes) || o.minStorageBytes < 0) throw bad('minStorageBytes', 'a number of bytes of at least 0', o.minStorageBytes)
  return o
}

/** What the advice is made from: every tenant's usage in the period, the servers and the catalog's tenants. */
export interface AdviseInput {
  /** One row per tenant with usage in the period (no limit), as `top()` makes them. */
  rows: readonly TopRow[]
  servers: readonly { name: string; capacityWeight: number }[]
  tenants: readonly Pick<Tenant, 'id' | 'slug' | 'tier' | 'status' | 'createdAt' | 'placement'>[]
  /** Start of the period (a tenant created after it did not exist the whole period). */
  periodStart: Date
  options: ResolvedAdviseOptions
}

interface ServerUse {
  dbTimeMs: number
  storageBytes: number
  rows: TopRow[]
}

const TIER_DOWN: Partial<Record<Tier, Tier>> = { database: 'schema', schema: 'pooled' }

/**
 * Placement advice from a period's usage (pure: no I/O). Three rules, each only a recommendation:
 *
 * - **promote** an active pooled tenant that took more than `pooledShare` of its server's
 *   database time or storage to the schema tier, and a pooled or schema tenant above
 *   `dedicatedShare` to the database tier. A tenant alone on its server in that measure has no
 *   neighbour to be isolated from and gets no advice.
 * - **rebalance** a server whose share of the fleet's database time exceeds `imbalanceFactor`
 *   times its share of the fleet's capacity weight, naming its biggest movable tenants.
 * - **demote** an active schema or database tenant that served at most `idleRequests` requests in
 *   the period and existed the whole period: one tier down.
 *
 * Ordered promote (largest share first), rebalance (most out of balance first), demote (by slug).
 *
 * @example
 * ```ts
 * adviseFrom({ rows, servers, tenants, periodStart, options: resolveAdviseOptions() })
 * // [{ kind: 'promote', slug: 'acme', fromTier: 'pooled', toTier: 'schema', reason: 'acme (pooled) took 62% …', … }]
 * ```
 */
export function adviseFrom(input: AdviseInput): Advice[] {
  const { rows, servers, tenants, periodStart, options: o } = input
  const period = formatPeriod(o.periodMs)
  const byId = new Map(tenants.map((t) => [t.id, t]))
  const use = new Map<string, ServerUse>()
  for (const r of rows) {
    if (r.server === null) continue
    const s = use.get(r.server) ?? { dbTimeMs: 0, storageBytes: 0, rows: [] }
    s.dbTimeMs += r.dbTimeMs
    s.storageBytes += r.storageBytes ?? 0
    s.rows.push(r)
    use.set(r.server, s)
  }

  const promotes: { share: number; advice: Advice }[] = []
  for (const r of rows) {
    const t = byId.get(r.tenantId)
    if (!t || t.status !== 'active' || t.tier === 'database' || r.server === null) continue
    const s = use.get(r.server)!
    // Shares of a server that did little are noise: below the minimums there is nothing to isolate from.
    const dbShare = s.dbTimeMs > r.dbTimeMs && s.dbTimeMs >= o.minDbTimeMs ? r.dbTimeMs / s.dbTimeMs : null
    const storageShare = r.storageBytes !== null && s.storageBytes > r.storageBytes && s.storageBytes >= o.minStorageBytes ? r.storageBytes / s.storageBytes : null
    const byStorage = storageShare !== null && (dbShare === null || storageShare > dbShare)
    const share = byStorage ? storageShare! : dbShare
    if (share === null) continue
    const toTier: Tier | null = share > o.dedicatedShare ? 'database' : t.tier === 'pooled' && share > o.pooledShare ? 'schema' : null
    if (!toTier) continue
    const what = byStorage
      ? `held ${pct(share)} of server ${r.server}'s storage (${formatBytes(r.storageBytes!)} of ${formatBytes(s.storageBytes)}, latest samples in the last ${period})`
      : `took ${pct(share)} of server ${r.server}'s database time in the last ${period} (${formatMs(r.dbTimeMs)} of ${formatMs(s.dbTimeMs)})`
    const figures: Record<string, number> = {
      dbTimeMs: r.dbTimeMs,
      serverDbTimeMs: s.dbTimeMs,
      dbTimeShare: dbShare ?? (s.dbTimeMs > 0 ? r.dbTimeMs / s.dbTimeMs : 0),
      threshold: toTier === 'database' ? o.dedicatedShare : o.pooledShare,
    }
    if (r.storageBytes !== null) {
      figures.storageBytes = r.storageBytes
      figures.serverStorageBytes = s.storageBytes
      figures.storageShare = storageShare ?? (s.storageBytes > 0 ? r.storageBytes / s.storageBytes : 0)
    }
    promotes.push({
      share,
      advice: {
        kind: 'promote', tenantId: t.id, slug: t.slug, server: r.server, fromTier: t.tier, toTier,
        reason: `${t.slug} (${t.tier}) ${what}; its own ${toTier === 'database' ? 'database' : 'schema'} would isolate it.`,
        figures,
      },
    })
  }

  const rebalances: { ratio: number; advice: Advice }[] = []
  const fleetDb = [...use.values()].reduce((a, s) => a + s.dbTimeMs, 0)
  const totalWeight = servers.reduce((a, s) => a + s.capacityWeight, 0)
  if (fleetDb > 0 && fleetDb >= o.minDbTimeMs && totalWeight > 0 && servers.length > 1) {
    for (const server of servers) {
      const s = use.get(server.name)
      if (!s || s.dbTimeMs === 0) continue
      const dbShare = s.dbTimeMs / fleetDb
      const capacityShare = server.capacityWeight / totalWeight
      if (dbShare <= o.imbalanceFactor * capacityShare) continue
      const movable = s.rows
        .filter((r) => byId.get(r.tenantId)?.status === 'active' && r.dbTimeMs > 0)
        .sort((a, b) => b.dbTimeMs - a.dbTimeMs || cmp(a.slug, b.slug))
        .slice(0, 3)
        .map((r) => ({ tenantId: r.tenantId, slug: byId.get(r.tenantId)!.slug, tier: byId.get(r.tenantId)!.tier, dbTimeMs: r.dbTimeMs }))
      const names = movable.map((m) => `${m.slug} (${formatMs(m.dbTimeMs)})`).join(', ')
      rebalances.push({
        ratio: capacityShare > 0 ? dbShare / capacityShare : Number.POSITIVE_INFINITY,
        advice: {
          kind: 'rebalance',
          server: server.name,
          reason:
            `Server ${server.name} took ${pct(dbShare)} of the fleet's database time in the last ${period} (${formatMs(s.dbTimeMs)} of ${formatMs(fleetDb)}) ` +
            `but has ${pct(capacityShare)} of its capacity weight (${server.capacityWeight} of ${totalWeight}); ` +
            (movable.length ? `move some of its biggest tenants to another server: ${names}.` : 'move some of its tenants to another server.'),
          figures: {
            dbTimeMs: s.dbTimeMs, fleetDbTimeMs: fleetDb, dbTimeShare: dbShare,
            capacityWeight: server.capacityWeight, totalCapacityWeight: totalWeight, capacityShare, imbalanceFactor: o.imbalanceFactor,
          },
          movable,
        },
      })
    }
  }

  const requests = new Map(rows.map((r) => [r.tenantId, r.requests]))
  const demotes: Advice[] = []
  for (const t of tenants) {
    const toTier = TIER_DOWN[t.tier]
    if (!toTier || t.status !== 'active' || t.createdAt.getTime() > periodStart.getTime()) continue
    const n = requests.get(t.id) ?? 0
    if (n > o.idleRequests) continue
    demotes.push({
      kind: 'demote', tenantId: t.id, slug: t.slug, server: t.placement.server, fromTier: t.tier, toTier,
      reason: `${t.slug} (${t.tier}) served ${n.toLocaleString('en-US')} request${n === 1 ? '' : 's'} in the last ${period}; ` +
        (t.tier === 'database' ? 'the schema tier would free its own database.' : 'the pooled tier would free its own schema.'),
      figures: { requests: n, idleRequests: o.idleRequests, periodMs: o.periodMs },
    })
  }

  return [
    ...promotes.sort((a, b) => b.share - a.share || cmp(a.advice.slug, b.advice.slug)).map((p) => p.advice),
    ...rebalances.sort((a, b) => b.ratio - a.ratio || cmp(a.advice.server, b.advice.server)).map((r) => r.advice),
    ...demotes.sort((a, b) => cmp(a.slug, b.slug)),
  ]
}

/** `0.62` → `62%`. */
export function pct(share: number): string {
  return `${Math.round(share * 100)}%`
}

/** `41200` → `41,200 ms`. */
export function formatMs(ms: number): string {
  return `${Math.round(ms).toLocaleString('en-US')} ms`
}

/** Bytes in binary units, as `pg_size_pretty` counts them: `512 B`, `8.0 kB`, `41.2 MB`. */
export function formatBytes(bytes: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB', 'PB']
  let v = bytes
  let i = 0
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024
    i++
  }
  return i === 0 ? `${Math.round(v)} B` : `${v.toFixed(1)} ${units[i]}`
}

/** A period as people say it: `15 min`, `1 h`, `24 h`, `7 days`. */
export function formatPeriod(ms: number): string {
  const day = 86_400_000
  if (ms >= 2 * day && ms % day === 0) return `${ms / day} days`
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000} h`
  if (ms % 60_000 === 0) return `${ms / 60_000} min`
  return `${Math.round(ms / 1000)} s`
}

function cmp(a: string | null | undefined, b: string | null | undefined): number {
  return (a ?? '\uffff').localeCompare(b ?? '\uffff')
}

function isNum(v: unknown): v is number {
  return typeof v === 'number' && Number.isFinite(v)
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>
}
