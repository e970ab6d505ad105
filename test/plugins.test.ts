import express from 'express'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { tenantryErrorHandler, tenantryMiddleware } from '../src/adapters/express.ts'
import { tenantryPlugin } from '../src/adapters/fastify.ts'
import { tenantryPluginRouter, tenantryPluginRoutes, type TenantryPlugin } from '../src/adapters/plugins.ts'
import { createTenantry, header, TenantryError, type Tenantry } from '../src/index.ts'
import { exportPlugin } from '../demo/export-plugin.ts'
import { DEMO_MIGRATIONS } from './helpers/backends.ts'

// Issue 12: plugins enabled per plan or tenant through configuration; routes 404 and hooks silent
// for tenants without them; a throwing plugin fails only its own request. The plugin layer sits
// above the data plane, so this suite runs on PGlite only (the configuration it reads is tested on
// both backends in config.test.ts).

const stamped: string[] = []
const provisioned: { slug: string; settings: unknown }[] = []

const stamp: TenantryPlugin = {
  name: 'stamp',
  version: '0.1.0',
  settingsSchema: { type: 'object', properties: { label: { type: 'string', default: 'seen' }, explode: { type: 'boolean' } }, additionalProperties: false },
  onRequest(ctx) {
    if (ctx.settings.explode === true) throw new Error('hook exploded')
    stamped.push(`${ctx.tenant.slug}:${String(ctx.settings.label)}`)
  },
  events: {
    'tenant.provisioned': ({ tenant }, ctx) => { provisioned.push({ slug: tenant.slug, settings: ctx.settings }) },
  },
  fastify(scope) {
    scope.get('/boom', async () => { throw new Error('kaboom') })
    scope.get('/coded', async () => { throw new TenantryError('VALIDATION_FAILED', 'The plugin refused this.') })
  },
  express(router) {
    router.get('/hello', (req, res) => { res.json({ tenant: req.tenant!.slug, label: req.plugin!.settings.label }) })
    router.get('/boom', () => { throw new Error('kaboom') })
  },
}

describe('plugins (PGlite)', () => {
  let tenantry: Tenantry
  let app: FastifyInstance

  beforeAll(async () => {
    tenantry = await createTenantry({
      dataDir: 'memory',
      migrations: DEMO_MIGRATIONS,
      resolve: [header()],
      observe: { logger: false, metrics: false, tracing: false, metering: false },
      plugins: [exportPlugin, stamp],
    })
    await tenantry.migrate()
    await tenantry.config.plans.create('pro', { plugins: { export: { enabled: true }, stamp: { enabled: true } } })
    await tenantry.provision({ slug: 'acme', tier: 'pooled', plan: 'pro' })
    await tenantry.provision({ slug: 'globex', tier: 'schema' })
    for (const [slug, names] of [['acme', ['Alpha', 'Beta; "two"']], ['globex', ['Gamma']]] as const) {
      for (const n of names) await tenantry.withTenant(slug, () => tenantry.db.query('INSERT INTO projects (name) VALUES ($1)', [n]))
    }
    app = Fastify()
    await app.register(tenantryPlugin, { tenantry })
    await app.register(tenantryPluginRoutes, { tenantry })
    app.get('/api/ping', async (req) => ({ tenant: req.tenant.slug }))
  }, 120_000)

  afterAll(async () => {
    await app?.close()
    await tenantry?.close()
  })

  const get = (url: string, tenant: string) => app.inject({ url, headers: { 'x-tenant': tenant } })

  it('a plan enables a plugin: its routes serve the tenants on it and 404 for the others', async () => {
    const r = await get('/plugins/export/projects.csv', 'acme')
    expect([r.statusCode, r.headers['content-type'], r.body.split('\n').slice(1, 3).map((l) => l.split(',').slice(1, 2)[0])]).toEqual([200, 'text/csv; charset=utf-8', ['Alpha', '"Beta; ""two"""']])
    const none = await get('/plugins/export/projects.csv', 'globex')
    expect([none.statusCode, none.json().code]).toEqual([404, 'NOT_FOUND'])
    expect(tenantry.plugins.enabledList((await tenantry.findTenant('acme'))!).map((p) => p.name)).toEqual(['export', 'stamp'])
  })

  it('a tenant enables it for itself, with settings validated by the plugin\'s schema', async () => {
    const bad = await tenantry.config.set('globex', '/plugins/export/settings/delimiter', '|').catch((e: TenantryError) => e)
    expect([bad instanceof TenantryError && bad.code, (bad as TenantryError).details?.pointer, (bad as TenantryError).details?.rule]).toEqual(['CONFIG_INVALID', '/plugins/export/settings/delimiter', 'enum'])
    const unknown = await tenantry.config.set('globex', '/plugins/nope/enabled', true).catch((e: TenantryError) => e)
    expect([(unknown as TenantryError).code, (unknown as TenantryError).details?.pointer]).toEqual(['CONFIG_INVALID', '/plugins/nope'])
    await tenantry.config.set('globex', '/plugins/export', { enabled: true, settings: { delimiter: ';' } })
    const r = await get('/plugins/export/projects.csv', 'globex')
    expect([r.statusCode, r.body.split('\n')[0], r.body.split('\n')[1].split(';')[1]]).toEqual([200, 'id;name;created_at', 'Gamma'])
    // And off again for acme, by its own layer over its plan's.
    await tenantry.config.set('acme', '/plugins/export/enabled', false)
    expect((await get('/plugins/export/projects.csv', 'acme')).statusCode).toBe(404)
    await tenantry.config.unset('acme', '/plugins/export')
    expect((await get('/plugins/export/projects.csv', 'acme')).statusCode).toBe(200)
  })

  it('request hooks run only for tenants that have the plugin', async () => {
    stamped.length = 0
    expect((await get('/api/ping', 'acme')).statusCode).toBe(200)
    expect((await get('/api/ping', 'globex')).statusCode).toBe(200)
    expect(stamped).toEqual(['acme:seen'])
  })

  it("a throwing plugin fails only that request, PLUGIN_FAILED naming it; another tenant's requests go on", async () => {
    const [boom, other] = await Promise.all([get('/plugins/stamp/boom', 'acme'), get('/api/ping', 'globex')])
    expect([boom.statusCode, boom.json().code, boom.json().details]).toEqual([500, 'PLUGIN_FAILED', { plugin: 'stamp' }])
    expect(boom.json().message).toContain("Plugin 'stamp' failed: kaboom")
    expect([other.statusCode, other.json()]).toEqual([200, { tenant: 'globex' }])
    // The plugin's own coded errors keep their status.
    const coded = await get('/plugins/stamp/coded', 'acme')
    expect([coded.statusCode, coded.json().code]).toEqual([400, 'VALIDATION_FAILED'])
    // A throwing hook: that tenant's request fails, the other tenant's does not.
    await tenantry.config.set('acme', '/plugins/stamp/settings/explode', true)
    const [a, g] = await Promise.all([get('/api/ping', 'acme'), get('/api/ping', 'globex')])
    expect([a.statusCode, a.json().code, a.json().details]).toEqual([500, 'PLUGIN_FAILED', { plugin: 'stamp' }])
    expect(g.statusCode).toBe(200)
    await tenantry.config.unset('acme', '/plugins/stamp/settings/explode')
    expect((await get('/api/ping', 'acme')).statusCode).toBe(200)
  })

  it('lifecycle handlers run for tenants that have the plugin, with their settings', async () => {
    provisioned.length = 0
    await tenantry.provision({ slug: 'initech', tier: 'pooled', plan: 'pro' })
    await tenantry.provision({ slug: 'hooli', tier: 'pooled' })
    await new Promise((r) => setTimeout(r, 50))
    expect(provisioned).toEqual([{ slug: 'initech', settings: { label: 'seen' } }])
  })

  it('Express: the router mounts the routes, 404 without the plugin, PLUGIN_FAILED when it throws', async () => {
    const e = express()
    e.use(tenantryMiddleware(tenantry))
    e.use(tenantryPluginRouter(tenantry))
    e.get('/api/ping', (req, res) => { res.json({ tenant: req.tenant!.slug }) })
    e.use(tenantryErrorHandler())
    const server = e.listen(0)
    const base = `http://127.0.0.1:${(server.address() as { port: number }).port}`
    try {
      const call = async (path: string, tenant: string) => {
        const r = await fetch(`${base}${path}`, { headers: { 'x-tenant': tenant } })
        return [r.status, await r.json()]
      }
      expect(await call('/plugins/stamp/hello', 'acme')).toEqual([200, { tenant: 'acme', label: 'seen' }])
      expect((await call('/plugins/stamp/hello', 'globex'))[0]).toBe(404)
      const [status, body] = await call('/plugins/stamp/boom', 'acme')
      expect([status, (body as any).code, (body as any).details]).toEqual([500, 'PLUGIN_FAILED', { plugin: 'stamp' }])
      expect(await call('/api/ping', 'globex')).toEqual([200, { tenant: 'globex' }])
    } finally {
      server.close()
    }
  })

  it('bad plugins are refused before anything opens', async () => {
    const err = await createTenantry({ dataDir: 'memory', plugins: [{ name: 'Bad Name', version: '1' }] }).catch((e: TenantryError) => e)
    expect((err as TenantryError).code).toBe('CONFIG_INVALID')
    const twice = await createTenantry({ dataDir: 'memory', plugins: [stamp, stamp] }).catch((e: TenantryError) => e)
    expect((twice as TenantryError).message).toContain("Two plugins are named 'stamp'")
  })
})
