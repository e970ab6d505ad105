import type { Catalog } from '../catalog/catalog.ts'
import { checkResidency } from '../security/residency.ts'
import { TenantryError, isTenantryError } from '../core/errors.ts'
import type { Placement, Tenant, Tier } from '../core/types.ts'
import { TIERS } from '../core/types.ts'
import { isUuid, printable } from '../core/validation.ts'
import type { AdminQueryable } from '../data/driver.ts'
import type { DataPlane } from '../data/data-plane.ts'
import { TIER_STRATEGIES, type TemplateSource } from '../data/tiers/index.ts'
import { tenantToken } from '../data/tenant-token.ts'
import { faultPoint } from '../lifecycle/faults.ts'
import { createTarget, migrateTarget, requireMigrations, type MigrationFile } from '../lifecycle/migrator.ts'
import type { TenantExtraMigrations } from '../lifecycle/lifecycle.ts'
import type { Operation, Operations } from '../lifecycle/operations.ts'
import type { AuditLog } from '../audit/index.ts'
import { copyTenant, removeTenantRoom, tenantTables, type TenantTable } from '../portability/index.ts'
import type { Queryable } from '../data/executor.ts'
import * as sql from './sql.ts'
import { CatchUp, dropCapture } from './catch-up.ts'
import { deleteTenantRows } from '../portability/sql.ts'
import type { Advice, AdviseOptions } from '../observe/types.ts'
import type { Server } from '../core/types.ts'
import { planMoves, runPlanned, type AppliedMove, type ApplyAdviceOptions } from './rebalance.ts'

/** Options of the moves part of {@link createTenantry} (`moves: { … }`). */
export interface MovesOptions {
  /** How long a finished move keeps the room it left, for `move --rollback`. Default 15 minutes. */
  graceMs?: number
  /**
   * The automatic promotion policy (off by default): every `everyMs` this process asks for
   * placement advice (with `thresholds`, see `tenantry.advise()`) and carries out at most
   * `maxMoves` promotions (default 1), as moves started by `policy:auto-promote`. Demotions and
   * rebalancing stay manual (`tenantry advise --apply`).
   */
  autoPromote?: { everyMs: number; maxMoves?: number; thresholds?: AdviseOptions }
}

/** Progress of a move, for a progress bar. */
export interface MoveProgress {
  step: 'prepare' | 'capture' | 'copy' | 'verify' | 'catchup' | 'fence' | 'switch' | 'cleanup'
  table?: string
  tablesDone: number
  tables: number
  rows: number
}

export interface MoveOptions {
  tier: Tier
  /** Server of the new placement. Default: the tenant's server. */
  server?: string
  /** Move to a server of another region than the tenant's; recorded in the audit log. */
  force?: boolean
  /** Override the grace period of this move's old room (ms). */
  graceMs?: number
  startedBy?: string
  onProgress?: (p: MoveProgress) => void
}

/**
 * Rows and checksum of one table, in the old room and the new. An online move checksums the
 * snapshot it copied (`sourceChecksum`/`targetChecksum`), then under the fence the rows changed
 * since (`changed` keys) and the row count (`rows`, at the switch).
 */
export interface MoveTableCheck {
  table: string
  rows: number
  sourceChecksum: string
  targetChecksum: string
  /** Keys caught up after the copy and verified under the fence (online moves). */
  changed?: number
}

export interface MoveResult {
  tenant: Tenant
  operationId: string
  from: { tier: Tier; placement: Placement }
  to: { tier: Tier; placement: Placement }
  tables: MoveTableCheck[]
  rows: number
  /** How long the tenant's writes were fenced (they waited, and were then run at the new placement). */
  fenceMs: number
  /** `online`: copy and catch-up while writes went on, fenced for the last round only; `offline`: fenced over the whole copy (PGlite, or a table without a primary key). */
  mode: 'online' | 'offline'
  /**
   * Catch-up rounds before the fence, keys applied in all and in the last round, and where the
   * fence's time went: putting it up, the last round (with the sequences), the verification of the
   * changed keys and row counts, the switch (online moves).
   */
  catchUp?: { rounds: number; keys: number; lastKeys: number; fence: { upMs: number; lastRoundMs: number; verifyMs: number; switchMs: number } }
  ms: number
  /** Until when the old room is kept for `move --rollback`; null when it was removed at once. */
  keptUntil: Date | null
  /** Set when the old room was to be removed at once but could not be (it stays recorded for cleanup). */
  cleanupError?: string
}

/** A room a finished move left behind, kept for rollback until its grace period ends. */
export interface KeptRoom {
  operationId: string
  tenantId: string
  tier: Tier
  placement: Placement
  toTier: Tier
  toPlacement: Placement
  keepUntil: Date
}

interface Deps {
  catalog: Catalog
  dataPlane: DataPlane
  operations: Operations
  files: MigrationFile[]
  admin: AdminQueryable
  audit: AuditLog
  /** Drop a tenant's cached values after its move (the tenant cache). */
  flushCache: (tenant: Tenant) => Promise<unknown>
  options: MovesOptions
}

interface MoveParams {
  from: { tier: Tier; placement: Placement }
  to: { tier: Tier; placement: Placement }
  graceMs: number
  force: boolean
}

/** The catch-up stops and the fence goes on once a round applies this few keys (or after {@link CATCH_UP_ROUNDS} rounds). */
const CATCH_UP_SMALL = 50
const CATCH_UP_ROUNDS = 30

/** Who the automatic promotion policy's moves are started by (the audit entry's actor). */
export const AUTO_PROMOTER = 'policy:auto-promote'

const noTemplate: TemplateSource = { cloneInto: async () => false }

/**
 * Moves of a tenant between tiers and servers, each a durable operation (invariant 7): the new
 * room is made, the tenant's writes are fenced at the old room (they wait in the data plane and
 * then run at the new placement), one consistent snapshot is copied with the portability copy
 * engine, every table is verified by rows and checksum, and the catalog flips the placement in one
 * transaction whose notification re-routes every process. The old room is kept for a grace period
 * for {@link Moves.rollback}.
 *
 * @example
 * ```ts
 * const r = await tenantry.moves.move('acme', { tier: 'database', server: 'eu-2' })
 * console.log(r.rows, r.fenceMs, r.tables)
 * await tenantry.moves.rollback('acme') // within the grace period
 * ```
 */
export class Moves {
  readonly kinds: readonly string[] = ['move']

  constructor(private readonly d: Deps) {}

  private extra?: TenantExtraMigrations

  /** New rooms also get these files (the tenant's plugins' migration sets; set once the configuration is open). */
  useExtraMigrations(extra: TenantExtraMigrations | undefined): void {
    this.extra = extra
  }

  async init(): Promise<void> {
    await this.d.admin.transaction(async (tx) => { await tx.exec(sql.MOVES_SCHEMA_SQL) })
  }

  /** Move a tenant to another tier and/or server. */
  async move(slugOrId: string, opts: MoveOptions): Promise<MoveResult> {
    if (!opts || !TIERS.includes(opts.tier)) throw new TenantryError('VALIDATION_FAILED', `Tier '${printable(String(opts?.tier))}' is not one of ${TIERS.join(', ')}.`)
    const graceMs = opts.graceMs ?? this.d.options.graceMs ?? 15 * 60_000
    if (!Number.isFinite(graceMs) || graceMs < 0) throw new TenantryError('VALIDATION_FAILED', 'graceMs must be a number of milliseconds ≥ 0.')
    requireMigrations(this.d.files)
    const tenant = await this.mustFind(slugOrId)
    const serverName = opts.server ?? tenant.placement.server
    // A server another process added is registered from the catalog; one it does not hold is refused.
    await this.d.dataPlane.ensureServer(serverName).catch((err: unknown) => { if (!isTenantryError(err, 'SERVER_NOT_FOUND')) throw err })
    if (!this.d.dataPlane.serverNames().includes(serverName)) {
      throw new TenantryError('SERVER_NOT_FOUND', `Server '${printable(serverName)}' is not registered; add it with 'tenantry servers add' first.`, { status: 400 })
    }
    if (tenant.status === 'provisioning' || tenant.status === 'deleted') {
      throw new TenantryError('TENANT_NOT_READY', `Tenant '${tenant.slug}' is ${tenant.status}; only an active or suspended tenant can be moved.`)
    }
    const server = this.d.dataPlane.server(serverName)
    // The one residency rule (src/security/residency.ts); a forced move is recorded in its audit entry (params.force).
    checkResidency(tenant, { kind: 'server', name: server.name, region: server.region }, { force: opts.force })
    if (tenant.tier === opts.tier && tenant.placement.server === serverName) {
      throw new TenantryError('VALIDATION_FAILED', `Tenant '${tenant.slug}' is already ${opts.tier} on server '${serverName}'; nothing to move.`)
    }
    // A room kept by an earlier move is stale (the tenant has been served elsewhere since): it goes first, as it may have the new room's name.
    for (const kept of await this.keptRooms(tenant.id)) await this.removeKept(kept)
    const to = { tier: opts.tier, placement: TIER_STRATEGIES[opts.tier].placement(tenant.id, server, this.d.dataPlane.opts.naming) }
    // What a rolled-back move could not remove (its server had stopped) goes before it is made again.
    await this.removeRoomOf({ ...tenant, ...to }, tenant).catch((err) => {
      if (isTenantryError(err)) throw err
      throw new TenantryError('MOVE_FAILED', `Server '${serverName}' cannot be reached (${(err as Error)?.message ?? String(err)}); nothing was changed. Check the server and run the move again.`, { cause: err })
    })
    const params: MoveParams = { from: { tier: tenant.tier, placement: tenant.placement }, to, graceMs, force: Boolean(opts.force) }
    const op = await this.d.operations.start('move', { tenantId: tenant.id, slug: tenant.slug, params, step: 'prepare', startedBy: opts.startedBy }).catch((err) => {
      if (isTenantryError(err) && err.code === 'CONFLICT') {
        throw new TenantryError('MOVE_IN_PROGRESS', `Tenant '${tenant.slug}' has another operation running (a move?); wait for it ('tenantry operations list --state running') or resume it ('tenantry operations resume').`, { cause: err })
      }
      throw err
    })
    return this.d.operations.holding(async () => {
      try {
        return await this.runMove(op, tenant, params, opts)
      } catch (err) {
        await this.rollBack(op, params).catch(() => undefined)
        if (isTenantryError(err)) throw err
        throw new TenantryError('MOVE_FAILED', `Moving '${tenant.slug}' failed and was rolled back; it still serves from its old placement: ${(err as Error)?.message ?? String(err)}`, { cause: err, details: { operationId: op.id } })
      }
    })
  }

  private async runMove(op: Operation, tenant: Tenant, p: MoveParams, opts: MoveOptions): Promise<MoveResult> {
    const started = Date.now()
    const progress = (x: MoveProgress) => opts.onProgress?.(x)
    const source = { ...tenant, tier: p.from.tier, placement: p.from.placement }
    const target = { ...tenant, tier: p.to.tier, placement: p.to.placement }
    progress({ step: 'prepare', tablesDone: 0, tables: 0, rows: 0 })
    await faultPoint('move:prepare')
    await this.makeRoom(target)

    const token = tenantToken(this.d.dataPlane.tenantKey, tenant.id)
    const from = this.place(source, token)
    const into = this.place(target, token)
    const tableList = await tenantTables(from.driver.admin(from.database), from.schema)
    let rows = 0
    let done = 0
    const copied = (table: string, n: number) => {
      rows += n
      progress({ step: 'copy', table, tablesDone: ++done, tables: tableList.length, rows })
    }
    const catchUp = this.online(source, target) ? await CatchUp.plan(tenant.id, token, this.roomOf(source), this.roomOf(target), tableList) : null
    let fenceStart: number
    let tables: MoveTableCheck[]
    let rounds: MoveResult['catchUp']
    if (catchUp) {
      // Online (docs/moves.md): capture, copy and catch up while the tenant writes; fence only for the last round.
      await this.d.operations.step(op.id, 'capture')
      await faultPoint('move:capture')
      progress({ step: 'capture', tablesDone: 0, tables: tableList.length, rows: 0 })
      await catchUp.install()
      await this.d.operations.step(op.id, 'copy')
      await faultPoint('move:copy')
      let snapshot = new Map<string, { n: number; sum: string }>()
      await copyTenant(from, into, copied, { inSnapshot: async (tx) => { snapshot = await catchUp.snapshotSums(tx) } })
      await this.d.operations.step(op.id, 'verify')
      await faultPoint('move:verify')
      const copiedSums = await catchUp.verifySnapshot(snapshot)
      progress({ step: 'verify', tablesDone: tableList.length, tables: tableList.length, rows })
      await this.d.operations.step(op.id, 'catchup')
      await faultPoint('move:catchup')
      rounds = { rounds: 0, keys: 0, lastKeys: 0, fence: { upMs: 0, lastRoundMs: 0, verifyMs: 0, switchMs: 0 } }
      for (let n = Infinity; n > CATCH_UP_SMALL && rounds.rounds < CATCH_UP_ROUNDS; rounds.rounds++) {
        n = await catchUp.round()
        rounds.keys += n
        progress({ step: 'catchup', tablesDone: tableList.length, tables: tableList.length, rows: rounds.keys })
      }
      await this.d.operations.step(op.id, 'fence')
      await faultPoint('move:fence')
      progress({ step: 'fence', tablesDone: tableList.length, tables: tableList.length, rows })
      fenceStart = Date.now()
      await this.fence(source, op.id, false)
      rounds.fence.upMs = Date.now() - fenceStart
      const last = await catchUp.finish(copiedSums)
      tables = last.tables
      rounds.lastKeys = last.lastKeys
      rounds.fence.lastRoundMs = last.lastRoundMs
      rounds.fence.verifyMs = last.verifyMs
      rounds.keys += last.lastKeys
    } else {
      // Offline: the fence covers the whole copy (PGlite has no second connection to catch up with).
      await this.d.operations.step(op.id, 'fence')
      await faultPoint('move:fence')
      progress({ step: 'fence', tablesDone: 0, tables: 0, rows: 0 })
      fenceStart = Date.now()
      await this.fence(source, op.id)
      await this.d.operations.step(op.id, 'copy')
      await faultPoint('move:copy')
      await copyTenant(from, into, copied)
      await this.d.operations.step(op.id, 'verify')
      await faultPoint('move:verify')
      tables = await this.verify(source, target)
      progress({ step: 'verify', tablesDone: tables.length, tables: tables.length, rows })
    }

    await this.d.operations.step(op.id, 'switch')
    await faultPoint('move:switch')
    const keepUntil = new Date(Date.now() + p.graceMs)
    const moved = await this.d.catalog.setPlacement(tenant.id, p.to.tier, p.to.placement, async (tx) => {
      await tx.query(...args(sql.insertMoveSource({ operationId: op.id, tenantId: tenant.id, tier: p.from.tier, placement: p.from.placement, toTier: p.to.tier, toPlacement: p.to.placement, keepUntil })))
      await this.d.audit.append({
        actor: opts.startedBy ?? op.startedBy, action: 'tenant.move', tenantId: tenant.id, slug: tenant.slug,
        before: p.from, after: p.to, details: { operationId: op.id, force: p.force, rows },
      }, tx)
    })
    const fenceMs = Date.now() - fenceStart
    if (rounds) rounds.fence.switchMs = fenceMs - rounds.fence.upMs - rounds.fence.lastRoundMs - rounds.fence.verifyMs
    progress({ step: 'switch', tablesDone: tables.length, tables: tables.length, rows })
    await this.d.flushCache(moved).catch(() => undefined)
    await faultPoint('move:cleanup')
    let keptUntil: Date | null = keepUntil
    let cleanupError: string | undefined
    if (p.graceMs === 0) {
      progress({ step: 'cleanup', tablesDone: tables.length, tables: tables.length, rows })
      // The move is done: a room that cannot be removed now stays recorded for 'move --cleanup'.
      await this.removeKept({ operationId: op.id, tenantId: tenant.id, tier: p.from.tier, placement: p.from.placement, toTier: p.to.tier, toPlacement: p.to.placement, keepUntil }).then(
        () => { keptUntil = null },
        (err: unknown) => { cleanupError = `The old room could not be removed (${(err as Error)?.message ?? String(err)}); 'tenantry move --cleanup' removes it later.` },
      )
    }
    const result = { from: p.from, to: p.to, tables, rows, fenceMs, mode: catchUp ? 'online' as const : 'offline' as const, ...(rounds ? { catchUp: rounds } : {}), ms: Date.now() - started, keptUntil, ...(cleanupError ? { cleanupError } : {}) }
    await this.d.operations.finish(op.id, 'done', null, result, undefined, 'done')
    return { tenant: moved, operationId: op.id, ...result }
  }

  /** The new room at the latest migrations (the pooled tables of a server are only brought up to date). */
  private async makeRoom(target: Tenant): Promise<void> {
    const { dataPlane, files } = this.d
    const ctx = dataPlane.tierContext(target.placement.server)
    const mt = dataPlane.migrationTarget(target)
    const preamble = await TIER_STRATEGIES[target.tier].prepare(ctx, target, noTemplate)
    const admin = ctx.driver.admin(mt.database)
    if (target.tier === 'pooled') await migrateTarget(admin, mt, files)
    else await createTarget(admin, mt, files, preamble)
    const more = this.extra ? await this.extra.forTenant(target) : []
    if (more.length > 0) await migrateTarget(admin, mt, [...files, ...more], { around: this.extra!.around })
  }

  /**
   * Fence the tenant's writes at `room`: the fence row commits first, then a trigger is put on each
   * table (CREATE TRIGGER waits for every transaction that wrote to the table), so every write of
   * the tenant that can still commit there is refused and re-run by the data plane elsewhere.
   */
  private async fence(room: Tenant, operationId: string, install = true): Promise<void> {
    const { database, schema, admin } = this.roomOf(room)
    // An online move installed the fence's table and function with its capture already.
    if (install) await admin.transaction(async (tx) => { await tx.exec(sql.FENCE_SCHEMA_SQL) })
    await admin.query(...args(sql.insertFence(room.id, schema, operationId)))
    const tables = await tenantTables(admin, schema)
    for (const t of tables) await admin.exec(sql.createFenceTrigger(schema, t.name))
    void database
  }

  /** Take the fence off a room (its triggers go when no other tenant of the schema is fenced). */
  private async unfence(room: Tenant): Promise<void> {
    const { schema, admin, exists, driver, database } = this.roomOf(room)
    if (room.tier === 'database' && !(await driver.databaseExists(database))) return
    if (!(await admin.query<{ ok: boolean }>(...args(sql.hasFenceTable))).rows[0]?.ok) return
    if (!(await exists())) {
      // A schema room already dropped: its fence row and captured changes live on in the database.
      await admin.query(...args(sql.deleteFence(room.id, schema)))
      await admin.query(...args(sql.deleteChanges(room.id)))
      return
    }
    await admin.transaction(async (tx) => {
      await tx.exec(sql.FENCE_SCHEMA_SQL)
      await liftFence(tx, room.id, schema, await tenantTables(tx, schema))
    })
  }

  /**
   * A pooled room's rows go in the same transaction that lifts its fence: a write that still
   * reached the old room (a process that had not heard of the switch) is refused until the rows
   * are gone, never accepted and then deleted.
   */
  private async removePooledRows(room: Tenant): Promise<void> {
    const { schema, admin } = this.roomOf(room)
    const fenced = Boolean((await admin.query<{ ok: boolean }>(...args(sql.hasFenceTable))).rows[0]?.ok)
    await admin.transaction(async (tx) => {
      await tx.query(...args(sql.CLEANUP_SETTING))
      await tx.query("SELECT set_config('tenantry.tenant_id', $1, true)", [tenantToken(this.d.dataPlane.tenantKey, room.id)])
      const tables = await tenantTables(tx, schema)
      for (const t of [...tables].reverse()) await tx.query(...args(deleteTenantRows(schema, t.name, room.id)))
      if (fenced) await liftFence(tx, room.id, schema, tables)
    })
  }

  /** Rows and checksum of every table, old room against new; a difference fails the move. */
  private async verify(source: Tenant, target: Tenant): Promise<MoveTableCheck[]> {
    const a = this.roomOf(source)
    const b = this.roomOf(target)
    const token = tenantToken(this.d.dataPlane.tenantKey, source.id)
    const sum = (room: ReturnType<Moves['roomOf']>, table: string) => room.driver.copyTransaction(room.database, 'snapshot', async (tx) => {
      await tx.query("SELECT set_config('tenantry.tenant_id', $1, true)", [token])
      const r = (await tx.query<{ n: string | number; sum: string }>(...args(sql.tableChecksum(room.schema, table, source.id)))).rows[0]
      return { n: Number(r.n), sum: r.sum }
    })
    const out: MoveTableCheck[] = []
    for (const t of await tenantTables(a.admin, a.schema)) {
      const [x, y] = [await sum(a, t.name), await sum(b, t.name)]
      if (x.n !== y.n || x.sum !== y.sum) {
        throw new TenantryError('MOVE_FAILED', `Verification failed for table '${t.name}': ${x.n} rows (checksum ${x.sum}) in the old room, ${y.n} (checksum ${y.sum}) in the new. The move was rolled back.`)
      }
      out.push({ table: t.name, rows: x.n, sourceChecksum: x.sum, targetChecksum: y.sum })
    }
    return out
  }

  /**
   * Undo an unfinished move: before the switch the new room goes and the fence comes off (the
   * tenant serves from its old room, as it did); after it, the move is done and only finishes.
   */
  private async rollBack(op: Operation, p: MoveParams): Promise<void> {
    const current = await this.d.catalog.byId(op.tenantId!)
    const base = current ?? ({ id: op.tenantId!, slug: op.slug! } as Tenant)
    if (current && current.tier === p.to.tier && samePlacement(current.placement, p.to.placement)) {
      await this.d.operations.finish(op.id, 'done', null, { from: p.from, to: p.to, resumed: true }, undefined, 'done')
      return
    }
    await this.d.operations.step(op.id, 'rollback')
    const target = { ...base, tier: p.to.tier, placement: p.to.placement }
    const source = { ...base, tier: p.from.tier, placement: p.from.placement }
    // The old room takes writes again first: the new one may be on a server that stopped.
    await this.unfence(source)
    const left = await this.removeRoomOf(target, source).then(() => null, (err: unknown) => (err as Error)?.message ?? String(err))
    await this.d.operations.finish(op.id, 'rolled_back', left === null
      ? 'The move did not finish; the new room was removed and the tenant serves from its old placement. Run the move again.'
      : `The move did not finish; the tenant serves from its old placement. The new room (${p.to.placement.server}/${p.to.placement.database}${p.to.placement.schema ? `/${p.to.placement.schema}` : ''}) could not be removed (${left}); the next move of the tenant to it replaces it.`)
  }

  /** Remove `room`, keeping the tenant's role when `other` (its other room) shares it. */
  private async removeRoomOf(room: Tenant, other: Tenant): Promise<void> {
    // Roles belong to a cluster: two "servers" may be databases of one cluster.
    const sharedRole = room.tier !== 'pooled' && other.tier !== 'pooled' && this.sameCluster(room.placement.server, other.placement.server)
    const { exists } = this.roomOf(room)
    if (room.tier === 'pooled') return this.removePooledRows(room)
    if (!(await exists())) return
    await removeTenantRoom(this.d.dataPlane, room, sharedRole)
  }

  /** Finish a move whose process died: rolled back before the switch, finished after it. */
  async resume(op: Operation): Promise<void> {
    await this.d.operations.holding(() => this.rollBack(op, op.params as unknown as MoveParams))
  }

  /**
   * Move a tenant back to the room its last move left, within the grace period: the kept room is
   * stale (writes went to the new one since), so this is a new move back, fenced and verified the
   * same way.
   *
   * @example
   * ```ts
   * await tenantry.moves.rollback('acme')
   * ```
   */
  async rollback(slugOrId: string, opts: Omit<MoveOptions, 'tier' | 'server'> = {}): Promise<MoveResult> {
    const tenant = await this.mustFind(slugOrId)
    const kept = (await this.keptRooms(tenant.id))[0]
    if (!kept || kept.keepUntil.getTime() <= Date.now()) {
      throw new TenantryError('NOT_FOUND', `Tenant '${tenant.slug}' has no move within its grace period to roll back; move it with 'tenantry move ${tenant.slug} --tier <tier> --server <server>' instead.`)
    }
    return this.move(tenant.id, { ...opts, tier: kept.tier, server: kept.placement.server, force: true })
  }

  /**
   * Carry out placement advice (`tenantry advise --apply`): promotions, demotions and server
   * rebalancing as moves, at most `concurrency` at once and one per server at a time by default.
   *
   * @example
   * ```ts
   * const results = await tenantry.moves.applyAdvice(await tenantry.advise(), { maxMoves: 3 })
   * for (const r of results) console.log(r.slug, r.status, r.error?.code)
   * ```
   */
  async applyAdvice(advice: Advice[], servers: Server[], opts: ApplyAdviceOptions = {}): Promise<AppliedMove[]> {
    const regions = new Map<string, string | null>()
    for (const a of advice) {
      for (const id of [a.tenantId, ...(a.movable ?? []).map((m) => m.tenantId)]) {
        if (id && !regions.has(id)) regions.set(id, (await this.d.catalog.byId(id))?.region ?? null)
      }
    }
    const plan = planMoves(advice, servers, (id) => regions.get(id) ?? null)
    return runPlanned(plan, opts, async (p) => {
      const r = await this.move(p.tenantId, { tier: p.tier, server: p.server, startedBy: opts.startedBy })
      return { operationId: r.operationId, ms: r.ms }
    })
  }

  /**
   * One turn of the automatic promotion policy: only the `promote` advice is carried out, at most
   * `maxMoves` (default 1) moves, started by `policy:auto-promote` (the audit entry's actor).
   *
   * @example
   * ```ts
   * const results = await tenantry.moves.autoPromote(await tenantry.advise({ pooledShare: 0.3 }), await tenantry.catalog.listServers())
   * ```
   */
  autoPromote(advice: Advice[], servers: Server[], opts: { maxMoves?: number } = {}): Promise<AppliedMove[]> {
    return this.applyAdvice(advice.filter((a) => a.kind === 'promote'), servers, { maxMoves: opts.maxMoves ?? this.d.options.autoPromote?.maxMoves ?? 1, startedBy: AUTO_PROMOTER })
  }

  /**
   * Run {@link Moves.autoPromote} every `autoPromote.everyMs` when the option is set; returns the
   * function that stops it. A turn's failure is reported to `onError`, never thrown.
   */
  startAutoPromote(advise: (o?: AdviseOptions) => Promise<Advice[]>, servers: () => Promise<Server[]>, onError: (error: unknown) => void): () => void {
    const policy = this.d.options.autoPromote
    if (!policy) return () => undefined
    if (!Number.isFinite(policy.everyMs) || policy.everyMs < 1000) throw new TenantryError('VALIDATION_FAILED', `moves.autoPromote.everyMs must be at least 1000 ms; got ${String(policy.everyMs)}.`)
    let running = false
    const timer = setInterval(() => {
      if (running) return
      running = true
      void (async () => this.autoPromote(await advise(policy.thresholds), await servers()))().catch(onError).finally(() => { running = false })
    }, policy.everyMs)
    timer.unref()
    return () => clearInterval(timer)
  }

  /** Rooms kept by finished moves (of one tenant when given), newest first. */
  async keptRooms(tenantId?: string): Promise<KeptRoom[]> {
    const res = await this.d.admin.query<{ operation_id: string; tenant_id: string; tier: Tier; placement: Placement | string; to_tier: Tier; to_placement: Placement | string; keep_until: Date | string }>(...args(sql.moveSourcesOf(tenantId ?? null, false)))
    return res.rows.map((r) => ({
      operationId: r.operation_id, tenantId: r.tenant_id, tier: r.tier, placement: json(r.placement), toTier: r.to_tier, toPlacement: json(r.to_placement), keepUntil: new Date(r.keep_until),
    }))
  }

  /**
   * Remove the rooms whose grace period ended (all kept rooms with `all`). Run by `tenantry move
   * --cleanup` and before every move of the same tenant.
   *
   * @example
   * ```ts
   * const removed = await tenantry.moves.cleanup()
   * ```
   */
  async cleanup(opts: { all?: boolean } = {}): Promise<KeptRoom[]> {
    const rooms = (await this.keptRooms()).filter((k) => opts.all || k.keepUntil.getTime() <= Date.now())
    for (const k of rooms) await this.removeKept(k)
    return rooms
  }

  private async removeKept(k: KeptRoom): Promise<void> {
    const tenant = (await this.d.catalog.byId(k.tenantId)) ?? ({ id: k.tenantId, slug: k.tenantId } as Tenant)
    const room = { ...tenant, tier: k.tier, placement: k.placement }
    const current = { ...tenant, tier: k.toTier, placement: k.toPlacement }
    await this.removeRoomOf(room, current)
    await this.unfence(room)
    await this.d.admin.query(...args(sql.deleteMoveSource(k.operationId)))
  }

  /** Both rooms on PostgreSQL servers: the move catches up online (PGlite runs one statement at a time: it moves offline). */
  private online(a: Tenant, b: Tenant): boolean {
    return [a, b].every((t) => !this.d.dataPlane.server(t.placement.server).url.startsWith('pglite:'))
  }

  private sameCluster(a: string, b: string): boolean {
    if (a === b) return true
    const where = (name: string) => {
      const url = this.d.dataPlane.server(name).url
      if (url.startsWith('pglite:')) return url
      const u = new URL(url)
      return `${u.hostname}:${u.port || '5432'}`
    }
    return where(a) === where(b)
  }

  private roomOf(t: Tenant) {
    const mt = this.d.dataPlane.migrationTarget(t)
    const driver = this.d.dataPlane.driver(t.placement.server)
    return {
      driver, database: mt.database, schema: mt.schema, admin: driver.admin(mt.database),
      exists: async () => {
        if (t.tier === 'database') return driver.databaseExists(mt.database)
        if (t.tier === 'schema') return (await driver.admin(mt.database).query('SELECT 1 FROM pg_namespace WHERE nspname = $1', [mt.schema])).rowCount > 0
        return true
      },
    }
  }

  private place(t: Tenant, token: string) {
    const r = this.roomOf(t)
    return { driver: r.driver, database: r.database, schema: r.schema, tenantId: t.id, token }
  }

  private async mustFind(slugOrId: string): Promise<Tenant> {
    if (typeof slugOrId !== 'string' || slugOrId.length === 0) throw new TenantryError('TENANT_INVALID', 'A tenant slug or id is required.')
    const t = isUuid(slugOrId) ? await this.d.catalog.byId(slugOrId) : await this.d.catalog.bySlug(slugOrId)
    if (!t) throw new TenantryError('TENANT_NOT_FOUND', `No tenant has the slug or id '${printable(slugOrId)}'.`)
    return t
  }
}

/** Take one tenant's fence off a schema; its triggers go when no other tenant of the schema is fenced. */
async function liftFence(tx: { query: Queryable['query']; exec(text: string): Promise<unknown> }, tenantId: string, schema: string, tables: TenantTable[]): Promise<void> {
  await dropCapture(tx, tenantId, schema, tables)
  await tx.query(...args(sql.deleteFence(tenantId, schema)))
  const left = (await tx.query<{ n: number }>(...args(sql.fencesLeft(schema)))).rows[0].n
  if (left === 0) for (const t of tables) await tx.exec(sql.dropFenceTrigger(schema, t.name))
}

function samePlacement(a: Placement, b: Placement): boolean {
  return a.server === b.server && a.database === b.database && (a.schema ?? null) === (b.schema ?? null)
}

function json<T>(v: T | string): T {
  return typeof v === 'string' ? (JSON.parse(v) as T) : v
}

function args(s: { text: string; values: unknown[] }): [string, unknown[]] {
  return [s.text, s.values]
}
