import { createWriteStream } from 'node:fs'
import { Transform, type TransformCallback } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import type { CopyTransaction } from '../data/driver.ts'
import type { Queryable } from '../data/executor.ts'
import { Counter } from './archive.ts'
import type { TenantTable } from './copy-engine.ts'
import * as sql from './sql.ts'

/** The machine-readable formats of a GDPR export (Art. 20). */
export type ExportFormat = 'jsonl' | 'csv'
export const EXPORT_FORMATS: readonly ExportFormat[] = ['jsonl', 'csv']

/**
 * The comment that marks a column as identifying a person (a data subject), put on the column by
 * the app's migrations, so it holds in every tier:
 * `COMMENT ON COLUMN users.email IS 'tenantry:subject';` (other text may stand around it).
 */
export const SUBJECT_MARK = 'tenantry:subject'

/** Marked columns of the tenant tables of `schema`, by table. */
export async function subjectColumns(q: Queryable, schema: string): Promise<Map<string, string[]>> {
  const st = sql.subjectColumns(schema, SUBJECT_MARK)
  const res = await q.query<{ table: string; column: string }>(st.text, st.values)
  const out = new Map<string, string[]>()
  for (const r of res.rows) out.set(r.table, [...(out.get(r.table) ?? []), r.column])
  return out
}

/**
 * COPY text format escapes a backslash as two; `row_to_json` escapes every control character
 * itself, so the backslash is the only escape left to undo to get JSON lines back.
 */
class UnescapeBackslash extends Transform {
  private pending = false
  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    const out = Buffer.allocUnsafe(chunk.length + 1)
    let n = 0
    for (let i = 0; i < chunk.length; i++) {
      const b = chunk[i]
      if (this.pending) {
        out[n++] = b
        this.pending = false
      } else if (b === 0x5c) this.pending = true
      else out[n++] = b
    }
    done(null, out.subarray(0, n))
  }
}

/**
 * Write one table of the tenant (or only the rows of the subject set with
 * {@link sql.pointAtSubject}) as `file`; returns its rows and checksum. CSV has a header line.
 */
export async function exportTable(
  tx: CopyTransaction,
  o: { schema: string; table: TenantTable; tenantId: string; format: ExportFormat; subjectColumns?: string[]; file: string },
): Promise<{ rows: number; sha256: string }> {
  const select = sql.exportSelect(o.schema, o.table.name, o.table.columns, o.tenantId, o.subjectColumns)
  const counter = new Counter()
  const out = createWriteStream(o.file)
  if (o.format === 'csv') {
    const done = pipeline(counter, out)
    await tx.copyOut(`(${select})`, counter, 'csv')
    await done
    // A quoted CSV field may hold line breaks: rows are counted in the same snapshot instead.
    const n = await tx.query<{ n: string | number }>(`SELECT count(*) AS n FROM (${select}) x`)
    return { rows: Number(n.rows[0].n), sha256: counter.hash.digest('hex') }
  }
  const unescape = new UnescapeBackslash()
  const done = pipeline(unescape, counter, out)
  await tx.copyOut(`(SELECT row_to_json(x) FROM (${select}) x)`, unescape)
  await done
  return { rows: counter.rows, sha256: counter.hash.digest('hex') }
}
