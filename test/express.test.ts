import { fileURLToPath } from 'node:url'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import express from 'express'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { tenantryErrorHandler, tenantryMiddleware } from '../src/adapters/express.ts'
import { createTenantry, currentTenant, header, subdomain, TenantryError, tryCurrentTenant, type Tenant, type Tenantry } from '../src/index.ts'

// The Express adapter is thin and backend-agnostic (the data plane is covered on both backends by
// demo-api.test.ts), so one backend is enough here: PGlite in memory.

const MIGRATIONS = fileURLToPath(new URL('../demo/migrations', import.meta.url))

interface Project { id: string; name: string }
interface ListBody { tenant: string; projects: Project[]; ambient: Project[] }
interface Reply<T = any> { status: number; contentType: string | null; body: T }

describe('Express adapter over real HTTP (PGlite only: one backend is enough for the adapter)', () => {
  let tenantry: Tenantry
  let server: http.Server
  let base: string
  let port: number
  const tenants = new Map<string, Tenant>()
  // Exactly what each tenant must list.
  const made = new Map<string, Project[]>([['acme', []], ['globex', []]])

  beforeAll(async () => {
    tenantry = await createTenantry({ dataDir: 'memory', migrations: MIGRATIONS, resolve: [subdomain({ baseDomain: 'localhost' }), header({ name: 'x-tenant' })] })
    expect((await tenantry.migrate()).targets.filter((r) => r.status === 'failed')).toEqual([])
    tenants.set('acme', await tenantry.provision({ slug: 'acme', name: 'Acme Corp', tier: 'pooled' }))
    tenants.set('globex', await tenantry.provision({ slug: 'globex', name: 'Globex', tier: 'schema' }))
    await tenantry.provision({ slug: 'soylent', tier: 'pooled' })
    await tenantry.setStatus('soylent', 'suspended', 'Invoice overdue')

    const app = express()
    app.get('/health', (_req, res) => { res.json({ ok: true, tenant: tryCurrentTenant()?.slug ?? null }) })
    app.use(tenantryMiddleware(tenantry))
    // Mounted after the tenant middleware: the body is read inside the tenant's context.
    app.use(express.json({ limit: '16kb' }))

    app.get('/api/projects', async (req, res) => {
      // Several awaits (a timer, the scoped handle, the ambient handle) before the context is read.
      await sleep(5)
      const { rows } = await req.db!.query<Project>('SELECT id::text AS id, name FROM projects ORDER BY id')
      await sleep(1)
      const ambient = await tenantry.db.query<Project>('SELECT id::text AS id, name FROM projects ORDER BY id')
      res.json({ tenant: currentTenant().slug, projects: rows, ambient: ambient.rows } satisfies ListBody)
    })

    app.post('/api/projects', async (req, res) => {
      const body = req.body as unknown
      if (!body || typeof body !== 'object' || Array.isArray(body) || typeof (body as { name?: unknown }).name !== 'string') {
        throw new TenantryError('VALIDATION_FAILED', 'Send a JSON object with a string name.')
      }
      // The length limit is left to the table's CHECK: a database refusal must be a 400 too.
      const { rows } = await req.db!.query<Project>('INSERT INTO projects (name) VALUES ($1) RETURNING id::text AS id, name', [(body as { name: string }).name])
      await sleep(2)
      res.status(201).json({ ...rows[0], tenant: currentTenant().slug })
    })

    app.use(tenantryErrorHandler())

    server = http.createServer(app)
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    port = (server.address() as AddressInfo).port
    base = `http://127.0.0.1:${port}`
  })

  afterAll(async () => {
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()))
    await tenantry?.close()
  })

  async function request<T = any>(method: 'GET' | 'POST', path: string, opts: { tenant?: string; json?: unknown; raw?: string; contentType?: string } = {}): Promise<Reply<T>> {
    const headers: Record<string, string> = {}
    if (opts.tenant !== undefined) headers['x-tenant'] = opts.tenant
    let body: string | undefined
    if (opts.json !== undefined) body = JSON.stringify(opts.json)
    if (opts.raw !== undefined) body = opts.raw
    if (body !== undefined) headers['content-type'] = opts.contentType ?? 'application/json'
    const res = await fetch(`${base}${path}`, { method, headers, body })
    const text = await res.text()
    return { status: res.status, contentType: res.headers.get('content-type'), body: text === '' ? undefined : JSON.parse(text) }
  }

  /** fetch cannot set Host: subdomain requests go through node:http. */
  function requestWithHost<T = any>(host: string, path: string): Promise<Reply<T>> {
    return new Promise((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port, path, headers: { host } }, (res) => {
        let text = ''
        res.setEncoding('utf8')
        res.on('data', (c) => (text += c))
        res.on('end', () => resolve({ status: res.statusCode!, contentType: res.headers['content-type'] ?? null, body: JSON.parse(text) }))
      })
      req.on('error', reject)
      req.end()
    })
  }

  async function create(slug: string, name: string): Promise<Project> {
    const res = await request('POST', '/api/projects', { tenant: slug, json: { name } })
    expect(res.status, JSON.stringify(res.body)).toBe(201)
    expect(res.body).toEqual({ id: expect.stringMatching(/^[1-9][0-9]*$/), name, tenant: slug })
    const p = { id: res.body.id as string, name }
    made.get(slug)!.push(p)
    return p
  }

  async function list(slug: string): Promise<Project[]> {
    const res = await request<ListBody>('GET', '/api/projects', { tenant: slug })
    expect(res.status, JSON.stringify(res.body)).toBe(200)
    expect(res.body.tenant).toBe(slug)
    expect(res.body.ambient).toEqual(res.body.projects)
    return res.body.projects
  }

  it('resolves tenants by header and by subdomain, and serves /health without one', async () => {
    expect(await list('acme')).toEqual([])
    expect(await list('globex')).toEqual([])
    const byHost = await requestWithHost<ListBody>(`globex.localhost:${port}`, '/api/projects')
    expect(byHost).toEqual({ status: 200, contentType: 'application/json; charset=utf-8', body: { tenant: 'globex', projects: [], ambient: [] } })
    const byId = await request<ListBody>('GET', '/api/projects', { tenant: tenants.get('acme')!.id })
    expect(byId).toMatchObject({ status: 200, body: { tenant: 'acme', projects: [] } })
    expect(await request('GET', '/health')).toEqual({ status: 200, contentType: 'application/json; charset=utf-8', body: { ok: true, tenant: null } })
  })

  it('creates projects per tenant and never lists one tenant’s projects in another', async () => {
    await create('acme', 'Rocket skates')
    await create('globex', 'Hammock district')
    await create('acme', 'Giant magnet')
    await create('globex', 'Doomsday device')
    expect(await list('acme')).toEqual(made.get('acme'))
    expect(await list('globex')).toEqual(made.get('globex'))
    const viaHost = await requestWithHost<ListBody>(`acme.localhost:${port}`, '/api/projects')
    expect(viaHost.body.projects).toEqual(made.get('acme'))
  })

  it('keeps each request in its own tenant context under concurrency (currentTenant after awaits)', async () => {
    const slugs = Array.from({ length: 40 }, (_, i) => (i % 3 === 0 ? 'globex' : 'acme'))
    const results = await Promise.all(slugs.map(async (slug) => ({ slug, res: await request<ListBody>('GET', '/api/projects', { tenant: slug }) })))
    for (const { slug, res } of results) {
      expect(res.status).toBe(200)
      expect(res.body).toEqual({ tenant: slug, projects: made.get(slug), ambient: made.get(slug) })
    }
    // Concurrent writes land in the tenant that sent them.
    const writes = await Promise.all(slugs.slice(0, 10).map(async (slug, i) => ({ slug, res: await request('POST', '/api/projects', { tenant: slug, json: { name: `${slug} burst ${i}` } }) })))
    for (const { slug, res } of writes) {
      expect(res.status).toBe(201)
      expect(res.body.tenant).toBe(slug)
      expect(res.body.name.startsWith(`${slug} burst`)).toBe(true)
      made.get(slug)!.push({ id: res.body.id, name: res.body.name })
    }
    for (const slug of ['acme', 'globex']) made.get(slug)!.sort((a, b) => Number(a.id) - Number(b.id))
    expect(await list('acme')).toEqual(made.get('acme'))
    expect(await list('globex')).toEqual(made.get('globex'))
  })

  it('keeps the tenant context while a slow request body arrives in pieces', async () => {
    const res = await new Promise<Reply>((resolve, reject) => {
      const req = http.request(
        { host: '127.0.0.1', port, method: 'POST', path: '/api/projects', headers: { 'x-tenant': 'globex', 'content-type': 'application/json', 'transfer-encoding': 'chunked' } },
        (r) => {
          let text = ''
          r.on('data', (c) => (text += c))
          r.on('end', () => resolve({ status: r.statusCode!, contentType: r.headers['content-type'] ?? null, body: JSON.parse(text) }))
        },
      )
      req.on('error', reject)
      req.write('{"name":')
      // Meanwhile another tenant's request is served.
      void request('GET', '/api/projects', { tenant: 'acme' }).then(() => setTimeout(() => req.end('"Slow upload"}'), 50), reject)
    })
    expect(res).toMatchObject({ status: 201, body: { name: 'Slow upload', tenant: 'globex' } })
    made.get('globex')!.push({ id: res.body.id, name: 'Slow upload' })
    expect(await list('globex')).toEqual(made.get('globex'))
    expect(await list('acme')).toEqual(made.get('acme'))
  })

  it('answers resolution errors with coded JSON bodies: 400, 404, 403', async () => {
    const json = 'application/json; charset=utf-8'
    expect(await request('GET', '/api/projects')).toEqual({
      status: 400,
      contentType: json,
      body: {
        statusCode: 400,
        code: 'TENANT_REQUIRED',
        error: 'Bad Request',
        message: "The request does not name a tenant. Send the tenant as a subdomain of 'localhost' or an x-tenant header.",
        details: { tried: ['subdomain', 'header'] },
      },
    })
    expect(await request('GET', '/api/projects', { tenant: 'ACME' })).toMatchObject({ status: 400, contentType: json, body: { statusCode: 400, code: 'TENANT_INVALID', error: 'Bad Request' } })
    expect(await requestWithHost(`www.localhost:${port}`, '/api/projects')).toMatchObject({ status: 400, contentType: json, body: { code: 'TENANT_INVALID', message: "Subdomain 'www' of 'localhost' is reserved." } })
    expect(await request('GET', '/api/projects', { tenant: 'nobody' })).toEqual({
      status: 404,
      contentType: json,
      body: {
        statusCode: 404,
        code: 'TENANT_NOT_FOUND',
        error: 'Not Found',
        message: "No tenant has the slug 'nobody' (from header). Check the tenant slug.",
        details: { source: 'header', slug: 'nobody' },
      },
    })
    expect(await request('GET', '/api/projects', { tenant: 'soylent' })).toEqual({
      status: 403,
      contentType: json,
      body: { statusCode: 403, code: 'TENANT_SUSPENDED', error: 'Forbidden', message: "Tenant 'soylent' is suspended: Invoice overdue", details: { reason: 'Invoice overdue' } },
    })
    const mismatch = await new Promise<Reply>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port, path: '/api/projects', headers: { host: `acme.localhost:${port}`, 'x-tenant': 'globex' } }, (r) => {
        let text = ''
        r.on('data', (c) => (text += c))
        r.on('end', () => resolve({ status: r.statusCode!, contentType: r.headers['content-type'] ?? null, body: JSON.parse(text) }))
      })
      req.on('error', reject)
      req.end()
    })
    expect(mismatch).toMatchObject({ status: 403, contentType: json, body: { statusCode: 403, code: 'TENANT_MISMATCH', error: 'Forbidden' } })
  })

  it('answers bad bodies with 400 and a code, and writes nothing', async () => {
    const before = { acme: await list('acme'), globex: await list('globex') }
    const cases: { what: string; json?: unknown; raw?: string; contentType?: string; code: string; status?: number }[] = [
      { what: 'missing name', json: {}, code: 'VALIDATION_FAILED' },
      { what: 'name not a string', json: { name: 5 }, code: 'VALIDATION_FAILED' },
      { what: 'empty name (table CHECK)', json: { name: '' }, code: 'VALIDATION_FAILED' },
      { what: '201-char name (table CHECK)', json: { name: 'x'.repeat(201) }, code: 'VALIDATION_FAILED' },
      { what: 'array body', json: [{ name: 'a' }], code: 'VALIDATION_FAILED' },
      { what: 'invalid JSON', raw: '{"name": "half', code: 'BAD_REQUEST' },
      { what: 'not JSON at all', raw: 'name=x', contentType: 'application/x-www-form-urlencoded', code: 'VALIDATION_FAILED' },
      { what: 'over the body limit', raw: JSON.stringify({ name: 'x'.repeat(20_000) }), code: 'BAD_REQUEST', status: 413 },
    ]
    for (const slug of ['acme', 'globex']) {
      for (const c of cases) {
        const res = await request('POST', '/api/projects', { tenant: slug, json: c.json, raw: c.raw, contentType: c.contentType })
        const status = c.status ?? 400
        expect(res.status, `${slug}: ${c.what}: ${JSON.stringify(res.body)}`).toBe(status)
        expect(res.contentType).toBe('application/json; charset=utf-8')
        expect(res.body, c.what).toMatchObject({ statusCode: status, code: c.code, error: status === 413 ? 'Payload Too Large' : 'Bad Request' })
        expect(typeof res.body.message).toBe('string')
      }
    }
    expect({ acme: await list('acme'), globex: await list('globex') }).toEqual(before)
  })

  it('writes nothing for a request refused at resolution', async () => {
    const before = { acme: await list('acme'), globex: await list('globex') }
    for (const [tenant, status, code] of [[undefined, 400, 'TENANT_REQUIRED'], ['nobody', 404, 'TENANT_NOT_FOUND'], ['soylent', 403, 'TENANT_SUSPENDED'], ['ACME', 400, 'TENANT_INVALID']] as const) {
      const res = await request('POST', '/api/projects', { ...(tenant === undefined ? {} : { tenant }), json: { name: 'smuggled' } })
      expect(res, String(tenant)).toMatchObject({ status, body: { statusCode: status, code } })
    }
    expect({ acme: await list('acme'), globex: await list('globex') }).toEqual(before)
  })
})
