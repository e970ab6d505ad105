import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import pg from 'pg'
import { isTenantryError } from '../src/core/index.ts'
import type { Queryable } from '../src/data/executor.ts'
import { checkDatabase, formatFindings, inspectDatabase, type Finding } from '../src/doctor/index.ts'
import { dropDatabase, freshDatabase, freshPGlite, PG_ADMIN_URL, postgresAvailable } from './helpers/backends.ts'

const DB_NAME = 'tenantry_test_doctor'
// Roles are cluster-wide on a real server: every name carries this file's prefix.
const APP = 'doctor_t_app'
const SUPER = 'doctor_t_super'
const BYPASS = 'doctor_t_bypass'
const OWNER_APP = 'doctor_t_owner_app'
const OWNER = 'doctor_t_owner'
const MEMBER = 'doctor_t_member'
const MISSING = 'doctor_t_nobody'
const ROLES = [MEMBER, OWNER, OWNER_APP, BYPASS, SUPER, APP]

const CURRENT_TENANT = `(select nullif(current_setting('tenantry.tenant_id', true), '')::uuid)`

interface Backend {
  q: Queryable
  exec(sql: string): Promise<void>
  database: string
  close(): Promise<void>
}

/** A compact, exact description of each finding: code, table and the constraint/policy/role it names. */
function brief(findings: Finding[]): string[] {
  return findings.map((f) =>
    [f.code, f.table === undefined ? '' : `${f.schema}.${f.table}`, f.constraint ?? f.policy ?? '', f.role ?? '']
      .filter((s) => s !== '')
      .join(' '),
  )
}

function tenantTable(schema: string, table: string, columns: string): string {
  return `
    CREATE TABLE ${schema}.${table} (${columns});
    ALTER TABLE ${schema}.${table} ENABLE ROW LEVEL SECURITY;
    ALTER TABLE ${schema}.${table} FORCE ROW LEVEL SECURITY;
    CREATE POLICY tenant_isolation ON ${schema}.${table} USING (tenant_id = ${CURRENT_TENANT});`
}

function doctorSuite(open: () => Promise<Backend>): void {
  let b: Backend
  const check = (schemas: string[], roles: string[] = [APP], ignoreTables?: string[]) =>
    checkDatabase(b.q, { schemas, roles, target: 'main', ...(ignoreTables ? { ignoreTables } : {}) })

  beforeAll(async () => {
    b = await open()
    await b.exec(`
      CREATE ROLE ${APP} NOLOGIN;
      CREATE ROLE ${SUPER} NOLOGIN SUPERUSER;
      CREATE ROLE ${BYPASS} NOLOGIN BYPASSRLS;
      CREATE ROLE ${OWNER_APP} NOLOGIN;
      CREATE ROLE ${OWNER} NOLOGIN;
      CREATE ROLE ${MEMBER} NOLOGIN IN ROLE ${OWNER};

      CREATE SCHEMA tenantry;
      CREATE TABLE tenantry.tenants (id uuid PRIMARY KEY, slug text UNIQUE);
      CREATE TABLE tenantry.migrations (name text PRIMARY KEY);

      CREATE SCHEMA clean;
      ${tenantTable('clean', 'projects', `
        tenant_id uuid NOT NULL, id bigint NOT NULL, name text NOT NULL,
        PRIMARY KEY (tenant_id, id), UNIQUE (tenant_id, name)`)}
      ${tenantTable('clean', 'tasks', `
        tenant_id uuid NOT NULL REFERENCES tenantry.tenants (id), id bigint NOT NULL, project_id bigint NOT NULL,
        PRIMARY KEY (tenant_id, id),
        FOREIGN KEY (tenant_id, project_id) REFERENCES clean.projects (tenant_id, id)`)}
      CREATE UNIQUE INDEX tasks_tenant_project_idx ON clean.tasks (tenant_id, project_id, id);
      CREATE VIEW clean.all_tasks AS SELECT * FROM clean.tasks;
    `)
  })

  afterAll(async () => {
    await b?.close()
  })

  it('finds nothing in a sound schema, and says so', async () => {
    expect(await check(['clean'])).toEqual([])
    const result = await inspectDatabase(b.q, { schemas: ['clean'], roles: [APP] })
    expect(result).toEqual({ target: b.database, tables: 2, findings: [] })
    expect(formatFindings(result.findings, { tables: result.tables })).toBe('OK: no findings in 2 tables')
  })

  it('never checks the tenantry schema, even when it is listed', async () => {
    expect(await check(['clean', 'tenantry'])).toEqual([])
  })

  it('skips tables listed in ignoreTables, bare or schema-qualified', async () => {
    await b.exec(`
      CREATE SCHEMA d_ignore;
      CREATE TABLE d_ignore.countries (code text PRIMARY KEY);
      CREATE TABLE d_ignore.currencies (code text PRIMARY KEY);`)
    expect(brief(await check(['d_ignore']))).toEqual([
      'MISSING_TENANT_ID d_ignore.countries', 'RLS_DISABLED d_ignore.countries', 'NO_POLICY d_ignore.countries',
      'KEY_NOT_TENANT_LED d_ignore.countries countries_pkey',
      'MISSING_TENANT_ID d_ignore.currencies', 'RLS_DISABLED d_ignore.currencies', 'NO_POLICY d_ignore.currencies',
      'KEY_NOT_TENANT_LED d_ignore.currencies currencies_pkey',
    ])
    expect(await check(['d_ignore'], [APP], ['countries', 'd_ignore.currencies'])).toEqual([])
  })

  it('throws CONFIG_INVALID for a schema that does not exist', async () => {
    const err = await check(['clean', 'no_such_schema']).catch((e: unknown) => e)
    expect(isTenantryError(err, 'CONFIG_INVALID')).toBe(true)
    expect((err as Error).message).toContain("'no_such_schema'")
  })

  it('MISSING_TENANT_ID: a table without tenant_id (and the key and policy that cannot use it)', async () => {
    await b.exec(`
      CREATE SCHEMA d_no_tenant;
      CREATE TABLE d_no_tenant.notes (org_id uuid NOT NULL, id bigint NOT NULL, PRIMARY KEY (org_id, id));
      ALTER TABLE d_no_tenant.notes ENABLE ROW LEVEL SECURITY;
      ALTER TABLE d_no_tenant.notes FORCE ROW LEVEL SECURITY;
      CREATE POLICY by_org ON d_no_tenant.notes USING (org_id = ${CURRENT_TENANT});`)
    const findings = await check(['d_no_tenant'])
    expect(brief(findings)).toEqual([
      'MISSING_TENANT_ID d_no_tenant.notes',
      'POLICY_NOT_TENANT_SCOPED d_no_tenant.notes by_org',
      'KEY_NOT_TENANT_LED d_no_tenant.notes notes_pkey',
    ])
    expect(findings[0]!.message).toBe(
      'd_no_tenant.notes: has no tenant_id column, so its rows belong to no tenant; add one (ALTER TABLE d_no_tenant.notes ADD COLUMN tenant_id uuid NOT NULL) or, if it is not a tenant table, list it in ignoreTables',
    )
  })

  it('RLS_DISABLED: a table with row-level security off', async () => {
    await b.exec(`
      CREATE SCHEMA d_rls_off;
      CREATE TABLE d_rls_off.notes (tenant_id uuid NOT NULL, id bigint NOT NULL, PRIMARY KEY (tenant_id, id));
      CREATE POLICY tenant_isolation ON d_rls_off.notes USING (tenant_id = ${CURRENT_TENANT});`)
    const findings = await check(['d_rls_off'])
    expect(brief(findings)).toEqual(['RLS_DISABLED d_rls_off.notes'])
    expect(findings[0]).toMatchObject({ target: 'main', schema: 'd_rls_off', table: 'notes' })
    expect(findings[0]!.message).toBe(
      "d_rls_off.notes: row-level security is disabled, so every tenant's rows are visible; run ALTER TABLE d_rls_off.notes ENABLE ROW LEVEL SECURITY; ALTER TABLE d_rls_off.notes FORCE ROW LEVEL SECURITY",
    )
  })

  it('RLS_NOT_FORCED: row-level security enabled but not forced', async () => {
    await b.exec(`
      CREATE SCHEMA d_not_forced;
      CREATE TABLE d_not_forced.notes (tenant_id uuid NOT NULL, id bigint NOT NULL, PRIMARY KEY (tenant_id, id));
      ALTER TABLE d_not_forced.notes ENABLE ROW LEVEL SECURITY;
      CREATE POLICY tenant_isolation ON d_not_forced.notes USING (tenant_id = ${CURRENT_TENANT});`)
    const findings = await check(['d_not_forced'])
    expect(findings).toEqual([{
      code: 'RLS_NOT_FORCED', target: 'main', schema: 'd_not_forced', table: 'notes',
      message: 'd_not_forced.notes: row-level security is enabled but not forced; run ALTER TABLE d_not_forced.notes FORCE ROW LEVEL SECURITY',
    }])
  })

  it('NO_POLICY: forced row-level security without a policy', async () => {
    await b.exec(`
      CREATE SCHEMA d_no_policy;
      CREATE TABLE d_no_policy.notes (tenant_id uuid NOT NULL, id bigint NOT NULL, PRIMARY KEY (tenant_id, id));
      ALTER TABLE d_no_policy.notes ENABLE ROW LEVEL SECURITY;
      ALTER TABLE d_no_policy.notes FORCE ROW LEVEL SECURITY;`)
    expect(brief(await check(['d_no_policy']))).toEqual(['NO_POLICY d_no_policy.notes'])
  })

  it('POLICY_NOT_TENANT_SCOPED: a permissive policy whose USING or WITH CHECK ignores tenant_id', async () => {
    await b.exec(`
      CREATE SCHEMA d_open_policy;
      CREATE FUNCTION d_open_policy.tenant_id() RETURNS uuid LANGUAGE sql STABLE AS $$ SELECT ${CURRENT_TENANT} $$;
      ${tenantTable('d_open_policy', 'notes', 'tenant_id uuid NOT NULL, id bigint NOT NULL, owner uuid, PRIMARY KEY (tenant_id, id)')}
      CREATE POLICY see_all ON d_open_policy.notes USING (true);
      CREATE POLICY write_all ON d_open_policy.notes FOR INSERT WITH CHECK (true);
      CREATE POLICY loose_check ON d_open_policy.notes FOR UPDATE USING (tenant_id = ${CURRENT_TENANT}) WITH CHECK (owner IS NOT NULL);
      CREATE POLICY by_function_only ON d_open_policy.notes FOR DELETE USING (owner = d_open_policy.tenant_id());
      CREATE POLICY narrowing ON d_open_policy.notes AS RESTRICTIVE USING (true);
      CREATE POLICY scoped_by_function ON d_open_policy.notes FOR SELECT USING (tenant_id = d_open_policy.tenant_id());`)
    const findings = await check(['d_open_policy'])
    expect(brief(findings)).toEqual([
      'POLICY_NOT_TENANT_SCOPED d_open_policy.notes by_function_only',
      'POLICY_NOT_TENANT_SCOPED d_open_policy.notes loose_check',
      'POLICY_NOT_TENANT_SCOPED d_open_policy.notes see_all',
      'POLICY_NOT_TENANT_SCOPED d_open_policy.notes write_all',
    ])
    expect(findings.find((f) => f.policy === 'see_all')!.message).toBe(
      "d_open_policy.notes: policy see_all has USING (true), which does not mention tenant_id, so it lets rows of every tenant through; drop it (DROP POLICY see_all ON d_open_policy.notes) or restrict it to tenant_id = (SELECT tenantry.tenant_id())",
    )
    expect(findings.find((f) => f.policy === 'loose_check')!.message).toContain('has WITH CHECK ((owner IS NOT NULL)),')
  })

  it('NO_PRIMARY_KEY: a table without a primary key', async () => {
    await b.exec(`
      CREATE SCHEMA d_no_pk;
      ${tenantTable('d_no_pk', 'events', 'tenant_id uuid NOT NULL, at timestamptz NOT NULL')}`)
    expect(brief(await check(['d_no_pk']))).toEqual(['NO_PRIMARY_KEY d_no_pk.events'])
  })

  it('KEY_NOT_TENANT_LED: a primary key, unique constraint or unique index that spans tenants', async () => {
    await b.exec(`
      CREATE SCHEMA d_keys;
      ${tenantTable('d_keys', 'users', `
        tenant_id uuid NOT NULL, id bigint NOT NULL, email text NOT NULL, handle text NOT NULL,
        CONSTRAINT users_pk PRIMARY KEY (id, tenant_id),
        CONSTRAINT users_email_key UNIQUE (email),
        CONSTRAINT users_handle_key UNIQUE (tenant_id, handle)`)}
      CREATE UNIQUE INDEX users_lower_email_idx ON d_keys.users (lower(email));
      CREATE UNIQUE INDEX users_tenant_lower_handle_idx ON d_keys.users (tenant_id, lower(handle));`)
    const findings = await check(['d_keys'])
    expect(brief(findings)).toEqual([
      'KEY_NOT_TENANT_LED d_keys.users users_email_key',
      'KEY_NOT_TENANT_LED d_keys.users users_lower_email_idx',
      'KEY_NOT_TENANT_LED d_keys.users users_pk',
    ])
    expect(findings.find((f) => f.constraint === 'users_pk')!.message).toBe(
      'd_keys.users: primary key users_pk (PRIMARY KEY (id, tenant_id)) does not lead with tenant_id, so it spans tenants; run ALTER TABLE d_keys.users DROP CONSTRAINT users_pk, ADD PRIMARY KEY (tenant_id, id)',
    )
  })

  it('FOREIGN_KEY_NOT_TENANT_LED: a foreign key whose own or referenced columns do not lead with tenant_id', async () => {
    await b.exec(`
      CREATE SCHEMA d_fk;
      ${tenantTable('d_fk', 'projects', `
        tenant_id uuid NOT NULL, id uuid NOT NULL,
        PRIMARY KEY (tenant_id, id),
        CONSTRAINT projects_id_key UNIQUE (id),
        CONSTRAINT projects_id_tenant_key UNIQUE (id, tenant_id)`)}
      ${tenantTable('d_fk', 'tasks', `
        tenant_id uuid NOT NULL REFERENCES tenantry.tenants (id), id uuid NOT NULL, project_id uuid NOT NULL,
        PRIMARY KEY (tenant_id, id),
        CONSTRAINT tasks_fk_plain FOREIGN KEY (project_id) REFERENCES d_fk.projects (id),
        CONSTRAINT tasks_fk_ref_not_led FOREIGN KEY (tenant_id, project_id) REFERENCES d_fk.projects (id, tenant_id),
        CONSTRAINT tasks_fk_ok FOREIGN KEY (tenant_id, project_id) REFERENCES d_fk.projects (tenant_id, id)`)}`)
    const findings = await check(['d_fk'])
    expect(brief(findings)).toEqual([
      'KEY_NOT_TENANT_LED d_fk.projects projects_id_key',
      'KEY_NOT_TENANT_LED d_fk.projects projects_id_tenant_key',
      'FOREIGN_KEY_NOT_TENANT_LED d_fk.tasks tasks_fk_plain',
      'FOREIGN_KEY_NOT_TENANT_LED d_fk.tasks tasks_fk_ref_not_led',
    ])
    expect(findings.find((f) => f.constraint === 'tasks_fk_plain')!.message).toBe(
      "d_fk.tasks: foreign key tasks_fk_plain (FOREIGN KEY (project_id) REFERENCES d_fk.projects(id)) does not lead with tenant_id, so a row can reference another tenant's row; replace it with FOREIGN KEY (tenant_id, project_id) REFERENCES d_fk.projects (tenant_id, id), backed by a key on d_fk.projects (tenant_id, id)",
    )
    expect(findings.find((f) => f.constraint === 'tasks_fk_ref_not_led')!.message).toContain(
      'references d_fk.projects (id, tenant_id), which does not lead with tenant_id',
    )
  })

  it('checks each partition as a table, and reports inherited keys on the parent only', async () => {
    await b.exec(`
      CREATE SCHEMA d_parts;
      CREATE TABLE d_parts.events (tenant_id uuid NOT NULL, id bigint NOT NULL, at date NOT NULL, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
      ALTER TABLE d_parts.events ENABLE ROW LEVEL SECURITY;
      ALTER TABLE d_parts.events FORCE ROW LEVEL SECURITY;
      CREATE POLICY tenant_isolation ON d_parts.events USING (tenant_id = ${CURRENT_TENANT});
      CREATE TABLE d_parts.events_2024 PARTITION OF d_parts.events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');`)
    expect(brief(await check(['d_parts']))).toEqual([
      'KEY_NOT_TENANT_LED d_parts.events events_pkey',
      'RLS_DISABLED d_parts.events_2024',
      'NO_POLICY d_parts.events_2024',
    ])
  })

  it('APP_ROLE_MISSING, APP_ROLE_SUPERUSER, APP_ROLE_BYPASSRLS: roles the application must not use', async () => {
    const findings = await check(['clean'], [APP, SUPER, BYPASS, MISSING])
    expect(brief(findings)).toEqual([
      `APP_ROLE_MISSING ${MISSING}`,
      `APP_ROLE_SUPERUSER ${SUPER}`,
      `APP_ROLE_BYPASSRLS ${BYPASS}`,
    ])
    expect(findings.map((f) => f.message)).toEqual([
      `role ${MISSING} does not exist; create it (CREATE ROLE ${MISSING} LOGIN NOSUPERUSER NOBYPASSRLS) or pass the role the application actually uses`,
      `role ${SUPER} is a superuser, which bypasses row-level security; run ALTER ROLE ${SUPER} NOSUPERUSER`,
      `role ${BYPASS} has BYPASSRLS, which skips every row-level security policy; run ALTER ROLE ${BYPASS} NOBYPASSRLS`,
    ])
  })

  it('APP_ROLE_OWNS_TABLE: an application role that owns a table, directly or through membership', async () => {
    await b.exec(`
      CREATE SCHEMA d_owned;
      ${tenantTable('d_owned', 'direct', 'tenant_id uuid NOT NULL, id bigint NOT NULL, PRIMARY KEY (tenant_id, id)')}
      ${tenantTable('d_owned', 'inherited', 'tenant_id uuid NOT NULL, id bigint NOT NULL, PRIMARY KEY (tenant_id, id)')}
      ${tenantTable('d_owned', 'sound', 'tenant_id uuid NOT NULL, id bigint NOT NULL, PRIMARY KEY (tenant_id, id)')}
      ALTER TABLE d_owned.direct OWNER TO ${OWNER_APP};
      ALTER TABLE d_owned.inherited OWNER TO ${OWNER};`)
    const findings = await check(['d_owned'], [APP, OWNER_APP, MEMBER])
    expect(brief(findings)).toEqual([
      `APP_ROLE_OWNS_TABLE d_owned.direct ${OWNER_APP}`,
      `APP_ROLE_OWNS_TABLE d_owned.inherited ${MEMBER}`,
    ])
    expect(findings[1]!.message).toBe(
      `d_owned.inherited: is owned by ${OWNER}, and application role ${MEMBER} is a member of it; an owner can turn row-level security off and skips it unless forced; run REVOKE ${OWNER} FROM ${MEMBER}, or ALTER TABLE d_owned.inherited OWNER TO a role the application does not use`,
    )
  })

  it('sorts findings by target, schema, table and code, and formats them', async () => {
    await b.exec(`
      CREATE SCHEMA d_sort_b;
      CREATE TABLE d_sort_b.zeta (tenant_id uuid NOT NULL, id bigint NOT NULL, PRIMARY KEY (tenant_id, id));
      CREATE POLICY tenant_isolation ON d_sort_b.zeta USING (tenant_id = ${CURRENT_TENANT});
      CREATE SCHEMA d_sort_a;
      ${tenantTable('d_sort_a', 'beta', 'tenant_id uuid NOT NULL')}
      CREATE TABLE d_sort_a.alpha (tenant_id uuid NOT NULL, id bigint NOT NULL, PRIMARY KEY (tenant_id, id));
      ALTER TABLE d_sort_a.alpha ENABLE ROW LEVEL SECURITY;`)
    const result = await inspectDatabase(b.q, { schemas: ['d_sort_b', 'clean', 'd_sort_a'], roles: [MISSING, APP], target: 'main' })
    const findings = result.findings
    expect(brief(findings)).toEqual([
      `APP_ROLE_MISSING ${MISSING}`,
      'RLS_NOT_FORCED d_sort_a.alpha',
      'NO_POLICY d_sort_a.alpha',
      'NO_PRIMARY_KEY d_sort_a.beta',
      'RLS_DISABLED d_sort_b.zeta',
    ])
    expect(formatFindings(findings, { tables: result.tables }).split('\n')).toEqual([
      ...findings.map((f) => `[main] ${f.code} ${f.message}`),
      'FAIL: 5 findings in 3 of 5 tables and 1 role',
    ])
  })
}

describe('formatFindings', () => {
  it('reports a clean run with and without a table count', () => {
    expect(formatFindings([], { tables: 1 })).toBe('OK: no findings in 1 table')
    expect(formatFindings([])).toBe('OK: no findings')
  })

  it('prints one line per finding and a summary', () => {
    const f: Finding = { code: 'NO_POLICY', target: 'db1', schema: 'public', table: 'a', message: 'public.a: has no policy' }
    expect(formatFindings([f])).toBe('[db1] NO_POLICY public.a: has no policy\nFAIL: 1 finding in 1 table')
  })
})

describe.skipIf(!(await postgresAvailable()))('doctor on PostgreSQL', () => {
  let admin: pg.Client | undefined
  const dropRoles = async () => {
    for (const role of ROLES) await admin!.query(`DROP ROLE IF EXISTS ${role}`)
  }

  doctorSuite(async () => {
    const url = await freshDatabase(DB_NAME)
    admin = new pg.Client({ connectionString: url })
    await admin.connect()
    await dropRoles()
    const client = admin
    return {
      q: {
        async query<R>(text: string, values?: unknown[]) {
          const r = await client.query(text, values)
          return { rows: r.rows as R[], rowCount: r.rowCount ?? 0 }
        },
      },
      exec: async (sql) => { await client.query(sql) },
      database: DB_NAME,
      close: async () => {
        await client.end()
        await dropDatabase(DB_NAME)
        // Roles outlive the database; they can only go once the tables they own are gone.
        admin = new pg.Client({ connectionString: PG_ADMIN_URL })
        await admin.connect()
        try { await dropRoles() } finally { await admin.end() }
      },
    }
  })
})

describe('doctor on PGlite', () => {
  doctorSuite(async () => {
    const db = await freshPGlite()
    return {
      q: {
        async query<R>(text: string, values?: unknown[]) {
          const r = await db.query<R>(text, values)
          return { rows: r.rows, rowCount: r.affectedRows ?? r.rows.length }
        },
      },
      exec: async (sql) => { await db.exec(sql) },
      database: 'postgres',
      close: () => db.close(),
    }
  })
})
