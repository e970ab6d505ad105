import { quoteIdent, type Statement } from '../core/sql.ts'

/**
 * The SQLSTATE a fenced write raises: the data plane catches it, waits, looks the tenant up
 * again and runs the write where the tenant is then (docs/moves.md). Class `TM` is ours.
 */
export const FENCED_SQLSTATE = 'TM001'

/**
 * The catalog table of the rooms a finished move left behind for `move --rollback`, until their
 * grace period ends. Under the catalog schema's advisory lock, with the REVOKE the others get.
 */
export const MOVES_SCHEMA_SQL = `
SELECT pg_advisory_xact_lock(7406710002);
CREATE TABLE IF NOT EXISTS tenantry.move_sources (
  operation_id uuid PRIMARY KEY,
  tenant_id uuid NOT NULL,
  tier text NOT NULL,
  placement jsonb NOT NULL,
  to_tier text NOT NULL,
  to_placement jsonb NOT NULL,
  keep_until timestamptz NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS move_sources_tenant_idx ON tenantry.move_sources (tenant_id);
REVOKE ALL ON tenantry.move_sources FROM PUBLIC;
`

/**
 * The write fence of one database, made in the database a tenant moves out of: a table of the
 * fenced (tenant, schema) pairs and a trigger function that refuses a fenced tenant's writes with
 * {@link FENCED_SQLSTATE}. SECURITY DEFINER: the application role has no rights on `tenantry`.
 * A volatile function takes a fresh snapshot per statement (READ COMMITTED), so a write sees a
 * fence committed after its transaction began.
 */
export const FENCE_SCHEMA_SQL = `
SELECT pg_advisory_xact_lock(7406710014);
CREATE TABLE IF NOT EXISTS tenantry.move_fences (
  tenant_id uuid NOT NULL,
  schema_name text NOT NULL,
  operation_id uuid NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, schema_name)
);
REVOKE ALL ON tenantry.move_fences FROM PUBLIC;
CREATE OR REPLACE FUNCTION tenantry.move_fence() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
  t uuid;
BEGIN
  -- The move's own removal of the old room's rows, in the transaction that also lifts the fence.
  IF current_setting('tenantry.move_cleanup', true) = 'on' THEN
    IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
    RETURN NEW;
  END IF;
  IF TG_OP = 'DELETE' THEN t := OLD.tenant_id; ELSE t := NEW.tenant_id; END IF;
  IF EXISTS (SELECT 1 FROM tenantry.move_fences f WHERE f.tenant_id = t AND f.schema_name = TG_TABLE_SCHEMA) THEN
    RAISE EXCEPTION 'tenant % is moving: its writes wait for the new placement', t USING ERRCODE = '${FENCED_SQLSTATE}';
  END IF;
  IF TG_OP = 'UPDATE' AND OLD.tenant_id IS DISTINCT FROM NEW.tenant_id
     AND EXISTS (SELECT 1 FROM tenantry.move_fences f WHERE f.tenant_id = OLD.tenant_id AND f.schema_name = TG_TABLE_SCHEMA) THEN
    RAISE EXCEPTION 'tenant % is moving', OLD.tenant_id USING ERRCODE = '${FENCED_SQLSTATE}';
  END IF;
  IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
  RETURN NEW;
END
$$;
`

export const FENCE_TRIGGER = 'tenantry_move_fence'

export const insertFence = (tenantId: string, schema: string, operationId: string): Statement => ({
  text: 'INSERT INTO tenantry.move_fences (tenant_id, schema_name, operation_id) VALUES ($1, $2, $3) ON CONFLICT (tenant_id, schema_name) DO UPDATE SET operation_id = EXCLUDED.operation_id',
  values: [tenantId, schema, operationId],
})

export const deleteFence = (tenantId: string, schema: string): Statement => ({
  text: 'DELETE FROM tenantry.move_fences WHERE tenant_id = $1 AND schema_name = $2',
  values: [tenantId, schema],
})

export const fencesLeft = (schema: string): Statement => ({
  text: "SELECT count(*)::int AS n FROM tenantry.move_fences WHERE schema_name = $1",
  values: [schema],
})

export const hasFenceTable: Statement = { text: "SELECT to_regclass('tenantry.move_fences') IS NOT NULL AS ok", values: [] }

/** CREATE OR REPLACE: it waits for every open transaction that wrote to the table (their locks), so no write made before the fence commits after the copy's snapshot. */
export function createFenceTrigger(schema: string, table: string): string {
  return `CREATE OR REPLACE TRIGGER ${FENCE_TRIGGER} BEFORE INSERT OR UPDATE OR DELETE ON ${quoteIdent(schema)}.${quoteIdent(table)} FOR EACH ROW EXECUTE FUNCTION tenantry.move_fence()`
}

export function dropFenceTrigger(schema: string, table: string): string {
  return `DROP TRIGGER IF EXISTS ${FENCE_TRIGGER} ON ${quoteIdent(schema)}.${quoteIdent(table)}`
}

/** Rows and an order-independent checksum of one tenant's rows of a table (sum of the rows' 64-bit hashes). */
export function tableChecksum(schema: string, table: string, tenantId: string): Statement {
  return {
    text: `SELECT count(*)::bigint AS n, coalesce(sum(hashtextextended(t::text, 0)::numeric), 0)::text AS sum FROM ${quoteIdent(schema)}.${quoteIdent(table)} t WHERE t.tenant_id = $1`,
    values: [tenantId],
  }
}

export const insertMoveSource = (r: { operationId: string; tenantId: string; tier: string; placement: unknown; toTier: string; toPlacement: unknown; keepUntil: Date }): Statement => ({
  text: 'INSERT INTO tenantry.move_sources (operation_id, tenant_id, tier, placement, to_tier, to_placement, keep_until) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (operation_id) DO NOTHING',
  values: [r.operationId, r.tenantId, r.tier, JSON.stringify(r.placement), r.toTier, JSON.stringify(r.toPlacement), r.keepUntil],
})

export const moveSourcesOf = (tenantId: string | null, expiredOnly: boolean): Statement => ({
  text: `SELECT operation_id, tenant_id, tier, placement, to_tier, to_placement, keep_until FROM tenantry.move_sources
         WHERE ($1::uuid IS NULL OR tenant_id = $1) AND (NOT $2 OR keep_until <= now()) ORDER BY created_at DESC`,
  values: [tenantId, expiredOnly],
})

export const deleteMoveSource = (operationId: string): Statement => ({ text: 'DELETE FROM tenantry.move_sources WHERE operation_id = $1', values: [operationId] })

export const CLEANUP_SETTING: Statement = { text: "SELECT set_config('tenantry.move_cleanup', 'on', true)", values: [] }
