import { request as httpsRequest } from 'node:https'
import type { AddressInfo } from 'node:net'
import { createServer as createHttpsServer } from 'node:https'
import express from 'express'
import Fastify, { type FastifyInstance } from 'fastify'
import { generate } from 'selfsigned'
import { parseAllDocuments } from 'yaml'
import { mkdtempSync, readdirSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { tenantryAdmin } from '../src/admin/plugin.ts'
import { adminTokens } from '../src/admin/tokens.ts'
import { runCli } from '../src/cli/main.ts'
import { tenantryErrorHandler, tenantryMiddleware } from '../src/adapters/express.ts'
import { tenantryPlugin } from '../src/adapters/fastify.ts'
import {
  apiKey, apiKeyOf, clientCertificate, createTenantry, currentTenant, requireScope, subdomain, userFromTenantApiKey,
  type Tenant, type Tenantry, type TenantryOptions,
} from '../src/index.ts'
import { backends, DEMO_MIGRATIONS, postgresAvailable, type Backend } from './helpers/backends.ts'

// Issue 16: per-tenant API keys and mTLS client certificates, on real PostgreSQL and on PGlite.

const DB_NAME = 'tenantry_test_security'
const ROLE_PREFIX = 'th_sec'
const PG_UP = await postgresAvailable()
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

type Reply = { status: number; body: any }

async function inject(app: FastifyInstance, headers: Record<string, string>, url = '/whoami'): Promise<Reply> {
  const res = await app.inject({ method: 'GET', url, headers })
  return { status: res.statusCode, body: res.json() }
}

function appFor(tenantry: Tenantry): FastifyInstance {
  const app = Fastify()
  app.register(tenantryPlugin, { tenantry })
  app.register(async (scoped) => {
    scoped.get('/whoami', async (request) => ({ tenant: currentTenant().slug, key: apiKeyOf(request) }))
    scoped.get('/write', async (request) => { requireScope(request, 'projects:write'); return { ok: true } })
  })
  return app
}

function keySuite(backend: Backend): void {
  describe.skipIf(!backend.enabled)(`API keys (${backend.name})`, () => {
    let url: string | undefined
    let tenantry: Tenantry
    let app: FastifyInstance
    let acme: Tenant
    const connection = (): TenantryOptions => (url ? { databaseUrl: url, rolePrefix: ROLE_PREFIX } : { dataDir: 'memory' })

    beforeAll(async () => {
      url = await backend.url()
      tenantry = await createTenantry({ ...connection(), migrations: DEMO_MIGRATIONS, resolve: [apiKey()], observe: { logger: false, metering: false } })
      await tenantry.migrate()
      acme = await tenantry.provision({ slug: 'acme', tier: 'pooled' })
      await tenantry.provision({ slug: 'globex', tier: 'schema' })
      app = appFor(tenantry)
      await app.ready()
    }, 120_000)

    afterAll(async () => {
      await app?.close()
      await tenantry?.close()
      await backend.cleanUp()
    })

    it('creates a key shown once, stores only its hash, and resolves the tenant and scopes with it', async () => {
      const { key, info } = await tenantry.apiKeys.create('acme', { name: 'ci', scopes: ['projects:read'] }, { actor: 'cli:test@host' })
      expect(key).toMatch(/^tnk_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/)
      expect(key.slice(4, 20)).toBe(info.id)
      expect(info).toMatchObject({ tenantId: acme.id, name: 'ci', scopes: ['projects:read'], expiresAt: null, createdBy: 'cli:test@host', revokedAt: null, lastUsedAt: null })
      const listed = await tenantry.apiKeys.list('acme')
      expect(listed.map((k) => k.name)).toEqual(['ci'])
      expect(JSON.stringify(listed)).not.toContain(key.slice(21))
      // The catalog holds the SHA-256 of the key, never the key.
      const main = tenantry.dataPlane.server('main')
      const rows = (await tenantry.dataPlane.driver('main').admin(main.mainDatabase).query<{ key_hash: string }>('SELECT key_hash FROM tenantry.api_keys')).rows
      expect(rows).toHaveLength(1)
      expect(rows[0].key_hash).toMatch(/^[0-9a-f]{64}$/)
      expect(rows[0].key_hash).not.toContain(key.slice(21, 40))

      const ok = await inject(app, { authorization: `Bearer ${key}` })
      expect(ok).toEqual({ status: 200, body: { tenant: 'acme', key: { id: info.id, tenantId: acme.id, scopes: ['projects:read'] } } })
      expect(await inject(app, { authorization: `Bearer ${key}` }, '/write')).toMatchObject({ status: 403, body: { code: 'API_KEY_SCOPE_MISSING' } })

      const entries = await tenantry.audit.list({ tenant: 'acme', action: 'api-key.create' })
      expect(entries.map((e) => [e.actor, e.action, e.slug, e.details.key])).toEqual([['cli:test@host', 'api-key.create', 'acme', info.id]])
    })

    it('refuses malformed, unknown, forged, expired and revoked keys with 401 API_KEY_INVALID and the reason', async () => {
      const { key } = await tenantry.apiKeys.create('globex', { name: 'all', scopes: ['*'] })
      expect(await inject(app, { authorization: `Bearer ${key}` }, '/write')).toEqual({ status: 200, body: { ok: true } })
      const reason = async (headers: Record<string, string>) => {
        const r = await inject(app, headers)
        return [r.status, r.body.code, r.body.details?.reason]
      }
      expect(await reason({ authorization: 'Bearer tnk_short' })).toEqual([401, 'API_KEY_INVALID', 'malformed'])
      expect(await reason({ authorization: `Bearer tnk_0123456789abcdef_${'A'.repeat(43)}` })).toEqual([401, 'API_KEY_INVALID', 'unknown'])
      // The right id with another secret: a forgery.
      const forged = key.slice(0, 21) + (key[21] === 'A' ? 'B' : 'A') + key.slice(22)
      expect(await reason({ authorization: `Bearer ${forged}` })).toEqual([401, 'API_KEY_INVALID', 'unknown'])
      // No key at all: the resolver's 400.
      expect(await reason({})).toEqual([400, 'TENANT_REQUIRED', undefined])

      const soon = await tenantry.apiKeys.create('globex', { name: 'brief', expiresAt: new Date(Date.now() + 800) })
      expect((await inject(app, { authorization: `Bearer ${soon.key}` })).status).toBe(200)
      await sleep(900)
      expect(await reason({ authorization: `Bearer ${soon.key}` })).toEqual([401, 'API_KEY_INVALID', 'expired'])

      const revoked = await tenantry.apiKeys.revoke('globex', 'all', { actor: 'cli:test@host' })
      expect(revoked.revokedAt).toBeInstanceOf(Date)
      expect(await reason({ authorization: `Bearer ${key}` })).toEqual([401, 'API_KEY_INVALID', 'revoked'])
      const entry = (await tenantry.audit.list({ tenant: 'globex', action: 'api-key.revoke' }))[0]
      expect([entry.actor, entry.details.name]).toEqual(['cli:test@host', 'all'])
      expect((await tenantry.audit.verify()).ok).toBe(true)
    })

    it('refuses bad input with a coded error and writes nothing', async () => {
      const before = (await tenantry.apiKeys.list('acme')).length
      const seq = (await tenantry.audit.list({ limit: 1 }))[0]?.seq
      const code = (p: Promise<unknown>) => p.then(() => 'resolved', (e) => `${e.code}:${e.details?.field ?? ''}`)
      expect(await code(tenantry.apiKeys.create('nope', { name: 'x' }))).toBe('TENANT_NOT_FOUND:')
      expect(await code(tenantry.apiKeys.create('acme', { name: 'Bad Name' }))).toBe('VALIDATION_FAILED:name')
      expect(await code(tenantry.apiKeys.create('acme', { name: 'x', scopes: ['DROP TABLE'] }))).toBe('VALIDATION_FAILED:scopes')
      expect(await code(tenantry.apiKeys.create('acme', { name: 'x', expiresAt: new Date(Date.now() - 1000) }))).toBe('VALIDATION_FAILED:expiresAt')
      expect(await code(tenantry.apiKeys.create('acme', { name: 'ci' }))).toBe('CONFLICT:name')
      expect(await code(tenantry.apiKeys.revoke('acme', 'no-such-key'))).toBe('NOT_FOUND:')
      expect((await tenantry.apiKeys.list('acme')).length).toBe(before)
      expect((await tenantry.audit.list({ limit: 1 }))[0]?.seq).toBe(seq)
    })

    it('records last use lazily: not on the request, within about a second after it', async () => {
      const { key, info } = await tenantry.apiKeys.create('acme', { name: 'lazy' })
      expect((await inject(app, { authorization: `Bearer ${key}` })).status).toBe(200)
      expect((await tenantry.apiKeys.list('acme')).find((k) => k.id === info.id)?.lastUsedAt).toBeNull()
      await sleep(1300)
      const used = (await tenantry.apiKeys.list('acme')).find((k) => k.id === info.id)?.lastUsedAt
      expect(used).toBeInstanceOf(Date)
      // The rate limiter's "user" is the key id, read without a lookup; the secret never is a limiter key.
      expect(userFromTenantApiKey()({ headers: { authorization: `Bearer ${key}` } })).toBe(`key:${info.id}`)
      expect(userFromTenantApiKey()({ headers: { authorization: 'Bearer eyJhbGciOi.x.y' } })).toBeNull()
    })

    it.skipIf(backend.name !== 'PostgreSQL')('CLI keys/certs create, list, revoke and the admin routes call the same library functions', async () => {
      const out: string[] = []
      vi.spyOn(console, 'log').mockImplementation((...a) => { out.push(a.join(' ')) })
      vi.spyOn(console, 'error').mockImplementation(() => undefined)
      const cli = async (...args: string[]) => {
        out.length = 0
        const code = await runCli([...args, '--database-url', url!, '--role-prefix', ROLE_PREFIX])
        return { code, text: out.join('\n') }
      }
      const admin = Fastify()
      try {
        const created = await cli('keys', 'create', 'globex', 'deploy', '--scope', 'deploy:run', 'projects:read', '--json')
        expect(created.code).toBe(0)
        const made = JSON.parse(created.text)
        expect(made).toMatchObject({ name: 'deploy', scopes: ['deploy:run', 'projects:read'] })
        expect(await inject(app, { authorization: `Bearer ${made.key}` })).toMatchObject({ status: 200, body: { tenant: 'globex' } })
        const listed = await cli('keys', 'list', 'globex')
        expect(listed.text).toMatch(/deploy\s+deploy:run,projects:read/)
        expect(listed.text).not.toContain(made.key)
        expect((await cli('keys', 'create', 'globex', 'deploy')).code).toBe(1)
        expect((await cli('keys', 'create', 'globex', 'x', '--expires', 'tomorrow')).code).toBe(2)
        expect((await cli('keys', 'revoke', 'globex', 'deploy')).code).toBe(0)
        // The CLI is another runtime: its revocation reaches this one through the catalog's notification (within 1 s).
        const started = Date.now()
        let revoked = await inject(app, { authorization: `Bearer ${made.key}` })
        while (revoked.status === 200 && Date.now() - started < 1000) { await sleep(20); revoked = await inject(app, { authorization: `Bearer ${made.key}` }) }
        expect(revoked.body.code).toBe('API_KEY_INVALID')
        expect((await cli('keys', 'revoke', 'globex', 'deploy')).code).toBe(1)

        const dir = mkdtempSync(join(tmpdir(), 'tenantry-sec-'))
        const pems = await certificate('ops-cli')
        writeFileSync(join(dir, 'c.pem'), pems.cert)
        const added = await cli('certs', 'add', 'globex', join(dir, 'c.pem'), '--json')
        expect(added.code).toBe(0)
        expect(JSON.parse(added.text)).toMatchObject({ name: 'ops-cli', subject: 'CN=ops-cli', revokedAt: null })
        expect((await cli('certs', 'list', 'globex')).text).toMatch(/ops-cli\s+certificate\s+[0-9a-f]{64}\s+CN=ops-cli\s+-/)
        const ca = await authority('Globex Ops CA')
        writeFileSync(join(dir, 'ca.pem'), ca.cert)
        const caAdded = await cli('certs', 'add', 'globex', '--ca', join(dir, 'ca.pem'), '--san', 'URI:spiffe://globex.example/**', '--subject', 'O=Globex', '--json')
        expect(caAdded.code).toBe(0)
        expect(JSON.parse(caAdded.text)).toMatchObject({ kind: 'ca', name: 'globex-ops-ca', sanPattern: 'URI:spiffe://globex.example/**', subjectPattern: 'O=Globex' })
        expect((await cli('certs', 'list', 'globex')).text).toMatch(/globex-ops-ca\s+ca\s+[0-9a-f]{64}\s+CN=Globex Ops CA\s+san URI:spiffe:\/\/globex.example\/\*\*; subject O=Globex/)
        expect((await cli('certs', 'add', 'globex', join(dir, 'c.pem'), '--ca', join(dir, 'ca.pem'))).code).toBe(1)
        expect((await cli('certs', 'revoke', 'globex', 'globex-ops-ca')).code).toBe(0)
        expect((await cli('certs', 'add', 'globex', join(dir, 'missing.pem'))).code).toBe(1)
        expect((await cli('certs', 'revoke', 'globex', 'ops-cli')).code).toBe(0)
        const actors = (await tenantry.audit.list({ tenant: 'globex' })).filter((e) => /^(api-key|client-cert|client-ca)\./.test(e.action)).map((e) => [e.action, e.actor.startsWith('cli:')])
        expect(actors.slice(0, 6)).toEqual([['client-cert.revoke', true], ['client-ca.revoke', true], ['client-ca.add', true], ['client-cert.add', true], ['api-key.revoke', true], ['api-key.create', true]])

        // The CLI's other control-plane actions are audited with the OS user too.
        expect((await cli('tenants', 'create', 'initech', '--tier', 'pooled', '--migrations', DEMO_MIGRATIONS)).code).toBe(0)
        const create = (await tenantry.audit.list({ tenant: 'initech' })).map((e) => [e.action, e.actor.startsWith('cli:'), e.afterDigest !== null])
        // One record: the provision operation's own start and outcome, with the OS user (no summary entry after them).
        expect(create).toEqual([['operation.provision.done', true, false], ['operation.provision.start', true, true]])
        const outcome = (await tenantry.audit.list({ tenant: 'initech', action: 'operation.provision.done' }))[0]
        expect(outcome.details.facts).toMatchObject({ slug: 'initech', tier: 'pooled', server: 'main' })

        const { token } = await (await adminTokens(tenantry)).create({ name: 'sec-ops', role: 'operator' }, 'test')
        await admin.register(tenantryAdmin, { prefix: '/admin', tenantry, console: false, docs: false })
        const call = async (method: string, path: string, payload?: object) => {
          const r = await admin.inject({ method: method as 'GET', url: `/admin/api${path}`, headers: { authorization: `Bearer ${token}` }, ...(payload ? { payload } : {}) })
          return { status: r.statusCode, body: r.json() }
        }
        const viaApi = await call('POST', '/tenants/acme/api-keys', { name: 'from-api', scopes: ['projects:read'] })
        expect(viaApi.status).toBe(201)
        expect(await inject(app, { authorization: `Bearer ${viaApi.body.key}` })).toMatchObject({ status: 200, body: { tenant: 'acme' } })
        expect((await call('GET', '/tenants/acme/api-keys')).body.map((k: { name: string }) => k.name)).toContain('from-api')
        expect(await call('POST', '/tenants/acme/api-keys', { name: 'x', extra: 1 })).toMatchObject({ status: 400, body: { code: 'VALIDATION_FAILED' } })
        expect(await call('POST', '/tenants/nope/api-keys', { name: 'x' })).toMatchObject({ status: 404, body: { code: 'TENANT_NOT_FOUND' } })
        expect((await call('DELETE', '/tenants/acme/api-keys/from-api')).status).toBe(200)
        expect((await inject(app, { authorization: `Bearer ${viaApi.body.key}` })).body.code).toBe('API_KEY_INVALID')
        const cert = await call('POST', '/tenants/acme/certificates', { pem: (await certificate('api-cert')).cert })
        expect([cert.status, cert.body.name]).toEqual([201, 'api-cert'])
        expect((await call('DELETE', `/tenants/acme/certificates/${cert.body.fingerprint}`)).body.revokedAt).not.toBeNull()
        const entry = (await tenantry.audit.list({ tenant: 'acme', action: 'client-cert.revoke' }))[0]
        expect(entry.actor).toBe('token:sec-ops')
      } finally {
        vi.restoreAllMocks()
        await admin.close()
      }
    })

    it.skipIf(backend.name !== 'PostgreSQL')('revokes in another process within one second', async () => {
      if (!url) return
      const other = await createTenantry({ databaseUrl: url, rolePrefix: ROLE_PREFIX, resolve: [apiKey()], observe: { logger: false, metering: false }, resumeOperations: false })
      const otherApp = appFor(other)
      try {
        const { key } = await tenantry.apiKeys.create('acme', { name: 'shared' })
        expect((await inject(otherApp, { authorization: `Bearer ${key}` })).status).toBe(200) // now cached there
        await tenantry.apiKeys.revoke('acme', 'shared')
        const started = Date.now()
        let r = await inject(otherApp, { authorization: `Bearer ${key}` })
        while (r.status === 200 && Date.now() - started < 1000) { await sleep(20); r = await inject(otherApp, { authorization: `Bearer ${key}` }) }
        expect([r.status, r.body.code, r.body.details?.reason]).toEqual([401, 'API_KEY_INVALID', 'revoked'])
      } finally {
        await otherApp.close()
        await other.close()
      }
    })

    it.skipIf(backend.name !== 'PostgreSQL')('revokes a tenant CA binding in another process within one second (real TLS)', async () => {
      if (!url) return
      const other = await createTenantry({ databaseUrl: url, rolePrefix: ROLE_PREFIX, resolve: [clientCertificate()], observe: { logger: false, metering: false }, resumeOperations: false })
      const { app: otherApp, port } = await tlsApp(other, await certificate('localhost'))
      try {
        const ca = await authority('Acme Shared CA')
        const client = await issued(ca, { commonName: 'worker.acme' }, [{ type: 2, value: 'worker.acme.example.com' }])
        await tenantry.certificates.add('acme', { ca: ca.cert, sanPattern: '*.acme.example.com', name: 'shared-ca' })
        expect(await get(port, 'localhost', client)).toEqual({ status: 200, body: { tenant: 'acme' } }) // now cached there
        await tenantry.certificates.revoke('acme', 'shared-ca')
        const started = Date.now()
        let r = await get(port, 'localhost', client)
        while (r.status === 200 && Date.now() - started < 1000) { await sleep(20); r = await get(port, 'localhost', client) }
        expect([r.status, r.body.code, r.body.details?.reason]).toEqual([401, 'CLIENT_CERT_INVALID', 'revoked'])
      } finally {
        await otherApp.close()
        await other.close()
      }
    })
  })
}

for (const backend of backends(DB_NAME, ROLE_PREFIX, PG_UP)) keySuite(backend)

// ─── mTLS with real TLS ──────────────────────────────────────────────────────────────────────────

type Pems = { private: string; cert: string }
const day = 86_400_000

async function certificate(cn: string, notAfter = new Date(Date.now() + 30 * day), notBefore = new Date(Date.now() - day)): Promise<Pems> {
  return generate([{ name: 'commonName', value: cn }], { keyType: 'ec', algorithm: 'sha256', notBeforeDate: notBefore, notAfterDate: notAfter, clientCertificate: false }) as Promise<Pems>
}

async function authority(cn: string, notAfter = new Date(Date.now() + 30 * day)): Promise<Pems> {
  return generate([{ name: 'commonName', value: cn }], {
    keyType: 'ec', algorithm: 'sha256', notBeforeDate: new Date(Date.now() - day), notAfterDate: notAfter,
    extensions: [{ name: 'basicConstraints', cA: true, critical: true }, { name: 'keyUsage', keyCertSign: true, cRLSign: true, digitalSignature: true }],
  } as Parameters<typeof generate>[1]) as Promise<Pems>
}

/** A client certificate issued by `ca`, with the subject attributes and SANs given (type 2 DNS, 6 URI). */
async function issued(ca: Pems, subject: Record<string, string>, sans: { type: number; value: string }[], notAfter = new Date(Date.now() + 10 * day)): Promise<Pems> {
  return generate(Object.entries(subject).map(([name, value]) => ({ name, value })), {
    keyType: 'ec', algorithm: 'sha256', notBeforeDate: new Date(Date.now() - day), notAfterDate: notAfter, ca: { key: ca.private, cert: ca.cert },
    extensions: [{ name: 'subjectAltName', altNames: sans }],
  } as Parameters<typeof generate>[1]) as Promise<Pems>
}

/** A Fastify HTTPS server asking for client certificates, answering /whoami with the resolved tenant. */
async function tlsApp(tenantry: Tenantry, server: Pems): Promise<{ app: FastifyInstance; port: number }> {
  const app = Fastify({ https: { key: server.private, cert: server.cert, requestCert: true, rejectUnauthorized: false } })
  app.register(tenantryPlugin, { tenantry })
  app.register(async (scoped) => { scoped.get('/whoami', async () => ({ tenant: currentTenant().slug })) })
  await app.listen({ port: 0, host: '127.0.0.1' })
  return { app, port: (app.server.address() as AddressInfo).port }
}

function get(port: number, host: string, client?: Pems): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest({
      host: '127.0.0.1', port, path: '/whoami', method: 'GET', headers: { host }, rejectUnauthorized: false, agent: false,
      ...(client ? { key: client.private, cert: client.cert } : {}),
    }, (res) => {
      let text = ''
      res.on('data', (d) => { text += d })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }))
    })
    req.on('error', reject)
    req.end()
  })
}

describe('mTLS client certificates (PGlite, real TLS: Fastify and Express)', () => {
  let tenantry: Tenantry
  let fastify: FastifyInstance
  let expressServer: ReturnType<typeof createHttpsServer>
  let fastifyPort: number
  let expressPort: number
  let acmeCert: Pems
  let globexCert: Pems
  let strangerCert: Pems

  beforeAll(async () => {
    const server = await certificate('localhost')
    ;[acmeCert, globexCert, strangerCert] = await Promise.all([certificate('billing.acme'), certificate('globex-svc'), certificate('stranger')])
    tenantry = await createTenantry({
      dataDir: 'memory', migrations: DEMO_MIGRATIONS,
      resolve: [subdomain({ baseDomain: 'localhost' }), clientCertificate()],
      observe: { logger: false, metering: false },
    })
    await tenantry.migrate()
    await tenantry.provision({ slug: 'acme', tier: 'pooled' })
    await tenantry.provision({ slug: 'globex', tier: 'pooled' })
    const tls = { key: server.private, cert: server.cert, requestCert: true, rejectUnauthorized: false }
    fastify = Fastify({ https: tls })
    fastify.register(tenantryPlugin, { tenantry })
    fastify.register(async (scoped) => { scoped.get('/whoami', async () => ({ tenant: currentTenant().slug })) })
    await fastify.listen({ port: 0, host: '127.0.0.1' })
    fastifyPort = (fastify.server.address() as AddressInfo).port
    const app = express()
    app.use(tenantryMiddleware(tenantry))
    app.get('/whoami', (_req, res) => { res.json({ tenant: currentTenant().slug }) })
    app.use(tenantryErrorHandler())
    expressServer = createHttpsServer(tls, app)
    await new Promise<void>((r) => expressServer.listen(0, '127.0.0.1', r))
    expressPort = (expressServer.address() as AddressInfo).port
  }, 120_000)

  afterAll(async () => {
    await fastify?.close()
    await new Promise((r) => expressServer?.close(r))
    await tenantry?.close()
  })

  it('binds certificates by fingerprint and refuses none, unknown, mismatched and revoked with their codes', async () => {
    const added = await tenantry.certificates.add('acme', { pem: acmeCert.cert }, { actor: 'cli:test@host' })
    expect(added).toMatchObject({ name: 'billing.acme', subject: 'CN=billing.acme', revokedAt: null })
    expect(added.fingerprint).toMatch(/^[0-9a-f]{64}$/)
    await tenantry.certificates.add('globex', { pem: globexCert.cert, name: 'globex-svc' })

    for (const port of [fastifyPort, expressPort]) {
      expect(await get(port, 'acme.localhost', acmeCert)).toEqual({ status: 200, body: { tenant: 'acme' } })
      expect(await get(port, 'globex.localhost', globexCert)).toEqual({ status: 200, body: { tenant: 'globex' } })
      expect(await get(port, 'acme.localhost')).toMatchObject({ status: 401, body: { code: 'CLIENT_CERT_REQUIRED' } })
      expect(await get(port, 'acme.localhost', strangerCert)).toMatchObject({ status: 401, body: { code: 'CLIENT_CERT_INVALID', details: { reason: 'unknown' } } })
      // Tenant A's valid certificate on tenant B's host.
      expect(await get(port, 'globex.localhost', acmeCert)).toMatchObject({ status: 403, body: { code: 'TENANT_MISMATCH' } })
    }

    const code = (p: Promise<unknown>) => p.then(() => 'resolved', (e) => e.code)
    expect(await code(tenantry.certificates.add('acme', { pem: 'not a certificate' }))).toBe('VALIDATION_FAILED')
    expect(await code(tenantry.certificates.add('globex', { pem: acmeCert.cert }))).toBe('CONFLICT')
    const expired = await certificate('old', new Date(Date.now() - day), new Date(Date.now() - 2 * day))
    expect(await code(tenantry.certificates.add('acme', { pem: expired.cert }))).toBe('VALIDATION_FAILED')
    expect((await tenantry.certificates.list('acme')).map((c) => c.name)).toEqual(['billing.acme'])

    await tenantry.certificates.revoke('acme', added.fingerprint.toUpperCase().replace(/(..)(?!$)/g, '$1:'), { actor: 'cli:test@host' })
    expect(await get(fastifyPort, 'acme.localhost', acmeCert)).toMatchObject({ status: 401, body: { code: 'CLIENT_CERT_INVALID', details: { reason: 'revoked' } } })
    expect(await code(tenantry.certificates.revoke('acme', 'billing.acme'))).toBe('NOT_FOUND')
    const actions = (await tenantry.audit.list({ tenant: 'acme' })).map((e) => e.action)
    expect(actions.filter((a) => a.startsWith('client-cert.'))).toEqual(['client-cert.revoke', 'client-cert.add'])
  })

  it('binds client certificates issued by a tenant CA whose SAN or subject matches the pattern; checks chain, dates and revocation', async () => {
    const [acmeCa, globexCa, rogueCa] = await Promise.all([authority('Acme Services CA'), authority('Globex CA'), authority('Acme Services CA')])
    const added = await tenantry.certificates.add('acme', { ca: acmeCa.cert, sanPattern: '*.acme.example.com' }, { actor: 'cli:test@host' })
    expect(added).toMatchObject({ kind: 'ca', name: 'acme-services-ca', subject: 'CN=Acme Services CA', sanPattern: '*.acme.example.com', subjectPattern: null, revokedAt: null })
    await tenantry.certificates.add('globex', { ca: globexCa.cert, subjectPattern: 'CN=*.svc, O=Globex', name: 'globex-ca' })

    const billing = await issued(acmeCa, { commonName: 'billing' }, [{ type: 2, value: 'Billing.Acme.Example.com' }])
    const outside = await issued(acmeCa, { commonName: 'intruder' }, [{ type: 2, value: 'billing.evil.example.com' }])
    const deep = await issued(acmeCa, { commonName: 'deep' }, [{ type: 2, value: 'a.b.acme.example.com' }])
    const uriOnly = await issued(acmeCa, { commonName: 'uri' }, [{ type: 6, value: 'spiffe://billing.acme.example.com/x' }])
    // Same issuer name as Acme's CA, but another key: the chain does not verify.
    const forged = await issued(rogueCa, { commonName: 'billing' }, [{ type: 2, value: 'billing.acme.example.com' }])
    const globexSvc = await issued(globexCa, { commonName: 'orders.svc', organizationName: 'Globex' }, [])
    const globexOther = await issued(globexCa, { commonName: 'orders.svc', organizationName: 'Initech' }, [])
    const lapsed = await issued(acmeCa, { commonName: 'old' }, [{ type: 2, value: 'old.acme.example.com' }], new Date(Date.now() - 1000))

    const reason = async (port: number, host: string, client: Pems) => {
      const r = await get(port, host, client)
      return r.status === 200 ? r.body.tenant : `${r.status} ${r.body.code} ${r.body.details?.reason ?? ''}`
    }
    for (const port of [fastifyPort, expressPort]) {
      expect(await reason(port, 'acme.localhost', billing)).toBe('acme')
      expect(await reason(port, 'acme.localhost', outside)).toBe('401 CLIENT_CERT_INVALID unknown')
      expect(await reason(port, 'acme.localhost', deep)).toBe('401 CLIENT_CERT_INVALID unknown') // '*' is one DNS label
      expect(await reason(port, 'acme.localhost', uriOnly)).toBe('401 CLIENT_CERT_INVALID unknown') // a DNS pattern ignores URIs
      expect(await reason(port, 'acme.localhost', forged)).toBe('401 CLIENT_CERT_INVALID unknown')
      expect(await reason(port, 'acme.localhost', lapsed)).toBe('401 CLIENT_CERT_INVALID expired')
      expect(await reason(port, 'globex.localhost', globexSvc)).toBe('globex')
      expect(await reason(port, 'globex.localhost', globexOther)).toBe('401 CLIENT_CERT_INVALID unknown')
      // Acme's CA-bound certificate on globex's host.
      expect(await reason(port, 'globex.localhost', billing)).toBe('403 TENANT_MISMATCH ')
    }

    const code = (p: Promise<unknown>) => p.then(() => 'resolved', (e) => `${e.code}:${e.details?.field ?? ''}`)
    expect(await code(tenantry.certificates.add('acme', { ca: billing.cert }))).toBe('VALIDATION_FAILED:ca') // not a CA
    expect(await code(tenantry.certificates.add('acme', { ca: acmeCa.cert, pem: billing.cert }))).toBe('VALIDATION_FAILED:pem')
    expect(await code(tenantry.certificates.add('acme', { pem: billing.cert, sanPattern: '*.x.com' }))).toBe('VALIDATION_FAILED:sanPattern')
    expect(await code(tenantry.certificates.add('acme', { ca: acmeCa.cert, subjectPattern: 'no equals sign', name: 'bad' }))).toBe('VALIDATION_FAILED:subject')
    expect(await code(tenantry.certificates.add('acme', { ca: acmeCa.cert, sanPattern: '*.acme.example.com', name: 'again' }))).toBe('CONFLICT:ca')
    // Another tenant may share the CA only when neither binding would take every certificate it issues.
    expect(await code(tenantry.certificates.add('globex', { ca: acmeCa.cert, name: 'acme-ca-all' }))).toBe('CONFLICT:ca')
    expect((await tenantry.certificates.list('acme')).filter((c) => c.kind === 'ca').map((c) => c.name)).toEqual(['acme-services-ca'])

    await tenantry.certificates.revoke('acme', added.id, { actor: 'cli:test@host' })
    expect(await reason(fastifyPort, 'acme.localhost', billing)).toBe('401 CLIENT_CERT_INVALID revoked')
    const entries = (await tenantry.audit.list({ tenant: 'acme' })).filter((e) => e.action.startsWith('client-ca.'))
    expect(entries.map((e) => [e.action, e.actor, e.details.name])).toEqual([['client-ca.revoke', 'cli:test@host', 'acme-services-ca'], ['client-ca.add', 'cli:test@host', 'acme-services-ca']])
    expect((await tenantry.audit.verify()).ok).toBe(true)
  })
})

// ─── residency, support access, audit ────────────────────────────────────────────────────────────

describe('data residency and audited support access (PGlite)', () => {
  let tenantry: Tenantry
  // Backup directories of two regions, and an object store in 'eu'.
  const euVault = mkdtempSync(join(tmpdir(), 'tenantry-eu-vault-'))
  const usVault = mkdtempSync(join(tmpdir(), 'tenantry-us-vault-'))

  beforeAll(async () => {
    tenantry = await createTenantry({
      dataDir: 'memory', migrations: DEMO_MIGRATIONS, observe: { logger: false, metering: false },
      portability: { backupRegions: { [euVault]: 'eu', [usVault]: 'us' } },
      storage: { region: 'eu', forceResidency: ['us-excepted'] },
    })
    await tenantry.migrate()
    await tenantry.addServer({ name: 'us1', url: 'pglite:memory', region: 'us' })
    await tenantry.addServer({ name: 'eu1', url: 'pglite:memory', region: 'eu' })
  }, 120_000)

  afterAll(async () => { await tenantry?.close() })

  it('refuses a server of another region at provisioning and restore (409 RESIDENCY_VIOLATION), unless forced, which is audited', async () => {
    const code = (p: Promise<unknown>) => p.then(() => 'resolved', (e) => `${e.code}:${e.status ?? ''}`)
    expect(await code(tenantry.provision({ slug: 'eu-co', tier: 'schema', region: 'eu', server: 'us1' }))).toBe('RESIDENCY_VIOLATION:409')
    expect(await tenantry.findTenant('eu-co')).toBeNull()
    // No server in the region: the chooser's fallback to another region is refused too.
    expect(await code(tenantry.provision({ slug: 'apac-co', tier: 'pooled', region: 'apac' }))).toBe('RESIDENCY_VIOLATION:409')
    expect(await tenantry.findTenant('apac-co')).toBeNull()
    const euCo = await tenantry.provision({ slug: 'eu-co', tier: 'schema', region: 'eu' })
    expect([euCo.region, euCo.placement.server]).toEqual(['eu', 'eu1'])
    expect(await code(tenantry.provision({ slug: 'x', tier: 'pooled', region: 'eu', forceResidency: 'yes' as unknown as boolean }))).toBe('VALIDATION_FAILED:400')

    const forced = await tenantry.provision({ slug: 'eu-exception', tier: 'schema', region: 'eu', server: 'us1', forceResidency: true }, 'cli:ops@host')
    expect(forced.placement.server).toBe('us1')
    const entry = (await tenantry.audit.list({ tenant: 'eu-exception', action: 'residency.force' }))[0]
    expect([entry.actor, entry.details]).toEqual(['cli:ops@host', { kind: 'server', operation: 'provision', target: 'us1', tenantRegion: 'eu', targetRegion: 'us' }])

    const dir = mkdtempSync(join(tmpdir(), 'tenantry-res-'))
    const backup = await tenantry.portability.backup('eu-co', { to: join(dir, 'eu.tar'), encrypt: false })
    expect(await code(tenantry.portability.restore(backup.path, { as: 'eu-copy', server: 'us1' }))).toBe('RESIDENCY_VIOLATION:409')
    expect(await tenantry.findTenant('eu-copy')).toBeNull()
    const copy = await tenantry.portability.restore(backup.path, { as: 'eu-copy', server: 'eu1' })
    expect(copy.tenant.placement.server).toBe('eu1')
    expect((await tenantry.audit.verify()).ok).toBe(true)
  })

  it('refuses a backup directory and an object store of another region (409 RESIDENCY_VIOLATION), unless forced, which is audited', async () => {
    const code = (p: Promise<unknown>) => p.then(() => 'resolved', (e) => `${e.code}:${e.status ?? ''}:${e.details?.kind ?? ''}`)
    const ops = async () => (await tenantry.operations.list({ kind: 'backup' })).length
    const before = await ops()
    expect(await code(tenantry.portability.backup('eu-co', { to: join(usVault, 'nested', 'eu.tar'), encrypt: false }))).toBe('RESIDENCY_VIOLATION:409:backup')
    expect(await code(tenantry.portability.backup('eu-co', { to: `${usVault}/`, encrypt: false }))).toBe('RESIDENCY_VIOLATION:409:backup')
    // Nothing written: no operation, no directory.
    expect([await ops(), readdirSync(usVault)]).toEqual([before, []])
    expect((await tenantry.portability.backup('eu-co', { to: `${euVault}/`, encrypt: false })).path.startsWith(euVault)).toBe(true)
    const forced = await tenantry.portability.backup('eu-co', { to: join(usVault, 'exception.tar'), encrypt: false, forceResidency: true, startedBy: 'cli:ops@host' })
    const entry = (await tenantry.audit.list({ tenant: 'eu-co', action: 'residency.force' }))[0]
    expect([entry.actor, entry.details]).toEqual(['cli:ops@host', { kind: 'backup', operation: 'backup', operationId: forced.operationId, target: usVault, tenantRegion: 'eu', targetRegion: 'us' }])

    // The object store is in 'eu': a 'us' tenant cannot store there; an 'eu' tenant can.
    await tenantry.provision({ slug: 'us-co', tier: 'pooled', region: 'us' })
    await tenantry.provision({ slug: 'us-excepted', tier: 'pooled', region: 'us' })
    expect(await code(tenantry.withTenant('us-co', () => tenantry.storage.put('a.txt', 'hello')))).toBe('RESIDENCY_VIOLATION:409:bucket')
    expect(await tenantry.withTenant('us-co', () => tenantry.storage.list())).toMatchObject({ objects: [] })
    expect((await tenantry.withTenant('eu-co', () => tenantry.storage.put('a.txt', 'hello'))).size).toBe(5)
    // A configured exception stores, audited once per process.
    await tenantry.withTenant('us-excepted', () => tenantry.storage.put('a.txt', 'hi'))
    await tenantry.withTenant('us-excepted', () => tenantry.storage.put('b.txt', 'hi'))
    const bucket = await tenantry.audit.list({ tenant: 'us-excepted', action: 'residency.force' })
    expect(bucket.map((e) => [e.actor, e.details])).toEqual([['config:storage.forceResidency', { kind: 'bucket', operation: 'storage.put', target: 'local', tenantRegion: 'us', targetRegion: 'eu' }]])
    expect((await tenantry.audit.verify()).ok).toBe(true)
  })

  it('appends every configuration and flag change to the audit log in its transaction', async () => {
    await tenantry.config.set('eu-co', 'theme.color', 'teal', { by: 'cli:ops@host' })
    await tenantry.flags.set({ key: 'beta', enabled: true }, { by: 'token:admin' })
    const [flag, config] = await tenantry.audit.list({ limit: 2 })
    expect([config.action, config.actor, config.slug, config.details.path]).toEqual(['config.set', 'cli:ops@host', 'eu-co', '/theme/color'])
    expect([flag.action, flag.actor, flag.slug, flag.details.subject]).toEqual(['flag.set', 'token:admin', null, 'flag:beta'])
    expect((await tenantry.audit.verify()).ok).toBe(true)
  })

  it('asTenant runs support work in the tenant only with a reason, and audits it', async () => {
    await expect(tenantry.asTenant('eu-co', { reason: '' }, async () => 1)).rejects.toMatchObject({ code: 'VALIDATION_FAILED' })
    await expect(tenantry.asTenant('nope', { reason: 'ticket 42' }, async () => 1)).rejects.toMatchObject({ code: 'TENANT_NOT_FOUND' })
    const before = (await tenantry.audit.list({ action: 'support.access' })).length
    const slug = await tenantry.asTenant('eu-co', { reason: 'ticket 4711: missing invoice', actor: 'support:ann' }, async () => currentTenant().slug)
    expect(slug).toBe('eu-co')
    const entries = await tenantry.audit.list({ action: 'support.access' })
    expect(entries.length).toBe(before + 1)
    expect([entries[0].actor, entries[0].slug, entries[0].details]).toEqual(['support:ann', 'eu-co', { reason: 'ticket 4711: missing invoice' }])
  })
})

describe('audit coverage: every control-plane action leaves an entry (PGlite)', () => {
  let tenantry: Tenantry
  const txt = new Map<string, string[][]>()

  beforeAll(async () => {
    // Not migrated here: the first action of the test is the migration.
    tenantry = await createTenantry({
      dataDir: 'memory', migrations: DEMO_MIGRATIONS, observe: { logger: false, metering: false },
      config: { domains: { resolveTxt: async (name) => txt.get(name) ?? [], fetchText: async () => ({ status: 404, body: '' }) } },
    })
  }, 120_000)

  afterAll(async () => { await tenantry?.close() })

  it('appends an entry for each action of the issue, with its actor, in the change\'s transaction or as start and outcome of its operation', async () => {
    const by = { actor: 'cli:ops@host' }
    const dir = mkdtempSync(join(tmpdir(), 'tenantry-audit-'))
    const admin = Fastify()
    await admin.register(tenantryAdmin, { prefix: '/admin', tenantry, console: false, docs: false })
    const { token } = await (await adminTokens(tenantry)).create({ name: 'auditor', role: 'viewer' }, 'test')
    let backupPath = ''
    // [what the issue names, the action, the entries it must append (newest last)]
    const actions: [string, () => Promise<unknown>, string[]][] = [
      ['migrate', () => tenantry.migrate({ startedBy: by.actor }), ['operation.migrate.start', 'operation.migrate.done']],
      ['provision', () => tenantry.provision({ slug: 'audited', tier: 'pooled' }, 'cli:ops@host'), ['operation.provision.start', 'operation.provision.done']],
      ['suspend', () => tenantry.suspend('audited', 'unpaid', by), ['tenant.suspend']],
      ['resume', () => tenantry.resume('audited', by), ['tenant.resume']],
      // Without an actor, the library's own calls: an operator's domain that resolves at once, a status set as it is.
      ['operator domain', () => tenantry.addDomain('audited', 'ops.audited.test'), ['tenant.domain.add']],
      ['status set', () => tenantry.setStatus('audited', 'active'), ['tenant.status']],
      ['config change', () => tenantry.config.set('audited', 'theme', 'dark', { by: by.actor }), ['config.set']],
      ['branding change', () => tenantry.config.set('audited', 'branding.primaryColor', '#00ff00', { by: by.actor }), ['config.set']],
      ['flag change', () => tenantry.flags.set({ key: 'audit-beta', enabled: true }, { by: by.actor }), ['flag.set']],
      ['domain add', () => tenantry.domains.add('audited', 'app.audited.test', by), ['tenant.domain.add']],
      ['domain verify', async () => {
        const d = (await tenantry.domains.list('audited'))[0]
        txt.set(d.instructions!.txtName, [[d.instructions!.txtValue]])
        return tenantry.domains.verify('app.audited.test', {}, by)
      }, ['tenant.domain.verify']],
      ['domain remove', () => tenantry.domains.remove('app.audited.test', by), ['tenant.domain.remove']],
      ['API key create', () => tenantry.apiKeys.create('audited', { name: 'k' }, by), ['api-key.create']],
      ['API key revoke', () => tenantry.apiKeys.revoke('audited', 'k', by), ['api-key.revoke']],
      ['certificate add', async () => tenantry.certificates.add('audited', { pem: (await certificate('audited-svc')).cert }, by), ['client-cert.add']],
      ['certificate revoke', () => tenantry.certificates.revoke('audited', 'audited-svc', by), ['client-cert.revoke']],
      ['CA add', async () => tenantry.certificates.add('audited', { ca: (await authority('Audited CA')).cert, sanPattern: '*.audited.test' }, by), ['client-ca.add']],
      ['move', () => tenantry.moves.move('audited', { tier: 'schema', startedBy: by.actor, graceMs: 0 }), ['operation.move.start', 'tenant.move', 'operation.move.done']],
      ['backup', async () => { backupPath = (await tenantry.portability.backup('audited', { to: join(dir, 'a.tar'), encrypt: false, startedBy: by.actor })).path }, ['operation.backup.start', 'operation.backup.done']],
      ['restore', () => tenantry.portability.restore(backupPath, { as: 'audited-copy', startedBy: by.actor }), ['operation.restore.start', 'operation.restore.done']],
      ['export', () => tenantry.portability.export('audited', { format: 'jsonl', to: dir, startedBy: by.actor }), ['operation.export.start', 'operation.export.done']],
      ['delete', () => tenantry.delete('audited-copy', by), ['tenant.delete']],
      ['erase', () => tenantry.portability.erase('audited-copy', { startedBy: by.actor }), ['operation.erase.start', 'operation.erase.done']],
      ['purge', async () => { await tenantry.delete('audited', by); return tenantry.purge('audited', { force: true, startedBy: by.actor }) }, ['tenant.delete', 'operation.purge.start', 'operation.purge.done']],
      ['admin sign-in', async () => {
        const r = await admin.inject({ method: 'POST', url: '/admin/api/sign-in', headers: { authorization: `Bearer ${token}` } })
        expect([r.statusCode, r.json()]).toEqual([200, { actor: 'token:auditor', role: 'viewer' }])
      }, ['admin.sign-in']],
      ['failed admin sign-in', async () => {
        for (let i = 0; i < 3; i++) {
          const r = await admin.inject({ method: 'POST', url: '/admin/api/sign-in', headers: { authorization: 'Bearer tnta_guess' } })
          expect([r.statusCode, r.json().code]).toEqual([401, 'ADMIN_UNAUTHORIZED'])
        }
      }, ['admin.sign-in-failed']], // three attempts, one entry: guessing cannot flood the log
    ]
    try {
      for (const [what, act, expected] of actions) {
        const head = (await tenantry.audit.list({ limit: 1 }))[0]?.seq ?? 0
        await act()
        const appended = (await tenantry.audit.list({ limit: 50 })).filter((e) => e.seq > head).reverse()
        expect([what, appended.map((e) => e.action)]).toEqual([what, expected])
        const actors = appended.map((e) => e.actor)
        if (what === 'admin sign-in') expect(actors).toEqual(['token:auditor'])
        else if (what === 'failed admin sign-in') expect(actors).toEqual(['anonymous@127.0.0.1'])
        else if (what === 'operator domain' || what === 'status set') expect(actors).toEqual(['library'])
        else expect([what, actors]).toEqual([what, expected.map(() => 'cli:ops@host')])
      }
    } finally {
      await admin.close()
    }
    expect((await tenantry.audit.verify()).ok).toBe(true)
  })
})

describe('tenantry mesh export (YAML; untested on a real mesh)', () => {
  const run = async (...args: string[]) => {
    let out = ''
    const write = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => { out += String(chunk); return true })
    const err = vi.spyOn(console, 'error').mockImplementation(() => undefined)
    const errWrite = vi.spyOn(process.stderr, 'write').mockImplementation(() => true)
    try {
      const code = await runCli(['mesh', 'export', ...args])
      return { code, docs: out ? parseAllDocuments(out).map((d) => d.toJS()) : [] }
    } finally {
      write.mockRestore(); err.mockRestore(); errWrite.mockRestore()
    }
  }

  it('writes Istio and Linkerd policies requiring mTLS callers and the assertion header; refuses bad input', async () => {
    const istio = await run('--istio', '--namespace', 'shop', '--service', 'billing', '--caller', 'orders', 'carts', '--paths', '/api/*')
    expect(istio.code).toBe(0)
    expect(istio.docs.map((d) => d.kind)).toEqual(['PeerAuthentication', 'AuthorizationPolicy'])
    expect(istio.docs[0].spec).toEqual({ selector: { matchLabels: { app: 'billing' } }, mtls: { mode: 'STRICT' } })
    expect(istio.docs[1].spec.rules).toEqual([{
      from: [{ source: { principals: ['cluster.local/ns/shop/sa/orders', 'cluster.local/ns/shop/sa/carts'] } }],
      to: [{ operation: { paths: ['/api/*'] } }],
      when: [{ key: 'request.headers[x-tenant-assertion]', values: ['*'] }],
    }])
    const linkerd = await run('--linkerd', '--namespace', 'shop', '--service', 'billing', '--caller', 'orders', '--port', '8080', '--paths', '/api/*')
    expect(linkerd.docs.map((d) => d.kind)).toEqual(['Server', 'MeshTLSAuthentication', 'HTTPRoute', 'AuthorizationPolicy'])
    expect(linkerd.docs[0].spec.port).toBe(8080)
    expect(linkerd.docs[1].spec.identities).toEqual(['orders.shop.serviceaccount.identity.linkerd.cluster.local'])
    expect(linkerd.docs[2].spec.rules[0].matches).toEqual([{ path: { type: 'PathPrefix', value: '/api' }, headers: [{ type: 'RegularExpression', name: 'x-tenant-assertion', value: '.+' }] }])
    expect((await run('--namespace', 'shop', '--service', 'billing', '--caller', 'orders')).code).toBe(2)
    expect((await run('--istio', '--linkerd', '--namespace', 'shop', '--service', 'billing', '--caller', 'orders')).code).toBe(2)
    expect(await run('--istio', '--namespace', 'Shop_1', '--service', 'billing', '--caller', 'orders')).toEqual({ code: 1, docs: [] })
  })
})
