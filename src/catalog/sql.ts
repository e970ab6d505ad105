import type { Statement } from '../core/sql.ts'

export const CATALOG_CHANNEL = 'tenantry_catalog'

/** Catalog tables; run after the database bootstrap, under its advisory lock. */
export const CATALOG_SCHEMA_SQL = `
SELECT pg_advisory_xact_lock(7406710002);
CREATE TABLE IF NOT EXISTS tenantry.servers (
  name text PRIMARY KEY,
  url text NOT NULL,
  region text,
  capacity_weight integer NOT NULL DEFAULT 1 CHECK (capacity_weight >= 0),
  main_database text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS tenantry.plans (
  name text PRIMARY KEY,
  settings jsonb NOT NULL DEFAULT '{}',
  created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO tenantry.plans (name) VALUES ('default') ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS tenantry.tenants (
  id uuid PRIMARY KEY,
  slug text NOT NULL UNIQUE,
  name text NOT NULL,
  status text NOT NULL CHECK (status IN ('provisioning', 'active', 'suspended', 'deleted')),
  status_reason text,
  tier text NOT NULL CHECK (tier IN ('pooled', 'schema', 'database')),
  plan text NOT NULL REFERENCES tenantry.plans (name),
  region text,
  server text NOT NULL REFERENCES tenantry.servers (name),
  database text NOT NULL,
  schema text,
  config jsonb NOT NULL DEFAULT '{}',
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  deleted_at timestamptz
);
CREATE TABLE IF NOT EXISTS tenantry.domains (
  domain text PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenantry.tenants (id) ON DELETE CASCADE,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS domains_tenant_idx ON tenantry.domains (tenant_id);
-- Custom domains (issue 12): a domain added by a tenant is pending until its token is seen (DNS
-- TXT or HTTP); only verified domains resolve. Rows of older catalogs count as verified.
ALTER TABLE tenantry.domains ADD COLUMN IF NOT EXISTS verification_token text;
ALTER TABLE tenantry.domains ADD COLUMN IF NOT EXISTS verified_at timestamptz DEFAULT now();
CREATE TABLE IF NOT EXISTS tenantry.operations (
  id uuid PRIMARY KEY,
  kind text NOT NULL,
  tenant_id uuid,
  slug text,
  params jsonb NOT NULL DEFAULT '{}',
  state text NOT NULL CHECK (state IN ('running', 'done', 'failed', 'rolled_back')),
  step text,
  progress jsonb NOT NULL DEFAULT '{}',
  error text,
  started_by text NOT NULL,
  owner text,
  heartbeat_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  finished_at timestamptz
);
CREATE INDEX IF NOT EXISTS operations_state_idx ON tenantry.operations (state, kind);
-- One running operation per tenant: two purges (or a purge and a move) of one tenant started
-- together cannot both run; the second is refused with CONFLICT.
CREATE UNIQUE INDEX IF NOT EXISTS operations_running_tenant_idx ON tenantry.operations (tenant_id) WHERE state = 'running' AND tenant_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS tenantry.operation_targets (
  operation_id uuid NOT NULL REFERENCES tenantry.operations (id) ON DELETE CASCADE,
  target text NOT NULL,
  server text NOT NULL,
  database text NOT NULL,
  schema text NOT NULL,
  role text NOT NULL,
  tier text NOT NULL,
  tenant_id uuid,
  slug text,
  canary boolean NOT NULL DEFAULT false,
  state text NOT NULL CHECK (state IN ('pending', 'running', 'done', 'failed', 'skipped')),
  claimed_by text,
  claimed_at timestamptz,
  applied text[] NOT NULL DEFAULT '{}',
  error text,
  finished_at timestamptz,
  PRIMARY KEY (operation_id, target)
);
CREATE TABLE IF NOT EXISTS tenantry.workers (
  id text PRIMARY KEY,
  heartbeat_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS operation_targets_claim_idx ON tenantry.operation_targets (operation_id, state, canary);
REVOKE ALL ON ALL TABLES IN SCHEMA tenantry FROM PUBLIC;
`

const TENANT_COLUMNS = 'id, slug, name, status, status_reason, tier, plan, region, server, database, schema, config, created_at, updated_at, deleted_at'

export const tenantById = (id: string): Statement => ({ text: `SELECT ${TENANT_COLUMNS} FROM tenantry.tenants WHERE id = $1`, values: [id] })
export const tenantBySlug = (slug: string): Statement => ({ text: `SELECT ${TENANT_COLUMNS} FROM tenantry.tenants WHERE slug = $1`, values: [slug] })
export const tenantByDomain = (domain: string): Statement => ({
  text: `SELECT ${TENANT_COLUMNS.split(', ').map((c) => `t.${c}`).join(', ')} FROM tenantry.tenants t JOIN tenantry.domains d ON d.tenant_id = t.id WHERE d.domain = $1 AND d.verified_at IS NOT NULL`,
  values: [domain],
})

export const listTenants = (filter: { status?: string; tier?: string; server?: string }): Statement => {
  const where: string[] = []
  const values: unknown[] = []
  for (const [col, v] of Object.entries(filter)) {
    if (v === undefined) continue
    values.push(v)
    where.push(`${col} = $${values.length}`)
  }
  return { text: `SELECT ${TENANT_COLUMNS} FROM tenantry.tenants${where.length ? ` WHERE ${where.join(' AND ')}` : ''} ORDER BY slug`, values }
}

/** Filters of a page of tenants (see {@link pageTenants}). */
export interface TenantPageFilter {
  status?: string
  tier?: string
  server?: string
  plan?: string
  /** Slug prefix or part of the name, case-insensitive. */
  search?: string
  /** Slug of the last tenant of the previous page (keyset: the page starts after it). */
  after?: string
  limit: number
}

/**
 * One page of tenants in slug order, by keyset (`slug > $after`) so that every page costs the same
 * on the slug index however deep it is; one row more than `limit` tells whether another page follows.
 */
export const pageTenants = (f: TenantPageFilter): Statement => {
  const where: string[] = []
  const values: unknown[] = []
  const bind = (v: unknown) => { values.push(v); return `$${values.length}` }
  for (const col of ['status', 'tier', 'server', 'plan'] as const) if (f[col] !== undefined) where.push(`${col} = ${bind(f[col])}`)
  if (f.search !== undefined && f.search !== '') {
    const like = f.search.toLowerCase().replace(/[\\%_]/g, (c) => `\\${c}`)
    where.push(`(slug LIKE ${bind(`${like}%`)} OR lower(name) LIKE ${bind(`%${like}%`)})`)
  }
  if (f.after !== undefined) where.push(`slug > ${bind(f.after)}`)
  return {
    text: `SELECT ${TENANT_COLUMNS} FROM tenantry.tenants${where.length ? ` WHERE ${where.join(' AND ')}` : ''} ORDER BY slug LIMIT ${bind(f.limit + 1)}`,
    values,
  }
}

/** Tenants counted by tier, server and status (the fleet's overview). */
export const tenantCounts = (): Statement => ({
  text: 'SELECT tier, server, status, count(*)::int AS n FROM tenantry.tenants GROUP BY tier, server, status ORDER BY server, tier, status',
  values: [],
})

export const insertTenant = (t: {
  id: string; slug: string; name: string; status: string; tier: string; plan: string; region: string | null
  server: string; database: string; schema: string | null; config: Record<string, unknown>
}): Statement => ({
  text: `INSERT INTO tenantry.tenants (id, slug, name, status, tier, plan, region, server, database, schema, config)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING ${TENANT_COLUMNS}`,
  values: [t.id, t.slug, t.name, t.status, t.tier, t.plan, t.region, t.server, t.database, t.schema, JSON.stringify(t.config)],
})

/** With `from`, only a tenant still in one of those statuses changes (no row: another change came first). */
export const updateTenantStatus = (id: string, status: string, reason: string | null, from?: readonly string[]): Statement => ({
  text: `UPDATE tenantry.tenants SET status = $2, status_reason = $3, updated_at = now(),
         deleted_at = CASE WHEN $2 = 'deleted' THEN coalesce(deleted_at, now()) ELSE NULL END
         WHERE id = $1${from ? ' AND status = ANY($4::text[])' : ''} RETURNING ${TENANT_COLUMNS}`,
  values: from ? [id, status, reason, [...from]] : [id, status, reason],
})

export const updateTenantFields = (id: string, fields: { name?: string; plan?: string; config?: Record<string, unknown> }): Statement => ({
  text: `UPDATE tenantry.tenants SET name = coalesce($2, name), plan = coalesce($3, plan),
         config = coalesce($4::jsonb, config), updated_at = now() WHERE id = $1 RETURNING ${TENANT_COLUMNS}`,
  values: [id, fields.name ?? null, fields.plan ?? null, fields.config === undefined ? null : JSON.stringify(fields.config)],
})

export const updateTenantPlacement = (id: string, tier: string, p: { server: string; database: string; schema?: string | null }): Statement => ({
  text: `UPDATE tenantry.tenants SET tier = $2, server = $3, database = $4, schema = $5, updated_at = now() WHERE id = $1 RETURNING ${TENANT_COLUMNS}`,
  values: [id, tier, p.server, p.database, p.schema ?? null],
})

export const deleteTenantRow = (id: string): Statement => ({ text: 'DELETE FROM tenantry.tenants WHERE id = $1', values: [id] })

export const insertDomain = (domain: string, tenantId: string): Statement => ({
  text: 'INSERT INTO tenantry.domains (domain, tenant_id) VALUES ($1, $2)',
  values: [domain, tenantId],
})
export const deleteDomain = (domain: string): Statement => ({ text: 'DELETE FROM tenantry.domains WHERE domain = $1', values: [domain] })
export const domainsOf = (tenantId: string): Statement => ({ text: 'SELECT domain FROM tenantry.domains WHERE tenant_id = $1 AND verified_at IS NOT NULL ORDER BY domain', values: [tenantId] })

export const upsertServer = (s: { name: string; url: string; region: string | null; capacityWeight: number; mainDatabase: string }): Statement => ({
  text: `INSERT INTO tenantry.servers (name, url, region, capacity_weight, main_database) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (name) DO UPDATE SET url = EXCLUDED.url, region = EXCLUDED.region,
           capacity_weight = EXCLUDED.capacity_weight, main_database = EXCLUDED.main_database`,
  values: [s.name, s.url, s.region, s.capacityWeight, s.mainDatabase],
})
/** Insert a server unless its name is taken; returns the new row, or none when the name is held (read it with {@link serverByName}). */
export const insertServer = (s: { name: string; url: string; region: string | null; capacityWeight: number; mainDatabase: string }): Statement => ({
  text: `INSERT INTO tenantry.servers (name, url, region, capacity_weight, main_database) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (name) DO NOTHING RETURNING name, url, region, capacity_weight, main_database`,
  values: [s.name, s.url, s.region, s.capacityWeight, s.mainDatabase],
})
export const serverByName = (name: string): Statement => ({ text: 'SELECT name, url, region, capacity_weight, main_database FROM tenantry.servers WHERE name = $1', values: [name] })
export const listServers = (): Statement => ({ text: 'SELECT name, url, region, capacity_weight, main_database FROM tenantry.servers ORDER BY name', values: [] })

export const upsertPlan = (name: string, settings: Record<string, unknown>): Statement => ({
  text: 'INSERT INTO tenantry.plans (name, settings) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET settings = EXCLUDED.settings',
  values: [name, JSON.stringify(settings)],
})
export const listPlans = (): Statement => ({ text: 'SELECT name, settings FROM tenantry.plans ORDER BY name', values: [] })

export const notifyChange = (payload: string): Statement => ({ text: 'SELECT pg_notify($1, $2)', values: [CATALOG_CHANNEL, payload] })
