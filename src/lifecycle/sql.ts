import type { Statement } from '../core/sql.ts'

const OP_COLUMNS = 'id, kind, tenant_id, slug, params, state, step, progress, error, started_by, owner, heartbeat_at, created_at, updated_at, finished_at'
const TARGET_COLUMNS = 'operation_id, target, server, database, schema, role, tier, tenant_id, slug, canary, state, claimed_by, applied, error'

export const insertOperation = (op: { id: string; kind: string; tenantId: string | null; slug: string | null; params: unknown; step: string; startedBy: string; owner: string }): Statement => ({
  text: `INSERT INTO tenantry.operations (id, kind, tenant_id, slug, params, state, step, started_by, owner, heartbeat_at)
         VALUES ($1, $2, $3, $4, $5, 'running', $6, $7, $8, now()) RETURNING ${OP_COLUMNS}`,
  values: [op.id, op.kind, op.tenantId, op.slug, JSON.stringify(op.params), op.step, op.startedBy, op.owner],
})

export const updateOperationStep = (id: string, owner: string, step: string, progress: unknown): Statement => ({
  text: `UPDATE tenantry.operations SET step = $3, progress = coalesce($4::jsonb, progress), updated_at = now(), heartbeat_at = now()
         WHERE id = $1 AND owner = $2 AND state = 'running'`,
  values: [id, owner, step, progress === undefined ? null : JSON.stringify(progress)],
})

export const finishOperation = (id: string, state: string, error: string | null, progress: unknown, step?: string): Statement => ({
  text: `UPDATE tenantry.operations SET state = $2, error = $3, progress = coalesce($4::jsonb, progress), step = coalesce($5, step),
         owner = NULL, updated_at = now(), finished_at = now() WHERE id = $1 AND state = 'running' RETURNING ${OP_COLUMNS}`,
  values: [id, state, error, progress === undefined ? null : JSON.stringify(progress), step ?? null],
})

export const getOperation = (id: string): Statement => ({ text: `SELECT ${OP_COLUMNS} FROM tenantry.operations WHERE id = $1`, values: [id] })

export const listOperations = (filter: { state?: string; kind?: string; limit: number }): Statement => ({
  text: `SELECT ${OP_COLUMNS} FROM tenantry.operations
         WHERE ($1::text IS NULL OR state = $1) AND ($2::text IS NULL OR kind = $2)
         ORDER BY created_at DESC LIMIT $3`,
  values: [filter.state ?? null, filter.kind ?? null, filter.limit],
})

export const runningOperations = (kind: string | null): Statement => ({
  text: `SELECT ${OP_COLUMNS} FROM tenantry.operations WHERE state = 'running' AND ($1::text IS NULL OR kind = $1) ORDER BY created_at`,
  values: [kind],
})

export const takeOverOperation = (id: string, previousOwner: string | null, owner: string): Statement => ({
  text: `UPDATE tenantry.operations SET owner = $3, heartbeat_at = now(), updated_at = now()
         WHERE id = $1 AND state = 'running' AND owner IS NOT DISTINCT FROM $2 RETURNING ${OP_COLUMNS}`,
  values: [id, previousOwner, owner],
})

export const heartbeatWorker = (worker: string): Statement => ({
  text: `INSERT INTO tenantry.workers (id, heartbeat_at) VALUES ($1, now()) ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()`,
  values: [worker],
})
export const dropWorker = (worker: string): Statement => ({ text: 'DELETE FROM tenantry.workers WHERE id = $1', values: [worker] })
export const workerHeartbeats = (workers: string[]): Statement => ({
  text: `SELECT id, extract(epoch FROM now() - heartbeat_at) * 1000 AS age_ms FROM tenantry.workers WHERE id = ANY($1::text[])`,
  values: [workers],
})

export const insertTarget = (opId: string, t: { target: string; server: string; database: string; schema: string; role: string; tier: string; tenantId: string | null; slug: string | null; canary: boolean }): Statement => ({
  text: `INSERT INTO tenantry.operation_targets (operation_id, target, server, database, schema, role, tier, tenant_id, slug, canary, state)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'pending') ON CONFLICT DO NOTHING`,
  values: [opId, t.target, t.server, t.database, t.schema, t.role, t.tier, t.tenantId, t.slug, t.canary],
})

/**
 * Claim the next target of a fleet operation. Canary targets first; the others only once every
 * canary is done. `FOR UPDATE SKIP LOCKED` lets any number of workers claim side by side without
 * two ever holding one target.
 */
export const claimTarget = (opId: string, worker: string): Statement => ({
  text: `UPDATE tenantry.operation_targets t SET state = 'running', claimed_by = $2, claimed_at = now()
         WHERE (t.operation_id, t.target) = (
           SELECT operation_id, target FROM tenantry.operation_targets c
           WHERE c.operation_id = $1 AND c.state = 'pending'
             AND (c.canary OR NOT EXISTS (
               SELECT 1 FROM tenantry.operation_targets k
               WHERE k.operation_id = $1 AND k.canary AND k.state <> 'done'))
           ORDER BY c.canary DESC, c.target
           LIMIT 1 FOR UPDATE SKIP LOCKED)
         RETURNING ${TARGET_COLUMNS}`,
  values: [opId, worker],
})

export const finishTarget = (opId: string, target: string, worker: string, state: string, applied: string[], error: string | null): Statement => ({
  text: `UPDATE tenantry.operation_targets SET state = $4, applied = $5, error = $6, finished_at = now()
         WHERE operation_id = $1 AND target = $2 AND claimed_by = $3 AND state = 'running'`,
  values: [opId, target, worker, state, applied, error],
})

export const releaseTargetsOf = (opId: string, workers: string[]): Statement => ({
  text: `UPDATE tenantry.operation_targets SET state = 'pending', claimed_by = NULL, claimed_at = NULL
         WHERE operation_id = $1 AND state = 'running' AND claimed_by = ANY($2::text[])`,
  values: [opId, workers],
})

export const runningClaimers = (opId: string): Statement => ({
  text: `SELECT DISTINCT claimed_by FROM tenantry.operation_targets WHERE operation_id = $1 AND state = 'running'`,
  values: [opId],
})

export const targetCounts = (opId: string): Statement => ({
  text: `SELECT state, canary, count(*)::int AS n FROM tenantry.operation_targets WHERE operation_id = $1 GROUP BY state, canary`,
  values: [opId],
})

export const listTargets = (opId: string): Statement => ({
  text: `SELECT ${TARGET_COLUMNS} FROM tenantry.operation_targets WHERE operation_id = $1 ORDER BY canary DESC, target`,
  values: [opId],
})
