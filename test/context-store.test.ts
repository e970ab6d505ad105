/**
 * Where the tenant scope lives (src/context/context.ts): in the OpenTelemetry context while a
 * context manager that carries values is registered (one AsyncLocalStorage per request, not two),
 * else in Tenantry's own AsyncLocalStorage. Invariant 3 must hold the same either way: the
 * adversarial isolation suite runs again here with the SDK registered, on real PostgreSQL and on
 * PGlite (database `tenantry_test_isotel`, role prefix `tc_isotel`), then the store's own rules:
 * interleaved tenants, nesting, fail-closed endings, and managers registered or disabled while
 * scopes are open.
 */
import { setImmediate as tick, setTimeout as sleep } from 'node:timers/promises'
import { context, ROOT_CONTEXT, trace } from '@opentelemetry/api'
import { InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base'
import { NodeTracerProvider } from '@opentelemetry/sdk-trace-node'
import { afterAll, describe, expect, it } from 'vitest'
import { currentScope, currentTenant, runInScope, scopeStore, TenantScope, tryCurrentTenant, withTenant } from '../src/context/context.ts'
import type { Tenant } from '../src/core/types.ts'
import { prng } from './helpers/prng.ts'

const exporter = new InMemorySpanExporter()
const provider = new NodeTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] })
provider.register()
/** A fresh AsyncLocalStorage context manager as the global one (what the SDK's register() installs). */
const registerManager = () => new NodeTracerProvider().register()

process.env.TENANTRY_ISOLATION_OTEL = '1'
await import('./isolation.test.ts')

const tenant = (n: number): Tenant => ({ id: `00000000-0000-4000-8000-00000000000${n}`, slug: `ctx-${n}` }) as Tenant
const [A, B, C] = [tenant(1), tenant(2), tenant(3)]
const TENANTS = [1, 2, 3, 4, 5, 6].map(tenant)

function codeOf(fn: () => unknown): string {
  try {
    fn()
    return 'no error'
  } catch (err) {
    return (err as { code?: string }).code ?? String(err)
  }
}

describe('tenant scopes with the OpenTelemetry SDK registered', () => {
  it('live in the OpenTelemetry context, and survive awaits, timers and spans made active by the app', async () => {
    expect(scopeStore()).toBe('opentelemetry')
    const seen = await withTenant(A, async () => {
      const steps = [currentTenant().slug]
      await sleep(2)
      steps.push(currentTenant().slug)
      await tick()
      steps.push(tryCurrentTenant()?.slug ?? 'none')
      const span = trace.getTracer('test').startSpan('app work')
      steps.push(context.with(trace.setSpan(context.active(), span), () => currentTenant().slug))
      span.end()
      // A context not derived from the active one carries no tenant: it fails closed.
      steps.push(context.with(ROOT_CONTEXT, () => codeOf(currentTenant)))
      steps.push(await new Promise<string>((resolve) => setTimeout(() => resolve(currentTenant().slug), 1)))
      return steps
    })
    expect(seen).toEqual(['ctx-1', 'ctx-1', 'ctx-1', 'ctx-1', 'TENANT_CONTEXT_MISSING', 'ctx-1'])
    expect(codeOf(currentTenant)).toBe('TENANT_CONTEXT_MISSING')
    expect(tryCurrentTenant()).toBeNull()
    expect(currentScope()).toBeUndefined()
  })

  it('nest: the inner tenant wins, keeps the request id and trace, and the outer one comes back', async () => {
    const parent = ROOT_CONTEXT
    const scope = new TenantScope(A, 'req-7', parent)
    const seen = await runInScope(scope, async (tag: string) => {
      const inner = await withTenant(B, async () => {
        await sleep(1)
        const s = currentScope()!
        return [s.tenant.slug, s.requestId, s.trace === parent, s.rejected]
      })
      return [tag, currentScope() === scope, ...inner, currentTenant().slug]
    }, 'arg')
    expect(seen).toEqual(['arg', true, 'ctx-2', 'req-7', true, false, 'ctx-1'])
    expect(codeOf(currentTenant)).toBe('TENANT_CONTEXT_MISSING')
  })

  it('300 interleaved tasks over six tenants, nested ones included, each see only their own tenant at every step', async () => {
    const random = prng(0x51ced)
    const wrong: string[] = []
    const check = (want: Tenant, where: string) => {
      const got = tryCurrentTenant()
      if (got !== want) wrong.push(`${where}: want ${want.slug}, got ${got?.slug ?? 'none'}`)
    }
    const pause = (r: number) => (r < 0.3 ? sleep(Math.floor(r * 10)) : r < 0.6 ? tick() : Promise.resolve())
    const task = (i: number) => {
      const t = TENANTS[Math.floor(random() * TENANTS.length)]
      const other = TENANTS[Math.floor(random() * TENANTS.length)]
      const r = [random(), random(), random(), random()]
      return withTenant(t, async () => {
        check(t, `task ${i} start`)
        await pause(r[0])
        check(t, `task ${i} after the first pause`)
        if (r[1] < 0.4) {
          await withTenant(other, async () => {
            await pause(r[2])
            check(other, `task ${i} nested`)
          })
          check(t, `task ${i} after nesting`)
        }
        await pause(r[3])
        check(t, `task ${i} end`)
        return t.slug
      })
    }
    const done = await Promise.all(Array.from({ length: 300 }, (_, i) => task(i)))
    expect(done).toHaveLength(300)
    expect(wrong).toEqual([])
    expect(tryCurrentTenant()).toBeNull()
  })

  it('a closure made inside a scope but run after it ended has no tenant', async () => {
    let later!: () => string
    await withTenant(A, async () => { later = () => codeOf(currentTenant) })
    expect(later()).toBe('TENANT_CONTEXT_MISSING')
  })
})

describe('tenant scopes while context managers come and go', () => {
  afterAll(() => {
    context.disable()
    registerManager()
  })

  it('with no manager registered, scopes go to Tenantry\'s own store and work the same', async () => {
    context.disable()
    expect(scopeStore()).toBe('tenantry')
    const seen = await withTenant(A, async () => {
      await sleep(1)
      const inner = await withTenant(B, async () => { await tick(); return currentTenant().slug })
      return [currentTenant().slug, inner, currentTenant().slug]
    })
    expect(seen).toEqual(['ctx-1', 'ctx-2', 'ctx-1'])
    expect(codeOf(currentTenant)).toBe('TENANT_CONTEXT_MISSING')
  })

  it('a manager registered inside an open scope: nested scopes follow the outer one into the own store', async () => {
    context.disable()
    const seen = await withTenant(A, async () => {
      registerManager()
      const steps = [scopeStore(), currentTenant().slug]
      await sleep(1)
      steps.push(currentTenant().slug)
      steps.push(await withTenant(B, async () => { await tick(); return `${scopeStore()} ${currentTenant().slug}` }))
      steps.push(currentTenant().slug)
      return steps
    })
    expect(seen).toEqual(['tenantry', 'ctx-1', 'ctx-1', 'tenantry ctx-2', 'ctx-1'])
    expect(scopeStore()).toBe('opentelemetry')
    expect(tryCurrentTenant()).toBeNull()
  })

  it('the manager disabled inside an open scope: that scope ends (fails closed), and a new one inside it is its own', async () => {
    context.disable()
    registerManager()
    const seen = await withTenant(A, async () => {
      const steps = [scopeStore(), currentTenant().slug]
      context.disable()
      steps.push(codeOf(currentTenant))
      steps.push(await withTenant(B, async () => {
        registerManager() // a new manager starts empty: B stays the current tenant
        await sleep(1)
        const inner = await withTenant(C, async () => `${scopeStore()} ${currentTenant().slug}`)
        return `${currentTenant().slug}, ${inner}, ${currentTenant().slug}`
      }))
      return steps
    })
    expect(seen).toEqual(['opentelemetry', 'ctx-1', 'TENANT_CONTEXT_MISSING', 'ctx-2, tenantry ctx-3, ctx-2'])
    expect(tryCurrentTenant()).toBeNull()
  })

  it('a manager that carries no values (the API\'s no-op one) is not used', () => {
    context.disable()
    context.setGlobalContextManager({
      active: () => ROOT_CONTEXT,
      with: (_ctx, fn, thisArg, ...args) => fn.call(thisArg, ...args),
      bind: (_ctx, target) => target,
      enable() { return this },
      disable() { return this },
    })
    expect(scopeStore()).toBe('tenantry')
    expect(withTenant(C, () => currentTenant().slug)).toBe('ctx-3')
    context.disable()
  })
})

