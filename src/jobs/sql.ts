import { quoteIdent, type Statement } from '../core/sql.ts'

/**
 * Tenantry's own job tables in the catalog database (the queue itself is pg-boss's schema), run
 * under the catalog schema's advisory lock with the REVOKE the other catalog tables get.
 *
 * `job_clocks` is each tenant's virtual time per queue and `job_floors` the virtual time of the
 * last job started: a job is sent with priority `-vt`, so the queue serves tenants round-robin
 * (start-time fair queuing) whatever their backlogs. `job_schedules` are cron schedules per tenant.
 */
export const JOBS_SCHEMA_SQL = `
SELECT pg_advisory_xact_lock(7406710002);
CREATE TABLE IF NOT EXISTS tenantry.job_clocks (
  queue text NOT NULL,
  tenant_id uuid NOT NULL,
  vt bigint NOT NULL,
  PRIMARY KEY (queue, tenant_id)
);
CREATE TABLE IF NOT EXISTS tenantry.job_floors (
  queue text PRIMARY KEY,
  vt bigint NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS tenantry.job_schedules (
  tenant_id uuid NOT NULL,
  queue text NOT NULL,
  name text NOT NULL,
  cron text NOT NULL,
  tz text NOT NULL,
  data jsonb,
  last_fired timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, queue, name)
);
REVOKE ALL ON tenantry.job_clocks, tenantry.job_floors, tenantry.job_schedules FROM PUBLIC;
`

/**
 * Reserve `n` consecutive virtual times for a tenant's jobs: from its clock + 1, but never below
 * the queue's floor (a tenant that was idle does not get credit for the past). Returns the last.
 */
export function reserveVirtualTime(queue: string, tenantId: string, n: number): Statement {
  return {
    text: `WITH f AS (SELECT coalesce((SELECT vt FROM tenantry.job_floors WHERE queue = $1), 0) AS vt)
           INSERT INTO tenantry.job_clocks AS c (queue, tenant_id, vt)
           SELECT $1, $2, f.vt + $3 - 1 FROM f
           ON CONFLICT (queue, tenant_id) DO UPDATE
             SET vt = GREATEST(c.vt, (SELECT vt FROM f) - 1) + $3
           RETURNING vt::text AS vt`,
    values: [queue, tenantId, n],
  }
}

/** The queue has started a job of virtual time `vt`. */
export function advanceFloor(queue: string, vt: number): Statement {
  return {
    text: `INSERT INTO tenantry.job_floors AS f (queue, vt) VALUES ($1, $2)
           ON CONFLICT (queue) DO UPDATE SET vt = GREATEST(f.vt, EXCLUDED.vt)`,
    values: [queue, vt],
  }
}

export function upsertSchedule(s: { tenantId: string; queue: string; name: string; cron: string; tz: string; data: unknown }): Statement {
  return {
    text: `INSERT INTO tenantry.job_schedules (tenant_id, queue, name, cron, tz, data) VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (tenant_id, queue, name) DO UPDATE SET cron = EXCLUDED.cron, tz = EXCLUDED.tz, data = EXCLUDED.data`,
    values: [s.tenantId, s.queue, s.name, s.cron, s.tz, JSON.stringify(s.data ?? null)],
  }
}

export function deleteSchedule(tenantId: string, queue: string, name: string): Statement {
  return { text: 'DELETE FROM tenantry.job_schedules WHERE tenant_id = $1 AND queue = $2 AND name = $3', values: [tenantId, queue, name] }
}

export function listSchedules(tenantId: string | null): Statement {
  return {
    text: `SELECT tenant_id, queue, name, cron, tz, data, last_fired, created_at FROM tenantry.job_schedules
           WHERE $1::uuid IS NULL OR tenant_id = $1 ORDER BY tenant_id, queue, name`,
    values: [tenantId],
  }
}

/** Claim one firing of a schedule: true for exactly one process per `fireAt`. */
export function claimFiring(tenantId: string, queue: string, name: string, fireAt: Date): Statement {
  return {
    text: `UPDATE tenantry.job_schedules SET last_fired = $4
           WHERE tenant_id = $1 AND queue = $2 AND name = $3 AND (last_fired IS NULL OR last_fired < $4)
           RETURNING name`,
    values: [tenantId, queue, name, fireAt.toISOString()],
  }
}

/** A purged tenant leaves no clock and no schedule. */
export function forgetTenant(tenantId: string): Statement {
  return {
    text: `WITH a AS (DELETE FROM tenantry.job_clocks WHERE tenant_id = $1)
           DELETE FROM tenantry.job_schedules WHERE tenant_id = $1`,
    values: [tenantId],
  }
}

/**
 * The index {@link fetchJobs} claims by, on pg-boss's partitioned job table (so every queue's
 * partition has it, present and future): the queued jobs of a queue in claim order. With it a
 * claim reads the head of the queue, whatever the backlog behind it; pg-boss's own (name,
 * start_after) index would sort the whole backlog on every claim. Created once, under a lock, so
 * processes starting together do not race.
 */
export function claimIndexSql(schema: string): string {
  return `SELECT pg_advisory_xact_lock(7406710003);
CREATE INDEX IF NOT EXISTS tenantry_claim ON ${quoteIdent(schema)}.job (name, priority DESC, created_on, id) WHERE state < 'active';`
}

/**
 * Claim up to `n` jobs of a pg-boss 10 queue of the standard policy, as pg-boss's `fetch` does
 * (highest priority, then oldest; locked rows skipped; `retry_count` moved on for a retry), except
 * that jobs whose singleton key (the tenant id) is in `skip` are passed over.
 */
export function fetchJobs(schema: string, queue: string, n: number, skip: readonly string[]): Statement {
  const job = `${quoteIdent(schema)}.job`
  return {
    text: `WITH next AS (
             SELECT id FROM ${job}
             WHERE name = $1 AND state < 'active' AND start_after < now()
               AND NOT (coalesce(singleton_key, '') = ANY($3::text[]))
             ORDER BY priority DESC, created_on, id
             LIMIT $2
             FOR UPDATE SKIP LOCKED
           )
           UPDATE ${job} j SET
             state = 'active',
             started_on = now(),
             retry_count = CASE WHEN started_on IS NOT NULL THEN retry_count + 1 ELSE retry_count END
           FROM next
           WHERE j.name = $1 AND j.id = next.id
           RETURNING j.id, j.data, j.singleton_key`,
    values: [queue, n, [...skip]],
  }
}
