import { TenantryError, isTenantryError } from '../core/errors.ts'
import type { Tenant } from '../core/types.ts'
import { printable } from '../core/validation.ts'
import type { TenantryEventMap, TenantryEvents } from '../lifecycle/events.ts'
import { isPlainObject, type JsonObject } from './merge.ts'
import type { PluginMigrations } from './plugin-migrations.ts'

/** What a plugin's handlers are given: the tenant, its settings of the plugin, and the plugin. */
export interface PluginContext {
  tenant: Tenant
  /** `config.plugins.<name>.settings` of the tenant, checked by the plugin's `settingsSchema` (its defaults filled in). */
  settings: JsonObject
  plugin: PluginCore
}

type EventHandlers = { [K in Exclude<keyof TenantryEventMap, 'error'>]?: (payload: TenantryEventMap[K], ctx: PluginContext) => void | Promise<void> }

/**
 * The framework-free part of a plugin (the adapters add routes and request hooks: see
 * `TenantryPlugin` in `tenantry/fastify` and `tenantry/express`).
 */
export interface PluginCore {
  /** Lowercase letters, digits and `-`; its routes live under `/plugins/<name>`. */
  name: string
  version: string
  description?: string
  /** JSON Schema of `config.plugins.<name>.settings` (checked with every configuration write). */
  settingsSchema?: object
  /** Lifecycle event handlers, run only for tenants that have the plugin (events naming a tenant). */
  events?: EventHandlers
  /**
   * The plugin's own migration set: a directory of `NNNN_name.sql` files or inline
   * `{ version, name, sql }`. Applied to every target of a tenant that has the plugin, after the
   * app's, recorded in the ledger as `<name>:<NNNN>`; its tables follow invariants 1–2 (docs/plugins.md).
   */
  migrations?: string | readonly { version: string; name: string; sql: string }[]
}

const NAME = /^[a-z][a-z0-9-]{0,39}$/

/**
 * Check the plugins given to `createTenantry`: names valid and unique, a version. `CONFIG_INVALID` otherwise.
 */
export function checkPlugins(plugins: readonly PluginCore[] | undefined): void {
  const seen = new Set<string>()
  for (const p of plugins ?? []) {
    if (!p || typeof p.name !== 'string' || !NAME.test(p.name)) {
      throw new TenantryError('CONFIG_INVALID', `Plugin name '${printable(String(p?.name))}' must be lowercase letters, digits and '-' (at most 40, starting with a letter).`)
    }
    if (seen.has(p.name)) throw new TenantryError('CONFIG_INVALID', `Two plugins are named '${p.name}'; plugin names must be unique.`)
    if (typeof p.version !== 'string' || p.version.length === 0) throw new TenantryError('CONFIG_INVALID', `Plugin '${p.name}' needs a version string.`)
    seen.add(p.name)
  }
}

/**
 * The JSON Schema of the configuration's `plugins` key: one entry per plugin, `{ enabled, settings }`.
 * Unknown plugin names are refused, so a typo cannot leave a plugin silently off.
 */
export function pluginsSchema(plugins: readonly PluginCore[]): object {
  return {
    type: 'object',
    additionalProperties: false,
    properties: Object.fromEntries(plugins.map((p) => [p.name, {
      type: 'object',
      additionalProperties: false,
      // `default: {}`: a plugin enabled without settings still gets its schema's defaults.
      properties: { enabled: { type: 'boolean' }, settings: { ...(p.settingsSchema ?? { type: 'object' }), default: {} } },
    }])),
  }
}

/**
 * The plugins of this runtime, and whether a tenant has one: `config.plugins.<name>.enabled` of
 * its merged configuration, so a plugin is enabled per plan (the plan's layer) or per tenant
 * (its own), versioned and live like any configuration.
 *
 * @example
 * ```ts
 * await tenantry.config.plans.set('pro', '/plugins/export/enabled', true)
 * tenantry.plugins.enabledFor(tenant, 'export') // true for tenants on pro
 * ```
 */
export class PluginRegistry {
  private readonly byName: Map<string, PluginCore>
  /** The plugins' migration sets: `settle()` waits for those a change started (docs/plugins.md). */
  migrations?: PluginMigrations

  constructor(plugins: readonly PluginCore[], private readonly configOf: (tenant: Tenant) => JsonObject) {
    this.byName = new Map(plugins.map((p) => [p.name, p]))
  }

  list(): PluginCore[] {
    return [...this.byName.values()]
  }

  get(name: string): PluginCore | undefined {
    return this.byName.get(name)
  }

  /** True when `tenant` has the plugin enabled. */
  enabledFor(tenant: Tenant, name: string): boolean {
    const entry = (this.configOf(tenant).plugins as JsonObject | undefined)?.[name]
    return isPlainObject(entry) && entry.enabled === true
  }

  /** The handlers' context of `tenant` for the plugin (its settings), or null when it does not have it. */
  contextFor(tenant: Tenant, name: string): PluginContext | null {
    const plugin = this.byName.get(name)
    if (!plugin || !this.enabledFor(tenant, name)) return null
    const entry = (this.configOf(tenant).plugins as JsonObject)[name] as JsonObject
    return { tenant, plugin, settings: isPlainObject(entry.settings) ? entry.settings : {} }
  }

  /** Plugins enabled for `tenant`. */
  enabledList(tenant: Tenant): PluginCore[] {
    return this.list().filter((p) => this.enabledFor(tenant, p.name))
  }

  /** Run every plugin's lifecycle handlers for the tenant an event names; failures are emitted, naming the plugin. */
  wire(events: TenantryEvents): void {
    for (const plugin of this.byName.values()) {
      for (const [event, handler] of Object.entries(plugin.events ?? {})) {
        events.on(event as keyof TenantryEventMap, (payload: unknown) => {
          const tenant = (payload as { tenant?: Tenant } | null)?.tenant
          if (!tenant || typeof tenant.id !== 'string') return
          let ctx: PluginContext | null
          try {
            ctx = this.contextFor(tenant, plugin.name)
          } catch {
            return // an invalid configuration is reported where it is read
          }
          if (!ctx) return
          const fail = (err: unknown) => events.emit('error', { error: pluginFailure(plugin.name, err), context: `plugin '${plugin.name}' on ${event} of tenant '${tenant.slug}'` })
          try {
            Promise.resolve((handler as (p: unknown, c: PluginContext) => unknown)(payload, ctx)).catch(fail)
          } catch (err) {
            fail(err)
          }
        })
      }
    }
  }
}

/**
 * The error a failing plugin turns into: a coded error of the plugin's own is kept (it chose the
 * status); anything else is `PLUGIN_FAILED` (500) naming the plugin, with the cause attached.
 */
export function pluginFailure(name: string, err: unknown): TenantryError {
  if (isTenantryError(err)) return err
  return new TenantryError('PLUGIN_FAILED', `Plugin '${name}' failed: ${printable(String((err as Error)?.message ?? err), 200)}. Only this request was affected; see the plugin's logs.`, {
    cause: err, details: { plugin: name },
  })
}
