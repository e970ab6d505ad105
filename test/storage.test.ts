/**
 * Issue 15, part 3: object storage per tenant. The same suite runs on the local-filesystem driver
 * and on the S3 driver against a real S3-protocol server (s3rver on loopback, started here), each
 * with its usage table on real PostgreSQL and on PGlite. No mocks.
 */
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PassThrough, Readable } from 'node:stream'
import { text } from 'node:stream/consumers'
import { ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import express from 'express'
import Fastify from 'fastify'
import { tenantryPlugin } from '../src/adapters/fastify.ts'
import { tenantryStorageHandler } from '../src/adapters/express.ts'
import { LocalStorageDriver, createTenantry, withTenant, type Tenant, type Tenantry } from '../src/index.ts'
import { DEMO_MIGRATIONS, dropPostgresLeftovers, freshDatabase, outcome, postgresAvailable } from './helpers/backends.ts'
import { startS3, type S3Fixture } from './fixtures/s3-server.ts'

const PG_UP = await postgresAvailable()
const DB_NAME = 'tenantry_test_storage'
const ROLE_PREFIX = 'th_stor'

const BAD_KEYS = [
  '', '/etc/passwd', '../x', 'a/../b', '..', '.', 'a/./b', 'a//b', 'trailing/', 'a\\b', 'a\nb', 'a\rb', 'nul\0', 'tab\there', '\u0085', '\u2028',
  'x'.repeat(901), `${'s'.repeat(256)}/x`, 'lone\uD800surrogate', 42, null,
]

const MATRIX = [
  { db: 'PostgreSQL', driver: 'local' as const, enabled: PG_UP },
  { db: 'PostgreSQL', driver: 's3' as const, enabled: PG_UP },
  { db: 'PGlite', driver: 'local' as const, enabled: true },
  { db: 'PGlite', driver: 's3' as const, enabled: true },
]

/** A stream of `n` bytes in `chunk`-byte pieces, each after a tick (a client uploading). */
function slowBytes(n: number, chunk = 256, fill = 'x'): Readable {
  let sent = 0
  return new Readable({
    read() {
      if (sent >= n) { this.push(null); return }
      const size = Math.min(chunk, n - sent)
      sent += size
      setImmediate(() => this.push(Buffer.alloc(size, fill)))
    },
  })
}

for (const m of MATRIX) {
  describe.skipIf(!m.enabled)(`tenant storage (${m.driver} driver, usage on ${m.db})`, () => {
    let tenantry: Tenantry
    let s3: S3Fixture | undefined
    let raw: S3Client | undefined
    let localDir: string | undefined
    const t: Record<string, Tenant> = {}
    const dbName = `${DB_NAME}_${m.driver}`
    const prefix = `${ROLE_PREFIX}_${m.driver}`

    /** Every path in the store, whatever its tenant. */
    async function storePaths(): Promise<string[]> {
      if (raw) {
        const r = await raw.send(new ListObjectsV2Command({ Bucket: s3!.bucket }))
        return (r.Contents ?? []).map((o) => o.Key!).sort()
      }
      const root = (tenantry.storage.driver as LocalStorageDriver).directory
      const out: string[] = []
      const walk = (dir: string, key: string) => {
        if (!existsSync(dir)) return
        for (const e of readdirSync(dir, { withFileTypes: true })) {
          if (e.isDirectory()) walk(join(dir, e.name), `${key}${e.name}/`)
          else out.push(key + e.name)
        }
      }
      walk(join(root, 'objects'), '')
      return out.sort()
    }

    /** Partial uploads left: temp files of the local driver (s3rver has no ListMultipartUploads: the S3 side is checked by listing objects). */
    async function leftovers(): Promise<number> {
      if (raw) return 0
      const tmp = join((tenantry.storage.driver as LocalStorageDriver).directory, 'tmp')
      return existsSync(tmp) ? readdirSync(tmp).length : 0
    }

    beforeAll(async () => {
      let url: string | undefined
      if (m.db === 'PostgreSQL') {
        await dropPostgresLeftovers(prefix, dbName)
        url = await freshDatabase(dbName)
      }
      if (m.driver === 's3') {
        s3 = await startS3()
        raw = new S3Client(s3.client)
      }
      tenantry = await createTenantry({
        ...(url ? { databaseUrl: url, rolePrefix: prefix } : { dataDir: 'memory' }),
        migrations: DEMO_MIGRATIONS, guard: { redis: null }, cache: { redis: null }, observe: { metering: false, tracing: false },
        storage: {
          // Local: the data directory's storage on PGlite (dataDir 'memory': a temporary one), a directory of the test's on PostgreSQL.
          ...(s3 ? { driver: 's3', s3: { bucket: s3.bucket, client: s3.client } } : { driver: 'local', ...(url ? { directory: (localDir = mkdtempSync(join(tmpdir(), 'tenantry-test-storage-'))) } : {}) }),
          plans: {
            small: { maxBytes: 1000, maxObjects: 3 },
            narrow: { uploadConcurrency: 1, uploadQueueTimeoutMs: 300 },
            bytes: { uploadConcurrency: 10, uploadBytesInFlight: 100 },
            paced: { uploadBytesPerSecond: 10_000 },
          },
        },
      })
      await tenantry.migrate()
      await tenantry.catalog.upsertPlan({ name: 'small', settings: {} })
      await tenantry.catalog.upsertPlan({ name: 'narrow', settings: {} })
      await tenantry.catalog.upsertPlan({ name: 'bytes', settings: {} })
      await tenantry.catalog.upsertPlan({ name: 'paced', settings: {} })
      await tenantry.catalog.upsertPlan({ name: 'catalog-plan', settings: { storage: { maxObjects: 1 } } })
      t.a = await tenantry.provision({ slug: 'store-a', tier: 'pooled' })
      t.b = await tenantry.provision({ slug: 'store-b', tier: 'schema' })
      t.small = await tenantry.provision({ slug: 'store-small', tier: 'pooled', plan: 'small' })
      t.narrow = await tenantry.provision({ slug: 'store-narrow', tier: 'pooled', plan: 'narrow' })
      t.cat = await tenantry.provision({ slug: 'store-cat', tier: 'pooled', plan: 'catalog-plan' })
      t.bytes = await tenantry.provision({ slug: 'store-bytes', tier: 'pooled', plan: 'bytes' })
      t.paced = await tenantry.provision({ slug: 'store-paced', tier: 'pooled', plan: 'paced' })
    })

    afterAll(async () => {
      await tenantry?.close()
      raw?.destroy()
      await s3?.close()
      if (m.db === 'PostgreSQL') await dropPostgresLeftovers(prefix, dbName)
      if (localDir) rmSync(localDir, { recursive: true, force: true })
    })

    it('refuses every call outside a tenant context', async () => {
      expect(await outcome(tenantry.storage.put('k', 'v'))).toBe('TENANT_CONTEXT_MISSING')
      expect(await outcome(tenantry.storage.get('k'))).toBe('TENANT_CONTEXT_MISSING')
      expect(await outcome(tenantry.storage.head('k'))).toBe('TENANT_CONTEXT_MISSING')
      expect(await outcome(tenantry.storage.list())).toBe('TENANT_CONTEXT_MISSING')
      expect(await outcome(tenantry.storage.delete('k'))).toBe('TENANT_CONTEXT_MISSING')
      expect(await outcome(tenantry.storage.presignDownload('k'))).toBe('TENANT_CONTEXT_MISSING')
    })

    it('puts, gets, heads, lists and deletes within the tenant', async () => {
      await withTenant(t.a!, async () => {
        const info = await tenantry.storage.put('tasks/1/notes.txt', Readable.from([Buffer.from('hello '), Buffer.from('world')]), { contentType: 'text/plain' })
        expect({ key: info.key, size: info.size }).toEqual({ key: 'tasks/1/notes.txt', size: 11 })
        await tenantry.storage.put('tasks/2/ünïcødé 文件.bin', Buffer.from([1, 2, 3]))
        await tenantry.storage.put('top.txt', 'top')
        const got = await tenantry.storage.get('tasks/1/notes.txt')
        expect(await text(got!.body)).toBe('hello world')
        expect(got!.info).toMatchObject({ key: 'tasks/1/notes.txt', size: 11, contentType: 'text/plain' })
        expect(await tenantry.storage.head('tasks/2/ünïcødé 文件.bin')).toMatchObject({ key: 'tasks/2/ünïcødé 文件.bin', size: 3 })
        expect(await tenantry.storage.head('nope')).toBeNull()
        expect(await tenantry.storage.get('nope')).toBeNull()
        expect((await tenantry.storage.list({ prefix: 'tasks/' })).objects.map((o) => o.key)).toEqual(['tasks/1/notes.txt', 'tasks/2/ünïcødé 文件.bin'])
        const p1 = await tenantry.storage.list({ limit: 2 })
        expect(p1.objects.map((o) => o.key)).toEqual(['tasks/1/notes.txt', 'tasks/2/ünïcødé 文件.bin'])
        expect(p1.next).toBe('tasks/2/ünïcødé 文件.bin')
        const p2 = await tenantry.storage.list({ limit: 2, after: p1.next! })
        expect({ keys: p2.objects.map((o) => o.key), next: p2.next }).toEqual({ keys: ['top.txt'], next: null })
        expect(await tenantry.storage.usage()).toMatchObject({ bytes: 17, objects: 3 })
        expect(await tenantry.storage.delete('top.txt')).toBe(true)
        expect(await tenantry.storage.delete('top.txt')).toBe(false)
        expect(await tenantry.storage.usage()).toMatchObject({ bytes: 14, objects: 2 })
      })
      await withTenant(t.b!, async () => {
        expect(await tenantry.storage.get('tasks/1/notes.txt')).toBeNull()
        expect((await tenantry.storage.list()).objects).toEqual([])
        expect(await tenantry.storage.delete('tasks/1/notes.txt')).toBe(false)
      })
      expect(await withTenant(t.a!, () => tenantry.storage.head('tasks/1/notes.txt'))).not.toBeNull()
    })

    it('refuses bad keys with STORAGE_KEY_INVALID and stores nothing', async () => {
      const before = await storePaths()
      await withTenant(t.b!, async () => {
        for (const k of BAD_KEYS) {
          expect({ k, put: await outcome(tenantry.storage.put(k as string, 'x')) }).toEqual({ k, put: 'STORAGE_KEY_INVALID' })
          expect(await outcome(tenantry.storage.get(k as string))).toBe('STORAGE_KEY_INVALID')
          expect(await outcome(tenantry.storage.delete(k as string))).toBe('STORAGE_KEY_INVALID')
        }
        expect(await outcome(tenantry.storage.list({ prefix: '../' }))).toBe('STORAGE_KEY_INVALID')
        expect(await outcome(tenantry.storage.put('ok', 'x', { contentType: 'text/plain\r\nx-evil: 1' }))).toBe('VALIDATION_FAILED')
      })
      expect(await storePaths()).toEqual(before)
      const e = await withTenant(t.b!, () => tenantry.storage.put('../x', 'x').catch((err) => err))
      expect({ status: e.status, code: e.code }).toEqual({ status: 400, code: 'STORAGE_KEY_INVALID' })
    })

    it('refuses a planted cross-tenant path: every key lands under its own tenant prefix', async () => {
      await withTenant(t.b!, () => tenantry.storage.put('secret.txt', 'b-secret'))
      await withTenant(t.a!, async () => {
        expect(await outcome(tenantry.storage.get(`../${t.b!.id}/secret.txt`))).toBe('STORAGE_KEY_INVALID')
        expect(await outcome(tenantry.storage.get(`/tenants/${t.b!.id}/secret.txt`))).toBe('STORAGE_KEY_INVALID')
        // A key that spells B's store path is just a key of A's.
        expect(await tenantry.storage.get(`tenants/${t.b!.id}/secret.txt`)).toBeNull()
        await tenantry.storage.put(`tenants/${t.b!.id}/secret.txt`, 'a-planted')
      })
      expect(await text((await withTenant(t.b!, () => tenantry.storage.get('secret.txt')))!.body)).toBe('b-secret')
      const paths = await storePaths()
      expect(paths).toContain(`tenants/${t.a!.id}/tenants/${t.b!.id}/secret.txt`)
      for (const p of paths) expect(p).toMatch(/^tenants\/[0-9a-f-]{36}\//)
      expect(paths.filter((p) => p.startsWith(`tenants/${t.b!.id}/`))).toEqual([`tenants/${t.b!.id}/secret.txt`])
    })

    it('quotas per plan: 413 with nothing stored, partial uploads removed, overwrites counted by their difference', async () => {
      await withTenant(t.small!, async () => {
        await tenantry.storage.put('one', Buffer.alloc(600))
        // Known size over the quota: refused before reading.
        const e = await tenantry.storage.put('two', Buffer.alloc(500), { size: 500 }).catch((err) => err)
        expect({ code: e.code, status: e.status, details: e.details }).toEqual({ code: 'STORAGE_QUOTA_EXCEEDED', status: 413, details: { quota: 'bytes', limit: 1000, used: 600 } })
        // Unknown size, streamed past the quota: refused mid-stream, the partial upload removed.
        expect(await outcome(tenantry.storage.put('stream', slowBytes(2000)))).toBe('STORAGE_QUOTA_EXCEEDED')
        expect(await tenantry.storage.head('two')).toBeNull()
        expect(await tenantry.storage.head('stream')).toBeNull()
        expect(await leftovers()).toBe(0)
        expect(await tenantry.storage.usage()).toMatchObject({ bytes: 600, objects: 1, limits: { maxBytes: 1000, maxObjects: 3 } })
        // Overwrite 600 → 900 fits (the old object's bytes are freed).
        await tenantry.storage.put('one', Buffer.alloc(900))
        expect(await tenantry.storage.usage()).toMatchObject({ bytes: 900, objects: 1 })
        await tenantry.storage.put('s1', 'a')
        await tenantry.storage.put('s2', 'b')
        const objs = await tenantry.storage.put('s3', 'c').catch((err) => err)
        expect({ code: objs.code, details: objs.details }).toEqual({ code: 'STORAGE_QUOTA_EXCEEDED', details: { quota: 'objects', limit: 3, used: 3 } })
        expect((await tenantry.storage.list()).objects.map((o) => o.key)).toEqual(['one', 's1', 's2'])
      })
      // A plan's limits from the catalog (settings.storage) when options name none.
      await withTenant(t.cat!, async () => {
        await tenantry.storage.put('only', 'x')
        expect(await outcome(tenantry.storage.put('second', 'x'))).toBe('STORAGE_QUOTA_EXCEEDED')
      })
    })

    it('a client that goes away mid-upload leaves nothing', async () => {
      await withTenant(t.a!, async () => {
        const body = new PassThrough()
        const p = tenantry.storage.put('broken', body)
        body.write(Buffer.alloc(1000))
        setTimeout(() => body.destroy(new Error('client went away')), 20)
        expect(await outcome(p)).not.toBe('ok')
        expect(await tenantry.storage.head('broken')).toBeNull()
        expect(await leftovers()).toBe(0)
        // Gone before the upload could start (while it waited for its share or the checks).
        const early = new PassThrough()
        early.destroy(new Error('client went away early'))
        expect(await outcome(tenantry.storage.put('early', early))).toBe('VALIDATION_FAILED')
        expect(await tenantry.storage.head('early')).toBeNull()
      })
    })

    it("one tenant's uploads queue behind their own share; another tenant's go straight through", async () => {
      const first = new PassThrough()
      const p1 = withTenant(t.narrow!, () => tenantry.storage.put('first', first))
      first.write('a')
      await vi.waitFor(() => expect(tenantry.storage.shareStats()[t.narrow!.id]?.active).toBe(1))
      // The second upload of the same tenant waits for the share, and times out: TENANT_BUSY.
      const busy = await withTenant(t.narrow!, () => tenantry.storage.put('second', 'b')).catch((err) => err)
      expect({ code: busy.code, status: busy.status, layer: busy.details?.layer }).toEqual({ code: 'TENANT_BUSY', status: 503, layer: 'uploads' })
      // Another tenant is not held up.
      await withTenant(t.b!, () => tenantry.storage.put('meanwhile', 'ok'))
      // A waiting upload gets the slot as soon as the first ends.
      const p3 = withTenant(t.narrow!, () => tenantry.storage.put('third', 'c'))
      first.end('z')
      await p1
      await p3
      expect((await withTenant(t.narrow!, () => tenantry.storage.list())).objects.map((o) => [o.key, o.size])).toEqual([['first', 2], ['third', 1]])
    })

    it('bytes in flight: a new upload waits while the running ones hold the budget; running ones never wait', async () => {
      const one = new PassThrough()
      const two = new PassThrough()
      const p1 = withTenant(t.bytes!, () => tenantry.storage.put('one', one))
      const p2 = withTenant(t.bytes!, () => tenantry.storage.put('two', two))
      // Both started under the budget; both run past it without waiting on each other.
      await vi.waitFor(() => expect(tenantry.storage.shareStats()[t.bytes!.id]?.active).toBe(2))
      one.write(Buffer.alloc(80))
      two.write(Buffer.alloc(80))
      await vi.waitFor(() => expect(tenantry.storage.shareStats()[t.bytes!.id]?.bytes).toBe(160))
      let thirdDone = false
      const p3 = withTenant(t.bytes!, () => tenantry.storage.put('three', 'x')).then(() => { thirdDone = true })
      await new Promise((r) => setTimeout(r, 100))
      expect({ thirdDone, active: tenantry.storage.shareStats()[t.bytes!.id]?.active }).toEqual({ thirdDone: false, active: 2 })
      one.end(Buffer.alloc(80))
      await p1
      // 80 bytes still held by 'two': under the budget, so the third starts.
      await p3
      two.end()
      await p2
      expect((await withTenant(t.bytes!, () => tenantry.storage.list())).objects.map((o) => [o.key, o.size])).toEqual([['one', 160], ['three', 1], ['two', 80]])
      expect(tenantry.storage.shareStats()[t.bytes!.id]).toEqual({ active: 0, bytes: 0 })
    })

    it("bytes per second: a tenant's uploads together are paced to its share, others are not", async () => {
      // 2 × 2,000 bytes in 500-byte chunks at 10,000 bytes/s: the last chunk may start 350 ms after the
      // first, less the 100 ms burst — at least 250 ms together (a lower bound only; unpaced it takes a few ms).
      const t0 = performance.now()
      await withTenant(t.paced!, () => Promise.all([tenantry.storage.put('p1', slowBytes(2000, 500)), tenantry.storage.put('p2', slowBytes(2000, 500))]))
      expect(performance.now() - t0).toBeGreaterThanOrEqual(245)
      expect((await withTenant(t.paced!, () => tenantry.storage.list())).objects.map((o) => [o.key, o.size])).toEqual([['p1', 2000], ['p2', 2000]])
      expect(await outcome(Promise.resolve().then(() => createTenantry({ dataDir: 'memory', storage: { defaults: { uploadBytesPerSecond: 0 } } })))).toBe('CONFIG_INVALID')
    })

    /** The local driver's presigned URLs, served by the Fastify plugin's route and Express's handler (inside t.a's context). */
    async function localPresigned(): Promise<void> {
      const app = Fastify()
      await app.register(tenantryPlugin, { tenantry })
      app.get('/api/x', async () => 'tenant route')
      const ex = express()
      ex.use(tenantryStorageHandler(tenantry))
      try {
        const url = await tenantry.storage.presignDownload('tasks/1/notes.txt', { expiresInSeconds: 60 })
        const u = new URL(url, 'http://app')
        expect(u.pathname).toBe(`/_tenantry/storage/${t.a!.id}/tasks/1/notes.txt`)
        const got = await app.inject({ method: 'GET', url })
        expect({ status: got.statusCode, body: got.body, type: got.headers['content-type'] }).toEqual({ status: 200, body: 'hello world', type: 'text/plain' })
        expect((await app.inject({ method: 'HEAD', url })).headers['content-length']).toBe('11')
        // The same through Express.
        const server = ex.listen(0)
        try {
          const port = (server.address() as { port: number }).port
          const r = await fetch(`http://127.0.0.1:${port}${url}`)
          expect({ status: r.status, body: await r.text() }).toEqual({ status: 200, body: 'hello world' })
          const bad = await fetch(`http://127.0.0.1:${port}${url.replace('notes.txt', 'other.txt')}`)
          expect({ status: bad.status, code: (await bad.json()).code }).toEqual({ status: 403, code: 'STORAGE_URL_INVALID' })
        } finally {
          server.close()
        }
        // Any change to the URL breaks it: another tenant's prefix, another key, a later expiry, another method, no signature.
        const code = async (method: 'GET' | 'PUT', target: string, headers: Record<string, string> = {}, payload?: string) => {
          const r = await app.inject({ method, url: target, headers, payload })
          return `${r.statusCode} ${JSON.parse(r.body).code}`
        }
        expect(await code('GET', url.replace(t.a!.id, t.small!.id))).toBe('403 STORAGE_URL_INVALID')
        expect(await code('GET', url.replace('notes.txt', 'notes.tx'))).toBe('403 STORAGE_URL_INVALID')
        expect(await code('GET', url.replace(/expires=\d+/, `expires=${Math.floor(Date.now() / 1000) + 7200}`))).toBe('403 STORAGE_URL_INVALID')
        expect(await code('PUT', url, { 'content-length': '1' }, 'x')).toBe('403 STORAGE_URL_INVALID')
        expect(await code('GET', url.replace(/&sig=[^&]+/, ''))).toBe('403 STORAGE_URL_INVALID')
        expect(await code('GET', `/_tenantry/storage/${t.a!.id}/../x?method=GET`)).toBe('403 STORAGE_URL_INVALID')
        // Expired: signed for one second, checked three seconds later (the clock given to verify).
        const { verifyObjectUrl } = await import('../src/storage/signed-urls.ts')
        const short = await tenantry.storage.presignDownload('tasks/1/notes.txt', { expiresInSeconds: 1 })
        expect(() => verifyObjectUrl(tenantry.catalog.tenantKey, 'GET', short, Date.now() + 3000)).toThrow(/expired at/)
        // A key that does not exist: 404 (the signature holds).
        expect(await code('GET', await tenantry.storage.presignDownload('nothing/here.txt'))).toBe('404 NOT_FOUND')

        // Upload: exactly the signed size and type, through put (quota, share), counted at once.
        const before = await tenantry.storage.usage()
        const up = await tenantry.storage.presignUpload('direct.txt', { size: 5, contentType: 'text/plain' })
        expect(new URL(up, 'http://app').pathname).toBe(`/_tenantry/storage/${t.a!.id}/direct.txt`)
        expect(await code('PUT', up, { 'content-type': 'text/plain' }, 'hello!')).toBe('400 VALIDATION_FAILED')
        expect(await code('PUT', up, { 'content-type': 'text/html' }, 'hello')).toBe('400 VALIDATION_FAILED')
        expect(await tenantry.storage.head('direct.txt')).toBeNull()
        const put = await app.inject({ method: 'PUT', url: up, headers: { 'content-type': 'text/plain' }, payload: 'hello' })
        expect({ status: put.statusCode, body: JSON.parse(put.body) }).toEqual({ status: 200, body: { key: 'direct.txt', size: 5 } })
        expect(await text((await tenantry.storage.get('direct.txt'))!.body)).toBe('hello')
        expect(await tenantry.storage.usage()).toMatchObject({ bytes: before.bytes + 5, objects: before.objects + 1 })
        // The quota is checked at signing and again at upload.
        expect(await outcome(withTenant(t.small!, () => tenantry.storage.presignUpload('big', { size: 5000 })))).toBe('STORAGE_QUOTA_EXCEEDED')
        // Other routes still resolve a tenant.
        expect((await app.inject({ method: 'GET', url: '/api/x' })).statusCode).toBe(400)
        // A suspended tenant's URLs are refused like its requests.
        const narrowUrl = await withTenant(t.narrow!, () => tenantry.storage.presignDownload('x.txt'))
        await tenantry.suspend('store-narrow', 'test')
        try {
          expect(await code('GET', narrowUrl)).toBe('403 TENANT_SUSPENDED')
        } finally {
          await tenantry.resume('store-narrow')
          t.narrow = (await tenantry.findTenant('store-narrow'))!
        }
        expect(await outcome(tenantry.storage.presignDownload('../x'))).toBe('STORAGE_KEY_INVALID')
      } finally {
        await app.close()
      }
    }

    it('presigned URLs are pinned to the tenant prefix (S3) or refused (local)', async () => {
      await withTenant(t.a!, async () => {
        if (m.driver === 'local') {
          await localPresigned()
          return
        }
        const url = await tenantry.storage.presignDownload('tasks/1/notes.txt', { expiresInSeconds: 60 })
        expect(new URL(url).pathname).toBe(`/${s3!.bucket}/tenants/${t.a!.id}/tasks/1/notes.txt`)
        const res = await fetch(url)
        expect({ status: res.status, body: await res.text() }).toEqual({ status: 200, body: 'hello world' })
        const up = await tenantry.storage.presignUpload('direct.txt', { size: 5, contentType: 'text/plain' })
        expect(new URL(up).pathname).toBe(`/${s3!.bucket}/tenants/${t.a!.id}/direct.txt`)
        const put = await fetch(up, { method: 'PUT', body: 'hello', headers: { 'content-type': 'text/plain' } })
        expect(put.status).toBe(200)
        expect(await text((await tenantry.storage.get('direct.txt'))!.body)).toBe('hello')
        // Counted by a recount: notes (11) + ünïcødé (3) + the planted key (9) + direct (5).
        expect((await tenantry.storage.usage()).bytes).toBe(23)
        expect(await tenantry.storage.recount()).toEqual({ bytes: 28, objects: 4 })
        expect(await outcome(tenantry.storage.presignDownload('../x'))).toBe('STORAGE_KEY_INVALID')
      })
      if (m.driver === 's3') {
        expect(await outcome(withTenant(t.small!, () => tenantry.storage.presignUpload('big', { size: 5000 })))).toBe('STORAGE_QUOTA_EXCEEDED')
      }
    })

    it('stored bytes feed usage metering: the storage sample records each tenant\'s object bytes', async () => {
      const a = await withTenant(t.a!, () => tenantry.storage.usage())
      expect(a.bytes).toBeGreaterThan(0)
      expect(await tenantry.observe.usage.sampleStorage({ force: true })).toBeGreaterThanOrEqual(Object.keys(t).length)
      const now = Date.now()
      const latest = async (slug: string) => {
        const rows = await tenantry.usage({ tenant: slug, granularity: 'minute', from: new Date(now - 2 * 60_000), to: new Date(now + 2 * 60_000) })
        return rows.map((r) => r.objectBytes).filter((b) => b !== null).at(-1)
      }
      expect(await latest('store-a')).toBe(a.bytes)
      expect(await latest('store-narrow')).toBe((await withTenant(t.narrow!, () => tenantry.storage.usage())).bytes)
      expect(await latest('store-cat')).toBe((await withTenant(t.cat!, () => tenantry.storage.usage())).bytes)
      const top = await tenantry.top({ by: 'storage', limit: 1000 })
      expect(top.find((r) => r.slug === 'store-a')?.objectBytes).toBe(a.bytes)
    })

    it("erase removes the tenant's prefix and usage, and its certificate checks none is left", async () => {
      const gone = t.paced!
      await withTenant(gone, async () => {
        await tenantry.storage.put('erase/me.txt', Readable.from([Buffer.from('secret')]))
        await tenantry.storage.put('erase/too.txt', Readable.from([Buffer.from('more')]))
      })
      expect((await storePaths()).filter((p) => p.startsWith(`tenants/${gone.id}/`)).length).toBeGreaterThanOrEqual(2)
      const before = (await storePaths()).filter((p) => !p.startsWith(`tenants/${gone.id}/`))
      await tenantry.delete('store-paced')
      const cert = await tenantry.portability.erase('store-paced')
      expect(cert.verified).toBe(true)
      expect(cert.objects).toContainEqual({ object: `object storage prefix tenants/${gone.id}/`, existsAfter: false })
      expect(cert.removed.some((r) => /^\d+ objects under tenants\/.+\/ in object storage$/.test(r))).toBe(true)
      expect((await storePaths()).filter((p) => p.startsWith(`tenants/${gone.id}/`))).toEqual([])
      expect((await storePaths()).filter((p) => !p.startsWith(`tenants/${gone.id}/`))).toEqual(before)
      expect((await tenantry.storage.storedBytes()).has(gone.id)).toBe(false)
    })

    it("purge removes the tenant's prefix and usage; the others keep theirs", async () => {
      const gone = t.b!
      await tenantry.delete('store-b')
      await tenantry.purge('store-b', { force: true })
      await vi.waitFor(async () => {
        expect((await storePaths()).filter((p) => p.startsWith(`tenants/${gone.id}/`))).toEqual([])
        expect((await tenantry.storage.storedBytes()).has(gone.id)).toBe(false)
      }, { timeout: 10_000 })
      expect((await storePaths()).some((p) => p.startsWith(`tenants/${t.a!.id}/`))).toBe(true)
      expect((await tenantry.storage.storedBytes()).has(t.a!.id)).toBe(true)
    })
  })
}
