import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Fastify, { type FastifyInstance } from 'fastify'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { compileErrors, validate as validateOpenApi } from '@readme/openapi-parser'
import { SignJWT, exportJWK, generateKeyPair } from 'jose'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { tenantryAdmin } from '../src/admin/plugin.ts'
import { adminTokens } from '../src/admin/tokens.ts'
import { tenantryPlugin } from '../src/adapters/fastify.ts'
import { runCli } from '../src/cli/main.ts'
import { createTenantry, type Tenantry } from '../src/index.ts'
import { DEMO_MIGRATIONS, dropPostgresLeftovers, freshDatabase, postgresAvailable } from './helpers/backends.ts'

// Issue 17: the admin REST API through fastify.inject, on real PostgreSQL and on PGlite.

const DB_NAME = 'tenantry_test_admin_api'
const ROLE_PREFIX = 'th_adm'
const PG_UP = await postgresAvailable()
const JWT_SECRET = 'admin-api-test-secret-of-enough-length'
const DEMO_SQL = join(DEMO_MIGRATIONS, '0001_projects_and_tasks.sql')

interface Backend { name: string; enabled: boolean; open(dir: string): Promise<{ databaseUrl?: string; dataDir?: string }>; cleanUp(): Promise<void> }

const BACKENDS: Backend[] = [
  {
    name: 'PostgreSQL', enabled: PG_UP,
    async open() {
      await dropPostgresLeftovers(ROLE_PREFIX, DB_NAME)
      return { databaseUrl: await freshDatabase(DB_NAME) }
    },
    cleanUp: () => dropPostgresLeftovers(ROLE_PREFIX, DB_NAME),
  },
  { name: 'PGlite', enabled: true, async open(dir) { return { dataDir: join(dir, 'data') } }, async cleanUp() {} },
]

function adminSuite(backend: Backend): void {
  describe.skipIf(!backend.enabled)(`admin API (${backend.name})`, () => {
    let dir: string
    let where: { databaseUrl?: string; dataDir?: string }
    let tenantry: Tenantry
    let app: FastifyInstance
    const tokens: Record<string, string> = {}
    const dns = new Map<string, string[][]>()
    const migrations = () => join(dir, 'migrations')

    const open = async () => {
      // Domain verification looks in this fake DNS (no internet in tests): TXT name → records.
      tenantry = await createTenantry({
        ...where, migrations: migrations(), rolePrefix: ROLE_PREFIX, observe: { logger: false, metering: false, tracing: false, metrics: false },
        config: { domains: { resolveTxt: async (name) => dns.get(name) ?? [], fetchText: async () => ({ status: 404, body: '' }) } },
      })
      app = Fastify()
      // The app's own tenant routes beside the admin API: the admin never runs the tenant chain.
      await app.register(tenantryPlugin, { tenantry })
      app.get('/api/whoami', async (req) => ({ tenant: req.tenant.slug }))
      await app.register(tenantryAdmin, { prefix: '/admin', tenantry, backups: { targets: { local: join(dir, 'archives') } }, auth: { jwt: { secret: JWT_SECRET, issuer: 'https://id.test', audience: 'tenantry-admin' } } })
      await app.ready()
    }
    const close = async () => {
      await app?.close()
      await tenantry?.close()
    }
    const call = (method: string, url: string, token: string | null, payload?: unknown) =>
      app.inject({ method: method as 'GET', url: `/admin${url}`, headers: token ? { authorization: `Bearer ${token}` } : {}, payload: payload as object })

    beforeAll(async () => {
      dir = mkdtempSync(join(tmpdir(), 'tenantry-admin-api-'))
      mkdirSync(migrations())
      copyFileSync(DEMO_SQL, join(migrations(), '0001_projects_and_tasks.sql'))
      where = await backend.open(dir)
      await open()
      const store = await adminTokens(tenantry)
      for (const role of ['viewer', 'operator', 'admin'] as const) tokens[role] = (await store.create({ name: `t-${role}`, role }, 'test:setup')).token
    })

    afterAll(async () => {
      await close()
      await backend.cleanUp()
      rmSync(dir, { recursive: true, force: true })
    })

    it('refuses missing and bad credentials with 401, too small a role with 403, both coded; tenant credentials never count', async () => {
      const none = await call('GET', '/api/tenants', null)
      expect([none.statusCode, none.json().code]).toEqual([401, 'ADMIN_UNAUTHORIZED'])
      const bogus = await call('GET', '/api/tenants', 'tnta_not-a-real-token')
      expect([bogus.statusCode, bogus.json().code]).toEqual([401, 'ADMIN_UNAUTHORIZED'])
      // A tenant header is the tenant chain's, not the admin's.
      const tenantHeader = await app.inject({ method: 'GET', url: '/admin/api/tenants', headers: { 'x-tenant': 'acme' } })
      expect([tenantHeader.statusCode, tenantHeader.json().code]).toEqual([401, 'ADMIN_UNAUTHORIZED'])
      const viewerActs = await call('POST', '/api/tenants', tokens.viewer, { slug: 'nope', tier: 'pooled' })
      expect([viewerActs.statusCode, viewerActs.json().code, viewerActs.json().details]).toEqual([403, 'ADMIN_FORBIDDEN', { needed: 'operator', role: 'viewer' }])
      const operatorPurges = await call('POST', '/api/tenants/nope/purge', tokens.operator, {})
      expect([operatorPurges.statusCode, operatorPurges.json().code]).toEqual([403, 'ADMIN_FORBIDDEN'])
      expect((await call('GET', '/api/tenants', tokens.viewer)).statusCode).toBe(200)
      expect(await tenantry.findTenant('nope')).toBeNull()
    })

    it('accepts OIDC JWTs by their role claim; a bad signature, issuer or missing role is refused', async () => {
      const key = new TextEncoder().encode(JWT_SECRET)
      const sign = (claims: Record<string, unknown>, opts: { iss?: string; secret?: Uint8Array } = {}) =>
        new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).setSubject('alice@example.com').setIssuer(opts.iss ?? 'https://id.test').setAudience('tenantry-admin').setExpirationTime('5m').sign(opts.secret ?? key)
      const operator = await sign({ tenantry_role: 'operator' })
      const ok = await call('GET', '/api/overview', operator)
      expect(ok.statusCode).toBe(200)
      const tooLow = await call('POST', '/api/tokens', await sign({ tenantry_role: ['viewer'] }), { name: 'x', role: 'viewer' })
      expect([tooLow.statusCode, tooLow.json().code]).toEqual([403, 'ADMIN_FORBIDDEN'])
      const noRole = await call('GET', '/api/overview', await sign({}))
      expect([noRole.statusCode, noRole.json().code]).toEqual([403, 'ADMIN_FORBIDDEN'])
      const otherIssuer = await call('GET', '/api/overview', await sign({ tenantry_role: 'admin' }, { iss: 'https://evil.test' }))
      expect([otherIssuer.statusCode, otherIssuer.json().code]).toEqual([401, 'ADMIN_UNAUTHORIZED'])
      const forged = await call('GET', '/api/overview', await sign({ tenantry_role: 'admin' }, { secret: new TextEncoder().encode('another-secret-of-enough-length!!') }))
      expect([forged.statusCode, forged.json().code]).toEqual([401, 'ADMIN_UNAUTHORIZED'])
    })

    it('verifies JWTs against an OIDC provider\'s JWKS (RS256): the right key passes, another key is refused', async () => {
      const { publicKey, privateKey } = await generateKeyPair('RS256')
      const other = await generateKeyPair('RS256')
      const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'RS256', use: 'sig' }
      const idp = Fastify()
      idp.get('/.well-known/jwks.json', async () => ({ keys: [jwk] }))
      const idpUrl = await idp.listen({ port: 0, host: '127.0.0.1' })
      const oidcApp = Fastify()
      await oidcApp.register(tenantryAdmin, { prefix: '/admin', tenantry, docs: false, console: false, auth: { tokens: false, jwt: { jwksUrl: `${idpUrl}/.well-known/jwks.json`, audience: 'tenantry-admin', roleClaim: 'roles' } } })
      try {
        const sign = (key: CryptoKey) => new SignJWT({ roles: ['viewer', 'operator'] }).setProtectedHeader({ alg: 'RS256', kid: 'k1' }).setSubject('bob').setAudience('tenantry-admin').setExpirationTime('5m').sign(key)
        const get = async (bearer: string) => oidcApp.inject({ method: 'GET', url: '/admin/api/overview', headers: { authorization: `Bearer ${bearer}` } })
        expect((await get(await sign(privateKey))).statusCode).toBe(200)
        const wrongKey = await get(await sign(other.privateKey))
        expect([wrongKey.statusCode, wrongKey.json().code]).toEqual([401, 'ADMIN_UNAUTHORIZED'])
        // Admin tokens are off on this mount: even a valid one is refused.
        const token = await get(tokens.admin)
        expect([token.statusCode, token.json().code]).toEqual([401, 'ADMIN_UNAUTHORIZED'])
      } finally {
        await oidcApp.close()
        await idp.close()
      }
    })

    it('mounted under a prefix that itself contains /api/, the console stays public and its API does not', async () => {
      const other = Fastify()
      // A capability's own route module, added beside the built-in ones: it gets the same auth.
      await other.register(tenantryAdmin, { prefix: '/api/ops', tenantry, docs: false, routes: [(api) => { api.get('/whoami', async (req) => ({ actor: req.admin.actor })) }] })
      try {
        expect((await other.inject({ url: '/api/ops/api/whoami' })).statusCode).toBe(401)
        expect((await other.inject({ url: '/api/ops/api/whoami', headers: { authorization: `Bearer ${tokens.viewer}` } })).json()).toEqual({ actor: 'token:t-viewer' })
        expect((await other.inject({ url: '/api/ops/' })).statusCode).toBe(200)
        expect((await other.inject({ url: '/api/ops/app.js' })).statusCode).toBe(200)
        expect((await other.inject({ url: '/api/ops/api/tenants' })).json().code).toBe('ADMIN_UNAUTHORIZED')
      } finally {
        await other.close()
      }
    })

    it('validates every input: unknown fields, bad slugs and out-of-range numbers are 400 naming the field, and write nothing', async () => {
      const cases: [string, string, unknown, string, string][] = [
        ['POST', '/api/tenants', { slug: 'fine', tier: 'pooled', color: 'red' }, 'color', 'unknown'],
        ['POST', '/api/tenants', { slug: 'Bad_Slug', tier: 'pooled' }, 'slug', 'pattern'],
        ['POST', '/api/tenants', { slug: 'fine', tier: 'galaxy' }, 'tier', 'enum'],
        ['POST', '/api/tenants', { slug: 'fine', tier: 'pooled', name: 5 }, 'name', 'type'],
        ['POST', '/api/tenants', { tier: 'pooled' }, 'slug', 'required'],
        ['GET', '/api/tenants?limit=0', undefined, 'limit', 'minimum'],
        ['GET', '/api/tenants?limit=100000', undefined, 'limit', 'maximum'],
        ['GET', '/api/tenants?sort=name', undefined, 'sort', 'unknown'],
        ['GET', '/api/tenants/Not_A_Slug', undefined, 'slug', 'pattern'],
        ['GET', '/api/operations/not-a-uuid', undefined, 'id', 'pattern'],
        ['POST', '/api/tenants/fine/suspend', { reason: 'x', until: 'never' }, 'until', 'unknown'],
        ['POST', '/api/migrations/run', { concurrency: 0 }, 'concurrency', 'minimum'],
        ['GET', '/api/usage/top?limit=5000', undefined, 'limit', 'maximum'],
      ]
      for (const [method, url, body, field, rule] of cases) {
        const r = await call(method, url, tokens.admin, body)
        expect([url, r.statusCode, r.json().code, r.json().details?.field, r.json().details?.rule]).toEqual([url, 400, 'VALIDATION_FAILED', field, rule])
      }
      const badCursor = await call('GET', '/api/tenants?cursor=%2F%2F%2F', tokens.viewer)
      expect([badCursor.statusCode, badCursor.json().details]).toEqual([400, { field: 'cursor' }])
      expect(await tenantry.findTenant('fine')).toBeNull()
      expect((await tenantry.audit.list()).filter((e) => e.action.startsWith('tenant.'))).toEqual([])
    })

    it('creates tenants, lists them a page at a time with filters, shows, suspends (the app answers 403), resumes, deletes and restores — each audited', async () => {
      for (const [slug, tier] of [['acme', 'pooled'], ['globex', 'schema'], ['hooli', 'pooled'], ['initech', 'pooled'], ['umbrella', 'schema']] as const) {
        const r = await call('POST', '/api/tenants', tokens.operator, { slug, tier, name: `${slug[0].toUpperCase()}${slug.slice(1)} Inc` })
        expect([r.statusCode, r.json().slug, r.json().tier, r.json().status]).toEqual([201, slug, tier, 'active'])
      }
      const taken = await call('POST', '/api/tenants', tokens.operator, { slug: 'acme', tier: 'pooled' })
      expect([taken.statusCode, taken.json().code]).toEqual([409, 'CONFLICT'])

      const slugs: string[] = []
      let next: string | null = null
      do {
        const r = await call('GET', `/api/tenants?limit=2${next ? `&cursor=${next}` : ''}`, tokens.viewer)
        expect(r.statusCode).toBe(200)
        slugs.push(...r.json().tenants.map((t: { slug: string }) => t.slug))
        next = r.json().next
      } while (next)
      expect(slugs).toEqual(['acme', 'globex', 'hooli', 'initech', 'umbrella'])
      const schemaOnes = await call('GET', '/api/tenants?tier=schema', tokens.viewer)
      expect(schemaOnes.json()).toMatchObject({ tenants: [{ slug: 'globex' }, { slug: 'umbrella' }], next: null })
      const search = await call('GET', '/api/tenants?q=INI', tokens.viewer)
      expect(search.json().tenants.map((t: { slug: string }) => t.slug)).toEqual(['initech'])

      expect((await app.inject({ method: 'GET', url: '/api/whoami', headers: { 'x-tenant': 'acme' } })).json()).toEqual({ tenant: 'acme' })
      const suspended = await call('POST', '/api/tenants/acme/suspend', tokens.operator, { reason: 'invoice overdue' })
      expect([suspended.statusCode, suspended.json().status, suspended.json().statusReason]).toEqual([200, 'suspended', 'invoice overdue'])
      const refused = await app.inject({ method: 'GET', url: '/api/whoami', headers: { 'x-tenant': 'acme' } })
      expect([refused.statusCode, refused.json().code]).toEqual([403, 'TENANT_SUSPENDED'])
      expect((await call('POST', '/api/tenants/acme/resume', tokens.operator)).json().status).toBe('active')
      expect((await call('DELETE', '/api/tenants/hooli', tokens.operator)).json().status).toBe('deleted')
      const notDeleted = await call('POST', '/api/tenants/acme/restore', tokens.operator, {})
      expect([notDeleted.statusCode, notDeleted.json().code]).toEqual([409, 'CONFLICT'])
      expect((await call('POST', '/api/tenants/hooli/restore', tokens.operator, {})).json().status).toBe('suspended')

      const shown = await call('GET', '/api/tenants/acme', tokens.viewer)
      // The provision's record is its operation's own entries (its start commits with the tenant row), no summary entry.
      expect(shown.json().audit.map((e: { action: string }) => e.action)).toEqual(['tenant.resume', 'tenant.suspend', 'operation.provision.done', 'operation.provision.start'])
      const entries = await tenantry.audit.list({ tenant: 'acme' })
      expect(entries.map((e) => [e.actor, e.action])).toEqual([
        ['token:t-operator', 'tenant.resume'], ['token:t-operator', 'tenant.suspend'],
        ['token:t-operator', 'operation.provision.done'], ['token:t-operator', 'operation.provision.start'],
      ])
      expect(entries[1].details).toEqual({ reason: 'invoice overdue' })
      expect(entries[1].requestId).toMatch(/^req-/)
      // The operation's entries carry the creating request's id.
      expect(entries[2].requestId).toMatch(/^req-/)
      expect([entries[3].requestId, entries[2].details.facts]).toEqual([entries[2].requestId, expect.objectContaining({ slug: 'acme', tier: 'pooled', server: 'main' })])
      expect(entries[1].afterDigest).not.toBe(entries[1].beforeDigest)
    })

    it('404s destructive actions on a missing tenant; 409s an action that conflicts with one in flight; nothing partial', async () => {
      for (const [method, url] of [['POST', '/api/tenants/ghost/suspend'], ['POST', '/api/tenants/ghost/resume'], ['DELETE', '/api/tenants/ghost'], ['POST', '/api/tenants/ghost/restore'], ['POST', '/api/tenants/ghost/purge'], ['POST', '/api/tenants/ghost/domains']] as const) {
        const r = await call(method, url, tokens.admin, url.endsWith('domains') ? { domain: 'ghost.example.com' } : {})
        expect([url, r.statusCode, r.json().code]).toEqual([url, 404, 'TENANT_NOT_FOUND'])
      }
      // A status change and its audit entry commit together: with the audit head gone, the append
      // fails and the suspension is rolled back.
      const catalogDb = tenantry.dataPlane.driver('main').admin(tenantry.dataPlane.server('main').mainDatabase)
      const head = (await catalogDb.query<{ seq: string; hash: string }>('SELECT seq, hash FROM tenantry.audit_head')).rows[0]
      await catalogDb.query('DELETE FROM tenantry.audit_head')
      const unaudited = await call('POST', '/api/tenants/umbrella/suspend', tokens.operator, { reason: 'x' })
      expect([unaudited.statusCode, unaudited.json().code]).toEqual([500, 'INTERNAL'])
      expect((await tenantry.findTenant('umbrella'))?.status).toBe('active')
      await catalogDb.query('INSERT INTO tenantry.audit_head (id, seq, hash) VALUES (true, $1, $2)', [head.seq, head.hash])
      const before = (await tenantry.audit.list({ limit: 1 }))[0].seq
      // Another worker's purge of initech is in flight: a second one is refused, the tenant untouched.
      const initech = (await tenantry.findTenant('initech'))!
      await tenantry.delete('initech')
      const inFlight = await tenantry.operations.start('purge', { tenantId: initech.id, slug: 'initech', params: {}, step: 'remove', startedBy: 'test:other-worker' })
      const second = await call('POST', '/api/tenants/initech/purge', tokens.admin, { force: true })
      expect([second.statusCode, second.json().code]).toEqual([409, 'CONFLICT'])
      expect((await tenantry.findTenant('initech'))?.status).toBe('deleted')
      await tenantry.operations.finish(inFlight.id, 'failed', 'test')
      // A status change another process made between the read and the write is not overwritten.
      await expect(tenantry.catalog.setStatus(initech.id, 'active', null, undefined, ['suspended'])).rejects.toMatchObject({ code: 'CONFLICT', details: { status: 'deleted' } })
      expect((await tenantry.findTenant('initech'))?.status).toBe('deleted')
      // Only the library's delete (actor 'library') and the in-flight operation's own start and outcome: the refused purge and status change wrote nothing.
      expect((await tenantry.audit.list({ limit: 4 })).map((e) => [e.seq - before, e.action, e.actor])).toEqual([
        [3, 'operation.purge.failed', 'test:other-worker'], [2, 'operation.purge.start', 'test:other-worker'], [1, 'tenant.delete', 'library'], [0, expect.any(String), expect.any(String)],
      ])
      // Sent together: one purge runs; the other is refused (409 while it runs, 404 once it is gone), never a 500.
      const purges = await Promise.all([1, 2].map(() => call('POST', '/api/tenants/initech/purge', tokens.admin, { force: true })))
      const [purged, refused] = purges.sort((a, b) => a.statusCode - b.statusCode)
      expect([purged.statusCode, purged.json().tenant.slug]).toEqual([200, 'initech'])
      expect([[409, 'CONFLICT'], [404, 'TENANT_NOT_FOUND']]).toContainEqual([refused.statusCode, refused.json().code])
      expect(await tenantry.findTenant('initech')).toBeNull()
      expect((await tenantry.audit.list({ limit: 1 }))[0]).toMatchObject({ action: 'operation.purge.done', actor: 'token:t-admin', slug: 'initech', requestId: expect.stringMatching(/^req-/), details: { facts: { force: true } } })
      // Two creates of one slug sent together: one tenant, one 409.
      const creates = await Promise.all([1, 2].map(() => call('POST', '/api/tenants', tokens.operator, { slug: 'twin', tier: 'pooled' })))
      expect(creates.map((r) => r.statusCode).sort()).toEqual([201, 409])
      expect((await tenantry.catalog.page({ search: 'twin' })).tenants.map((t) => t.slug)).toEqual(['twin'])
      await tenantry.purge('twin', { force: true })

    })

    it('serves the fleet overview, servers without passwords, plans, operations, domains, usage and the OpenAPI 3.1 document', async () => {
      const o = (await call('GET', '/api/overview', tokens.viewer)).json()
      expect(o.tenants).toEqual(expect.arrayContaining([{ tier: 'schema', server: 'main', status: 'active', count: 2 }]))
      expect(o.servers[0]).toMatchObject({ name: 'main', tenants: 4 })
      expect(JSON.stringify((await call('GET', '/api/servers', tokens.viewer)).json())).not.toMatch(/:[^:@/]+@/)
      expect((await call('GET', '/api/plans', tokens.viewer)).json().map((p: { name: string }) => p.name)).toContain('default')
      const ops = (await call('GET', '/api/operations?kind=provision&limit=2', tokens.viewer)).json()
      expect(ops.map((x: { kind: string; state: string }) => [x.kind, x.state])).toEqual([['provision', 'done'], ['provision', 'done']])
      const one = (await call('GET', `/api/operations/${ops[0].id}`, tokens.viewer)).json()
      expect(one.progress).toMatchObject({ state: 'done', percent: 100 })
      expect((await call('GET', '/api/operations/00000000-0000-4000-8000-000000000000', tokens.viewer)).statusCode).toBe(404)
      // Domains go through tenantry.domains: pending with a token until verified, then they resolve.
      const added = await call('POST', '/api/tenants/globex/domains', tokens.operator, { domain: 'App.Globex.Example' })
      const token = added.json().token as string
      expect(token).toMatch(/^[0-9a-f]{32}$/)
      expect([added.statusCode, { ...added.json(), createdAt: 'x' }]).toEqual([201, {
        domain: 'app.globex.example', tenantId: (await tenantry.findTenant('globex'))!.id, slug: 'globex', status: 'pending', token, verifiedAt: null, createdAt: 'x',
        instructions: { txtName: '_tenantry-verification.app.globex.example', txtValue: `tenantry-verification=${token}`, httpUrl: 'http://app.globex.example/.well-known/tenantry-domain-verification', httpBody: token },
      }])
      const dup = await call('POST', '/api/tenants/acme/domains', tokens.operator, { domain: 'app.globex.example' })
      expect([dup.statusCode, dup.json().code, dup.json().details]).toEqual([409, 'DOMAIN_TAKEN', { domain: 'app.globex.example' }])
      const badDomain = await call('POST', '/api/tenants/globex/domains', tokens.operator, { domain: 'localhost:8080' })
      expect([badDomain.statusCode, badDomain.json().code, badDomain.json().details.field]).toEqual([400, 'VALIDATION_FAILED', 'domain'])
      expect((await call('POST', '/api/tenants/globex/domains', tokens.viewer, { domain: 'x.globex.example' })).statusCode).toBe(403)
      // Not published yet: 400 saying what was looked for; still pending.
      const early = await call('POST', '/api/tenants/globex/domains/app.globex.example/verify', tokens.operator, { method: 'dns' })
      expect([early.statusCode, early.json().code, early.json().details]).toEqual([400, 'DOMAIN_VERIFICATION_FAILED', { domain: 'app.globex.example', checked: ['TXT _tenantry-verification.app.globex.example has no records'] }])
      expect((await call('POST', '/api/tenants/acme/domains/app.globex.example/verify', tokens.operator, {})).statusCode).toBe(404)
      const listed = (await call('GET', '/api/tenants/globex/domains', tokens.viewer)).json()
      expect(listed.map((d: { domain: string; status: string }) => [d.domain, d.status])).toEqual([['app.globex.example', 'pending']])
      expect(await tenantry.catalog.byDomain('app.globex.example')).toBeNull()
      dns.set('_tenantry-verification.app.globex.example', [[`tenantry-verification=${token}`]])
      const verified = await call('POST', '/api/tenants/globex/domains/app.globex.example/verify', tokens.operator)
      expect([verified.statusCode, verified.json().status, typeof verified.json().verifiedAt]).toEqual([200, 'verified', 'string'])
      expect((await tenantry.catalog.byDomain('app.globex.example'))?.slug).toBe('globex')
      expect((await call('GET', '/api/tenants/globex', tokens.viewer)).json().domains.map((d: { status: string }) => d.status)).toEqual(['verified'])
      const trail = (await tenantry.audit.list({ tenant: (await tenantry.findTenant('globex'))!.id, limit: 5 })).map((e) => [e.action, e.actor, e.details])
      expect(trail.slice(0, 2)).toEqual([
        ['tenant.domain.verify', 'token:t-operator', { domain: 'app.globex.example', method: 'any' }],
        ['tenant.domain.add', 'token:t-operator', { domain: 'app.globex.example', status: 'pending' }],
      ])
      expect((await call('DELETE', '/api/tenants/acme/domains/app.globex.example', tokens.operator)).statusCode).toBe(404)
      expect((await call('DELETE', '/api/tenants/globex/domains/app.globex.example', tokens.operator)).json()).toEqual([])
      expect(await tenantry.catalog.byDomain('app.globex.example')).toBeNull()
      expect((await call('GET', '/api/tenants/globex/usage?granularity=hour', tokens.viewer)).json()).toEqual([])
      const badRange = await call('GET', '/api/tenants/globex/usage?from=yesterday', tokens.viewer)
      expect([badRange.statusCode, badRange.json().details]).toEqual([400, { field: 'from', in: 'querystring', rule: 'format' }])
      expect((await call('GET', '/api/usage/top?by=db_time&periodMs=3600000', tokens.viewer)).json()).toEqual([])
      expect((await call('GET', '/api/advice', tokens.viewer)).json()).toEqual([])
      const doctor = (await call('GET', '/api/doctor', tokens.viewer)).json()
      expect([doctor.ok, doctor.findings, doctor.tables > 0]).toEqual([true, [], true])
      const doc = (await app.inject({ method: 'GET', url: '/admin/openapi.json' })).json()
      expect(doc.openapi).toBe('3.1.0')
      const checked = await validateOpenApi(structuredClone(doc))
      expect(checked.valid ? 'valid' : compileErrors(checked)).toBe('valid')
      expect(Object.keys(doc.paths)).toEqual(expect.arrayContaining(['/admin/api/tenants', '/admin/api/tenants/{slug}/suspend', '/admin/api/operations/{id}/events', '/admin/api/migrations/run', '/admin/api/audit']))
      expect(doc.paths['/admin/api/tenants'].post.requestBody.content['application/json'].schema.additionalProperties).toBe(false)
      const page = await app.inject({ method: 'GET', url: '/admin/' })
      expect(page.headers['content-security-policy']).toMatch(/frame-ancestors 'none'/)
    })

    it('configuration, branding, plans and flags through tenantry.config / tenantry.flags: versioned with the admin actor, audited, bad input 400 with the pointer', async () => {
      const globex = (await tenantry.findTenant('globex'))!
      const merged = await call('GET', '/api/tenants/globex/config', tokens.viewer)
      expect([merged.statusCode, merged.json()]).toEqual([200, { slug: 'globex', plan: 'default', layer: 'merged', path: null, value: await tenantry.config.get('globex') }])
      const set = await call('PUT', '/api/tenants/globex/config', tokens.operator, { path: 'branding.primaryColor', value: '#0f766e' })
      expect([set.statusCode, { ...set.json(), id: 0, changedAt: 'x' }]).toEqual([200, {
        id: 0, scope: 'tenant', subject: globex.id, label: 'globex', path: '/branding/primaryColor', before: {}, after: { branding: { primaryColor: '#0f766e' } }, changedBy: 'token:t-operator', changedAt: 'x', note: null,
      }])
      // Refused values store nothing; the error names the JSON pointer and the rule.
      const bad = await call('PUT', '/api/tenants/globex/config', tokens.operator, { path: '/branding/primaryColor', value: 'red' })
      expect([bad.statusCode, bad.json().code, bad.json().details.pointer, bad.json().details.rule]).toEqual([400, 'CONFIG_INVALID', '/branding/primaryColor', 'pattern'])
      const unknown = await call('PUT', '/api/tenants/globex/config', tokens.operator, { path: '/a', value: 1, by: 'mallory' })
      expect([unknown.statusCode, unknown.json().code, unknown.json().details.field]).toEqual([400, 'VALIDATION_FAILED', 'by'])
      const noValue = await call('PUT', '/api/tenants/globex/config', tokens.operator, { path: '/a' })
      expect([noValue.statusCode, noValue.json().details.field]).toEqual([400, 'value'])
      expect((await call('PUT', '/api/tenants/globex/config', tokens.viewer, { path: '/a', value: 1 })).statusCode).toBe(403)
      expect((await call('PUT', '/api/tenants/ghost/config', tokens.operator, { path: '/a', value: 1 })).json().code).toBe('TENANT_NOT_FOUND')
      expect((await call('GET', '/api/tenants/globex/config?layer=tenant', tokens.viewer)).json().value).toEqual({ branding: { primaryColor: '#0f766e' } })
      expect((await call('GET', '/api/tenants/globex/config?path=/branding/primaryColor', tokens.viewer)).json().value).toBe('#0f766e')

      // Branding: a validated part of the configuration.
      const branded = await call('PUT', '/api/tenants/globex/branding', tokens.operator, { displayName: 'Globex', primaryColor: '#123456' })
      expect([branded.statusCode, branded.json().path, branded.json().after]).toEqual([200, '/branding', { branding: { displayName: 'Globex', primaryColor: '#123456' } }])
      const badBrand = await call('PUT', '/api/tenants/globex/branding', tokens.operator, { primaryColor: 'blue' })
      expect([badBrand.statusCode, badBrand.json().code, badBrand.json().details.pointer]).toEqual([400, 'CONFIG_INVALID', '/branding/primaryColor'])
      expect((await call('GET', '/api/tenants/globex/branding', tokens.viewer)).json()).toEqual({
        slug: 'globex', name: 'Globex Inc', merged: { displayName: 'Globex', primaryColor: '#123456' }, own: { displayName: 'Globex', primaryColor: '#123456' },
      })
      const history = (await call('GET', '/api/tenants/globex/config/history', tokens.viewer)).json()
      expect(history.map((v: { path: string; after: unknown; changedBy: string }) => [v.path, v.after, v.changedBy])).toEqual([
        ['/branding', { branding: { displayName: 'Globex', primaryColor: '#123456' } }, 'token:t-operator'],
        ['/branding/primaryColor', { branding: { primaryColor: '#0f766e' } }, 'token:t-operator'],
      ])
      const back = await call('POST', '/api/tenants/globex/config/rollback', tokens.operator, { version: history[1].id })
      expect([back.statusCode, back.json().length]).toEqual([200, 1])
      expect(await tenantry.config.get('globex', undefined, { layer: 'tenant' })).toEqual({})
      expect((await call('POST', '/api/tenants/globex/config/rollback', tokens.operator, { version: '7' })).json().details).toEqual({ field: 'version', in: 'body', rule: 'type' })
      expect((await call('DELETE', '/api/tenants/globex/config?path=/nothing', tokens.operator)).json()).toEqual({ version: null })

      // Plans: assignment (operator) and a plan's own layer (admin: every tenant on it follows).
      await tenantry.config.plans.create('pro', { branding: { primaryColor: '#7c3aed' } })
      const toPro = await call('PUT', '/api/tenants/globex/plan', tokens.operator, { plan: 'pro' })
      expect([toPro.statusCode, toPro.json().plan]).toEqual([200, 'pro'])
      expect((await call('PUT', '/api/tenants/globex/plan', tokens.operator, { plan: 'gold' })).json().code).toBe('PLAN_NOT_FOUND')
      expect((await call('PUT', '/api/tenants/globex/plan', tokens.operator, { plan: 'Gold!' })).json().details.field).toBe('plan')
      expect((await call('GET', '/api/tenants/globex/branding', tokens.viewer)).json().merged).toEqual({ primaryColor: '#7c3aed' })
      expect((await call('PUT', '/api/plans/pro/config', tokens.operator, { path: '/branding/accentColor', value: '#000' })).statusCode).toBe(403)
      const planSet = await call('PUT', '/api/plans/pro/config', tokens.admin, { path: '/branding/accentColor', value: '#000' })
      expect([planSet.statusCode, planSet.json().scope, planSet.json().changedBy]).toEqual([200, 'plan', 'token:t-admin'])
      expect((await call('GET', '/api/plans/pro/config', tokens.viewer)).json()).toEqual({ plan: 'pro', path: null, value: { branding: { primaryColor: '#7c3aed', accentColor: '#000' } } })
      const planBack = await call('POST', '/api/plans/pro/config/rollback', tokens.admin, { version: planSet.json().id })
      expect([planBack.statusCode, planBack.json().version.after]).toEqual([200, { branding: { primaryColor: '#7c3aed' } }])
      expect((await call('GET', '/api/plans/pro/config/history', tokens.viewer)).json().map((v: { changedBy: string }) => v.changedBy)).toEqual(['token:t-admin', 'token:t-admin', 'app'])

      // Flags: set, roll out, evaluate for a tenant, history, rollback, remove.
      const flag = await call('PUT', '/api/flags/new-editor', tokens.operator, {})
      expect([flag.statusCode, flag.json()]).toEqual([200, { key: 'new-editor', enabled: true, variants: { on: true, off: false }, defaultVariant: 'off', rules: [] }])
      expect((await call('PUT', '/api/flags/new-editor', tokens.operator, { defaultVariant: 'maybe' })).json().code).toBe('VALIDATION_FAILED')
      expect((await call('PUT', '/api/flags/Bad_Key', tokens.operator, {})).json().details.field).toBe('key')
      const out = await call('POST', '/api/flags/new-editor/rollout', tokens.operator, { percentage: 100 })
      expect([out.statusCode, out.json().rules]).toEqual([200, [{ name: 'rollout', percentage: 100, variant: 'on' }]])
      expect((await call('POST', '/api/flags/new-editor/rollout', tokens.operator, { percentage: 150 })).json().details).toEqual({ field: 'percentage', in: 'body', rule: 'maximum' })
      expect((await call('POST', '/api/flags/nope/rollout', tokens.operator, { percentage: 5 })).json().code).toBe('FLAG_NOT_FOUND')
      expect((await call('GET', '/api/flags/new-editor/eval?tenant=globex', tokens.viewer)).json()).toEqual({ key: 'new-editor', value: true, variant: 'on', reason: 'SPLIT', rule: 0, ruleName: 'rollout' })
      expect((await call('GET', '/api/tenants/globex/flags', tokens.viewer)).json()).toEqual([{ key: 'new-editor', value: true, variant: 'on', reason: 'SPLIT', rule: 0, ruleName: 'rollout' }])
      expect((await call('GET', '/api/flags', tokens.viewer)).json().map((f: { key: string }) => f.key)).toEqual(['new-editor'])
      const flagHistory = (await call('GET', '/api/flags/new-editor/history', tokens.viewer)).json()
      expect(flagHistory.map((v: { changedBy: string; note: string | null }) => v.changedBy)).toEqual(['token:t-operator', 'token:t-operator'])
      expect((await call('POST', '/api/flags/new-editor/rollback', tokens.operator, { version: flagHistory[0].id })).json().flag.rules).toEqual([])
      expect((await call('DELETE', '/api/flags/new-editor', tokens.operator)).statusCode).toBe(403)
      expect((await call('DELETE', '/api/flags/new-editor', tokens.admin)).json()).toEqual({ removed: 'new-editor' })
      expect((await call('GET', '/api/flags/new-editor', tokens.viewer)).json().code).toBe('FLAG_NOT_FOUND')

      const trail = (await tenantry.audit.list({ tenant: globex.id, limit: 6 })).map((e) => [e.action, e.actor])
      // The library audits each recorded version in the change's own transaction (an unset of a
      // path that was never set records nothing); the routes add no entries of their own.
      expect(trail.slice(0, 4)).toEqual([['tenant.plan.set', 'token:t-operator'], ['config.rollback', 'token:t-operator'], ['config.set', 'token:t-operator'], ['config.set', 'token:t-operator']])
      const flagAudit = (await tenantry.audit.list({ limit: 5 })).map((e) => [e.action, e.actor, (e.details as { subject?: string }).subject])
      expect(flagAudit.slice(0, 3)).toEqual([['flag.remove', 'token:t-admin', 'flag:new-editor'], ['flag.rollback', 'token:t-operator', 'flag:new-editor'], ['flag.set', 'token:t-operator', 'flag:new-editor']])
      await tenantry.config.changePlan('globex', 'default')
    })

    it('runs a migration and streams its progress to 100% over server-sent events; plans before and after', async () => {
      await close()
      writeFileSync(join(migrations(), '0002_labels.sql'), 'CREATE TABLE labels (tenant_id uuid NOT NULL DEFAULT current_setting(\'tenantry.tenant_id\')::uuid, id bigint GENERATED ALWAYS AS IDENTITY, name text NOT NULL, PRIMARY KEY (tenant_id, id));\n')
      await open()
      const plan = (await call('GET', '/api/migrations/plan', tokens.viewer)).json()
      expect(plan.files).toEqual(['projects_and_tasks', 'labels'])
      expect(plan.pending).toBeGreaterThanOrEqual(3)
      const viewerRun = await call('POST', '/api/migrations/run', tokens.viewer, {})
      expect(viewerRun.statusCode).toBe(403)
      const run = await call('POST', '/api/migrations/run', tokens.operator, { concurrency: 2 })
      expect(run.statusCode).toBe(202)
      const id = run.json().operationId as string
      const address = await app.listen({ port: 0, host: '127.0.0.1' })
      const res = await fetch(`${address}/admin/api/operations/${id}/events`, { headers: { authorization: `Bearer ${tokens.viewer}` } })
      expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/)
      const text = await res.text()
      const events = [...text.matchAll(/event: (\w+)\ndata: (.*)\n/g)].map((m) => [m[1], JSON.parse(m[2])] as const)
      const last = events[events.length - 1]
      expect(last[0]).toBe('end')
      expect(last[1]).toMatchObject({ id, kind: 'migrate', state: 'done', percent: 100, failed: 0 })
      expect(events.every(([, p]) => p.percent === null || (p.percent >= 0 && p.percent <= 100))).toBe(true)
      expect((await call('GET', '/api/migrations/plan', tokens.viewer)).json().pending).toBe(0)
      const upToDate = await call('POST', '/api/migrations/run', tokens.operator, {})
      expect([upToDate.statusCode, upToDate.json().state]).toEqual([200, 'up-to-date'])
      // The run's record is its operation's start and outcome, with the caller and the request's id; no summary entry.
      const record = (await tenantry.audit.list({ limit: 1000 })).filter((e) => e.details.operationId === id).map((e) => [e.action, e.actor, /^req-/.test(e.requestId ?? '')])
      expect(record).toEqual([['operation.migrate.done', 'token:t-operator', true], ['operation.migrate.start', 'token:t-operator', true]])
      expect(await tenantry.audit.list({ action: 'migrations.run' })).toEqual([])
    })

    it('backs up, lists, downloads, restores a copy, exports and erases through the API as durable operations; bad input 400, missing 404, conflicts 409', async () => {
      /** Follow an operation until it finished (the SSE route reads the same record). */
      const finished = async (id: string) => {
        for (;;) {
          const op = (await call('GET', `/api/operations/${id}`, tokens.viewer)).json()
          if (op.state !== 'running') return op
          await new Promise((r) => setTimeout(r, 50))
        }
      }
      await call('POST', '/api/tenants', tokens.operator, { slug: 'vault', tier: 'schema', name: 'Vault' })
      await tenantry.withTenant('vault', async () => { await tenantry.db.query("INSERT INTO projects (name) VALUES ('one'), ('two')") })
      const archives = join(dir, 'archives')

      // Refused before anything runs: a path in the request, an unconfigured target, a viewer, a missing tenant.
      const bad: [string, string, string, unknown, number, string, string | undefined][] = [
        ['POST', '/api/tenants/vault/backups', tokens.operator, { to: '/etc' }, 400, 'VALIDATION_FAILED', 'to'],
        ['POST', '/api/tenants/vault/backups', tokens.operator, { target: 'elsewhere' }, 400, 'VALIDATION_FAILED', 'target'],
        ['POST', '/api/tenants/vault/exports', tokens.operator, { format: 'xml' }, 400, 'VALIDATION_FAILED', 'format'],
        ['POST', '/api/tenants/vault/erase', tokens.admin, { subject: 'ann@example.com', force: true }, 400, 'VALIDATION_FAILED', 'force'],
        ['POST', '/api/tenants/vault/backups', tokens.viewer, {}, 403, 'ADMIN_FORBIDDEN', undefined],
        ['POST', '/api/tenants/vault/erase', tokens.operator, {}, 403, 'ADMIN_FORBIDDEN', undefined],
        ['POST', '/api/tenants/ghost/backups', tokens.operator, {}, 404, 'TENANT_NOT_FOUND', undefined],
        ['POST', '/api/tenants/ghost/exports', tokens.operator, { format: 'jsonl' }, 404, 'TENANT_NOT_FOUND', undefined],
        ['POST', '/api/tenants/ghost/erase', tokens.admin, {}, 404, 'TENANT_NOT_FOUND', undefined],
        ['GET', '/api/tenants/ghost/backups', tokens.viewer, undefined, 404, 'TENANT_NOT_FOUND', undefined],
        ['POST', '/api/tenants/vault/erase', tokens.admin, {}, 409, 'CONFLICT', undefined],
      ]
      for (const [method, url, token, body, status, code, field] of bad) {
        const r = await call(method, url, token, body)
        expect([url, r.statusCode, r.json().code, r.json().details?.field]).toEqual([url, status, code, field])
      }
      // Another operation of the tenant in flight: 409, nothing written.
      const vault = (await tenantry.findTenant('vault'))!
      const inFlight = await tenantry.operations.start('move', { tenantId: vault.id, slug: 'vault', params: {}, step: 'copy', startedBy: 'test:other-worker' })
      const busy = await call('POST', '/api/tenants/vault/backups', tokens.operator, { target: 'local' })
      expect([busy.statusCode, busy.json().code]).toEqual([409, 'CONFLICT'])
      await tenantry.operations.finish(inFlight.id, 'failed', 'test')
      expect((await call('GET', '/api/tenants/vault/backups', tokens.viewer)).json()).toEqual([])

      // Back up into the configured target: 202, the operation reaches done, the archive is listed.
      const started = await call('POST', '/api/tenants/vault/backups', tokens.operator, { target: 'local', encrypt: false })
      expect([started.statusCode, started.json().state]).toEqual([202, 'running'])
      const backupOp = await finished(started.json().operationId)
      expect([backupOp.kind, backupOp.state, backupOp.progress.percent, backupOp.startedBy]).toEqual(['backup', 'done', 100, 'token:t-operator'])
      const listed = (await call('GET', '/api/tenants/vault/backups', tokens.viewer)).json()
      expect(listed.map((b: { slug: string; tier: string; rows: number; encrypted: boolean; operationId: string }) => [b.slug, b.tier, b.rows, b.encrypted, b.operationId]))
        .toEqual([['vault', 'schema', 2, false, backupOp.id]])
      expect(listed[0].path.startsWith(`${archives}/vault-`)).toBe(true)
      expect((await call('GET', '/api/backups?tenant=vault', tokens.viewer)).json().map((b: { id: string }) => b.id)).toEqual([listed[0].id])

      // Download: operator only, the recorded file byte for byte; another tenant's path or an unknown id is 404.
      expect((await call('GET', `/api/${listed[0].download}`, tokens.viewer)).statusCode).toBe(403)
      const download = await call('GET', `/api/${listed[0].download}`, tokens.operator)
      expect([download.statusCode, download.headers['content-type'], download.headers['content-disposition']]).toEqual([200, 'application/x-tar', `attachment; filename="${listed[0].path.split('/').pop()}"`])
      expect(download.rawPayload.equals(readFileSync(listed[0].path))).toBe(true)
      expect((await call('GET', `/api/tenants/acme/backups/${listed[0].id}/archive`, tokens.operator)).json().code).toBe('NOT_FOUND')

      // Restore: over the live tenant without replace is 409; as a copy, 202 then an active tenant with the rows.
      const over = await call('POST', `/api/tenants/vault/backups/${listed[0].id}/restore`, tokens.admin, {})
      expect([over.statusCode, over.json().code]).toEqual([409, 'CONFLICT'])
      expect((await call('POST', `/api/tenants/vault/backups/${listed[0].id}/restore`, tokens.operator, { as: 'vault-copy' })).statusCode).toBe(403)
      const restore = await call('POST', `/api/tenants/vault/backups/${listed[0].id}/restore`, tokens.admin, { as: 'vault-copy', tier: 'pooled' })
      expect(restore.statusCode).toBe(202)
      expect((await finished(restore.json().operationId)).state).toBe('done')
      expect(await tenantry.findTenant('vault-copy')).toMatchObject({ status: 'active', tier: 'pooled' })
      expect(await tenantry.withTenant('vault-copy', async () => (await tenantry.db.query<{ name: string }>('SELECT name FROM projects ORDER BY name')).rows)).toEqual([{ name: 'one' }, { name: 'two' }])

      // Export: 202, then the directory as one tar stream (manifest and one file per table).
      const exp = await call('POST', '/api/tenants/vault/exports', tokens.operator, { format: 'jsonl', target: 'local' })
      expect(exp.statusCode).toBe(202)
      expect((await finished(exp.json().operationId)).state).toBe('done')
      const tarball = await call('GET', `/api/exports/${exp.json().operationId}/archive`, tokens.operator)
      expect([tarball.statusCode, tarball.headers['content-type']]).toEqual([200, 'application/x-tar'])
      const names = [...tarball.rawPayload.toString('latin1').matchAll(/vault-export-[^/\0]+\/([a-z_.]+)\0/g)].map((m) => m[1])
      expect(names).toEqual(['labels.jsonl', 'manifest.json', 'projects.jsonl', 'tasks.jsonl'])
      expect((await call('GET', `/api/exports/${backupOp.id}/archive`, tokens.operator)).statusCode).toBe(404)

      // Erase the copy once deleted: 202, the certificate verified and kept.
      await call('DELETE', '/api/tenants/vault-copy', tokens.operator)
      const erase = await call('POST', '/api/tenants/vault-copy/erase', tokens.admin, {})
      expect(erase.statusCode).toBe(202)
      expect((await finished(erase.json().operationId)).state).toBe('done')
      expect(await tenantry.findTenant('vault-copy')).toBeNull()
      const certs = (await call('GET', '/api/erasures?tenant=vault-copy', tokens.viewer)).json()
      expect(certs.map((c: { operationId: string; verified: boolean }) => [c.operationId, c.verified])).toEqual([[erase.json().operationId, true]])

      // One record each: the operation's start and outcome with the admin actor and the request's id, as the CLI's runs record them (no summary entry).
      const trail = (await tenantry.audit.list({ limit: 30 })).filter((e) => /^(backup\.|export\.|operation\.(backup|restore|export|erase)\.)/.test(e.action)).reverse()
      expect(trail.map((e) => [e.action, e.actor, e.slug, /^req-/.test(e.requestId ?? '')])).toEqual([
        ['operation.backup.start', 'token:t-operator', 'vault', true], ['operation.backup.done', 'token:t-operator', 'vault', true], ['backup.download', 'token:t-operator', 'vault', true],
        ['operation.restore.start', 'token:t-admin', 'vault-copy', true], ['operation.restore.done', 'token:t-admin', 'vault-copy', true],
        ['operation.export.start', 'token:t-operator', 'vault', true], ['operation.export.done', 'token:t-operator', 'vault', true], ['export.download', 'token:t-operator', 'vault', true],
        ['operation.erase.start', 'token:t-admin', 'vault-copy', true], ['operation.erase.done', 'token:t-admin', 'vault-copy', true],
      ])
      expect(trail[1].details.facts).toMatchObject({ path: expect.stringMatching(/\.tar/), rows: expect.any(Number) })
      expect(trail[9].details.facts).toMatchObject({ certificateId: expect.any(String) })
    })

    it('answers any unknown /admin URL from the admin plugin (404 coded), never through tenant resolution', async () => {
      for (const url of ['/admin/nope', '/admin/api/nope', '/admin/api/tenants/acme/nope', '/admin/vendor/x.js']) {
        const r = await app.inject({ method: 'GET', url, headers: { 'x-tenant': 'acme' } })
        expect([url, r.statusCode, r.json().code]).toEqual([url, 404, 'NOT_FOUND'])
      }
      const post = await app.inject({ method: 'POST', url: '/admin/api/nope', payload: {} })
      expect([post.statusCode, post.json().code]).toEqual([404, 'NOT_FOUND'])
      // The app's own unknown URLs still go through its tenant chain.
      expect((await app.inject({ method: 'GET', url: '/nope' })).json().code).not.toBe('NOT_FOUND')
    })

    it('audit log: verify detects an edited, a deleted and a cut-off entry; the API and the CLI list it', async () => {
      expect(await tenantry.audit.verify()).toMatchObject({ ok: true, problems: [] })
      const listed = (await call('GET', '/api/audit?tenant=acme&limit=2', tokens.viewer)).json()
      expect(listed.entries.map((e: { action: string }) => e.action)).toEqual(['tenant.resume', 'tenant.suspend'])
      expect(listed.next).toBe(listed.entries[1].seq)
      expect((await call('GET', '/api/audit/verify', tokens.operator)).statusCode).toBe(403)
      expect((await call('GET', '/api/audit/verify', tokens.admin)).json().ok).toBe(true)
      const admin = tenantry.dataPlane.driver('main').admin(tenantry.dataPlane.server('main').mainDatabase)
      const n = (await tenantry.audit.list({ limit: 1 }))[0].seq
      await admin.query("UPDATE tenantry.audit_log SET actor = 'token:someone-else' WHERE seq = 4")
      await admin.query('DELETE FROM tenantry.audit_log WHERE seq = 6')
      await admin.query('DELETE FROM tenantry.audit_log WHERE seq = $1', [n])
      const report = await tenantry.audit.verify()
      expect(report.ok).toBe(false)
      expect(report.problems.map((p) => [p.seq, p.problem])).toEqual([[4, 'edited'], [6, 'missing'], [n, 'truncated']])
    })

    it.skipIf(backend.name !== 'PostgreSQL')('CLI: admin tokens create (shown once) / list / revoke; audit list and verify (exit 1 when tampered)', async () => {
      const out: string[] = []
      const log = vi.spyOn(console, 'log').mockImplementation((...a) => { out.push(a.join(' ')) })
      const err: string[] = []
      vi.spyOn(console, 'error').mockImplementation((...a) => { err.push(a.join(' ')) })
      const cli = async (...args: string[]) => {
        out.length = 0
        const code = await runCli([...args, '--database-url', where.databaseUrl!, '--role-prefix', ROLE_PREFIX])
        return { code, text: out.join('\n') }
      }
      try {
        const created = await cli('admin', 'tokens', 'create', 'ci-bot', '--role', 'operator', '--json')
        expect(created.code).toBe(0)
        const token = JSON.parse(created.text).token as string
        expect(token).toMatch(/^tnta_[A-Za-z0-9_-]{43}$/)
        expect((await call('GET', '/api/overview', token)).statusCode).toBe(200)
        const listed = await cli('admin', 'tokens', 'list')
        expect(listed.text).toMatch(/ci-bot\s+operator/)
        expect(listed.text).not.toContain(token)
        expect((await cli('admin', 'tokens', 'create', 'ci-bot', '--role', 'operator')).code).toBe(1)
        expect((await cli('admin', 'tokens', 'create', 'x', '--role', 'root')).code).toBe(2)
        expect((await cli('admin', 'tokens', 'revoke', 'ci-bot')).code).toBe(0)
        const after = await call('GET', '/api/overview', token)
        expect([after.statusCode, after.json().code]).toEqual([401, 'ADMIN_UNAUTHORIZED'])
        expect((await cli('admin', 'tokens', 'revoke', 'ci-bot')).code).toBe(1)
        const audit = await cli('audit', 'list', '--tenant', 'acme', '--json')
        // acme's tenant.create is seq 6, which the tamper test above deleted.
        expect(JSON.parse(audit.text).map((e: { action: string }) => e.action)).toEqual(['tenant.resume', 'tenant.suspend', 'operation.provision.done', 'operation.provision.start'])
        expect((await cli('audit', 'list', '--since', 'yesterday')).code).toBe(2)
        // tenants list pages through the same keyset list as the API.
        const first = await cli('tenants', 'list', '--limit', '2', '--json')
        expect(JSON.parse(first.text).map((x: { slug: string }) => x.slug)).toEqual(['acme', 'globex'])
        const cursor = /next page: --cursor (\S+)/.exec(err.join('\n'))![1]
        const second = await cli('tenants', 'list', '--limit', '2', '--cursor', cursor, '--json')
        expect(JSON.parse(second.text).map((x: { slug: string }) => x.slug)).toEqual(['hooli', 'umbrella'])
        expect((await cli('tenants', 'list', '--search', 'umb')).text).toMatch(/^SLUG.*\n.*\numbrella /)
        expect((await cli('tenants', 'list', '--limit', '0')).code).toBe(2)
        // The CLI's status changes are audited in their transaction, with the CLI user as actor.
        expect((await cli('tenants', 'suspend', 'umbrella', '--reason', 'from the CLI')).code).toBe(0)
        const cliEntry = JSON.parse((await cli('audit', 'list', '--tenant', 'umbrella', '--limit', '1', '--json')).text)[0]
        expect(cliEntry).toMatchObject({ action: 'tenant.suspend', actor: expect.stringMatching(/^cli:.+@.+$/), slug: 'umbrella' })
        const verify = await cli('audit', 'verify')
        expect(verify.code).toBe(1)
        expect(verify.text).toMatch(/TAMPERED/)
      } finally {
        log.mockRestore()
        vi.restoreAllMocks()
      }
    })

    it('plans: created with their limits and changed through their layer (admin); servers: listed with connection use, added (admin), a taken name 409, an unreachable one 400', async () => {
      expect((await call('POST', '/api/plans', tokens.operator, { name: 'gold' })).statusCode).toBe(403)
      for (const [body, field, rule] of [[{ name: 'Gold!' }, 'name', 'pattern'], [{ name: 'gold', limits: {} }, 'limits', 'unknown'], [{ name: 'gold', settings: [] }, 'settings', 'type']] as const) {
        const r = await call('POST', '/api/plans', tokens.admin, body)
        expect([r.statusCode, r.json().code, r.json().details?.field, r.json().details?.rule]).toEqual([400, 'VALIDATION_FAILED', field, rule])
      }
      const created = await call('POST', '/api/plans', tokens.admin, { name: 'gold', settings: { limits: { concurrency: 4 } } })
      expect([created.statusCode, created.json()]).toEqual([201, { name: 'gold', settings: { limits: { concurrency: 4 } } }])
      const again = await call('POST', '/api/plans', tokens.admin, { name: 'gold' })
      expect([again.statusCode, again.json().code]).toEqual([409, 'CONFLICT'])
      expect((await call('PUT', '/api/plans/gold/config', tokens.admin, { path: '/limits/concurrency', value: 8 })).statusCode).toBe(200)
      expect((await call('GET', '/api/plans', tokens.viewer)).json().find((p: { name: string }) => p.name === 'gold')).toMatchObject({ name: 'gold', settings: { limits: { concurrency: 8 } } })
      expect((await tenantry.audit.list({ limit: 2 })).map((e) => [e.action, e.actor])).toEqual([['plan.config.set', 'token:t-admin'], ['plan.create', 'token:t-admin']])

      const servers = (await call('GET', '/api/servers', tokens.viewer)).json()
      expect(servers.map((s: { name: string }) => s.name)).toEqual(['main'])
      expect(Object.keys(servers[0]).sort()).toEqual(['capacityWeight', 'connections', 'mainDatabase', 'name', 'pool', 'region', 'url'])
      expect((await call('POST', '/api/servers', tokens.operator, { name: 'second', url: 'postgres://x@127.0.0.1/db' })).statusCode).toBe(403)
      const taken = await call('POST', '/api/servers', tokens.admin, { name: 'main', url: 'postgres://x@127.0.0.1/db' })
      expect([taken.statusCode, taken.json().code, taken.json().details]).toEqual([409, 'CONFLICT', { field: 'name' }])
      const ftp = await call('POST', '/api/servers', tokens.admin, { name: 'second', url: 'ftp://127.0.0.1/db' })
      expect([ftp.statusCode, ftp.json().details]).toEqual([400, { field: 'url', in: 'body', rule: 'pattern' }])
      if (backend.name !== 'PostgreSQL') return
      const unreachable = await call('POST', '/api/servers', tokens.admin, { name: 'nowhere', url: 'postgres://postgres:secret@127.0.0.1:1/none' })
      expect([unreachable.statusCode, unreachable.json().code, unreachable.json().details]).toEqual([400, 'VALIDATION_FAILED', { field: 'url', rule: 'unreachable' }])
      expect(unreachable.json().message).not.toMatch(/secret/)
      const url = await freshDatabase(`${ROLE_PREFIX}_second`)
      const added = await call('POST', '/api/servers', tokens.admin, { name: 'second', url, region: 'eu', capacityWeight: 2 })
      expect([added.statusCode, added.json().name, added.json().region, added.json().capacityWeight, added.json().mainDatabase]).toEqual([201, 'second', 'eu', 2, `${ROLE_PREFIX}_second`])
      expect(added.json().connections).toEqual({ used: expect.any(Number), max: expect.any(Number) })
      expect((await call('GET', '/api/servers', tokens.viewer)).json().map((s: { name: string }) => s.name)).toEqual(['main', 'second'])
      expect((await tenantry.audit.list({ limit: 1 }))[0]).toMatchObject({ action: 'server.add', actor: 'token:t-admin', requestId: expect.stringMatching(/^req-/), details: { server: 'second', region: 'eu' } })
    })
  })
}

for (const backend of BACKENDS) adminSuite(backend)

describe('tenantry admin serve', () => {
  it('serves the API, the OpenAPI document and the console on its own server, and stops on SIGTERM', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tenantry-admin-serve-'))
    const repo = fileURLToPath(new URL('..', import.meta.url))
    const env: NodeJS.ProcessEnv = { ...process.env, TENANTRY_DATA_DIR: join(dir, 'data'), TENANTRY_LOG_LEVEL: 'warn' }
    delete env.DATABASE_URL
    const child = spawn(process.execPath, ['bin/tenantry.js', 'admin', 'serve', '--port', '0'], { cwd: repo, env, stdio: ['ignore', 'pipe', 'pipe'] })
    try {
      let stderr = ''
      const address = await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no address within 120 s: ${stderr}`)), 120_000)
        child.stderr.setEncoding('utf8').on('data', (c: string) => {
          stderr += c
          const m = /admin console on (http:\/\/127\.0\.0\.1:\d+)\//.exec(stderr)
          if (m) { clearTimeout(timer); resolve(m[1]) }
        })
        child.on('exit', (code) => reject(new Error(`exited ${code}: ${stderr}`)))
      })
      expect((await fetch(`${address}/openapi.json`)).status).toBe(200)
      const page = await fetch(`${address}/`)
      expect([page.status, page.headers.get('content-type')]).toEqual([200, 'text/html; charset=utf-8'])
      const api = await fetch(`${address}/api/tenants`)
      expect([api.status, ((await api.json()) as { code: string }).code]).toEqual([401, 'ADMIN_UNAUTHORIZED'])
      const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
      child.kill('SIGTERM')
      expect(await exited).toBe(0)
    } finally {
      child.kill('SIGKILL')
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
