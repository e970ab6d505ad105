import { TenantryError } from '../core/errors.ts'

/** A fixed-window rate: `points` per `duration` seconds (a request costs 1 point unless told). */
export interface RateSpec {
  points: number
  /** Window length in whole seconds. */
  duration: number
}

/**
 * What a tenant may use, resolved from defaults ← plan ← tenant. Every field has a value; `null`
 * means "no limit" where that is allowed.
 */
export interface Limits {
  /** Requests per window for the whole tenant, in every app process together (Redis). */
  rate: RateSpec | null
  /** Requests per window for each user of the tenant (inside the tenant's rate). */
  userRate: RateSpec | null
  /** Requests of the tenant in flight at once in this process. */
  concurrency: number | null
  /**
   * Requests that wait for an in-flight slot, and statements that wait for a connection to one
   * server; one more is `TENANT_BUSY` at once. null: as many requests as `concurrency`, and
   * statements bounded by time only.
   */
  queue: number | null
  /** Longest wait in either queue before `TENANT_BUSY`. */
  queueTimeoutMs: number
  /** Fraction of each server's connection budget the tenant may hold at once (0 < share ≤ 1). */
  connectionShare: number
  /** Fair-share weight at a saturated server pool (a weight-2 tenant is owed twice the connections). */
  weight: number
  /** `statement_timeout` of the tenant's statements (transaction-local); null keeps the server's. */
  statementTimeoutMs: number | null
}

/** Limits as plans, options and tenants give them: any subset. */
export type LimitsInput = Partial<Limits>

/**
 * Built-in defaults: no rate or concurrency limit until a plan sets one, the whole connection
 * budget with fair-share ordering, a 30 s statement budget.
 */
export const DEFAULT_LIMITS: Readonly<Limits> = Object.freeze({
  rate: null,
  userRate: null,
  concurrency: null,
  queue: null,
  queueTimeoutMs: 5000,
  connectionShare: 1,
  weight: 1,
  statementTimeoutMs: 30_000,
})

const KEYS = Object.keys(DEFAULT_LIMITS) as (keyof Limits)[]

function bad(where: string, key: string, want: string, got: unknown): TenantryError {
  let shown: string
  try {
    shown = JSON.stringify(got) ?? String(got)
  } catch {
    shown = String(got)
  }
  return new TenantryError('CONFIG_INVALID', `Limits of ${where}: '${key}' must be ${want}; got ${shown.slice(0, 60)}.`, {
    details: { where, key },
  })
}

const isPosInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v > 0

function rateSpec(where: string, key: string, v: unknown): RateSpec | null {
  if (v === null) return null
  const r = v as RateSpec
  if (!r || typeof r !== 'object' || !isPosInt(r.points) || !isPosInt(r.duration)) {
    throw bad(where, key, '{ points, duration } with positive whole numbers (duration in seconds), or null', v)
  }
  return { points: r.points, duration: r.duration }
}

/**
 * Check limits given by a plan, an option or a tenant and return the keys they set. Unknown keys
 * are an error too: a typo must not silently leave a tenant unlimited.
 *
 * @example
 * ```ts
 * parseLimits({ rate: { points: 100, duration: 60 }, concurrency: 4 }, "plan 'free'")
 * ```
 */
export function parseLimits(input: unknown, where: string): LimitsInput {
  if (input === undefined || input === null) return {}
  if (typeof input !== 'object' || Array.isArray(input)) throw bad(where, 'limits', 'an object', input)
  const out: LimitsInput = {}
  for (const [key, v] of Object.entries(input as Record<string, unknown>)) {
    if (v === undefined) continue
    switch (key as keyof Limits) {
      case 'rate':
      case 'userRate':
        out[key as 'rate'] = rateSpec(where, key, v)
        break
      case 'concurrency':
        if (v !== null && !isPosInt(v)) throw bad(where, key, 'a positive whole number or null', v)
        out.concurrency = v as number | null
        break
      case 'queue':
        if (v !== null && !(typeof v === 'number' && Number.isInteger(v) && v >= 0)) throw bad(where, key, 'a whole number ≥ 0 or null', v)
        out.queue = v as number | null
        break
      case 'queueTimeoutMs':
        if (!isPosInt(v)) throw bad(where, key, 'a positive whole number of milliseconds', v)
        out.queueTimeoutMs = v
        break
      case 'connectionShare':
        if (!(typeof v === 'number' && v > 0 && v <= 1)) throw bad(where, key, 'a number above 0 and at most 1', v)
        out.connectionShare = v
        break
      case 'weight':
        if (!(typeof v === 'number' && Number.isFinite(v) && v > 0)) throw bad(where, key, 'a positive number', v)
        out.weight = v
        break
      case 'statementTimeoutMs':
        if (v !== null && !isPosInt(v)) throw bad(where, key, 'a positive whole number of milliseconds or null', v)
        out.statementTimeoutMs = v as number | null
        break
      default:
        throw new TenantryError('CONFIG_INVALID', `Limits of ${where}: unknown key '${key.slice(0, 40)}'. Known keys: ${KEYS.join(', ')}.`, {
          details: { where, key },
        })
    }
  }
  return out
}

/** Layer `layers` over the defaults, later ones winning key by key. */
export function mergeLimits(...layers: (LimitsInput | undefined)[]): Limits {
  const out: Limits = { ...DEFAULT_LIMITS }
  for (const layer of layers) {
    if (!layer) continue
    for (const key of KEYS) if (layer[key] !== undefined) (out as unknown as Record<string, unknown>)[key] = layer[key]
  }
  return out
}
