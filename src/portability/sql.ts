import { quoteIdent, quoteLiteral, type Statement } from '../core/sql.ts'

/**
 * The portability tables of the catalog database, created under the catalog schema's advisory lock
 * with the REVOKE the other catalog tables get (see src/observe/sql.ts for why one lock).
 *
 * - `tenant_keys`: each tenant's archive data key, wrapped by the master key. Erasure destroys the
 *   wrapped key (crypto-shredding): every encrypted archive of the tenant becomes unreadable.
 * - `backups`: every archive written, with its manifest (`tenantry backups list`).
 * - `erasure_certificates`: what an erasure removed and the scan that proved nothing is left.
 *
 * No foreign key to `tenantry.tenants`: backups and certificates outlive their tenant.
 */
export const PORTABILITY_SCHEMA_SQL = `
SELECT pg_advisory_xact_lock(7406710002);
CREATE TABLE IF NOT EXISTS tenantry.tenant_keys (
  tenant_id uuid PRIMARY KEY,
  wrapped_key text,
  master_fingerprint text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  destroyed_at timestamptz
);
CREATE TABLE IF NOT EXISTS tenantry.backups (
  id uuid PRIMARY KEY,
  tenant_id uuid NOT NULL,
  slug text NOT NULL,
  tier text NOT NULL,
  path text NOT NULL,
  rows bigint NOT NULL,
  bytes bigint NOT NULL,
  encrypted boolean NOT NULL,
  compressed boolean NOT NULL,
  manifest jsonb NOT NULL,
  operation_id uuid,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS backups_tenant_idx ON tenantry.backups (tenant_id, created_at);
CREATE TABLE IF NOT EXISTS tenantry.erasure_certificates (
  id uuid PRIMARY KEY,
  tenant_id uuid NOT NULL,
  slug text NOT NULL,
  operation_id uuid,
  certificate jsonb NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON tenantry.tenant_keys, tenantry.backups, tenantry.erasure_certificates FROM PUBLIC;
`

export const insertTenantKey = (tenantId: string, wrapped: string, fingerprint: string): Statement => ({
  text: `INSERT INTO tenantry.tenant_keys (tenant_id, wrapped_key, master_fingerprint) VALUES ($1, $2, $3)
         ON CONFLICT (tenant_id) DO NOTHING`,
  values: [tenantId, wrapped, fingerprint],
})
export const tenantKey = (tenantId: string): Statement => ({
  text: 'SELECT wrapped_key, master_fingerprint, destroyed_at FROM tenantry.tenant_keys WHERE tenant_id = $1',
  values: [tenantId],
})
/** Crypto-shredding: the wrapped key is overwritten, the row kept as the record of when. */
export const destroyTenantKey = (tenantId: string): Statement => ({
  text: `UPDATE tenantry.tenant_keys SET wrapped_key = NULL, destroyed_at = coalesce(destroyed_at, now())
         WHERE tenant_id = $1 RETURNING destroyed_at`,
  values: [tenantId],
})

export const insertBackup = (b: {
  id: string; tenantId: string; slug: string; tier: string; path: string; rows: number; bytes: number
  encrypted: boolean; compressed: boolean; manifest: unknown; operationId: string | null
}): Statement => ({
  text: `INSERT INTO tenantry.backups (id, tenant_id, slug, tier, path, rows, bytes, encrypted, compressed, manifest, operation_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (id) DO NOTHING`,
  values: [b.id, b.tenantId, b.slug, b.tier, b.path, b.rows, b.bytes, b.encrypted, b.compressed, JSON.stringify(b.manifest), b.operationId],
})
export const listBackups = (filter: { tenantId?: string; limit: number }): Statement => ({
  text: `SELECT id, tenant_id, slug, tier, path, rows, bytes, encrypted, compressed, operation_id, created_at
         FROM tenantry.backups WHERE ($1::uuid IS NULL OR tenant_id = $1) ORDER BY created_at DESC, id LIMIT $2`,
  values: [filter.tenantId ?? null, filter.limit],
})
export const backupsOf = (tenantId: string): Statement => ({
  text: 'SELECT id, path, encrypted FROM tenantry.backups WHERE tenant_id = $1 ORDER BY created_at',
  values: [tenantId],
})

export const insertCertificate = (c: { id: string; tenantId: string; slug: string; operationId: string; certificate: unknown }): Statement => ({
  text: `INSERT INTO tenantry.erasure_certificates (id, tenant_id, slug, operation_id, certificate) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (id) DO NOTHING`,
  values: [c.id, c.tenantId, c.slug, c.operationId, JSON.stringify(c.certificate)],
})
export const certificatesOf = (slugOrId: { slug?: string; tenantId?: string }): Statement => ({
  text: `SELECT id, tenant_id, slug, operation_id, certificate, created_at FROM tenantry.erasure_certificates
         WHERE ($1::text IS NULL OR slug = $1) AND ($2::uuid IS NULL OR tenant_id = $2) ORDER BY created_at DESC`,
  values: [slugOrId.slug ?? null, slugOrId.tenantId ?? null],
})

/** Catalog tables that carry a tenant id, with the rows the tenant still has in each (the erasure's scan of the catalog). */
export const catalogRowsOf = (tenantId: string): Statement => ({
  text: `SELECT 'tenantry.tenants' AS t, count(*) AS n FROM tenantry.tenants WHERE id = $1
         UNION ALL SELECT 'tenantry.domains', count(*) FROM tenantry.domains WHERE tenant_id = $1
         UNION ALL SELECT 'tenantry.tenant_keys (live keys)', count(*) FROM tenantry.tenant_keys WHERE tenant_id = $1 AND wrapped_key IS NOT NULL
         UNION ALL SELECT 'tenantry.backups', count(*) FROM tenantry.backups WHERE tenant_id = $1
         UNION ALL SELECT 'tenantry.usage', count(*) FROM tenantry.usage WHERE tenant_id = $1`,
  values: [tenantId],
})
export const deleteUsageRows = (tenantId: string): Statement => ({ text: 'DELETE FROM tenantry.usage WHERE tenant_id = $1', values: [tenantId] })
export const deleteBackupRows = (tenantId: string): Statement => ({ text: 'DELETE FROM tenantry.backups WHERE tenant_id = $1', values: [tenantId] })

/** Every table of a database (any schema but the system ones and `tenantry`) with a `tenant_id` column. */
export const TABLES_WITH_TENANT_ID: Statement = {
  text: `SELECT n.nspname AS schema, c.relname AS table
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
         WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'tenantry') AND n.nspname NOT LIKE 'pg\\_%'
         ORDER BY 1, 2`,
  values: [],
}

/** Rows of `tenantId` in one table (the erasure's scan, run as the owner). */
export const countTenantRows = (schema: string, table: string, tenantId: string): Statement => ({
  text: `SELECT count(*) AS n FROM ${quoteIdent(schema)}.${quoteIdent(table)} WHERE tenant_id = $1`,
  values: [tenantId],
})

/**
 * Columns of the tenant tables of `schema`, in column order, with their identity/serial sequence,
 * their type (`format_type`) and whether it is built in (below FirstNormalObjectId: its binary COPY
 * form is the same on every server, unlike an array or record of a type made by a migration, whose
 * binary form carries that type's own oid).
 */
export const tenantColumns = (schema: string): Statement => ({
  text: `SELECT c.relname AS table, a.attname AS column, pg_get_serial_sequence(format('%I.%I', n.nspname, c.relname), a.attname) AS sequence,
                format_type(a.atttypid, a.atttypmod) AS type, a.atttypid < 16384 AS builtin
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
         WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')
           AND EXISTS (SELECT 1 FROM pg_attribute t WHERE t.attrelid = c.oid AND t.attname = 'tenant_id' AND NOT t.attisdropped)
         ORDER BY c.relname, a.attnum`,
  values: [schema],
})

/**
 * The COPY source of one tenant's rows, `tenant_id` first (the restore rewrites it in place).
 * COPY takes no bind parameters: the tenant id is a validated uuid, passed as a quoted literal.
 */
export function copyOutSource(schema: string, table: string, columns: string[], tenantId: string): string {
  return `(SELECT ${columns.map(quoteIdent).join(', ')} FROM ${quoteIdent(schema)}.${quoteIdent(table)} WHERE tenant_id = ${quoteLiteral(tenantId)}::uuid)`
}
export function copyInTarget(schema: string, table: string, columns: string[]): string {
  return `${quoteIdent(schema)}.${quoteIdent(table)} (${columns.map(quoteIdent).join(', ')})`
}

/**
 * Set a sequence past the tenant's rows, never back: rows of other tenants (a pooled sequence is
 * shared) took their values from the sequence, so `last_value` already covers them, and the max is
 * read through the tenant-led key (an index scan, not the whole shared table).
 */
export const raiseSequence = (sequence: string, schema: string, table: string, column: string, tenantId: string): Statement => ({
  text: `SELECT setval($1::regclass, greatest(coalesce((SELECT max(${quoteIdent(column)}) FROM ${quoteIdent(schema)}.${quoteIdent(table)} WHERE tenant_id = $2), 0)::bigint,
           coalesce(pg_sequence_last_value($1::regclass), 0), 1))`,
  values: [sequence, tenantId],
})

/** Point an owner transaction at one tenant (signed setting), for tables whose row-level security is FORCEd. */
export const pointAtTenant = (token: string): Statement => ({ text: "SELECT set_config('tenantry.tenant_id', $1, true)", values: [token] })

export const deleteTenantRows = (schema: string, table: string, tenantId: string): Statement => ({
  text: `DELETE FROM ${quoteIdent(schema)}.${quoteIdent(table)} WHERE tenant_id = $1`,
  values: [tenantId],
})

/** Whether the current role bypasses row-level security (COPY FROM is refused on RLS tables otherwise). */
export const BYPASSES_RLS: Statement = { text: 'SELECT rolsuper OR rolbypassrls AS bypass FROM pg_roles WHERE rolname = current_user', values: [] }

/** A temporary twin of a table (ON COMMIT DROP) that COPY can load when the role is subject to row-level security. */
export const createLoadTable = (schema: string, table: string): string =>
  `CREATE TEMP TABLE IF NOT EXISTS ${quoteIdent(`tenantry_load_${table}`.slice(0, 63))} (LIKE ${quoteIdent(schema)}.${quoteIdent(table)} INCLUDING DEFAULTS) ON COMMIT DROP`
export const loadTableName = (table: string): string => quoteIdent(`tenantry_load_${table}`.slice(0, 63))
export const insertFromLoadTable = (schema: string, table: string, columns: string[]): Statement => ({
  text: `INSERT INTO ${quoteIdent(schema)}.${quoteIdent(table)} (${columns.map(quoteIdent).join(', ')}) OVERRIDING SYSTEM VALUE
         SELECT ${columns.map(quoteIdent).join(', ')} FROM ${loadTableName(table)}`,
  values: [],
})

/**
 * The archive's column types as this server names them, without their modifiers (`bpchar`, not
 * `character`, which would mean `character(1)`; `to_regtype` parses each; NULL for a type
 * it does not have), built in or not. Parameters only: the names come from an archive.
 */
export const resolveTypes = (types: string[]): Statement => ({
  text: `SELECT format_type(to_regtype(u.t), -1) AS type, to_regtype(u.t)::oid < 16384 AS builtin
         FROM unnest($1::text[]) WITH ORDINALITY AS u(t, i) ORDER BY u.i`,
  values: [types],
})
/** The temporary table an archive's binary rows load into when the target's column types differ (`types`: as {@link resolveTypes} named them). */
export const convertTableName = (table: string): string => quoteIdent(`tenantry_conv_${table}`.slice(0, 63))
export const createConvertTable = (table: string, columns: string[], types: string[]): string =>
  `DROP TABLE IF EXISTS ${convertTableName(table)}; CREATE TEMP TABLE ${convertTableName(table)} (${columns.map((c, i) => `${quoteIdent(c)} ${types[i]}`).join(', ')}) ON COMMIT DROP`
/**
 * Into the target from the conversion table: a column whose type differs goes through its text
 * (`casts`: the target's type, from the server's catalog), exactly what loading COPY text does.
 */
export const insertConverted = (schema: string, table: string, columns: string[], casts: (string | null)[]): Statement => ({
  text: `INSERT INTO ${quoteIdent(schema)}.${quoteIdent(table)} (${columns.map(quoteIdent).join(', ')}) OVERRIDING SYSTEM VALUE
         SELECT ${columns.map((c, i) => (casts[i] ? `${quoteIdent(c)}::text::${casts[i]}` : quoteIdent(c))).join(', ')} FROM ${convertTableName(table)}`,
  values: [],
})

/** Columns of `schema`'s tenant tables whose comment carries the subject mark. */
export const subjectColumns = (schema: string, mark: string): Statement => ({
  text: `SELECT c.relname AS table, a.attname AS column
         FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
           AND position($2 in coalesce(col_description(c.oid, a.attnum), '')) > 0
         ORDER BY c.relname, a.attnum`,
  values: [schema, mark],
})

/**
 * Point a transaction at one data subject: the value travels as a bind parameter into a
 * transaction-local setting, which the COPY and DELETE statements (COPY takes no parameters) read.
 */
export const pointAtSubject = (value: string): Statement => ({ text: "SELECT set_config('tenantry.subject', $1, true)", values: [value] })

/** Rows of one tenant, or of the subject set by {@link pointAtSubject} in any of `subjectColumns`. */
export function exportSelect(schema: string, table: string, columns: string[], tenantId: string, subjectCols?: string[]): string {
  const subject = subjectCols ? ` AND (${subjectCols.map((c) => `${quoteIdent(c)}::text = current_setting('tenantry.subject')`).join(' OR ')})` : ''
  return `SELECT ${columns.map(quoteIdent).join(', ')} FROM ${quoteIdent(schema)}.${quoteIdent(table)} WHERE tenant_id = ${quoteLiteral(tenantId)}::uuid${subject}`
}

/** Delete (or count) the subject's rows of one table. */
export const subjectRows = (verb: 'DELETE' | 'COUNT', schema: string, table: string, tenantId: string, subjectCols: string[]): Statement => ({
  text: `${verb === 'DELETE' ? 'DELETE' : 'SELECT count(*) AS n'} FROM ${quoteIdent(schema)}.${quoteIdent(table)} WHERE tenant_id = $1 AND (${subjectCols.map((c) => `${quoteIdent(c)}::text = current_setting('tenantry.subject')`).join(' OR ')})`,
  values: [tenantId],
})

/** One table of one tenant copied to another schema of the same database in one statement, `tenant_id` set to `$2`. */
export const copyWithinDatabase = (fromSchema: string, toSchema: string, table: string, columns: string[], fromId: string, toId: string): Statement => ({
  text: `INSERT INTO ${quoteIdent(toSchema)}.${quoteIdent(table)} (${columns.map(quoteIdent).join(', ')}) OVERRIDING SYSTEM VALUE
         SELECT $2::uuid${columns.slice(1).map((c) => `, ${quoteIdent(c)}`).join('')} FROM ${quoteIdent(fromSchema)}.${quoteIdent(table)} WHERE tenant_id = $1`,
  values: [fromId, toId],
})
