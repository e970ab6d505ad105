import type { Statement } from '../core/sql.ts'

/**
 * Admin tokens of the control-plane API, in the catalog database; under the catalog schema's
 * advisory lock with the REVOKE the other catalog tables get (see observe/sql.ts). Only a SHA-256
 * of each token is kept: the token is 32 random bytes, so a fast hash is enough (nothing to guess).
 */
export const ADMIN_SCHEMA_SQL = `
SELECT pg_advisory_xact_lock(7406710002);
CREATE TABLE IF NOT EXISTS tenantry.admin_tokens (
  id uuid PRIMARY KEY,
  name text NOT NULL UNIQUE,
  role text NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
  token_hash text NOT NULL UNIQUE,
  created_by text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  last_used_at timestamptz,
  revoked_at timestamptz
);
REVOKE ALL ON tenantry.admin_tokens FROM PUBLIC;
`

const COLUMNS = 'id, name, role, created_by, created_at, last_used_at, revoked_at'

export const insertToken = (t: { id: string; name: string; role: string; hash: string; createdBy: string }): Statement => ({
  text: `INSERT INTO tenantry.admin_tokens (id, name, role, token_hash, created_by) VALUES ($1, $2, $3, $4, $5) RETURNING ${COLUMNS}`,
  values: [t.id, t.name, t.role, t.hash, t.createdBy],
})

export const tokenByHash = (hash: string): Statement => ({
  text: `SELECT ${COLUMNS} FROM tenantry.admin_tokens WHERE token_hash = $1 AND revoked_at IS NULL`,
  values: [hash],
})

export const listTokens = (): Statement => ({ text: `SELECT ${COLUMNS} FROM tenantry.admin_tokens ORDER BY created_at, name`, values: [] })

export const revokeToken = (nameOrId: string, isId: boolean): Statement => ({
  text: `UPDATE tenantry.admin_tokens SET revoked_at = now() WHERE ${isId ? 'id = $1::uuid' : 'name = $1'} AND revoked_at IS NULL RETURNING ${COLUMNS}`,
  values: [nameOrId],
})

/** At most once a minute per token, so that reads do not turn into a write each. */
export const touchToken = (id: string): Statement => ({
  text: `UPDATE tenantry.admin_tokens SET last_used_at = now() WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')`,
  values: [id],
})
