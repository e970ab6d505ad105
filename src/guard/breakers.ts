import {
  BrokenCircuitError,
  CircuitState,
  ConsecutiveBreaker,
  IsolatedCircuitError,
  circuitBreaker,
  handleWhen,
  type CircuitBreakerPolicy,
} from 'cockatiel'
import { TenantryError, isTenantryError } from '../core/errors.ts'

/** Options of the circuit breakers. */
export interface BreakerOptions {
  /** Consecutive failures that open a breaker. Default 5. */
  threshold?: number
  /** How long an open breaker fails fast before one trial statement may pass. Default 5000 ms. */
  halfOpenAfterMs?: number
}

/** A breaker's state as Tenantry reports it. */
export type BreakerState = 'closed' | 'open' | 'half-open'

/** A breaker change, as the guard emits it (`breaker.opened` / `breaker.closed`). */
export interface BreakerEvent {
  scope: 'server' | 'database'
  server: string
  database?: string
}

// Failures that mean the server itself is gone (refused, reset, shut down), not one database.
const SERVER_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', '57P01', '57P02', '57P03'])

function causeOf(err: TenantryError): { code?: unknown; message?: unknown } {
  const c = err.cause
  return c && typeof c === 'object' ? (c as { code?: unknown; message?: unknown }) : {}
}

/** A failure that counts against a tenant database: it could not be reached at all. */
export function isDatabaseFailure(err: unknown): boolean {
  return isTenantryError(err, 'TENANT_UNAVAILABLE') && !(err.details && err.details.breaker)
}

/** A failure that counts against the whole server: the connection was refused, reset or shut down. */
export function isServerFailure(err: unknown): boolean {
  if (!isDatabaseFailure(err)) return false
  const cause = causeOf(err as TenantryError)
  if (typeof cause.code === 'string' && SERVER_CODES.has(cause.code)) return true
  return /Connection terminated|connection timeout|ECONNREFUSED/i.test(String(cause.message ?? ''))
}

interface Entry {
  policy: CircuitBreakerPolicy
  event: BreakerEvent
  /** True while the breaker may hold failures in its count (see {@link Breakers.run}). */
  counting: boolean
}

/**
 * Circuit breakers (cockatiel) per server and per tenant database. A database that cannot be
 * reached opens its own breaker; a server that refuses connections opens the server's. While a
 * breaker is open its statements fail at once with 503 `TENANT_UNAVAILABLE`; after
 * `halfOpenAfterMs` one trial statement passes (others keep failing fast) and its success closes
 * the breaker. Only unreachability counts: a slow query, a statement timeout or a constraint
 * violation is the tenant's doing, not the database's.
 *
 * @example
 * ```ts
 * const breakers = new Breakers({ threshold: 5, halfOpenAfterMs: 5000 }, { opened: console.warn, closed: console.info })
 * await breakers.run('eu-2', 'tenantry_t_…', () => driver.tenantQuery(…))
 * ```
 */
export class Breakers {
  private readonly threshold: number
  private readonly halfOpenAfterMs: number
  private readonly entries = new Map<string, Entry>()
  private readonly on: { opened(e: BreakerEvent): void; closed(e: BreakerEvent): void }

  constructor(opts: BreakerOptions, on: { opened(e: BreakerEvent): void; closed(e: BreakerEvent): void }) {
    this.threshold = opts.threshold ?? 5
    this.halfOpenAfterMs = opts.halfOpenAfterMs ?? 5000
    if (!(Number.isInteger(this.threshold) && this.threshold >= 1)) {
      throw new TenantryError('CONFIG_INVALID', `guard.breaker.threshold must be a whole number ≥ 1; got ${String(opts.threshold)}.`)
    }
    if (!(this.halfOpenAfterMs > 0)) {
      throw new TenantryError('CONFIG_INVALID', `guard.breaker.halfOpenAfterMs must be above 0; got ${String(opts.halfOpenAfterMs)}.`)
    }
    this.on = on
  }

  /**
   * Run `work` under the breaker of `server` and, when `database` is given, the breaker of that
   * database too. Statements of the server's main database (pooled and schema tenants) pass
   * `null`: its failures are the server's. `onError` sees every failure as it is thrown.
   */
  run<T>(server: string, database: string | null, work: () => Promise<T>, onError?: (err: unknown) => void): Promise<T> {
    const s = this.entry(server, undefined)
    const d = database === null ? undefined : this.entry(server, database)
    // cockatiel lets callers wait for a half-open trial; a tenant request must not wait on a
    // database that is probably still down, so everyone but the trial fails fast.
    let refused: TenantryError | undefined
    if (s.policy.state === CircuitState.HalfOpen || s.policy.state === CircuitState.Isolated) refused = this.unavailable(s.event)
    else if (d && (d.policy.state === CircuitState.HalfOpen || d.policy.state === CircuitState.Isolated)) refused = this.unavailable(d.event)
    if (refused) {
      onError?.(refused)
      return Promise.reject(refused)
    }
    // The common case, closed breakers with nothing counted: a success through cockatiel would
    // only reset a count that is already 0 (ConsecutiveBreaker), so the statement runs without it
    // (cockatiel costs five promises a statement, dear while AsyncLocalStorage is active). A failure
    // a breaker counts is then recorded through cockatiel, as if the statement had run under it.
    if (s.policy.state === CircuitState.Closed && !s.counting && (!d || (d.policy.state === CircuitState.Closed && !d.counting))) {
      return work().catch((err: unknown) => {
        if (!isServerFailure(err) && !(d && isDatabaseFailure(err))) {
          onError?.(err)
          throw err
        }
        return this.guarded(s, d, () => Promise.reject(err), onError, err)
      })
    }
    return this.guarded(s, d, work, onError)
  }

  /** `work` under the breakers through cockatiel. `failure`: the error `work` will throw, already seen. */
  private guarded<T>(s: Entry, d: Entry | undefined, work: () => Promise<T>, onError: ((err: unknown) => void) | undefined, failure?: unknown): Promise<T> {
    const run = d ? s.policy.execute(() => d.policy.execute(work)) : s.policy.execute(work)
    return run.then(
      (value) => {
        s.counting = false
        if (d) d.counting = false
        return value
      },
      (err: unknown) => {
        if (isServerFailure(err)) s.counting = true
        if (d && isDatabaseFailure(err)) d.counting = true
        const broken = err instanceof BrokenCircuitError || err instanceof IsolatedCircuitError
        // A failure seen on the fast path stays itself when a breaker opened meanwhile.
        const out = !broken ? err : failure !== undefined ? failure : this.unavailable(d?.policy.state === CircuitState.Open ? d.event : s.event, err)
        onError?.(out)
        throw out
      },
    )
  }

  /** The state of a server's breaker, or of one of its databases'. */
  state(server: string, database?: string): BreakerState {
    const e = this.entries.get(database === undefined ? server : `${server}/${database}`)
    if (!e) return 'closed'
    const st = e.policy.state
    return st === CircuitState.Closed ? 'closed' : st === CircuitState.HalfOpen ? 'half-open' : 'open'
  }

  /** Every breaker that is not closed. */
  openBreakers(): (BreakerEvent & { state: BreakerState })[] {
    const out: (BreakerEvent & { state: BreakerState })[] = []
    for (const e of this.entries.values()) {
      const state = this.state(e.event.server, e.event.database)
      if (state !== 'closed') out.push({ ...e.event, state })
    }
    return out
  }

  private entry(server: string, database: string | undefined): Entry {
    const key = database === undefined ? server : `${server}/${database}`
    let e = this.entries.get(key)
    if (!e) {
      const event: BreakerEvent = database === undefined ? { scope: 'server', server } : { scope: 'database', server, database }
      const policy = circuitBreaker(handleWhen(database === undefined ? isServerFailure : isDatabaseFailure), {
        halfOpenAfter: this.halfOpenAfterMs,
        breaker: new ConsecutiveBreaker(this.threshold),
      })
      policy.onBreak(() => this.on.opened(event))
      policy.onReset(() => this.on.closed(event))
      e = { policy, event, counting: false }
      this.entries.set(key, e)
    }
    return e
  }

  private unavailable(event: BreakerEvent, cause?: unknown): TenantryError {
    const what = event.scope === 'server' ? `server '${event.server}'` : `database '${event.database}' on server '${event.server}'`
    return new TenantryError(
      'TENANT_UNAVAILABLE',
      `The database of this tenant is unavailable: ${what} failed repeatedly and is paused (circuit breaker open). It is retried by itself within ${Math.ceil(this.halfOpenAfterMs / 1000)} s.`,
      { cause, retryAfter: Math.max(1, Math.ceil(this.halfOpenAfterMs / 1000)), details: { breaker: event.scope } },
    )
  }
}
