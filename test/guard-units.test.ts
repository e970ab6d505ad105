/**
 * The guard's pure parts: limit parsing and layering, bulkheads, error codes and the
 * classification of failures for the circuit breakers. No servers needed.
 */
import { afterEach, describe, expect, it, vi } from 'vitest'
import { ErrorCodes, TenantryError, fromPostgresError, isTenantryError, statusOf } from '../src/core/errors.ts'
import type { Tenant } from '../src/core/types.ts'
import { ENTER_TENANT_SQL, ENTER_TENANT_WITH_TIMEOUT_SQL, enterStatement } from '../src/data/driver.ts'
import { Breakers, isDatabaseFailure, isServerFailure } from '../src/guard/breakers.ts'
import { Bulkheads, type BulkheadRefusal } from '../src/guard/bulkheads.ts'
import { Guard, GuardRejection } from '../src/guard/guard.ts'
import { DEFAULT_LIMITS, mergeLimits, parseLimits } from '../src/guard/limits.ts'
import { userFromApiKey, userFromHeader, userFromJwt } from '../src/guard/users.ts'
import { errorReply } from '../src/adapters/http-errors.ts'

afterEach(() => {
  vi.useRealTimers()
})

function tenant(slug: string, plan = 'default', config: Record<string, unknown> = {}): Tenant {
  return Object.freeze({
    id: `00000000-0000-4000-8000-${slug.padStart(12, '0').slice(0, 12)}`,
    slug,
    name: slug,
    status: 'active',
    statusReason: null,
    tier: 'pooled',
    plan,
    region: null,
    placement: { server: 'main', database: 'db' },
    config,
    createdAt: new Date(0),
    updatedAt: new Date(0),
  }) as Tenant
}

describe('error codes', () => {
  it('has RATE_LIMITED 429, TENANT_BUSY 503 and STATEMENT_TIMEOUT 504', () => {
    expect([ErrorCodes.RATE_LIMITED, ErrorCodes.TENANT_BUSY, ErrorCodes.STATEMENT_TIMEOUT]).toEqual(['RATE_LIMITED', 'TENANT_BUSY', 'STATEMENT_TIMEOUT'])
    expect([statusOf('RATE_LIMITED'), statusOf('TENANT_BUSY'), statusOf('STATEMENT_TIMEOUT')]).toEqual([429, 503, 504])
  })

  it('maps PostgreSQL 57014 from statement_timeout to STATEMENT_TIMEOUT, not a cancel by request', () => {
    const mapped = fromPostgresError({ code: '57014', message: 'canceling statement due to statement timeout' })
    expect(isTenantryError(mapped, 'STATEMENT_TIMEOUT')).toBe(true)
    expect((mapped as TenantryError).status).toBe(504)
    const cancel = { code: '57014', message: 'canceling statement due to user request' }
    expect(fromPostgresError(cancel)).toBe(cancel)
  })

  it('a guard rejection carries Retry-After and RateLimit-* into the HTTP reply', () => {
    const err = new GuardRejection('RATE_LIMITED', 'user', 'slow down', 42, { 'ratelimit-limit': '5', 'ratelimit-remaining': '0', 'ratelimit-reset': '42' }, { limit: 5 })
    const reply = errorReply(err)
    expect([reply.status, reply.quiet]).toEqual([429, true])
    expect(reply.headers).toEqual({ 'ratelimit-limit': '5', 'ratelimit-remaining': '0', 'ratelimit-reset': '42', 'retry-after': '42' })
    expect(reply.body).toEqual({ statusCode: 429, code: 'RATE_LIMITED', error: 'Too Many Requests', message: 'slow down', details: { layer: 'user', limit: 5 } })
  })
})

describe('limits', () => {
  it('parses every key and rejects unknown keys and bad values with CONFIG_INVALID', () => {
    expect(
      parseLimits(
        { rate: { points: 10, duration: 60 }, userRate: null, concurrency: 2, queue: 0, queueTimeoutMs: 100, connectionShare: 0.25, weight: 2, statementTimeoutMs: null },
        'x',
      ),
    ).toEqual({ rate: { points: 10, duration: 60 }, userRate: null, concurrency: 2, queue: 0, queueTimeoutMs: 100, connectionShare: 0.25, weight: 2, statementTimeoutMs: null })
    const bad: [unknown, string][] = [
      [{ rte: { points: 1, duration: 1 } }, "Limits of plan 'p': unknown key 'rte'."],
      [{ rate: { points: 0, duration: 60 } }, "Limits of plan 'p': 'rate' must be { points, duration } with positive whole numbers (duration in seconds), or null; got {\"points\":0,\"duration\":60}."],
      [{ connectionShare: 1.5 }, "Limits of plan 'p': 'connectionShare' must be a number above 0 and at most 1; got 1.5."],
      [{ concurrency: 2.5 }, "Limits of plan 'p': 'concurrency' must be a positive whole number or null; got 2.5."],
      [{ statementTimeoutMs: '5s' }, "Limits of plan 'p': 'statementTimeoutMs' must be a positive whole number of milliseconds or null; got \"5s\"."],
      ['fast', "Limits of plan 'p': 'limits' must be an object; got \"fast\"."],
    ]
    for (const [input, message] of bad) {
      let err: unknown
      try {
        parseLimits(input, "plan 'p'")
      } catch (e) {
        err = e
      }
      expect(isTenantryError(err, 'CONFIG_INVALID')).toBe(true)
      expect((err as Error).message.startsWith(message.replace(/\.$/, ''))).toBe(true)
    }
  })

  it('layers later sources over earlier ones, key by key', () => {
    expect(mergeLimits()).toEqual(DEFAULT_LIMITS)
    expect(mergeLimits({ concurrency: 4, weight: 2 }, { concurrency: 8 }, undefined, { statementTimeoutMs: null })).toEqual({
      ...DEFAULT_LIMITS,
      concurrency: 8,
      weight: 2,
      statementTimeoutMs: null,
    })
  })

  it('resolves defaults ← code plan ← catalog plan ← tenant config ← overrides', async () => {
    const guard = new Guard(
      {
        redis: null,
        defaults: { queueTimeoutMs: 111 },
        plans: { pro: { concurrency: 10, weight: 3 } },
        overrides: (t) => (t.slug === 'vip' ? { weight: 9 } : null),
      },
      { plans: async () => [{ name: 'pro', settings: { limits: { concurrency: 20, statementTimeoutMs: 900 } } }] },
    )
    await guard.init()
    expect(guard.limitsOf(tenant('basic'))).toEqual({ ...DEFAULT_LIMITS, queueTimeoutMs: 111 })
    expect(guard.limitsOf(tenant('someone', 'pro'))).toEqual({ ...DEFAULT_LIMITS, queueTimeoutMs: 111, concurrency: 20, weight: 3, statementTimeoutMs: 900 })
    expect(guard.limitsOf(tenant('cfg', 'pro', { limits: { concurrency: 1 } }))).toMatchObject({ concurrency: 1, weight: 3 })
    expect(guard.limitsOf(tenant('vip', 'pro', { limits: { weight: 5 } }))).toMatchObject({ concurrency: 20, weight: 9 })
    expect(guard.budgetOf(tenant('someone', 'pro'))).toEqual({
      tenant: tenant('someone').id,
      weight: 3,
      connectionShare: 1,
      maxWaiting: Number.POSITIVE_INFINITY,
      waitTimeoutMs: 111,
      statementTimeoutMs: 900,
    })
    await guard.close()
  })

  it('refuses a catalog plan with invalid limits at start, keeps the previous limits on a later reload', async () => {
    let settings: Record<string, unknown> = { limits: { concurrency: 0 } }
    const source = { plans: async () => [{ name: 'pro', settings }] }
    await expect(new Guard({ redis: null }, source).init()).rejects.toMatchObject({ code: 'CONFIG_INVALID' })
    settings = { limits: { concurrency: 3 } }
    const guard = new Guard({ redis: null, planRefreshMs: 0 }, source)
    await guard.init()
    const invalid: string[] = []
    guard.on('config.invalid', (e: { where: string }) => invalid.push(e.where))
    settings = { limits: { concurrency: -1 } }
    await guard.reloadPlans()
    expect(invalid).toEqual(["plan 'pro'"])
    expect(guard.limitsOf(tenant('a', 'pro')).concurrency).toBe(3)
    await guard.close()
  })

  it('a disabled guard admits everything and gives the data plane no budget', async () => {
    const guard = new Guard({ enabled: false, defaults: { rate: { points: 1, duration: 60 } } })
    await guard.init()
    const t = tenant('a')
    for (let i = 0; i < 3; i++) expect((await guard.admit(t)).headers).toEqual({})
    expect(guard.budgetOf(t)).toBeUndefined()
    await guard.close()
  })
})

describe('the tenant-entry statement', () => {
  it('sets the statement budget in the same statement; without one the session setting stays', () => {
    for (const sql of [ENTER_TENANT_SQL, ENTER_TENANT_WITH_TIMEOUT_SQL]) expect(sql.split(';').length).toBe(1)
    expect(ENTER_TENANT_SQL).not.toContain('statement_timeout')
    expect(ENTER_TENANT_WITH_TIMEOUT_SQL).toContain("set_config('statement_timeout', $4, true)")
    const target = { database: 'd', tenantId: 't', tenantToken: 't.sig', searchPath: '"public"', role: 'r' }
    expect(enterStatement(target)).toEqual({ name: 'tenantry_enter', text: ENTER_TENANT_SQL, values: ['t.sig', '"public"', 'r'] })
    const budget = { tenant: 't', weight: 1, connectionShare: 1, maxWaiting: 1, waitTimeoutMs: 1, statementTimeoutMs: 250 }
    expect(enterStatement(target, budget)).toEqual({ name: 'tenantry_enter_t', text: ENTER_TENANT_WITH_TIMEOUT_SQL, values: ['t.sig', '"public"', 'r', '250'] })
    expect(enterStatement(target, { ...budget, statementTimeoutMs: null }).values).toEqual(['t.sig', '"public"', 'r'])
    expect(enterStatement(target, { ...budget, statementTimeoutMs: 0.2 }).values[3]).toBe('1')
  })

  it('on a connection whose session holds the default budget, sets only what differs from it', () => {
    const target = { database: 'd', tenantId: 't', tenantToken: 't.sig', searchPath: '"public"', role: 'r' }
    const budget = { tenant: 't', weight: 1, connectionShare: 1, maxWaiting: 1, waitTimeoutMs: 1, statementTimeoutMs: 30_000 }
    const session = { timeoutMs: 30_000, serverValue: '7s' }
    // The session's own budget: nothing to set.
    expect(enterStatement(target, budget, session)).toEqual({ name: 'tenantry_enter', text: ENTER_TENANT_SQL, values: ['t.sig', '"public"', 'r'] })
    // Another budget: set for the transaction.
    expect(enterStatement(target, { ...budget, statementTimeoutMs: 250 }, session)).toEqual({ name: 'tenantry_enter_t', text: ENTER_TENANT_WITH_TIMEOUT_SQL, values: ['t.sig', '"public"', 'r', '250'] })
    // No budget: the server's own value comes back for the transaction.
    expect(enterStatement(target, { ...budget, statementTimeoutMs: null }, session).values).toEqual(['t.sig', '"public"', 'r', '7s'])
    // No guard: nothing is touched.
    expect(enterStatement(target, undefined, session).values).toEqual(['t.sig', '"public"', 'r'])
  })
})

describe('Bulkheads', () => {
  it('admits up to the limit, queues FIFO up to the queue size, refuses the rest at once', async () => {
    const b = new Bulkheads()
    const r1 = await b.enter('t', 2, 1, 1000)
    const r2 = await b.enter('t', 2, 1, 1000)
    const order: string[] = []
    const q = b.enter('t', 2, 1, 1000).then((release) => { order.push('queued'); return release })
    await expect(b.enter('t', 2, 1, 1000)).rejects.toEqual({ reason: 'queue-full', active: 2, queued: 1 } satisfies BulkheadRefusal)
    expect(b.stats()).toEqual({ t: { active: 2, queued: 1 } })
    r1()
    r1() // idempotent
    const r3 = await q
    expect(order).toEqual(['queued'])
    expect(b.stats()).toEqual({ t: { active: 2, queued: 0 } })
    r2()
    r3()
    expect(b.stats()).toEqual({})
  })

  it('a queued request gives up after the timeout', async () => {
    vi.useFakeTimers()
    const b = new Bulkheads()
    const r1 = await b.enter('t', 1, 5, 300)
    const waiting = b.enter('t', 1, 5, 300).then(() => 'admitted', (r: BulkheadRefusal) => r.reason)
    await vi.advanceTimersByTimeAsync(299)
    expect(b.stats()).toEqual({ t: { active: 1, queued: 1 } })
    await vi.advanceTimersByTimeAsync(1)
    expect(await waiting).toBe('timeout')
    r1()
    expect(b.stats()).toEqual({})
  })

  it('tenants do not share compartments', async () => {
    const b = new Bulkheads()
    await b.enter('a', 1, 0, 100)
    await expect(b.enter('a', 1, 0, 100)).rejects.toMatchObject({ reason: 'queue-full' })
    expect(typeof (await b.enter('b', 1, 0, 100))).toBe('function')
  })
})

describe('circuit breakers', () => {
  const unavailable = (cause: unknown) => new TenantryError('TENANT_UNAVAILABLE', 'down', { cause })

  it('counts refused or dropped connections against the server, any unreachability against the database', () => {
    expect(isServerFailure(unavailable(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' })))).toBe(true)
    expect(isServerFailure(unavailable(new Error('Connection terminated unexpectedly')))).toBe(true)
    expect(isServerFailure(unavailable(Object.assign(new Error('too many connections for database "x"'), { code: '53300' })))).toBe(false)
    expect(isDatabaseFailure(unavailable(Object.assign(new Error('too many connections for database "x"'), { code: '53300' })))).toBe(true)
    expect(isDatabaseFailure(new TenantryError('TENANT_BUSY', 'busy'))).toBe(false)
    expect(isDatabaseFailure(Object.assign(new Error('canceling statement due to statement timeout'), { code: '57014' }))).toBe(false)
  })

  it('opens after the threshold, fails fast, lets one trial through after halfOpenAfterMs and closes on its success', async () => {
    vi.useFakeTimers({ toFake: ['Date'] })
    const events: string[] = []
    const b = new Breakers({ threshold: 2, halfOpenAfterMs: 1000 }, {
      opened: (e) => events.push(`opened ${e.scope}`),
      closed: (e) => events.push(`closed ${e.scope}`),
    })
    const refused = () => Promise.reject(unavailable(Object.assign(new Error('refused'), { code: 'ECONNREFUSED' })))
    let calls = 0
    const ok = () => { calls++; return Promise.resolve('ok') }
    const outcome = (p: Promise<unknown>) => p.then(() => 'ok', (e: TenantryError) => `${e.code}${e.details?.breaker ? ' (breaker)' : ''}`)
    expect(await outcome(b.run('s', 'd1', refused))).toBe('TENANT_UNAVAILABLE')
    expect(await outcome(b.run('s', 'd1', refused))).toBe('TENANT_UNAVAILABLE')
    expect(events).toEqual(['opened database', 'opened server'])
    expect([b.state('s'), b.state('s', 'd1'), b.state('s', 'd2')]).toEqual(['open', 'open', 'closed'])
    // Open: fails fast without running the work, for every database of the server.
    expect(await outcome(b.run('s', 'd1', ok))).toBe('TENANT_UNAVAILABLE (breaker)')
    expect(await outcome(b.run('s', 'd2', ok))).toBe('TENANT_UNAVAILABLE (breaker)')
    expect(calls).toBe(0)
    vi.setSystemTime(Date.now() + 1001)
    expect(await outcome(b.run('s', 'd1', ok))).toBe('ok')
    expect(calls).toBe(1)
    expect(events).toEqual(['opened database', 'opened server', 'closed database', 'closed server'])
    expect(b.openBreakers()).toEqual([])
  })

  it('opens only on consecutive failures: a success in between starts the count again, failures that are not unreachability never count', async () => {
    const opened: string[] = []
    const b = new Breakers({ threshold: 3, halfOpenAfterMs: 60_000 }, { opened: (e) => opened.push(e.scope), closed() {} })
    const refused = () => Promise.reject(unavailable(Object.assign(new Error('refused'), { code: 'ECONNREFUSED' })))
    const conflict = () => Promise.reject(new TenantryError('CONFLICT', 'duplicate'))
    const ok = () => Promise.resolve('ok')
    const outcome = (p: Promise<unknown>) => p.then(() => 'ok', (e: TenantryError) => `${e.code}${e.details?.breaker ? ' (breaker)' : ''}`)
    const seen: string[] = []
    const note = (e: unknown) => seen.push((e as TenantryError).code)
    for (const step of [refused, refused, ok, refused, refused, conflict, conflict, ok, refused, refused]) await outcome(b.run('s', null, step, note))
    expect([b.state('s'), opened]).toEqual(['closed', []])
    // Every failure reached onError, whether the breaker counted it or not.
    expect(seen).toEqual(['TENANT_UNAVAILABLE', 'TENANT_UNAVAILABLE', 'TENANT_UNAVAILABLE', 'TENANT_UNAVAILABLE', 'CONFLICT', 'CONFLICT', 'TENANT_UNAVAILABLE', 'TENANT_UNAVAILABLE'])
    // A conflict does not reset the count either: two refusals, a conflict, a third refusal opens.
    expect(await outcome(b.run('s', null, conflict))).toBe('CONFLICT')
    expect(await outcome(b.run('s', null, refused))).toBe('TENANT_UNAVAILABLE')
    expect([b.state('s'), opened]).toEqual(['open', ['server']])
    expect(await outcome(b.run('s', null, ok))).toBe('TENANT_UNAVAILABLE (breaker)')
  })

  it('a database that keeps failing does not open its server breaker while other databases answer', async () => {
    const b = new Breakers({ threshold: 2, halfOpenAfterMs: 60_000 }, { opened() {}, closed() {} })
    const missing = () => Promise.reject(unavailable(Object.assign(new Error('too many connections'), { code: '53300' })))
    for (let i = 0; i < 3; i++) await b.run('s', 'bad', missing).catch(() => undefined)
    expect(await b.run('s', 'good', async () => 'ok')).toBe('ok')
    expect([b.state('s'), b.state('s', 'bad'), b.state('s', 'good')]).toEqual(['closed', 'open', 'closed'])
  })
})

describe('user identification', () => {
  it('reads a header, hashes API keys, verifies JWTs', async () => {
    expect(await userFromHeader('X-User')({ headers: { 'x-user': 'ann' } })).toBe('h:ann')
    expect(await userFromHeader('x-user')({ headers: {} })).toBeNull()
    const key = await userFromApiKey()({ headers: { 'x-api-key': 'sk_live_secret' } })
    expect(key).toMatch(/^k:[A-Za-z0-9_-]{22}$/)
    expect(key).not.toContain('secret')
    const secret = 'a-test-secret-that-is-at-least-32-bytes-long'
    const { SignJWT } = await import('jose')
    const token = await new SignJWT({ sub: 'user-7' }).setProtectedHeader({ alg: 'HS256' }).sign(new TextEncoder().encode(secret))
    const fromJwt = userFromJwt({ secret })
    expect(await fromJwt({ headers: { authorization: `Bearer ${token}` } })).toBe('u:user-7')
    expect(await fromJwt({ headers: { authorization: `Bearer ${token}x` } })).toBeNull()
    expect(await fromJwt({ headers: {} })).toBeNull()
  })
})
