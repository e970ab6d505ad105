import { createHmac, randomUUID, timingSafeEqual } from 'node:crypto'
import cronParser from 'cron-parser'
import { currentTenant } from '../context/context.ts'
import { TenantryError, isTenantryError } from '../core/errors.ts'
import type { Tenant } from '../core/types.ts'
import { isUuid, printable } from '../core/validation.ts'
import type { AdminQueryable } from '../data/driver.ts'
import type { TenantryEvents } from '../lifecycle/events.ts'
import { PgBossQueue, type JobQueue, type QueuedJob } from './queue.ts'
import * as sql from './sql.ts'

/** Options of the background jobs (`createTenantry({ jobs })`). */
export interface JobsOptions {
  /** pg-boss's schema in the catalog database. Default `pgboss`. */
  schema?: string
  /** Connections pg-boss may open to PostgreSQL. Default 4. */
  maxConnections?: number
  /** How often an idle worker asks the queue for work, ms (sends in this process wake it at once). Default 1000. */
  pollIntervalMs?: number
  /** How often a worker process looks for due cron schedules, ms. Default 30,000. */
  scheduleIntervalMs?: number
  /** A queue of your own that implements {@link JobQueue} (BullMQ…); default pg-boss. */
  queue?: JobQueue
}

/** A job as a handler sees it: the tenant is also the current context (`tenantry.db`, cache, storage are scoped). */
export interface TenantJob<T = unknown> {
  id: string
  queue: string
  data: T
  tenant: Tenant
}

export interface WorkOptions {
  /** Jobs this worker runs at once in this process. Default 4. */
  concurrency?: number
  /**
   * Jobs of one tenant this worker runs at once: the tenant's share of it. Default `concurrency - 1`
   * (at least 1), so one tenant's backlog always leaves a slot to the other tenants' jobs.
   */
  maxPerTenant?: number
}

export interface SendOptions {
  /** Attempts after the first when the handler throws. Default pg-boss's (2). */
  retryLimit?: number
}

/** A cron schedule of one tenant. */
export interface JobSchedule {
  tenantId: string
  queue: string
  name: string
  cron: string
  tz: string
  data: unknown
  lastFired: Date | null
  createdAt: Date
}

export interface JobsStats {
  ran: number
  failed: number
  /** Jobs not run because their tenant did not verify, by error code. */
  refused: Record<string, number>
}

interface Envelope {
  tenantry: { tenant: string; sig: string; vt: number }
  data: unknown
}

export interface JobsDeps {
  admin: AdminQueryable
  /** The main server's URL (PostgreSQL) or `pglite:…`. */
  url: string
  tenantKey: () => string
  findTenant(slugOrId: string): Promise<Tenant | null>
  /** Run as the tenant; refuses one that is not active (TENANT_SUSPENDED, TENANT_NOT_FOUND, TENANT_NOT_READY). */
  withTenant<T>(tenant: Tenant, fn: () => Promise<T>): Promise<T>
  events: TenantryEvents
}

const QUEUE_NAME = /^[A-Za-z0-9_.-]{1,50}$/
const SCHEDULE_NAME = /^[A-Za-z0-9_.-]{1,64}$/
const MAX_PRIORITY = 2_147_483_647

/**
 * Background jobs that keep their tenant (issue 15). `send` inside a tenant context records the
 * tenant, signed with the installation's tenant key; `work` runs each handler inside that
 * tenant's context, and refuses (fails, never runs) a job with no tenant, a forged or unknown one,
 * or one whose tenant is not active. Tenants are served round-robin per queue, whatever their
 * backlogs; cron schedules are per tenant.
 *
 * @example
 * ```ts
 * await tenantry.jobs.work('daily-summary', async (job) => {
 *   const { rows } = await tenantry.db.query('SELECT count(*) FROM tasks') // the job's tenant
 * })
 * await tenantry.withTenant('acme', () => tenantry.jobs.send('daily-summary', { day: '2026-12-04' }))
 * ```
 */
export class TenantJobs {
  private started?: Promise<void>
  private readonly workers = new Set<Worker>()
  private readonly stats_: JobsStats = { ran: 0, failed: 0, refused: {} }
  private scheduleTimer?: NodeJS.Timeout
  private closed = false

  constructor(
    private readonly queue: JobQueue,
    private readonly opts: { pollIntervalMs: number; scheduleIntervalMs: number },
    private readonly deps: JobsDeps,
  ) {}

  /** Enqueue a job for the current tenant; returns its id. */
  async send(queue: string, data?: unknown, options: SendOptions = {}): Promise<string> {
    const tenant = currentTenant()
    return (await this.sendAs(tenant, queue, [data], options))[0]!
  }

  /** Enqueue many jobs for the current tenant in one round trip; returns their ids in order. */
  async sendMany(queue: string, items: unknown[], options: SendOptions = {}): Promise<string[]> {
    const tenant = currentTenant()
    if (!Array.isArray(items)) throw new TenantryError('VALIDATION_FAILED', 'sendMany() takes an array of job payloads.')
    return this.sendAs(tenant, queue, items, options)
  }

  /**
   * Run `handler` for every job of `queue`, each inside its tenant's context. Returns a function
   * that stops this worker (running jobs finish).
   */
  async work<T = unknown>(queue: string, handler: (job: TenantJob<T>) => unknown, options: WorkOptions = {}): Promise<() => Promise<void>> {
    checkQueue(queue)
    const concurrency = options.concurrency ?? 4
    if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 1000) {
      throw new TenantryError('VALIDATION_FAILED', `work() concurrency must be a whole number from 1 to 1000; got ${printable(String(concurrency))}.`)
    }
    const maxPerTenant = options.maxPerTenant ?? Math.max(1, concurrency - 1)
    if (!Number.isInteger(maxPerTenant) || maxPerTenant < 1 || maxPerTenant > concurrency) {
      throw new TenantryError('VALIDATION_FAILED', `work() maxPerTenant must be a whole number from 1 to concurrency (${concurrency}); got ${printable(String(maxPerTenant))}.`)
    }
    await this.start()
    await this.queue.ensureQueue(queue)
    const w = new Worker(queue, concurrency, maxPerTenant, this.opts.pollIntervalMs, {
      fetch: (n, skip) => this.queue.fetch(queue, n, skip),
      run: (job) => this.run(job, handler as (job: TenantJob) => unknown),
      onError: (error) => this.deps.events.emit('error', { error, context: `running jobs of queue '${queue}'` }),
    })
    this.workers.add(w)
    w.start()
    this.startSchedules()
    return async () => {
      this.workers.delete(w)
      await w.stop()
    }
  }

  /**
   * A cron schedule for the current tenant (`'0 6 * * *'`, five or six fields, in `tz`, default
   * UTC): a worker process sends `data` to `queue` as the tenant at each time. `name` tells one
   * tenant's schedules of a queue apart. Setting it again replaces it.
   */
  async schedule(queue: string, cron: string, data?: unknown, options: { tz?: string; name?: string } = {}): Promise<void> {
    const tenant = currentTenant()
    checkQueue(queue)
    const name = options.name ?? 'default'
    if (typeof name !== 'string' || !SCHEDULE_NAME.test(name)) {
      throw new TenantryError('VALIDATION_FAILED', `A schedule name must be 1-64 letters, digits, '_', '.' or '-'; got '${printable(String(name))}'.`)
    }
    const tz = options.tz ?? 'UTC'
    try {
      if (typeof cron !== 'string' || cron.length > 200) throw new Error('not a string of at most 200 characters')
      cronParser.parseExpression(cron, { tz, currentDate: new Date() }).next()
    } catch (err) {
      throw new TenantryError('VALIDATION_FAILED', `'${printable(String(cron)).slice(0, 80)}' in time zone '${printable(String(tz)).slice(0, 40)}' is not a valid cron schedule (five or six fields, e.g. '0 6 * * *'): ${(err as Error).message}.`, { cause: err })
    }
    checkJson(data)
    await this.start()
    const up = sql.upsertSchedule({ tenantId: tenant.id, queue, name, cron, tz, data: data ?? null })
    await this.deps.admin.query(up.text, up.values)
  }

  /** Remove a schedule of the current tenant; true when there was one. */
  async unschedule(queue: string, name = 'default'): Promise<boolean> {
    const tenant = currentTenant()
    await this.start()
    const s = sql.deleteSchedule(tenant.id, queue, name)
    return (await this.deps.admin.query(s.text, s.values)).rowCount > 0
  }

  /** The current tenant's schedules. */
  async schedules(): Promise<JobSchedule[]> {
    return this.listSchedules(currentTenant().id)
  }

  /** Every tenant's schedules (control plane: the CLI and admin). */
  async allSchedules(): Promise<JobSchedule[]> {
    return this.listSchedules(null)
  }

  /**
   * Send the jobs of every schedule that fell due since its last firing (and after it was made),
   * up to `now`: the latest due time only, each once across all processes. Worker processes call this every `scheduleIntervalMs`;
   * returns the number of jobs sent.
   */
  async runSchedules(now: Date = new Date()): Promise<number> {
    await this.start()
    let sent = 0
    for (const s of await this.listSchedules(null)) {
      let due: Date
      try {
        due = cronParser.parseExpression(s.cron, { tz: s.tz, currentDate: new Date(now.getTime() + 1) }).prev().toDate()
      } catch {
        continue
      }
      // Only times after the schedule was made, and each time once.
      if (due < s.createdAt || (s.lastFired && s.lastFired >= due)) continue
      const tenant = await this.deps.findTenant(s.tenantId)
      if (!tenant || tenant.status !== 'active') continue
      const claim = sql.claimFiring(s.tenantId, s.queue, s.name, due)
      if ((await this.deps.admin.query(claim.text, claim.values)).rowCount === 0) continue
      await this.sendAs(tenant, s.queue, [s.data])
      sent++
    }
    return sent
  }

  /** Counts since start: jobs run, handlers that threw, jobs refused by code. */
  stats(): JobsStats {
    return { ...this.stats_, refused: { ...this.stats_.refused } }
  }

  async close(): Promise<void> {
    this.closed = true
    if (this.scheduleTimer) clearInterval(this.scheduleTimer)
    await Promise.all([...this.workers].map((w) => w.stop()))
    this.workers.clear()
    if (this.started) await this.started.then(() => this.queue.stop(), () => undefined)
  }

  /** Start the queue (first use): pg-boss creates or migrates its schema, Tenantry its tables. */
  start(): Promise<void> {
    if (this.closed) return Promise.reject(new TenantryError('JOBS_UNAVAILABLE', 'The jobs of this Tenantry instance are closed.'))
    this.started ??= (async () => {
      await this.deps.admin.exec(sql.JOBS_SCHEMA_SQL)
      await this.queue.start()
    })().catch((err) => {
      this.started = undefined
      if (isTenantryError(err)) throw err
      throw new TenantryError('JOBS_UNAVAILABLE', `The job queue cannot start: ${String((err as Error)?.message ?? err).split('\n')[0]}. Check that the catalog database is reachable.`, { cause: err })
    })
    return this.started
  }

  private async sendAs(tenant: Tenant, queue: string, items: unknown[], options: SendOptions = {}): Promise<string[]> {
    checkQueue(queue)
    if (items.length === 0) return []
    for (const d of items) checkJson(d)
    if (options.retryLimit !== undefined && (!Number.isInteger(options.retryLimit) || options.retryLimit < 0 || options.retryLimit > 100)) {
      throw new TenantryError('VALIDATION_FAILED', `retryLimit must be a whole number from 0 to 100; got ${printable(String(options.retryLimit))}.`)
    }
    await this.start()
    await this.queue.ensureQueue(queue)
    const r = sql.reserveVirtualTime(queue, tenant.id, items.length)
    const last = Number((await this.deps.admin.query<{ vt: string }>(r.text, r.values)).rows[0]!.vt)
    const first = last - items.length + 1
    const key = this.deps.tenantKey()
    const jobs = items.map((data, i) => {
      const id = randomUUID()
      const vt = first + i
      const envelope: Envelope = { tenantry: { tenant: tenant.id, sig: sign(key, queue, id, tenant.id), vt }, data: data ?? null }
      return { id, queue, data: envelope, priority: -Math.min(vt, MAX_PRIORITY), retryLimit: options.retryLimit, group: tenant.id }
    })
    await this.queue.send(jobs)
    for (const w of this.workers) if (w.queue === queue) w.wake()
    return jobs.map((j) => j.id)
  }

  private async run(job: QueuedJob, handler: (job: TenantJob) => unknown): Promise<void> {
    let tenant: Tenant
    try {
      tenant = await this.verify(job)
    } catch (err) {
      const e = isTenantryError(err) ? err : new TenantryError('JOB_TENANT_INVALID', 'The job could not be verified.', { cause: err })
      this.stats_.refused[e.code] = (this.stats_.refused[e.code] ?? 0) + 1
      const env = job.data as Partial<Envelope> | null
      const tenantId = typeof env?.tenantry?.tenant === 'string' ? env.tenantry.tenant : null
      this.deps.events.emit('job.refused', { queue: job.queue, jobId: job.id, tenantId, error: e })
      await this.queue.fail(job.queue, job.id, { code: e.code, message: e.message })
      return
    }
    const env = job.data as Envelope
    const floor = sql.advanceFloor(job.queue, env.tenantry.vt)
    const advancing = this.deps.admin.query(floor.text, floor.values).catch((error) =>
      this.deps.events.emit('error', { error, context: `advancing the fair-queue floor of '${job.queue}'` }))
    let ran = false
    try {
      // withTenant refuses a tenant that is not active (suspended, deleted, not ready) before the handler.
      const output = await this.deps.withTenant(tenant, async () => {
        ran = true
        return handler({ id: job.id, queue: job.queue, data: env.data, tenant })
      })
      this.stats_.ran++
      await this.queue.complete(job.queue, job.id, output === undefined || output === null || typeof output !== 'object' ? undefined : output)
    } catch (err) {
      const refused = !ran
      const code = isTenantryError(err) ? err.code : 'INTERNAL'
      if (refused) {
        this.stats_.refused[code] = (this.stats_.refused[code] ?? 0) + 1
        this.deps.events.emit('job.refused', { queue: job.queue, jobId: job.id, tenantId: tenant.id, error: err as Error })
      } else {
        this.stats_.failed++
      }
      await this.queue.fail(job.queue, job.id, { code, message: String((err as Error)?.message ?? err) })
    } finally {
      await advancing
    }
  }

  /** The job's tenant, if its signature verifies and the catalog knows it (its status is checked by withTenant). */
  private async verify(job: QueuedJob): Promise<Tenant> {
    const env = job.data as Partial<Envelope> | null
    const t = env && typeof env === 'object' ? env.tenantry : undefined
    if (!t || typeof t !== 'object' || typeof t.tenant !== 'string' || typeof t.sig !== 'string' || typeof t.vt !== 'number') {
      throw new TenantryError('JOB_TENANT_INVALID', `Job ${job.id} of queue '${job.queue}' carries no tenant: jobs must be sent with tenantry.jobs.send() inside a tenant context. It was not run.`)
    }
    const expected = Buffer.from(sign(this.deps.tenantKey(), job.queue, job.id, t.tenant))
    const got = Buffer.from(t.sig)
    if (!isUuid(t.tenant) || got.length !== expected.length || !timingSafeEqual(got, expected)) {
      throw new TenantryError('JOB_TENANT_INVALID', `Job ${job.id} of queue '${job.queue}' names tenant '${printable(t.tenant).slice(0, 40)}' with a signature that does not verify (forged, copied from another job, or sent by another installation). It was not run.`)
    }
    const tenant = await this.deps.findTenant(t.tenant)
    if (!tenant) throw new TenantryError('TENANT_NOT_FOUND', `Job ${job.id} of queue '${job.queue}' belongs to tenant ${t.tenant}, which no longer exists. It was not run.`)
    return tenant
  }

  private startSchedules(): void {
    if (this.scheduleTimer || this.opts.scheduleIntervalMs <= 0) return
    const tick = () => {
      this.runSchedules().catch((error) => this.deps.events.emit('error', { error, context: 'sending scheduled jobs' }))
    }
    this.scheduleTimer = setInterval(tick, this.opts.scheduleIntervalMs)
    this.scheduleTimer.unref()
    setImmediate(tick)
  }

  private async listSchedules(tenantId: string | null): Promise<JobSchedule[]> {
    await this.start()
    const s = sql.listSchedules(tenantId)
    const { rows } = await this.deps.admin.query<{ tenant_id: string; queue: string; name: string; cron: string; tz: string; data: unknown; last_fired: Date | string | null; created_at: Date | string }>(s.text, s.values)
    return rows.map((r) => ({
      tenantId: r.tenant_id, queue: r.queue, name: r.name, cron: r.cron, tz: r.tz, data: r.data,
      lastFired: r.last_fired === null ? null : new Date(r.last_fired), createdAt: new Date(r.created_at),
    }))
  }
}

/** HMAC of the job's queue, id and tenant with the installation's tenant key (the data plane's signing key). */
function sign(key: string, queue: string, jobId: string, tenantId: string): string {
  return createHmac('sha256', key).update(`tenantry.job\n${queue}\n${jobId}\n${tenantId}`, 'utf8').digest('hex')
}

function checkQueue(queue: unknown): asserts queue is string {
  if (typeof queue !== 'string' || !QUEUE_NAME.test(queue)) {
    throw new TenantryError('VALIDATION_FAILED', `A queue name must be 1-50 letters, digits, '_', '.' or '-'; got '${printable(String(queue)).slice(0, 60)}'.`)
  }
}

function checkJson(data: unknown): void {
  try {
    if (data !== undefined && JSON.stringify(data) === undefined) throw new Error('not JSON')
  } catch (err) {
    throw new TenantryError('VALIDATION_FAILED', `A job payload must be JSON: ${(err as Error).message}.`, { cause: err })
  }
}

/**
 * One `work()` registration: keeps up to `concurrency` jobs running, claiming one more as soon as
 * one ends, and polls when the queue is empty (a send in this process wakes it at once). At most
 * `maxPerTenant` of them belong to one tenant (job group): the queue passes over the jobs of a
 * tenant at its share, and a batch is never larger than the room any running tenant has left.
 */
class Worker {
  private running = 0
  private readonly perGroup = new Map<string, number>()
  private stopped = false
  private wakeUp?: () => void
  /** A wake that came while the loop was claiming: the claim may have missed the job, so claim again. */
  private wakePending = false
  private loop?: Promise<void>
  private readonly active = new Set<Promise<void>>()

  constructor(
    readonly queue: string,
    private readonly concurrency: number,
    private readonly maxPerGroup: number,
    private readonly pollMs: number,
    private readonly port: { fetch(n: number, skipGroups: string[]): Promise<QueuedJob[]>; run(job: QueuedJob): Promise<void>; onError(err: Error): void },
  ) {}

  start(): void {
    this.loop = this.main()
  }

  wake(): void {
    if (this.wakeUp) this.wakeUp()
    else this.wakePending = true
  }

  async stop(): Promise<void> {
    this.stopped = true
    this.wake()
    await this.loop
    await Promise.all(this.active)
  }

  private async main(): Promise<void> {
    while (!this.stopped) {
      this.wakePending = false
      const skip: string[] = []
      let busiest = 0
      for (const [group, n] of this.perGroup) {
        if (n >= this.maxPerGroup) skip.push(group)
        else busiest = Math.max(busiest, n)
      }
      const free = Math.min(this.concurrency - this.running, this.maxPerGroup - busiest)
      let got = 0
      if (free > 0) {
        try {
          const jobs = await this.port.fetch(free, skip)
          got = jobs.length
          for (const job of jobs) {
            const group = job.group ?? ''
            this.running++
            this.perGroup.set(group, (this.perGroup.get(group) ?? 0) + 1)
            const p = this.port.run(job).catch((err) => this.port.onError(err as Error)).finally(() => {
              this.running--
              const left = this.perGroup.get(group)! - 1
              if (left === 0) this.perGroup.delete(group)
              else this.perGroup.set(group, left)
              this.active.delete(p)
              this.wake()
            })
            this.active.add(p)
          }
        } catch (err) {
          this.port.onError(err as Error)
          got = -1
        }
      }
      if (this.stopped) break
      // Claim again at once while jobs keep coming and slots are free; otherwise wait for a slot
      // to free up, a local send, or the poll interval.
      if ((got > 0 && got === free) || this.wakePending) continue
      await new Promise<void>((resolve) => {
        const t = setTimeout(done, this.running >= this.concurrency ? 60_000 : this.pollMs)
        function done() { clearTimeout(t); resolve() }
        this.wakeUp = done
      })
      this.wakeUp = undefined
    }
  }
}

/**
 * The background jobs, wired by `createTenantry`: pg-boss in the catalog database (PostgreSQL, or
 * the embedded PGlite instance), started on first use; a purged tenant's clocks and schedules are
 * removed.
 *
 * @example
 * ```ts
 * const jobs = createJobs({ pollIntervalMs: 500 }, deps)
 * ```
 */
export function createJobs(options: JobsOptions = {}, deps: JobsDeps): TenantJobs {
  const whole = (name: keyof JobsOptions, v: unknown, dflt: number, min: number) => {
    if (v === undefined) return dflt
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min) {
      throw new TenantryError('CONFIG_INVALID', `jobs.${name} must be a whole number of at least ${min}; got ${printable(String(v)).slice(0, 40)}.`, { details: { option: `jobs.${name}` } })
    }
    return v
  }
  const pollIntervalMs = whole('pollIntervalMs', options.pollIntervalMs, 1000, 10)
  const scheduleIntervalMs = whole('scheduleIntervalMs', options.scheduleIntervalMs, 30_000, 0)
  const max = whole('maxConnections', options.maxConnections, 4, 1)
  const schema = options.schema ?? 'pgboss'
  if (!/^[a-z_][a-z0-9_]{0,49}$/.test(schema)) throw new TenantryError('CONFIG_INVALID', `jobs.schema must be a lowercase SQL name; got '${printable(schema).slice(0, 60)}'.`, { details: { option: 'jobs.schema' } })
  const onError = (error: Error) => deps.events.emit('error', { error, context: 'the job queue (pg-boss)' })
  const queue = options.queue ?? new PgBossQueue(deps.url.startsWith('pglite:')
    ? { admin: deps.admin, schema, max, onError }
    : { connectionString: deps.url, schema, max, onError })
  const jobs = new TenantJobs(queue, { pollIntervalMs, scheduleIntervalMs }, deps)
  deps.events.on('tenant.purged', ({ tenant }) => {
    const s = sql.forgetTenant(tenant.id)
    deps.admin.exec(sql.JOBS_SCHEMA_SQL).then(() => deps.admin.query(s.text, s.values)).catch((error) => deps.events.emit('error', { error, context: `removing the job clocks and schedules of purged tenant '${tenant.slug}'` }))
  })
  return jobs
}
