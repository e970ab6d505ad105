import type { Statement } from '../core/sql.ts'

/**
 * Stored bytes and objects per tenant, in the catalog database (under the catalog schema's
 * advisory lock, with the REVOKE the other catalog tables get). Quotas are checked against it,
 * and the usage metering samples it.
 */
export const STORAGE_SCHEMA_SQL = `
SELECT pg_advisory_xact_lock(7406710002);
CREATE TABLE IF NOT EXISTS tenantry.storage_usage (
  tenant_id uuid PRIMARY KEY,
  bytes bigint NOT NULL DEFAULT 0,
  objects bigint NOT NULL DEFAULT 0,
  updated_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON tenantry.storage_usage FROM PUBLIC;
`

export function usageOf(tenantId: string): Statement {
  return { text: 'SELECT bytes::float8 AS bytes, objects::float8 AS objects FROM tenantry.storage_usage WHERE tenant_id = $1', values: [tenantId] }
}

/**
 * Add a change to a tenant's usage unless it takes the tenant over `maxBytes` / `maxObjects`
 * (null: no limit); a change that lowers a figure always applies. No row back: refused.
 */
export function addUsage(tenantId: string, bytes: number, objects: number, maxBytes: number | null, maxObjects: number | null): Statement {
  return {
    text: `INSERT INTO tenantry.storage_usage AS u (tenant_id, bytes, objects)
           SELECT $1, $2, $3 WHERE ($4::bigint IS NULL OR $2 <= $4) AND ($5::bigint IS NULL OR $3 <= $5)
           ON CONFLICT (tenant_id) DO UPDATE
             SET bytes = GREATEST(u.bytes + EXCLUDED.bytes, 0), objects = GREATEST(u.objects + EXCLUDED.objects, 0), updated_at = now()
             WHERE ($4::bigint IS NULL OR EXCLUDED.bytes <= 0 OR u.bytes + EXCLUDED.bytes <= $4)
               AND ($5::bigint IS NULL OR EXCLUDED.objects <= 0 OR u.objects + EXCLUDED.objects <= $5)
           RETURNING bytes::float8 AS bytes, objects::float8 AS objects`,
    values: [tenantId, bytes, objects, maxBytes, maxObjects],
  }
}

/** Set a tenant's usage to what a listing of its prefix found (recount). */
export function setUsage(tenantId: string, bytes: number, objects: number): Statement {
  return {
    text: `INSERT INTO tenantry.storage_usage (tenant_id, bytes, objects) VALUES ($1, $2, $3)
           ON CONFLICT (tenant_id) DO UPDATE SET bytes = EXCLUDED.bytes, objects = EXCLUDED.objects, updated_at = now()`,
    values: [tenantId, bytes, objects],
  }
}

export function deleteUsage(tenantId: string): Statement {
  return { text: 'DELETE FROM tenantry.storage_usage WHERE tenant_id = $1', values: [tenantId] }
}

/** Every tenant's stored bytes, for the usage metering's samples. */
export function allUsage(): Statement {
  return { text: 'SELECT tenant_id, bytes::float8 AS bytes, objects::float8 AS objects FROM tenantry.storage_usage', values: [] }
}
