/**
 * Per-tenant backup and restore throughput in every tier against pg_dump/pg_restore and psql \copy, and other tenants' routing p99 during a backup.
 *
 * `npm run bench -- portability [--rows 1000000] [--repeats 4] [--compress gzip|none] [--parallel 4] [--probe-ms 8000] [--open-share 0.3] [--p99-rounds 5] [--autogroup off|keep] [--tiers pooled,schema,database] [--keep]`
 *
 * Real PostgreSQL (`BENCH_PG_URL`, else `TENANTRY_TEST_PG_URL`, else postgres://postgres@127.0.0.1:5432/postgres,
 * a superuser), own database `tenantry_bench_portability` and role prefix `tb_port`, removed before
 * and after. Migrations: 5 tenant tables (tenant_id, identity id, text, integer, timestamptz, a
 * jsonb column; tenant-led keys, forced RLS). Per tier, one tenant with --rows rows over the 5 tables
 * (the pooled tables also hold a second tenant with a tenth as many rows).
 *
 * Like with like: both sides write files into the same directory with the same compression —
 * `--compress gzip` (default): Tenantry's gzip (zlib level 1) against `pg_dump -Fc -Z1` and
 * `\copy … TO PROGRAM 'gzip -1 > …'`; `--compress none`: Tenantry `gzip: false` against
 * `pg_dump -Fc -Z0` and a plain `\copy … TO` file. Both unencrypted. The native tools run as users
 * run them: one job (`pg_dump -j` needs the directory format), one psql per table.
 *
 * Measured per tier, `--repeats` rounds (even: each side goes first equally often), each round
 * timing both sides back to back, Tenantry first in even rounds, native first in odd ones; the
 * figures are medians (the ratios: the median of each round's ratio). After the fill the tables are
 * vacuumed (hint bits, visibility map), untimed:
 * - Tenantry: `portability.backup` (`parallelTables: --parallel`) and `portability.restore --as` a
 *   new tenant of the same tier (verify pass + making the room + load + sequences), in rows/s;
 * - native: schema tier `pg_dump -Fc -n <schema>` / `pg_restore` into an empty database (which has
 *   the `tenantry` schema, untimed); database tier `pg_dump -Fc <db>` / `pg_restore` into an empty
 *   database; pooled `psql \copy (SELECT … WHERE tenant_id = …) TO` per table / `\copy … FROM`
 *   into the same tables (after deleting the tenant's rows, untimed);
 * - routing p99 of another tenant (a child process: `withTenant` + a primary-key SELECT) alone,
 *   then during an unpaced backup of the pooled tenant (the default, `pace: false`, in this
 *   process), then during a paced one as users are told to take a live backup (`tenantry backup
 *   --pace` in a process of its own: paced by the server's load, that process and, through the
 *   prioritize extension the bench creates where the server has it, its backends at nice 19),
 *   counting the requests that ended while the backup ran; under two loads: a closed loop of 4 at
 *   once (the server saturated) and an open loop at `--open-share` of the closed loop's rate.
 *   With autogroup on (Linux), nice values would only rank tasks within each backend's own
 *   scheduling group: the bench turns it off for these figures when it may, and back on after
 *   (`--autogroup keep` leaves it). `p99_during_backup_ratio` is the paced backup under the
 *   closed loop; `p99_during_unpaced_backup_ratio`, `p99_open_loop_unpaced_ratio` and
 *   `p99_open_loop_paced_ratio` are beside it. `--p99-rounds` rounds, each ratio against its
 *   round's alone; the figures are the medians. Each round also times the load alone a second
 *   time (`p99_alone_again_ratio`: the noise between two windows with no backup at all).
 * Between rounds, untimed: the restored copy is erased, the native scratch database dropped.
 * Each side is also charged the machine's CPU seconds while it ran (/proc/stat: every process, not
 * the time a hypervisor gave other guests): on a host whose CPU others take, the CPU a side needs is
 * steadier than its wall time.
 * The last line is one JSON object: backup_rows_per_s, restore_rows_per_s, backup_vs_native,
 * restore_vs_native, backup_cpu_vs_native, restore_cpu_vs_native (each the worst tier's median),
 * p99_during_backup_ratio, and per tier figures with every round's ratios. The machine is shared and noisy: compare ratios measured in one run.
 */
import { execFileSync, spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import pg from 'pg'
import { createTenantry, type BackupResult, type Tenant, type Tenantry, type Tier } from '../src/index.ts'
import { dropBenchLeftovers, lcg } from './lib/bench-db.ts'
import { REPO_ROOT, median, printTable, round } from './lib/load.ts'
import { connectAdmin, percentiles, redact, withDatabase } from './provision.ts'

const DATABASE = 'tenantry_bench_portability'
const ROLE_PREFIX = 'tb_port'
const TABLES = ['accounts', 'contacts', 'deals', 'notes', 'events']
const log = (msg: string) => process.stderr.write(`[portability] ${msg}\n`)

const MIGRATION = TABLES.map((t) => `
CREATE TABLE ${t} (
  tenant_id uuid NOT NULL DEFAULT tenantry.tenant_id(),
  id bigint GENERATED BY DEFAULT AS IDENTITY,
  name text NOT NULL,
  amount integer NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  attrs jsonb NOT NULL DEFAULT '{}',
  PRIMARY KEY (tenant_id, id)
);
ALTER TABLE ${t} ENABLE ROW LEVEL SECURITY;
ALTER TABLE ${t} FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON ${t} USING (tenant_id = (SELECT tenantry.tenant_id())) WITH CHECK (tenant_id = (SELECT tenantry.tenant_id()));`).join('\n')

const pgUrl = () => process.env.BENCH_PG_URL ?? process.env.TENANTRY_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'
const bin = (tool: string) => join(execFileSync('pg_config', ['--bindir'], { encoding: 'utf8' }).trim(), tool)

/**
 * The machine's CPU seconds spent so far, all processes (user, nice, system, irq and softirq from
 * /proc/stat; not idle, not iowait, not steal — the time a hypervisor gave another guest), or null off Linux.
 */
function machineCpuSeconds(): number | null {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number)
    return (f[0] + f[1] + f[2] + f[5] + f[6]) / 100 // USER_HZ: 100 on Linux
  } catch {
    return null
  }
}

/** Wall seconds of `fn`, and the machine's CPU seconds during it (every process: its own, PostgreSQL's, the tools'). */
async function timed(fn: () => Promise<unknown> | unknown): Promise<{ s: number; cpu: number }> {
  const c0 = machineCpuSeconds()
  const t0 = process.hrtime.bigint()
  await fn()
  const s = Number(process.hrtime.bigint() - t0) / 1e9
  const c1 = machineCpuSeconds()
  return { s, cpu: c0 === null || c1 === null ? NaN : c1 - c0 }
}

/** Fill the tenant's tables with `rows` rows in all, as the owner pointed at the tenant. */
async function fill(t: Tenantry, tenant: Tenant, rows: number): Promise<void> {
  const per = Math.floor(rows / TABLES.length)
  await t.withTenant(tenant, async () => {
    for (const table of TABLES) {
      await t.db.query(`INSERT INTO ${table} (name, amount, attrs) SELECT 'name ' || g || E' with\\ttab', g % 1000, jsonb_build_object('k', g, 'tag', 't' || (g % 7)) FROM generate_series(1, $1) g`, [per])
    }
  })
}

function roomOf(t: Tenantry, tenant: Tenant): { database: string; schema: string } {
  const target = t.dataPlane.migrationTarget(tenant)
  return { database: target.database, schema: target.schema }
}

/**
 * Routing latency of one tenant from a child process (its own event loop), for `ms`: [epoch ms at
 * the end, latency ms] per request. Closed loop (4 at once, each sent when the last answered) when
 * `rate` is 0, else open loop: `rate` requests per second on a fixed schedule whatever the answers
 * (a slow answer never delays the next send), each timed from its send. Resolves `ready` when measuring.
 */
function probe(env: Record<string, string>, ms: number, rate = 0): { ready: Promise<void>; done: Promise<[number, number][]> } {
  let ready!: () => void
  const readyP = new Promise<void>((r) => (ready = r))
  const done = new Promise<[number, number][]>((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'bench/portability.ts'), '--probe-child', String(ms), String(rate)], {
      cwd: REPO_ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'],
    })
    let out = ''
    child.stdout.setEncoding('utf8').on('data', (c: string) => {
      out += c
      if (out.startsWith('ready\n')) ready()
    })
    child.on('error', reject)
    child.on('close', (code) => (code === 0 ? resolve(JSON.parse(out.trim().split('\n').pop()!)) : reject(new Error(`probe exited ${code}`))))
  })
  return { ready: readyP, done }
}

async function probeChild(ms: number, rate: number): Promise<void> {
  const t = await createTenantry({ databaseUrl: process.env.PROBE_URL, rolePrefix: ROLE_PREFIX, resumeOperations: false, observe: { metering: false, metrics: false, tracing: false, logger: false as never } })
  const tenant = (await t.findTenant('probe'))!
  const next = lcg(7)
  const lat: [number, number][] = []
  const one = () => t.withTenant(tenant, () => t.db.query('SELECT id, name FROM accounts WHERE id = $1', [1 + (next() % 1000)]))
  const closedLoop = async (until: number, record: boolean) => {
    await Promise.all(Array.from({ length: 4 }, async () => {
      while (Date.now() < until) {
        const t0 = process.hrtime.bigint()
        await one()
        if (record) lat.push([Date.now(), Number(process.hrtime.bigint() - t0) / 1e6])
      }
    }))
  }
  const openLoop = async (until: number, record: boolean) => {
    const start = performance.now()
    const gap = 1000 / rate
    const inFlight: Promise<void>[] = []
    let sent = 0
    while (Date.now() < until) {
      const due = start + sent * gap
      const now = performance.now()
      if (due > now) {
        await new Promise((r) => setTimeout(r, Math.max(0, due - now)))
        continue
      }
      sent++
      // Timed from the send, not from `due`: a late timer of this process is not the server's time.
      const t0 = performance.now()
      inFlight.push(one().then(() => { if (record) lat.push([Date.now(), performance.now() - t0]) }))
    }
    await Promise.all(inFlight)
  }
  const loop = rate > 0 ? openLoop : closedLoop
  // A second of the same load unmeasured first: the pool's connections open, the code is compiled.
  await loop(Date.now() + 1000, false)
  process.stdout.write('ready\n')
  await loop(Date.now() + ms, true)
  await t.close()
  console.log(JSON.stringify(lat))
}

/** `tenantry backup <slug> --pace` in a child process (the CLI a user runs): its JSON result and when it was printed, once the process has ended. */
async function cliBackup(url: string, dir: string, slug: string, gzip: boolean): Promise<BackupResult & { printedAt: number }> {
  const args = ['bin/tenantry.js', 'backup', slug, '--pace', '--json', '--no-encrypt', '--to', join(dir, 'backups', `${slug}-paced.tar`),
    '--database-url', url, '--role-prefix', ROLE_PREFIX, '--migrations', dir, ...(gzip ? [] : ['--no-gzip'])]
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { cwd: REPO_ROOT, env: { ...process.env, TENANTRY_MASTER_KEY: '' }, stdio: ['ignore', 'pipe', 'inherit'] })
    let out = ''
    let printedAt = 0
    // The result is printed as the backup returns, before the command closes its pools.
    child.stdout.setEncoding('utf8').on('data', (c: string) => {
      out += c
      printedAt ||= Date.now()
    })
    child.on('error', reject)
    child.on('close', (code) => (code === 0 ? resolve({ ...(JSON.parse(out) as BackupResult), printedAt }) : reject(new Error(`tenantry backup exited ${code}`))))
  })
}

/**
 * On a Linux kernel with autogroup on, every PostgreSQL backend is a scheduling group of its own
 * (PostgreSQL starts each in a session of its own) and a nice value only ranks tasks within their
 * group, so a paced backup's lowered backends would compete as before. Servers run PostgreSQL
 * under a service manager's cgroup, where autogroup does not apply; this machine does not, so the
 * bench turns autogroup off for its p99 figures when it may (root), and back on after. Returns
 * what to restore, or null (unchanged: off already, not Linux, not root, or --autogroup keep).
 */
function autogroupOff(keep: boolean): { was: string; restore: () => void } | null {
  const path = '/proc/sys/kernel/sched_autogroup_enabled'
  try {
    const was = readFileSync(path, 'utf8').trim()
    if (keep || was !== '1') return null
    writeFileSync(path, '0')
    // Back on however the bench ends (a failure, Ctrl-C), not only after the figures.
    const restore = () => {
      process.off('exit', restore)
      try { writeFileSync(path, was) } catch { /* nothing more to do */ }
    }
    process.once('exit', restore)
    process.once('SIGINT', () => process.exit(130))
    return { was, restore }
  } catch {
    return null
  }
}

interface Round { backup_s: number; native_backup_s: number; restore_s: number; native_restore_s: number; backup_cpu_s: number; native_backup_cpu_s: number; restore_cpu_s: number; native_restore_cpu_s: number }

export default async function run(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: {
    rows: { type: 'string', default: '1000000' }, tiers: { type: 'string', default: 'pooled,schema,database' }, repeats: { type: 'string', default: '4' },
    compress: { type: 'string', default: 'gzip' }, parallel: { type: 'string', default: '4' }, 'probe-ms': { type: 'string', default: '8000' }, keep: { type: 'boolean', default: false },
    'open-share': { type: 'string', default: '0.3' }, autogroup: { type: 'string', default: 'off' }, 'p99-rounds': { type: 'string', default: '5' },
  } })
  const rows = Number(values.rows)
  const repeats = Math.max(1, Number(values.repeats) || 1)
  const tiers = values.tiers!.split(',') as Tier[]
  if (values.compress !== 'gzip' && values.compress !== 'none') {
    console.error('portability: --compress is gzip or none')
    return 2
  }
  const gzip = values.compress === 'gzip'
  const p99Rounds = Math.max(1, Number(values['p99-rounds']) || 1)
  if (values.autogroup !== 'off' && values.autogroup !== 'keep') {
    console.error('portability: --autogroup is off or keep')
    return 2
  }
  const admin = await connectAdmin('portability', pgUrl())
  if (!admin) return 1
  const url = withDatabase(pgUrl(), DATABASE)
  const dir = mkdtempSync(join(tmpdir(), 'tenantry-bench-portability-'))
  await dropBenchLeftovers(admin, DATABASE, ROLE_PREFIX)
  await admin.query(`CREATE DATABASE ${DATABASE}`)
  // A paced backup lowers its backends where the server's database has the prioritize extension.
  const prioritize = await (async () => {
    const c = new pg.Client({ connectionString: withDatabase(pgUrl(), DATABASE) })
    await c.connect()
    try {
      return await c.query('CREATE EXTENSION IF NOT EXISTS prioritize').then(() => true, () => false)
    } finally {
      await c.end()
    }
  })()
  writeFileSync(join(dir, '0001_tables.sql'), MIGRATION)
  log(`PostgreSQL ${redact(url)}; ${rows.toLocaleString()} rows per tenant over ${TABLES.length} tables; tiers ${tiers.join(', ')}; ${repeats} rounds; compression ${gzip ? 'gzip level 1 (pg_dump -Z1, gzip -1)' : 'none (pg_dump -Z0)'}; ${values.parallel} tables at once`)
  const t = await createTenantry({
    databaseUrl: url, rolePrefix: ROLE_PREFIX, migrations: dir, observe: { metering: false, metrics: false, tracing: false },
    portability: { masterKey: '', backupDir: join(dir, 'backups'), parallelTables: Number(values.parallel) },
  })
  const results: Record<string, { rows: number; rounds: Round[]; archive_mb: number; native_mb: number }> = {}
  let p99Ratio: number | null = null
  let autogroupChanged = false
  let p99Detail: { closed?: Record<string, number | number[] | null>; open?: Record<string, number | number[] | null> } = {}
  try {
    const probeTenant = await t.provision({ slug: 'probe', tier: 'pooled' })
    await fill(t, probeTenant, 5000)
    for (const tier of tiers) {
      const tenant = await t.provision({ slug: `big-${tier}`, tier })
      log(`${tier}: filling ${rows.toLocaleString()} rows`)
      await fill(t, tenant, rows)
      if (tier === 'pooled') await fill(t, await t.provision({ slug: 'neighbour', tier: 'pooled' }), Math.floor(rows / 10))
      const room = roomOf(t, tenant)
      // Hint bits and the visibility map set now, untimed: else the first reader of a round pays for them.
      await t.dataPlane.driver('main').admin(room.database).query(`VACUUM ANALYZE ${TABLES.map((x) => `${room.schema}.${x}`).join(', ')}`)
      const dbUrl = withDatabase(pgUrl(), room.database)
      const nativeDir = join(dir, `native-${tier}`)
      execFileSync('mkdir', ['-p', nativeDir])
      const scratch = `${ROLE_PREFIX}_native_${tier}`
      const where = (table: string) => `(SELECT * FROM public.${table} WHERE tenant_id = '${tenant.id}')`
      const file = (table: string) => join(nativeDir, `${table}.copy${gzip ? '.gz' : ''}`)
      let backupPath = ''
      let archiveBytes = 0
      let nativeBytes = 0

      const tenantryBackup = async () => { backupPath = (await t.portability.backup(tenant.slug, { encrypt: false, gzip })).path }
      const nativeBackup = () => {
        if (tier === 'pooled') {
          for (const table of TABLES) execFileSync(bin('psql'), [dbUrl, '-q', '-c', gzip ? `\\copy ${where(table)} TO PROGRAM 'gzip -1 > ${file(table)}'` : `\\copy ${where(table)} TO '${file(table)}'`])
        } else {
          execFileSync(bin('pg_dump'), ['-Fc', gzip ? '-Z1' : '-Z0', ...(tier === 'schema' ? ['-n', room.schema] : []), '-f', join(nativeDir, 'dump'), dbUrl])
        }
      }
      const tenantryRestore = (round: number) => t.portability.restore(backupPath, { as: `copy-${tier}-${round}`, tier })
      const nativeRestore = () => {
        if (tier === 'pooled') {
          for (const table of TABLES) execFileSync(bin('psql'), [dbUrl, '-q', '-c', gzip ? `\\copy public.${table} FROM PROGRAM 'gzip -dc ${file(table)}'` : `\\copy public.${table} FROM '${file(table)}'`])
        } else {
          execFileSync(bin('pg_restore'), ['--no-owner', '--no-privileges', '-d', withDatabase(pgUrl(), scratch), join(nativeDir, 'dump')])
        }
      }
      /** Untimed: what the native restore needs in place (an empty database, or the tenant's rows gone). */
      const prepareNativeRestore = async () => {
        if (tier === 'pooled') {
          await t.dataPlane.driver('main').admin(room.database).query(TABLES.map((x) => `DELETE FROM public.${x} WHERE tenant_id = '${tenant.id}'`).join(';'))
          await t.dataPlane.driver('main').admin(room.database).query(`VACUUM ${TABLES.map((x) => `public.${x}`).join(', ')}`)
          return
        }
        await admin.query(`DROP DATABASE IF EXISTS ${scratch} WITH (FORCE)`)
        await admin.query(`CREATE DATABASE ${scratch}`)
        // A schema dump names tenantry.tenant_id() (defaults, policies) without holding it.
        if (tier === 'schema') {
          const ddl = execFileSync(bin('pg_dump'), ['-s', '-n', 'tenantry', dbUrl], { encoding: 'utf8' })
          execFileSync(bin('psql'), ['-q', '-v', 'ON_ERROR_STOP=1', withDatabase(pgUrl(), scratch)], { input: ddl })
        }
      }

      const rounds: Round[] = []
      for (let r = 0; r < repeats; r++) {
        const tenantryFirst = r % 2 === 0
        if (tier === 'pooled') await t.dataPlane.driver('main').admin(room.database).query(`VACUUM ${TABLES.map((x) => `public.${x}`).join(', ')}`)
        await admin.query('CHECKPOINT')
        // Each side's wall and machine CPU seconds (t: Tenantry, n: the native tools).
        const none = { s: 0, cpu: NaN }
        let tBackup = none
        let nBackup = none
        for (const side of tenantryFirst ? ['tenantry', 'native'] : ['native', 'tenantry']) {
          if (side === 'tenantry') tBackup = await timed(tenantryBackup)
          else nBackup = await timed(nativeBackup)
        }
        archiveBytes = Number(execFileSync('stat', ['-c', '%s', backupPath], { encoding: 'utf8' }))
        nativeBytes = Number(execFileSync('du', ['-sb', nativeDir], { encoding: 'utf8' }).split('\t')[0])
        let tRestore = none
        let nRestore = none
        for (const side of tenantryFirst ? ['tenantry', 'native'] : ['native', 'tenantry']) {
          if (side === 'native') await prepareNativeRestore()
          await admin.query('CHECKPOINT')
          if (side === 'tenantry') tRestore = await timed(() => tenantryRestore(r))
          else nRestore = await timed(nativeRestore)
        }
        rounds.push({
          backup_s: tBackup.s, native_backup_s: nBackup.s, restore_s: tRestore.s, native_restore_s: nRestore.s,
          backup_cpu_s: tBackup.cpu, native_backup_cpu_s: nBackup.cpu, restore_cpu_s: tRestore.cpu, native_restore_cpu_s: nRestore.cpu,
        })
        log(`${tier} round ${r + 1}/${repeats} (${tenantryFirst ? 'Tenantry' : 'native'} first): backup ${round(tBackup.s, 2)} s vs ${round(nBackup.s, 2)} s (${round(nBackup.s / tBackup.s, 3)}x; machine CPU ${round(tBackup.cpu, 2)} s vs ${round(nBackup.cpu, 2)} s), restore ${round(tRestore.s, 2)} s vs ${round(nRestore.s, 2)} s (${round(nRestore.s / tRestore.s, 3)}x; CPU ${round(tRestore.cpu, 2)} s vs ${round(nRestore.cpu, 2)} s); this process: heap ${Math.round(process.memoryUsage().heapUsed / 1e6)} MB, rss ${Math.round(process.memoryUsage().rss / 1e6)} MB`)
        // Untimed: the copy goes, and the archive (a round makes its own).
        await t.portability.erase(`copy-${tier}-${r}`, { force: true })
        rmSync(backupPath, { force: true })
      }

      if (tier === 'pooled') {
        // Another tenant's requests timed alone, then during an unpaced backup of the big pooled
        // tenant, then during a paced one (the default); under two loads: the probe's closed loop
        // (4 at once: the server saturated, no idle CPU at all) and an open loop at --open-share
        // (0.3) of the closed loop's rate (a server with room, as servers run; at half, one
        // client process's bursts already queue on this 2-core machine). "During" counts the
        // requests that ended while the backup ran.
        const probeMs = Number(values['probe-ms']) || 8000
        const load = async (rate: number) => {
          const label = rate > 0 ? `open loop at ${Math.round(rate)} req/s` : 'closed loop, 4 at once'
          const run = async (pace: boolean | null) => {
            // A paced backup runs longer, after the command's start: the probe outlasts it.
            const p = probe({ PROBE_URL: url }, pace ? probeMs * 2 : probeMs, rate)
            await p.ready
            if (pace === null) return { lat: percentiles((await p.done).map(([, ms]) => ms)), n: (await p.done).length }
            await new Promise((res) => setTimeout(res, 1000))
            let from = Date.now()
            // Paced: as a user runs a live backup, `tenantry backup --pace` in a process of its own
            // (which lowers its own priority); its window is the backup's own time, without the
            // command's start.
            const cli = pace ? await cliBackup(url, dir, tenant.slug, gzip) : null
            const b = cli ?? await t.portability.backup(tenant.slug, { encrypt: false, gzip, pace })
            let to = Date.now()
            if (cli) {
              to = cli.printedAt
              from = to - cli.ms
            }
            rmSync(b.path, { force: true })
            const all = await p.done
            return { lat: percentiles(all.filter(([at]) => at >= from && at <= to).map(([, ms]) => ms)), n: all.length, b }
          }
          // --p99-rounds rounds of alone, unpaced, paced: each ratio against its own round's
          // alone; the figures are the medians of the rounds' (one p99 of one window swings).
          const per: Record<string, number>[] = []
          for (let r = 0; r < p99Rounds; r++) {
            const alone = await run(null)
            // The same load alone again: how far one window's p99 moves from another's with no
            // backup at all (the noise the other ratios carry).
            const again = await run(null)
            const res: Record<string, number> = { alone_p99_ms: alone.lat.p99, alone_rps: alone.n / (probeMs / 1000), again_ratio: again.lat.p99 / alone.lat.p99 }
            log(`${label}, round ${r + 1}/${p99Rounds}: p99 alone ${round(alone.lat.p99, 2)} ms, alone again ${round(again.lat.p99, 2)} ms: ${round(res.again_ratio, 3)}x`)
            for (const pace of [false, true]) {
              const d = await run(pace)
              const key = pace ? 'paced' : 'unpaced'
              res[`${key}_ratio`] = d.lat.p99 / alone.lat.p99
              res[`${key}_p99_ms`] = d.lat.p99
              res[`${key}_samples`] = d.lat.n
              res[`${key}_backup_ms`] = d.b!.ms
              if (d.b!.pace) res[`${key}_mean_level`] = d.b!.pace.meanLevel
              log(`${label}, round ${r + 1}/${p99Rounds}: p50 alone ${round(alone.lat.p50, 2)} ms, p99 alone ${round(alone.lat.p99, 2)} ms, during a${pace ? ' paced' : 'n unpaced'} backup ${round(d.lat.p99, 2)} ms (n=${d.lat.n}): ${round(res[`${key}_ratio`], 3)}x; the backup took ${d.b!.ms} ms${d.b!.pace ? ` (pace: ${d.b!.pace.gauge} baseline ${round(d.b!.pace.baseline, 3)}, mean level ${round(d.b!.pace.meanLevel, 3)}, ${d.b!.pace.slowdowns} slowdowns${d.b!.pace.free ? ', free' : ''})` : ''}`)
            }
            per.push(res)
          }
          const res: Record<string, number | number[] | null> = {}
          for (const k of Object.keys(per[0])) res[k] = round(median(per.map((x) => x[k])), 3)
          res.alone_rps = Math.round(res.alone_rps as number)
          res.again_ratios = per.map((x) => round(x.again_ratio, 3))
          res.unpaced_ratios = per.map((x) => round(x.unpaced_ratio, 3))
          res.paced_ratios = per.map((x) => round(x.paced_ratio, 3))
          return { res, rps: res.alone_rps }
        }
        const autogroup = autogroupOff(values.autogroup === 'keep')
        let closed: Awaited<ReturnType<typeof load>>
        let open: Awaited<ReturnType<typeof load>>
        try {
          log(`p99 during backups: paced backends ${prioritize ? 'at nice 19 (prioritize extension)' : 'at full priority (no prioritize extension on this server)'}; autogroup ${autogroup ? 'turned off for these figures' : 'left as it is'}`)
          closed = await load(0)
          open = await load(closed.rps * Number(values['open-share']))
        } finally {
          autogroup?.restore()
        }
        autogroupChanged = autogroup !== null
        // The headline is a live backup as users are told to take one (paced, docs/portability.md)
        // under the closed loop, the load of the earlier figures; the default (unpaced, pg_dump's
        // full speed) and the open-loop ratios are beside it.
        p99Ratio = closed.res.paced_ratio as number
        p99Detail = { closed: closed.res, open: open.res }
      } else {
        await admin.query(`DROP DATABASE IF EXISTS ${scratch} WITH (FORCE)`)
      }
      results[tier] = { rows, rounds, archive_mb: round(archiveBytes / 1e6, 1), native_mb: round(nativeBytes / 1e6, 1) }
    }
  } finally {
    await t.close()
    if (!values.keep) {
      await dropBenchLeftovers(admin, DATABASE, ROLE_PREFIX)
      rmSync(dir, { recursive: true, force: true })
    }
    await admin.end()
  }

  const per = Object.entries(results).map(([tier, r]) => {
    const med = (k: keyof Round) => median(r.rounds.map((x) => x[k]))
    return {
      tier,
      backup_rows_per_s: Math.round(r.rows / med('backup_s')),
      restore_rows_per_s: Math.round(r.rows / med('restore_s')),
      native_backup_rows_per_s: Math.round(r.rows / med('native_backup_s')),
      native_restore_rows_per_s: Math.round(r.rows / med('native_restore_s')),
      // The median of each round's ratio: both sides of a round ran under the same load.
      backup_vs_native: round(median(r.rounds.map((x) => x.native_backup_s / x.backup_s)), 3),
      restore_vs_native: round(median(r.rounds.map((x) => x.native_restore_s / x.restore_s)), 3),
      backup_ratios: r.rounds.map((x) => round(x.native_backup_s / x.backup_s, 3)),
      restore_ratios: r.rounds.map((x) => round(x.native_restore_s / x.restore_s, 3)),
      // The machine's CPU seconds each side took, native over Tenantry (above 1: Tenantry needed less
      // CPU): what a host whose CPU is taken by others (steal, neighbours) leaves as the fair figure.
      backup_cpu_s: round(med('backup_cpu_s'), 2),
      native_backup_cpu_s: round(med('native_backup_cpu_s'), 2),
      backup_cpu_vs_native: round(median(r.rounds.map((x) => x.native_backup_cpu_s / x.backup_cpu_s)), 3),
      restore_cpu_s: round(med('restore_cpu_s'), 2),
      native_restore_cpu_s: round(med('native_restore_cpu_s'), 2),
      restore_cpu_vs_native: round(median(r.rounds.map((x) => x.native_restore_cpu_s / x.restore_cpu_s)), 3),
      archive_mb: r.archive_mb,
      native_mb: r.native_mb,
    }
  })
  printTable(['TIER', 'BACKUP ROWS/S', 'NATIVE', 'RATIO', 'RESTORE ROWS/S', 'NATIVE', 'RATIO', 'ARCHIVE MB', 'NATIVE MB'],
    per.map((p) => [p.tier, p.backup_rows_per_s, p.native_backup_rows_per_s, p.backup_vs_native, p.restore_rows_per_s, p.native_restore_rows_per_s, p.restore_vs_native, p.archive_mb, p.native_mb]))
  const worst = (k: 'backup_rows_per_s' | 'restore_rows_per_s' | 'backup_vs_native' | 'restore_vs_native' | 'backup_cpu_vs_native' | 'restore_cpu_vs_native') => per.reduce((m, p) => Math.min(m, p[k]), Infinity)
  console.log(JSON.stringify({
    rows_per_tenant: rows,
    rounds: repeats,
    compression: gzip ? 'gzip-1' : 'none',
    parallel_tables: Number(values.parallel),
    backup_rows_per_s: worst('backup_rows_per_s'),
    restore_rows_per_s: worst('restore_rows_per_s'),
    backup_vs_native: worst('backup_vs_native'),
    restore_vs_native: worst('restore_vs_native'),
    backup_cpu_vs_native: worst('backup_cpu_vs_native'),
    restore_cpu_vs_native: worst('restore_cpu_vs_native'),
    p99_during_backup_ratio: p99Ratio,
    p99_during_unpaced_backup_ratio: p99Detail.closed?.unpaced_ratio ?? null,
    p99_alone_again_ratio: p99Detail.closed?.again_ratio ?? null,
    prioritize_extension: prioritize,
    autogroup_turned_off: autogroupChanged,
    p99_open_loop_unpaced_ratio: p99Detail.open?.unpaced_ratio ?? null,
    p99_open_loop_paced_ratio: p99Detail.open?.paced_ratio ?? null,
    p99_during: p99Detail,
    tiers: per,
  }))
  return 0
}

if (process.argv[2] === '--probe-child') probeChild(Number(process.argv[3]), Number(process.argv[4] ?? 0)).catch((err) => { console.error(err); process.exit(1) })
