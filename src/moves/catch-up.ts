import { TenantryError } from '../core/errors.ts'
import { quoteIdent } from '../core/sql.ts'
import type { AdminQueryable, ServerDriver } from '../data/driver.ts'
import type { Queryable } from '../data/executor.ts'
import { raiseSequences, tenantTables, type TenantTable } from '../portability/copy-engine.ts'
import * as sql from './sql.ts'

/** One room of a move, as the catch-up reaches it (owner connections). */
export interface CatchUpRoom {
  driver: ServerDriver
  database: string
  schema: string
  admin: AdminQueryable
}

/** Rows and checksum of one table in both rooms. */
export interface TableSums {
  table: string
  rows: number
  sourceChecksum: string
  targetChecksum: string
}

/**
 * The catch-up phase of an online move (docs/moves.md): a trigger captures the primary key of
 * every row the moving tenant writes in the old room (`tenantry.move_changes`, in the writing
 * transaction), the snapshot is copied and verified while writes go on, and rounds re-read the
 * captured keys from the old room (one snapshot per round) and upsert or delete them in the new
 * one (parents before children, deletes children first) until the backlog is small; then the
 * fence stops the writes for the last round, and only the keys changed since the copy and the row
 * counts are verified under it.
 */
export class CatchUp {
  /** Keys applied since the copy, per table (JSON array texts), for the verification under the fence. */
  private readonly changed = new Map<string, string[]>()

  private constructor(
    private readonly tenantId: string,
    private readonly token: string,
    private readonly source: CatchUpRoom,
    private readonly target: CatchUpRoom,
    private readonly tables: TenantTable[],
    /** The new room's own tables: their sequences are its own (another schema has other ones). */
    private readonly targetTables: TenantTable[],
    private readonly keys: Map<string, string[]>,
  ) {}

  /** The catch-up of a move, or null when a table has no primary key (the move then fences over the whole copy). */
  static async plan(tenantId: string, token: string, source: CatchUpRoom, target: CatchUpRoom, tables: TenantTable[]): Promise<CatchUp | null> {
    const res = await source.admin.query<{ table: string; columns: string[] | string }>(...args(sql.primaryKeys(source.schema)))
    const keys = new Map(res.rows.map((r) => [r.table, Array.isArray(r.columns) ? r.columns : r.columns.replace(/^\{|\}$/g, '').split(',')]))
    if (tables.some((t) => !keys.has(t.name))) return null
    return new CatchUp(tenantId, token, source, target, tables, await tenantTables(target.admin, target.schema), keys)
  }

  /**
   * The capture triggers, all in one transaction: CREATE TRIGGER waits for every open transaction
   * that wrote to the table, so a write either committed before (it is in the snapshot copied
   * next) or is captured.
   */
  async install(): Promise<void> {
    await this.source.admin.transaction(async (tx) => {
      await tx.exec(sql.FENCE_SCHEMA_SQL)
      await tx.query(...args(sql.deleteChanges(this.tenantId)))
      for (const t of this.tables) for (const ddl of sql.createCaptureTriggers(this.source.schema, t.name, this.tenantId, this.keys.get(t.name)!)) await tx.exec(ddl)
    })
  }

  /** Checksums of the snapshot being copied (run inside the copy's source transaction). */
  async snapshotSums(tx: Queryable): Promise<Map<string, { n: number; sum: string }>> {
    const out = new Map<string, { n: number; sum: string }>()
    for (const t of this.tables) out.set(t.name, await sums(tx, sql.tableChecksum(this.source.schema, t.name, this.tenantId)))
    return out
  }

  /** The new room against the snapshot it was loaded from, before any change is applied; fresh statistics for its planner. */
  async verifySnapshot(source: Map<string, { n: number; sum: string }>): Promise<TableSums[]> {
    const out: TableSums[] = []
    await this.inTarget('snapshot', async (tx) => {
      for (const t of this.tables) {
        const x = source.get(t.name)!
        const y = await sums(tx, sql.tableChecksum(this.target.schema, t.name, this.tenantId))
        if (x.n !== y.n || x.sum !== y.sum) throw mismatch(t.name, 'the copied snapshot', x, y)
        out.push({ table: t.name, rows: x.n, sourceChecksum: x.sum, targetChecksum: y.sum })
      }
    })
    // Statistics for both planners (the catch-up looks keys up by index), and the new room's visibility map so its row count under the fence is an index-only scan.
    for (const t of this.tables) await this.target.admin.exec(`VACUUM (ANALYZE) ${quoteIdent(this.target.schema)}.${quoteIdent(t.name)}`)
    for (const t of this.tables) await this.source.admin.exec(`ANALYZE ${quoteIdent(this.source.schema)}.${quoteIdent(t.name)}`)
    return out
  }

  /** One round: take the captured keys, re-read them in one snapshot of the old room, apply them to the new. Resolves with the keys applied. */
  async round(last = false): Promise<number> {
    const taken = (await this.source.admin.query<{ table_name: string; keys: string; n: number }>(...args(sql.takeChanges(this.tenantId)))).rows
    const raise = (tx: Queryable) => last ? raiseSequences(tx, this.target.schema, this.tenantId, this.targetTables) : Promise.resolve()
    if (taken.length === 0) {
      if (last) await this.inTarget('write', raise)
      return 0
    }
    const byTable = new Map(taken.map((r) => [r.table_name, r.keys]))
    const work = this.tables.filter((t) => byTable.has(t.name))
    const read = await this.source.driver.copyTransaction(this.source.database, 'snapshot', async (tx) => {
      await pointAt(tx, this.token)
      const out: { table: TenantTable; rows: string; gone: string }[] = []
      for (const t of work) {
        const r = (await tx.query<{ rows: string; gone: string }>(...args(sql.readChanged(this.source.schema, t.name, this.keys.get(t.name)!, byTable.get(t.name)!, this.tenantId)))).rows[0]
        out.push({ table: t, rows: r.rows, gone: r.gone })
      }
      return out
    })
    await this.target.driver.copyTransaction(this.target.database, 'write', async (tx) => {
      await pointAt(tx, this.token)
      // Parents before children for the rows that exist, children before parents for the ones that went.
      for (const r of read) if (r.rows !== '[]') await tx.query(...args(sql.upsertRows(this.target.schema, r.table.name, r.table.columns, this.keys.get(r.table.name)!, r.rows)))
      for (const r of [...read].reverse()) if (r.gone !== '[]') await tx.query(...args(sql.deleteKeys(this.target.schema, r.table.name, this.keys.get(r.table.name)!, r.gone)))
      // The last round (under the fence): the new room's sequences past every row, in the same transaction.
      await raise(tx)
    })
    for (const [table, keys] of byTable) this.changed.set(table, [...(this.changed.get(table) ?? []), keys])
    return taken.reduce((n, r) => n + Number(r.n), 0)
  }

  /**
   * Under the fence (no write of the tenant can commit in the old room any more): the last round,
   * the new room's sequences past every row, then every key changed since the copy and every
   * table's row count, old room against new. A difference fails the move.
   */
  async finish(snapshot: TableSums[]): Promise<{ tables: (TableSums & { changed: number })[]; lastKeys: number; lastRoundMs: number; verifyMs: number }> {
    const t0 = Date.now()
    const lastKeys = await this.round(true)
    const t1 = Date.now()
    // Every table of both rooms at once, each on its own connection (nothing writes either room now).
    const check = (room: CatchUpRoom) => Promise.all(this.tables.map((t) => room.driver.copyTransaction(room.database, 'snapshot', async (tx) => {
      await pointAt(tx, this.token)
      const n = Number((await tx.query<{ n: string | number }>(...args(sql.tenantRowCount(room.schema, t.name, this.tenantId)))).rows[0].n)
      const keys = this.changedKeys(t.name)
      return [t.name, { n, keys: keys ? await sums(tx, sql.keysChecksum(room.schema, t.name, this.keys.get(t.name)!, keys, this.tenantId)) : null }] as const
    }))).then((entries) => new Map(entries))
    const [a, b] = await Promise.all([check(this.source), check(this.target)])
    const tables = snapshot.map((s) => {
      const x = a.get(s.table)!
      const y = b.get(s.table)!
      if (x.n !== y.n) throw mismatch(s.table, 'the row count', { n: x.n, sum: '-' }, { n: y.n, sum: '-' })
      if (x.keys && y.keys && (x.keys.n !== y.keys.n || x.keys.sum !== y.keys.sum)) throw mismatch(s.table, 'the rows changed during the copy', x.keys, y.keys)
      return { ...s, rows: x.n, changed: x.keys?.n ?? 0 }
    })
    return { tables, lastKeys, lastRoundMs: t1 - t0, verifyMs: Date.now() - t1 }
  }

  /** The keys applied to `table` since the copy, as one JSON array text (duplicates are removed by the query). */
  private changedKeys(table: string): string | null {
    const parts = (this.changed.get(table) ?? []).map((k) => k.slice(1, -1)).filter((k) => k.length > 0)
    return parts.length === 0 ? null : `[${parts.join(',')}]`
  }

  private inTarget<T>(mode: 'snapshot' | 'write', fn: (tx: Queryable) => Promise<T>): Promise<T> {
    return this.target.driver.copyTransaction(this.target.database, mode, async (tx) => {
      await pointAt(tx, this.token)
      return fn(tx)
    })
  }
}

/** Drop a tenant's capture triggers and its captured changes from a room (rollback, cleanup, after the switch). */
export async function dropCapture(tx: { query: Queryable['query']; exec(text: string): Promise<unknown> }, tenantId: string, schema: string, tables: TenantTable[]): Promise<void> {
  // Only tables that have them: DROP TRIGGER locks the table (a pooled table's other tenants wait meanwhile).
  const names = Object.values(sql.captureTriggers(tenantId))
  const having = new Set((await tx.query<{ table: string }>(...args(sql.tablesWithTriggers(schema, names)))).rows.map((r) => r.table))
  for (const t of tables) if (having.has(t.name)) for (const ddl of sql.dropCaptureTriggers(schema, t.name, tenantId)) await tx.exec(ddl)
  if ((await tx.query<{ ok: boolean }>("SELECT to_regclass('tenantry.move_changes') IS NOT NULL AS ok")).rows[0]?.ok) await tx.query(...args(sql.deleteChanges(tenantId)))
}

async function sums(tx: Queryable, st: { text: string; values: unknown[] }): Promise<{ n: number; sum: string }> {
  const r = (await tx.query<{ n: string | number; sum: string }>(st.text, st.values)).rows[0]
  return { n: Number(r.n), sum: r.sum }
}

function pointAt(tx: Queryable, token: string) {
  return tx.query("SELECT set_config('tenantry.tenant_id', $1, true)", [token])
}

function mismatch(table: string, what: string, x: { n: number; sum: string }, y: { n: number; sum: string }): TenantryError {
  return new TenantryError('MOVE_FAILED', `Verification failed for table '${table}' (${what}): ${x.n} rows (checksum ${x.sum}) in the old room, ${y.n} (checksum ${y.sum}) in the new. The move was rolled back.`)
}

function args(s: { text: string; values: unknown[] }): [string, unknown[]] {
  return [s.text, s.values]
}
