/**
 * Shared helpers of the benchmarks: a server under test in its own child process, load from
 * ANOTHER child process (autocannon), CPU accounting of both and of PostgreSQL, and table output.
 *
 * The load generator must not share an event loop with the server: a benchmark that runs
 * autocannon in the server's process measures the two competing for one thread. So this file is
 * also the entry point of the load child: `fork(load.ts, ['--load-worker'])`, one job over IPC.
 */
import { fork, type ChildProcess } from 'node:child_process'
import type { EventEmitter } from 'node:events'
import type autocannon from 'autocannon'
import { readFileSync, readdirSync } from 'node:fs'
import { dirname, resolve as resolvePath } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

/** Root of the repository (two levels above this file). */
export const REPO_ROOT = resolvePath(dirname(fileURLToPath(import.meta.url)), '..', '..')

// ─── child processes ─────────────────────────────────────────────────────────────────────────────

const live = new Set<ChildProcess>()

/** Kill every child still running (on SIGINT, or when a benchmark throws). */
export function killChildren(): void {
  for (const c of live) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
  live.clear()
}

function forkTs(script: string, args: string[], env: Record<string, string>, nodeArgs: string[] = []): ChildProcess {
  const child = fork(script, args, {
    cwd: REPO_ROOT,
    // tsx as an import hook: the child runs TypeScript like the parent, without the tsx CLI's
    // extra watcher process in between.
    execArgv: ['--import', 'tsx', ...nodeArgs],
    env: { ...process.env, ...env },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  live.add(child)
  child.once('exit', () => live.delete(child))
  return child
}

function onceMessage<T>(child: ChildProcess, what: string, timeoutMs: number, match: (m: any) => boolean): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => done(new Error(`${what}: no answer within ${timeoutMs} ms`)), timeoutMs)
    const onMessage = (m: unknown) => { if (match(m)) done(undefined, m as T) }
    const onExit = (code: number | null, signal: string | null) => done(new Error(`${what}: child exited (code ${code}, signal ${signal}) before answering`))
    function done(err?: Error, value?: T) {
      clearTimeout(timer)
      child.off('message', onMessage)
      child.off('exit', onExit)
      if (err) reject(err)
      else resolve(value as T)
    }
    child.on('message', onMessage)
    child.once('exit', onExit)
  })
}

/** A server under test, running in a child process. */
export interface ServerChild {
  pid: number
  port: number
  url: string
  /** What the server reported when it was ready (e.g. its configuration). */
  info: Record<string, unknown>
  /** Ask the server to report and shut down; resolves with its final report. */
  stop(): Promise<Record<string, unknown>>
}

/**
 * Start `script` (a TypeScript file) as a server in a child process. The child must listen on
 * 127.0.0.1, then `process.send({ type: 'ready', port, ...info })`; on `{ type: 'stop' }` it must
 * `process.send({ type: 'stopped', ...report })` and exit.
 *
 * `BENCH_SERVER_NODE_ARGS` adds Node options to the server only (they cannot all go through
 * NODE_OPTIONS), e.g. `BENCH_SERVER_NODE_ARGS='--cpu-prof --cpu-prof-dir=/tmp/prof'`.
 *
 * @example
 * ```ts
 * const server = await startServer('bench/fixtures/routing-server.ts', { BENCH_MODE: 'baseline' })
 * try { … } finally { await server.stop() }
 * ```
 */
export async function startServer(script: string, env: Record<string, string>, timeoutMs = 120_000): Promise<ServerChild> {
  const nodeArgs = (process.env.BENCH_SERVER_NODE_ARGS ?? '').split(/\s+/).filter(Boolean)
  const child = forkTs(resolvePath(REPO_ROOT, script), [], env, nodeArgs)
  const ready = await onceMessage<{ port: number } & Record<string, unknown>>(child, `server ${script}`, timeoutMs, (m) => m?.type === 'ready').catch((err) => {
    child.kill('SIGKILL')
    throw err
  })
  const { type: _type, port, ...info } = ready as { type: string; port: number } & Record<string, unknown>
  return {
    pid: child.pid!,
    port,
    url: `http://127.0.0.1:${port}`,
    info,
    async stop() {
      if (child.exitCode !== null) return {}
      const exited = new Promise<void>((r) => child.once('exit', () => r()))
      const stopped = onceMessage<Record<string, unknown>>(child, `stopping ${script}`, 15_000, (m) => m?.type === 'stopped').catch(() => ({}))
      child.send({ type: 'stop' })
      const report = await stopped
      const kill = setTimeout(() => child.kill('SIGKILL'), 5_000)
      await exited
      clearTimeout(kill)
      const { type: _t, ...rest } = report as Record<string, unknown>
      return rest
    },
  }
}

// ─── load generation ─────────────────────────────────────────────────────────────────────────────

/** One load run: a warm-up (discarded) and then the measured run, both against `url`. */
export interface LoadJob {
  url: string
  /** Request sequence every connection cycles through (path and headers). */
  requests: { path: string; headers?: Record<string, string> }[]
  connections: number
  /** Seconds of discarded warm-up load before the measurement. 0 for none. */
  warmupSeconds: number
  durationSeconds: number
  /** Requests per second over all connections (autocannon's `overallRate`); absent: as fast as answered (closed loop). */
  rate?: number
}

/** What a measured run produced. Latencies are in milliseconds, exact (not autocannon's integer buckets). */
export interface LoadResult {
  rps: number
  requests: number
  durationSeconds: number
  latency: { mean: number; p50: number; p90: number; p99: number; p999: number; max: number }
  /** Socket errors, timeouts, and responses outside 2xx. All three must be 0 for a valid run. */
  errors: number
  timeouts: number
  non2xx: number
  statusCodes: Record<string, number>
  /** Seconds the warm-up ran, and what it served (a sanity check that it did run). */
  warmup: { requests: number; errors: number; non2xx: number }
}

/** CPU used during the measured run, in cores (CPU seconds per wall-clock second). */
export interface CpuShare {
  server: number
  load: number
  postgres: number
  /** Every busy CPU on the machine, including work that is not this benchmark's. */
  machine: number
  /** machine − (server + load + postgres): other processes on the machine during the run. */
  other: number
  cores: number
}

/**
 * Run `job` from a separate child process, sampling the CPU of `pids.server`, the load process and
 * the PostgreSQL backends whose command line names `postgresDatabase` while the measured part runs.
 *
 * @example
 * ```ts
 * const { result, cpu } = await runLoad({ url, requests: [{ path: '/api/projects/1' }], connections: 50, warmupSeconds: 3, durationSeconds: 10 }, { server: pid, postgresDatabase: 'bench' })
 * ```
 */
export async function runLoad(job: LoadJob, watch: { server: number; postgresDatabase: string }): Promise<{ result: LoadResult; cpu: CpuShare }> {
  const child = forkTs(fileURLToPath(import.meta.url), ['--load-worker'], {})
  try {
    // Generous: on an overloaded machine starting a tsx child alone can take tens of seconds.
    const budget = (job.warmupSeconds + job.durationSeconds) * 1000 + 120_000
    const measuring = onceMessage(child, 'load generator', budget, (m) => m?.type === 'measuring')
    const finished = onceMessage<{ result: LoadResult }>(child, 'load generator', budget, (m) => m?.type === 'result')
    finished.catch(() => undefined)
    child.send({ type: 'job', job })
    await measuring
    const sampler = startCpuSampler({ server: watch.server, load: child.pid! }, watch.postgresDatabase)
    const { result } = await finished
    const cpu = sampler.stop()
    return { result, cpu }
  } finally {
    if (child.exitCode === null) child.kill('SIGTERM')
  }
}

async function loadWorker(): Promise<void> {
  const { default: run } = await import('autocannon')
  const job = await new Promise<LoadJob>((resolve) => process.once('message', (m: any) => resolve(m.job)))
  const requests = job.requests.map((r) => ({ method: 'GET' as const, path: r.path, headers: r.headers }))
  const common = { url: job.url, connections: job.connections, pipelining: 1, requests, timeout: 10, ...(job.rate ? { overallRate: job.rate } : {}) }

  let warm = { requests: 0, errors: 0, non2xx: 0 }
  if (job.warmupSeconds > 0) {
    const w = await run({ ...common, duration: job.warmupSeconds })
    warm = { requests: w.requests.total, errors: w.errors, non2xx: w.non2xx }
  }

  let latencies = new Float64Array(1 << 16)
  let n = 0
  process.send!({ type: 'measuring' })
  // Without a callback autocannon returns its tracker (an EventEmitter) made thenable; the
  // type declaration only knows the promise half.
  const instance = run({ ...common, duration: job.durationSeconds }) as unknown as EventEmitter & PromiseLike<autocannon.Result>
  instance.on('response', (_client: unknown, statusCode: number, _bytes: number, responseTime: number) => {
    if (statusCode < 200 || statusCode >= 300) return
    if (n === latencies.length) {
      const grown = new Float64Array(latencies.length * 2)
      grown.set(latencies)
      latencies = grown
    }
    latencies[n++] = responseTime
  })
  const r = await instance
  const sorted = latencies.subarray(0, n).sort()
  const q = (p: number) => (n === 0 ? NaN : sorted[Math.min(n - 1, Math.ceil((p / 100) * n) - 1)])
  let sum = 0
  for (let i = 0; i < n; i++) sum += sorted[i]
  const statusCodes: Record<string, number> = {}
  for (const [code, v] of Object.entries(r.statusCodeStats ?? {})) statusCodes[code] = (v as { count: number }).count
  const result: LoadResult = {
    rps: r.requests.total / r.duration,
    requests: r.requests.total,
    durationSeconds: r.duration,
    latency: { mean: n ? sum / n : NaN, p50: q(50), p90: q(90), p99: q(99), p999: q(99.9), max: n ? sorted[n - 1] : NaN },
    errors: r.errors,
    timeouts: r.timeouts,
    non2xx: r.non2xx,
    statusCodes,
    warmup: warm,
  }
  process.send!({ type: 'result', result }, () => process.exit(0))
}

// ─── CPU accounting (Linux /proc) ────────────────────────────────────────────────────────────────

const TICKS_PER_SECOND = 100 // USER_HZ; `getconf CLK_TCK` is 100 on every Linux of today

function procTicks(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // Fields after the command name, which is in parentheses and may contain spaces.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return Number(f[11]) + Number(f[12]) // utime + stime (fields 14 and 15)
  } catch {
    return null
  }
}

function machineTicks(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]
  const v = line.trim().split(/\s+/).slice(1).map(Number)
  const total = v.slice(0, 8).reduce((a, b) => a + b, 0)
  return { busy: total - v[3] - v[4], total } // minus idle and iowait
}

function postgresBackends(database: string): number[] {
  const pids: number[] = []
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      if (readFileSync(`/proc/${entry}/comm`, 'utf8').trim() !== 'postgres') continue
      // Backend titles read "postgres: 15/main: <user> <database> <client> <state>".
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(` ${database} `)) pids.push(Number(entry))
    } catch {
      // gone in between
    }
  }
  return pids
}

/**
 * Sample CPU ticks every 200 ms until `stop()`. Backends that appear during the window count from
 * zero (they were born in it); those that exit count up to their last sample.
 */
export function startCpuSampler(pids: { server: number; load: number }, postgresDatabase: string): { stop(): CpuShare } {
  const started = process.hrtime.bigint()
  const machine0 = machineTicks()
  const first = new Map<number, number>()
  const last = new Map<number, number>()
  const sample = (initial: boolean) => {
    for (const pid of postgresBackends(postgresDatabase)) {
      const t = procTicks(pid)
      if (t === null) continue
      if (!first.has(pid)) first.set(pid, initial ? t : 0)
      last.set(pid, t)
    }
  }
  const server0 = procTicks(pids.server) ?? 0
  const load0 = procTicks(pids.load) ?? 0
  sample(true)
  const timer = setInterval(() => sample(false), 200)
  return {
    stop() {
      clearInterval(timer)
      sample(false)
      const wall = Number(process.hrtime.bigint() - started) / 1e9
      const machine1 = machineTicks()
      const cores = (machine1.total - machine0.total) / TICKS_PER_SECOND / wall
      let pgTicks = 0
      for (const [pid, t] of last) pgTicks += t - (first.get(pid) ?? 0)
      const perSecond = (ticks: number) => ticks / TICKS_PER_SECOND / wall
      const server = perSecond((procTicks(pids.server) ?? server0) - server0)
      const load = perSecond((procTicks(pids.load) ?? load0) - load0)
      const postgres = perSecond(pgTicks)
      const machineBusy = perSecond(machine1.busy - machine0.busy)
      return { server, load, postgres, machine: machineBusy, other: Math.max(0, machineBusy - server - load - postgres), cores: Math.round(cores) }
    },
  }
}

/**
 * Wait until the machine is quiet: busy CPU (all processes) below `maxBusyCores` over a
 * `sampleMs` window, or `timeoutMs` has passed. On a shared machine, a run that starts while
 * something else is compiling or testing measures that instead. Returns the last busy figure.
 */
export async function waitForQuiet(opts: { maxBusyCores?: number; sampleMs?: number; timeoutMs?: number } = {}): Promise<{ busy: number; waitedMs: number; quiet: boolean }> {
  const max = opts.maxBusyCores ?? 0.25
  const sampleMs = opts.sampleMs ?? 1000
  const deadline = Date.now() + (opts.timeoutMs ?? 60_000)
  const started = Date.now()
  for (;;) {
    const a = machineTicks()
    await new Promise((r) => setTimeout(r, sampleMs))
    const b = machineTicks()
    const busy = (b.busy - a.busy) / TICKS_PER_SECOND / (sampleMs / 1000)
    if (busy <= max || Date.now() >= deadline) return { busy, waitedMs: Date.now() - started, quiet: busy <= max }
  }
}

// ─── small utilities ─────────────────────────────────────────────────────────────────────────────

export function median(values: number[]): number {
  const s = [...values].filter((v) => Number.isFinite(v)).sort((a, b) => a - b)
  if (s.length === 0) return NaN
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}

/**
 * An integer flag of a benchmark: `fallback` when absent, else its value, which must be an
 * integer ≥ `min`; a bad value throws a message naming the flag, followed by the bench's `usage`.
 *
 * @example
 * ```ts
 * const rounds = intFlag('rounds', flags.rounds, 12, usage())
 * ```
 */
export function intFlag(name: string, value: string | undefined, fallback: number, usage: string, min = 1): number {
  if (value === undefined) return fallback
  const n = Number(value)
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer ≥ ${min}, got '${value}'\n${usage}`)
  return n
}

export function round(value: number, digits: number): number {
  const f = 10 ** digits
  return Math.round(value * f) / f
}

/**
 * Print rows as an aligned text table (numbers right-aligned).
 *
 * @example
 * ```ts
 * printTable(['variant', 'rps'], [['baseline', 5021], ['pooled', 4630]])
 * ```
 */
export function printTable(header: string[], rows: (string | number)[][], out: (line: string) => void = console.log): void {
  const cells = [header, ...rows.map((r) => r.map((c) => String(c)))]
  const widths = header.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)))
  const numeric = header.map((_, i) => rows.length > 0 && rows.every((r) => typeof r[i] === 'number'))
  const line = (r: string[]) => r.map((c, i) => (numeric[i] ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join('  ').trimEnd()
  out(line(header))
  out(widths.map((w) => '-'.repeat(w)).join('  '))
  for (const r of cells.slice(1)) out(line(r))
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href && process.argv.includes('--load-worker')) {
  loadWorker().catch((err) => {
    console.error('load generator failed:', err)
    process.exit(1)
  })
}
