import type { ColumnInfo } from './discover.ts'
import type { Random } from './random.ts'

/** What the generator does with a column: a value (as text, cast by the statement), NULL, or leave it to its default. */
export type Generated = { value: string | null } | 'default' | { unsupported: string }

const iso = (r: Random) => new Date(Date.UTC(r.int(2001, 2030), r.int(0, 11), r.int(1, 28), r.int(0, 23), r.int(0, 59), r.int(0, 59))).toISOString()

/**
 * A random value for one column of type `col.base`, as the text PostgreSQL reads for that type.
 * Text columns carry `marker` (the tenant's slug), so rows are recognisable in any output.
 * `'default'` for columns the database fills (identity, generated, defaults on nullable
 * columns…); `{ unsupported }` for a NOT NULL column of a type it cannot make.
 *
 * @example
 * ```ts
 * valueFor({ name: 'name', base: 'text', … }, rnd, 'vi-p1') // { value: 'vi-p1 7f3a' }
 * ```
 */
export function valueFor(col: ColumnInfo, r: Random, marker: string, attempt = 0): Generated {
  if (col.generated) return 'default'
  // Optional columns are sometimes left out, so defaults and NULLs get written too.
  if (!col.notNull && r.chance(0.2)) return { value: null }
  if (col.hasDefault && r.chance(attempt > 0 ? 0.8 : 0.3)) return 'default'
  const v = scalar(col, r, marker, attempt)
  if (v !== undefined) return { value: v }
  if (col.hasDefault) return 'default'
  if (!col.notNull) return { value: null }
  return { unsupported: `column ${col.name} of type ${col.type}` }
}

function scalar(col: ColumnInfo, r: Random, marker: string, attempt: number): string | undefined {
  // Later attempts (after a CHECK or range error) use smaller, plainer values.
  const small = attempt > 0
  if (col.labels) return col.labels.length ? r.pick(col.labels) : undefined
  if (col.category === 'A') return '{}'
  switch (col.base) {
    case 'int2': return String(r.int(1, small ? 9 : 30000))
    case 'int4': return String(r.int(1, small ? 9 : 2_000_000_000))
    case 'int8': return String(r.int(1, small ? 9 : 2 ** 52))
    case 'oid': return String(r.int(1, 1_000_000))
    case 'numeric': case 'money': return small ? String(r.int(0, 9)) : `${r.int(0, 999)}.${String(r.int(0, 99)).padStart(2, '0')}`
    case 'float4': case 'float8': return small ? String(r.int(0, 9)) : String(r.int(0, 100000) / 8)
    case 'bool': return r.chance(0.5) ? 'true' : 'false'
    case 'text': case 'varchar': case 'bpchar': case 'name': case 'citext': {
      const s = small ? `${marker.slice(0, 12)}${r.int(0, 9)}` : `${marker} ${r.hex(4)}`
      return col.maxLength !== undefined ? s.slice(0, Math.max(1, col.maxLength)) : s
    }
    case 'uuid': return r.uuid()
    case 'date': return iso(r).slice(0, 10)
    case 'timestamp': case 'timestamptz': return iso(r)
    case 'time': case 'timetz': return iso(r).slice(11, 19)
    case 'interval': return `${r.int(1, 90)} minutes`
    case 'json': case 'jsonb': return JSON.stringify({ tenant: marker, n: r.int(0, 1000) })
    case 'bytea': return `\\x${r.hex(8)}`
    case 'inet': case 'cidr': return `10.${r.int(0, 255)}.${r.int(0, 255)}.${small ? 0 : r.int(1, 254)}${col.base === 'cidr' ? '/32' : ''}`
    case 'macaddr': return [1, 2, 3, 4, 5, 6].map(() => r.hex(1)).join(':')
    case 'tsvector': return marker.replace(/[^a-z0-9]/g, ' ')
    case 'point': return `(${r.int(0, 99)},${r.int(0, 99)})`
    case 'bit': case 'varbit': return '1'
    case 'xml': return `<t>${marker}</t>`
    default: return undefined
  }
}

/** The SQL value expression of a column: its bind parameter cast to the column's type. */
export function castParam(index: number, col: ColumnInfo): string {
  return `$${index}::${col.type}`
}

/** A value read from the database as the text PostgreSQL reads back for the same type. */
export function toText(v: unknown): string | null {
  if (v === null || v === undefined) return null
  if (v instanceof Date) return v.toISOString()
  if (Buffer.isBuffer(v) || v instanceof Uint8Array) return `\\x${Buffer.from(v).toString('hex')}`
  if (typeof v === 'object') return JSON.stringify(v)
  return String(v)
}
