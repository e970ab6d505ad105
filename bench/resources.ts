/**
 * Issue 15: a quiet tenant's upload p99 beside a noisy uploader (with/without the upload share), flushTenant with 1k vs 1M keys, a quiet tenant's job latency behind a 10,000-job backlog.
 *
 * `npm run bench -- resources [--uploads 200] [--noisy-streams 32] [--keys 1000000] [--backlog 10000] [--quiet-jobs 400] [--job-ms 2]`
 *
 * PostgreSQL from `BENCH_PG_URL` (a superuser URL; own database `tenantry_bench_resources`, role
 * prefix `tb_res`, dropped at the end), Redis from `BENCH_REDIS_URL` (its database 15 is flushed
 * before and after). Each figure has its baseline in the same run:
 * (a) uploads (local driver, 64 kB each, one after another) of a quiet tenant: alone, and while a
 *     noisy tenant runs `--noisy-streams` uploads of 4 MB at full speed — on a plan with no
 *     upload share, and on a plan with uploadConcurrency 2, 2 MB in flight and 16 MB/s; the three phases
 *     interleaved in 5 rounds. Ratio: p99 with the share / p99 alone (target ≤ 1.5).
 * (b) `flushTenant` (Redis) of a tenant holding 1,000 keys and of one holding `--keys` keys: median
 *     of 200 flushes each. Ratio ≈ 1 means O(1).
 * (c) jobs (pg-boss, 4 workers, at most 3 of one tenant — the default share — each job `--job-ms` of work): a quiet tenant sends one job at a time
 *     and the time from send to its handler is taken — alone, then behind a noisy tenant's
 *     `--backlog` queued jobs, `--quiet-jobs` (400) of each: the p99 of 100 would be the worst
 *     but one, a single stall of the machine. Ratio: p99 behind the backlog / p99 alone (target ≤ 2).
 * The machine is shared and noisy: compare ratios, not absolute times.
 * The last line is one JSON object with quiet_upload_p99_ratio, flush_1m_vs_1k_ratio, quiet_job_p99_ratio.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { parseArgs } from 'node:util'
import { Redis } from 'ioredis'
import { createTenantry, withTenant, type Tenant, type Tenantry } from '../src/index.ts'
import { DEMO_MIGRATIONS } from '../test/helpers/backends.ts'
import { printTable, round } from './lib/load.ts'
import { DEFAULT_PG_URL, cleanupPrefix, connectAdmin, intFlag, percentiles, redact, withDatabase } from './provision.ts'

const DATABASE = 'tenantry_bench_resources'
const PREFIX = 'tb_res'
const log = (msg: string) => process.stderr.write(`[resources] ${msg}\n`)
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** `bytes` of data in 64 kB chunks, produced as fast as the consumer reads. */
function bytes(n: number): Readable {
  const chunk = Buffer.alloc(64 * 1024, 7)
  let left = n
  return new Readable({
    read() {
      if (left <= 0) { this.push(null); return }
      const c = left >= chunk.length ? chunk : chunk.subarray(0, left)
      left -= c.length
      this.push(c)
    },
  })
}

async function quietUploads(tenantry: Tenantry, quiet: Tenant, n: number): Promise<number[]> {
  const out: number[] = []
  await withTenant(quiet, async () => {
    for (let i = 0; i < n; i++) {
      const t0 = performance.now()
      await tenantry.storage.put(`quiet/${i % 10}`, bytes(64 * 1024), { size: 64 * 1024 })
      out.push(performance.now() - t0)
    }
  })
  return out
}

/** `streams` uploaders of the noisy tenant, each putting 4 MB objects back to back until stopped. */
function noisyUploads(tenantry: Tenantry, noisy: Tenant, streams: number): { stop(): Promise<number> } {
  let stopped = false
  let done = 0
  const loops = Array.from({ length: streams }, (_, s) => withTenant(noisy, async () => {
    for (let i = 0; !stopped; i++) {
      await tenantry.storage.put(`noisy/${s}/${i % 4}`, bytes(4 * 1024 * 1024))
      done++
    }
  }))
  return {
    async stop() {
      stopped = true
      await Promise.all(loops)
      return done
    },
  }
}

/**
 * The three phases run interleaved, in `rounds` rounds (alone, beside the noisy tenant without a
 * share, beside it with the share), so the machine's background load falls on all three alike.
 */
async function uploadFigure(tenantry: Tenantry, t: Record<string, Tenant>, n: number, streams: number, rounds = 5) {
  await quietUploads(tenantry, t.quiet!, 20) // warm-up
  const per = Math.max(1, Math.round(n / rounds))
  const solo: number[] = []
  const open: number[] = []
  const shared: number[] = []
  let openDone = 0
  let sharedDone = 0
  const beside = async (noisy: Tenant, out: number[]) => {
    const load = noisyUploads(tenantry, noisy, streams)
    await sleep(300)
    out.push(...(await quietUploads(tenantry, t.quiet!, per)))
    return load.stop()
  }
  for (let r = 0; r < rounds; r++) {
    solo.push(...(await quietUploads(tenantry, t.quiet!, per)))
    openDone += await beside(t.noisyOpen!, open)
    sharedDone += await beside(t.noisyShared!, shared)
  }
  const res = { solo: percentiles(solo), open: { lat: percentiles(open), noisyDone: openDone }, shared: { lat: percentiles(shared), noisyDone: sharedDone } }
  log(`uploads alone: p50 ${res.solo.p50.toFixed(1)} ms, p99 ${res.solo.p99.toFixed(1)} ms`)
  log(`beside a noisy tenant without a share: p50 ${res.open.lat.p50.toFixed(1)} ms, p99 ${res.open.lat.p99.toFixed(1)} ms (${openDone} noisy uploads of 4 MB)`)
  log(`beside a noisy tenant with the share: p50 ${res.shared.lat.p50.toFixed(1)} ms, p99 ${res.shared.lat.p99.toFixed(1)} ms (${sharedDone} noisy uploads of 4 MB)`)
  return res
}

async function flushFigure(tenantry: Tenantry, t: Record<string, Tenant>, redis: Redis | null, keys: number) {
  const fill = async (tenant: Tenant, n: number) => {
    if (redis) {
      // Written straight into Redis in the cache's key layout (the tenant's current generation:
      // provisioning moved it on), 10,000 per pipeline.
      const gen = (await redis.get(`bench:cache:{${tenant.id}}:gen`)) ?? '0'
      for (let i = 0; i < n; i += 10_000) {
        const p = redis.pipeline()
        for (let j = i; j < Math.min(n, i + 10_000); j++) p.set(`bench:cache:{${tenant.id}}:${gen}:kkey-${j}`, '"v"', 'PX', 3_600_000)
        await p.exec()
      }
    } else {
      await withTenant(tenant, async () => { for (let i = 0; i < n; i++) await tenantry.cache.set(`key-${i}`, 'v') })
    }
  }
  const time = async (tenant: Tenant) => {
    const out: number[] = []
    for (let i = 0; i < 200; i++) {
      const t0 = performance.now()
      await tenantry.cache.flushTenant(tenant)
      out.push(performance.now() - t0)
    }
    return percentiles(out)
  }
  let t0 = performance.now()
  await fill(t.small!, 1000)
  await fill(t.big!, keys)
  log(`cache filled: 1,000 + ${keys.toLocaleString('en')} keys in ${((performance.now() - t0) / 1000).toFixed(1)} s${redis ? ` (Redis dbsize ${await redis.dbsize()})` : ''}`)
  // The keys are really there and really the tenant's: a read hits before the flush, misses after.
  const hit = await withTenant(t.big!, () => tenantry.cache.get(`key-${keys - 1}`))
  if (hit !== 'v') throw new Error(`the filled key was not read back (got ${String(hit)})`)
  t0 = performance.now()
  await time(t.small!) // warm-up
  const small = await time(t.small!)
  const big = await time(t.big!)
  const after = await withTenant(t.big!, () => tenantry.cache.get(`key-${keys - 1}`))
  if (after !== undefined) throw new Error('flushTenant left a key readable')
  log(`flushTenant: 1,000 keys median ${small.p50.toFixed(3)} ms; ${keys.toLocaleString('en')} keys median ${big.p50.toFixed(3)} ms`)
  return { small, big }
}

async function jobFigure(tenantry: Tenantry, t: Record<string, Tenant>, backlog: number, quietJobs: number, jobMs: number) {
  const started = new Map<string, number>()
  let noisyRan = 0
  const stop = await tenantry.jobs.work<{ quiet?: boolean }>('bench', async (job) => {
    if (job.data.quiet) started.set(job.id, performance.now())
    else noisyRan++
    await sleep(jobMs)
  }, { concurrency: 4 })
  const quietRound = async (n: number) => {
    const out: number[] = []
    for (let i = 0; i < n; i++) {
      const t0 = performance.now()
      const id = await withTenant(t.quiet!, () => tenantry.jobs.send('bench', { quiet: true }))
      while (!started.has(id)) await sleep(1)
      out.push(started.get(id)! - t0)
    }
    return percentiles(out)
  }
  await quietRound(10) // warm-up
  const solo = await quietRound(quietJobs)
  log(`quiet jobs alone: p50 ${solo.p50.toFixed(1)} ms, p99 ${solo.p99.toFixed(1)} ms`)
  const t0 = performance.now()
  for (let i = 0; i < backlog; i += 1000) {
    await withTenant(t.noisyOpen!, () => tenantry.jobs.sendMany('bench', Array.from({ length: Math.min(1000, backlog - i) }, (_, j) => ({ n: i + j }))))
  }
  log(`noisy backlog of ${backlog} jobs sent in ${((performance.now() - t0) / 1000).toFixed(1)} s`)
  const before = noisyRan
  const behind = await quietRound(quietJobs)
  const ranMeanwhile = noisyRan - before
  log(`quiet jobs behind the backlog: p50 ${behind.p50.toFixed(1)} ms, p99 ${behind.p99.toFixed(1)} ms (${ranMeanwhile} noisy jobs ran meanwhile, ${backlog - noisyRan} still queued)`)
  await stop()
  return { solo, behind, ranMeanwhile, stillQueued: backlog - noisyRan }
}

export default async function run(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      uploads: { type: 'string' }, 'noisy-streams': { type: 'string' }, keys: { type: 'string' },
      backlog: { type: 'string' }, 'quiet-jobs': { type: 'string' }, 'job-ms': { type: 'string' },
      only: { type: 'string' },
    },
  })
  const uploads = intFlag('uploads', values.uploads, 200)
  const streams = intFlag('noisy-streams', values['noisy-streams'], 32)
  const keys = intFlag('keys', values.keys, 1_000_000)
  const backlog = intFlag('backlog', values.backlog, 10_000)
  const quietJobs = intFlag('quiet-jobs', values['quiet-jobs'], 400)
  const jobMs = intFlag('job-ms', values['job-ms'], 2, 0)
  // While developing: `--only jobs` (or uploads, flush; comma-separated) runs just those figures.
  const only = new Set((values.only ?? 'uploads,flush,jobs').split(','))
  for (const o of only) if (!['uploads', 'flush', 'jobs'].includes(o)) { log(`--only takes uploads, flush, jobs; got '${o}'`); return 2 }

  const adminUrl = process.env.BENCH_PG_URL ?? DEFAULT_PG_URL
  const admin = await connectAdmin('resources', adminUrl)
  if (!admin) return 1
  const redisUrl = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379'
  let redis: Redis | null = new Redis(`${redisUrl.replace(/\/\d*$/, '')}/15`, { maxRetriesPerRequest: 1, lazyConnect: true })
  redis.on('error', () => undefined)
  try {
    await redis.connect()
    await redis.flushdb()
  } catch {
    log(`Redis at ${redisUrl} is not reachable: the flush figure uses the in-memory LRU`)
    redis.disconnect()
    redis = null
  }
  await cleanupPrefix(admin, DATABASE, PREFIX)
  await admin.query(`CREATE DATABASE ${DATABASE}`)
  const dir = mkdtempSync(join(tmpdir(), 'tenantry-bench-resources-'))
  log(`PostgreSQL ${redact(adminUrl)}, Redis ${redis ? `${redisUrl} db 15` : 'none'}, storage ${dir}`)
  let tenantry: Tenantry | undefined
  try {
    tenantry = await createTenantry({
      databaseUrl: withDatabase(adminUrl, DATABASE), rolePrefix: PREFIX, migrations: DEMO_MIGRATIONS,
      guard: { redis: null }, observe: { metering: false, tracing: false, metrics: false },
      cache: redis ? { redis: `${redisUrl.replace(/\/\d*$/, '')}/15`, keyPrefix: 'bench:cache' } : { redis: null, maxEntries: keys + 2000 },
      storage: {
        driver: 'local', directory: dir,
        plans: {
          open: { uploadConcurrency: 100_000, uploadBytesInFlight: null },
          shared: { uploadConcurrency: 2, uploadBytesInFlight: 2 * 1024 * 1024, uploadBytesPerSecond: 16 * 1024 * 1024, uploadQueueTimeoutMs: 3_600_000 },
        },
      },
      jobs: { pollIntervalMs: 200, scheduleIntervalMs: 0 },
    })
    await tenantry.migrate()
    for (const plan of ['open', 'shared']) await tenantry.catalog.upsertPlan({ name: plan, settings: {} })
    const t: Record<string, Tenant> = {}
    t.quiet = await tenantry.provision({ slug: 'quiet', tier: 'pooled' })
    t.noisyOpen = await tenantry.provision({ slug: 'noisy-open', tier: 'pooled', plan: 'open' })
    t.noisyShared = await tenantry.provision({ slug: 'noisy-shared', tier: 'pooled', plan: 'shared' })
    t.small = await tenantry.provision({ slug: 'cache-1k', tier: 'pooled' })
    t.big = await tenantry.provision({ slug: 'cache-1m', tier: 'pooled' })

    const skipped = { p50: NaN, p99: NaN }
    // Jobs first: their latencies are not to pay for the garbage of a million cache writes and
    // hundreds of 4 MB uploads (a later figure's collections would land in them).
    log(`(c) jobs: ${quietJobs} quiet jobs alone and behind ${backlog} noisy jobs, ${jobMs} ms each, 4 workers`)
    const jb = only.has('jobs') ? await jobFigure(tenantry, t, backlog, quietJobs, jobMs) : { solo: skipped, behind: skipped, ranMeanwhile: 0, stillQueued: 0 }
    log(`(a) uploads: ${uploads} quiet uploads of 64 kB per phase, ${streams} noisy streams of 4 MB uploads`)
    const up = only.has('uploads') ? await uploadFigure(tenantry, t, uploads, streams) : { solo: skipped, open: { lat: skipped, noisyDone: 0 }, shared: { lat: skipped, noisyDone: 0 } }
    log(`(b) flushTenant: 1,000 vs ${keys.toLocaleString('en')} keys`)
    const fl = only.has('flush') ? await flushFigure(tenantry, t, redis, keys) : { small: skipped, big: skipped }

    const ms = (n: number) => round(n, 2)
    printTable(['figure', 'baseline', 'under load', 'ratio'], [
      ['quiet upload p99, noisy uploader WITHOUT share (ms)', ms(up.solo.p99), ms(up.open.lat.p99), round(up.open.lat.p99 / up.solo.p99, 2)],
      ['quiet upload p99, noisy uploader WITH share (ms)', ms(up.solo.p99), ms(up.shared.lat.p99), round(up.shared.lat.p99 / up.solo.p99, 2)],
      ['quiet upload p50, noisy uploader WITHOUT share (ms)', ms(up.solo.p50), ms(up.open.lat.p50), round(up.open.lat.p50 / up.solo.p50, 2)],
      ['quiet upload p50, noisy uploader WITH share (ms)', ms(up.solo.p50), ms(up.shared.lat.p50), round(up.shared.lat.p50 / up.solo.p50, 2)],
      [`flushTenant median, 1,000 vs ${keys.toLocaleString('en')} keys (ms)`, round(fl.small.p50, 3), round(fl.big.p50, 3), round(fl.big.p50 / fl.small.p50, 2)],
      [`quiet job p99 (send → handler), behind ${backlog} queued (ms)`, ms(jb.solo.p99), ms(jb.behind.p99), round(jb.behind.p99 / jb.solo.p99, 2)],
    ], (l) => process.stderr.write(`${l}\n`))
    console.log(JSON.stringify({
      quiet_upload_p99_ratio: round(up.shared.lat.p99 / up.solo.p99, 2),
      quiet_upload_p99_ratio_without_share: round(up.open.lat.p99 / up.solo.p99, 2),
      quiet_upload_p50_ratio: round(up.shared.lat.p50 / up.solo.p50, 2),
      quiet_upload_p50_ratio_without_share: round(up.open.lat.p50 / up.solo.p50, 2),
      quiet_upload_p99_solo_ms: ms(up.solo.p99),
      quiet_upload_p99_with_share_ms: ms(up.shared.lat.p99),
      quiet_upload_p99_without_share_ms: ms(up.open.lat.p99),
      noisy_uploads_with_share: up.shared.noisyDone,
      noisy_uploads_without_share: up.open.noisyDone,
      flush_1m_vs_1k_ratio: round(fl.big.p50 / fl.small.p50, 2),
      flush_1k_median_ms: round(fl.small.p50, 3),
      flush_1m_median_ms: round(fl.big.p50, 3),
      flush_keys: keys,
      flush_store: redis ? 'redis' : 'memory',
      quiet_job_p99_ratio: round(jb.behind.p99 / jb.solo.p99, 2),
      quiet_job_p99_solo_ms: ms(jb.solo.p99),
      quiet_job_p99_behind_backlog_ms: ms(jb.behind.p99),
      backlog,
      noisy_jobs_still_queued: jb.stillQueued,
    }))
    return 0
  } finally {
    await tenantry?.close().catch(() => undefined)
    if (redis) { await redis.flushdb().catch(() => undefined); redis.disconnect() }
    await cleanupPrefix(admin, DATABASE, PREFIX).catch(() => undefined)
    await admin.end()
    rmSync(dir, { recursive: true, force: true })
  }
}
