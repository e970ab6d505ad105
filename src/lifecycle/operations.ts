import { randomBytes, randomUUID } from 'node:crypto'
import { hostname } from 'node:os'
import type { AdminQueryable } from '../data/driver.ts'
import { TenantryError } from '../core/errors.ts'
import * as sql from './sql.ts'

export type OperationState = 'running' | 'done' | 'failed' | 'rolled_back'
export type TargetState = 'pending' | 'running' | 'done' | 'failed' | 'skipped'

/** A durable, resumable long-running job recorded in the catalog. */
export interface Operation {
  id: string
  kind: string
  tenantId: string | null
  slug: string | null
  params: Record<string, unknown>
  state: OperationState
  step: string | null
  progress: Record<string, unknown>
  error: string | null
  startedBy: string
  owner: string | null
  heartbeatAt: Date | null
  createdAt: Date
  updatedAt: Date
  finishedAt: Date | null
}

/** One target of a fleet operation. */
export interface OperationTarget {
  operationId: string
  target: string
  server: string
  database: string
  schema: string
  role: string
  tier: string
  tenantId: string | null
  slug: string | null
  canary: boolean
  state: TargetState
  claimedBy: string | null
  applied: string[]
  error: string | null
}

interface OpRow {
  id: string; kind: string; tenant_id: string | null; slug: string | null; params: unknown; state: OperationState; step: string | null
  progress: unknown; error: string | null; started_by: string; owner: string | null; heartbeat_at: Date | string | null
  created_at: Date | string; updated_at: Date | string; finished_at: Date | string | null
}
interface TargetRow {
  operation_id: string; target: string; server: string; database: string; schema: string; role: string; tier: string
  tenant_id: string | null; slug: string | null; canary: boolean; state: TargetState; claimed_by: string | null; applied: string[] | string; error: string | null
}

const json = (v: unknown) => (typeof v === 'string' ? JSON.parse(v) : (v ?? {}))
const date = (v: Date | string | null) => (v === null ? null : new Date(v))

function toOperation(r: OpRow): Operation {
  return {
    id: r.id, kind: r.kind, tenantId: r.tenant_id, slug: r.slug, params: json(r.params), state: r.state, step: r.step,
    progress: json(r.progress), error: r.error, startedBy: r.started_by, owner: r.owner, heartbeatAt: date(r.heartbeat_at),
    createdAt: new Date(r.created_at), updatedAt: new Date(r.updated_at), finishedAt: date(r.finished_at),
  }
}

function toTarget(r: TargetRow): OperationTarget {
  return {
    operationId: r.operation_id, target: r.target, server: r.server, database: r.database, schema: r.schema, role: r.role,
    tier: r.tier, tenantId: r.tenant_id, slug: r.slug, canary: r.canary, state: r.state, claimedBy: r.claimed_by,
    applied: Array.isArray(r.applied) ? r.applied : parsePgArray(r.applied), error: r.error,
  }
}

function parsePgArray(v: string): string[] {
  const inner = v.replace(/^\{|\}$/g, '')
  return inner ? inner.split(',').map((s) => s.replace(/^"|"$/g, '')) : []
}

const HOST = hostname()

/** `host:pid:random` — unique per process, and says where to check whether the process lives. */
export function newWorkerId(): string {
  return `${HOST}:${process.pid}:${randomBytes(3).toString('hex')}`
}

/**
 * Whether the worker `id` is gone: on this host, its process is dead; elsewhere, its heartbeat is
 * older than `staleMs` (or it never wrote one).
 */
export function isDeadWorker(id: string, heartbeatAgeMs: number | undefined, staleMs: number): boolean {
  const [host, pidText] = id.split(':')
  if (host === HOST) {
    const pid = Number(pidText)
    if (pid === process.pid) return false
    try {
      process.kill(pid, 0)
      return false
    } catch (err) {
      return (err as NodeJS.ErrnoException).code !== 'EPERM'
    }
  }
  return heartbeatAgeMs === undefined || heartbeatAgeMs > staleMs
}

/** What observability is told of operations (a port: `lifecycle/` knows nothing of tracing). */
export interface OperationObserver {
  started(op: Operation): void
  stepped(id: string, step: string): void
  finished(id: string, state: string, error: string | null): void
  targetClaimed(opId: string, target: OperationTarget): void
  targetFinished(opId: string, target: string, state: string, error: string | null): void
}

/**
 * Appends an operation's start (intent) and end (outcome) to the audit log in the transaction that
 * records it, so a multi-transaction action (backup, move, erase…) leaves its record even if the
 * process dies in between: the intent commits with the operation row, the outcome with its end.
 *
 * @example
 * ```ts
 * operations.auditor = auditOperations(tenantry.audit)
 * ```
 */
export type OperationAuditor = (q: { query: AdminQueryable['query'] }, event: { phase: 'start' | 'finish'; op: Operation }) => Promise<void>

/**
 * The operation records of the catalog, seen from one worker (process). While it holds work it
 * writes a heartbeat every few seconds, so other workers can tell a slow worker from a dead one.
 *
 * @example
 * ```ts
 * const op = await operations.start('provision', { slug: 'acme', params: {}, step: 'room' })
 * await operations.step(op.id, 'migrate')
 * await operations.finish(op.id, 'done')
 * ```
 */
export class Operations {
  readonly worker: string
  /** Told of each operation's start, steps, targets and end (observability: spans). */
  observer?: OperationObserver
  /** Appends each operation's start and end to the audit log, in the same transaction. */
  auditor?: OperationAuditor
  private readonly admin: AdminQueryable
  private readonly staleMs: number
  private timer?: NodeJS.Timeout
  private holders = 0
  private lastBeat = 0

  constructor(admin: AdminQueryable, opts: { worker?: string; staleMs?: number } = {}) {
    this.admin = admin
    this.worker = opts.worker ?? newWorkerId()
    this.staleMs = opts.staleMs ?? 15_000
  }

  /** Keep this worker's heartbeat fresh while `fn` runs. */
  async holding<T>(fn: () => Promise<T>): Promise<T> {
    if (this.holders++ === 0) {
      // start() writes the heartbeat with the operation; no second write right after it.
      if (Date.now() - this.lastBeat > 1000) await this.beat()
      this.timer = setInterval(() => { this.beat().catch(() => undefined) }, Math.max(500, this.staleMs / 5))
      this.timer.unref()
    }
    try {
      return await fn()
    } finally {
      if (--this.holders === 0 && this.timer) {
        clearInterval(this.timer)
        this.timer = undefined
      }
    }
  }

  /** Record a new running operation owned by this worker. */
  async start(kind: string, o: { tenantId?: string | null; slug?: string | null; params: unknown; step: string; startedBy?: string }, tx?: { query: AdminQueryable['query'] }): Promise<Operation> {
    const auditor = this.auditor
    if (tx === undefined && auditor !== undefined) return this.admin.transaction((t) => this.start(kind, o, t))
    const q = tx ?? this.admin
    await q.query(...args(sql.heartbeatWorker(this.worker)))
    this.lastBeat = Date.now()
    const res = await q.query<OpRow>(...args(sql.insertOperation({
      id: randomUUID(), kind, tenantId: o.tenantId ?? null, slug: o.slug ?? null, params: o.params, step: o.step,
      startedBy: o.startedBy ?? defaultStartedBy(), owner: this.worker,
    }))).catch((err) => {
      if ((err as { code?: string }).code !== '23505') throw err
      throw new TenantryError('CONFLICT', `Another operation on tenant '${o.slug ?? o.tenantId}' is running; wait for it to finish ('tenantry operations list --state running').`, { cause: err, details: { kind } })
    })
    const op = toOperation(res.rows[0])
    if (auditor !== undefined) await auditor(q, { phase: 'start', op })
    this.observer?.started(op)
    return op
  }

  async step(id: string, step: string, progress?: unknown): Promise<void> {
    await this.admin.query(...args(sql.updateOperationStep(id, this.worker, step, progress)))
    this.observer?.stepped(id, step)
  }

  async finish(
    id: string,
    state: Exclude<OperationState, 'running'>,
    error?: string | null,
    progress?: unknown,
    tx?: { query: AdminQueryable['query'] },
    step?: string,
  ): Promise<Operation | null> {
    const auditor = this.auditor
    if (tx === undefined && auditor !== undefined) return this.admin.transaction((t) => this.finish(id, state, error, progress, t, step))
    const q = tx ?? this.admin
    const res = await q.query<OpRow>(...args(sql.finishOperation(id, state, error ?? null, progress, step)))
    const op = res.rows[0] ? toOperation(res.rows[0]) : null
    if (op !== null && auditor !== undefined) await auditor(q, { phase: 'finish', op })
    this.observer?.finished(id, state, error ?? null)
    return op
  }

  async get(id: string): Promise<Operation | null> {
    const res = await this.admin.query<OpRow>(...args(sql.getOperation(id)))
    return res.rows[0] ? toOperation(res.rows[0]) : null
  }

  async list(filter: { state?: OperationState; kind?: string; limit?: number } = {}): Promise<Operation[]> {
    const res = await this.admin.query<OpRow>(...args(sql.listOperations({ ...filter, limit: filter.limit ?? 50 })))
    return res.rows.map(toOperation)
  }

  /** Running operations whose owner is dead (of `kind`, none of `skipKinds`), taken over by this worker (each by one worker only). */
  async takeOverOrphans(kind?: string, skipKinds: string[] = []): Promise<Operation[]> {
    const res = await this.admin.query<OpRow>(...args(sql.runningOperations(kind ?? null)))
    const rows = res.rows.filter((r) => !skipKinds.includes(r.kind))
    const dead = await this.deadAmong(rows.map((r) => r.owner).filter((o): o is string => o !== null))
    const taken: Operation[] = []
    for (const row of rows) {
      if (row.owner !== null && !dead.has(row.owner)) continue
      const t = await this.admin.query<OpRow>(...args(sql.takeOverOperation(row.id, row.owner, this.worker)))
      if (t.rows[0]) taken.push(toOperation(t.rows[0]))
    }
    return taken
  }

  /** Take over one running operation whose owner is dead (or this worker). */
  async takeOver(op: Operation): Promise<Operation | null> {
    if (op.state !== 'running') return null
    if (op.owner !== null && op.owner !== this.worker && !(await this.deadAmong([op.owner])).has(op.owner)) return null
    const t = await this.admin.query<OpRow>(...args(sql.takeOverOperation(op.id, op.owner, this.worker)))
    return t.rows[0] ? toOperation(t.rows[0]) : null
  }

  async addTargets(opId: string, targets: Parameters<typeof sql.insertTarget>[1][]): Promise<void> {
    await this.admin.transaction(async (tx) => {
      for (const t of targets) await tx.query(...args(sql.insertTarget(opId, t)))
    })
  }

  async claimTarget(opId: string): Promise<OperationTarget | null> {
    const res = await this.admin.query<TargetRow>(...args(sql.claimTarget(opId, this.worker)))
    const target = res.rows[0] ? toTarget(res.rows[0]) : null
    if (target) this.observer?.targetClaimed(opId, target)
    return target
  }

  async finishTarget(opId: string, target: string, state: 'done' | 'failed' | 'skipped', applied: string[], error: string | null): Promise<void> {
    await this.admin.query(...args(sql.finishTarget(opId, target, this.worker, state, applied, error)))
    this.observer?.targetFinished(opId, target, state, error)
  }

  /** Put the targets of dead workers back to pending; returns how many workers were dead. */
  async releaseDeadClaims(opId: string): Promise<number> {
    const res = await this.admin.query<{ claimed_by: string }>(...args(sql.runningClaimers(opId)))
    const dead = [...(await this.deadAmong(res.rows.map((r) => r.claimed_by)))]
    if (dead.length > 0) await this.admin.query(...args(sql.releaseTargetsOf(opId, dead)))
    return dead.length
  }

  async counts(opId: string): Promise<{ total: number; pending: number; running: number; done: number; failed: number; skipped: number; canaryFailed: number }> {
    const res = await this.admin.query<{ state: TargetState; canary: boolean; n: number }>(...args(sql.targetCounts(opId)))
    const c = { total: 0, pending: 0, running: 0, done: 0, failed: 0, skipped: 0, canaryFailed: 0 }
    for (const r of res.rows) {
      c[r.state] += Number(r.n)
      c.total += Number(r.n)
      if (r.canary && r.state === 'failed') c.canaryFailed += Number(r.n)
    }
    return c
  }

  async targets(opId: string): Promise<OperationTarget[]> {
    const res = await this.admin.query<TargetRow>(...args(sql.listTargets(opId)))
    return res.rows.map(toTarget)
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer)
    await this.admin.query(...args(sql.dropWorker(this.worker))).catch(() => undefined)
  }

  private async beat(): Promise<void> {
    this.lastBeat = Date.now()
    await this.admin.query(...args(sql.heartbeatWorker(this.worker)))
  }

  private async deadAmong(workers: string[]): Promise<Set<string>> {
    const unique = [...new Set(workers)].filter((w) => w !== this.worker)
    if (unique.length === 0) return new Set()
    const res = await this.admin.query<{ id: string; age_ms: number | string }>(...args(sql.workerHeartbeats(unique)))
    const age = new Map(res.rows.map((r) => [r.id, Number(r.age_ms)]))
    return new Set(unique.filter((w) => isDeadWorker(w, age.get(w), this.staleMs)))
  }
}

function defaultStartedBy(): string {
  return `${process.env.USER ?? 'unknown'}@${HOST}`
}

function args(s: { text: string; values: unknown[] }): [string, unknown[]] {
  return [s.text, s.values]
}
