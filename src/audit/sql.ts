import type { Statement } from '../core/sql.ts'

/**
 * The audit log of the catalog database; run after the catalog's own schema, under the catalog
 * schema's advisory lock (its `REVOKE ALL ON ALL TABLES IN SCHEMA tenantry` rewrites these ACLs
 * too; see observe/sql.ts). `audit_head` holds the last entry's number and hash: the chain proves
 * an entry was edited or removed in the middle, the head that the newest ones were not cut off.
 */
export const AUDIT_SCHEMA_SQL = `
SELECT pg_advisory_xact_lock(7406710002);
CREATE TABLE IF NOT EXISTS tenantry.audit_log (
  seq bigint PRIMARY KEY,
  at timestamptz NOT NULL,
  actor text NOT NULL,
  action text NOT NULL,
  tenant_id uuid,
  slug text,
  request_id text,
  before_digest text,
  after_digest text,
  details jsonb NOT NULL DEFAULT '{}',
  prev_hash text NOT NULL,
  hash text NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_log_tenant_idx ON tenantry.audit_log (tenant_id, seq);
CREATE INDEX IF NOT EXISTS audit_log_at_idx ON tenantry.audit_log (at);
CREATE TABLE IF NOT EXISTS tenantry.audit_head (
  id boolean PRIMARY KEY DEFAULT true CHECK (id),
  seq bigint NOT NULL,
  hash text NOT NULL
);
INSERT INTO tenantry.audit_head (id, seq, hash) VALUES (true, 0, 'genesis') ON CONFLICT DO NOTHING;
REVOKE ALL ON tenantry.audit_log, tenantry.audit_head FROM PUBLIC;
`

const COLUMNS = 'seq, at, actor, action, tenant_id, slug, request_id, before_digest, after_digest, details, prev_hash, hash'

/** The head, locked until the appending transaction ends: appends are taken one at a time. */
export const lockHead = (): Statement => ({ text: 'SELECT seq, hash FROM tenantry.audit_head WHERE id FOR UPDATE', values: [] })

export const readHead = (): Statement => ({ text: 'SELECT seq, hash FROM tenantry.audit_head WHERE id', values: [] })

export const insertEntry = (e: {
  seq: number; at: string; actor: string; action: string; tenantId: string | null; slug: string | null; requestId: string | null
  beforeDigest: string | null; afterDigest: string | null; details: Record<string, unknown>; prevHash: string; hash: string
}): Statement => ({
  text: `INSERT INTO tenantry.audit_log (${COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
  values: [e.seq, e.at, e.actor, e.action, e.tenantId, e.slug, e.requestId, e.beforeDigest, e.afterDigest, JSON.stringify(e.details), e.prevHash, e.hash],
})

export const updateHead = (seq: number, hash: string): Statement => ({ text: 'UPDATE tenantry.audit_head SET seq = $1, hash = $2 WHERE id', values: [seq, hash] })

/** Newest first, filtered; `before` is the seq the page starts below (keyset). */
export const listEntries = (f: { tenantId?: string; slug?: string; since?: Date; action?: string; before?: number; limit: number }): Statement => {
  const where: string[] = []
  const values: unknown[] = []
  const bind = (v: unknown) => { values.push(v); return `$${values.length}` }
  if (f.tenantId !== undefined) where.push(`tenant_id = ${bind(f.tenantId)}`)
  if (f.slug !== undefined) where.push(`slug = ${bind(f.slug)}`)
  if (f.since !== undefined) where.push(`at >= ${bind(f.since.toISOString())}`)
  if (f.action !== undefined) where.push(`action = ${bind(f.action)}`)
  if (f.before !== undefined) where.push(`seq < ${bind(f.before)}`)
  return {
    text: `SELECT ${COLUMNS} FROM tenantry.audit_log${where.length ? ` WHERE ${where.join(' AND ')}` : ''} ORDER BY seq DESC LIMIT ${bind(f.limit)}`,
    values,
  }
}

/** Oldest first from `after` (exclusive), for verification in batches. */
export const entriesAfter = (after: number, limit: number): Statement => ({
  text: `SELECT ${COLUMNS} FROM tenantry.audit_log WHERE seq > $1 ORDER BY seq LIMIT $2`,
  values: [after, limit],
})
