import { readFileSync } from 'node:fs'
import { InvalidArgumentError, Option, type Command } from 'commander'
import type { ConfigVersion, CustomDomain, Flag, JsonValue } from '../config/index.ts'
import { TenantryError } from '../core/errors.ts'
import type { Tenantry } from '../runtime.ts'
import { table, truncate } from './format.ts'
import type { ConnectionFlags } from './open.ts'

/** What `main.ts` lends the commands of this file (so that they are shared, not repeated). */
export interface CommandKit {
  withConnection(cmd: Command): Command
  withTenantry<T>(flags: ConnectionFlags, fn: (t: Tenantry) => Promise<T>): Promise<T>
  print(json: boolean | undefined, data: unknown, text: () => string): void
  startedBy(): string
}

/** A value on the command line: JSON when it parses (`5`, `true`, `"x"`, `{"a":1}`), else the text itself (unless `--string`). */
function valueOf(text: string, asString: boolean | undefined): unknown {
  if (asString) return text
  try {
    return JSON.parse(text)
  } catch {
    return text
  }
}

function versionArg(value: string): number {
  if (!/^[1-9][0-9]{0,15}$/.test(value)) throw new InvalidArgumentError('a version is a whole number from the history.')
  return Number(value)
}

function percentArg(value: string): number {
  const n = Number(value.replace(/%$/, ''))
  if (value.trim() === '' || !Number.isFinite(n) || n < 0 || n > 100) throw new InvalidArgumentError('a percentage is a number from 0 to 100.')
  return n
}

function limitArg(value: string): number {
  if (!/^[0-9]+$/.test(value) || Number(value) < 1 || Number(value) > 1000) throw new InvalidArgumentError('--limit must be a whole number from 1 to 1000.')
  return Number(value)
}

const show = (v: JsonValue | null | undefined) => (v === undefined ? '(unset)' : JSON.stringify(v, null, 2))
const brief = (v: JsonValue | null) => truncate(v === null ? '-' : JSON.stringify(v), 60)

function versionsTable(versions: ConfigVersion[]): string {
  if (versions.length === 0) return 'No changes recorded.'
  return table(
    ['VERSION', 'WHEN', 'BY', 'WHAT', 'PATH', 'BEFORE', 'AFTER', 'NOTE'],
    versions.map((v) => [v.id, v.changedAt.toISOString(), v.changedBy, v.scope, v.path ?? '-', brief(v.before), brief(v.after), v.note ?? '']),
  )
}

function changed(v: ConfigVersion | null, what: string): string {
  return v === null ? `Nothing to change: ${what} was not set.` : `Version ${v.id}: ${what} ${v.path ? `at ${v.path} ` : ''}changed.`
}

function ruleText(r: Flag['rules'][number]): string {
  const parts: string[] = []
  if (r.tenants) parts.push(`tenants ${r.tenants.join(',')}`)
  if (r.plans) parts.push(`plans ${r.plans.join(',')}`)
  if (r.regions) parts.push(`regions ${r.regions.join(',')}`)
  if (r.tiers) parts.push(`tiers ${r.tiers.join(',')}`)
  if (r.users) parts.push(`users ${r.users.join(',')}`)
  if (r.attributes) parts.push(Object.entries(r.attributes).map(([k, v]) => `${k} in ${JSON.stringify(v)}`).join(' and '))
  if (r.percentage !== undefined) parts.push(`${r.percentage}%`)
  return `${parts.join(' and ') || 'everyone'} → ${r.variant}`
}

function flagsTable(flags: Flag[]): string {
  if (flags.length === 0) return 'No feature flags.'
  return table(
    ['KEY', 'ENABLED', 'DEFAULT', 'VARIANTS', 'RULES'],
    flags.map((f) => [f.key, f.enabled ? 'yes' : 'no', f.defaultVariant, truncate(JSON.stringify(f.variants), 40), f.rules.map(ruleText).join('; ') || '-']),
  )
}

function domainsTable(domains: CustomDomain[]): string {
  if (domains.length === 0) return 'No custom domains.'
  return table(['DOMAIN', 'TENANT', 'STATUS', 'ADDED', 'VERIFIED'], domains.map((d) => [d.domain, d.slug, d.status, d.createdAt.toISOString(), d.verifiedAt?.toISOString() ?? '-']))
}

function howToVerify(d: CustomDomain): string {
  if (d.status === 'verified' || !d.instructions) return `Domain '${d.domain}' of '${d.slug}' is verified: it resolves to the tenant.`
  const i = d.instructions
  return [
    `Domain '${d.domain}' of '${d.slug}' is pending: it resolves once verified. Publish either`,
    `  DNS:  TXT ${i.txtName}  "${i.txtValue}"`,
    `  HTTP: ${i.httpUrl}  answering 200 with the body ${i.httpBody}`,
    `then run: tenantry domains verify ${d.domain}`,
  ].join('\n')
}

/**
 * `tenantry config`, `tenantry plans`, `tenantry flags` and `tenantry domains` (issue 12): thin
 * over the library's `tenantry.config`, `tenantry.flags` and `tenantry.domains`, which the admin
 * API calls too.
 */
export function registerConfigCommands(program: Command, kit: CommandKit): void {
  const { withConnection, withTenantry, print, startedBy } = kit

  // ---- config ---------------------------------------------------------------------------------
  const config = program.command('config').description("a tenant's configuration: defaults ← plan ← tenant (docs/config.md)")

  withConnection(
    config.command('get <slug> [path]').description('the merged configuration, or the value at a JSON pointer / dotted path')
      .option('--tenant-layer', "only the tenant's own layer (what set/unset change)").option('--json', 'print JSON only'),
  ).action(async (slug: string, path: string | undefined, opts: ConnectionFlags & { tenantLayer?: boolean; json?: boolean }) => {
    await withTenantry(opts, async (t) => {
      const v = await t.config.get(slug, path, { layer: opts.tenantLayer ? 'tenant' : 'merged' })
      print(opts.json, v ?? null, () => show(v))
    })
  })

  withConnection(
    config.command('set <slug> <path> <value>').description('validate and set a value of the tenant\'s layer (JSON, else text); versioned')
      .option('--string', 'take the value as text even if it parses as JSON').option('--json', 'print the version as JSON'),
  ).action(async (slug: string, path: string, value: string, opts: ConnectionFlags & { string?: boolean; json?: boolean }) => {
    await withTenantry(opts, async (t) => {
      const v = await t.config.set(slug, path, valueOf(value, opts.string), { by: startedBy() })
      print(opts.json, v, () => changed(v, `'${slug}'`))
    })
  })

  withConnection(
    config.command('unset <slug> <path>').description("remove a value from the tenant's layer (the plan's or default shows again)").option('--json', 'print the version as JSON'),
  ).action(async (slug: string, path: string, opts: ConnectionFlags & { json?: boolean }) => {
    await withTenantry(opts, async (t) => {
      const v = await t.config.unset(slug, path, { by: startedBy() })
      print(opts.json, v, () => changed(v, `'${slug}'`))
    })
  })

  withConnection(
    config.command('history <slug>').description("the tenant's configuration and plan changes, newest first")
      .option('--limit <n>', 'most versions shown', limitArg, 50).option('--json', 'print JSON'),
  ).action(async (slug: string, opts: ConnectionFlags & { limit: number; json?: boolean }) => {
    await withTenantry(opts, async (t) => {
      const versions = await t.config.history(slug, { limit: opts.limit })
      print(opts.json, versions, () => versionsTable(versions))
    })
  })

  withConnection(
    config.command('rollback <slug> <version>').description('undo that change and every later one (configuration and plan as they were before it)', ).option('--json', 'print JSON'),
  ).action(async (slug: string, version: string, opts: ConnectionFlags & { json?: boolean }) => {
    const id = versionArg(version)
    await withTenantry(opts, async (t) => {
      const out = await t.config.rollback(slug, id, { by: startedBy() })
      print(opts.json, out, () => (out.length === 0 ? `'${slug}' is already as it was before version ${id}.` : `Rolled '${slug}' back to before version ${id}: ${out.map((v) => `version ${v.id}`).join(', ')} recorded.`))
    })
  })

  // ---- plans ----------------------------------------------------------------------------------
  const plans = program.command('plans').description("plans: their configuration layer and limits, and tenants' plans")

  withConnection(plans.command('list').description('plans and their settings').option('--json', 'print JSON')).action(async (opts: ConnectionFlags & { json?: boolean }) => {
    await withTenantry(opts, async (t) => {
      const all = await t.config.plans.list()
      print(opts.json, all, () => table(['PLAN', 'SETTINGS'], all.map((p) => [p.name, truncate(JSON.stringify(p.settings), 100)])))
    })
  })

  withConnection(plans.command('create <name> [settings]').description('create a plan, optionally with its settings as JSON')).action(
    async (name: string, settings: string | undefined, opts: ConnectionFlags) => {
      const parsed = settings === undefined ? {} : valueOf(settings, false)
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new TenantryError('CONFIG_INVALID', 'A plan\'s settings must be a JSON object, e.g. \'{"limits":{"concurrency":4}}\'.', { status: 400 })
      await withTenantry(opts, async (t) => {
        await t.config.plans.create(name, parsed as Record<string, unknown>, { by: startedBy() })
        console.log(`Created plan '${name}'.`)
      })
    },
  )

  withConnection(plans.command('assign <slug> <plan>').description('put a tenant on a plan: its configuration, flags and limits follow in every process within a second').option('--json', 'print JSON')).action(
    async (slug: string, plan: string, opts: ConnectionFlags & { json?: boolean }) => {
      await withTenantry(opts, async (t) => {
        const tenant = await t.config.changePlan(slug, plan, { by: startedBy() })
        print(opts.json, { slug: tenant.slug, plan: tenant.plan }, () => `'${tenant.slug}' is on plan '${tenant.plan}'.`)
      })
    },
  )

  const planConfig = plans.command('config').description("a plan's configuration layer (between the defaults and its tenants')")
  withConnection(planConfig.command('get <plan> [path]').description("the plan's layer, or the value at a path").option('--json', 'print JSON only')).action(
    async (plan: string, path: string | undefined, opts: ConnectionFlags & { json?: boolean }) => {
      await withTenantry(opts, async (t) => {
        const v = await t.config.plans.get(plan, path)
        print(opts.json, v ?? null, () => show(v))
      })
    },
  )
  withConnection(planConfig.command('set <plan> <path> <value>').description('validate (against every tenant on the plan) and set; versioned').option('--string', 'take the value as text').option('--json', 'print JSON')).action(
    async (plan: string, path: string, value: string, opts: ConnectionFlags & { string?: boolean; json?: boolean }) => {
      await withTenantry(opts, async (t) => {
        const v = await t.config.plans.set(plan, path, valueOf(value, opts.string), { by: startedBy() })
        print(opts.json, v, () => changed(v, `plan '${plan}'`))
      })
    },
  )
  withConnection(planConfig.command('unset <plan> <path>').description("remove a value of the plan's layer").option('--json', 'print JSON')).action(
    async (plan: string, path: string, opts: ConnectionFlags & { json?: boolean }) => {
      await withTenantry(opts, async (t) => {
        const v = await t.config.plans.unset(plan, path, { by: startedBy() })
        print(opts.json, v, () => changed(v, `plan '${plan}'`))
      })
    },
  )
  withConnection(planConfig.command('history <plan>').description("the plan's changes, newest first").option('--limit <n>', 'most versions shown', limitArg, 50).option('--json', 'print JSON')).action(
    async (plan: string, opts: ConnectionFlags & { limit: number; json?: boolean }) => {
      await withTenantry(opts, async (t) => {
        const versions = await t.config.plans.history(plan, { limit: opts.limit })
        print(opts.json, versions, () => versionsTable(versions))
      })
    },
  )
  withConnection(planConfig.command('rollback <plan> <version>').description('undo that change of the plan and every later one').option('--json', 'print JSON')).action(
    async (plan: string, version: string, opts: ConnectionFlags & { json?: boolean }) => {
      const id = versionArg(version)
      await withTenantry(opts, async (t) => {
        const v = await t.config.plans.rollback(plan, id, { by: startedBy() })
        print(opts.json, v, () => (v === null ? `Plan '${plan}' is already as it was before version ${id}.` : `Rolled plan '${plan}' back to before version ${id} (version ${v.id}).`))
      })
    },
  )

  // ---- flags ----------------------------------------------------------------------------------
  const flags = program.command('flags').description('feature flags: variants, rules, percentage rollouts (docs/flags.md)')

  withConnection(flags.command('list').description('every flag with its rules').option('--json', 'print JSON')).action(async (opts: ConnectionFlags & { json?: boolean }) => {
    await withTenantry(opts, async (t) => {
      const all = t.flags.list()
      print(opts.json, all, () => flagsTable(all))
    })
  })

  withConnection(
    flags.command('set <key> [definition]').description('create or replace a flag from JSON: {"variants":{…},"defaultVariant":"…","rules":[…]} (default: an on/off flag, off)')
      .option('--file <path>', 'read the definition from a JSON file')
      .option('--enable', 'enabled (the default)').option('--disable', 'every evaluation gets the default variant').option('--json', 'print JSON'),
  ).action(async (key: string, definition: string | undefined, opts: ConnectionFlags & { file?: string; enable?: boolean; disable?: boolean; json?: boolean }) => {
    const text = opts.file !== undefined ? readFileSync(opts.file, 'utf8') : definition ?? '{}'
    let def: Record<string, unknown>
    try {
      def = JSON.parse(text) as Record<string, unknown>
    } catch (err) {
      throw new TenantryError('VALIDATION_FAILED', `The flag definition is not JSON: ${(err as Error).message}.`)
    }
    if (typeof def !== 'object' || def === null || Array.isArray(def)) throw new TenantryError('VALIDATION_FAILED', 'The flag definition must be a JSON object.')
    if (opts.enable && opts.disable) throw new TenantryError('VALIDATION_FAILED', 'Give --enable or --disable, not both.')
    await withTenantry(opts, async (t) => {
      const flag = await t.flags.set({ ...def, key, ...(opts.disable ? { enabled: false } : opts.enable ? { enabled: true } : {}) } as never, { by: startedBy() })
      print(opts.json, flag, () => `Flag '${flag.key}' saved:\n${flagsTable([flag])}`)
    })
  })

  withConnection(
    flags.command('rollout <key> <percent>').description('serve a variant to a stable percentage of tenants (10 → 20 keeps the first 10 %)')
      .option('--variant <name>', 'the variant rolled out (default: the rollout rule\'s, else "on")').option('--json', 'print JSON'),
  ).action(async (key: string, percent: string, opts: ConnectionFlags & { variant?: string; json?: boolean }) => {
    const pct = percentArg(percent)
    await withTenantry(opts, async (t) => {
      const flag = await t.flags.rollout(key, pct, { by: startedBy(), variant: opts.variant })
      print(opts.json, flag, () => `Flag '${flag.key}' rolled out to ${pct}% of tenants.\n${flagsTable([flag])}`)
    })
  })

  withConnection(flags.command('remove <key>').description('delete a flag (its history stays)')).action(async (key: string, opts: ConnectionFlags) => {
    await withTenantry(opts, async (t) => {
      await t.flags.remove(key, { by: startedBy() })
      console.log(`Removed flag '${key}'.`)
    })
  })

  withConnection(flags.command('history <key>').description("the flag's changes, newest first").option('--limit <n>', 'most versions shown', limitArg, 50).option('--json', 'print JSON')).action(
    async (key: string, opts: ConnectionFlags & { limit: number; json?: boolean }) => {
      await withTenantry(opts, async (t) => {
        const versions = await t.flags.history(key, { limit: opts.limit })
        print(opts.json, versions, () => versionsTable(versions))
      })
    },
  )

  withConnection(flags.command('rollback <key> <version>').description('undo that change of the flag and every later one')).action(
    async (key: string, version: string, opts: ConnectionFlags) => {
      const id = versionArg(version)
      await withTenantry(opts, async (t) => {
        const flag = await t.flags.rollback(key, id, { by: startedBy() })
        console.log(flag === null ? `Flag '${key}' did not exist before version ${id}: removed.` : `Flag '${key}' is back to before version ${id}.`)
      })
    },
  )

  withConnection(
    flags.command('eval <key> <slug>').description('what a tenant (and optionally a user) gets, and why').option('--user <id>', 'the evaluation context\'s userId').option('--json', 'print JSON'),
  ).action(async (key: string, slug: string, opts: ConnectionFlags & { user?: string; json?: boolean }) => {
    await withTenantry(opts, async (t) => {
      const tenant = await t.findTenant(slug)
      if (!tenant) throw new TenantryError('TENANT_NOT_FOUND', `No tenant has the slug or id '${slug}'.`)
      const e = t.flags.evaluate(key, { tenant, ...(opts.user ? { userId: opts.user } : {}) })
      if (e === null) throw new TenantryError('FLAG_NOT_FOUND', `No feature flag has the key '${key}'.`)
      print(opts.json, e, () => `${key} for '${tenant.slug}'${opts.user ? ` (user ${opts.user})` : ''}: ${JSON.stringify(e.value)} (variant ${e.variant}, ${e.reason}${e.rule === undefined ? '' : `, rule ${e.rule}${e.ruleName ? ` '${e.ruleName}'` : ''}`})`)
    })
  })

  // ---- domains --------------------------------------------------------------------------------
  const domains = program.command('domains').description('custom domains of tenants: pending until verified (docs/domains.md)')

  withConnection(domains.command('add <slug> <domain>').description('claim a domain for a tenant: pending, with a verification token').option('--json', 'print JSON')).action(
    async (slug: string, domain: string, opts: ConnectionFlags & { json?: boolean }) => {
      await withTenantry(opts, async (t) => {
        const d = await t.domains.add(slug, domain, { actor: startedBy() })
        print(opts.json, d, () => howToVerify(d))
      })
    },
  )

  withConnection(
    domains.command('verify <domain>').description('look for the token (DNS TXT, then HTTP) and let the domain resolve')
      .addOption(new Option('--method <method>', 'where to look').choices(['dns', 'http', 'any']).default('any')).option('--json', 'print JSON'),
  ).action(async (domain: string, opts: ConnectionFlags & { method: 'dns' | 'http' | 'any'; json?: boolean }) => {
    await withTenantry(opts, async (t) => {
      const d = await t.domains.verify(domain, { method: opts.method }, { actor: startedBy() })
      print(opts.json, d, () => howToVerify(d))
    })
  })

  withConnection(domains.command('list [slug]').description('domains of a tenant, or of all').option('--json', 'print JSON')).action(
    async (slug: string | undefined, opts: ConnectionFlags & { json?: boolean }) => {
      await withTenantry(opts, async (t) => {
        const all = await t.domains.list(slug)
        print(opts.json, all, () => domainsTable(all))
      })
    },
  )

  withConnection(domains.command('remove <domain>').description('stop serving a domain (every process forgets it within a second)')).action(async (domain: string, opts: ConnectionFlags) => {
    await withTenantry(opts, async (t) => {
      const removed = await t.domains.remove(domain, { actor: startedBy() })
      if (!removed) throw new TenantryError('NOT_FOUND', `No tenant has the domain '${domain}'.`)
      console.log(`Removed domain '${domain}'.`)
    })
  })
}
