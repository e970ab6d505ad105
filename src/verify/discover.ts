import type { Queryable } from '../index.ts'

/** One column of a tenant relation, as the catalog describes it. */
export interface ColumnInfo {
  name: string
  /** `format_type()`: what values are cast to (`character varying(50)`, `numeric(12,2)`, `my_enum`). */
  type: string
  /** Name of the base type (a domain's underlying type), e.g. `int8`, `text`, `jsonb`. */
  base: string
  /** `pg_type.typcategory` of the base type (`N` numeric, `S` string, `A` array, `E` enum…). */
  category: string
  notNull: boolean
  hasDefault: boolean
  /** GENERATED … AS IDENTITY or GENERATED … STORED: never written by the suite. */
  generated: boolean
  /** Enum labels. */
  labels?: string[]
  /** Character length limit (varchar(n), char(n)). */
  maxLength?: number
}

/** A foreign key of a relation. */
export interface ForeignKeyInfo {
  columns: string[]
  refSchema: string
  refTable: string
  refColumns: string[]
}

/** A table or view of the tenant schema. */
export interface RelationInfo {
  name: string
  kind: 'table' | 'view'
  /** Carries a `tenant_id` column: a tenant relation the suite attacks. */
  tenant: boolean
  rls: boolean
  forceRls: boolean
  columns: ColumnInfo[]
  primaryKey: string[] | null
  uniques: string[][]
  foreignKeys: ForeignKeyInfo[]
}

const RELATIONS_SQL = `
SELECT c.relname AS name, c.relkind::text AS kind, c.relrowsecurity AS rls, c.relforcerowsecurity AS force_rls
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm') AND NOT c.relispartition
ORDER BY c.relname`

const COLUMNS_SQL = `
SELECT c.relname AS rel, a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type,
       coalesce(bt.typname, t.typname)::text AS base, coalesce(bt.typcategory, t.typcategory)::text AS category,
       a.attnotnull AS not_null, a.atthasdef AS has_default,
       (a.attidentity <> '' OR a.attgenerated <> '') AS generated,
       CASE WHEN coalesce(bt.typtype, t.typtype) = 'e'
         THEN to_json(ARRAY(SELECT e.enumlabel::text FROM pg_enum e WHERE e.enumtypid = coalesce(bt.oid, t.oid) ORDER BY e.enumsortorder)) END AS labels,
       CASE WHEN coalesce(bt.typname, t.typname) IN ('varchar', 'bpchar') AND coalesce(nullif(t.typtypmod, -1), a.atttypmod) > 4
         THEN coalesce(nullif(t.typtypmod, -1), a.atttypmod) - 4 END AS max_length
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_type bt ON t.typtype = 'd' AND bt.oid = t.typbasetype
WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm') AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY c.relname, a.attnum`

const CONSTRAINTS_SQL = `
SELECT c.relname AS rel, con.contype::text AS type,
       to_json(ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY k(num, ord)
                     JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.num ORDER BY k.ord)) AS columns,
       rn.nspname AS ref_schema, r.relname AS ref_table,
       to_json(ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY k(num, ord)
                     JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.num ORDER BY k.ord)) AS ref_columns
FROM pg_constraint con
JOIN pg_class c ON c.oid = con.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_class r ON r.oid = con.confrelid
LEFT JOIN pg_namespace rn ON rn.oid = r.relnamespace
WHERE n.nspname = $1 AND con.contype IN ('p', 'u', 'f')
ORDER BY c.relname, con.conname`

const json = <T>(v: unknown): T => (typeof v === 'string' ? JSON.parse(v) : v) as T

/**
 * Every table and view of `schema` with its columns, keys and foreign keys, read from the system
 * catalog through an owner connection. The same migrations run in every tier, so the pooled
 * schema describes every tenant's relations.
 *
 * @example
 * ```ts
 * const relations = await discoverSchema(tenantry.dataPlane.driver('main').admin('app'), 'public')
 * ```
 */
export async function discoverSchema(admin: Queryable, schema: string): Promise<RelationInfo[]> {
  const rels = await admin.query<{ name: string; kind: string; rls: boolean; force_rls: boolean }>(RELATIONS_SQL, [schema])
  const cols = await admin.query<{
    rel: string; name: string; type: string; base: string; category: string; not_null: boolean; has_default: boolean; generated: boolean
    labels: unknown; max_length: number | string | null
  }>(COLUMNS_SQL, [schema])
  const cons = await admin.query<{ rel: string; type: string; columns: unknown; ref_schema: string | null; ref_table: string | null; ref_columns: unknown }>(CONSTRAINTS_SQL, [schema])
  return rels.rows.map((r) => {
    const columns: ColumnInfo[] = cols.rows
      .filter((c) => c.rel === r.name)
      .map((c) => ({
        name: c.name,
        type: c.type,
        base: c.base,
        category: c.category,
        notNull: c.not_null,
        hasDefault: c.has_default,
        generated: c.generated,
        ...(c.labels ? { labels: json<string[]>(c.labels) } : {}),
        ...(c.max_length !== null && c.max_length !== undefined ? { maxLength: Number(c.max_length) } : {}),
      }))
    const own = cons.rows.filter((c) => c.rel === r.name)
    const pk = own.find((c) => c.type === 'p')
    return {
      name: r.name,
      kind: r.kind === 'v' || r.kind === 'm' ? 'view' : 'table',
      tenant: columns.some((c) => c.name === 'tenant_id'),
      rls: r.rls,
      forceRls: r.force_rls,
      columns,
      primaryKey: pk ? json<string[]>(pk.columns) : null,
      uniques: own.filter((c) => c.type === 'u').map((c) => json<string[]>(c.columns)),
      foreignKeys: own
        .filter((c) => c.type === 'f')
        .map((c) => ({ columns: json<string[]>(c.columns), refSchema: c.ref_schema!, refTable: c.ref_table!, refColumns: json<string[]>(c.ref_columns) })),
    } satisfies RelationInfo
  })
}
