import { quoteIdent, type Statement } from '../core/sql.ts'
import type { UsageGranularity, UsageRecord } from './types.ts'

/**
 * The usage tables of the catalog database; run after the catalog's own schema (the `tenantry`
 * schema must exist), under the catalog schema's own advisory lock: the catalog's `REVOKE ALL ON
 * ALL TABLES IN SCHEMA tenantry` also rewrites these tables' ACLs, and two processes starting
 * together under two different locks failed with "tuple concurrently updated".
 *
 * No foreign key to `tenantry.tenants`: a purged tenant's usage is kept until the retention ends
 * (billing and audits ask about last month's tenants too), and metering never waits on a tenant row.
 */
export const USAGE_SCHEMA_SQL = `
SELECT pg_advisory_xact_lock(7406710002);
CREATE TABLE IF NOT EXISTS tenantry.usage (
  tenant_id uuid NOT NULL,
  interval_start timestamptz NOT NULL,
  interval_ms integer NOT NULL CHECK (interval_ms > 0),
  requests bigint NOT NULL DEFAULT 0,
  errors bigint NOT NULL DEFAULT 0,
  rejections bigint NOT NULL DEFAULT 0,
  statements bigint NOT NULL DEFAULT 0,
  rows bigint NOT NULL DEFAULT 0,
  db_time_ms double precision NOT NULL DEFAULT 0,
  storage_bytes bigint,
  PRIMARY KEY (tenant_id, interval_start)
);
ALTER TABLE tenantry.usage ADD COLUMN IF NOT EXISTS object_bytes bigint;
CREATE INDEX IF NOT EXISTS usage_interval_idx ON tenantry.usage (interval_start);
CREATE TABLE IF NOT EXISTS tenantry.usage_sampling (
  id boolean PRIMARY KEY DEFAULT true CHECK (id),
  sampled_at timestamptz NOT NULL DEFAULT '-infinity',
  sampled_by text
);
INSERT INTO tenantry.usage_sampling (id) VALUES (true) ON CONFLICT DO NOTHING;
REVOKE ALL ON tenantry.usage, tenantry.usage_sampling FROM PUBLIC;
`

/**
 * Add up a batch of records in one statement. Counters are summed into an existing row of the
 * same tenant and interval (several processes meter the same tenant); the storage sample is a
 * gauge: a new sample replaces the old one, a record without one keeps it.
 */
export function writeUsage(records: readonly UsageRecord[]): Statement {
  const cols: unknown[][] = [[], [], [], [], [], [], [], [], [], [], []]
  for (const r of records) {
    cols[0].push(r.tenantId)
    cols[1].push(r.intervalStart.toISOString())
    cols[2].push(r.intervalMs)
    cols[3].push(r.requests)
    cols[4].push(r.errors)
    cols[5].push(r.rejections)
    cols[6].push(r.statements)
    cols[7].push(r.rows)
    cols[8].push(r.dbTimeMs)
    cols[9].push(r.storageBytes)
    cols[10].push(r.objectBytes ?? null)
  }
  return {
    text: `INSERT INTO tenantry.usage AS u
             (tenant_id, interval_start, interval_ms, requests, errors, rejections, statements, rows, db_time_ms, storage_bytes, object_bytes)
           SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::int[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[], $9::float8[], $10::bigint[], $11::bigint[])
           ON CONFLICT (tenant_id, interval_start) DO UPDATE SET
             requests = u.requests + EXCLUDED.requests,
             errors = u.errors + EXCLUDED.errors,
             rejections = u.rejections + EXCLUDED.rejections,
             statements = u.statements + EXCLUDED.statements,
             rows = u.rows + EXCLUDED.rows,
             db_time_ms = u.db_time_ms + EXCLUDED.db_time_ms,
             storage_bytes = coalesce(EXCLUDED.storage_bytes, u.storage_bytes),
             object_bytes = coalesce(EXCLUDED.object_bytes, u.object_bytes)`,
    values: cols,
  }
}

/** Sums of one tenant (or all, `tenantId` null) per bucket of `[from, to)`; buckets are UTC. */
export function usageByBucket(q: { tenantId: string | null; from: Date; to: Date; granularity: UsageGranularity }): Statement {
  return {
    text: `SELECT g.tenant_id, t.slug, g.bucket, g.requests, g.errors, g.rejections, g.statements, g.rows, g.db_time_ms, g.storage_bytes, g.object_bytes
           FROM (
             SELECT tenant_id, date_trunc($4, interval_start, 'UTC') AS bucket,
                    sum(requests)::float8 AS requests, sum(errors)::float8 AS errors, sum(rejections)::float8 AS rejections,
                    sum(statements)::float8 AS statements, sum(rows)::float8 AS rows, sum(db_time_ms) AS db_time_ms,
                    ((array_agg(storage_bytes ORDER BY interval_start DESC) FILTER (WHERE storage_bytes IS NOT NULL))[1])::float8 AS storage_bytes,
                    ((array_agg(object_bytes ORDER BY interval_start DESC) FILTER (WHERE object_bytes IS NOT NULL))[1])::float8 AS object_bytes
             FROM tenantry.usage
             WHERE interval_start >= $2 AND interval_start < $3 AND ($1::uuid IS NULL OR tenant_id = $1::uuid)
             GROUP BY 1, 2
           ) g
           LEFT JOIN tenantry.tenants t ON t.id = g.tenant_id
           ORDER BY g.bucket, t.slug NULLS LAST, g.tenant_id`,
    values: [q.tenantId, q.from.toISOString(), q.to.toISOString(), q.granularity],
  }
}

/** Whether any usage row of `tenantId` is kept (a purged tenant's, looked up by id). */
export const hasUsage = (tenantId: string): Statement => ({
  text: 'SELECT EXISTS (SELECT 1 FROM tenantry.usage WHERE tenant_id = $1) AS found',
  values: [tenantId],
})

const TOP_ORDER = {
  requests: 'requests DESC, db_time_ms DESC',
  db_time: 'db_time_ms DESC, requests DESC',
  // Database storage and object storage together: what the tenant holds, wherever it is.
  storage: 'coalesce(storage_bytes, 0) + coalesce(object_bytes, 0) DESC, requests DESC',
} as const

/**
 * Per tenant over `[from, to)`: sums, the latest storage sample, its catalog row's tier, plan and
 * server, its share of its server's database time and of all requests. The shares are taken over
 * every tenant before the server filter and the limit (a null limit is LIMIT ALL).
 */
export function topTenants(q: { from: Date; to: Date; by: keyof typeof TOP_ORDER; server: string | null; limit: number | null }): Statement {
  return {
    text: `WITH per_tenant AS (
             SELECT tenant_id,
                    sum(requests)::float8 AS requests, sum(errors)::float8 AS errors, sum(rejections)::float8 AS rejections,
                    sum(statements)::float8 AS statements, sum(rows)::float8 AS rows, sum(db_time_ms) AS db_time_ms,
                    ((array_agg(storage_bytes ORDER BY interval_start DESC) FILTER (WHERE storage_bytes IS NOT NULL))[1])::float8 AS storage_bytes,
                    ((array_agg(object_bytes ORDER BY interval_start DESC) FILTER (WHERE object_bytes IS NOT NULL))[1])::float8 AS object_bytes
             FROM tenantry.usage
             WHERE interval_start >= $1 AND interval_start < $2
             GROUP BY tenant_id
           ), shared AS (
             SELECT p.*, t.slug, t.tier, t.plan, t.server,
                    CASE WHEN t.server IS NULL THEN 0
                         ELSE coalesce(p.db_time_ms / nullif(sum(p.db_time_ms) OVER (PARTITION BY t.server), 0), 0) END AS server_db_time_share,
                    coalesce(p.requests / nullif(sum(p.requests) OVER (), 0), 0) AS request_share
             FROM per_tenant p
             LEFT JOIN tenantry.tenants t ON t.id = p.tenant_id
           )
           SELECT tenant_id, slug, tier, plan, server, requests, errors, rejections, statements, rows, db_time_ms, storage_bytes, object_bytes,
                  server_db_time_share, request_share
           FROM shared
           WHERE $3::text IS NULL OR server = $3::text
           ORDER BY ${TOP_ORDER[q.by]}, slug NULLS LAST, tenant_id
           LIMIT $4`,
    values: [q.from.toISOString(), q.to.toISOString(), q.server, q.limit],
  }
}

/** Delete rows whose interval started more than `days` days ago. */
export const pruneUsage = (days: number): Statement => ({
  text: 'DELETE FROM tenantry.usage WHERE interval_start < now() - make_interval(days => $1)',
  values: [days],
})

/**
 * Take the fleet's storage-sampling slot unless another process took it within `withinMs`
 * (`force` takes it anyway). A row back means this process samples now. Concurrent claims
 * serialise on the one row: the second re-checks the condition against the first's update.
 */
export const claimSampling = (withinMs: number, by: string, force: boolean): Statement => ({
  text: `UPDATE tenantry.usage_sampling SET sampled_at = now(), sampled_by = $2
         WHERE id AND ($3 OR sampled_at < now() - make_interval(secs => $1::float8 / 1000))
         RETURNING sampled_at`,
  values: [withinMs, by, force],
})

/** Whether the owner connection sees every row despite forced row-level security. */
export const BYPASSES_RLS_SQL = 'SELECT (rolsuper OR rolbypassrls) AS bypasses FROM pg_roles WHERE rolname = current_user'

/** Bytes of every schema in `schemas` (tables, their indexes and TOAST, materialized views). */
export const schemaSizes = (schemas: string[]): Statement => ({
  text: `SELECT n.nspname AS schema, coalesce(sum(pg_total_relation_size(c.oid)), 0)::float8 AS bytes
         FROM pg_namespace n
         LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relkind IN ('r', 'm', 'p')
         WHERE n.nspname = ANY($1::text[])
         GROUP BY n.nspname`,
  values: [schemas],
})

/** Bytes of each database named (PostgreSQL; run from any database of the server). */
export const databaseSizes = (databases: string[]): Statement => ({
  text: 'SELECT datname AS database, pg_database_size(oid)::float8 AS bytes FROM pg_database WHERE datname = ANY($1::text[])',
  values: [databases],
})

/** Bytes of the current database (PGlite: each of its databases is an instance of its own). */
export const CURRENT_DATABASE_SIZE_SQL = 'SELECT pg_database_size(current_database())::float8 AS bytes'

/** Tables of `schema` with a `tenant_id` column and their total bytes (indexes and TOAST included). */
export const pooledTables = (schema: string): Statement => ({
  text: `SELECT c.relname AS table_name, pg_total_relation_size(c.oid)::float8 AS bytes
         FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
         WHERE n.nspname = $1 AND c.relkind = 'r'
         ORDER BY c.relname`,
  values: [schema],
})

/** Rows of each tenant in one pooled table (run by a role that bypasses row-level security). */
export const rowsPerTenant = (schema: string, table: string): Statement => ({
  text: `SELECT tenant_id, count(*)::float8 AS n FROM ${quoteIdent(schema)}.${quoteIdent(table)} GROUP BY tenant_id`,
  values: [],
})

/** Rows of one tenant in a pooled table, inside a transaction pointed at that tenant (forced RLS). */
export const rowsOfTenant = (schema: string, table: string, tenantId: string): Statement => ({
  text: `SELECT count(*)::float8 AS n FROM ${quoteIdent(schema)}.${quoteIdent(table)} WHERE tenant_id = $1`,
  values: [tenantId],
})

export const SET_TENANT_SQL = "SELECT set_config('tenantry.tenant_id', $1, true)"
