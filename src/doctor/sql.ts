import type { Statement } from '../core/index.ts'

/**
 * The schema that holds Tenantry's own objects (catalog, migration ledger, `tenant_id()`). It is
 * never a tenant schema, so the doctor never checks it even when it is named.
 */
export const TENANTRY_SCHEMA = 'tenantry'

/** One ordinary or partitioned table in the checked schemas. */
export interface TableRow {
  schema: string
  table: string
  owner: string
  rls_enabled: boolean
  rls_forced: boolean
  has_tenant_id: boolean
  policy_count: number
  is_partition: boolean
}

/** One primary key, unique or foreign-key constraint, or a unique index that backs no constraint. */
export interface KeyRow {
  schema: string
  table: string
  name: string
  /** `p`, `u`, `f` as in `pg_constraint.contype`; `i` for a bare unique index. */
  kind: 'p' | 'u' | 'f' | 'i'
  /** The key columns in order; an expression column of an index is null. */
  columns: (string | null)[]
  ref_schema: string | null
  ref_table: string | null
  /** The referenced columns of a foreign key, in order; empty for other kinds. */
  ref_columns: string[]
  definition: string
  /** Inherited from a partitioned parent: fixed by fixing the parent, so reported there only. */
  inherited: boolean
}

/** One permissive row-level security policy. */
export interface PolicyRow {
  schema: string
  table: string
  name: string
  command: string
  using_expr: string | null
  check_expr: string | null
}

/** One requested role that exists. */
export interface RoleRow {
  role: string
  superuser: boolean
  bypassrls: boolean
}

/** A requested role that owns a checked table, directly or through membership. */
export interface OwnershipRow {
  role: string
  schema: string
  table: string
  owner: string
}

// Shared by every statement so they all see the same set of tables: $1 schemas, $2 ignored names
// (bare `table` or qualified `schema.table`).
const CHECKED_TABLES = `
  c.relkind IN ('r', 'p')
  AND n.nspname = ANY($1::text[])
  AND n.nspname <> '${TENANTRY_SCHEMA}'
  AND NOT (c.relname = ANY($2::text[]) OR n.nspname || '.' || c.relname = ANY($2::text[]))`

/**
 * The checked tables with their owner, RLS flags, `tenant_id` presence and policy count.
 *
 * @example
 * ```ts
 * const { text, values } = tablesSql(['public'], [])
 * const { rows } = await q.query<TableRow>(text, values)
 * ```
 */
export function tablesSql(schemas: string[], ignoreTables: string[]): Statement {
  return {
    text: `
SELECT n.nspname AS schema,
       c.relname AS table,
       pg_get_userbyid(c.relowner) AS owner,
       c.relrowsecurity AS rls_enabled,
       c.relforcerowsecurity AS rls_forced,
       EXISTS (SELECT 1 FROM pg_attribute a
                WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND a.attnum > 0 AND NOT a.attisdropped) AS has_tenant_id,
       (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid)::int AS policy_count,
       c.relispartition AS is_partition
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE ${CHECKED_TABLES}
 ORDER BY n.nspname, c.relname`,
    values: [schemas, ignoreTables],
  }
}

/**
 * Primary keys, unique and foreign-key constraints of the checked tables, plus unique indexes
 * created without a constraint (`CREATE UNIQUE INDEX`), which enforce uniqueness across tenants
 * just the same.
 *
 * @example
 * ```ts
 * const { text, values } = keysSql(['public'], [])
 * const { rows } = await q.query<KeyRow>(text, values)
 * ```
 */
export function keysSql(schemas: string[], ignoreTables: string[]): Statement {
  return {
    text: `
SELECT n.nspname AS schema,
       c.relname AS table,
       k.conname AS name,
       k.contype::text AS kind,
       ARRAY(SELECT a.attname::text
               FROM unnest(k.conkey) WITH ORDINALITY AS u(attnum, ord)
               JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.attnum
              ORDER BY u.ord) AS columns,
       fn.nspname AS ref_schema,
       fc.relname AS ref_table,
       ARRAY(SELECT a.attname::text
               FROM unnest(coalesce(k.confkey, '{}')) WITH ORDINALITY AS u(attnum, ord)
               JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.attnum
              ORDER BY u.ord) AS ref_columns,
       pg_get_constraintdef(k.oid) AS definition,
       k.conparentid <> 0 AS inherited
  FROM pg_constraint k
  JOIN pg_class c ON c.oid = k.conrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_class fc ON fc.oid = k.confrelid
  LEFT JOIN pg_namespace fn ON fn.oid = fc.relnamespace
 WHERE k.contype IN ('p', 'u', 'f') AND ${CHECKED_TABLES}
UNION ALL
SELECT n.nspname, c.relname, ic.relname, 'i',
       ARRAY(SELECT a.attname::text
               FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS u(attnum, ord)
               LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = u.attnum AND u.attnum <> 0
              WHERE u.ord <= i.indnkeyatts
              ORDER BY u.ord),
       NULL, NULL, '{}'::text[],
       pg_get_indexdef(i.indexrelid),
       ic.relispartition
  FROM pg_index i
  JOIN pg_class ic ON ic.oid = i.indexrelid
  JOIN pg_class c ON c.oid = i.indrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE i.indisunique
   AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conrelid = i.indrelid AND k.conindid = i.indexrelid)
   AND ${CHECKED_TABLES}
 ORDER BY 1, 2, 3`,
    values: [schemas, ignoreTables],
  }
}

/**
 * The permissive policies of the checked tables with their deparsed USING and WITH CHECK
 * expressions. Restrictive policies are left out: they can only narrow what permissive ones allow.
 *
 * @example
 * ```ts
 * const { text, values } = policiesSql(['public'], [])
 * ```
 */
export function policiesSql(schemas: string[], ignoreTables: string[]): Statement {
  return {
    text: `
SELECT n.nspname AS schema,
       c.relname AS table,
       p.polname AS name,
       p.polcmd::text AS command,
       pg_get_expr(p.polqual, p.polrelid) AS using_expr,
       pg_get_expr(p.polwithcheck, p.polrelid) AS check_expr
  FROM pg_policy p
  JOIN pg_class c ON c.oid = p.polrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE p.polpermissive AND ${CHECKED_TABLES}
 ORDER BY n.nspname, c.relname, p.polname`,
    values: [schemas, ignoreTables],
  }
}

/**
 * The attributes of the requested roles that exist; a requested name with no row does not exist.
 *
 * @example
 * ```ts
 * const { text, values } = rolesSql(['tenantry_app'])
 * ```
 */
export function rolesSql(roles: string[]): Statement {
  return {
    text: `
SELECT rolname AS role, rolsuper AS superuser, rolbypassrls AS bypassrls
  FROM pg_roles
 WHERE rolname = ANY($1::text[])
 ORDER BY rolname`,
    values: [roles],
  }
}

/**
 * Checked tables owned by a requested role, directly or through membership in the owner role
 * (a member can `SET ROLE` to the owner, and the owner is exempt from non-forced RLS and can
 * disable it). Superusers are left out: they are members of every role, and are reported as such.
 *
 * @example
 * ```ts
 * const { text, values } = ownershipSql(['public'], [], ['tenantry_app'])
 * ```
 */
export function ownershipSql(schemas: string[], ignoreTables: string[], roles: string[]): Statement {
  return {
    text: `
SELECT r.rolname AS role, n.nspname AS schema, c.relname AS table, pg_get_userbyid(c.relowner) AS owner
  FROM pg_roles r
  CROSS JOIN pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE r.rolname = ANY($3::text[])
   AND NOT r.rolsuper
   AND pg_has_role(r.oid, c.relowner, 'MEMBER')
   AND ${CHECKED_TABLES}
 ORDER BY r.rolname, n.nspname, c.relname`,
    values: [schemas, ignoreTables, roles],
  }
}

/**
 * Which of the requested schemas exist, so a misspelt schema is an error rather than a clean bill
 * of health for zero tables.
 *
 * @example
 * ```ts
 * const { text, values } = schemasSql(['public', 't_0a1b'])
 * ```
 */
export function schemasSql(schemas: string[]): Statement {
  return {
    text: `SELECT nspname AS schema FROM pg_namespace WHERE nspname = ANY($1::text[])`,
    values: [schemas],
  }
}

/**
 * The name of the connected database, the default target label.
 *
 * @example
 * ```ts
 * const { rows } = await q.query<{ database: string }>(currentDatabaseSql().text)
 * ```
 */
export function currentDatabaseSql(): Statement {
  return { text: 'SELECT current_database() AS database', values: [] }
}
