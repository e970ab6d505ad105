import { spawnSync } from 'node:child_process'
import { readdirSync } from 'node:fs'
import { getPriority, setPriority } from 'node:os'
/**
 * How a fleet migration paces itself against the load of the server it migrates (issue 18).
 *
 * Users' requests and the migration share the server's CPU: on two cores with users keeping 80%
 * of it busy, eight unpaced migration streams made the users' p99 4–5× what it was, one stream
 * 2.4×, half a stream 1.5× (bench/migrate.ts). So the run measures the server's CPU utilisation
 * with the run held (the users' load alone), and then takes at most half of what is left idle:
 * in processor-sharing terms a response time ∝ 1/(1 − utilisation) at most doubles. Above that
 * the run halves its share, down to a fraction of one stream (a target, then a rest several times
 * as long); below it, it grows back, up to its concurrency. The baseline is measured again every
 * few seconds, as the users' load changes.
 *
 * The utilisation is read from the server's `/proc/stat` (`pg_read_file`, a superuser or
 * pg_read_server_files). Where that cannot be read (a managed server, not Linux) the run paces
 * by the round trip of `SELECT 1` instead, a weaker signal: it rose 1.15× at half a stream and
 * 1.9× at one stream or more in the same measurement.
 */
export interface PaceOptions {
  /** Share of the CPU left idle by the users' load that the run may take (CPU gauge). Default 0.5. */
  maxIdleShare?: number
  /**
   * Round-trip gauge: the run slows down when the mean of recent `SELECT 1` round trips (the
   * slowest 5% left out) exceeds `maxProbeRatio` × its baseline + {@link slackMs}. Default 1.25.
   */
  maxProbeRatio?: number
  /** Milliseconds added to that threshold, so sub-millisecond jitter on an idle server is no brake. Default 0.2. */
  slackMs?: number
  /** The least share of one stream the run keeps on a loaded server, so it always finishes. Default 0.05. */
  minLevel?: number
  /** Milliseconds of one measurement (a decision is made after each). Default 500. */
  windowMs?: number
  /** Round-trip gauge: milliseconds between probes. Default 10. */
  probeIntervalMs?: number
  /** Seconds between re-measurements of the baseline (new targets wait meanwhile). Default 10. */
  recalibrateSeconds?: number
  /**
   * CPU gauge: a baseline below this utilisation (0–1) means no one else is using the server, and
   * the run goes at its whole concurrency until a re-measurement finds users. Default 0 (always paced).
   */
  freeBelow?: number
  /** The level a run starts at when its server is in use: a share of one stream, or streams. Default 1 (one stream). */
  startLevel?: number
  /** The highest level on a server in use (not free), in streams. Default: the run's whole concurrency. */
  busyMaxLevel?: number
}

/** What a paced run did, for the result and the progress. */
export interface PaceReport {
  /** What the run paced by: the server's CPU utilisation, or the round trip of `SELECT 1`. */
  gauge: 'cpu' | 'rtt'
  /** Baseline with the run held: utilisation (0–1) or round trip (ms); the lower median of the last three measurements. */
  baseline: number
  /** The last measurement with the run going. */
  last: number
  /** The share allowed now: concurrency, or a fraction of one stream below 1. */
  level: number
  /** Time-weighted mean of the level over the run. */
  meanLevel: number
  /** Decisions that slowed the run down. */
  slowdowns: number
  /** Whether the last baseline found the server free (below `freeBelow`): the run was not held back. */
  free: boolean
}

/** Cumulative CPU time of a server: busy (user, system, irq, steal…) and total, in any unit. */
export interface CpuTimes {
  busy: number
  total: number
}

/** What a pacer reads from one server. */
export interface ServerGauge {
  /** Cumulative CPU times, or null when the server does not tell them. */
  cpuTimes?: () => Promise<CpuTimes | null>
  /** Milliseconds of one `SELECT 1` round trip. */
  probe?: () => Promise<number>
}

interface Gauge {
  kind: 'cpu' | 'rtt'
  /** One measurement over about `windowMs`, or null when nothing could be measured. */
  measure(): Promise<number | null>
  /** Above `slower` the run slows down; below `faster` it speeds up. */
  bounds(baseline: number): { slower: number; faster: number }
}

/**
 * The mean without the slowest 5%: queueing for the CPU moves the mean of a window of round
 * trips where its median barely moves; a stray stall of the machine is left out.
 */
function trimmedMean(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b).slice(0, Math.max(1, Math.ceil(0.95 * xs.length)))
  return s.reduce((a, b) => a + b, 0) / s.length
}

/** The lower median: of two measurements, the smaller. */
function lowerMedian(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor((s.length - 1) / 2)]
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms))
}

function cpuGauge(read: () => Promise<CpuTimes | null>, o: Required<PaceOptions>): Gauge {
  return {
    kind: 'cpu',
    async measure() {
      const a = await read().catch(() => null)
      await sleep(o.windowMs)
      const b = await read().catch(() => null)
      if (!a || !b || b.total <= a.total) return null
      return Math.min(1, Math.max(0, (b.busy - a.busy) / (b.total - a.total)))
    },
    bounds(base) {
      const idle = Math.max(0, 1 - base)
      // A band between speeding up and slowing down, so the level settles instead of flapping.
      return { slower: base + o.maxIdleShare * idle, faster: base + 0.75 * o.maxIdleShare * idle }
    },
  }
}

function rttGauge(probe: () => Promise<number>, o: Required<PaceOptions>): Gauge {
  return {
    kind: 'rtt',
    async measure() {
      // Spaced as in the loop: back to back, probes meet a backend that never sleeps and answer
      // in a tenth of the time of one woken up.
      const xs: number[] = []
      const until = Date.now() + o.windowMs
      while (Date.now() < until) {
        const ms = await probe().catch(() => null)
        if (ms !== null) xs.push(ms)
        await sleep(o.probeIntervalMs)
      }
      return xs.length > 0 ? trimmedMean(xs) : null
    },
    bounds(base) {
      const t = o.maxProbeRatio * base + o.slackMs
      return { slower: t, faster: t }
    },
  }
}

/**
 * Admission of a fleet migration's targets, paced by the load of the server being migrated.
 * Workers call {@link acquire} before claiming a target, {@link follow} with the target's server,
 * and {@link release} with the time it took. A server that offers no gauge (PGlite) is not paced.
 *
 * @example
 * ```ts
 * const pacer = new LoadPacer((server) => ({ probe: () => driver.probe() }), 8)
 * await pacer.start('main')
 * await pacer.acquire(); pacer.follow(target.server); const ms = await runOne(target); pacer.release(ms)
 * await pacer.stop()
 * ```
 */
export class LoadPacer {
  private readonly o: Required<PaceOptions>
  private levelNow: number
  private active = 0
  private restUntil = 0
  private holding = false
  private stopped = false
  private baseline = 0
  /** The last few measurements of the baseline: one disturbed measurement does not set it. */
  private baselines: number[] = []
  private last = 0
  private waiters: (() => void)[] = []
  private wakeTimer: NodeJS.Timeout | null = null
  private loop: Promise<void> | null = null
  private lastCalibration = 0
  private levelSince = Date.now()
  private levelArea = 0
  private readonly startedAt = Date.now()
  private slowdowns = 0
  private server: string | null = null
  private gauge: Gauge | null = null
  /** Bumped when the run moves to another server: a measurement of the old one is dropped. */
  private epoch = 0
  /** The last baseline was below `freeBelow`: no one to make room for. */
  private free = false

  constructor(
    private readonly gaugeOf: (server: string) => ServerGauge,
    private readonly maxLevel: number,
    options: PaceOptions = {},
  ) {
    this.o = {
      maxIdleShare: options.maxIdleShare ?? 0.5,
      maxProbeRatio: options.maxProbeRatio ?? 1.25,
      slackMs: options.slackMs ?? 0.2,
      minLevel: options.minLevel ?? 0.05,
      windowMs: options.windowMs ?? 500,
      probeIntervalMs: options.probeIntervalMs ?? 10,
      recalibrateSeconds: options.recalibrateSeconds ?? 10,
      freeBelow: options.freeBelow ?? 0,
      startLevel: options.startLevel ?? 1,
      busyMaxLevel: options.busyMaxLevel ?? Infinity,
    }
    // A slow start: one stream until the first decision says the server has room.
    this.levelNow = this.startLevel()
  }

  /** Choose the gauge of `server`, measure its baseline (nothing of the run is running yet) and start. */
  async start(server: string): Promise<void> {
    await this.use(server)
    if (this.gauge) await this.calibrate()
    this.loop = this.decide()
  }

  /** The run went on to a target of `server`: pace by that one (a new baseline is measured first). */
  follow(server: string): void {
    if (server === this.server) return
    this.holding = true
    void this.use(server).then(() => (this.gauge ? this.calibrate() : this.release0()))
  }

  /** Wait for a slot: fewer targets running than the level allows, and no rest or re-measurement pending. */
  acquire(): Promise<void> {
    if (this.admits()) {
      this.active++
      return Promise.resolve()
    }
    return new Promise((resolve) => {
      this.waiters.push(() => {
        this.active++
        resolve()
      })
      this.wake()
    })
  }

  /** A target is finished after `busyMs`; below one stream, its slot rests `busyMs × (1/level − 1)`. */
  release(busyMs: number): void {
    this.active = Math.max(0, this.active - 1)
    if (this.levelNow < 1) this.restUntil = Math.max(this.restUntil, Date.now() + busyMs * (1 / this.levelNow - 1))
    this.wake()
  }

  report(): PaceReport {
    const now = Date.now()
    const area = this.levelArea + this.levelNow * (now - this.levelSince)
    const span = now - this.startedAt
    return {
      gauge: this.gauge?.kind ?? 'rtt',
      baseline: this.baseline,
      last: this.last,
      level: this.levelNow,
      meanLevel: span > 0 ? area / span : this.levelNow,
      slowdowns: this.slowdowns,
      free: this.free,
    }
  }

  /** Whether the run is paced at all (its server offers a gauge). */
  get paced(): boolean {
    return this.gauge !== null
  }

  async stop(): Promise<void> {
    this.stopped = true
    if (this.wakeTimer) clearTimeout(this.wakeTimer)
    const waiting = this.waiters.splice(0)
    for (const w of waiting) w()
    await this.loop
  }

  private release0(): void {
    this.holding = false
    this.wake()
  }

  private async use(server: string): Promise<void> {
    this.server = server
    this.epoch++
    this.baselines = []
    const g = this.gaugeOf(server)
    // The CPU gauge when the server tells its CPU times, else round trips, else none.
    const cpu = g.cpuTimes && (await g.cpuTimes().catch(() => null)) ? g.cpuTimes : undefined
    this.gauge = cpu ? cpuGauge(cpu, this.o) : g.probe ? rttGauge(g.probe, this.o) : null
    // Nothing to pace by: the run may use its whole concurrency.
    if (!this.gauge) this.setLevel(this.maxLevel)
    else if (this.levelNow > this.startLevel()) this.setLevel(this.startLevel())
  }

  /** The most a run takes of a server in use: its concurrency, or less (`busyMaxLevel`). */
  private busyMax(): number {
    return Math.max(this.o.minLevel, Math.min(this.maxLevel, this.o.busyMaxLevel))
  }

  private startLevel(): number {
    return Math.max(this.o.minLevel, Math.min(this.o.startLevel, this.maxLevel))
  }

  private slots(): number {
    return Math.max(1, Math.floor(this.levelNow))
  }

  private admits(): boolean {
    if (this.stopped) return true
    if (this.holding) return false
    return this.active < this.slots() && Date.now() >= this.restUntil
  }

  private wake(): void {
    while (this.waiters.length > 0 && this.admits()) this.waiters.shift()!()
    // A slot is free and only the rest holds the waiters back: wake when it ends. Not decided by
    // a second reading of the clock: a rest that ended between `admits()` and here would leave
    // the waiters with no one to wake them (a release, a new level or the end of a calibration
    // wake them otherwise).
    if (this.waiters.length > 0 && !this.holding && this.active < this.slots() && !this.wakeTimer) {
      this.wakeTimer = setTimeout(() => {
        this.wakeTimer = null
        this.wake()
      }, Math.max(0, this.restUntil - Date.now()))
    }
  }

  private setLevel(level: number): void {
    const now = Date.now()
    this.levelArea += this.levelNow * (now - this.levelSince)
    this.levelSince = now
    if (level < this.levelNow) this.slowdowns++
    this.levelNow = level
    if (level >= 1) this.restUntil = 0
    this.wake()
  }

  /** The baseline: one measurement with none of the run's targets running. */
  private async calibrate(): Promise<void> {
    this.holding = true
    const epoch = this.epoch
    try {
      while (this.active > 0 && !this.stopped) await sleep(2)
      const gauge = this.gauge
      const value = gauge && !this.stopped ? await gauge.measure() : null
      if (value !== null && epoch === this.epoch) {
        this.baselines = [...this.baselines.slice(-2), value]
        this.baseline = lowerMedian(this.baselines)
        // Judged on this measurement alone: users who just arrived are not averaged away.
        const free = gauge!.kind === 'cpu' && value < this.o.freeBelow
        if (free) this.setLevel(this.maxLevel)
        else if (this.free) this.setLevel(this.startLevel())
        this.free = free
      }
    } finally {
      this.lastCalibration = Date.now()
      if (epoch === this.epoch) this.release0()
    }
  }

  private async decide(): Promise<void> {
    while (!this.stopped) {
      const gauge = this.gauge
      if (!gauge || this.holding) {
        await sleep(this.o.probeIntervalMs)
        continue
      }
      if (Date.now() - this.lastCalibration > this.o.recalibrateSeconds * 1000) {
        await this.calibrate()
        continue
      }
      if (this.free) {
        // Nothing to make room for until the next baseline says otherwise.
        await sleep(Math.min(this.o.windowMs, Math.max(1, this.lastCalibration + this.o.recalibrateSeconds * 1000 - Date.now())))
        continue
      }
      const epoch = this.epoch
      const value = await gauge.measure()
      if (value === null || epoch !== this.epoch || this.holding || this.stopped) continue
      this.last = value
      const { slower, faster } = gauge.bounds(this.baseline)
      if (value > slower) this.setLevel(Math.max(this.o.minLevel, this.levelNow / 2))
      else if (value < faster && this.levelNow < this.busyMax()) this.setLevel(Math.min(this.busyMax(), this.levelNow < 1 ? this.levelNow * 1.5 : this.levelNow + 1))
    }
  }
}

/** What {@link lowerProcessPriority} did. */
export interface LoweredPriority {
  /** Threads now at the nice value asked for or lower. */
  threads: number
  /** Whether the process now runs under Linux's SCHED_IDLE policy. */
  idle: boolean
}

/**
 * Lower this process's CPU priority for good: what `nice -n` (and `chrt --idle`) do at a
 * command's start, for a process already running (`tenantry backup --pace`). Linux keeps a nice
 * value per thread, so every thread of the process is lowered to `nice` (libuv's pool, which
 * compresses and writes, included); threads started later inherit it. Elsewhere, the process's.
 * A value already lower stays. With `idle` (Linux), also the SCHED_IDLE policy through
 * util-linux's `chrt`: the process then runs only on CPU no one else wants and gives it up at once
 * when someone does, where a nice value still lets it finish its time slice.
 */
export function lowerProcessPriority(nice: number, opts: { idle?: boolean } = {}): LoweredPriority {
  let tids: number[]
  try {
    tids = readdirSync('/proc/self/task').map(Number)
  } catch {
    tids = [0] // not Linux: the process itself
  }
  let threads = 0
  for (const tid of tids) {
    try {
      if (getPriority(tid) < nice) setPriority(tid, nice)
      threads++
    } catch {
      // a thread that ended meanwhile, or no permission: the others still yield
    }
  }
  let idle = false
  if (opts.idle && process.platform === 'linux') {
    // Lowering one's own policy needs no privilege; no chrt (not util-linux) leaves the nice value.
    idle = spawnSync('chrt', ['--idle', '--all-tasks', '--pid', '0', String(process.pid)], { stdio: 'ignore', timeout: 5000 }).status === 0
  }
  return { threads, idle }
}
