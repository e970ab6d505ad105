/**
 * Observability's CPU per request split in two: the OpenTelemetry SDK's span, and Tenantry's part with that span held equal.
 *
 * `npm run bench -- observe-split [--sets 3] [--processes 2] [--rounds 8] [--requests 4000] [--warmup 20000] [--pool 10] [--tenants 20] [--keep]`
 *
 * `bench/observe.ts` compares the demo app with all of issue 11's observability on against the
 * same app with it off, over HTTP at full load; its ratio mixes two costs. This one tells them
 * apart, in CPU time per request, with three variants of the same app (bench/fixtures/observe-inject.ts):
 * - `off`: observability off, the app logging its requests through a plain pino logger;
 * - `span`: `off` with the OpenTelemetry SDK registered and one span per request made by the app
 *   itself (Fastify hooks; the statement span's name, kind and four attributes): an app that is
 *   traced anyway, Tenantry's observability still off;
 * - `on`: everything on, as `bench/observe.ts`' `on` (the SDK, Tenantry's logger with the tenant
 *   on each line, metrics, tracing, metering).
 * `span` − `off` is what the SDK's one span per request costs in the server, whoever makes it;
 * `on` − `span` is Tenantry's part. Each is set against the budget of the 0.95× req/s target:
 * `off`'s CPU per request × (1/0.95 − 1).
 *
 * Why in process and in CPU time: each variant is driven by `app.inject()` (no HTTP sockets, no
 * load generator on the same two cores), and the measure is the process's CPU time per request,
 * which other processes disturb far less than wall time. Why several processes and sets: a
 * process keeps, for its whole life, a speed of its own (the same variant measured 125–176 µs per
 * request in different processes of one run), so each variant runs in `--processes` processes at
 * once, replaced by fresh ones `--sets` times; within a set, blocks of `--requests` requests go
 * to every process in turn (the order reversed every round), so the host's drift falls on all
 * variants alike. Ratios are medians over all rounds of each round's variant means.
 *
 * Prints a table, then as the last line one JSON object with the figures.
 */
import { fork, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve as resolvePath } from 'node:path'
import { parseArgs } from 'node:util'
import { connectBenchAdmin, dropBenchLeftovers, withDatabase } from './lib/bench-db.ts'
import { REPO_ROOT, intFlag, median, printTable, round } from './lib/load.ts'
import { setup } from './observe.ts'

const DATABASE = 'tenantry_bench_observe_split'
const ROLE_PREFIX = 'tb_obsplit'
const CHILD = 'bench/fixtures/observe-inject.ts'
const TARGET_RPS_RATIO = 0.95
const VARIANTS = ['off', 'span', 'on'] as const
type Variant = (typeof VARIANTS)[number]

interface Block { cpuUs: number; mainUs: number; syscalls: number }
interface Worker { variant: Variant; set: number; index: number; child: ChildProcess; blocks: Block[] }

const log = (msg: string) => process.stderr.write(`[observe-split] ${msg}\n`)

function usage(): string {
  return [
    'usage: npm run bench -- observe-split [--sets N] [--processes N] [--rounds N] [--requests N] [--warmup N] [--pool N] [--tenants N] [--keep]',
    '  --sets 3         fresh processes this many times      --processes 2   processes per variant at once',
    '  --rounds 8       rounds per set (each process runs one block per round)',
    '  --requests 4000  requests per block                   --warmup 20000  requests each process runs before measuring',
    '  --pool 10        connections per process              --tenants 20    pooled tenants (1,000 projects each)',
    '  --keep           leave the bench database and roles',
  ].join('\n')
}

/** A message of `type` from `child`, or a rejection when it exits first. */
function message<T>(child: ChildProcess, type: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const onMessage = (m: { type?: string }) => {
      if (m?.type !== type) return
      cleanup()
      resolve(m as T)
    }
    const onExit = (code: number | null) => {
      cleanup()
      reject(new Error(`${CHILD} exited (code ${code}) before '${type}'`))
    }
    const cleanup = () => {
      child.off('message', onMessage)
      child.off('exit', onExit)
    }
    child.on('message', onMessage)
    child.once('exit', onExit)
  })
}

export default async function observeSplit(args: string[]): Promise<number> {
  let sets: number, processes: number, rounds: number, requests: number, warmup: number, pool: number, tenants: number
  let keep = false
  try {
    const { values } = parseArgs({
      args,
      options: {
        sets: { type: 'string' }, processes: { type: 'string' }, rounds: { type: 'string' }, requests: { type: 'string' },
        warmup: { type: 'string' }, pool: { type: 'string' }, tenants: { type: 'string' }, keep: { type: 'boolean' },
      },
    })
    sets = intFlag('sets', values.sets, 3, usage())
    processes = intFlag('processes', values.processes, 2, usage())
    rounds = intFlag('rounds', values.rounds, 8, usage())
    requests = intFlag('requests', values.requests, 4000, usage())
    warmup = intFlag('warmup', values.warmup, 20_000, usage())
    pool = intFlag('pool', values.pool, 10, usage())
    tenants = intFlag('tenants', values.tenants, 20, usage())
    keep = values.keep === true
  } catch (err) {
    console.error((err as Error).message)
    return 2
  }

  const bench = await connectBenchAdmin('observe-split')
  if (!bench) return 1
  const { admin, adminUrl } = bench
  const logDir = mkdtempSync(join(tmpdir(), 'tenantry-bench-observe-split-'))
  const workers: Worker[] = []
  const stopAll = () => {
    for (const w of workers) if (w.child.connected) w.child.disconnect()
  }
  try {
    const stale = await dropBenchLeftovers(admin, DATABASE, ROLE_PREFIX)
    if (stale.length) log(`removed leftovers of an earlier run: ${stale.join(', ')}`)
    log(`setting up ${DATABASE}: ${tenants} pooled tenants with 1,000 projects each…`)
    await setup(adminUrl, admin, pool, tenants, DATABASE, ROLE_PREFIX)
    const env = {
      ...process.env,
      BENCH_DB_URL: withDatabase(adminUrl, DATABASE),
      BENCH_MIGRATIONS: resolvePath(REPO_ROOT, 'demo/migrations'),
      BENCH_ROLE_PREFIX: ROLE_PREFIX,
      BENCH_POOL: String(pool),
      BENCH_WARMUP: String(warmup),
    }
    // Per round: each variant's mean over its processes.
    const roundMeans: Record<Variant, Block>[] = []
    for (let set = 0; set < sets; set++) {
      const current: Worker[] = []
      // Started one after another: warming up at once, they would starve each other's pools.
      for (let index = 0; index < processes; index++) {
        for (const variant of VARIANTS) {
          const child = fork(resolvePath(REPO_ROOT, CHILD), [], {
            execArgv: ['--import', 'tsx'],
            env: { ...env, BENCH_VARIANT: variant, BENCH_LOG_FILE: join(logDir, `${variant}-${set}-${index}.log`) },
            stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
          })
          const w: Worker = { variant, set, index, child, blocks: [] }
          workers.push(w)
          current.push(w)
          await message(child, 'ready')
        }
      }
      log(`set ${set + 1} of ${sets}: ${current.length} processes warmed up (${warmup} requests each); ${rounds} rounds of ${requests} requests per process`)
      for (let r = 0; r < rounds; r++) {
        const order = r % 2 === 0 ? current : [...current].reverse()
        for (const w of order) {
          const reply = message<{ cpuUs: number; mainUs: number; syscalls: number }>(w.child, 'ran')
          w.child.send({ type: 'run', requests })
          const m = await reply
          w.blocks.push({ cpuUs: m.cpuUs, mainUs: m.mainUs, syscalls: m.syscalls })
        }
        const means = {} as Record<Variant, Block>
        for (const v of VARIANTS) {
          const bs = current.filter((w) => w.variant === v).map((w) => w.blocks[r])
          const mean = (f: (b: Block) => number) => bs.reduce((s, b) => s + f(b), 0) / bs.length
          means[v] = { cpuUs: mean((b) => b.cpuUs), mainUs: mean((b) => b.mainUs), syscalls: mean((b) => b.syscalls) }
        }
        roundMeans.push(means)
      }
      for (const w of current) w.child.disconnect()
    }

    const ratio = (a: Variant, b: Variant, f: (x: Block) => number) => median(roundMeans.map((m) => f(m[a]) / f(m[b])))
    const ratioRange = (a: Variant, b: Variant) => {
      const rs = roundMeans.map((m) => m[a].cpuUs / m[b].cpuUs)
      return `${Math.min(...rs).toFixed(2)}–${Math.max(...rs).toFixed(2)}`
    }
    const diff = (a: Variant, b: Variant) => median(roundMeans.map((m) => m[a].cpuUs - m[b].cpuUs))
    const us = (v: Variant, f: (x: Block) => number) => median(roundMeans.map((m) => f(m[v])))
    const offUs = us('off', (b) => b.cpuUs)
    const budgetUs = offUs * (1 / TARGET_RPS_RATIO - 1)
    const sdkUs = diff('span', 'off')
    const tenantryUs = diff('on', 'span')

    console.log(`\nCPU time per request, in process (app.inject, 50 in flight), ${sets} sets × ${processes} processes per variant × ${rounds} rounds × ${requests} requests`)
    printTable(
      ['variant', 'CPU µs/req', 'main thread µs', 'syscalls/req', 'process medians (µs/req)'],
      VARIANTS.map((v) => [
        v,
        round(us(v, (b) => b.cpuUs), 1),
        round(us(v, (b) => b.mainUs), 1),
        round(us(v, (b) => b.syscalls), 2),
        workers.filter((w) => w.variant === v).map((w) => median(w.blocks.map((b) => b.cpuUs)).toFixed(0)).join(' '),
      ]),
    )
    console.log('')
    printTable(
      ['comparison', 'CPU ratio (median)', 'rounds', 'main-thread ratio', 'µs/req (median diff)', 'of the budget'],
      [
        ['span / off: the SDK\'s one span per request', round(ratio('span', 'off', (b) => b.cpuUs), 3), ratioRange('span', 'off'), round(ratio('span', 'off', (b) => b.mainUs), 3), round(sdkUs, 1), `${Math.round((100 * sdkUs) / budgetUs)} %`],
        ['on / span: Tenantry\'s part, the span held equal', round(ratio('on', 'span', (b) => b.cpuUs), 3), ratioRange('on', 'span'), round(ratio('on', 'span', (b) => b.mainUs), 3), round(tenantryUs, 1), `${Math.round((100 * tenantryUs) / budgetUs)} %`],
        ['on / off: all of it', round(ratio('on', 'off', (b) => b.cpuUs), 3), ratioRange('on', 'off'), round(ratio('on', 'off', (b) => b.mainUs), 3), round(diff('on', 'off'), 1), `${Math.round((100 * diff('on', 'off')) / budgetUs)} %`],
      ],
    )
    console.log(`\nbudget of the ${TARGET_RPS_RATIO}× req/s target: off's ${offUs.toFixed(1)} µs × (1/${TARGET_RPS_RATIO} − 1) = ${budgetUs.toFixed(1)} µs per request`)
    console.log(JSON.stringify({
      split_on_off_cpu_ratio: round(ratio('on', 'off', (b) => b.cpuUs), 3),
      split_span_off_cpu_ratio: round(ratio('span', 'off', (b) => b.cpuUs), 3),
      split_on_span_cpu_ratio: round(ratio('on', 'span', (b) => b.cpuUs), 3),
      off_us: round(offUs, 1),
      span_us: round(us('span', (b) => b.cpuUs), 1),
      on_us: round(us('on', (b) => b.cpuUs), 1),
      sdk_span_us: round(sdkUs, 1),
      tenantry_us: round(tenantryUs, 1),
      budget_us: round(budgetUs, 1),
      sets, processes, rounds, requests,
    }))
    return 0
  } finally {
    stopAll()
    rmSync(logDir, { recursive: true, force: true })
    if (!keep) await dropBenchLeftovers(admin, DATABASE, ROLE_PREFIX).catch(() => undefined)
    await admin.end().catch(() => undefined)
  }
}
