import type PgBoss from 'pg-boss'
import type { AdminQueryable } from '../data/driver.ts'
import { quoteIdent } from '../core/sql.ts'
import { claimIndexSql, fetchJobs } from './sql.ts'

/** A job as the queue hands it out. */
export interface QueuedJob {
  id: string
  queue: string
  data: unknown
  /** The group it was sent with (the tenant id), or null. Unverified: for shares, never for trust. */
  group: string | null
}

/** A job to enqueue: Tenantry chooses the id (it is signed) and the priority (fairness). */
export interface OutgoingJob {
  id: string
  queue: string
  data: unknown
  priority: number
  retryLimit?: number
  /** The job's group (Tenantry: the tenant id), which {@link JobQueue.fetch} can pass over. */
  group?: string
}

/**
 * The port the tenant jobs run on: just enqueue, claim, settle. pg-boss implements it
 * ({@link PgBossQueue}); BullMQ or any queue with ids, priorities and claim/ack could too.
 */
export interface JobQueue {
  start(): Promise<void>
  ensureQueue(name: string): Promise<void>
  send(jobs: OutgoingJob[]): Promise<void>
  /**
   * Claim up to `n` jobs of `queue`, highest priority first, then oldest, passing over the jobs of
   * the groups in `skipGroups` (tenants at their share of the worker).
   */
  fetch(queue: string, n: number, skipGroups?: readonly string[]): Promise<QueuedJob[]>
  complete(queue: string, id: string, output?: unknown): Promise<void>
  /** Fail one attempt: the queue retries it while its retry limit allows. */
  fail(queue: string, id: string, error: { code: string; message: string }): Promise<void>
  stop(): Promise<void>
}

export interface PgBossQueueOptions {
  /** Connection string of the database pg-boss lives in (PostgreSQL). */
  connectionString?: string
  /** Or: run on an owner connection of the embedded engine (PGlite) through pg-boss's `db` option. */
  admin?: AdminQueryable
  /** pg-boss's schema. Default `pgboss`. */
  schema: string
  /** Connections pg-boss may open (PostgreSQL). */
  max: number
  onError(error: Error): void
}

/**
 * pg-boss 10 (the major that runs on Node 20) as the queue. On the embedded default pg-boss runs
 * on the catalog's PGlite instance through its `db` option (one statement at a time, like every
 * other user of that instance).
 */
export class PgBossQueue implements JobQueue {
  private bossOrNull: PgBoss | null = null
  private readonly queues = new Map<string, Promise<void>>()

  constructor(private readonly opts: PgBossQueueOptions) {}

  /** pg-boss is loaded at start (the first send, work or schedule), not when Tenantry starts. */
  async start(): Promise<void> {
    if (!this.bossOrNull) {
      const { default: PgBossClass } = await import('pg-boss')
      const common = { schema: this.opts.schema, supervise: true, schedule: false, migrate: true, application_name: 'tenantry-jobs' }
      const boss = this.opts.admin
        ? new PgBossClass({ ...common, db: pgliteDb(this.opts.admin) })
        : new PgBossClass({ ...common, connectionString: this.opts.connectionString, max: this.opts.max })
      boss.on('error', this.opts.onError)
      this.bossOrNull = boss
    }
    await this.bossOrNull.start()
    // Tenantry's claim orders by priority (each tenant's virtual time), which pg-boss's own index
    // (name, start_after) cannot serve: without this one, every claim sorts the whole backlog.
    // Looked up first: CREATE INDEX takes a lock that waits for every sender, even when it exists.
    const db = this.bossOrNull.getDb()
    const { rows } = await db.executeSql('SELECT to_regclass($1) IS NOT NULL AS present', [`${quoteIdent(this.opts.schema)}.tenantry_claim`])
    if (!(rows[0] as { present: boolean }).present) await db.executeSql(claimIndexSql(this.opts.schema), [])
  }

  private get boss(): PgBoss {
    if (!this.bossOrNull) throw new Error('the job queue is not started')
    return this.bossOrNull
  }

  ensureQueue(name: string): Promise<void> {
    let p = this.queues.get(name)
    if (!p) {
      p = (async () => {
        if (!(await this.boss.getQueue(name))) await this.boss.createQueue(name).catch(async (err) => {
          // Another process created it first.
          if (!(await this.boss.getQueue(name))) throw err
        })
      })()
      p.catch(() => this.queues.delete(name))
      this.queues.set(name, p)
    }
    return p
  }

  async send(jobs: OutgoingJob[]): Promise<void> {
    if (jobs.length === 0) return
    // The group travels as pg-boss's singleton key: on a queue of the standard policy (Tenantry's)
    // and without singletonSeconds it constrains nothing, and fetch can filter on it.
    await this.boss.insert(jobs.map((j) => ({ id: j.id, name: j.queue, data: j.data as object, priority: j.priority, singletonKey: j.group, ...(j.retryLimit === undefined ? {} : { retryLimit: j.retryLimit }) })))
  }

  async fetch(queue: string, n: number, skipGroups: readonly string[] = []): Promise<QueuedJob[]> {
    // pg-boss's own claim (v10's fetchNextJob for the standard policy) with the skipped groups
    // left out before the LIMIT, so a tenant at its share never takes a slot meant for another.
    const s = fetchJobs(this.opts.schema, queue, n, skipGroups)
    const { rows } = await this.boss.getDb().executeSql(s.text, s.values)
    return (rows as { id: string; data: unknown; singleton_key: string | null }[]).map((j) => ({ id: j.id, queue, data: j.data, group: j.singleton_key }))
  }

  async complete(queue: string, id: string, output?: unknown): Promise<void> {
    await this.boss.complete(queue, id, output === undefined ? undefined : (output as object))
  }

  async fail(queue: string, id: string, error: { code: string; message: string }): Promise<void> {
    await this.boss.fail(queue, id, error)
  }

  async stop(): Promise<void> {
    await this.bossOrNull?.stop({ graceful: false, wait: true, close: true })
  }
}

/** pg-boss's `db` over an owner connection of PGlite: parameterless scripts (its migrations) run as one script. */
function pgliteDb(admin: AdminQueryable): PgBoss.Db {
  return {
    async executeSql(text: string, values: unknown[] = []) {
      if (values.length === 0 && /;\s*\S/.test(text)) {
        await admin.exec(text)
        return { rows: [] }
      }
      const r = await admin.query(text, values)
      return { rows: r.rows as unknown[] }
    },
  }
}
