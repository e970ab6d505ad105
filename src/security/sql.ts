import type { Statement } from '../core/sql.ts'

/**
 * Tenant API keys and client certificates in the catalog database; run after the catalog's own
 * schema, under the catalog schema's advisory lock, with the REVOKE the other catalog tables get
 * (see observe/sql.ts). Only hashes of keys are stored; certificates by their SHA-256 fingerprint.
 */
export const SECURITY_SCHEMA_SQL = `
SELECT pg_advisory_xact_lock(7406710002);
CREATE TABLE IF NOT EXISTS tenantry.api_keys (
  id text PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenantry.tenants (id) ON DELETE CASCADE,
  name text NOT NULL,
  scopes text[] NOT NULL DEFAULT '{}',
  key_hash text NOT NULL,
  expires_at timestamptz,
  created_by text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  last_used_at timestamptz,
  revoked_at timestamptz
);
CREATE UNIQUE INDEX IF NOT EXISTS api_keys_active_name_idx ON tenantry.api_keys (tenant_id, name) WHERE revoked_at IS NULL;
CREATE TABLE IF NOT EXISTS tenantry.client_certs (
  fingerprint text PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenantry.tenants (id) ON DELETE CASCADE,
  name text NOT NULL,
  subject text NOT NULL,
  not_after timestamptz NOT NULL,
  created_by text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  revoked_at timestamptz
);
CREATE INDEX IF NOT EXISTS client_certs_tenant_idx ON tenantry.client_certs (tenant_id);
CREATE TABLE IF NOT EXISTS tenantry.client_cas (
  id text PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenantry.tenants (id) ON DELETE CASCADE,
  fingerprint text NOT NULL,
  name text NOT NULL,
  subject text NOT NULL,
  issuer_key text NOT NULL,
  pem text NOT NULL,
  san_pattern text,
  subject_pattern text,
  not_after timestamptz NOT NULL,
  created_by text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  revoked_at timestamptz
);
CREATE INDEX IF NOT EXISTS client_cas_issuer_idx ON tenantry.client_cas (issuer_key);
CREATE INDEX IF NOT EXISTS client_cas_tenant_idx ON tenantry.client_cas (tenant_id);
CREATE UNIQUE INDEX IF NOT EXISTS client_cas_active_name_idx ON tenantry.client_cas (tenant_id, name) WHERE revoked_at IS NULL;
REVOKE ALL ON tenantry.api_keys, tenantry.client_certs, tenantry.client_cas FROM PUBLIC;
`

const KEY_COLUMNS = 'id, tenant_id, name, scopes, key_hash, expires_at, created_by, created_at, last_used_at, revoked_at'
const CERT_COLUMNS = 'fingerprint, tenant_id, name, subject, not_after, created_by, created_at, revoked_at'
const CA_COLUMNS = 'id, tenant_id, fingerprint, name, subject, issuer_key, pem, san_pattern, subject_pattern, not_after, created_by, created_at, revoked_at'

/** A credential table: its columns and the column that names one row. */
type Credentials = { table: string; columns: string; key: string }
const KEYS: Credentials = { table: 'tenantry.api_keys', columns: KEY_COLUMNS, key: 'id' }
const CERTS: Credentials = { table: 'tenantry.client_certs', columns: CERT_COLUMNS, key: 'fingerprint' }
const CAS: Credentials = { table: 'tenantry.client_cas', columns: CA_COLUMNS, key: 'id' }

/** A tenant's rows of a credential table, oldest first. */
const ofTenant = (c: Credentials) => (tenantId: string): Statement => ({
  text: `SELECT ${c.columns} FROM ${c.table} WHERE tenant_id = $1 ORDER BY created_at, ${c.key}`,
  values: [tenantId],
})

/** Revoke an active row of a tenant in a credential table. */
const revokeOf = (c: Credentials) => (tenantId: string, key: string): Statement => ({
  text: `UPDATE ${c.table} SET revoked_at = now() WHERE tenant_id = $1 AND ${c.key} = $2 AND revoked_at IS NULL RETURNING ${c.columns}`,
  values: [tenantId, key],
})

export const apiKeysOf = ofTenant(KEYS)
export const revokeApiKey = revokeOf(KEYS)
export const certificatesOf = ofTenant(CERTS)
export const revokeCertificate = revokeOf(CERTS)
export const casOf = ofTenant(CAS)
export const revokeCa = revokeOf(CAS)

export const insertApiKey = (k: { id: string; tenantId: string; name: string; scopes: string[]; hash: string; expiresAt: Date | null; createdBy: string }): Statement => ({
  text: `INSERT INTO tenantry.api_keys (id, tenant_id, name, scopes, key_hash, expires_at, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING ${KEY_COLUMNS}`,
  values: [k.id, k.tenantId, k.name, k.scopes, k.hash, k.expiresAt?.toISOString() ?? null, k.createdBy],
})

export const apiKeyById = (id: string): Statement => ({ text: `SELECT ${KEY_COLUMNS} FROM tenantry.api_keys WHERE id = $1`, values: [id] })

/** Last use, written lazily: a batch of key ids at once. */
export const touchApiKeys = (ids: string[]): Statement => ({
  text: 'UPDATE tenantry.api_keys SET last_used_at = now() WHERE id = ANY($1::text[])',
  values: [ids],
})

/** Add a certificate; one revoked earlier may be bound again (to the same or another tenant). */
export const upsertCertificate = (c: { fingerprint: string; tenantId: string; name: string; subject: string; notAfter: Date; createdBy: string }): Statement => ({
  text: `INSERT INTO tenantry.client_certs (fingerprint, tenant_id, name, subject, not_after, created_by) VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (fingerprint) DO UPDATE SET tenant_id = EXCLUDED.tenant_id, name = EXCLUDED.name, subject = EXCLUDED.subject, not_after = EXCLUDED.not_after,
  created_by = EXCLUDED.created_by, created_at = now(), revoked_at = NULL
WHERE tenantry.client_certs.revoked_at IS NOT NULL
RETURNING ${CERT_COLUMNS}`,
  values: [c.fingerprint, c.tenantId, c.name, c.subject, c.notAfter.toISOString(), c.createdBy],
})

export const certificateByFingerprint = (fp: string): Statement => ({ text: `SELECT ${CERT_COLUMNS} FROM tenantry.client_certs WHERE fingerprint = $1`, values: [fp] })


/** Bind a CA (with an optional SAN or subject pattern) to a tenant. */
export const insertCa = (c: {
  id: string; tenantId: string; fingerprint: string; name: string; subject: string; issuerKey: string; pem: string
  sanPattern: string | null; subjectPattern: string | null; notAfter: Date; createdBy: string
}): Statement => ({
  text: `INSERT INTO tenantry.client_cas (id, tenant_id, fingerprint, name, subject, issuer_key, pem, san_pattern, subject_pattern, not_after, created_by)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING ${CA_COLUMNS}`,
  values: [c.id, c.tenantId, c.fingerprint, c.name, c.subject, c.issuerKey, c.pem, c.sanPattern, c.subjectPattern, c.notAfter.toISOString(), c.createdBy],
})

/** Active bindings of a CA (by fingerprint) to tenants, locked: a new binding is checked against them. */
export const activeCaBindings = (fingerprint: string): Statement => ({
  text: `SELECT ${CA_COLUMNS} FROM tenantry.client_cas WHERE fingerprint = $1 AND revoked_at IS NULL FOR UPDATE`,
  values: [fingerprint],
})

/** Every binding (revoked too) of the CAs whose subject is a client certificate's issuer. */
export const casByIssuer = (issuerKey: string): Statement => ({
  text: `SELECT ${CA_COLUMNS} FROM tenantry.client_cas WHERE issuer_key = $1 ORDER BY created_at, id`,
  values: [issuerKey],
})

