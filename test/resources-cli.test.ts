/**
 * Issue 15: the resource commands of the real `tenantry` CLI (a subprocess, embedded data
 * directory): storage usage, jobs schedules, cache flush — the same library calls as the API.
 */
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createTenantry } from '../src/index.ts'
import { DEMO_MIGRATIONS } from './helpers/backends.ts'
import { REDIS_URL, redisAvailable } from './fixtures/guard-servers.ts'

const REPO = fileURLToPath(new URL('..', import.meta.url))
const REDIS_OK = await redisAvailable()

function cli(args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const clean: NodeJS.ProcessEnv = {}
    for (const [k, v] of Object.entries(process.env)) if (!/^(TENANTRY_|DATABASE_URL$|REDIS_URL$)/.test(k)) clean[k] = v
    const child = spawn(process.execPath, ['bin/tenantry.js', ...args], { cwd: REPO, env: { ...clean, TENANTRY_LOG_LEVEL: 'silent', ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c))
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c))
    child.on('error', reject)
    child.on('close', (code) => resolve({ code, stdout, stderr }))
  })
}

describe('resource commands of the CLI', () => {
  let dir: string
  let env: Record<string, string>

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tenantry-resources-cli-'))
    env = { TENANTRY_DATA_DIR: dir, TENANTRY_MIGRATIONS: DEMO_MIGRATIONS }
    const t = await createTenantry({ dataDir: dir, migrations: DEMO_MIGRATIONS, guard: { redis: null }, cache: { redis: null }, observe: { metering: false, tracing: false } })
    try {
      await t.migrate()
      await t.catalog.upsertPlan({ name: 'small', settings: { storage: { maxBytes: 1000, maxObjects: 5 } } })
      await t.provision({ slug: 'cli-a', tier: 'pooled', plan: 'small' })
      await t.provision({ slug: 'cli-b', tier: 'pooled' })
      await t.withTenant('cli-a', async () => {
        await t.storage.put('one.txt', 'hello')
        await t.storage.put('two.txt', 'world!')
        await t.jobs.schedule('summary', '0 6 * * *', { kind: 'daily' })
      })
    } finally {
      await t.close()
    }
  })

  afterAll(() => rmSync(dir, { recursive: true, force: true }))

  it('storage usage: a table, JSON, recount; unknown tenant exit 1, bad usage exit 2', async () => {
    const json = await cli(['storage', 'usage', '--json'], env)
    expect(json.code, json.stderr).toBe(0)
    expect(JSON.parse(json.stdout)).toEqual([
      { tenant: 'cli-a', plan: 'small', bytes: 11, objects: 2, maxBytes: 1000, maxObjects: 5 },
      { tenant: 'cli-b', plan: 'default', bytes: 0, objects: 0, maxBytes: null, maxObjects: null },
    ])
    const text = await cli(['storage', 'usage', 'cli-a', '--recount'], env)
    expect(text.code, text.stderr).toBe(0)
    expect(text.stdout.split('\n')[2]).toMatch(/^cli-a\s+small\s+2\s+11 B\s+5\s+1000 B$/)
    const unknown = await cli(['storage', 'usage', 'nope'], env)
    expect({ code: unknown.code, stderr: unknown.stderr.trim() }).toEqual({ code: 1, stderr: "error TENANT_NOT_FOUND: No tenant has the slug or id 'nope'." })
    expect((await cli(['storage', 'usage', '--recount'], env)).code).toBe(2)
  })

  it('jobs schedules lists every tenant\'s schedules', async () => {
    const r = await cli(['jobs', 'schedules', '--json'], env)
    expect(r.code, r.stderr).toBe(0)
    expect(JSON.parse(r.stdout)).toEqual([{ tenant: 'cli-a', queue: 'summary', name: 'default', cron: '0 6 * * *', tz: 'UTC', lastFired: null }])
    const b = await cli(['jobs', 'schedules', '--tenant', 'cli-b'], env)
    expect(b.stdout.trim()).toBe('No schedules.')
  })

  it('cache flush needs the app\'s Redis', async () => {
    const r = await cli(['cache', 'flush', 'cli-a'], env)
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/^error CONFIG_INVALID: Without Redis/)
    if (REDIS_OK) {
      const ok = await cli(['cache', 'flush', 'cli-a'], { ...env, REDIS_URL })
      expect({ code: ok.code, out: ok.stdout.trim() }).toEqual({ code: 0, out: "Flushed the cache of 'cli-a'." })
    }
  })
})
