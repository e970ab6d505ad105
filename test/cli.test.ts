import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer, type AddressInfo } from 'node:net'
import http from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createTenantry, type Tenant } from '../src/index.ts'
import { dropPostgresLeftovers, freshDatabase, postgresAvailable } from './helpers/backends.ts'

// End-to-end runs of the real `tenantry` command (and the demo server) as subprocesses.

const REPO = fileURLToPath(new URL('..', import.meta.url))
const DB_NAME = 'tenantry_test_cli'
// Roles and databases are cluster-wide on a real server: everything this file makes carries this prefix.
const ROLE_PREFIX = 'th_cli'
const PG_UP = await postgresAvailable()
const STACK_FRAME = /\n\s+at .+[(:]/

interface Run { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }

/** The environment of a subprocess: ours without Tenantry/PostgreSQL settings, plus `extra`. */
function envWith(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(process.env)) if (!/^(TENANTRY_|DATABASE_URL$|PG[A-Z]+$|PORT$|LOG$)/.test(k)) env[k] = v
  return { ...env, ...extra }
}

/** Run `node bin/tenantry.js ...args` in the repository and collect its output. */
function tenantry(args: string[], env: Record<string, string>, timeoutMs = 150_000): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['bin/tenantry.js', ...args], { cwd: REPO, env: envWith(env), stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c))
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c))
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    child.on('error', reject)
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, stdout, stderr })
    })
  })
}

const show = (r: Run) => `exit ${r.code}${r.signal ? ` (${r.signal})` : ''}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`

async function cleanUpPostgres(): Promise<void> {
  await dropPostgresLeftovers(ROLE_PREFIX, DB_NAME)
}

async function adminExec(url: string, sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    await client.query(sql)
  } finally {
    await client.end()
  }
}

/** `{code, schema.table}` pairs of doctor's JSON findings, sorted. */
function brief(findings: { code: string; schema?: string; table?: string; role?: string }[]): string[] {
  return findings.map((f) => `${f.code} ${f.table !== undefined ? `${f.schema}.${f.table}` : f.role}`).sort()
}

// Each run starts node and compiles the sources through tsx: slow on a loaded machine.
const SLOW = { timeout: 180_000 }

describe('tenantry CLI: usage', SLOW, () => {
  it('prints help and exits 0', async () => {
    const r = await tenantry(['--help'], {})
    expect(r.code, show(r)).toBe(0)
    expect(r.stdout).toMatch(/^Usage: tenantry \[options\] \[command\]/)
    expect(r.stdout).toMatch(/\n\s+doctor \[options\]\s+check every tenant table/)
    expect(r.stderr).toBe('')
    const sub = await tenantry(['doctor', '--help'], {})
    expect(sub.code, show(sub)).toBe(0)
    expect(sub.stdout).toMatch(/^Usage: tenantry doctor \[options\]/)
    for (const flag of ['--json', '--database-url <url>', '--data-dir <dir>', '--role-prefix <prefix>', '--migrations <dir>']) expect(sub.stdout).toContain(flag)
  })

  it('exits 2 on an unknown command or option, saying what was wrong', async () => {
    const r = await tenantry(['frobnicate'], {})
    expect(r.code, show(r)).toBe(2)
    expect(r.stderr).toContain("error: unknown command 'frobnicate'")
    expect(r.stdout).toBe('')
    const opt = await tenantry(['doctor', '--jsno'], {})
    expect(opt.code, show(opt)).toBe(2)
    expect(opt.stderr).toContain("error: unknown option '--jsno'")
  })

  it('migrate without migrations exits 1 with the library\'s one message, whatever --no-pace says', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tenantry-cli-nomig-'))
    try {
      const r = await tenantry(['migrate', '--no-pace', '--data-dir', dir], {})
      expect(r.code, show(r)).toBe(1)
      expect(r.stderr.trim()).toBe("error CONFIG_INVALID: No migrations found: pass --migrations <dir> or set TENANTRY_MIGRATIONS (default ./migrations); in code, createTenantry({ migrations: './migrations' }).")
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it('exits 1 with a coded one-line error, no stack trace, when the server cannot be reached', async () => {
    const r = await tenantry(['doctor'], { DATABASE_URL: 'postgres://postgres@127.0.0.1:1/nowhere' })
    expect(r.code, show(r)).toBe(1)
    expect(r.stdout).toBe('')
    expect(r.stderr).not.toMatch(STACK_FRAME)
    expect(r.stderr).toMatch(/^error [A-Z_]+: .*127\.0\.0\.1:1/)
    expect(r.stderr.trimEnd().split('\n')).toHaveLength(1)
  })
})

describe.skipIf(!PG_UP)('tenantry doctor against PostgreSQL (pooled, schema and database tenants)', SLOW, () => {
  let url: string
  let env: Record<string, string>
  let globex: Tenant
  let initech: Tenant
  let mainTarget: string

  beforeAll(async () => {
    await cleanUpPostgres()
    url = await freshDatabase(DB_NAME)
    env = { DATABASE_URL: url, TENANTRY_ROLE_PREFIX: ROLE_PREFIX, TENANTRY_MIGRATIONS: 'demo/migrations' }
    const t = await createTenantry({ databaseUrl: url, rolePrefix: ROLE_PREFIX, migrations: join(REPO, 'demo/migrations') })
    try {
      expect((await t.migrate()).targets.filter((r) => r.status === 'failed')).toEqual([])
      await t.provision({ slug: 'acme', tier: 'pooled' })
      globex = await t.provision({ slug: 'globex', tier: 'schema' })
      initech = await t.provision({ slug: 'initech', tier: 'database' })
    } finally {
      await t.close()
    }
    mainTarget = `main/${DB_NAME}`
  })

  afterAll(async () => {
    if (PG_UP) await cleanUpPostgres()
  })

  it('exits 0 and prints OK on a sound fleet', async () => {
    const r = await tenantry(['doctor'], env)
    expect(r.code, show(r)).toBe(0)
    // projects and tasks in public (pooled), in globex's schema and in initech's database.
    expect(r.stdout).toBe('OK: no findings in 6 tables\n')
    expect(r.stderr).toBe('')
  })

  it('--json prints { ok: true, tables, findings: [] }', async () => {
    const r = await tenantry(['doctor', '--json'], env)
    expect(r.code, show(r)).toBe(0)
    expect(JSON.parse(r.stdout)).toEqual({ ok: true, tables: 6, findings: [] })
  })

  it('takes the connection from flags as well as from the environment', async () => {
    const r = await tenantry(['doctor', '--database-url', url, '--role-prefix', ROLE_PREFIX, '--migrations', 'demo/migrations'], {})
    expect(r.code, show(r)).toBe(0)
    expect(r.stdout).toBe('OK: no findings in 6 tables\n')
  })

  it('exits 1 and names every planted violation, in every tier', async () => {
    const schema = globex.placement.schema!
    expect(schema).toMatch(/^t_[0-9a-f]{32}$/)
    await adminExec(url, `
      ALTER TABLE "${schema}".projects NO FORCE ROW LEVEL SECURITY;
      ALTER TABLE public.tasks DISABLE ROW LEVEL SECURITY;
      CREATE TABLE public.notes (id int PRIMARY KEY);`)
    const initechUrl = new URL(url)
    initechUrl.pathname = `/${initech.placement.database}`
    await adminExec(initechUrl.toString(), 'ALTER TABLE public.projects NO FORCE ROW LEVEL SECURITY;')

    const r = await tenantry(['doctor'], env)
    expect(r.code, show(r)).toBe(1)
    expect(r.stderr).toBe('')
    const lines = r.stdout.trimEnd().split('\n')
    const initechTarget = `main/${initech.placement.database}`
    expect(lines.filter((l) => l.startsWith('[')).map((l) => l.replace(/:.*$/, '')).sort()).toEqual(
      [
        `[${initechTarget}] RLS_NOT_FORCED public.projects`,
        `[${mainTarget}] KEY_NOT_TENANT_LED public.notes`,
        `[${mainTarget}] MISSING_TENANT_ID public.notes`,
        `[${mainTarget}] NO_POLICY public.notes`,
        `[${mainTarget}] RLS_DISABLED public.notes`,
        `[${mainTarget}] RLS_DISABLED public.tasks`,
        `[${mainTarget}] RLS_NOT_FORCED ${schema}.projects`,
      ].sort(),
    )
    expect(lines.at(-1)).toBe('FAIL: 7 findings in 4 of 7 tables')

    const json = await tenantry(['doctor', '--json'], env)
    expect(json.code, show(json)).toBe(1)
    const body = JSON.parse(json.stdout) as { ok: boolean; tables: number; findings: { code: string; target: string; schema?: string; table?: string; message: string }[] }
    expect(body.ok).toBe(false)
    expect(body.tables).toBe(7)
    expect(brief(body.findings)).toEqual(
      [
        'KEY_NOT_TENANT_LED public.notes',
        'MISSING_TENANT_ID public.notes',
        'NO_POLICY public.notes',
        'RLS_DISABLED public.notes',
        'RLS_DISABLED public.tasks',
        'RLS_NOT_FORCED public.projects',
        `RLS_NOT_FORCED ${schema}.projects`,
      ].sort(),
    )
    expect(body.findings.find((f) => f.code === 'RLS_NOT_FORCED' && f.schema === 'public')!.target).toBe(initechTarget)
    for (const f of body.findings) expect(f.message.length).toBeGreaterThan(10)
  })

  it('exits 1 with a coded one-line error, no stack trace, when the database does not exist', async () => {
    const missing = new URL(url)
    missing.pathname = '/tenantry_test_cli_missing'
    const r = await tenantry(['doctor'], { ...env, DATABASE_URL: missing.toString() })
    expect(r.code, show(r)).toBe(1)
    expect(r.stdout).toBe('')
    expect(r.stderr).not.toMatch(STACK_FRAME)
    expect(r.stderr).toMatch(/^error [A-Z_]+: .*tenantry_test_cli_missing/)
  })

  it('exits 1 with a coded one-line error, no stack trace, when the migrations directory is missing', async () => {
    const r = await tenantry(['doctor'], { ...env, TENANTRY_MIGRATIONS: 'no/such/dir' })
    expect(r.code, show(r)).toBe(1)
    expect(r.stderr).toBe("error CONFIG_INVALID: The migrations directory 'no/such/dir' does not exist.\n")
    expect(r.stdout).toBe('')
  })
})

/** A TCP port nobody listens on right now. */
async function freePort(): Promise<number> {
  const srv = createServer()
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve))
  const { port } = srv.address() as AddressInfo
  await new Promise<void>((resolve) => srv.close(() => resolve()))
  return port
}

function get(port: number, path: string, headers: Record<string, string>): Promise<{ status: number; body: unknown }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, headers }, (res) => {
      let text = ''
      res.setEncoding('utf8').on('data', (c: string) => (text += c))
      res.on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(text) }))
    })
    req.on('error', reject)
    req.end()
  })
}

describe('tenantry doctor on an embedded (PGlite) data directory held by the running demo server', SLOW, () => {
  let dir: string
  let port: number
  let server: ChildProcess | undefined
  let serverOut = ''
  let serverExit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tenantry-cli-test-'))
    port = await freePort()
    // `node --import tsx` rather than `npx tsx`: one process, so its pid is the one to stop.
    const child = spawn(process.execPath, ['--import', 'tsx', 'demo/server.ts'], {
      cwd: REPO,
      env: envWith({ PORT: String(port), TENANTRY_DATA_DIR: dir }),
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    server = child
    serverExit = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })))
    await new Promise<void>((resolve, reject) => {
      const onData = (c: string) => {
        serverOut += c
        if (/ready in [0-9.]+ s/.test(serverOut)) resolve()
      }
      child.stdout!.setEncoding('utf8').on('data', onData)
      child.stderr!.setEncoding('utf8').on('data', (c: string) => (serverOut += c))
      void serverExit.then(({ code, signal }) => reject(new Error(`demo server exited (${code ?? signal}) before it was ready:\n${serverOut}`)))
    })
  })

  afterAll(async () => {
    if (server && server.exitCode === null && server.signalCode === null) {
      server.kill('SIGTERM')
      const stopped = await Promise.race([serverExit, new Promise((r) => setTimeout(() => r(null), 10_000))])
      if (stopped === null) server.kill('SIGKILL')
    }
    if (dir) rmSync(dir, { recursive: true, force: true })
  })

  it('the demo server serves its seeded tenants from the data directory', async () => {
    expect(serverOut).toContain(`embedded PGlite in ${dir}/`)
    expect(await get(port, '/api/tenant', { host: `initech.localhost:${port}` })).toEqual({ status: 200, body: { slug: 'initech', name: 'Initech', tier: 'database' } })
    expect(await get(port, '/health', {})).toEqual({ status: 200, body: { ok: true } })
  })

  it('refuses with DATA_DIR_LOCKED, exit 1 and no stack trace, while the server holds the directory', async () => {
    const r = await tenantry(['doctor'], { TENANTRY_DATA_DIR: dir })
    expect(r.code, show(r)).toBe(1)
    expect(r.stdout).toBe('')
    expect(r.stderr).toContain('DATA_DIR_LOCKED')
    expect(r.stderr).toContain(`is in use by process ${server!.pid}`)
    expect(r.stderr).not.toMatch(STACK_FRAME)
    expect(r.stderr.trimEnd().split('\n')).toHaveLength(1)
    // The same through the flag, and the server is unharmed.
    const viaFlag = await tenantry(['doctor', '--json', '--data-dir', dir], {})
    expect(viaFlag.code, show(viaFlag)).toBe(1)
    expect(viaFlag.stderr).toMatch(/^error DATA_DIR_LOCKED: /)
    expect(viaFlag.stdout).toBe('')
    expect(await get(port, '/api/tenant', { 'x-tenant': 'globex' })).toEqual({ status: 200, body: { slug: 'globex', name: 'Globex', tier: 'schema' } })
  })

  it('works on the same directory once the server has stopped', async () => {
    server!.kill('SIGTERM')
    expect(await serverExit).toEqual({ code: 0, signal: null })
    const r = await tenantry(['doctor'], { TENANTRY_DATA_DIR: dir, TENANTRY_MIGRATIONS: 'demo/migrations' })
    expect(r.code, show(r)).toBe(0)
    expect(r.stdout).toBe('OK: no findings in 6 tables\n')
  })
})
