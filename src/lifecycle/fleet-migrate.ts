import { createHash } from 'node:crypto'
import type { Catalog } from '../catalog/catalog.ts'
import { TenantryError } from '../core/errors.ts'
import { TIERS, type Tenant, type Tier } from '../core/types.ts'
import { printable } from '../core/validation.ts'
import type { DataPlane } from '../data/data-plane.ts'
import { TIER_STRATEGIES, type MigrationTarget } from '../data/tiers/index.ts'
import type { TenantryEvents } from './events.ts'
import { faultPoint } from './faults.ts'
import { migrateTarget, pendingMigrations, requireMigrations, type MigrateTargetOptions, type MigrationFile } from './migrator.ts'
import type { OperationTarget, Operations } from './operations.ts'
import { LoadPacer, type PaceOptions, type PaceReport } from './pacer.ts'
import * as sql from './sql.ts'

export interface FleetMigrateOptions {
  /** Only report the plan; change nothing. */
  dryRun?: boolean
  /** Tenants (slugs) migrated first; the rest only if all of them succeed. */
  canary?: string[]
  /** Targets migrated at once by this worker (bounded by the owner connections per database). Default 4. */
  concurrency?: number
  /** Stop claiming new targets once this many have failed. Default: no limit. */
  maxFailures?: number
  /** Restrict to these slugs, tiers (`pooled`, `schema`, `database`) or server names. */
  only?: string[]
  /** Called as targets finish (at most every 200 ms, and once at the end). */
  onProgress?: (progress: MigrateProgress) => void
  startedBy?: string
  /** Called once the run has its operation (started or joined), before any target is migrated: its id shows the run's progress. */
  onStart?: (operationId: string) => void
  /**
   * Pace the run against the load of the server it migrates (default on): the run takes at most
   * half of the CPU the users' load leaves idle (read from the server's /proc/stat; where that
   * cannot be read, it keeps `SELECT 1` round trips near their baseline), from up to
   * `concurrency` targets at once down to a fraction of one stream. `false` runs at
   * `concurrency` regardless (see lifecycle/pacer.ts). PGlite
   * servers are never paced (nothing else runs on them), nor is a run of no more targets than
   * its concurrency.
   */
  pace?: boolean | PaceOptions
}

/** One target and what it lacks. */
export interface PlannedTarget extends MigrationTarget {
  tier: Tier
  tenantId: string | null
  slug: string | null
  canary: boolean
  pending: string[]
}

export interface FleetTargetResult {
  target: string
  tier: Tier
  server: string
  tenant: string | null
  status: 'done' | 'failed' | 'skipped' | 'pending'
  applied: string[]
  error?: string
}

export interface MigrateProgress {
  total: number
  done: number
  failed: number
  skipped: number
  running: number
  pending: number
  /** Targets finished per second by all workers since this worker started. */
  rate: number
  /** Seconds left at that rate, or null when unknown. */
  etaSeconds: number | null
}

export interface FleetMigrateResult {
  operationId: string | null
  /** `done`: every target at the latest version; `failed`: some failed or were left pending (halted). */
  state: 'done' | 'failed' | 'dry-run' | 'up-to-date'
  /** Why the run stopped early, when it did. */
  halted?: string
  targets: FleetTargetResult[]
  counts: { total: number; done: number; failed: number; skipped: number; pending: number }
  elapsedMs: number
  /** How this worker paced itself (absent when it did not: `pace: false`, or nothing to migrate). */
  pace?: PaceReport
}

export interface FleetMigratorOptions {
  catalog: Catalog
  dataPlane: DataPlane
  operations: Operations
  files: MigrationFile[]
  events: TenantryEvents
}

/**
 * Files some targets need beyond the app's: the migration sets of the plugins enabled for a
 * tenant of the target (config/plugin-migrations.ts). Applied after the app's, checked by `around`.
 */
export interface ExtraMigrations {
  /** Every extra file there is (for the hash that lets workers join one run). */
  all(): MigrationFile[]
  /** The extra files of each target (by label), given the targets and the tenants of the fleet. */
  forTargets(targets: readonly (MigrationTarget & { tier: Tier; tenantId: string | null })[], tenants: readonly Tenant[]): Promise<Map<string, MigrationFile[]>>
  around: NonNullable<MigrateTargetOptions['around']>
}

/**
 * Migrations across the fleet: every pooled target, tenant schema and tenant database. The run is
 * an operation in the catalog whose targets any number of workers (processes, machines) claim one
 * at a time; a second `migrate` started meanwhile joins the running one instead of starting over.
 *
 * @example
 * ```ts
 * const result = await migrator.run({ canary: ['acme'], concurrency: 8, maxFailures: 5 })
 * ```
 */
export class FleetMigrator {
  private readonly o: FleetMigratorOptions & { extra?: ExtraMigrations }
  /** The files of each target with extra files, as of this worker's last plan. */
  private filesOf = new Map<string, MigrationFile[]>()

  constructor(options: FleetMigratorOptions) {
    this.o = { ...options }
  }

  /** Migrate these files too where they apply (plugins' sets; set once the configuration is open). */
  useExtra(extra: ExtraMigrations | undefined): void {
    this.o.extra = extra
  }

  /**
   * Every target in scope with its pending files. Ledgers are read with one query per database,
   * so a no-op run over a thousand tenant schemas costs a handful of queries. An applied file that
   * was edited refuses the whole run.
   */
  async plan(opts: Pick<FleetMigrateOptions, 'only' | 'canary'> = {}): Promise<PlannedTarget[]> {
    const { catalog, dataPlane, files } = this.o
    const naming = dataPlane.opts.naming
    const tenants = (await catalog.list()).filter((t) => t.status !== 'provisioning')
    // A server another process added and this one has not heard of yet is migrated too.
    await dataPlane.ensureServers((await catalog.listServers()).map((s) => s.name))
    const servers = dataPlane.serverNames()

    const all: Omit<PlannedTarget, 'pending' | 'canary'>[] = []
    for (const s of servers) all.push({ ...dataPlane.pooledTarget(s), tier: 'pooled', tenantId: null, slug: null })
    for (const t of tenants) {
      if (!servers.includes(t.placement.server)) continue
      const own = TIER_STRATEGIES[t.tier].ownTarget(t, naming)
      if (own) all.push({ ...own, tier: t.tier, tenantId: t.id, slug: t.slug })
    }

    const bySlug = new Map(tenants.map((t) => [t.slug, t]))
    const targetOfSlug = (slug: string): string => {
      const t = bySlug.get(slug)
      if (!t) throw new TenantryError('VALIDATION_FAILED', `Unknown tenant '${printable(slug)}' in --canary/--only.`, { details: { slug: printable(slug) } })
      return dataPlane.migrationTarget(t).label
    }
    let scoped = all
    if (opts.only && opts.only.length > 0) {
      const labels = new Set<string>()
      const tiers = new Set<string>()
      const serverSet = new Set<string>()
      for (const token of opts.only) {
        if ((TIERS as readonly string[]).includes(token)) tiers.add(token)
        else if (servers.includes(token)) serverSet.add(token)
        else if (bySlug.has(token)) labels.add(targetOfSlug(token))
        else throw new TenantryError('VALIDATION_FAILED', `--only '${printable(token)}' is not a tenant slug, a tier (${TIERS.join(', ')}) or a server (${servers.join(', ')}).`)
      }
      scoped = all.filter((t) => labels.has(t.label) || tiers.has(t.tier) || serverSet.has(t.server))
    }
    const canaries = new Set((opts.canary ?? []).map(targetOfSlug))

    const ledgers = await this.readLedgers(scoped)
    const extra = this.o.extra ? await this.o.extra.forTargets(scoped, tenants) : new Map<string, MigrationFile[]>()
    for (const t of scoped) {
      const more = extra.get(t.label)
      if (more && more.length > 0) this.filesOf.set(t.label, [...files, ...more])
      else this.filesOf.delete(t.label)
    }
    const mismatches: string[] = []
    const planned: PlannedTarget[] = []
    for (const t of scoped) {
      const applied = ledgers.get(`${t.server}\0${t.database}`)?.get(t.schema) ?? new Map<string, string>()
      try {
        planned.push({ ...t, canary: canaries.has(t.label), pending: pendingMigrations(this.filesOf.get(t.label) ?? files, applied, t.label).map((f) => `${f.version}_${f.name}`) })
      } catch (err) {
        if (err instanceof TenantryError && err.code === 'MIGRATION_CHECKSUM_MISMATCH') mismatches.push(err.message)
        else throw err
      }
    }
    if (mismatches.length > 0) {
      throw new TenantryError('MIGRATION_CHECKSUM_MISMATCH', `${mismatches[0]}${mismatches.length > 1 ? ` (and ${mismatches.length - 1} more targets)` : ''}`, {
        details: { targets: mismatches.length },
      })
    }
    return planned
  }

  /** Plan, then migrate every target that lacks files; see {@link FleetMigrateOptions}. */
  async run(opts: FleetMigrateOptions = {}): Promise<FleetMigrateResult> {
    const started = Date.now()
    requireMigrations(this.o.files)
    if (opts.concurrency !== undefined && !(Number.isInteger(opts.concurrency) && opts.concurrency >= 1)) {
      throw new TenantryError('VALIDATION_FAILED', '--concurrency must be a whole number of at least 1.')
    }
    if (opts.maxFailures !== undefined && !(Number.isInteger(opts.maxFailures) && opts.maxFailures >= 1)) {
      throw new TenantryError('VALIDATION_FAILED', '--max-failures must be a whole number of at least 1.')
    }
    const plan = await this.plan(opts)
    const skipped: FleetTargetResult[] = plan
      .filter((t) => t.pending.length === 0)
      .map((t) => ({ target: t.label, tier: t.tier, server: t.server, tenant: t.slug, status: 'skipped', applied: [] }))
    const work = plan.filter((t) => t.pending.length > 0)
    if (opts.dryRun || work.length === 0) {
      const targets = plan.map<FleetTargetResult>((t) => ({
        target: t.label, tier: t.tier, server: t.server, tenant: t.slug, status: t.pending.length ? 'pending' : 'skipped', applied: t.pending,
      }))
      const result = this.result(null, opts.dryRun ? 'dry-run' : 'up-to-date', targets, started)
      opts.onProgress?.(progressOf(result.counts, 0, started))
      return result
    }

    const opId = await this.joinOrStart(work, opts)
    opts.onStart?.(opId)
    // The server of the first target claimed (claims go canaries first, then by label).
    const first = [...work].sort((a, b) => Number(b.canary) - Number(a.canary) || a.label.localeCompare(b.label))[0].server
    let pace: PaceReport | undefined
    const workOnce = async () => {
      const r = await this.work(opId, opts, plan.length, skipped.length, started, first)
      pace = r.pace ?? pace
      return r.halted
    }
    return this.o.operations.holding(async () => {
      let halted = await workOnce()
      // Wait for targets other workers are still running, then whoever finishes first records the end.
      // Targets held by a worker that died go back to pending and are worked here, unless the run
      // halted: otherwise a survivor would report them as "not reached" instead of finishing them.
      for (;;) {
        const c = await this.o.operations.counts(opId)
        if (c.running === 0 && (c.pending === 0 || halted)) break
        const released = c.running > 0 ? await this.o.operations.releaseDeadClaims(opId) : 0
        if (released > 0 || c.running === 0) {
          if (!halted) halted = await workOnce()
          continue
        }
        await sleep(200)
      }
      const rows = await this.o.operations.targets(opId)
      const targets = [...rows.map(toResult), ...skipped].sort((a, b) => a.target.localeCompare(b.target))
      const failed = rows.filter((r) => r.state === 'failed').length
      const pending = rows.filter((r) => r.state === 'pending').length
      const state = failed === 0 && pending === 0 ? 'done' : 'failed'
      const why = halted ?? (failed ? `${failed} target(s) failed` : pending ? `${pending} target(s) not reached` : undefined)
      await this.o.operations.finish(opId, state, state === 'done' ? null : why ?? null, { total: rows.length, failed, pending })
      const result = this.result(opId, state, targets, started)
      if (halted) result.halted = halted
      if (pace) result.pace = pace
      opts.onProgress?.(progressOf(result.counts, 0, started))
      return result
    })
  }

  private async work(
    opId: string, opts: FleetMigrateOptions, total: number, skipped: number, started: number, firstServer: string,
  ): Promise<{ halted?: string; pace?: PaceReport }> {
    const { operations, dataPlane, files, events } = this.o
    const maxAdmin = Math.min(...dataPlane.serverNames().map((s) => dataPlane.driver(s).adminPoolSize))
    const concurrency = Math.max(1, Math.min(opts.concurrency ?? 4, maxAdmin))
    // A run that fits in one round of its concurrency is over before pacing could matter.
    const paced = opts.pace !== false && total - skipped > concurrency && dataPlane.serverNames().some((s) => dataPlane.driver(s).probe)
    const pacer = !paced ? null : new LoadPacer((server) => {
      const driver = dataPlane.driver(server)
      return { cpuTimes: driver.cpuTimes && (() => driver.cpuTimes!()), probe: driver.probe && (() => driver.probe!()) }
    }, concurrency, typeof opts.pace === 'object' ? opts.pace : {})
    await pacer?.start(firstServer)
    let halted: string | undefined
    let lastProgress = 0
    const report = async (force = false) => {
      if (!opts.onProgress || (!force && Date.now() - lastProgress < 200)) return
      lastProgress = Date.now()
      const c = await operations.counts(opId)
      opts.onProgress(progressOf({ total, done: c.done, failed: c.failed, skipped: skipped + c.skipped, pending: c.pending + c.running }, c.running, started))
    }

    const worker = async () => {
      while (!halted) {
        await pacer?.acquire()
        const began = Date.now()
        const t = await operations.claimTarget(opId).catch((err) => {
          pacer?.release(0)
          throw err
        })
        if (!t) {
          pacer?.release(0)
          const c = await operations.counts(opId)
          if (opts.maxFailures !== undefined && c.failed >= opts.maxFailures) halted ??= `stopped after ${c.failed} failures (--max-failures ${opts.maxFailures})`
          else if (c.pending === 0) return
          else if (c.canaryFailed > 0) {
            halted ??= 'a canary target failed; the other targets were not started'
          } else {
            await operations.releaseDeadClaims(opId)
            await sleep(100)
          }
          continue
        }
        const target: MigrationTarget = { server: t.server, database: t.database, schema: t.schema, role: t.role, label: t.target }
        pacer?.follow(t.server)
        try {
          await faultPoint('migrate:target')
          const r = await migrateTarget(dataPlane.driver(t.server).admin(t.database), target, this.filesOf.get(t.target) ?? files, { around: this.o.extra?.around })
          await operations.finishTarget(opId, t.target, 'done', r.applied, null)
          events.emit('migration.target_done', { operationId: opId, target: t.target, tenant: t.slug, applied: r.applied })
        } catch (err) {
          await operations.finishTarget(opId, t.target, 'failed', [], (err as Error).message)
          events.emit('migration.target_failed', { operationId: opId, target: t.target, tenant: t.slug, error: err as Error })
          if (opts.maxFailures !== undefined && (await operations.counts(opId)).failed >= opts.maxFailures) {
            halted ??= `stopped after ${opts.maxFailures} failures (--max-failures ${opts.maxFailures})`
          }
        } finally {
          pacer?.release(Date.now() - began)
        }
        await report()
      }
    }
    try {
      await Promise.all(Array.from({ length: concurrency }, worker))
    } finally {
      await pacer?.stop()
    }
    await report(true)
    return { halted, pace: pacer?.report() }
  }

  /** Join the running migrate operation of the same files and scope, or start one with its targets. */
  private async joinOrStart(work: PlannedTarget[], opts: FleetMigrateOptions): Promise<string> {
    const { dataPlane, operations, files } = this.o
    const filesHash = createHash('sha256').update([...files, ...(this.o.extra?.all() ?? [])].map((f) => `${f.version}:${f.checksum}`).join('\n')).digest('hex')
    const scope = JSON.stringify({ only: [...(opts.only ?? [])].sort(), canary: [...(opts.canary ?? [])].sort() })
    const main = dataPlane.server('main')
    return dataPlane.driver('main').admin(main.mainDatabase).transaction(async (tx) => {
      await tx.query('SELECT pg_advisory_xact_lock(hashtext($1))', ['tenantry.migrate.operation'])
      const existing = await tx.query<{ id: string }>(
        `SELECT id FROM tenantry.operations WHERE kind = 'migrate' AND state = 'running'
         AND params->>'filesHash' = $1 AND params->>'scope' = $2 ORDER BY created_at LIMIT 1`,
        [filesHash, scope],
      )
      if (existing.rows[0]) return existing.rows[0].id
      const op = await operations.start('migrate', { params: { filesHash, scope, files: files.length, targets: work.length }, step: 'targets', startedBy: opts.startedBy }, tx)
      for (const t of work) {
        const s = sql.insertTarget(op.id, { target: t.label, server: t.server, database: t.database, schema: t.schema, role: t.role, tier: t.tier, tenantId: t.tenantId, slug: t.slug, canary: t.canary })
        await tx.query(s.text, s.values)
      }
      return op.id
    })
  }

  private async readLedgers(targets: { server: string; database: string }[]): Promise<Map<string, Map<string, Map<string, string>>>> {
    const { dataPlane } = this.o
    const keys = [...new Set(targets.map((t) => `${t.server}\0${t.database}`))]
    const out = new Map<string, Map<string, Map<string, string>>>()
    let next = 0
    const reader = async () => {
      while (next < keys.length) {
        const key = keys[next++]
        const [server, database] = key.split('\0')
        const res = await dataPlane.driver(server).admin(database).query<{ target: string; version: string; checksum: string }>(
          'SELECT target, version, checksum FROM tenantry.migrations',
        )
        const bySchema = new Map<string, Map<string, string>>()
        for (const r of res.rows) {
          let m = bySchema.get(r.target)
          if (!m) bySchema.set(r.target, (m = new Map()))
          m.set(r.version, r.checksum)
        }
        out.set(key, bySchema)
      }
    }
    await Promise.all(Array.from({ length: Math.min(8, keys.length) }, reader))
    return out
  }

  private result(operationId: string | null, state: FleetMigrateResult['state'], targets: FleetTargetResult[], started: number): FleetMigrateResult {
    const counts = { total: targets.length, done: 0, failed: 0, skipped: 0, pending: 0 }
    for (const t of targets) counts[t.status]++
    return { operationId, state, targets, counts, elapsedMs: Date.now() - started }
  }
}

function toResult(r: OperationTarget): FleetTargetResult {
  const status = r.state === 'running' ? 'pending' : r.state
  return { target: r.target, tier: r.tier as Tier, server: r.server, tenant: r.slug, status, applied: r.applied, ...(r.error ? { error: r.error } : {}) }
}

function progressOf(c: { total: number; done: number; failed: number; skipped: number; pending: number }, running: number, started: number): MigrateProgress {
  const finished = c.done + c.failed + c.skipped
  const secs = (Date.now() - started) / 1000
  const rate = secs > 0 ? finished / secs : 0
  const left = c.total - finished
  return { ...c, running, rate, etaSeconds: rate > 0 ? left / rate : left === 0 ? 0 : null }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms))
}
