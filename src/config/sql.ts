import type { Statement } from '../core/sql.ts'

/**
 * Configuration's catalog tables, under the catalog schema's advisory lock (see observe/sql.ts for
 * why the same lock): feature flags, and the versions of every configuration change (a tenant's
 * layer, a plan's, a flag, a tenant's plan) with who, when, before and after.
 */
export const CONFIG_SCHEMA_SQL = `
SELECT pg_advisory_xact_lock(7406710002);
CREATE TABLE IF NOT EXISTS tenantry.flags (
  key text PRIMARY KEY,
  definition jsonb NOT NULL,
  updated_by text NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS tenantry.config_versions (
  id bigserial PRIMARY KEY,
  scope text NOT NULL CHECK (scope IN ('tenant', 'plan', 'flag', 'assignment')),
  subject text NOT NULL,
  label text NOT NULL,
  path text,
  before jsonb,
  after jsonb,
  changed_by text NOT NULL,
  changed_at timestamptz NOT NULL DEFAULT now(),
  note text
);
CREATE TABLE IF NOT EXISTS tenantry.config_schema (
  id boolean PRIMARY KEY DEFAULT true CHECK (id),
  schema jsonb,
  defaults jsonb NOT NULL DEFAULT '{}',
  plugins jsonb,
  updated_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE tenantry.config_schema ADD COLUMN IF NOT EXISTS plugin_migrations jsonb;
CREATE INDEX IF NOT EXISTS config_versions_subject_idx ON tenantry.config_versions (subject, id);
REVOKE ALL ON tenantry.flags, tenantry.config_versions, tenantry.config_schema FROM PUBLIC;
`

export const lockTenant = (id: string): Statement => ({
  text: 'SELECT slug, plan, config, status FROM tenantry.tenants WHERE id = $1 FOR UPDATE',
  values: [id],
})

export const setTenantConfig = (id: string, config: unknown): Statement => ({
  text: 'UPDATE tenantry.tenants SET config = $2::jsonb, updated_at = now() WHERE id = $1',
  values: [id, JSON.stringify(config)],
})

export const setTenantPlan = (id: string, plan: string): Statement => ({
  text: 'UPDATE tenantry.tenants SET plan = $2, updated_at = now() WHERE id = $1',
  values: [id, plan],
})

/**
 * A plan's settings. A tenant's write reads its plan `FOR SHARE` and a plan's write `FOR UPDATE`:
 * the plan's write then checks every tenant on it after their writes committed, and no tenant
 * write is checked against a plan layer that is being replaced.
 */
export const planSettings = (name: string, lock: 'share' | 'update' | null): Statement => ({
  text: `SELECT settings FROM tenantry.plans WHERE name = $1${lock === 'share' ? ' FOR SHARE' : lock === 'update' ? ' FOR UPDATE' : ''}`,
  values: [name],
})

export const setPlanSettings = (name: string, settings: unknown): Statement => ({
  text: 'UPDATE tenantry.plans SET settings = $2::jsonb WHERE name = $1',
  values: [name, JSON.stringify(settings)],
})

export const insertPlan = (name: string, settings: unknown): Statement => ({
  text: 'INSERT INTO tenantry.plans (name, settings) VALUES ($1, $2::jsonb) ON CONFLICT (name) DO NOTHING',
  values: [name, JSON.stringify(settings)],
})

export const tenantsOnPlan = (name: string): Statement => ({
  text: "SELECT id, slug, config FROM tenantry.tenants WHERE plan = $1 AND status <> 'deleted' ORDER BY slug",
  values: [name],
})

// jsonb as text: a version's before/after may be a bare JSON string (a plan name), which drivers hand back parsed.
const VERSION_COLUMNS = 'id, scope, subject, label, path, before::text AS before, after::text AS after, changed_by, changed_at, note'

export const insertVersion = (v: {
  scope: string; subject: string; label: string; path: string | null; before: unknown; after: unknown; by: string; note: string | null
}): Statement => ({
  text: `INSERT INTO tenantry.config_versions (scope, subject, label, path, before, after, changed_by, note)
         VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb, $7, $8)
         RETURNING ${VERSION_COLUMNS}`,
  values: [v.scope, v.subject, v.label, v.path, json(v.before), json(v.after), v.by, v.note],
})

const json = (v: unknown): string | null => (v === undefined ? null : JSON.stringify(v))



/** Versions of one subject (a tenant id, `plan:<name>`, `flag:<key>`), newest first. */
export const versionsOf = (subject: string, limit: number): Statement => ({
  text: `SELECT ${VERSION_COLUMNS} FROM tenantry.config_versions WHERE subject = $1 ORDER BY id DESC LIMIT $2`,
  values: [subject, limit],
})

/** Versions of one subject from `id` on, oldest first (what a rollback undoes). */
export const versionsFrom = (subject: string, id: number): Statement => ({
  text: `SELECT ${VERSION_COLUMNS} FROM tenantry.config_versions WHERE subject = $1 AND id >= $2 ORDER BY id`,
  values: [subject, id],
})

export const versionById = (id: number): Statement => ({
  text: `SELECT ${VERSION_COLUMNS} FROM tenantry.config_versions WHERE id = $1`,
  values: [id],
})

export const allFlags = (): Statement => ({ text: 'SELECT key, definition FROM tenantry.flags ORDER BY key', values: [] })
export const lockFlag = (key: string): Statement => ({ text: 'SELECT definition FROM tenantry.flags WHERE key = $1 FOR UPDATE', values: [key] })
export const upsertFlag = (key: string, definition: unknown, by: string): Statement => ({
  text: `INSERT INTO tenantry.flags (key, definition, updated_by) VALUES ($1, $2::jsonb, $3)
         ON CONFLICT (key) DO UPDATE SET definition = EXCLUDED.definition, updated_by = EXCLUDED.updated_by, updated_at = now()`,
  values: [key, JSON.stringify(definition), by],
})
export const deleteFlag = (key: string): Statement => ({ text: 'DELETE FROM tenantry.flags WHERE key = $1', values: [key] })

export const domainRow = (domain: string, lock: boolean): Statement => ({
  text: `SELECT d.domain, d.tenant_id, t.slug, d.verification_token, d.verified_at, d.created_at
         FROM tenantry.domains d JOIN tenantry.tenants t ON t.id = d.tenant_id WHERE d.domain = $1${lock ? ' FOR UPDATE OF d' : ''}`,
  values: [domain],
})
export const insertPendingDomain = (domain: string, tenantId: string, token: string): Statement => ({
  text: 'INSERT INTO tenantry.domains (domain, tenant_id, verification_token, verified_at) VALUES ($1, $2, $3, NULL)',
  values: [domain, tenantId, token],
})
export const markDomainVerified = (domain: string): Statement => ({
  text: 'UPDATE tenantry.domains SET verified_at = now() WHERE domain = $1 AND verified_at IS NULL',
  values: [domain],
})
export const deleteDomain = (domain: string): Statement => ({ text: 'DELETE FROM tenantry.domains WHERE domain = $1', values: [domain] })
export const listDomains = (tenantId: string | null): Statement => ({
  text: `SELECT d.domain, d.tenant_id, t.slug, d.verification_token, d.verified_at, d.created_at
         FROM tenantry.domains d JOIN tenantry.tenants t ON t.id = d.tenant_id
         ${tenantId === null ? '' : 'WHERE d.tenant_id = $1'} ORDER BY t.slug, d.domain`,
  values: tenantId === null ? [] : [tenantId],
})

/** The app's JSON Schema and defaults as its last started process gave them: the CLI and admin API use them too. */
export const storedSchema = (): Statement => ({ text: 'SELECT schema, defaults, plugins, plugin_migrations FROM tenantry.config_schema', values: [] })

/** The plugins' migration sets, for processes without their code (the CLI, the admin API). */
export const storePluginMigrations = (sets: unknown): Statement => ({
  text: 'UPDATE tenantry.config_schema SET plugin_migrations = $1::jsonb, updated_at = now() WHERE plugin_migrations IS DISTINCT FROM $1::jsonb',
  values: [JSON.stringify(sets)],
})
export const storeSchema = (schema: unknown, defaults: unknown, plugins: unknown): Statement => ({
  text: `INSERT INTO tenantry.config_schema (id, schema, defaults, plugins) VALUES (true, $1::jsonb, $2::jsonb, $3::jsonb)
         ON CONFLICT (id) DO UPDATE SET schema = EXCLUDED.schema, defaults = EXCLUDED.defaults, plugins = EXCLUDED.plugins, updated_at = now()
         WHERE (tenantry.config_schema.schema, tenantry.config_schema.defaults, tenantry.config_schema.plugins)
           IS DISTINCT FROM (EXCLUDED.schema, EXCLUDED.defaults, EXCLUDED.plugins)`,
  values: [schema === null ? null : JSON.stringify(schema), JSON.stringify(defaults), JSON.stringify(plugins)],
})
