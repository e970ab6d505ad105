import { quoteIdent, quoteLiteral, type Statement } from '../core/sql.ts'

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
 * The write fence and the change capture of one database, made in the database a tenant moves out
 * of: a table of the fenced (tenant, schema) pairs and a trigger function that refuses a fenced
 * tenant's writes with {@link FENCED_SQLSTATE}; a table of captured changes (`move_changes`: the
 * primary key of every row of the moving tenant written while its snapshot is copied) and the
 * trigger function that writes it. SECURITY DEFINER: the application role has no rights on
 * `tenantry`. A volatile function takes a fresh snapshot per statement (READ COMMITTED), so a
 * write sees a fence committed after its transaction began.
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
CREATE TABLE IF NOT EXISTS tenantry.move_changes (
  seq bigserial PRIMARY KEY,
  tenant_id uuid NOT NULL,
  table_name text NOT NULL,
  key jsonb NOT NULL,
  op "char" NOT NULL
);
CREATE INDEX IF NOT EXISTS move_changes_tenant_idx ON tenantry.move_changes (tenant_id, seq);
REVOKE ALL ON tenantry.move_changes FROM PUBLIC;
CREATE OR REPLACE FUNCTION tenantry.move_capture() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
  k_old jsonb;
  k_new jsonb;
BEGIN
  -- TG_ARGV[0]: the moving tenant; the rest: the table's primary key columns.
  -- The move's own removal of the old room's rows is not a change to catch up.
  IF current_setting('tenantry.move_cleanup', true) = 'on' THEN RETURN NULL; END IF;
  IF TG_OP <> 'INSERT' THEN
    SELECT jsonb_object_agg(c, to_jsonb(OLD) -> c) INTO k_old FROM unnest(TG_ARGV[1:]) c;
    INSERT INTO tenantry.move_changes (tenant_id, table_name, key, op) VALUES (TG_ARGV[0]::uuid, TG_TABLE_NAME, k_old, left(TG_OP, 1));
  END IF;
  IF TG_OP <> 'DELETE' THEN
    SELECT jsonb_object_agg(c, to_jsonb(NEW) -> c) INTO k_new FROM unnest(TG_ARGV[1:]) c;
    IF k_old IS DISTINCT FROM k_new THEN
      INSERT INTO tenantry.move_changes (tenant_id, table_name, key, op) VALUES (TG_ARGV[0]::uuid, TG_TABLE_NAME, k_new, left(TG_OP, 1));
    END IF;
  END IF;
  RETURN NULL;
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

/** Trigger names of one tenant's change capture on a table (one per operation: INSERT cannot name OLD in its WHEN). */
export function captureTriggers(tenantId: string): { insert: string; update: string; delete: string } {
  const base = `tenantry_move_capture_${tenantId.replace(/-/g, '')}`
  return { insert: `${base}_i`, update: `${base}_u`, delete: `${base}_d` }
}

/**
 * The capture triggers of one moving tenant on one table: AFTER each row it writes, its primary
 * key goes into `move_changes` in the same transaction. The WHEN clause keeps the other tenants of
 * a pooled table out (no function call for their rows). DDL takes no parameters: the tenant id is
 * a validated uuid, quoted as a literal.
 */
export function createCaptureTriggers(schema: string, table: string, tenantId: string, key: string[]): string[] {
  const names = captureTriggers(tenantId)
  const on = `${quoteIdent(schema)}.${quoteIdent(table)}`
  const id = `${quoteLiteral(tenantId)}::uuid`
  const fn = `tenantry.move_capture(${[tenantId, ...key].map(quoteLiteral).join(', ')})`
  return [
    `CREATE OR REPLACE TRIGGER ${quoteIdent(names.insert)} AFTER INSERT ON ${on} FOR EACH ROW WHEN (NEW.tenant_id = ${id}) EXECUTE FUNCTION ${fn}`,
    `CREATE OR REPLACE TRIGGER ${quoteIdent(names.update)} AFTER UPDATE ON ${on} FOR EACH ROW WHEN (OLD.tenant_id = ${id} OR NEW.tenant_id = ${id}) EXECUTE FUNCTION ${fn}`,
    `CREATE OR REPLACE TRIGGER ${quoteIdent(names.delete)} AFTER DELETE ON ${on} FOR EACH ROW WHEN (OLD.tenant_id = ${id}) EXECUTE FUNCTION ${fn}`,
  ]
}

export function dropCaptureTriggers(schema: string, table: string, tenantId: string): string[] {
  return Object.values(captureTriggers(tenantId)).map((n) => `DROP TRIGGER IF EXISTS ${quoteIdent(n)} ON ${quoteIdent(schema)}.${quoteIdent(table)}`)
}

export const tablesWithTriggers = (schema: string, names: string[]): Statement => ({
  text: `SELECT DISTINCT c.relname AS table FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 AND g.tgname = ANY($2::text[])`,
  values: [schema, names],
})

export const deleteChanges = (tenantId: string): Statement => ({ text: 'DELETE FROM tenantry.move_changes WHERE tenant_id = $1', values: [tenantId] })

/**
 * Take the captured changes of a tenant: removed and returned in one statement, as the distinct
 * keys of each table (a JSON array text, never parsed in JavaScript: bigint keys stay exact). A
 * change committed after this statement's snapshot stays for the next round.
 */
export const takeChanges = (tenantId: string): Statement => ({
  text: `WITH d AS (DELETE FROM tenantry.move_changes WHERE tenant_id = $1 RETURNING table_name, key)
         SELECT table_name, jsonb_agg(DISTINCT key)::text AS keys, count(DISTINCT key)::int AS n FROM d GROUP BY table_name`,
  values: [tenantId],
})

/** The primary key columns of every table of `schema`, in key order. */
export const primaryKeys = (schema: string): Statement => ({
  text: `SELECT c.relname AS table, array_agg(a.attname::text ORDER BY k.ord) AS columns
         FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
         CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
         WHERE n.nspname = $1 AND i.indisprimary GROUP BY c.relname`,
  values: [schema],
})

const keysOf = (schema: string, table: string, key: string[]) =>
  `(SELECT DISTINCT ${key.map((c) => `k.${quoteIdent(c)}`).join(', ')} FROM jsonb_populate_recordset(NULL::${quoteIdent(schema)}.${quoteIdent(table)}, $1::jsonb) k)`
const keyMatch = (key: string[], a: string, b: string) => key.map((c) => `${a}.${quoteIdent(c)} = ${b}.${quoteIdent(c)}`).join(' AND ')

/**
 * The current rows of the captured keys (`rows`, a JSON array text) and the keys that have no row
 * any more (`gone`), of one tenant in one table of the old room.
 */
export function readChanged(schema: string, table: string, key: string[], keysJson: string, tenantId: string): Statement {
  const t = `${quoteIdent(schema)}.${quoteIdent(table)}`
  return {
    text: `SELECT (SELECT coalesce(jsonb_agg(to_jsonb(t)), '[]') FROM ${t} t JOIN ${keysOf(schema, table, key)} k ON ${keyMatch(key, 't', 'k')} WHERE t.tenant_id = $2)::text AS rows,
                  (SELECT coalesce(jsonb_agg(to_jsonb(k)), '[]') FROM ${keysOf(schema, table, key)} k WHERE NOT EXISTS (SELECT 1 FROM ${t} t WHERE ${keyMatch(key, 't', 'k')}))::text AS gone`,
    values: [keysJson, tenantId],
  }
}

/** Insert or overwrite rows (a JSON array text of whole rows) by primary key. */
export function upsertRows(schema: string, table: string, columns: string[], key: string[], rowsJson: string): Statement {
  const cols = columns.map(quoteIdent).join(', ')
  const rest = columns.filter((c) => !key.includes(c))
  const onConflict = rest.length === 0 ? 'DO NOTHING' : `DO UPDATE SET ${rest.map((c) => `${quoteIdent(c)} = EXCLUDED.${quoteIdent(c)}`).join(', ')}`
  return {
    text: `INSERT INTO ${quoteIdent(schema)}.${quoteIdent(table)} (${cols}) OVERRIDING SYSTEM VALUE
           SELECT ${cols} FROM jsonb_populate_recordset(NULL::${quoteIdent(schema)}.${quoteIdent(table)}, $1::jsonb)
           ON CONFLICT (${key.map(quoteIdent).join(', ')}) ${onConflict}`,
    values: [rowsJson],
  }
}

/** Delete rows by primary key (a JSON array text of keys). */
export function deleteKeys(schema: string, table: string, key: string[], keysJson: string): Statement {
  return {
    text: `DELETE FROM ${quoteIdent(schema)}.${quoteIdent(table)} t USING ${keysOf(schema, table, key)} k WHERE ${keyMatch(key, 't', 'k')}`,
    values: [keysJson],
  }
}

/** Rows and checksum (as {@link tableChecksum}) of one tenant's rows of the given keys. */
export function keysChecksum(schema: string, table: string, key: string[], keysJson: string, tenantId: string): Statement {
  return {
    text: `SELECT count(*)::bigint AS n, coalesce(sum(hashtextextended(t::text, 0)::numeric), 0)::text AS sum
           FROM ${quoteIdent(schema)}.${quoteIdent(table)} t JOIN ${keysOf(schema, table, key)} k ON ${keyMatch(key, 't', 'k')} WHERE t.tenant_id = $2`,
    values: [keysJson, tenantId],
  }
}

/** One tenant's rows of a table (the count under the fence). */
export const tenantRowCount = (schema: string, table: string, tenantId: string): Statement => ({
  text: `SELECT count(*)::bigint AS n FROM ${quoteIdent(schema)}.${quoteIdent(table)} WHERE tenant_id = $1`,
  values: [tenantId],
})
