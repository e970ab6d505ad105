import type { AuditLog } from '../audit/index.ts'
import type { Catalog } from '../catalog/catalog.ts'
import type { Tenant } from '../core/types.ts'
import type { AdminQueryable } from '../data/driver.ts'
import { DomainStore, type DomainOptions } from './domains.ts'
import { FlagStore } from './flags.ts'
import { isPlainObject, type JsonObject, type JsonValue } from './merge.ts'
import { TenantryFlagProvider } from './openfeature-provider.ts'
import { compileValidator, type ConfigValidator, type StandardSchemaLike } from './schema.ts'
import * as sql from './sql.ts'
import { TenantConfigStore, asJson, type ChangeOptions, type ConfigVersion } from './tenant-config.ts'
import { TenantryError } from '../core/errors.ts'
import type { TenantryEvents } from '../lifecycle/events.ts'
import { PluginRegistry, checkPlugins, pluginsSchema, type PluginCore } from './plugins.ts'
import { PluginMigrations, pluginMigrationFiles, storedPluginMigrations, type PluginMigrationInput } from './plugin-migrations.ts'
import type { MigrationFile } from '../lifecycle/migrator.ts'

export { DOMAIN_TXT_LABEL, DOMAIN_WELL_KNOWN_PATH, checkDomain, type CustomDomain, type DomainOptions } from './domains.ts'
export { parseFlag, rolloutBucket, type Flag, type FlagContext, type FlagDefinition, type FlagEvaluation, type FlagReason, type FlagRule } from './flags.ts'
export { layer, parsePath, toPointer, type JsonObject, type JsonValue } from './merge.ts'
export { TenantryFlagProvider } from './openfeature-provider.ts'
export { BRANDING_SCHEMA, type Branding, type ConfigIssue, type StandardSchemaLike } from './schema.ts'
export type { ChangeOptions, ConfigVersion } from './tenant-config.ts'
export { PluginRegistry, pluginFailure, type PluginContext, type PluginCore } from './plugins.ts'
export { PluginMigrations, pluginMigrationFiles, type PluginMigrationInput } from './plugin-migrations.ts'

/**
 * Options of per-tenant configuration (`createTenantry({ config })`).
 *
 * @example
 * ```ts
 * const config: ConfigOptions = {
 *   schema: { type: 'object', properties: { maxProjects: { type: 'integer', minimum: 1, default: 10 } } },
 *   defaults: { branding: { primaryColor: '#334155' } },
 * }
 * ```
 */
export interface ConfigOptions {
  /**
   * The app's configuration schema: a JSON Schema (ajv; `default`s are filled in) or a Standard
   * Schema validator (zod, valibot…) that validates synchronously. It sees the merged
   * configuration without `branding` and `limits`, which Tenantry checks itself. A JSON Schema is
   * stored in the catalog, so that the CLI and the admin API (which do not load the app's code)
   * validate with it too: the last process started with one sets it.
   */
  schema?: object | StandardSchemaLike
  /** The bottom layer, under every plan's and tenant's. */
  defaults?: Record<string, unknown>
  /** DNS and HTTP of custom-domain verification (injectable for tests). */
  domains?: DomainOptions
}

/** What the runtime adds to the configuration options: the registered plugins. */
interface ConfigDeps {
  catalog: Catalog
  admin: AdminQueryable
  events: TenantryEvents
  plugins?: readonly PluginCore[]
  onError: (error: unknown, context: string) => void
  /** Every configuration, plan and flag change is appended here too, in its transaction. */
  audit?: AuditLog
}

/**
 * The configuration API (`tenantry.config`): called, it is the current tenant's merged
 * configuration, synchronously from memory; its methods read and change the layers.
 *
 * @example
 * ```ts
 * app.get('/', (req) => ({ color: tenantry.config<AppConfig>().branding?.primaryColor }))
 * await tenantry.config.set('acme', '/branding/primaryColor', '#0f766e', { by: 'alice' })
 * await tenantry.config.rollback('acme', (await tenantry.config.history('acme'))[0].id)
 * ```
 */
export interface TenantConfigApi {
  /** The current tenant's configuration (defaults ← plan ← tenant), frozen; `TENANT_CONTEXT_MISSING` outside a tenant context. */
  <T = JsonObject>(): T
  /** The configuration of `tenant`, from memory. */
  of<T = JsonObject>(tenant: Tenant): T
  /** The merged configuration of a tenant (or the value at `path`), read from the catalog; `layer: 'tenant'` for its own layer only. */
  get(slugOrId: string, path?: string, opts?: { layer?: 'merged' | 'tenant' }): Promise<JsonValue | undefined>
  /** Validate and store `value` at `path` of the tenant's layer; `CONFIG_INVALID` (400, naming the pointer and rule) stores nothing. */
  set(slugOrId: string, path: string, value: unknown, opts?: ChangeOptions): Promise<ConfigVersion>
  /** Remove `path` from the tenant's layer; null when it was not set. */
  unset(slugOrId: string, path: string, opts?: ChangeOptions): Promise<ConfigVersion | null>
  /** The tenant's configuration and plan changes, newest first. */
  history(slugOrId: string, opts?: { limit?: number }): Promise<ConfigVersion[]>
  /** Undo change `version` and every later one of the tenant (its layer and plan as they were before it). */
  rollback(slugOrId: string, version: number, opts?: ChangeOptions): Promise<ConfigVersion[]>
  /** Put the tenant on another plan; its configuration, flags and limits follow everywhere within a second. */
  changePlan(slugOrId: string, plan: string, opts?: ChangeOptions): Promise<Tenant>
  /** Plans: their configuration layer (`plans.settings`, whose `limits` the guard reads). */
  readonly plans: {
    list(): Promise<{ name: string; settings: JsonObject }[]>
    create(name: string, settings?: Record<string, unknown>, opts?: ChangeOptions): Promise<void>
    get(name: string, path?: string): Promise<JsonValue | undefined>
    set(name: string, path: string, value: unknown, opts?: ChangeOptions): Promise<ConfigVersion>
    unset(name: string, path: string, opts?: ChangeOptions): Promise<ConfigVersion | null>
    history(name: string, opts?: { limit?: number }): Promise<ConfigVersion[]>
    rollback(name: string, version: number, opts?: ChangeOptions): Promise<ConfigVersion | null>
  }
}

/**
 * Check `createTenantry({ config })` before anything is opened: the schema compiles and the
 * defaults pass it. `CONFIG_INVALID` otherwise.
 */
export function checkConfigOptions(options: ConfigOptions = {}, plugins: object | readonly PluginCore[] = []): { validator: ConfigValidator; defaults: JsonObject; plugins: object } {
  const defaults = options.defaults === undefined ? {} : asJson(options.defaults, 'config.defaults')
  if (!isPlainObject(defaults)) throw new TenantryError('CONFIG_INVALID', 'config.defaults must be a plain JSON object.')
  if (Array.isArray(plugins)) {
    checkPlugins(plugins)
    for (const p of plugins) pluginMigrationFiles(p.name, p.migrations)
  }
  const pluginSchema = Array.isArray(plugins) ? pluginsSchema(plugins) : plugins
  const validator = compileValidator(options.schema, pluginSchema)
  const issues = validator.check(structuredClone(defaults))
  if (issues.length > 0) {
    const i = issues[0]
    throw new TenantryError('CONFIG_INVALID', `config.defaults do not pass the configuration schema at '${i.pointer || '/'}': ${i.message} (rule '${i.rule}').`, { details: { issues } })
  }
  return { validator, defaults, plugins: pluginSchema }
}

/** What {@link createConfig} gives the runtime. */
export interface ConfigParts {
  config: TenantConfigApi
  flags: FlagStore & { readonly provider: TenantryFlagProvider }
  domains: DomainStore
  plugins: PluginRegistry
  /** The plugins' migration sets (this process's plugins', else as stored by the app). */
  pluginMigrations: PluginMigrations
}

/**
 * Configuration's part of the wiring: its catalog tables, the layered configuration, feature
 * flags (with their OpenFeature provider) and custom domains.
 *
 * @example
 * ```ts
 * const { config, flags, domains, plugins } = await createConfig(options.config, { catalog, admin, events, plugins: [], onError })
 * ```
 */
export async function createConfig(
  options: ConfigOptions = {},
  deps: ConfigDeps,
): Promise<ConfigParts> {
  const plugins = deps.plugins ?? []
  let { validator, defaults, plugins: pluginSchema } = checkConfigOptions(options, plugins)
  await deps.admin.transaction(async (tx) => { await tx.exec(sql.CONFIG_SCHEMA_SQL) })
  // By plugin name: every process (the app's, the CLI's from the stored sets) applies them in one order.
  const byName = (entries: [string, MigrationFile[]][]) => new Map(entries.filter(([, files]) => files.length > 0).sort(([a], [b]) => a.localeCompare(b)))
  let sets = byName(plugins.map((p) => [p.name, pluginMigrationFiles(p.name, p.migrations)]))
  if (options.schema !== undefined || options.defaults !== undefined || plugins.length > 0) {
    const json = options.schema !== undefined && !('~standard' in options.schema) ? asJson(options.schema, 'config.schema') : null
    const s = sql.storeSchema(json, defaults, asJson(pluginSchema, 'plugins'))
    await deps.admin.query(s.text, s.values)
    if (plugins.length > 0) {
      const m = sql.storePluginMigrations(storedPluginMigrations(sets))
      await deps.admin.query(m.text, m.values)
    }
  } else {
    // A process without the app's code (the CLI, the admin API) validates with the app's schema
    // and its plugins' as stored.
    const stored = (await deps.admin.query<{ schema: unknown; defaults: unknown; plugins: unknown; plugin_migrations: unknown }>(sql.storedSchema().text, [])).rows[0]
    if (stored) {
      const parse = (v: unknown) => (typeof v === 'string' ? JSON.parse(v) : v)
      ;({ validator, defaults } = checkConfigOptions({ schema: parse(stored.schema) ?? undefined, defaults: parse(stored.defaults) ?? undefined }, parse(stored.plugins) ?? []))
      const storedSets = (parse(stored.plugin_migrations) ?? {}) as Record<string, PluginMigrationInput[]>
      sets = byName(Object.entries(storedSets).map(([name, files]) => [name, pluginMigrationFiles(name, files)]))
    }
  }
  const store = new TenantConfigStore(deps.catalog, deps.admin, validator, defaults, deps.onError, deps.audit)
  await store.init()
  const flagStore = new FlagStore(deps.catalog, deps.admin, store, deps.onError)
  await flagStore.init()
  const flags = Object.assign(flagStore, { provider: new TenantryFlagProvider(flagStore) })

  const config = Object.assign(function config() { return store.current() } as TenantConfigApi, {
    of: (tenant: Tenant) => store.of(tenant),
    get: store.get.bind(store),
    set: store.set.bind(store),
    unset: store.unset.bind(store),
    history: store.history.bind(store),
    rollback: store.rollback.bind(store),
    changePlan: store.changePlan.bind(store),
    plans: {
      list: () => store.listPlans(),
      create: store.createPlan.bind(store),
      get: store.getPlan.bind(store),
      set: store.setPlan.bind(store),
      unset: store.unsetPlan.bind(store),
      history: store.planHistory.bind(store),
      rollback: store.rollbackPlan.bind(store),
    },
  }) as TenantConfigApi
  const registry = new PluginRegistry(plugins, (tenant) => store.of(tenant))
  registry.wire(deps.events)
  const pluginMigrations = new PluginMigrations(sets, (tenant, name) => registry.enabledFor(tenant, name), () => store.reloadPlans())
  registry.migrations = pluginMigrations
  return { config, flags, domains: new DomainStore(deps.catalog, deps.admin, options.domains, deps.audit), plugins: registry, pluginMigrations }
}
