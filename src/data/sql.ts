import { quoteIdent, quoteLiteral } from '../core/sql.ts'

/**
 * What every database that holds tenant data gets: the `tenantry` schema, the installation's key
 * (readable only by the owner), the policy helper `tenantry.tenant_id()` and the migration ledger.
 *
 * The tenant setting is SIGNED: `<uuid>.<sha256(key || uuid)>`. Any role can call set_config()
 * (PostgreSQL has no ACL on custom settings), so a setting that merely names a tenant could be
 * forged by SQL that slipped into a query. `tenantry.tenant_id()` runs as the owner, checks the
 * signature against the key the app role cannot read, and returns NULL (no rows) for anything else.
 * Policies use it as `(SELECT tenantry.tenant_id())`, evaluated once per statement (LESSONS).
 *
 * It runs on every tenant statement, so it is written for cost (docs/benchmarks.md):
 * - The key comes from `tenantry.secret_key()`, declared IMMUTABLE so that the planner folds it
 *   into the cached plan of tenant_id()'s own expression: the table is read once per connection,
 *   not through a query per call (over half of the function's cost). The folded key lives only in that
 *   connection's plan cache, which the app role cannot see (it cannot EXECUTE secret_key(), and
 *   tenant_id()'s inner plans are not the caller's). A new key reaches every connection because the
 *   bootstrap that writes it also re-creates both functions, which invalidates those plans.
 * - Byte-level string functions (`octet_length`, `split_part`, one comparison of the whole
 *   setting) instead of character-counting `length`/`substr`.
 * - `SET search_path` stays: without it the function's plans would be re-planned whenever the
 *   caller's search_path changes, which it does between tenants.
 */
export function bootstrapDatabaseSql(key: string): string {
  if (!/^[0-9a-f]{32,128}$/.test(key)) throw new Error('The tenant key must be hex')
  return `
SELECT pg_advisory_xact_lock(7406710001);
CREATE SCHEMA IF NOT EXISTS tenantry;
GRANT USAGE ON SCHEMA tenantry TO PUBLIC;
CREATE TABLE IF NOT EXISTS tenantry.secret (
  id boolean PRIMARY KEY DEFAULT true CHECK (id),
  key text NOT NULL
);
REVOKE ALL ON tenantry.secret FROM PUBLIC;
INSERT INTO tenantry.secret (key) VALUES ('${key}') ON CONFLICT (id) DO UPDATE SET key = EXCLUDED.key;
CREATE OR REPLACE FUNCTION tenantry.secret_key() RETURNS text
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  AS $fn$ SELECT s.key FROM tenantry.secret s $fn$;
REVOKE ALL ON FUNCTION tenantry.secret_key() FROM PUBLIC;
CREATE OR REPLACE FUNCTION tenantry.tenant_id() RETURNS uuid
  LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
  AS $fn$
DECLARE
  v text := current_setting('tenantry.tenant_id', true);
  id text := split_part(v, '.', 1);
BEGIN
  IF octet_length(v) = 101 AND v = id || '.' || encode(sha256(convert_to(tenantry.secret_key() || id, 'UTF8')), 'hex') THEN
    RETURN id::uuid;
  END IF;
  RETURN NULL;
END
$fn$;
REVOKE ALL ON FUNCTION tenantry.tenant_id() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenantry.tenant_id() TO PUBLIC;
CREATE TABLE IF NOT EXISTS tenantry.migrations (
  target text NOT NULL,
  version text NOT NULL,
  name text NOT NULL,
  checksum text NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (target, version)
);
REVOKE ALL ON tenantry.migrations FROM PUBLIC;
`
}

/** Creates the key of a new installation (catalog database only); existing keys are kept. */
export const CREATE_TENANT_KEY_SQL = `
SELECT pg_advisory_xact_lock(7406710001);
CREATE SCHEMA IF NOT EXISTS tenantry;
CREATE TABLE IF NOT EXISTS tenantry.secret (
  id boolean PRIMARY KEY DEFAULT true CHECK (id),
  key text NOT NULL
);
REVOKE ALL ON tenantry.secret FROM PUBLIC;
INSERT INTO tenantry.secret (key)
  SELECT replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', '')
  WHERE NOT EXISTS (SELECT 1 FROM tenantry.secret);
`

/**
 * Create a role if it is missing. CREATE ROLE takes no parameters, so the name goes through the
 * quoting helper; roles are derived from the role prefix and tenant ids, never from user input.
 */
export function ensureRoleSql(role: string, attributes: string): string {
  const lit = role.replace(/'/g, "''")
  return `DO $tenantry$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '${lit}') THEN
    CREATE ROLE ${quoteIdent(role)} ${attributes};
  END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $tenantry$;`
}

/** The login role of the data plane: never owner, never superuser, never BYPASSRLS. */
export function ensureAppRoleSql(role: string, password?: string): string {
  const pw = password === undefined ? '' : ` PASSWORD '${password.replace(/'/g, "''")}'`
  return ensureRoleSql(role, `LOGIN NOINHERIT NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE${pw}`)
}

/** A tenant's own role; the app role may SET ROLE to it but does not inherit its rights. */
export function ensureTenantRoleSql(role: string, appRole: string): string {
  return `${ensureRoleSql(role, 'NOLOGIN NOINHERIT NOSUPERUSER NOBYPASSRLS')}
GRANT ${quoteIdent(role)} TO ${quoteIdent(appRole)};`
}

/**
 * Give `role` the data rights on everything a migration made in `schema`: usage of the schema,
 * SELECT/INSERT/UPDATE/DELETE on its tables, views and partitions, USAGE/SELECT on its sequences.
 *
 * Only missing rights are granted, on relations found through pg_depend's index (issue 18).
 * `GRANT … ON ALL TABLES IN SCHEMA` finds them by a sequential scan of pg_class, which grows with
 * every tenant schema of the database (2.5 ms per statement beside 1,000 schemas, 0.7 ms beside
 * 100, here), and a GRANT rewrites the catalog row even when nothing changes: a schema's row
 * invalidates every cached plan of every backend of the database. A migration that only alters
 * tables (ADD COLUMN) now grants nothing and rewrites no row.
 */
export function grantSchemaSql(schema: string, role: string): string {
  const s = quoteLiteral(schema)
  const r = quoteLiteral(role)
  return `DO $tenantry_grant$
DECLARE
  rel record;
BEGIN
  IF NOT has_schema_privilege(${r}, ${s}, 'USAGE') THEN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', ${s}, ${r});
  END IF;
  FOR rel IN
    SELECT c.relname, c.relkind = 'S' AS seq
    FROM pg_depend d JOIN pg_class c ON c.oid = d.objid
    WHERE d.refclassid = 'pg_namespace'::regclass AND d.refobjid = (SELECT oid FROM pg_namespace WHERE nspname = ${s})
      AND d.classid = 'pg_class'::regclass AND d.deptype = 'n' AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
      AND CASE WHEN c.relkind = 'S'
        THEN NOT (has_sequence_privilege(${r}, c.oid, 'USAGE') AND has_sequence_privilege(${r}, c.oid, 'SELECT'))
        ELSE NOT (has_table_privilege(${r}, c.oid, 'SELECT') AND has_table_privilege(${r}, c.oid, 'INSERT')
          AND has_table_privilege(${r}, c.oid, 'UPDATE') AND has_table_privilege(${r}, c.oid, 'DELETE'))
      END
  LOOP
    IF rel.seq THEN
      EXECUTE format('GRANT USAGE, SELECT ON SEQUENCE %I.%I TO %I', ${s}, rel.relname, ${r});
    ELSE
      EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE %I.%I TO %I', ${s}, rel.relname, ${r});
    END IF;
  END LOOP;
END
$tenantry_grant$;`
}

/**
 * Tables of `schema` that carry `tenant_id`, with the foreign-key edges between them, so rows can
 * be deleted children first.
 */
export const TENANT_TABLES_SQL = `
SELECT c.relname AS table_name,
       coalesce(array_agg(DISTINCT r.relname) FILTER (WHERE r.relname IS NOT NULL AND r.oid <> c.oid), '{}') AS references
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
LEFT JOIN pg_constraint f ON f.conrelid = c.oid AND f.contype = 'f'
LEFT JOIN pg_class r ON r.oid = f.confrelid
WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')
GROUP BY c.relname`

/** Order tables so that a table comes before every table it references (delete order). */
export function deleteOrder(rows: { table_name: string; references: string[] | string }[]): string[] {
  const refs = new Map(rows.map((r) => [r.table_name, Array.isArray(r.references) ? r.references : r.references.replace(/^\{|\}$/g, '').split(',').filter(Boolean)]))
  const order: string[] = []
  const seen = new Set<string>()
  // A table is emitted after every table that references it.
  const referencedBy = new Map<string, string[]>()
  for (const [t, rs] of refs) for (const r of rs) referencedBy.set(r, [...(referencedBy.get(r) ?? []), t])
  const visit = (t: string, path: Set<string>) => {
    if (seen.has(t) || path.has(t)) return
    path.add(t)
    for (const child of referencedBy.get(t) ?? []) visit(child, path)
    path.delete(t)
    seen.add(t)
    order.push(t)
  }
  for (const t of [...refs.keys()].sort()) visit(t, new Set())
  return order
}

/**
 * Whether backends can be reniced here: the `prioritize` extension's `set_backend_priority()` in
 * this database, and the host's autogroup setting (`pg_read_file`: a superuser or
 * pg_read_server_files; the caller treats an error as "not known").
 */
export const BACKEND_PRIORITY_SQL = "SELECT to_regprocedure('set_backend_priority(integer,integer)') IS NOT NULL AS available"
export const AUTOGROUP_SQL = "SELECT pg_read_file('/proc/sys/kernel/sched_autogroup_enabled', 0, 8) AS v"
/** Lower one backend's priority: $1 its process id, $2 the nice value (it only ever goes up). */
export const SET_BACKEND_PRIORITY_SQL = 'SELECT set_backend_priority($1, greatest(get_backend_priority($1), $2))'

/** The formats a COPY of tenant rows can stream: text, CSV with a header line (exports), binary (archives). */
export type CopyDataFormat = 'text' | 'csv' | 'binary'

/** The options after `COPY … TO/FROM …` for `format`. */
export const copyFormatOptions = (format: CopyDataFormat = 'text'): string =>
  format === 'csv' ? ' WITH (FORMAT csv, HEADER true)' : format === 'binary' ? ' WITH (FORMAT binary)' : ''
