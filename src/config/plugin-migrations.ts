import type { Catalog } from '../catalog/catalog.ts'
import { TenantryError } from '../core/errors.ts'
import type { Tenant, Tier } from '../core/types.ts'
import { printable } from '../core/validation.ts'
import type { Queryable } from '../data/executor.ts'
import type { MigrationTarget } from '../data/tiers/index.ts'
import { checkDatabase, type Finding } from '../doctor/index.ts'
import type { ExtraMigrations, FleetMigrateOptions, FleetMigrateResult, PlannedTarget } from '../lifecycle/fleet-migrate.ts'
import { checksumOf, loadMigrations, type MigrationFile } from '../lifecycle/migrator.ts'
import { coalesce } from './live-reload.ts'

/** One file of a plugin's migration set given inline (`migrations: [{ version: '0001', name: 'create_hooks', sql }]`). */
export interface PluginMigrationInput {
  version: string
  name: string
  sql: string
}

const VERSION = /^\d+$/
const NAME = /^[A-Za-z0-9_-]+$/

/**
 * A plugin's migration set as ledger files: a directory of `NNNN_name.sql` files (like the app's)
 * or inline files. Each file's ledger version is `<plugin>:<NNNN>`, so it never collides with the
 * app's versions or another plugin's. `CONFIG_INVALID` for a bad name, version or a duplicate.
 *
 * @example
 * ```ts
 * pluginMigrationFiles('webhooks', [{ version: '0001', name: 'create_hooks', sql: 'CREATE TABLE hooks (…)' }])
 * // [{ version: 'webhooks:0001', name: 'create_hooks', plugin: 'webhooks', … }]
 * ```
 */
export function pluginMigrationFiles(plugin: string, migrations: string | readonly PluginMigrationInput[] | undefined): MigrationFile[] {
  if (migrations === undefined) return []
  const inputs: PluginMigrationInput[] = typeof migrations === 'string' ? loadMigrations(migrations) : Array.isArray(migrations) ? [...migrations] : []
  if (typeof migrations !== 'string' && !Array.isArray(migrations)) {
    throw new TenantryError('CONFIG_INVALID', `Plugin '${plugin}': migrations must be a directory of NNNN_name.sql files or an array of { version, name, sql }.`)
  }
  const seen = new Set<string>()
  const files = inputs.map((m) => {
    if (!m || typeof m.version !== 'string' || !VERSION.test(m.version) || typeof m.name !== 'string' || !NAME.test(m.name) || typeof m.sql !== 'string' || m.sql.trim() === '') {
      throw new TenantryError('CONFIG_INVALID', `Plugin '${plugin}': migration '${printable(String(m?.version))}_${printable(String(m?.name))}' needs a numeric version, a name of letters, digits, _ and -, and SQL.`)
    }
    if (seen.has(m.version)) throw new TenantryError('CONFIG_INVALID', `Plugin '${plugin}' has two migrations with version ${m.version}.`)
    seen.add(m.version)
    return { version: `${plugin}:${m.version}`, name: m.name, sql: m.sql, checksum: checksumOf(m.sql), plugin }
  })
  return files.sort((a, b) => Number(a.version.slice(plugin.length + 1)) - Number(b.version.slice(plugin.length + 1)))
}

/** The stored form (catalog `config_schema.plugin_migrations`), for processes without the plugins' code. */
export function storedPluginMigrations(sets: ReadonlyMap<string, MigrationFile[]>): Record<string, PluginMigrationInput[]> {
  return Object.fromEntries([...sets].map(([plugin, files]) => [plugin, files.map((f) => ({ version: f.version.slice(plugin.length + 1), name: f.name, sql: f.sql }))]))
}

const findingKey = (f: Finding) => `${f.code}\0${f.schema ?? ''}\0${f.table ?? ''}\0${f.constraint ?? ''}\0${f.policy ?? ''}`

/**
 * Plugins' own migration sets (issue 12): a target gets the files of every plugin enabled for a
 * tenant on it (a tenant's own schema or database; the pooled schema of a server when one of its
 * pooled tenants has the plugin), after the app's, through the same migrator and ledger. Each file
 * is checked inside its transaction against invariants 1–2 with the doctor's own checks: a file
 * that leaves a table without `tenant_id`, forced RLS and a tenant policy, or with a key not led by
 * `tenant_id`, is rolled back (`MIGRATION_FAILED` naming the plugin and the finding).
 */
export class PluginMigrations implements ExtraMigrations {
  constructor(
    /** Plugin name → its files. */
    readonly sets: ReadonlyMap<string, MigrationFile[]>,
    private readonly enabled: (tenant: Tenant, plugin: string) => boolean,
    /** Brings the plans' layers up to date before deciding (a plan may have just enabled a plugin). */
    private readonly refresh: () => Promise<void>,
  ) {}

  all(): MigrationFile[] {
    return [...this.sets.values()].flat()
  }

  /** The plugin files a target holding `tenants` needs, plugin by plugin. */
  filesFor(tenants: readonly Tenant[]): MigrationFile[] {
    const out: MigrationFile[] = []
    for (const [plugin, files] of this.sets) {
      if (tenants.some((t) => this.isEnabled(t, plugin))) out.push(...files)
    }
    return out
  }

  /** The plugin files a new tenant's target needs (provisioning). */
  async forTenant(tenant: Tenant): Promise<MigrationFile[]> {
    if (this.sets.size === 0) return []
    await this.refresh()
    return this.filesFor([tenant])
  }

  async forTargets(targets: readonly (MigrationTarget & { tier: Tier; tenantId: string | null })[], tenants: readonly Tenant[]): Promise<Map<string, MigrationFile[]>> {
    const out = new Map<string, MigrationFile[]>()
    if (this.sets.size === 0) return out
    await this.refresh()
    const byId = new Map(tenants.map((t) => [t.id, t]))
    const pooled = new Map<string, Tenant[]>()
    for (const t of tenants) {
      if (t.tier !== 'pooled' || t.status === 'deleted') continue
      const list = pooled.get(t.placement.server) ?? []
      list.push(t)
      pooled.set(t.placement.server, list)
    }
    for (const target of targets) {
      const on = target.tenantId === null ? pooled.get(target.server) ?? [] : [byId.get(target.tenantId)].filter((t): t is Tenant => t !== undefined)
      const files = this.filesFor(on)
      if (files.length > 0) out.set(target.label, files)
    }
    return out
  }

  readonly around = async (tx: Queryable, target: MigrationTarget, file: MigrationFile, apply: () => Promise<void>): Promise<void> => {
    if (file.plugin === undefined) return apply()
    const scope = { schemas: [target.schema], roles: [], target: target.label }
    const before = new Set((await checkDatabase(tx, scope)).map(findingKey))
    await apply()
    const added = (await checkDatabase(tx, scope)).filter((f) => !before.has(findingKey(f)))
    if (added.length > 0) {
      throw new TenantryError('MIGRATION_FAILED', `plugin '${file.plugin}' breaks the isolation rules (docs/migrations.md): ${added.map((f) => f.message).join(' ')}`, {
        details: { plugin: file.plugin, findings: added.map((f) => f.code) },
      })
    }
  }

  private watcher?: { settle(): Promise<void>; stop(): void }

  /**
   * Apply the sets when a change enables a plugin for a tenant or a plan: on every catalog change
   * of a tenant or plan (this process's and, through the notifications, every other's), the
   * targets whose only pending files are plugins' are migrated by a fleet run restricted to them
   * (a recorded operation; processes doing it at once join one run or find nothing left). Targets
   * that also lack app migrations are left to `tenantry migrate`.
   */
  watch(catalog: Catalog, fleet: FleetLike, onError: (error: unknown) => void): void {
    if (this.sets.size === 0 || this.watcher) return
    this.watcher = watchPluginMigrations(catalog, fleet, onError)
  }

  /** Wait for the plugin migrations started by changes so far (tests; close). */
  async settle(): Promise<void> {
    await this.watcher?.settle()
  }

  async close(): Promise<void> {
    this.watcher?.stop()
    await this.watcher?.settle()
  }

  private isEnabled(tenant: Tenant, plugin: string): boolean {
    try {
      return this.enabled(tenant, plugin)
    } catch {
      return false // a configuration that no longer passes the schema is reported where it is read
    }
  }
}

type FleetLike = { plan(o?: Pick<FleetMigrateOptions, 'only'>): Promise<PlannedTarget[]>; run(o?: FleetMigrateOptions): Promise<FleetMigrateResult> }

/** See {@link PluginMigrations.watch}. */
function watchPluginMigrations(catalog: Catalog, fleet: FleetLike, onError: (error: unknown) => void): { settle(): Promise<void>; stop(): void } {
  const reconcile = async () => {
    const targets = (await fleet.plan()).filter((t) => t.pending.length > 0 && t.pending.every((p) => p.includes(':')))
    if (targets.length === 0) return
    const tenants = await catalog.list()
    const slugs = new Set<string>()
    for (const t of targets) {
      const slug = t.slug ?? tenants.find((x) => x.tier === 'pooled' && x.placement.server === t.server && x.status !== 'deleted')?.slug
      if (slug) slugs.add(slug)
    }
    if (slugs.size === 0) return
    const result = await fleet.run({ only: [...slugs], pace: false, startedBy: 'plugins' })
    const failed = result.targets.filter((t) => t.status === 'failed')
    if (failed.length > 0) {
      throw new TenantryError('MIGRATION_FAILED', `Plugin migrations failed on ${failed.length} target(s): ${failed.map((t) => `${t.target}: ${t.error}`).join('; ')}`, {
        details: { operationId: result.operationId, targets: failed.map((t) => t.target) },
      })
    }
  }
  const run = coalesce(() => reconcile().catch(onError))
  let last: Promise<void> = Promise.resolve()
  const kick = () => { last = run() }
  const unsubscribe = catalog.onChange((subject) => {
    // A tenant (its layer or plan), a plan's layer, or anything after a lost notification connection.
    if (subject === '*' || subject.startsWith('plan:') || /^[0-9a-f-]{36}$/.test(subject)) kick()
  })
  return {
    settle: async () => {
      for (let p = last; ; p = last) {
        await p
        if (p === last) return
      }
    },
    stop: unsubscribe,
  }
}
