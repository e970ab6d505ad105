import type { Redis } from 'ioredis'
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible'
import type { RateSpec } from './limits.ts'

/** The two rate-limit layers: the whole tenant, and one user inside it. */
export type RateLayer = 'tenant' | 'user'

/** What one consumption found. */
export interface RateOutcome {
  allowed: boolean
  limit: number
  remaining: number
  /** Seconds until the window resets (at least 1 while points are consumed). */
  resetSeconds: number
}

export interface RateLimitsOptions {
  /** Shared store; without it, counts are per process (the embedded default). */
  redis?: Redis
  keyPrefix: string
}

/**
 * Fixed-window rate limits from rate-limiter-flexible. With Redis, every app process shares the
 * counts; while Redis is unreachable an in-memory limiter (`insuranceLimiter`) counts instead,
 * and Redis takes over again as soon as the client is ready (`rejectIfRedisNotReady`: no request
 * waits for a dead Redis). One limiter per layer and rate, made on first use.
 *
 * @example
 * ```ts
 * const limits = new RateLimits({ keyPrefix: 'tenantry' })
 * const r = await limits.consume('tenant', tenant.id, { points: 100, duration: 60 }, 1)
 * ```
 */
export class RateLimits {
  private readonly opts: RateLimitsOptions
  private readonly limiters = new Map<string, RateLimiterAbstract>()

  constructor(opts: RateLimitsOptions) {
    this.opts = opts
  }

  get store(): 'redis' | 'memory' {
    return this.opts.redis ? 'redis' : 'memory'
  }

  async consume(layer: RateLayer, key: string, spec: RateSpec, cost: number): Promise<RateOutcome> {
    const limiter = this.limiter(layer, spec)
    try {
      return outcome(true, spec, await limiter.consume(key, cost))
    } catch (err) {
      if (err instanceof RateLimiterRes) return outcome(false, spec, err)
      // Neither Redis nor the in-memory insurance answered: let the request through rather than
      // fail it for a limiter fault (a limit is protection, not a dependency).
      return { allowed: true, limit: spec.points, remaining: spec.points, resetSeconds: spec.duration }
    }
  }

  /** Give points back (a request the user layer refused must not drain the tenant's budget). */
  async refund(layer: RateLayer, key: string, spec: RateSpec, cost: number): Promise<void> {
    await this.limiter(layer, spec).reward(key, cost).catch(() => undefined)
  }

  private limiter(layer: RateLayer, spec: RateSpec): RateLimiterAbstract {
    const id = `${layer}:${spec.points}:${spec.duration}`
    let limiter = this.limiters.get(id)
    if (!limiter) {
      // The window length is part of the key: a plan change to another window starts fresh counts.
      const keyPrefix = `${this.opts.keyPrefix}:rl:${layer}:${spec.duration}`
      const memory = new RateLimiterMemory({ keyPrefix, points: spec.points, duration: spec.duration })
      limiter = this.opts.redis
        ? new RateLimiterRedis({
            storeClient: this.opts.redis,
            keyPrefix,
            points: spec.points,
            duration: spec.duration,
            rejectIfRedisNotReady: true,
            insuranceLimiter: memory,
            // Once a key is over its limit, refuse it from memory until its window ends: a tenant
            // hammering at 10× its quota costs Redis one command per window, not one per request.
            // (points + 1: a refund only ever follows an allowed consumption, never a blocked one.)
            inMemoryBlockOnConsumed: spec.points + 1,
          })
        : memory
      this.limiters.set(id, limiter)
    }
    return limiter
  }
}

function outcome(allowed: boolean, spec: RateSpec, res: RateLimiterRes): RateOutcome {
  return {
    allowed,
    limit: spec.points,
    remaining: Math.max(0, res.remainingPoints),
    resetSeconds: Math.max(1, Math.ceil(res.msBeforeNext / 1000)),
  }
}
