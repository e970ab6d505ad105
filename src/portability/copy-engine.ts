import { PassThrough, Transform, type Readable, type TransformCallback, type Writable } from 'node:stream'
import type { LoadPacer } from '../lifecycle/pacer.ts'
import pLimit from 'p-limit'
import type { Queryable } from '../data/executor.ts'
import type { CopyTransaction, ServerDriver } from '../data/driver.ts'
import { TENANT_TABLES_SQL, deleteOrder, type CopyDataFormat } from '../data/sql.ts'
import { quoteIdent } from '../core/sql.ts'
import * as sql from './sql.ts'
import { TenantryError } from '../core/errors.ts'
import { rewriteTenantIdBinary } from './copy-binary.ts'

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
  /** The columns' types (`format_type`), in the same order. */
  types?: string[]
  /** Whether every column's type is built in, so its rows can travel in the binary COPY format. */
  binary?: boolean
  sequences: { column: string; sequence: string }[]
  /** The other tenant tables it has foreign keys to (they load first). */
  references?: string[]
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

/** How a tenant table's rows stream: COPY text, or binary. */
export type CopyFormat = Extract<CopyDataFormat, 'text' | 'binary'>

/** Binary COPY where every column's type is built in (the server skips each value's text form), else text. */
export const copyFormatFor = (table: TenantTable): CopyFormat => (table.binary ? 'binary' : 'text')

/** The tenant tables of `schema`, parents before the tables that reference them (load order). */
export async function tenantTables(q: Queryable, schema: string): Promise<TenantTable[]> {
  const refs = await q.query<{ table_name: string; references: string[] | string }>(TENANT_TABLES_SQL, [schema])
  const cols = await q.query<{ table: string; column: string; sequence: string | null; type: string; builtin: boolean }>(sql.tenantColumns(schema).text, sql.tenantColumns(schema).values)
  const refsOf = new Map(refs.rows.map((r) => [r.table_name, Array.isArray(r.references) ? r.references : r.references.replace(/^\{|\}$/g, '').split(',').filter(Boolean)]))
  const byTable = new Map<string, TenantTable & { types: string[] }>()
  for (const r of cols.rows) {
    let t = byTable.get(r.table)
    if (!t) byTable.set(r.table, (t = { name: r.table, columns: ['tenant_id'], types: [''], binary: true, sequences: [], references: refsOf.get(r.table) ?? [] }))
    if (r.column === 'tenant_id') t.types[0] = r.type
    else {
      t.columns.push(r.column)
      t.types.push(r.type)
    }
    if (!r.builtin) t.binary = false
    if (r.sequence) t.sequences.push({ column: r.column, sequence: r.sequence })
  }
  // A binary row's first field is rewritten as a uuid's 16 bytes (restores as another tenant).
  for (const t of byTable.values()) if (t.types[0] !== 'uuid') t.binary = false
  return deleteOrder(refs.rows).reverse().map((name) => byTable.get(name)!).filter(Boolean)
}

/** Tables of one tenant copied at once by default on PostgreSQL (`portability.parallelTables`). */
export const DEFAULT_PARALLEL_TABLES = 4

/**
 * How many tables to copy at once on `driver`: 1 on PGlite (one transaction at a time per
 * instance), else up to `wanted`, leaving one owner connection of the database's pool to the
 * transaction that exports the snapshot.
 */
export function copyWidth(driver: ServerDriver, tables: number, wanted = DEFAULT_PARALLEL_TABLES): number {
  if (driver.kind !== 'pg') return 1
  return Math.max(1, Math.min(Math.floor(wanted) || 1, tables, driver.adminPoolSize - 1))
}

/**
 * `fn` for every item, at most `width` at once (p-limit), results in item order. The first failure
 * stops items not yet started and is thrown once those running have settled, so nothing still
 * writes after the caller has cleaned up.
 */
export async function mapLimited<T, R>(items: readonly T[], width: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const limit = pLimit(Math.max(1, width))
  let failed = false
  const settled = await Promise.allSettled(items.map((item, i) => limit(async () => {
    if (failed) throw new Error('not started: another item failed')
    try {
      return await fn(item, i)
    } catch (err) {
      failed = true
      throw err
    }
  })))
  const first = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected' && !(s.reason instanceof Error && s.reason.message === 'not started: another item failed'))
  if (first) throw first.reason
  return settled.map((s) => (s as PromiseFulfilledResult<R>).value)
}

/**
 * Run `fn` for every table at the snapshot of `tx` (an open `snapshot` transaction on `place`),
 * results in table order. With `width` > 1, up to `width - 1` more connections import the snapshot
 * `tx` exports (`pg_export_snapshot()` / `SET TRANSACTION SNAPSHOT`) and take tables from the same
 * queue as `tx` itself, so the tables are read at once and still at one instant.
 *
 * `tx` works the queue too and never waits for a connection: when the owner pool is busy (say,
 * as many backups at once as it has connections, each holding its exporting transaction) it reads
 * every table itself instead of deadlocking. A helper that connects only after the queue is empty
 * (or after `tx` ended, when its import fails) does nothing; only a table's own failure fails the run.
 */
export async function eachTableAtSnapshot<R>(
  tx: CopyTransaction,
  place: { driver: ServerDriver; database: string; token?: string; nice?: number },
  tables: TenantTable[],
  width: number,
  fn: (tx: CopyTransaction, table: TenantTable, index: number) => Promise<R>,
): Promise<R[]> {
  const results: R[] = new Array(tables.length)
  const started: Promise<unknown>[] = []
  let next = 0
  let failure: { err: unknown } | undefined
  const work = async (w: CopyTransaction) => {
    while (!failure && next < tables.length) {
      const i = next++
      const run = fn(w, tables[i], i).then((r) => { results[i] = r }, (err: unknown) => { failure ??= { err } })
      started.push(run)
      await run
    }
  }
  if (width > 1) {
    const snapshot = (await tx.query<{ s: string }>('SELECT pg_export_snapshot() AS s')).rows[0].s
    for (let k = 1; k < width; k++) {
      place.driver.copyTransaction(place.database, 'snapshot', async (w) => {
        if (next >= tables.length || failure) return
        if (place.token) await w.query(sql.pointAtTenant(place.token).text, sql.pointAtTenant(place.token).values)
        await work(w)
      }, { snapshot, nice: place.nice }).catch(() => undefined) // a helper's own failure (no connection, a late import) leaves its tables to the others
    }
  }
  await work(tx)
  // The tables helpers took may still be running: all must be done before `tx` ends.
  while (started.length > 0) await started.shift()
  if (failure) throw failure.err
  return results
}

/**
 * Tables in load waves: a table's wave comes after the waves of every table it references, so the
 * tables of one wave can load at once, each in its own transaction, with foreign keys checked as
 * usual (no `session_replication_role`, which only a superuser may set). Null on a reference
 * cycle: those tables must load in one transaction.
 */
export function loadWaves(tables: TenantTable[]): TenantTable[][] | null {
  const names = new Set(tables.map((t) => t.name))
  const level = new Map<string, number>()
  for (const t of tables) {
    // `tables` is in load order (parents first): every parent's level is known here, unless in a cycle.
    const parents = (t.references ?? []).filter((r) => names.has(r) && r !== t.name)
    if (parents.some((r) => !level.has(r))) return null
    level.set(t.name, parents.reduce((m, r) => Math.max(m, level.get(r)! + 1), 0))
  }
  const waves: TenantTable[][] = []
  for (const t of tables) (waves[level.get(t.name)!] ??= []).push(t)
  return waves
}

/**
 * A pass-through that lets a table's rows flow only while it holds a slot of `pacer`: a slot is
 * taken for a slice of `sliceMs` of streaming, then given back with the time it was held (below
 * one stream the pacer then rests the run several times as long). While it waits, the COPY behind
 * it waits too (backpressure), so the server's work for the table is paced, not just Node's.
 */
export function pacedStream(pacer: LoadPacer, sliceMs = 10): Transform {
  let since = -1
  const giveBack = () => {
    if (since < 0) return
    const busy = performance.now() - since
    since = -1
    pacer.release(busy)
  }
  return new Transform({
    transform(chunk: Buffer, _enc, done: TransformCallback) {
      const pass = () => {
        this.push(chunk)
        if (performance.now() - since >= sliceMs) giveBack()
        done()
      }
      if (since >= 0) return pass()
      pacer.acquire().then(() => {
        since = performance.now()
        pass()
      }, done)
    },
    flush(done: TransformCallback) {
      giveBack()
      done()
    },
    destroy(err, done) {
      giveBack()
      done(err)
    },
  })
}

/** Stream one table's rows of `tenantId` (COPY text, or binary: `format`; `tenant_id` first) into `sink`; resolves with the rows copied. */
export function copyTableOut(tx: CopyTransaction, schema: string, tenantId: string, table: TenantTable, sink: Writable, format: CopyFormat = 'text'): Promise<number> {
  return tx.copyOut(sql.copyOutSource(schema, table.name, table.columns, tenantId), sink, format)
}

/** What a table's rows were written as: their columns and, for binary rows, the columns' types. */
export interface CopySource {
  columns: string[]
  format?: CopyFormat
  types?: string[]
}

/**
 * Load COPY rows of `table` (as {@link copyTableOut} wrote them; `from`: their columns and format,
 * by default the table's own columns in text) into `schema`; resolves with the rows loaded.
 * PostgreSQL refuses COPY FROM into a table with row-level security unless the role bypasses it
 * (superuser, BYPASSRLS): otherwise (`direct` false) the rows go through a temporary twin of the
 * table and one INSERT … SELECT, under the tenant setting the caller set. Binary rows whose types
 * are no longer the table's (a pooled table migrated since the backup) load into a temporary table
 * of their own types and go in converted through their text, as text rows would.
 */
export async function copyTableIn(tx: CopyTransaction, schema: string, table: TenantTable, source: Readable, direct = true, from?: CopySource): Promise<number> {
  const columns = from?.columns ?? table.columns
  const format = from?.format ?? 'text'
  if (format === 'binary') {
    const typeOf = new Map(table.columns.map((c, i) => [c, table.types?.[i]]))
    const casts = columns.map((c, i) => (typeOf.get(c) === from?.types?.[i] ? null : typeOf.get(c) ?? null))
    if (casts.some((c, i) => c !== null || !typeOf.has(columns[i]))) return loadConverted(tx, schema, table, source, columns, from?.types ?? [], casts)
  }
  if (direct) return tx.copyIn(sql.copyInTarget(schema, table.name, columns), source, format)
  await tx.exec(sql.createLoadTable(schema, table.name))
  await tx.exec(`TRUNCATE ${sql.loadTableName(table.name)}`)
  await tx.copyIn(`${sql.loadTableName(table.name)} (${columns.map(quoteIdent).join(', ')})`, source, format)
  const ins = sql.insertFromLoadTable(schema, table.name, columns)
  return (await tx.query(ins.text, ins.values)).rowCount
}

async function loadConverted(tx: CopyTransaction, schema: string, table: TenantTable, source: Readable, columns: string[], types: string[], casts: (string | null)[]): Promise<number> {
  const missing = columns.filter((c) => !table.columns.includes(c))
  if (missing.length > 0) throw new TenantryError('ARCHIVE_INCOMPATIBLE', `The archive's table '${table.name}' has column${missing.length > 1 ? 's' : ''} ${missing.map((c) => `'${c}'`).join(', ')}, which the restore target's table does not.`)
  const resolved = (await tx.query<{ type: string | null; builtin: boolean | null }>(sql.resolveTypes(types).text, sql.resolveTypes(types).values)).rows
  const bad = resolved.findIndex((r) => r.type === null || r.builtin !== true)
  if (resolved.length !== columns.length || bad >= 0) {
    throw new TenantryError('ARCHIVE_INCOMPATIBLE', `The archive's table '${table.name}' lists a column type this server cannot read binary rows of (${JSON.stringify(types[bad] ?? null)}).`)
  }
  await tx.exec(sql.createConvertTable(table.name, columns, resolved.map((r) => r.type!)))
  await tx.copyIn(`${sql.convertTableName(table.name)} (${columns.map(quoteIdent).join(', ')})`, source, 'binary')
  const ins = sql.insertConverted(schema, table.name, columns, casts)
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
 * 36-byte uuids, so no byte moves); binary COPY data: {@link rewriteTenantIdBinary}. A line that
 * does not start with `from` fails the stream: rows of another tenant never pass through a rewrite
 * unnoticed (with `to` equal to `from`, it is that check alone).
 */
export function rewriteTenantId(from: string, to: string, format: CopyFormat = 'text'): Transform {
  if (format === 'binary') return rewriteTenantIdBinary(from, to)
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
          if (buf.compare(want, inLine, inLine + n, i, i + n) !== 0) {
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
 * copied rows. Between databases the rows stream with COPY, binary for tables of built-in types.
 * The target's tables must exist (provisioned at the same migrations).
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
      const targets = await tenantTables(dst, to.schema)
      const targetOf = new Map(targets.map((t) => [t.name, t]))
      const counts: { table: string; rows: number }[] = []
      for (const table of tables) {
        // As backups do; a target whose types differ converts.
        const format = copyFormatFor(table)
        const pipe = new PassThrough()
        const tail = from.tenantId === to.tenantId ? pipe : pipe.pipe(rewriteTenantId(from.tenantId, to.tenantId, format))
        const into = targetOf.get(table.name) ?? table
        const [, rows] = await Promise.all([
          copyTableOut(src, from.schema, from.tenantId, table, pipe, format),
          copyTableIn(dst, to.schema, into, tail, direct, { columns: table.columns, format, types: table.types }),
        ])
        counts.push({ table: table.name, rows })
        onTable?.(table.name, rows)
      }
      await raiseSequences(dst, to.schema, to.tenantId, targets)
      return counts
    })
  })
}
