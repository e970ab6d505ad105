import { quoteIdent, TenantryError } from '../core/index.ts'
import type { Queryable } from '../data/executor.ts'
import {
  currentDatabaseSql,
  keysSql,
  ownershipSql,
  policiesSql,
  rolesSql,
  schemasSql,
  tablesSql,
  TENANTRY_SCHEMA,
  type KeyRow,
  type OwnershipRow,
  type PolicyRow,
  type RoleRow,
  type TableRow,
} from './sql.ts'

/**
 * What a finding is about. Findings are sorted by target, schema and table (role findings that
 * name no table first), then by code in the order declared here.
 *
 * @example
 * ```ts
 * const broken = findings.filter((f) => f.code === 'RLS_NOT_FORCED')
 * ```
 */
export type FindingCode =
  | 'MISSING_TENANT_ID'
  | 'RLS_DISABLED'
  | 'RLS_NOT_FORCED'
  | 'NO_POLICY'
  | 'POLICY_NOT_TENANT_SCOPED'
  | 'NO_PRIMARY_KEY'
  | 'KEY_NOT_TENANT_LED'
  | 'FOREIGN_KEY_NOT_TENANT_LED'
  | 'APP_ROLE_MISSING'
  | 'APP_ROLE_SUPERUSER'
  | 'APP_ROLE_BYPASSRLS'
  | 'APP_ROLE_OWNS_TABLE'

/**
 * Every finding code, in report order.
 *
 * @example
 * ```ts
 * FINDING_CODES.includes('NO_POLICY') // true
 * ```
 */
export const FINDING_CODES: readonly FindingCode[] = [
  'MISSING_TENANT_ID',
  'RLS_DISABLED',
  'RLS_NOT_FORCED',
  'NO_POLICY',
  'POLICY_NOT_TENANT_SCOPED',
  'NO_PRIMARY_KEY',
  'KEY_NOT_TENANT_LED',
  'FOREIGN_KEY_NOT_TENANT_LED',
  'APP_ROLE_MISSING',
  'APP_ROLE_SUPERUSER',
  'APP_ROLE_BYPASSRLS',
  'APP_ROLE_OWNS_TABLE',
]

/**
 * One violation of invariants 1–2 (see DESIGN.md), with a message that says what is wrong and the
 * statement that fixes it.
 *
 * @example
 * ```ts
 * {
 *   code: 'RLS_NOT_FORCED', target: 'main/public', schema: 'public', table: 'notes',
 *   message: 'public.notes: row-level security is enabled but not forced; run ALTER TABLE public.notes FORCE ROW LEVEL SECURITY',
 * }
 * ```
 */
export interface Finding {
  code: FindingCode
  /** The label of the checked database, e.g. `main/public` or `acme_db`. */
  target: string
  schema?: string
  table?: string
  /** The constraint (or constraint-less unique index) of a key finding. */
  constraint?: string
  /** The policy of a `POLICY_NOT_TENANT_SCOPED` finding. */
  policy?: string
  role?: string
  message: string
}

/**
 * What to check in one database.
 *
 * @example
 * ```ts
 * const opts: DoctorCheckOptions = { schemas: ['public'], roles: ['tenantry_app'], target: 'main/public' }
 * ```
 */
export interface DoctorCheckOptions {
  /** Schemas whose tables are tenant tables. `tenantry` is never checked, even when listed. */
  schemas: string[]
  /** Roles the application connects or switches to (the app login role, per-tenant roles). */
  roles: string[]
  /** Label put on every finding; defaults to the database name. */
  target?: string
  /** Tables that are not tenant tables: bare names (`countries`) or qualified (`public.countries`). */
  ignoreTables?: string[]
}

/**
 * The outcome of checking one database: its findings and how many tables were checked.
 *
 * @example
 * ```ts
 * const { findings, tables } = await inspectDatabase(q, { schemas: ['public'], roles: ['tenantry_app'] })
 * console.log(formatFindings(findings, { tables }))
 * ```
 */
export interface DoctorResult {
  target: string
  /** Number of tables checked (after `ignoreTables`). */
  tables: number
  findings: Finding[]
}

/**
 * Check a live database against invariants 1–2 and name each violation. Returns `[]` when the
 * database is sound. Throws `CONFIG_INVALID` when a listed schema does not exist, so a misspelt
 * schema cannot pass as "no findings".
 *
 * @example
 * ```ts
 * const findings = await checkDatabase(admin, { schemas: ['public'], roles: ['tenantry_app'], target: 'main/public' })
 * if (findings.length > 0) { console.error(formatFindings(findings)); process.exitCode = 1 }
 * ```
 */
export async function checkDatabase(q: Queryable, opts: DoctorCheckOptions): Promise<Finding[]> {
  return (await inspectDatabase(q, opts)).findings
}

/**
 * {@link checkDatabase}, also returning the number of tables checked (for the summary line of
 * {@link formatFindings}).
 *
 * @example
 * ```ts
 * const result = await inspectDatabase(admin, { schemas: ['public'], roles: ['tenantry_app'] })
 * console.log(formatFindings(result.findings, { tables: result.tables }))
 * ```
 */
export async function inspectDatabase(q: Queryable, opts: DoctorCheckOptions): Promise<DoctorResult> {
  const schemas = uniqueStrings(opts.schemas, 'schemas').filter((s) => s !== TENANTRY_SCHEMA)
  const roles = uniqueStrings(opts.roles, 'roles')
  const ignore = uniqueStrings(opts.ignoreTables ?? [], 'ignoreTables')
  const target = opts.target ?? (await run<{ database: string }>(q, currentDatabaseSql()))[0]!.database

  const existing = new Set((await run<{ schema: string }>(q, schemasSql(schemas))).map((r) => r.schema))
  const missing = schemas.filter((s) => !existing.has(s))
  if (missing.length > 0) {
    throw new TenantryError(
      'CONFIG_INVALID',
      `Doctor: schema ${missing.map((s) => `'${s}'`).join(', ')} does not exist in ${target}; check the schema names passed to the check.`,
      { details: { target, schemas: missing } },
    )
  }

  const tables = await run<TableRow>(q, tablesSql(schemas, ignore))
  const keys = await run<KeyRow>(q, keysSql(schemas, ignore))
  const policies = await run<PolicyRow>(q, policiesSql(schemas, ignore))
  const roleRows = roles.length > 0 ? await run<RoleRow>(q, rolesSql(roles)) : []
  const owned = roles.length > 0 && schemas.length > 0 ? await run<OwnershipRow>(q, ownershipSql(schemas, ignore, roles)) : []

  const findings: Finding[] = []
  const at = (t: { schema: string; table: string }) => ({ target, schema: t.schema, table: t.table })
  const hasPrimaryKey = new Set(keys.filter((k) => k.kind === 'p').map((k) => qualified(k.schema, k.table)))

  for (const t of tables) {
    const name = qualified(t.schema, t.table)
    if (!t.has_tenant_id) {
      findings.push({
        code: 'MISSING_TENANT_ID', ...at(t),
        message: `${name}: has no tenant_id column, so its rows belong to no tenant; add one (ALTER TABLE ${name} ADD COLUMN tenant_id uuid NOT NULL) or, if it is not a tenant table, list it in ignoreTables`,
      })
    }
    if (!t.rls_enabled) {
      const force = t.rls_forced ? '' : `; ALTER TABLE ${name} FORCE ROW LEVEL SECURITY`
      findings.push({
        code: 'RLS_DISABLED', ...at(t),
        message: `${name}: row-level security is disabled, so every tenant's rows are visible; run ALTER TABLE ${name} ENABLE ROW LEVEL SECURITY${force}`,
      })
    } else if (!t.rls_forced) {
      findings.push({
        code: 'RLS_NOT_FORCED', ...at(t),
        message: `${name}: row-level security is enabled but not forced; run ALTER TABLE ${name} FORCE ROW LEVEL SECURITY`,
      })
    }
    if (t.policy_count === 0) {
      findings.push({
        code: 'NO_POLICY', ...at(t),
        message: `${name}: has no row-level security policy; run CREATE POLICY tenant_isolation ON ${name} USING (tenant_id = (SELECT tenantry.tenant_id())) WITH CHECK (tenant_id = (SELECT tenantry.tenant_id()))`,
      })
    }
    // A partition gets its primary key from its parent (an inherited constraint), so this holds for both.
    if (!hasPrimaryKey.has(name)) {
      findings.push({
        code: 'NO_PRIMARY_KEY', ...at(t),
        message: `${name}: has no primary key; add one that leads with tenant_id (ALTER TABLE ${name} ADD PRIMARY KEY (tenant_id, id))`,
      })
    }
  }

  for (const p of policies) {
    const unscoped = [
      p.using_expr !== null && !mentionsTenantId(p.using_expr) ? `USING (${p.using_expr})` : null,
      p.check_expr !== null && !mentionsTenantId(p.check_expr) ? `WITH CHECK (${p.check_expr})` : null,
    ].filter((e): e is string => e !== null)
    if (unscoped.length === 0) continue
    const name = qualified(p.schema, p.table)
    findings.push({
      code: 'POLICY_NOT_TENANT_SCOPED', ...at(p), policy: p.name,
      message: `${name}: policy ${ident(p.name)} has ${unscoped.join(' and ')}, which does not mention tenant_id, so it lets rows of every tenant through; drop it (DROP POLICY ${ident(p.name)} ON ${name}) or restrict it to tenant_id = (SELECT tenantry.tenant_id())`,
    })
  }

  for (const k of keys) {
    // An inherited key is the parent's; fixing the parent fixes it, so it is reported there only.
    if (k.inherited) continue
    const name = qualified(k.schema, k.table)
    const cols = k.columns.map((c) => c ?? '(expression)')
    if (k.kind === 'f') {
      const leads = k.columns[0] === 'tenant_id'
      // `tenant_id REFERENCES tenants (id)` pins the row to an existing tenant; it cannot point across tenants.
      const isTenantReference = leads && k.columns.length === 1
      const refLeads = k.ref_columns[0] === 'tenant_id'
      if (isTenantReference || (leads && refLeads)) continue
      const ref = qualified(k.ref_schema ?? '', k.ref_table ?? '')
      const problem = !leads
        ? 'does not lead with tenant_id'
        : `references ${ref} (${k.ref_columns.join(', ')}), which does not lead with tenant_id`
      findings.push({
        code: 'FOREIGN_KEY_NOT_TENANT_LED', ...at(k), constraint: k.name,
        message: `${name}: foreign key ${ident(k.name)} (${k.definition}) ${problem}, so a row can reference another tenant's row; replace it with FOREIGN KEY (${tenantLed(cols)}) REFERENCES ${ref} (${tenantLed(k.ref_columns)}), backed by a key on ${ref} (${tenantLed(k.ref_columns)})`,
      })
      continue
    }
    if (k.columns[0] === 'tenant_id') continue
    const what = k.kind === 'p' ? 'primary key' : k.kind === 'u' ? 'unique constraint' : 'unique index'
    const fix = k.kind === 'p'
      ? `ALTER TABLE ${name} DROP CONSTRAINT ${ident(k.name)}, ADD PRIMARY KEY (${tenantLed(cols)})`
      : k.kind === 'u'
        ? `ALTER TABLE ${name} DROP CONSTRAINT ${ident(k.name)}, ADD UNIQUE (${tenantLed(cols)})`
        : `DROP INDEX ${qualified(k.schema, k.name)}; CREATE UNIQUE INDEX ON ${name} (${tenantLed(cols)})`
    findings.push({
      code: 'KEY_NOT_TENANT_LED', ...at(k), constraint: k.name,
      message: `${name}: ${what} ${ident(k.name)} (${k.definition}) does not lead with tenant_id, so it spans tenants; run ${fix}`,
    })
  }

  const existingRoles = new Map(roleRows.map((r) => [r.role, r]))
  for (const role of roles) {
    const r = existingRoles.get(role)
    if (!r) {
      findings.push({
        code: 'APP_ROLE_MISSING', target, role,
        message: `role ${ident(role)} does not exist; create it (CREATE ROLE ${ident(role)} LOGIN NOSUPERUSER NOBYPASSRLS) or pass the role the application actually uses`,
      })
      continue
    }
    if (r.superuser) {
      findings.push({
        code: 'APP_ROLE_SUPERUSER', target, role,
        message: `role ${ident(role)} is a superuser, which bypasses row-level security; run ALTER ROLE ${ident(role)} NOSUPERUSER`,
      })
    }
    if (r.bypassrls) {
      findings.push({
        code: 'APP_ROLE_BYPASSRLS', target, role,
        message: `role ${ident(role)} has BYPASSRLS, which skips every row-level security policy; run ALTER ROLE ${ident(role)} NOBYPASSRLS`,
      })
    }
  }
  for (const o of owned) {
    const name = qualified(o.schema, o.table)
    const how = o.owner === o.role
      ? `is owned by application role ${ident(o.role)}`
      : `is owned by ${ident(o.owner)}, and application role ${ident(o.role)} is a member of it`
    const fix = o.owner === o.role
      ? `run ALTER TABLE ${name} OWNER TO a role the application does not use`
      : `run REVOKE ${ident(o.owner)} FROM ${ident(o.role)}, or ALTER TABLE ${name} OWNER TO a role the application does not use`
    findings.push({
      code: 'APP_ROLE_OWNS_TABLE', ...at(o), role: o.role,
      message: `${name}: ${how}; an owner can turn row-level security off and skips it unless forced; ${fix}`,
    })
  }

  return { target, tables: tables.length, findings: findings.sort(compareFindings) }
}

/**
 * A human report: one line per finding, then a summary line. With `tables` given, a clean run
 * reads `OK: no findings in N tables`.
 *
 * @example
 * ```ts
 * formatFindings([], { tables: 12 })
 * // 'OK: no findings in 12 tables'
 * formatFindings(findings)
 * // '[main/public] RLS_NOT_FORCED public.notes: row-level security is enabled but not forced; …\n
 * //  FAIL: 1 finding in 1 table'
 * ```
 */
export function formatFindings(findings: Finding[], options: { tables?: number } = {}): string {
  const checked = options.tables
  if (findings.length === 0) {
    return checked === undefined ? 'OK: no findings' : `OK: no findings in ${plural(checked, 'table')}`
  }
  const lines = [...findings].sort(compareFindings).map((f) => `[${f.target}] ${f.code} ${f.message}`)
  const tables = new Set(findings.filter((f) => f.table !== undefined).map((f) => `${f.target}\0${f.schema}\0${f.table}`))
  const roles = new Set(findings.filter((f) => f.table === undefined && f.role !== undefined).map((f) => `${f.target}\0${f.role}`))
  const parts: string[] = []
  if (tables.size > 0 || roles.size === 0) {
    parts.push(checked === undefined ? plural(tables.size, 'table') : `${tables.size} of ${plural(checked, 'table')}`)
  }
  if (roles.size > 0) parts.push(plural(roles.size, 'role'))
  lines.push(`FAIL: ${plural(findings.length, 'finding')} in ${parts.join(' and ')}`)
  return lines.join('\n')
}

async function run<R>(q: Queryable, statement: { text: string; values: unknown[] }): Promise<R[]> {
  return (await q.query<R>(statement.text, statement.values)).rows
}

function uniqueStrings(value: unknown, option: string): string[] {
  if (!Array.isArray(value) || value.some((v) => typeof v !== 'string' || v.length === 0)) {
    throw new TenantryError('CONFIG_INVALID', `Doctor option '${option}' must be an array of non-empty names.`)
  }
  return [...new Set(value as string[])]
}

// pg_get_expr prints a column of the policy's table unqualified; a qualified name (`x.tenant_id`) or
// a call (`tenantry.tenant_id()`) is not the column.
const TENANT_ID_COLUMN = /(?<![\w.$"])tenant_id(?![\w$"]|\s*\()/

function mentionsTenantId(expr: string): boolean {
  return TENANT_ID_COLUMN.test(expr)
}

function tenantLed(columns: string[]): string {
  return ['tenant_id', ...columns.filter((c) => c !== 'tenant_id')].map((c) => (c === '(expression)' ? c : ident(c))).join(', ')
}

function ident(name: string): string {
  return /^[a-z_][a-z0-9_$]*$/.test(name) ? name : quoteIdent(name)
}

function qualified(schema: string, name: string): string {
  return `${ident(schema)}.${ident(name)}`
}

function plural(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? '' : 's'}`
}

const CODE_ORDER = new Map(FINDING_CODES.map((c, i) => [c, i]))

function compareFindings(a: Finding, b: Finding): number {
  return (
    cmp(a.target, b.target) ||
    cmp(a.schema ?? '', b.schema ?? '') ||
    cmp(a.table ?? '', b.table ?? '') ||
    CODE_ORDER.get(a.code)! - CODE_ORDER.get(b.code)! ||
    cmp(a.constraint ?? '', b.constraint ?? '') ||
    cmp(a.policy ?? '', b.policy ?? '') ||
    cmp(a.role ?? '', b.role ?? '') ||
    cmp(a.message, b.message)
  )
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}
