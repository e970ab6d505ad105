import { PassThrough, Transform, type Readable, type TransformCallback, type Writable } from 'node:stream'
import type { Queryable } from '../data/executor.ts'
import type { CopyTransaction, ServerDriver } from '../data/driver.ts'
import { TENANT_TABLES_SQL, deleteOrder } from '../data/sql.ts'
import { quoteIdent } from '../core/sql.ts'
import * as sql from './sql.ts'

/**
 * The copy engine: one tenant's rows of one placement streamed with COPY, `tenant_id` rewritten on
 * the way, into another placement. Backups write its output into an archive (archive.ts) and
 * restores feed it from one; a move (issue 14) pipes one placement into another with
 * {@link copyTenant}. It knows nothing of archives, keys or operations.
 */

/** One tenant table: its columns in COPY order (`tenant_id` first) and its identity/serial sequences. */
export interface TenantTable {
  name: string
  columns: string[]
  sequences: { column: string; sequence: string }[]
}

/** Where a tenant's rows are: a server's driver, a database and a schema, and the tenant id its rows carry. */
export interface TenantPlace {
  driver: ServerDriver
  database: string
  schema: string
  tenantId: string
  /** The tenant's signed setting (`tenantToken`), for an owner under FORCEd row-level security; optional for a superuser. */
  token?: string
}

/** The tenant tables of `schema`, parents before the tables that reference them (load order). */
export async function tenantTables(q: Queryable, schema: string): Promise<TenantTable[]> {
  const refs = await q.query<{ table_name: string; references: string[] | string }>(TENANT_TABLES_SQL, [schema])
  const cols = await q.query<{ table: string; column: string; sequence: string | null }>(sql.tenantColumns(schema).text, sql.tenantColumns(schema).values)
  const byTable = new Map<string, TenantTable>()
  for (const r of cols.rows) {
    let t = byTable.get(r.table)
    if (!t) byTable.set(r.table, (t = { name: r.table, columns: ['tenant_id'], sequences: [] }))
    if (r.column !== 'tenant_id') t.columns.push(r.column)
    if (r.sequence) t.sequences.push({ column: r.column, sequence: r.sequence })
  }
  return deleteOrder(refs.rows).reverse().map((name) => byTable.get(name)!).filter(Boolean)
}

/** Stream one table's rows of `tenantId` (COPY text format, `tenant_id` first) into `sink`. */
export function copyTableOut(tx: CopyTransaction, schema: string, tenantId: string, table: TenantTable, sink: Writable): Promise<void> {
  return tx.copyOut(sql.copyOutSource(schema, table.name, table.columns, tenantId), sink)
}

/**
 * Load COPY text rows of `table` (as {@link copyTableOut} wrote them) into `schema`; resolves with
 * the rows loaded. PostgreSQL refuses COPY FROM into a table with row-level security unless the
 * role bypasses it (superuser, BYPASSRLS): otherwise (`direct` false) the rows go through a
 * temporary twin of the table and one INSERT … SELECT, under the tenant setting the caller set.
 */
export async function copyTableIn(tx: CopyTransaction, schema: string, table: TenantTable, source: Readable, direct = true): Promise<number> {
  if (direct) return tx.copyIn(sql.copyInTarget(schema, table.name, table.columns), source)
  await tx.exec(sql.createLoadTable(schema, table.name))
  await tx.exec(`TRUNCATE ${sql.loadTableName(table.name)}`)
  await tx.copyIn(`${sql.loadTableName(table.name)} (${table.columns.map(quoteIdent).join(', ')})`, source)
  const ins = sql.insertFromLoadTable(schema, table.name, table.columns)
  return (await tx.query(ins.text, ins.values)).rowCount
}

/** Whether this transaction's role may COPY straight into tables with row-level security. */
export async function copiesDirectly(tx: Queryable): Promise<boolean> {
  return Boolean((await tx.query<{ bypass: boolean }>(sql.BYPASSES_RLS.text, sql.BYPASSES_RLS.values)).rows[0]?.bypass)
}

/** Set every identity/serial sequence of the tables past the tenant's rows now in them (never lowered). */
export async function raiseSequences(tx: Queryable, schema: string, tenantId: string, tables: TenantTable[]): Promise<void> {
  for (const t of tables) {
    for (const s of t.sequences) {
      const st = sql.raiseSequence(s.sequence, schema, t.name, s.column, tenantId)
      await tx.query(st.text, st.values)
    }
  }
}

/**
 * Rewrite the leading `tenant_id` of every COPY text line from `from` to `to`, in place (both are
 * 36-byte uuids, so no byte moves). A line that does not start with `from` fails the stream: rows
 * of another tenant never pass through a rewrite unnoticed.
 */
export function rewriteTenantId(from: string, to: string): Transform {
  const want = Buffer.from(from)
  const put = Buffer.from(to)
  if (want.length !== 36 || put.length !== 36) throw new Error('tenant ids must be uuids')
  let inLine = 0
  return new Transform({
    transform(chunk: Buffer, _enc, done: TransformCallback) {
      const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk)
      let i = 0
      while (i < buf.length) {
        if (inLine < 36) {
          const n = Math.min(36 - inLine, buf.length - i)
          if (!buf.subarray(i, i + n).equals(want.subarray(inLine, inLine + n))) {
            done(new Error(`a row does not belong to tenant ${from}`))
            return
          }
          put.copy(buf, i, inLine, inLine + n)
          inLine += n
          i += n
          continue
        }
        const nl = buf.indexOf(10, i)
        if (nl === -1) break
        inLine = 0
        i = nl + 1
      }
      done(null, buf)
    },
  })
}

/** Options of {@link copyTenant}. */
export interface CopyOptions {
  /** Run in the source's snapshot before any row is copied (a move checksums the snapshot it copies). */
  inSnapshot?: (tx: Queryable) => Promise<void>
}

/**
 * Both places in one database (pooled → schema on one server): one REPEATABLE READ transaction,
 * one INSERT … SELECT per table (one connection cannot stream COPY out and in at once, and an
 * embedded database runs one transaction at a time). An owner under FORCEd row-level security sees
 * one tenant at a time here: the ids must then be equal (a move).
 */
async function copyWithin(from: TenantPlace, to: TenantPlace, onTable?: (table: string, rows: number) => void, opts: CopyOptions = {}): Promise<{ table: string; rows: number }[]> {
  return from.driver.copyTransaction(from.database, 'write', async (tx) => {
    await tx.query('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ')
    const token = to.token ?? from.token
    if (token) await tx.query(sql.pointAtTenant(token).text, sql.pointAtTenant(token).values)
    await opts.inSnapshot?.(tx)
    const tables = await tenantTables(tx, from.schema)
    const counts: { table: string; rows: number }[] = []
    for (const table of tables) {
      const st = sql.copyWithinDatabase(from.schema, to.schema, table.name, table.columns, from.tenantId, to.tenantId)
      const rows = (await tx.query(st.text, st.values)).rowCount
      counts.push({ table: table.name, rows })
      onTable?.(table.name, rows)
    }
    // The target's own sequences (another schema has other ones: pooled → schema is a move).
    await raiseSequences(tx, to.schema, to.tenantId, from.schema === to.schema ? tables : await tenantTables(tx, to.schema))
    return counts
  })
}

/**
 * Copy one tenant between placements: one snapshot transaction on the source, one transaction on
 * the target (all or nothing), `tenant_id` rewritten when the ids differ, sequences raised past the
 * copied rows. The target's tables must exist (provisioned at the same migrations).
 *
 * @example
 * ```ts
 * const counts = await copyTenant(
 *   { driver: dataPlane.driver('main'), database: 'app', schema: 'public', tenantId: a.id },
 *   { driver: dataPlane.driver('eu'), database: 'tenantry_t_…', schema: 'public', tenantId: a.id },
 * )
 * ```
 */
export async function copyTenant(from: TenantPlace, to: TenantPlace, onTable?: (table: string, rows: number) => void, opts: CopyOptions = {}): Promise<{ table: string; rows: number }[]> {
  if (from.driver === to.driver && from.database === to.database) return copyWithin(from, to, onTable, opts)
  return from.driver.copyTransaction(from.database, 'snapshot', async (src) => {
    if (from.token) await src.query(sql.pointAtTenant(from.token).text, sql.pointAtTenant(from.token).values)
    await opts.inSnapshot?.(src)
    const tables = await tenantTables(src, from.schema)
    return to.driver.copyTransaction(to.database, 'write', async (dst) => {
      if (to.token) await dst.query(sql.pointAtTenant(to.token).text, sql.pointAtTenant(to.token).values)
      const direct = await copiesDirectly(dst)
      const counts: { table: string; rows: number }[] = []
      for (const table of tables) {
        const pipe = new PassThrough()
        const tail = from.tenantId === to.tenantId ? pipe : pipe.pipe(rewriteTenantId(from.tenantId, to.tenantId))
        const [, rows] = await Promise.all([copyTableOut(src, from.schema, from.tenantId, table, pipe), copyTableIn(dst, to.schema, table, tail, direct)])
        counts.push({ table: table.name, rows })
        onTable?.(table.name, rows)
      }
      await raiseSequences(dst, to.schema, to.tenantId, await tenantTables(dst, to.schema))
      return counts
    })
  })
}
