import { fileURLToPath } from 'node:url'
import type { FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildDemoApp } from '../demo/app.ts'
import { createTenantry, header, subdomain, type Tenant, type Tenantry, type Tier } from '../src/index.ts'
import { dropPostgresLeftovers, freshDatabase, postgresAvailable } from './helpers/backends.ts'

// The demo project tracker over HTTP (app.inject), the same suite on real PostgreSQL and on PGlite.

const MIGRATIONS = fileURLToPath(new URL('../demo/migrations', import.meta.url))
const DB_NAME = 'tenantry_test_demo_api'
// Roles and databases are cluster-wide on a real server: everything this file makes carries this prefix.
const ROLE_PREFIX = 'th_api'
const PG_UP = await postgresAvailable()

/** Drop what a run against the real server left: tenant databases, roles, the test database. */
async function cleanUpPostgres(): Promise<void> {
  await dropPostgresLeftovers(ROLE_PREFIX, DB_NAME)
}

interface Backend {
  name: string
  enabled: boolean
  open(options: { resolve: ReturnType<typeof subdomain | typeof header>[] }): Promise<Tenantry>
  cleanUp(): Promise<void>
}

const BACKENDS: Backend[] = [
  {
    name: 'PostgreSQL',
    enabled: PG_UP,
    async open({ resolve }) {
      await cleanUpPostgres()
      const url = await freshDatabase(DB_NAME)
      return createTenantry({ databaseUrl: url, rolePrefix: ROLE_PREFIX, migrations: MIGRATIONS, resolve })
    },
    cleanUp: cleanUpPostgres,
  },
  {
    name: 'PGlite',
    enabled: true,
    open: ({ resolve }) => createTenantry({ dataDir: 'memory', migrations: MIGRATIONS, resolve }),
    async cleanUp() {},
  },
]

const SEED: { slug: string; name: string; tier: Tier }[] = [
  { slug: 'acme', name: 'Acme Corp', tier: 'pooled' },
  { slug: 'hooli', name: 'Hooli', tier: 'pooled' }, // a second pooled tenant: its rows share acme's tables
  { slug: 'globex', name: 'Globex', tier: 'schema' },
  { slug: 'initech', name: 'Initech', tier: 'database' },
]
const ACTIVE = SEED.map((s) => s.slug)
const SUSPENDED = 'soylent'

interface Project { id: string; name: string; createdAt: string }
interface Task { id: string; projectId: string; title: string; done: boolean; createdAt: string }
interface Reply<T = unknown> { status: number; body: T; headers: Record<string, unknown> }

const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/
const ID = /^[1-9][0-9]*$/

function demoApiSuite(backend: Backend): void {
  describe.skipIf(!backend.enabled)(`demo API over HTTP (${backend.name})`, () => {
    let tenantry: Tenantry
    let app: FastifyInstance
    const tenants = new Map<string, Tenant>()
    // What each tenant must list, in creation (= id) order: every assertion on a list is exact.
    const projects = new Map<string, Project[]>(ACTIVE.map((s) => [s, []]))
    const tasks = new Map<string, Map<string, Task[]>>(ACTIVE.map((s) => [s, new Map()]))

    /** A request naming the tenant by subdomain (`host`) or by header (`tenant`), or neither. */
    async function call<T = any>(
      method: 'GET' | 'POST',
      url: string,
      opts: { host?: string; tenant?: string; payload?: unknown; raw?: string; headers?: Record<string, string> } = {},
    ): Promise<Reply<T>> {
      const headers: Record<string, string> = { host: opts.host ?? 'localhost:3000', ...opts.headers }
      if (opts.tenant !== undefined) headers['x-tenant'] = opts.tenant
      if (opts.raw !== undefined) headers['content-type'] ??= 'application/json'
      const res = await app.inject({
        method,
        url,
        headers,
        ...(opts.raw !== undefined ? { payload: opts.raw } : opts.payload !== undefined ? { payload: opts.payload as object } : {}),
      })
      return { status: res.statusCode, body: res.body === '' ? (undefined as T) : (res.json() as T), headers: res.headers }
    }
    const at = (slug: string) => ({ host: `${slug}.localhost:3000` })

    async function createProject(slug: string, name: string): Promise<Project> {
      const res = await call<Project>('POST', '/api/projects', { ...at(slug), payload: { name } })
      expect(res.status, JSON.stringify(res.body)).toBe(201)
      expect(Object.keys(res.body).sort()).toEqual(['createdAt', 'id', 'name'])
      expect(res.body.id).toMatch(ID)
      expect(res.body.name).toBe(name)
      expect(res.body.createdAt).toMatch(ISO)
      projects.get(slug)!.push(res.body)
      return res.body
    }

    async function listProjects(slug: string): Promise<Project[]> {
      const res = await call<Project[]>('GET', '/api/projects', at(slug))
      expect(res.status).toBe(200)
      return res.body
    }

    /** Rows of `table` the tenant's own context sees, read beside the API (not through it). */
    async function countRows(slug: string, table: 'projects' | 'tasks'): Promise<number> {
      const { rows } = await tenantry.withTenant(slug, () => tenantry.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table}`))
      return rows[0].n
    }

    beforeAll(async () => {
      tenantry = await backend.open({ resolve: [subdomain({ baseDomain: 'localhost' }), header({ name: 'x-tenant' })] })
      const migrated = await tenantry.migrate()
      expect(migrated.targets.filter((r) => r.status === 'failed')).toEqual([])
      for (const seed of SEED) tenants.set(seed.slug, await tenantry.provision(seed))
      await tenantry.provision({ slug: SUSPENDED, name: 'Soylent', tier: 'pooled' })
      await tenantry.setStatus(SUSPENDED, 'suspended', 'Invoice overdue')
      app = await buildDemoApp(tenantry)
      await app.ready()
    })

    afterAll(async () => {
      await app?.close()
      await tenantry?.close()
      await backend.cleanUp()
    })

    // ─── who am I ────────────────────────────────────────────────────────────────────────────────

    it('answers who-am-I for each tenant, by subdomain, by header and by id header', async () => {
      for (const seed of SEED) {
        const want = { slug: seed.slug, name: seed.name, tier: seed.tier }
        expect(await call('GET', '/api/tenant', at(seed.slug))).toMatchObject({ status: 200, body: want })
        expect(await call('GET', '/api/tenant', { tenant: seed.slug })).toMatchObject({ status: 200, body: want })
        expect(await call('GET', '/api/tenant', { tenant: tenants.get(seed.slug)!.id })).toMatchObject({ status: 200, body: want })
        // Host and header naming the same tenant agree.
        expect(await call('GET', '/api/tenant', { ...at(seed.slug), tenant: seed.slug })).toMatchObject({ status: 200, body: want })
      }
    })

    it('serves the same tenant whatever the port, a trailing dot or the case of the host', async () => {
      const want = { status: 200, body: { slug: 'globex', name: 'Globex', tier: 'schema' } }
      for (const host of ['globex.localhost', 'globex.localhost:3000', 'globex.localhost:8443', 'globex.localhost.', 'globex.localhost.:3000', 'GLOBEX.LocalHost:3000']) {
        expect(await call('GET', '/api/tenant', { host }), host).toMatchObject(want)
      }
    })

    it('serves /health without a tenant, and ignores tenant identifiers there', async () => {
      expect(await call('GET', '/health')).toMatchObject({ status: 200, body: { ok: true } })
      expect(await call('GET', '/health', { host: 'nobody.localhost' })).toMatchObject({ status: 200, body: { ok: true } })
      expect(await call('GET', '/health', { tenant: 'ACME' })).toMatchObject({ status: 200, body: { ok: true } })
    })

    // ─── projects ────────────────────────────────────────────────────────────────────────────────

    it('creates, lists and gets projects in every tier', async () => {
      for (const slug of ACTIVE) expect(await listProjects(slug)).toEqual([])
      for (const slug of ACTIVE) {
        const a = await createProject(slug, `${slug} launch`)
        const b = await createProject(slug, `${slug} roadmap`)
        expect(BigInt(b.id)).toBeGreaterThan(BigInt(a.id))
      }
      for (const slug of ACTIVE) {
        expect(await listProjects(slug)).toEqual(projects.get(slug))
        for (const p of projects.get(slug)!) {
          expect(await call('GET', `/api/projects/${p.id}`, at(slug))).toMatchObject({ status: 200, body: p })
          expect(await call('GET', `/api/projects/${p.id}`, { tenant: slug })).toMatchObject({ status: 200, body: p })
        }
      }
    })

    it('keeps names verbatim: unicode, quotes, SQL look-alikes and exactly 200 characters', async () => {
      for (const name of ["O'Brien \"quoted\"; DROP TABLE projects; --", 'Ünïcödé 项目 🚀', 'x'.repeat(200), ' padded ']) {
        const p = await createProject('hooli', name)
        expect(await call('GET', `/api/projects/${p.id}`, at('hooli'))).toMatchObject({ status: 200, body: { id: p.id, name } })
      }
      expect(await listProjects('hooli')).toEqual(projects.get('hooli'))
    })

    it("never serves another tenant's project by id: 404 NOT_FOUND, or the asking tenant's own row", async () => {
      // Schema- and database-tier tenants have their own id sequences, so an id may exist in both.
      let notFound = 0
      for (const owner of ACTIVE) {
        for (const p of projects.get(owner)!) {
          for (const asker of ACTIVE.filter((s) => s !== owner)) {
            const own = projects.get(asker)!.find((q) => q.id === p.id)
            const res = await call('GET', `/api/projects/${p.id}`, at(asker))
            if (own) {
              expect(res).toMatchObject({ status: 200, body: own })
            } else {
              notFound++
              expect(res).toMatchObject({
                status: 404,
                body: { statusCode: 404, code: 'NOT_FOUND', error: 'Not Found', message: `No project with id ${p.id} in this tenant.` },
              })
            }
          }
        }
      }
      expect(notFound).toBeGreaterThan(0)
    })

    // ─── tasks ───────────────────────────────────────────────────────────────────────────────────

    it('creates and lists tasks of a project in every tier', async () => {
      for (const slug of ACTIVE) {
        const [first, second] = projects.get(slug)!
        const made: Task[] = []
        for (const [title, done] of [[`${slug} write spec`, undefined], [`${slug} ship`, true], [`${slug} celebrate`, false]] as const) {
          const res = await call<Task>('POST', `/api/projects/${first.id}/tasks`, { ...at(slug), payload: done === undefined ? { title } : { title, done } })
          expect(res.status, JSON.stringify(res.body)).toBe(201)
          expect(Object.keys(res.body).sort()).toEqual(['createdAt', 'done', 'id', 'projectId', 'title'])
          expect(res.body).toMatchObject({ projectId: first.id, title, done: done ?? false })
          expect(res.body.id).toMatch(ID)
          expect(res.body.createdAt).toMatch(ISO)
          made.push(res.body)
        }
        tasks.get(slug)!.set(first.id, made)
        expect(await call('GET', `/api/projects/${first.id}/tasks`, at(slug))).toMatchObject({ status: 200, body: made })
        expect((await call('GET', `/api/projects/${first.id}/tasks`, at(slug))).body).toEqual(made)
        expect(await call('GET', `/api/projects/${second.id}/tasks`, at(slug))).toEqual(expect.objectContaining({ status: 200, body: [] }))
        expect(await countRows(slug, 'tasks')).toBe(3)
      }
    })

    it('refuses a task on a missing project with 404 NOT_FOUND and writes no task row', async () => {
      for (const slug of ACTIVE) {
        const before = await countRows(slug, 'tasks')
        const res = await call('POST', '/api/projects/987654321/tasks', { ...at(slug), payload: { title: 'orphan' } })
        expect(res).toMatchObject({
          status: 404,
          body: { statusCode: 404, code: 'NOT_FOUND', error: 'Not Found', message: 'No project with id 987654321 in this tenant.' },
        })
        expect(await call('GET', '/api/projects/987654321/tasks', at(slug))).toMatchObject({ status: 404, body: { code: 'NOT_FOUND' } })
        expect(await countRows(slug, 'tasks')).toBe(before)
      }
    })

    it("refuses a task on another tenant's project and writes nothing in either tenant", async () => {
      const counts = async () => Object.fromEntries(await Promise.all(ACTIVE.map(async (s) => [s, await countRows(s, 'tasks')] as const)))
      const before = await counts()
      let tried = 0
      for (const owner of ACTIVE) {
        for (const p of projects.get(owner)!) {
          for (const asker of ACTIVE.filter((s) => s !== owner && !projects.get(s)!.some((q) => q.id === p.id))) {
            tried++
            const res = await call('POST', `/api/projects/${p.id}/tasks`, { ...at(asker), payload: { title: 'smuggled' } })
            expect(res).toMatchObject({ status: 404, body: { code: 'NOT_FOUND' } })
            const list = await call('GET', `/api/projects/${p.id}/tasks`, at(asker))
            expect(list).toMatchObject({ status: 404, body: { code: 'NOT_FOUND' } })
          }
        }
      }
      expect(tried).toBeGreaterThan(0)
      expect(await counts()).toEqual(before)
      for (const slug of ACTIVE) {
        for (const [projectId, want] of tasks.get(slug)!) {
          expect((await call('GET', `/api/projects/${projectId}/tasks`, at(slug))).body).toEqual(want)
        }
      }
    })

    // ─── bad input ───────────────────────────────────────────────────────────────────────────────

    it('answers bad project bodies with 400 and a code, and writes nothing', async () => {
      const cases: { what: string; payload?: unknown; raw?: string; headers?: Record<string, string>; status?: number; code: string; message?: string }[] = [
        { what: 'missing name', payload: {}, code: 'VALIDATION_FAILED', message: "body must have required property 'name'" },
        { what: 'name not a string', payload: { name: 5 }, code: 'VALIDATION_FAILED', message: 'body/name must be string' },
        { what: 'name null', payload: { name: null }, code: 'VALIDATION_FAILED', message: 'body/name must be string' },
        { what: 'name an array', payload: { name: ['a'] }, code: 'VALIDATION_FAILED', message: 'body/name must be string' },
        { what: 'empty name', payload: { name: '' }, code: 'VALIDATION_FAILED', message: 'body/name must NOT have fewer than 1 characters' },
        { what: '201-char name', payload: { name: 'x'.repeat(201) }, code: 'VALIDATION_FAILED', message: 'body/name must NOT have more than 200 characters' },
        { what: 'extra property', payload: { name: 'ok', owner: 'mallory' }, code: 'VALIDATION_FAILED', message: 'body must NOT have additional properties' },
        { what: 'forged tenant_id', payload: { name: 'ok', tenant_id: tenants.get('acme')?.id ?? 'x' }, code: 'VALIDATION_FAILED', message: 'body must NOT have additional properties' },
        { what: 'array body', payload: [{ name: 'ok' }], code: 'VALIDATION_FAILED', message: 'body must be object' },
        { what: 'invalid JSON', raw: '{"name": "half', code: 'FST_ERR_CTP_INVALID_JSON_BODY' },
        { what: 'empty JSON body', raw: '', code: 'FST_ERR_CTP_EMPTY_JSON_BODY' },
        { what: 'no body at all', code: 'VALIDATION_FAILED', message: 'body must be object' },
      ]
      for (const slug of ['acme', 'globex', 'initech']) {
        const before = await listProjects(slug)
        for (const c of cases) {
          const res = await call('POST', '/api/projects', { ...at(slug), payload: c.payload, raw: c.raw, headers: c.headers })
          expect(res.status, `${slug}: ${c.what}: ${JSON.stringify(res.body)}`).toBe(400)
          expect(res.body, c.what).toMatchObject({ statusCode: 400, code: c.code, error: 'Bad Request', ...(c.message ? { message: c.message } : {}) })
          expect(typeof (res.body as { message: unknown }).message).toBe('string')
        }
        expect(await listProjects(slug), slug).toEqual(before)
        expect(before).toEqual(projects.get(slug))
      }
    })

    it('answers a body that is not JSON with 415 and one over the body limit with 413, and writes nothing', async () => {
      const before = await listProjects('acme')
      const form = await call('POST', '/api/projects', { ...at('acme'), raw: 'name=launch', headers: { 'content-type': 'application/x-www-form-urlencoded' } })
      expect(form).toMatchObject({ status: 415, body: { statusCode: 415, code: 'FST_ERR_CTP_INVALID_MEDIA_TYPE', error: 'Unsupported Media Type' } })
      const huge = await call('POST', '/api/projects', { ...at('acme'), raw: JSON.stringify({ name: 'x'.repeat(1.5 * 1024 * 1024) }) })
      expect(huge).toMatchObject({ status: 413, body: { statusCode: 413, code: 'FST_ERR_CTP_BODY_TOO_LARGE', error: 'Payload Too Large' } })
      expect(await listProjects('acme')).toEqual(before)
    })

    it('answers malformed project ids with 400 VALIDATION_FAILED on every route, and writes no task', async () => {
      const project = projects.get('acme')![0]
      const tasksBefore = await countRows('acme', 'tasks')
      for (const id of ['abc', '0', '-1', '1.5', '1e3', '007', '0x1f', '9999999999999999999', `${project.id}abc`, '%20']) {
        const get = await call('GET', `/api/projects/${id}`, at('acme'))
        expect(get.status, `GET ${id}: ${JSON.stringify(get.body)}`).toBe(400)
        expect(get.body).toMatchObject({ statusCode: 400, code: 'VALIDATION_FAILED', error: 'Bad Request' })
        const list = await call('GET', `/api/projects/${id}/tasks`, at('acme'))
        expect(list).toMatchObject({ status: 400, body: { code: 'VALIDATION_FAILED' } })
        const post = await call('POST', `/api/projects/${id}/tasks`, { ...at('acme'), payload: { title: 'nope' } })
        expect(post).toMatchObject({ status: 400, body: { code: 'VALIDATION_FAILED' } })
      }
      // The largest id the route accepts (18 digits) is a plain miss, not a database error.
      expect(await call('GET', '/api/projects/999999999999999999', at('acme'))).toMatchObject({ status: 404, body: { code: 'NOT_FOUND' } })
      expect(await countRows('acme', 'tasks')).toBe(tasksBefore)
    })

    it('answers bad task bodies with 400 and a code, and writes no task', async () => {
      for (const slug of ['hooli', 'globex', 'initech']) {
        const project = projects.get(slug)![0]
        const before = (await call('GET', `/api/projects/${project.id}/tasks`, at(slug))).body
        const cases: { payload?: unknown; raw?: string; code: string }[] = [
          { payload: {}, code: 'VALIDATION_FAILED' },
          { payload: { title: '' }, code: 'VALIDATION_FAILED' },
          { payload: { title: 'x'.repeat(501) }, code: 'VALIDATION_FAILED' },
          { payload: { title: 7 }, code: 'VALIDATION_FAILED' },
          { payload: { title: 'ok', done: 'yes' }, code: 'VALIDATION_FAILED' },
          { payload: { title: 'ok', done: 1 }, code: 'VALIDATION_FAILED' },
          { payload: { title: 'ok', projectId: '1' }, code: 'VALIDATION_FAILED' },
          { raw: '{"title":', code: 'FST_ERR_CTP_INVALID_JSON_BODY' },
        ]
        for (const c of cases) {
          const res = await call('POST', `/api/projects/${project.id}/tasks`, { ...at(slug), payload: c.payload, raw: c.raw })
          expect(res, `${slug}: ${JSON.stringify(c)}`).toMatchObject({ status: 400, body: { statusCode: 400, code: c.code, error: 'Bad Request' } })
        }
        expect((await call('GET', `/api/projects/${project.id}/tasks`, at(slug))).body).toEqual(before)
        expect(await countRows(slug, 'tasks')).toBe([...tasks.get(slug)!.values()].flat().length)
      }
    })

    // ─── resolution errors ───────────────────────────────────────────────────────────────────────

    it('answers a request without a tenant with 400 TENANT_REQUIRED', async () => {
      const want = {
        status: 400,
        body: {
          statusCode: 400,
          code: 'TENANT_REQUIRED',
          error: 'Bad Request',
          message: "The request does not name a tenant. Send the tenant as a subdomain of 'localhost' or an x-tenant header.",
          details: { tried: ['subdomain', 'header'] },
        },
      }
      for (const host of ['localhost', 'localhost:3000', '127.0.0.1:3000', '[::1]:3000', 'example.com']) {
        const res = await call('GET', '/api/projects', { host })
        expect(res.status, host).toBe(want.status)
        expect(res.body, host).toEqual(want.body)
      }
      expect(await call('POST', '/api/projects', { payload: { name: 'nobody' } })).toMatchObject({ status: 400, body: { code: 'TENANT_REQUIRED' } })
    })

    it('answers malformed identifiers with 400 TENANT_INVALID', async () => {
      const www = await call('GET', '/api/projects', { host: 'www.localhost:3000' })
      expect(www).toMatchObject({
        status: 400,
        body: { statusCode: 400, code: 'TENANT_INVALID', error: 'Bad Request', message: "Subdomain 'www' of 'localhost' is reserved." },
      })
      const upper = await call('GET', '/api/projects', { tenant: 'ACME' })
      expect(upper).toMatchObject({ status: 400, body: { statusCode: 400, code: 'TENANT_INVALID', error: 'Bad Request' } })
      expect((upper.body as { message: string }).message).toMatch(/^Header x-tenant 'ACME' must be lowercase/)
      for (const opts of [
        { tenant: ' acme' },
        { tenant: 'acme ' },
        { tenant: 'ac_me' },
        { tenant: '' },
        { tenant: 'a'.repeat(64) },
        { host: 'a.b.localhost' },
        { host: 'ac_me.localhost' },
        { host: '-acme.localhost' },
        { host: 'acme.localhost:99999' },
        { host: 'acme..localhost' },
        { host: 'xn--80ak6aa92e.localhost' },
      ]) {
        const res = await call('GET', '/api/projects', opts)
        expect(res, JSON.stringify(opts)).toMatchObject({ status: 400, body: { statusCode: 400, code: 'TENANT_INVALID', error: 'Bad Request' } })
      }
    })

    it('answers an unknown tenant with 404 TENANT_NOT_FOUND', async () => {
      const byHost = await call('GET', '/api/projects', { host: 'nobody.localhost:3000' })
      expect(byHost).toMatchObject({ status: 404, body: { statusCode: 404, code: 'TENANT_NOT_FOUND', error: 'Not Found', details: { source: 'subdomain', slug: 'nobody' } } })
      expect((byHost.body as { message: string }).message).toContain("No tenant matches host 'nobody.localhost:3000'")
      const byHeader = await call('GET', '/api/projects', { tenant: 'nobody' })
      expect(byHeader).toMatchObject({
        status: 404,
        body: {
          statusCode: 404,
          code: 'TENANT_NOT_FOUND',
          error: 'Not Found',
          message: "No tenant has the slug 'nobody' (from header). Check the tenant slug.",
          details: { source: 'header', slug: 'nobody' },
        },
      })
      const byId = await call('GET', '/api/projects', { tenant: '00000000-0000-4000-8000-000000000000' })
      expect(byId).toMatchObject({ status: 404, body: { code: 'TENANT_NOT_FOUND', details: { source: 'header', id: '00000000-0000-4000-8000-000000000000' } } })
      expect(await call('POST', '/api/projects', { tenant: 'nobody', payload: { name: 'ghost' } })).toMatchObject({ status: 404, body: { code: 'TENANT_NOT_FOUND' } })
    })

    it("answers a header for one tenant on another's host with 403 TENANT_MISMATCH and writes nothing", async () => {
      const res = await call('GET', '/api/projects', { ...at('acme'), tenant: 'globex' })
      expect(res).toMatchObject({
        status: 403,
        body: {
          statusCode: 403,
          code: 'TENANT_MISMATCH',
          error: 'Forbidden',
          message: "The request names two different tenants: 'acme' from subdomain and 'globex' from header. Send identifiers of one tenant only.",
          details: { sources: ['subdomain', 'header'] },
        },
      })
      const byId = await call('GET', '/api/projects', { ...at('initech'), tenant: tenants.get('hooli')!.id })
      expect(byId).toMatchObject({ status: 403, body: { code: 'TENANT_MISMATCH' } })
      const before = { acme: await listProjects('acme'), globex: await listProjects('globex') }
      const post = await call('POST', '/api/projects', { ...at('acme'), tenant: 'globex', payload: { name: 'smuggled' } })
      expect(post).toMatchObject({ status: 403, body: { code: 'TENANT_MISMATCH' } })
      expect({ acme: await listProjects('acme'), globex: await listProjects('globex') }).toEqual(before)
      // A suspended tenant named beside an active one is still a mismatch, not a way in.
      expect(await call('GET', '/api/projects', { ...at(SUSPENDED), tenant: 'acme' })).toMatchObject({ status: 403, body: { code: 'TENANT_MISMATCH' } })
    })

    it('answers a suspended tenant with 403 TENANT_SUSPENDED and the reason', async () => {
      const want = {
        statusCode: 403,
        code: 'TENANT_SUSPENDED',
        error: 'Forbidden',
        message: `Tenant '${SUSPENDED}' is suspended: Invoice overdue`,
        details: { reason: 'Invoice overdue' },
      }
      for (const opts of [at(SUSPENDED), { tenant: SUSPENDED }]) {
        for (const url of ['/api/tenant', '/api/projects']) {
          const res = await call('GET', url, opts)
          expect(res.status).toBe(403)
          expect(res.body).toEqual(want)
        }
      }
      expect(await call('POST', '/api/projects', { ...at(SUSPENDED), payload: { name: 'while suspended' } })).toMatchObject({ status: 403, body: want })
    })

    // ─── isolation ───────────────────────────────────────────────────────────────────────────────

    it('never lists one tenant’s projects in another: exact lists after interleaved writes over host and header', async () => {
      for (let round = 0; round < 3; round++) {
        for (const slug of round % 2 === 0 ? ACTIVE : [...ACTIVE].reverse()) {
          const viaHeader = round === 1
          const res = await call<Project>('POST', '/api/projects', { ...(viaHeader ? { tenant: slug } : at(slug)), payload: { name: `${slug} round ${round}` } })
          expect(res.status).toBe(201)
          projects.get(slug)!.push(res.body)
        }
      }
      const lists = await Promise.all(ACTIVE.map((slug) => listProjects(slug)))
      ACTIVE.forEach((slug, i) => {
        expect(lists[i], slug).toEqual(projects.get(slug))
        for (const p of lists[i]) expect(p.name.startsWith(`${slug} `) || slug === 'hooli', `${slug} lists '${p.name}'`).toBe(true)
      })
      for (const slug of ACTIVE) expect(await countRows(slug, 'projects')).toBe(projects.get(slug)!.length)
      // Concurrent requests to different tenants do not bleed into each other.
      const mixed = await Promise.all(
        Array.from({ length: 24 }, (_, i) => ACTIVE[i % ACTIVE.length]).map(async (slug, i) => ({
          slug,
          res: await call<Project[]>('GET', '/api/projects', i % 2 ? at(slug) : { tenant: slug }),
        })),
      )
      for (const { slug, res } of mixed) expect(res.body, slug).toEqual(projects.get(slug))
    })
  })
}

for (const backend of BACKENDS) demoApiSuite(backend)
