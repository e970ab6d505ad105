import type { AddressInfo } from 'node:net'
import Fastify, { type FastifyInstance } from 'fastify'
import { SignJWT, exportJWK, generateKeyPair, importJWK, type JWK } from 'jose'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { tenantryPlugin } from '../src/adapters/fastify.ts'
import { createTenantry, currentTenant, header, propagated, type Tenant, type Tenantry } from '../src/index.ts'
import { DEMO_MIGRATIONS, dropPostgresLeftovers, freshDatabase, postgresAvailable } from './helpers/backends.ts'

// Issue 16: service-to-service tenant propagation (signed assertion + baggage) and its verification.

const DB_NAME = 'tenantry_test_propagation'
const ROLE_PREFIX = 'th_prop'
const PG_UP = await postgresAvailable()

async function signingKey(kid: string): Promise<JWK> {
  const { privateKey } = await generateKeyPair('ES256', { extractable: true })
  return { ...(await exportJWK(privateKey)), kid, alg: 'ES256' }
}

describe('tenant assertions (PGlite)', () => {
  let tenantry: Tenantry
  let app: FastifyInstance
  let acme: Tenant
  let key: JWK
  let publicJwk: JWK

  beforeAll(async () => {
    key = await signingKey('orders-1')
    publicJwk = { kty: key.kty, crv: key.crv, x: key.x, y: key.y, kid: key.kid, alg: key.alg }
    tenantry = await createTenantry({
      dataDir: 'memory', migrations: DEMO_MIGRATIONS, observe: { logger: false, metering: false },
      propagation: { service: 'orders', signingKey: key, ttlSeconds: 30 },
      resolve: [header(), propagated({ audience: 'billing', keys: { keys: [publicJwk] }, issuers: ['orders'] })],
    })
    await tenantry.migrate()
    acme = await tenantry.provision({ slug: 'acme', tier: 'pooled' })
    app = Fastify()
    app.register(tenantryPlugin, { tenantry })
    app.register(async (s) => { s.get('/whoami', async () => ({ tenant: currentTenant().slug })) })
    await app.ready()
  }, 120_000)

  afterAll(async () => {
    await app?.close()
    await tenantry?.close()
  })

  const call = async (headers: Record<string, string>) => {
    const r = await app.inject({ url: '/whoami', headers })
    const body = r.json()
    return [r.statusCode, body.tenant ?? body.code, body.details?.reason]
  }

  it('signs a short-lived assertion with baggage inside a tenant context, and the receiver resolves the tenant from it', async () => {
    const headers = await tenantry.withTenant('acme', () => tenantry.propagation.headers('billing'))
    expect(Object.keys(headers).sort()).toEqual(['baggage', 'x-tenant-assertion'])
    expect(headers.baggage).toBe(`tenant.id=${acme.id},tenant.slug=acme`)
    const [h, p] = headers['x-tenant-assertion'].split('.').slice(0, 2).map((x) => JSON.parse(Buffer.from(x, 'base64url').toString()))
    expect(h).toEqual({ alg: 'ES256', kid: 'orders-1', typ: 'tenant-assertion+jwt' })
    expect(p).toMatchObject({ tid: acme.id, slug: 'acme', iss: 'orders', aud: 'billing' })
    expect(p.exp - p.iat).toBe(30)
    expect(p.jti).toMatch(/^[0-9a-f-]{36}$/)
    expect(await call(headers)).toEqual([200, 'acme', undefined])
    // Outside a tenant context there is nothing to assert.
    await expect(tenantry.propagation.headers('billing')).rejects.toMatchObject({ code: 'TENANT_CONTEXT_MISSING' })
  })

  it('refuses forged, tampered, expired (replayed), wrong-audience and malformed assertions with 401 TENANT_ASSERTION_INVALID', async () => {
    const good = (await tenantry.withTenant('acme', () => tenantry.propagation.headers('billing')))['x-tenant-assertion']
    // Another key under the same kid: a forgery.
    const forger = await importJWK(await signingKey('orders-1'), 'ES256')
    const forged = await new SignJWT({ tid: acme.id }).setProtectedHeader({ alg: 'ES256', kid: 'orders-1', typ: 'tenant-assertion+jwt' })
      .setIssuer('orders').setAudience('billing').setIssuedAt().setExpirationTime('30s').setJti('x').sign(forger)
    expect(await call({ 'x-tenant-assertion': forged })).toEqual([401, 'TENANT_ASSERTION_INVALID', 'forged'])
    // The payload of a good one changed to another tenant id.
    const [h, p, s] = good.split('.')
    const payload = JSON.parse(Buffer.from(p, 'base64url').toString())
    const tampered = [h, Buffer.from(JSON.stringify({ ...payload, tid: '00000000-0000-4000-8000-000000000000' })).toString('base64url'), s].join('.')
    expect(await call({ 'x-tenant-assertion': tampered })).toEqual([401, 'TENANT_ASSERTION_INVALID', 'forged'])
    // Properly signed, but expired a minute ago: a replay after expiry.
    const real = await importJWK(key, 'ES256')
    const now = Math.floor(Date.now() / 1000)
    const stale = await new SignJWT({ tid: acme.id }).setProtectedHeader({ alg: 'ES256', kid: 'orders-1', typ: 'tenant-assertion+jwt' })
      .setIssuer('orders').setAudience('billing').setIssuedAt(now - 90).setExpirationTime(now - 60).setJti('y').sign(real)
    expect(await call({ 'x-tenant-assertion': stale })).toEqual([401, 'TENANT_ASSERTION_INVALID', 'expired'])
    const elsewhere = (await tenantry.withTenant('acme', () => tenantry.propagation.headers('payments')))['x-tenant-assertion']
    expect(await call({ 'x-tenant-assertion': elsewhere })).toEqual([401, 'TENANT_ASSERTION_INVALID', 'audience'])
    // A plain JWT of the right key but not typed as a tenant assertion (a user token replayed here).
    const untyped = await new SignJWT({ tid: acme.id }).setProtectedHeader({ alg: 'ES256', kid: 'orders-1' })
      .setIssuer('orders').setAudience('billing').setIssuedAt().setExpirationTime('30s').setJti('z').sign(real)
    expect((await call({ 'x-tenant-assertion': untyped }))[1]).toBe('TENANT_ASSERTION_INVALID')
    expect(await call({ 'x-tenant-assertion': 'not.a.jws' })).toEqual([401, 'TENANT_ASSERTION_INVALID', 'malformed'])
    // The assertion and a header naming another tenant: they must agree.
    await tenantry.provision({ slug: 'globex', tier: 'pooled' })
    expect((await call({ 'x-tenant-assertion': good, 'x-tenant': 'globex' }))[1]).toBe('TENANT_MISMATCH')
  })

  it('with rejectReplays, refuses an assertion used before (reason replayed) until it expires; others pass', async () => {
    const strategy = propagated({ audience: 'billing', keys: { keys: [publicJwk] }, issuers: ['orders'], rejectReplays: true })
    const identify = (assertion: string) => Promise.resolve()
      .then(() => strategy.identify({ host: undefined, path: '/', headers: { 'x-tenant-assertion': assertion } }))
      .then((id) => [id?.value], (e) => [e.code, e.details?.reason])
    const mint = async () => (await tenantry.withTenant('acme', () => tenantry.propagation.headers('billing')))['x-tenant-assertion']
    const first = await mint()
    expect(await identify(first)).toEqual([acme.id])
    expect(await identify(first)).toEqual(['TENANT_ASSERTION_INVALID', 'replayed'])
    expect(await identify(await mint())).toEqual([acme.id])
    // A forged one is refused as forged and does not take a place in the cache.
    expect(await identify(first.slice(0, -4) + 'AAAA')).toEqual(['TENANT_ASSERTION_INVALID', 'forged'])
    // Without the option (the app above), the same assertion passes twice.
    expect(await call({ 'x-tenant-assertion': first })).toEqual([200, 'acme', undefined])
    expect(await call({ 'x-tenant-assertion': first })).toEqual([200, 'acme', undefined])
  })

  it('refuses bad configuration at once', async () => {
    await expect(createTenantry({ dataDir: 'memory', propagation: { service: 'orders', signingKey: { kty: 'oct', k: 'abc', kid: 'k', alg: 'HS256' } } })).rejects.toMatchObject({ code: 'CONFIG_INVALID' })
    expect(() => propagated({ audience: '', keys: { keys: [] } })).toThrow(expect.objectContaining({ code: 'CONFIG_INVALID' }))
  })
})

describe.skipIf(!PG_UP)('two demo services calling each other (PostgreSQL, real HTTP, keys by JWKS URL)', () => {
  let url: string
  let orders: Tenantry
  let billing: Tenantry
  const apps: FastifyInstance[] = []
  let ordersUrl = ''
  let billingUrl = ''

  beforeAll(async () => {
    await dropPostgresLeftovers(ROLE_PREFIX, DB_NAME)
    url = await freshDatabase(DB_NAME)
    // Each service publishes its JWKS; the other verifies against that URL (so keys can rotate).
    const ordersApp = Fastify()
    const billingApp = Fastify()
    apps.push(ordersApp, billingApp)
    // Each strategy needs the other service's JWKS URL before either listens: pick the ports first.
    const ordersKey = await signingKey('orders-2026-12')
    const billingKey = await signingKey('billing-2026-12')
    const ordersPort = await freePort()
    const billingPort = await freePort()
    ordersUrl = `http://127.0.0.1:${ordersPort}`
    billingUrl = `http://127.0.0.1:${billingPort}`
    const common = { databaseUrl: url, rolePrefix: ROLE_PREFIX, migrations: DEMO_MIGRATIONS, observe: { logger: false as const, metering: false as const } }
    orders = await createTenantry({ ...common, propagation: { service: 'orders', signingKey: ordersKey },
      resolve: [header(), propagated({ audience: 'orders', keys: new URL(`${billingUrl}/.well-known/jwks.json`), issuers: ['billing'] })] })
    billing = await createTenantry({ ...common, resumeOperations: false, propagation: { service: 'billing', signingKey: billingKey },
      resolve: [propagated({ audience: 'billing', keys: new URL(`${ordersUrl}/.well-known/jwks.json`), issuers: ['orders'] })] })
    await orders.migrate()
    await orders.provision({ slug: 'acme', tier: 'schema' })
    await orders.provision({ slug: 'globex', tier: 'pooled' })

    ordersApp.get('/.well-known/jwks.json', async () => orders.propagation.jwks())
    ordersApp.register(tenantryPlugin, { tenantry: orders, skip: (r) => r.url.startsWith('/.well-known/') })
    ordersApp.register(async (s) => {
      s.get('/orders', async () => {
        const invoices = await (await orders.propagation.fetch(`${billingUrl}/invoices`, { audience: 'billing' })).json()
        return { service: 'orders', tenant: currentTenant().slug, invoices }
      })
      s.get('/customer', async (request) => ({ service: 'orders', tenant: currentTenant().slug, baggage: request.headers.baggage ?? null }))
    })
    billingApp.get('/.well-known/jwks.json', async () => billing.propagation.jwks())
    billingApp.register(tenantryPlugin, { tenantry: billing, skip: (r) => r.url.startsWith('/.well-known/') })
    billingApp.register(async (s) => {
      s.get('/invoices', async () => {
        // Billing calls back into orders with the tenant it was given, re-asserted under its own key.
        const customer = await (await billing.propagation.fetch(`${ordersUrl}/customer`, { audience: 'orders' })).json()
        return { service: 'billing', tenant: currentTenant().slug, customer }
      })
    })
    await ordersApp.listen({ port: ordersPort, host: '127.0.0.1' })
    await billingApp.listen({ port: billingPort, host: '127.0.0.1' })
  }, 120_000)

  afterAll(async () => {
    for (const a of apps) await a.close()
    await billing?.close()
    await orders?.close()
    await dropPostgresLeftovers(ROLE_PREFIX, DB_NAME)
  })

  it('carries and verifies the tenant orders → billing → orders, and refuses a direct call without or with a bad assertion', async () => {
    for (const slug of ['acme', 'globex']) {
      const res = await fetch(`${ordersUrl}/orders`, { headers: { 'x-tenant': slug } })
      const body = await res.json()
      const id = (await orders.findTenant(slug))!.id
      expect([res.status, body]).toEqual([200, {
        service: 'orders', tenant: slug,
        invoices: { service: 'billing', tenant: slug, customer: { service: 'orders', tenant: slug, baggage: `tenant.id=${id},tenant.slug=${slug}` } },
      }])
    }
    // A client cannot name a tenant to billing: it takes only assertions from orders.
    const direct = await fetch(`${billingUrl}/invoices`, { headers: { 'x-tenant': 'acme' } })
    expect([direct.status, (await direct.json()).code]).toEqual([400, 'TENANT_REQUIRED'])
    // An assertion orders made for itself (audience 'orders') is refused by billing.
    const own = await orders.withTenant('acme', () => orders.propagation.headers('orders'))
    const wrong = await fetch(`${billingUrl}/invoices`, { headers: own })
    expect([wrong.status, (await wrong.json()).details?.reason]).toEqual([401, 'audience'])
  })
})

async function freePort(): Promise<number> {
  const probe = Fastify()
  await probe.listen({ port: 0, host: '127.0.0.1' })
  const port = (probe.server.address() as AddressInfo).port
  await probe.close()
  return port
}
