import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { DEMO_MIGRATIONS, dropPostgresLeftovers, freshDatabase, postgresAvailable } from './helpers/backends.ts'

// Issue 12 end to end: `tenantry config|plans|flags|domains` as subprocesses, on PostgreSQL when it
// runs (else on an embedded data directory).

const REPO = fileURLToPath(new URL('..', import.meta.url))
const DB_NAME = 'tenantry_test_config_cli'
const ROLE_PREFIX = 'th_cfgcli'
const PG_UP = await postgresAvailable()

interface Run { code: number | null; stdout: string; stderr: string }

let env: Record<string, string> = {}

function cli(...args: string[]): Promise<Run> {
  const base: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(process.env)) if (!/^(TENANTRY_|DATABASE_URL$|PG[A-Z]+$)/.test(k)) base[k] = v
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['bin/tenantry.js', ...args], { cwd: REPO, env: { ...base, ...env, TENANTRY_MIGRATIONS: DEMO_MIGRATIONS }, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c))
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c))
    child.on('error', reject)
    child.on('close', (code) => resolve({ code, stdout, stderr }))
  })
}

const show = (r: Run) => `exit ${r.code}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`

async function ok(...args: string[]): Promise<string> {
  const r = await cli(...args)
  expect(r.code, show(r)).toBe(0)
  return r.stdout
}

describe('tenantry config, plans, flags and domains (CLI)', () => {
  let dir: string | undefined

  beforeAll(async () => {
    if (PG_UP) {
      await dropPostgresLeftovers(ROLE_PREFIX, DB_NAME)
      env = { DATABASE_URL: await freshDatabase(DB_NAME), TENANTRY_ROLE_PREFIX: ROLE_PREFIX }
    } else {
      dir = mkdtempSync(join(tmpdir(), 'tenantry-config-cli-'))
      env = { TENANTRY_DATA_DIR: dir }
    }
    await ok('migrate')
    await ok('tenants', 'create', 'acme', '--tier', 'pooled')
  }, 180_000)

  afterAll(async () => {
    if (PG_UP) await dropPostgresLeftovers(ROLE_PREFIX, DB_NAME)
    if (dir) rmSync(dir, { recursive: true, force: true })
  })

  it('config set/get/history/rollback; an invalid value exits 1 with CONFIG_INVALID and the pointer', async () => {
    expect(await ok('config', 'set', 'acme', '/branding/primaryColor', '#ff0000')).toMatch(/^Version \d+: 'acme' at \/branding\/primaryColor changed\.$/m)
    const bad = await cli('config', 'set', 'acme', 'branding.primaryColor', 'red')
    expect(bad.code, show(bad)).toBe(1)
    expect(bad.stderr).toContain("error CONFIG_INVALID: Configuration of tenant 'acme' is invalid at '/branding/primaryColor'")
    expect(bad.stderr).toContain("(rule 'pattern')")
    expect(JSON.parse(await ok('config', 'get', 'acme', '/branding', '--json'))).toEqual({ primaryColor: '#ff0000' })
    const history = JSON.parse(await ok('config', 'history', 'acme', '--json'))
    expect(history.map((v: any) => [v.scope, v.path, v.after])).toEqual([['tenant', '/branding/primaryColor', { branding: { primaryColor: '#ff0000' } }]])
    expect(history[0].changedBy).toMatch(/^cli:/)
    await ok('config', 'rollback', 'acme', String(history[0].id))
    expect(JSON.parse(await ok('config', 'get', 'acme', '--tenant-layer', '--json'))).toEqual({})
    const usage = await cli('config', 'rollback', 'acme', 'latest')
    expect(usage.code, show(usage)).toBe(2)
  }, 120_000)

  it('plans create/assign/config, flags set/rollout/eval/list, domains add/list/remove', async () => {
    await ok('plans', 'create', 'pro', '{"limits":{"concurrency":4},"branding":{"primaryColor":"#0000ff"}}')
    const unknown = await cli('plans', 'assign', 'acme', 'gold')
    expect([unknown.code, unknown.stderr.split(':')[0]]).toEqual([1, 'error PLAN_NOT_FOUND'])
    expect(await ok('plans', 'assign', 'acme', 'pro')).toBe("'acme' is on plan 'pro'.\n")
    const badLimits = await cli('plans', 'config', 'set', 'pro', '/limits/concurrency', '0')
    expect(badLimits.code, show(badLimits)).toBe(1)
    expect(badLimits.stderr).toContain("at '/limits/concurrency'")
    expect(JSON.parse(await ok('config', 'get', 'acme', '--json'))).toEqual({ limits: { concurrency: 4 }, branding: { primaryColor: '#0000ff' } })

    await ok('flags', 'set', 'new-editor', '{"rules":[{"name":"pro","plans":["pro"],"variant":"on"}]}')
    expect(JSON.parse(await ok('flags', 'eval', 'new-editor', 'acme', '--json'))).toEqual({ key: 'new-editor', value: true, variant: 'on', reason: 'TARGETING_MATCH', rule: 0, ruleName: 'pro' })
    await ok('flags', 'rollout', 'new-editor', '20%')
    const [flag] = JSON.parse(await ok('flags', 'list', '--json'))
    expect(flag.rules).toEqual([{ name: 'pro', plans: ['pro'], variant: 'on' }, { name: 'rollout', percentage: 20, variant: 'on' }])
    const badFlag = await cli('flags', 'set', 'x', '{"rules":[{"variant":"maybe"}]}')
    expect([badFlag.code, badFlag.stderr.split(':')[0]]).toEqual([1, 'error VALIDATION_FAILED'])

    const added = JSON.parse(await ok('domains', 'add', 'acme', 'app.acme.test', '--json'))
    expect([added.status, added.instructions.txtName]).toEqual(['pending', '_tenantry-verification.app.acme.test'])
    expect(await ok('domains', 'list')).toMatch(/app\.acme\.test\s+acme\s+pending/)
    expect(await ok('domains', 'remove', 'app.acme.test')).toBe("Removed domain 'app.acme.test'.\n")
    const gone = await cli('domains', 'remove', 'app.acme.test')
    expect([gone.code, gone.stderr.split(':')[0]]).toEqual([1, 'error NOT_FOUND'])
  }, 180_000)
})
