import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import express from 'express'
import Fastify from 'fastify'
import { InMemoryProvider, OpenFeature } from '@openfeature/server-sdk'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { tenantryErrorHandler, tenantryMiddleware } from '../src/adapters/express.ts'
import { tenantryPlugin } from '../src/adapters/fastify.ts'
import { createTenantry, header, rolloutBucket, TenantryError, type Tenant, type Tenantry } from '../src/index.ts'
import { layer, parsePath } from '../src/config/merge.ts'
import { backends, DEMO_MIGRATIONS, dropPostgresLeftovers, freshDatabase, postgresAvailable, type Backend } from './helpers/backends.ts'

// Issue 12: layered configuration, feature flags (OpenFeature), custom domains — on PostgreSQL and PGlite.

const DB_NAME = 'tenantry_test_config'
const ROLE_PREFIX = 'th_cfg'
const PG_UP = await postgresAvailable()
const ROOT = fileURLToPath(new URL('..', import.meta.url))
const CHILD = fileURLToPath(new URL('./fixtures/config-child.ts', import.meta.url))

const SCHEMA = {
  type: 'object',
  additionalProperties: false,
  properties: {
    maxProjects: { type: 'integer', minimum: 1, maximum: 1000, default: 10 },
    features: { type: 'object', properties: { export: { type: 'boolean' }, sso: { type: 'boolean' } }, additionalProperties: false },
    locales: { type: 'array', items: { type: 'string', enum: ['en', 'de', 'fr'] } },
    theme: { enum: ['light', 'dark'] },
  },
}

async function codeOf(p: Promise<unknown>): Promise<TenantryError> {
  try {
    await p
  } catch (err) {
    if (err instanceof TenantryError) return err
    throw err
  }
  throw new Error('expected a TenantryError, got success')
}

/** DNS of the tests: TXT records set by the test, nothing from the internet. */
const txt = new Map<string, string[][]>()
const http = new Map<string, string>()

function configSuite(backend: Backend): void {
  describe.skipIf(!backend.enabled)(`configuration, flags and domains (${backend.name})`, () => {
    let tenantry: Tenantry
    const t: Record<string, Tenant> = {}

    beforeAll(async () => {
      const url = await backend.url()
      tenantry = await createTenantry({
        ...(url ? { databaseUrl: url, rolePrefix: ROLE_PREFIX } : { dataDir: 'memory' }),
        migrations: DEMO_MIGRATIONS,
        resolve: [header()],
        guard: { redis: null },
        observe: { metering: false, tracing: false, metrics: false },
        config: {
          schema: SCHEMA,
          defaults: { features: { export: false, sso: false }, locales: ['en'], branding: { primaryColor: '#111111', displayName: 'SaaS' } },
          domains: {
            resolveTxt: async (name) => {
              const r = txt.get(name)
              if (!r) throw Object.assign(new Error('queryTxt ENOTFOUND'), { code: 'ENOTFOUND' })
              return r
            },
            fetchText: async (u) => (http.has(u) ? { status: 200, body: http.get(u)! } : { status: 404, body: 'not found' }),
          },
        },
      })
      await tenantry.migrate()
      await tenantry.config.plans.create('pro', { features: { export: true }, locales: ['en', 'de'], limits: { rate: { points: 1000, duration: 60 } } }, { by: 'test' })
      t.acme = await tenantry.provision({ slug: 'acme', tier: 'pooled', plan: 'default', region: 'eu' })
      t.globex = await tenantry.provision({ slug: 'globex', tier: 'schema', plan: 'pro', region: 'us' })
    }, 120_000)

    afterAll(async () => {
      await tenantry?.close()
      await backend.cleanUp()
    })

    it('layers defaults ← plan ← tenant: objects merge, arrays and scalars replace, schema defaults filled in', async () => {
      await tenantry.config.set('globex', '/features/sso', true, { by: 'alice' })
      await tenantry.config.set('globex', 'locales', ['fr'], { by: 'alice' })
      const globex = (await tenantry.findTenant('globex'))!
      expect(tenantry.config.of(globex)).toEqual({
        maxProjects: 10,
        features: { export: true, sso: true },
        locales: ['fr'],
        limits: { rate: { points: 1000, duration: 60 } },
        branding: { primaryColor: '#111111', displayName: 'SaaS' },
      })
      const acme = (await tenantry.findTenant('acme'))!
      expect(tenantry.config.of(acme)).toEqual({
        maxProjects: 10, features: { export: false, sso: false }, locales: ['en'], branding: { primaryColor: '#111111', displayName: 'SaaS' },
      })
      expect(await tenantry.config.get('globex', '/features')).toEqual({ export: true, sso: true })
      expect(await tenantry.config.get('globex', undefined, { layer: 'tenant' })).toEqual({ features: { sso: true }, locales: ['fr'] })
    })

    it('tenantry.config() is synchronous inside a tenant context, frozen, and refused outside one', async () => {
      const seen = await tenantry.withTenant('globex', async () => {
        const c = tenantry.config<{ features: { sso: boolean } }>()
        expect(Object.isFrozen(c) && Object.isFrozen(c.features)).toBe(true)
        expect(tenantry.config()).toBe(c)
        return c.features.sso
      })
      expect(seen).toBe(true)
      expect(() => tenantry.config()).toThrow(expect.objectContaining({ code: 'TENANT_CONTEXT_MISSING' }))
    })

    it('an invalid value is CONFIG_INVALID (400) naming the JSON pointer and the rule, and nothing is stored', async () => {
      const before = await tenantry.config.get('acme', undefined, { layer: 'tenant' })
      const versions = (await tenantry.config.history('acme')).length
      const cases: [string, unknown, string, string][] = [
        ['/maxProjects', 0, '/maxProjects', 'minimum'],
        ['/maxProjects', '5', '/maxProjects', 'type'],
        ['/theme', 'pink', '/theme', 'enum'],
        ['/locales', ['en', 'xx'], '/locales/1', 'enum'],
        ['/features/unknown', true, '/features/unknown', 'additionalProperties'],
        ['/nope', 1, '/nope', 'additionalProperties'],
        ['/branding/primaryColor', 'red', '/branding/primaryColor', 'pattern'],
        ['/branding/supportUrl', 'javascript:alert(1)', '/branding/supportUrl', 'pattern'],
        ['/branding/emailSenderName', 'Acme\r\nBcc: x@y', '/branding/emailSenderName', 'pattern'],
        ['/branding/logo', 'x.png', '/branding/logo', 'additionalProperties'],
        ['/limits/rate', { points: -1, duration: 60 }, '/limits/rate', 'limits'],
      ]
      for (const [path, value, pointer, rule] of cases) {
        const e = await codeOf(tenantry.config.set('acme', path, value))
        expect([path, e.code, e.status, e.details?.pointer, e.details?.rule]).toEqual([path, 'CONFIG_INVALID', 400, pointer, rule])
        expect(e.message).toContain(`'${pointer}'`)
      }
      for (const [path, value] of [['/__proto__/x', 1], ['a..b', 1], ['/maxProjects', Number.NaN], ['/maxProjects', undefined], ['/when', new Date()]] as [string, unknown][]) {
        const e = await codeOf(tenantry.config.set('acme', path, value))
        expect([path, e.code, e.status]).toEqual([path, 'CONFIG_INVALID', 400])
      }
      expect((await codeOf(tenantry.config.set('nobody', '/maxProjects', 5))).code).toBe('TENANT_NOT_FOUND')
      expect(await tenantry.config.get('acme', undefined, { layer: 'tenant' })).toEqual(before)
      expect((await tenantry.config.history('acme')).length).toBe(versions)
    })

    it('every change is versioned (who, when, before/after); unset and rollback restore', async () => {
      const v1 = await tenantry.config.set('acme', '/maxProjects', 50, { by: 'alice' })
      const v2 = await tenantry.config.set('acme', '/branding/primaryColor', '#ff0000', { by: 'bob' })
      expect(await tenantry.config.unset('acme', '/nothing/here')).toBeNull()
      const v3 = (await tenantry.config.unset('acme', '/maxProjects', { by: 'carol' }))!
      const history = await tenantry.config.history('acme')
      expect(history.slice(0, 3).map((v) => [v.id, v.scope, v.path, v.changedBy, v.before, v.after])).toEqual([
        [v3.id, 'tenant', '/maxProjects', 'carol', { maxProjects: 50, branding: { primaryColor: '#ff0000' } }, { branding: { primaryColor: '#ff0000' } }],
        [v2.id, 'tenant', '/branding/primaryColor', 'bob', { maxProjects: 50 }, { maxProjects: 50, branding: { primaryColor: '#ff0000' } }],
        [v1.id, 'tenant', '/maxProjects', 'alice', {}, { maxProjects: 50 }],
      ])
      expect(history[0].changedAt).toBeInstanceOf(Date)
      expect(await tenantry.config.get('acme', '/maxProjects')).toBe(10)
      // Undo v2 and everything after it: the layer as it was after v1.
      const back = await tenantry.config.rollback('acme', v2.id, { by: 'dave' })
      expect(back.map((v) => [v.scope, v.note, v.after])).toEqual([['tenant', `rollback to before version ${v2.id}`, { maxProjects: 50 }]])
      expect(await tenantry.config.get('acme', undefined, { layer: 'tenant' })).toEqual({ maxProjects: 50 })
      const acme = (await tenantry.findTenant('acme'))!
      expect((tenantry.config.of(acme) as any).branding.primaryColor).toBe('#111111')
      expect((await codeOf(tenantry.config.rollback('acme', 999_999))).code).toBe('NOT_FOUND')
      expect((await codeOf(tenantry.config.rollback('globex', v1.id))).code).toBe('NOT_FOUND')
      await tenantry.config.rollback('acme', v1.id)
      expect(await tenantry.config.get('acme', undefined, { layer: 'tenant' })).toEqual({})
    })

    it('a plan change that would break a tenant on it is refused, naming the tenant; nothing is stored', async () => {
      await tenantry.config.set('globex', '/maxProjects', 500)
      const e = await codeOf(tenantry.config.plans.set('pro', '/features', { export: true, extra: 1 }))
      expect([e.code, e.details?.pointer, e.details?.rule]).toEqual(['CONFIG_INVALID', '/features/extra', 'additionalProperties'])
      expect(await tenantry.config.plans.get('pro', '/features')).toEqual({ export: true })
      expect((await codeOf(tenantry.config.plans.set('gold', '/theme', 'dark'))).code).toBe('PLAN_NOT_FOUND')
      expect((await codeOf(tenantry.config.plans.create('Bad Name'))).code).toBe('VALIDATION_FAILED')
      expect((await codeOf(tenantry.config.plans.create('pro'))).code).toBe('CONFLICT')
      const v = await tenantry.config.plans.set('pro', '/theme', 'dark', { by: 'ops' })
      expect((await tenantry.config.plans.history('pro'))[0]).toMatchObject({ id: v.id, scope: 'plan', label: 'pro', path: '/theme', changedBy: 'ops' })
      const globex = (await tenantry.findTenant('globex'))!
      expect((tenantry.config.of(globex) as any).theme).toBe('dark')
      await tenantry.config.plans.rollback('pro', v.id)
      expect(await tenantry.config.plans.get('pro', '/theme')).toBeUndefined()
      expect((tenantry.config.of((await tenantry.findTenant('globex'))!) as any).theme).toBeUndefined()
    })

    it('changing the plan changes configuration, limits and flags at once; versioned and rolled back', async () => {
      await tenantry.flags.set({ key: 'plan-gate', rules: [{ plans: ['pro'], variant: 'on' }] })
      let acme = (await tenantry.findTenant('acme'))!
      expect([tenantry.guard.limitsOf(acme).rate, (tenantry.config.of(acme) as any).features.export, tenantry.flags.isEnabled('plan-gate', { tenant: acme })]).toEqual([null, false, false])
      expect((await codeOf(tenantry.config.changePlan('acme', 'gold'))).code).toBe('PLAN_NOT_FOUND')
      acme = await tenantry.config.changePlan('acme', 'pro', { by: 'sales' })
      expect(acme.plan).toBe('pro')
      expect([tenantry.guard.limitsOf(acme).rate, (tenantry.config.of(acme) as any).features.export, tenantry.flags.isEnabled('plan-gate', { tenant: acme })])
        .toEqual([{ points: 1000, duration: 60 }, true, true])
      const [last] = await tenantry.config.history('acme')
      expect([last.scope, last.before, last.after, last.changedBy]).toEqual(['assignment', 'default', 'pro', 'sales'])
      await tenantry.config.rollback('acme', last.id)
      acme = (await tenantry.findTenant('acme'))!
      expect([acme.plan, tenantry.guard.limitsOf(acme).rate]).toEqual(['default', null])
    })

    it('request.tenantConfig in Fastify and Express', async () => {
      const app = Fastify()
      await app.register(tenantryPlugin, { tenantry })
      // Computed once per tenant and configuration version: every request gets the same frozen object.
      const served: object[] = []
      app.get('/c', async (req) => {
        served.push(req.tenantConfig)
        return { sso: (req.tenantConfig.features as any).sso, fromContext: (tenantry.config() as any).maxProjects }
      })
      const r = await app.inject({ url: '/c', headers: { 'x-tenant': 'globex' } })
      expect([r.statusCode, r.json()]).toEqual([200, { sso: true, fromContext: 500 }])
      expect((await app.inject({ url: '/c', headers: { 'x-tenant': 'globex' } })).statusCode).toBe(200)
      expect([served.length, served[0] === served[1], Object.isFrozen(served[0])]).toEqual([2, true, true])
      await app.close()
      const e = express()
      e.use(tenantryMiddleware(tenantry))
      e.get('/c', (req, res) => { res.json({ locales: req.tenantConfig!.locales }) })
      e.use(tenantryErrorHandler())
      const server = e.listen(0)
      const port = (server.address() as { port: number }).port
      const res = await fetch(`http://127.0.0.1:${port}/c`, { headers: { 'x-tenant': 'globex' } })
      expect([res.status, await res.json()]).toEqual([200, { locales: ['fr'] }])
      server.close()
    })

    it('flags: rules in order (deny, allow, plan, region, tier, user, attribute), variants of every type', async () => {
      await tenantry.flags.set({
        key: 'new-editor',
        variants: { on: true, off: false },
        defaultVariant: 'off',
        rules: [
          { name: 'deny', tenants: ['globex'], users: ['mallory'], variant: 'off' },
          { name: 'beta users', users: ['ann'], variant: 'on' },
          { name: 'eu pooled', regions: ['eu'], tiers: ['pooled'], variant: 'on' },
          { name: 'german', attributes: { country: ['DE'] }, variant: 'on' },
        ],
      }, { by: 'pm' })
      await tenantry.flags.set({ key: 'banner', variants: { a: 'Hello', b: 'Welcome', n: 3, o: { x: [1] } }, defaultVariant: 'a', rules: [{ plans: ['pro'], variant: 'b' }, { tenants: [t.acme.id], variant: 'o' }] })
      const acme = (await tenantry.findTenant('acme'))!
      const globex = (await tenantry.findTenant('globex'))!
      const ev = (key: string, ctx: Record<string, unknown>) => {
        const e = tenantry.flags.evaluate(key, ctx as any)!
        return [e.value, e.variant, e.reason, e.ruleName ?? null]
      }
      expect(ev('new-editor', { tenant: globex, userId: 'mallory' })).toEqual([false, 'off', 'TARGETING_MATCH', 'deny'])
      expect(ev('new-editor', { tenant: globex, userId: 'ann' })).toEqual([true, 'on', 'TARGETING_MATCH', 'beta users'])
      expect(ev('new-editor', { tenant: acme })).toEqual([true, 'on', 'TARGETING_MATCH', 'eu pooled'])
      expect(ev('new-editor', { tenant: globex, country: 'DE' })).toEqual([true, 'on', 'TARGETING_MATCH', 'german'])
      expect(ev('new-editor', { tenant: globex })).toEqual([false, 'off', 'DEFAULT', null])
      expect(ev('banner', { tenant: globex })).toEqual(['Welcome', 'b', 'TARGETING_MATCH', null])
      expect(ev('banner', { tenant: acme })).toEqual([{ x: [1] }, 'o', 'TARGETING_MATCH', null])
      // The current tenant when no context names one.
      expect(await tenantry.withTenant('acme', async () => tenantry.flags.isEnabled('new-editor'))).toBe(true)
      expect(() => tenantry.flags.isEnabled('no-such-flag')).toThrow(expect.objectContaining({ code: 'FLAG_NOT_FOUND' }))
      await tenantry.flags.set({ key: 'new-editor', enabled: false, rules: [{ regions: ['eu'], variant: 'on' }] })
      expect(ev('new-editor', { tenant: acme })).toEqual([false, 'off', 'DISABLED', null])
    })

    it('flags: bad definitions are VALIDATION_FAILED with the pointer; nothing stored', async () => {
      const before = tenantry.flags.get('banner')
      const bad: [unknown, string][] = [
        [{ key: 'Bad Key' }, '/key'],
        [{ key: 'banner', variants: { a: 1 }, defaultVariant: 'z' }, '/defaultVariant'],
        [{ key: 'banner', rules: [{ variant: 'maybe' }] }, '/rules/0/variant'],
        [{ key: 'banner', rules: [{ percentage: 120, variant: 'on' }] }, '/rules/0/percentage'],
        [{ key: 'banner', rules: [{ tiers: ['gold'], variant: 'on' }] }, '/rules/0/tiers/0'],
        [{ key: 'banner', color: 'red' }, ''],
      ]
      for (const [def, pointer] of bad) {
        const e = await codeOf(tenantry.flags.set(def as any))
        expect([e.code, e.details?.pointer]).toEqual(['VALIDATION_FAILED', pointer])
      }
      expect(tenantry.flags.get('banner')).toEqual(before)
      expect((await codeOf(tenantry.flags.rollout('banner', 101))).code).toBe('VALIDATION_FAILED')
      expect((await codeOf(tenantry.flags.rollout('nope', 10))).code).toBe('FLAG_NOT_FOUND')
    })

    it('flags: a percentage rollout is stable — 10 % → 20 % keeps the first 10 %; history and rollback', async () => {
      await tenantry.flags.set({ key: 'rollout-x', rules: [{ tenants: ['globex'], variant: 'off' }] })
      const ids = Array.from({ length: 2000 }, (_, i) => `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`)
      const onAt = (pct: number) => new Set(ids.filter((id) => tenantry.flags.evaluate('rollout-x', { tenantId: id, plan: 'x' })!.value === true))
      const v = await tenantry.flags.rollout('rollout-x', 10, { by: 'pm' })
      expect(v.rules.at(-1)).toEqual({ name: 'rollout', percentage: 10, variant: 'on' })
      const ten = onAt(10)
      await tenantry.flags.rollout('rollout-x', 20)
      const twenty = onAt(20)
      expect([...ten].every((id) => twenty.has(id))).toBe(true)
      expect(ten.size).toBeGreaterThan(150)
      expect(ten.size).toBeLessThan(250)
      expect(twenty.size).toBeGreaterThan(340)
      expect(twenty.size).toBeLessThan(460)
      expect(ids.filter((id) => rolloutBucket('rollout-x', id) < 1000).length).toBe(ten.size)
      const e = tenantry.flags.evaluate('rollout-x', { tenantId: [...ten][0] })!
      expect([e.reason, e.variant]).toEqual(['SPLIT', 'on'])
      // The deny rule comes first: globex is out whatever its bucket.
      await tenantry.flags.rollout('rollout-x', 100)
      expect(tenantry.flags.evaluate('rollout-x', { tenant: (await tenantry.findTenant('globex'))! })!.value).toBe(false)
      const history = await tenantry.flags.history('rollout-x')
      expect(history.map((h) => h.note)).toEqual(['rollout 100%', 'rollout 20%', 'rollout 10%', null])
      await tenantry.flags.rollback('rollout-x', history[1].id)
      expect(tenantry.flags.get('rollout-x')!.rules.at(-1)!.percentage).toBe(10)
    })

    it('the OpenFeature provider fills the context from the tenant and returns reasons and variants', async () => {
      const domain = `tenantry-${backend.name}`
      await OpenFeature.setProviderAndWait(domain, tenantry.flags.provider)
      const client = OpenFeature.getClient(domain)
      await tenantry.flags.set({ key: 'new-editor', rules: [{ name: 'eu', regions: ['eu'], variant: 'on' }, { users: ['ann'], variant: 'on' }] })
      const inAcme = await tenantry.withTenant('acme', () => client.getBooleanDetails('new-editor', false))
      expect([inAcme.value, inAcme.variant, inAcme.reason, inAcme.flagMetadata]).toEqual([true, 'on', 'TARGETING_MATCH', { rule: 0, ruleName: 'eu' }])
      const inGlobex = await tenantry.withTenant('globex', () => client.getBooleanDetails('new-editor', true))
      expect([inGlobex.value, inGlobex.variant, inGlobex.reason]).toEqual([false, 'off', 'DEFAULT'])
      const ann = await tenantry.withTenant('globex', () => client.getBooleanDetails('new-editor', false, { userId: 'ann' }))
      expect([ann.value, ann.reason]).toEqual([true, 'TARGETING_MATCH'])
      // targetingKey is a tenant id.
      const byKey = await client.getBooleanDetails('new-editor', false, { targetingKey: t.acme.id, region: 'eu' })
      expect(byKey.value).toBe(true)
      const str = await tenantry.withTenant('globex', () => client.getStringDetails('banner', 'x'))
      expect([str.value, str.variant, str.reason]).toEqual(['Welcome', 'b', 'TARGETING_MATCH'])
      const obj = await tenantry.withTenant('acme', () => client.getObjectDetails('banner', {}))
      expect([obj.value, obj.variant]).toEqual([{ x: [1] }, 'o'])
      const mismatch = await tenantry.withTenant('globex', () => client.getNumberDetails('banner', 7))
      expect([mismatch.value, mismatch.reason, mismatch.errorCode]).toEqual([7, 'ERROR', 'TYPE_MISMATCH'])
      const missing = await client.getBooleanDetails('no-such-flag', true)
      expect([missing.value, missing.reason, missing.errorCode]).toEqual([true, 'ERROR', 'FLAG_NOT_FOUND'])
      await OpenFeature.clearProviders()
    })

    it('custom domains: pending until verified (DNS TXT or HTTP), DOMAIN_TAKEN (409), removal stops resolution', async () => {
      const d = await tenantry.domains.add('acme', 'App.Acme-Corp.test')
      expect([d.domain, d.status, d.slug, d.token?.length]).toEqual(['app.acme-corp.test', 'pending', 'acme', 32])
      expect(d.instructions).toEqual({
        txtName: '_tenantry-verification.app.acme-corp.test', txtValue: `tenantry-verification=${d.token}`,
        httpUrl: 'http://app.acme-corp.test/.well-known/tenantry-domain-verification', httpBody: d.token,
      })
      expect(await tenantry.catalog.byDomain('app.acme-corp.test')).toBeNull()
      await expect(tenantry.resolve({ host: 'app.acme-corp.test', headers: { 'x-tenant': 'nope' } } as any)).rejects.toMatchObject({ code: 'TENANT_NOT_FOUND' })
      expect((await tenantry.domains.add('acme', 'app.acme-corp.test')).token).toBe(d.token)
      expect((await codeOf(tenantry.domains.add('globex', 'app.acme-corp.test'))).code).toBe('DOMAIN_TAKEN')
      txt.set('_tenantry-verification.app.acme-corp.test', [['tenantry-verification=wrong']])
      const failed = await codeOf(tenantry.domains.verify('app.acme-corp.test'))
      expect([failed.code, failed.status]).toEqual(['DOMAIN_VERIFICATION_FAILED', 400])
      expect(failed.message).toContain("'tenantry-verification=wrong'")
      expect(failed.message).toContain('answered 404')
      expect(await tenantry.catalog.byDomain('app.acme-corp.test')).toBeNull()
      txt.set('_tenantry-verification.app.acme-corp.test', [['v=spf1 -all'], ['tenantry-verification=', d.token!]])
      const ok = await tenantry.domains.verify('app.acme-corp.test')
      expect([ok.status, ok.verifiedAt instanceof Date]).toEqual(['verified', true])
      expect((await tenantry.catalog.byDomain('app.acme-corp.test'))?.slug).toBe('acme')
      const taken = await codeOf(tenantry.domains.add('globex', 'app.acme-corp.test'))
      expect([taken.code, taken.status]).toEqual(['DOMAIN_TAKEN', 409])
      // HTTP: the token served at the well-known path.
      const g = await tenantry.domains.add('globex', 'globex.test')
      expect((await codeOf(tenantry.domains.verify('globex.test', { method: 'dns' }))).code).toBe('DOMAIN_VERIFICATION_FAILED')
      http.set(g.instructions!.httpUrl, `${g.token}\n`)
      expect((await tenantry.domains.verify('globex.test', { method: 'http' })).status).toBe('verified')
      expect((await tenantry.domains.list('globex')).map((x) => [x.domain, x.status])).toEqual([['globex.test', 'verified']])
      expect(await tenantry.domains.remove('app.acme-corp.test')).toBe(true)
      expect(await tenantry.catalog.byDomain('app.acme-corp.test')).toBeNull()
      expect(await tenantry.domains.remove('app.acme-corp.test')).toBe(false)
      for (const bad of ['localhost', 'acme_corp.test', 'a.test:8080', '127.0.0.1', '']) {
        expect([bad, (await codeOf(tenantry.domains.add('acme', bad))).code]).toEqual([bad, 'VALIDATION_FAILED'])
      }
      expect((await codeOf(tenantry.domains.verify('never-added.test'))).code).toBe('NOT_FOUND')
    })
  })
}

for (const backend of backends(DB_NAME, ROLE_PREFIX, PG_UP)) configSuite(backend)

/** A child process with its own Tenantry, spoken to in JSON lines. */
class Child {
  readonly proc: ChildProcessWithoutNullStreams
  private nextId = 1
  private readonly pending = new Map<number, (r: Record<string, any>) => void>()
  readonly ready: Promise<void>
  stderr = ''

  constructor(databaseUrl: string) {
    this.proc = spawn(process.execPath, ['--import', 'tsx', CHILD, JSON.stringify({ databaseUrl, rolePrefix: ROLE_PREFIX })], { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] })
    this.proc.stderr.on('data', (d) => { this.stderr += String(d) })
    let onReady!: () => void
    let onFail!: (e: Error) => void
    this.ready = new Promise<void>((resolve, reject) => { onReady = resolve; onFail = reject })
    this.proc.on('exit', (code) => onFail(new Error(`child exited (${code}): ${this.stderr}`)))
    createInterface({ input: this.proc.stdout }).on('line', (line) => {
      let msg: Record<string, any>
      try { msg = JSON.parse(line) } catch { return }
      if (msg.event === 'ready') onReady()
      const p = this.pending.get(msg.id)
      if (p) { this.pending.delete(msg.id); p(msg) }
    })
  }

  async request(cmd: string, args: Record<string, unknown> = {}): Promise<Record<string, any>> {
    const id = this.nextId++
    const reply = await new Promise<Record<string, any>>((resolve) => {
      this.pending.set(id, resolve)
      this.proc.stdin.write(`${JSON.stringify({ id, cmd, ...args })}\n`)
    })
    if (!reply.ok) throw new Error(`child: ${cmd} failed: ${reply.error}`)
    return reply
  }
}

describe.skipIf(!PG_UP)('another process sees every change within a second (PostgreSQL)', () => {
  const DB = 'tenantry_test_config_xproc'
  let tenantry: Tenantry
  let child: Child

  beforeAll(async () => {
    await dropPostgresLeftovers(ROLE_PREFIX, DB)
    const url = await freshDatabase(DB)
    tenantry = await createTenantry({ databaseUrl: url, rolePrefix: ROLE_PREFIX, migrations: DEMO_MIGRATIONS, guard: { redis: null }, observe: { metering: false, tracing: false, metrics: false } })
    await tenantry.migrate()
    await tenantry.config.plans.create('free', { branding: { primaryColor: '#999999' }, limits: { rate: { points: 10, duration: 60 } } })
    await tenantry.config.plans.create('pro', { branding: { primaryColor: '#0000ff' }, limits: { rate: { points: 1000, duration: 60 } } })
    await tenantry.flags.set({ key: 'new-editor', rules: [{ plans: ['pro'], variant: 'on' }] })
    await tenantry.provision({ slug: 'acme', tier: 'pooled', plan: 'free' })
    child = new Child(url)
    await child.ready
  }, 120_000)

  afterAll(async () => {
    await child?.request('close').catch(() => undefined)
    await tenantry?.close()
    await dropPostgresLeftovers(ROLE_PREFIX, DB)
  })

  const waitFor = async (want: Record<string, unknown>) => {
    const r = await child.request('waitFor', { slug: 'acme', want, timeoutMs: 3000 })
    expect(r.view).toMatchObject(want)
    expect(r.seen).toBe(true)
    expect(r.ms).toBeLessThan(1000)
  }

  it('a plan change: branding, flags and limits, without a restart', async () => {
    expect((await child.request('view', { slug: 'acme' })).view).toEqual({ plan: 'free', color: '#999999', editor: false, ratePoints: 10, byDomain: null })
    // The other process enforces the free plan's limit: the 11th request in the minute is refused.
    const free = await child.request('admit', { slug: 'acme', n: 11 })
    expect([free.outcomes, free.limit]).toEqual([[...Array(10).fill('ok'), 'RATE_LIMITED'], '10'])
    await tenantry.config.changePlan('acme', 'pro')
    await waitFor({ plan: 'pro', color: '#0000ff', editor: true, ratePoints: 1000 })
    // …and the pro plan's from then on, without a restart.
    const pro = await child.request('admit', { slug: 'acme', n: 5 })
    expect([pro.outcomes, pro.limit]).toEqual([Array(5).fill('ok'), '1000'])
  })

  it("a plan's own settings, a tenant's layer, a flag and a domain", async () => {
    await tenantry.config.plans.set('pro', '/limits/rate', { points: 5, duration: 1 })
    await waitFor({ ratePoints: 5 })
    await tenantry.config.set('acme', '/branding/primaryColor', '#00ff00')
    await waitFor({ color: '#00ff00' })
    await tenantry.flags.set({ key: 'new-editor', enabled: false })
    await waitFor({ editor: false })
    await tenantry.addDomain('acme', 'acme.custom.test')
    await waitFor({ byDomain: 'acme' })
    await tenantry.domains.remove('acme.custom.test')
    await waitFor({ byDomain: null })
  })
})

describe('configuration paths and layering (pure)', () => {
  it('parses pointers and dots, refuses prototype keys', () => {
    expect(parsePath('/a~1b/c~0d')).toEqual(['a/b', 'c~d'])
    expect(parsePath('branding.primaryColor')).toEqual(['branding', 'primaryColor'])
    expect(parsePath('/')).toEqual([])
    expect(() => parsePath('/constructor/x')).toThrow(expect.objectContaining({ code: 'CONFIG_INVALID' }))
  })
  it('merges objects and replaces arrays and scalars, without touching the layers', () => {
    const a = { o: { x: 1, y: [1, 2] }, s: 'a' }
    const b = { o: { y: [3] }, s: null }
    expect(layer(a, b)).toEqual({ o: { x: 1, y: [3] }, s: null })
    expect(a).toEqual({ o: { x: 1, y: [1, 2] }, s: 'a' })
  })
  it('refuses a schema that does not compile, and defaults that do not pass it, before opening anything', async () => {
    expect((await codeOf(createTenantry({ dataDir: 'memory', config: { schema: { type: 'nonsense' } } }))).code).toBe('CONFIG_INVALID')
    expect((await codeOf(createTenantry({ dataDir: 'memory', config: { schema: SCHEMA, defaults: { maxProjects: 0 } } }))).message).toContain("'/maxProjects'")
  })
  it('accepts a Standard Schema validator (zod, valibot…)', async () => {
    const standard = {
      '~standard': {
        version: 1 as const,
        vendor: 'handmade',
        validate: (v: unknown) => (typeof (v as any).seats === 'number' || (v as any).seats === undefined ? { value: v } : { issues: [{ message: 'seats must be a number', path: ['seats'] }] }),
      },
    }
    const t = await createTenantry({ dataDir: 'memory', migrations: DEMO_MIGRATIONS, observe: { metering: false, tracing: false, metrics: false }, config: { schema: standard } })
    try {
      await t.migrate()
      await t.provision({ slug: 'std', tier: 'pooled' })
      await t.config.set('std', '/seats', 3)
      const e = await codeOf(t.config.set('std', '/seats', 'three'))
      expect([e.code, e.details?.pointer, e.details?.rule, e.message]).toEqual(['CONFIG_INVALID', '/seats', 'handmade', expect.stringContaining('seats must be a number')])
      expect(await t.config.get('std', '/seats')).toBe(3)
    } finally {
      await t.close()
    }
  })
  it('an in-memory OpenFeature provider and Tenantry agree on the same flag', async () => {
    await OpenFeature.setProviderAndWait('mem', new InMemoryProvider({ f: { disabled: false, variants: { on: true, off: false }, defaultVariant: 'on' } }))
    expect(await OpenFeature.getClient('mem').getBooleanValue('f', false)).toBe(true)
    await OpenFeature.clearProviders()
  })
})
