import { Ajv } from 'ajv'
import type { Catalog } from '../catalog/catalog.ts'
import { currentScope } from '../context/context.ts'
import { TenantryError } from '../core/errors.ts'
import { TIERS, type Tenant, type Tier } from '../core/types.ts'
import { printable } from '../core/validation.ts'
import type { AdminQueryable } from '../data/driver.ts'
import type { JsonValue } from './merge.ts'
import { liveReload } from './live-reload.ts'
import * as sql from './sql.ts'
import { asJson, record, type ChangeOptions, type ConfigVersion, type TenantConfigStore } from './tenant-config.ts'

/**
 * One targeting rule of a flag. Every condition given must hold (an absent one holds for all);
 * the first rule that holds picks the variant.
 */
export interface FlagRule {
  /** Shown in `flags list` and in the evaluation's metadata. */
  name?: string
  /** Tenant slugs or ids (an allow or deny list, by the variant it picks). */
  tenants?: string[]
  plans?: string[]
  regions?: string[]
  tiers?: Tier[]
  /** User ids, from the evaluation context's `userId`. */
  users?: string[]
  /** Other attributes of the evaluation context: `{ country: ['DE', 'FR'] }`. */
  attributes?: Record<string, JsonValue[]>
  /**
   * A stable rollout: the tenants whose bucket (a hash of the flag key and tenant id, 0–99.99)
   * is below this percentage. Raising it keeps every tenant it already had.
   */
  percentage?: number
  /** The variant this rule serves. */
  variant: string
}

/** A feature flag: variants of any JSON type, a default, and rules tried in order. */
export interface FlagDefinition {
  key: string
  description?: string
  /** False: every evaluation gets the default variant (reason `DISABLED`). Default true. */
  enabled?: boolean
  /** Variant name → value. Default `{ on: true, off: false }`. */
  variants?: Record<string, JsonValue>
  /** Default `off` when the variants are the default ones. */
  defaultVariant?: string
  rules?: FlagRule[]
}

/** A stored flag: every field filled in. */
export type Flag = Required<Pick<FlagDefinition, 'key' | 'enabled' | 'variants' | 'defaultVariant' | 'rules'>> & { description?: string }

/** What a flag is evaluated for; filled from the current tenant where not given. */
export interface FlagContext {
  /** The tenant (its id, slug, plan, tier and region are used). */
  tenant?: Tenant
  tenantId?: string
  slug?: string
  plan?: string
  tier?: string
  region?: string | null
  userId?: string
  [attribute: string]: unknown
}

/** OpenFeature's reasons, as Tenantry gives them. */
export type FlagReason = 'TARGETING_MATCH' | 'SPLIT' | 'DEFAULT' | 'DISABLED'

export interface FlagEvaluation {
  key: string
  value: JsonValue
  variant: string
  reason: FlagReason
  /** Index of the rule that matched (absent for DEFAULT and DISABLED). */
  rule?: number
  ruleName?: string
}

const KEY = /^[a-z0-9][a-z0-9._-]{0,99}$/
const BOOLEAN_VARIANTS: Record<string, JsonValue> = Object.freeze({ on: true, off: false }) as Record<string, JsonValue>

const LIST = { type: 'array', items: { type: 'string', minLength: 1, maxLength: 200 }, maxItems: 10_000 } as const
const FLAG_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['key'],
  properties: {
    key: { type: 'string', pattern: KEY.source },
    description: { type: 'string', maxLength: 500 },
    enabled: { type: 'boolean' },
    variants: { type: 'object', minProperties: 1, maxProperties: 100, propertyNames: { pattern: '^[A-Za-z0-9._-]{1,64}$' } },
    defaultVariant: { type: 'string' },
    rules: {
      type: 'array',
      maxItems: 200,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['variant'],
        properties: {
          name: { type: 'string', maxLength: 100 },
          tenants: LIST, plans: LIST, regions: LIST, users: LIST,
          tiers: { type: 'array', items: { enum: [...TIERS] } },
          attributes: { type: 'object', additionalProperties: { type: 'array', maxItems: 10_000 } },
          percentage: { type: 'number', minimum: 0, maximum: 100 },
          variant: { type: 'string' },
        },
      },
    },
  },
} as const

const validateShape = new Ajv({ allErrors: false, strict: false }).compile(FLAG_SCHEMA)

/**
 * Check a flag definition and fill in its defaults; `VALIDATION_FAILED` naming the JSON pointer
 * of the first problem.
 *
 * @example
 * ```ts
 * parseFlag({ key: 'new-editor', rules: [{ plans: ['pro'], variant: 'on' }, { percentage: 10, variant: 'on' }] })
 * ```
 */
export function parseFlag(input: unknown): Flag {
  const def = asJson(input, 'flag') as unknown as FlagDefinition
  if (!validateShape(def)) {
    const e = validateShape.errors![0]
    throw new TenantryError('VALIDATION_FAILED', `Flag definition is invalid at '${e.instancePath || '/'}': ${e.message} (rule '${e.keyword}').`, {
      details: { pointer: e.instancePath, rule: e.keyword },
    })
  }
  const variants = def.variants ?? BOOLEAN_VARIANTS
  const defaultVariant = def.defaultVariant ?? (def.variants === undefined ? 'off' : '')
  const known = Object.keys(variants)
  const unknown = (v: string, where: string) =>
    new TenantryError('VALIDATION_FAILED', `Flag '${def.key}': ${where} names variant '${printable(v)}', which is not one of ${known.join(', ')}.`, { details: { pointer: where, variant: printable(v) } })
  if (!Object.hasOwn(variants, defaultVariant)) throw unknown(defaultVariant, '/defaultVariant')
  const rules = def.rules ?? []
  rules.forEach((r, i) => { if (!Object.hasOwn(variants, r.variant)) throw unknown(r.variant, `/rules/${i}/variant`) })
  return {
    key: def.key,
    ...(def.description === undefined ? {} : { description: def.description }),
    enabled: def.enabled ?? true,
    variants: { ...variants },
    defaultVariant,
    rules,
  }
}

interface CompiledRule {
  index: number
  name?: string
  tenants?: Set<string>
  plans?: Set<string>
  regions?: Set<string>
  tiers?: Set<string>
  users?: Set<string>
  attributes?: [string, Set<unknown>][]
  /** Buckets below this (0–10000) are in. */
  cutoff?: number
  variant: string
  value: JsonValue
}

interface CompiledFlag {
  flag: Flag
  rules: CompiledRule[]
  defaultValue: JsonValue
  /** key + NUL, the prefix of every bucket hash. */
  hashPrefix: string
  /** Rollout buckets by tenant id, so a tenant's hash is computed once per flag definition. */
  buckets: Map<string, number>
}

/** Bucket cache entries per flag before it starts over: ids come from the catalog, but also from evaluation contexts. */
const MAX_BUCKETS = 10_000

const set = <T>(xs: readonly T[] | undefined): Set<T> | undefined => (xs === undefined ? undefined : new Set(xs))

function compile(flag: Flag): CompiledFlag {
  return {
    flag,
    defaultValue: flag.variants[flag.defaultVariant],
    hashPrefix: `${flag.key}\u0000`,
    buckets: new Map(),
    rules: flag.rules.map((r, index) => ({
      index,
      name: r.name,
      tenants: set(r.tenants), plans: set(r.plans), regions: set(r.regions), tiers: set(r.tiers), users: set(r.users),
      attributes: r.attributes && Object.entries(r.attributes).map(([k, v]) => [k, new Set(v)] as [string, Set<unknown>]),
      cutoff: r.percentage === undefined ? undefined : Math.round(r.percentage * 100),
      variant: r.variant,
      value: flag.variants[r.variant],
    })),
  }
}

/**
 * The rollout bucket (0–9999) of a tenant for a flag: FNV-1a over `key NUL tenantId`, mixed by
 * murmur3's finaliser. Stable across processes and releases; independent between flags.
 */
export function rolloutBucket(flagKey: string, tenantId: string): number {
  return bucketOf(`${flagKey}\u0000`, tenantId)
}

function bucketOf(prefix: string, tenantId: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < prefix.length; i++) h = Math.imul(h ^ prefix.charCodeAt(i), 0x01000193)
  for (let i = 0; i < tenantId.length; i++) h = Math.imul(h ^ tenantId.charCodeAt(i), 0x01000193)
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return (h >>> 0) % 10_000
}

interface Subject {
  tenantId: string | undefined
  slug: string | undefined
  plan: string | undefined
  tier: string | undefined
  region: string | null | undefined
  userId: string | undefined
  attrs: Record<string, unknown> | undefined
}

function bucketFor(c: CompiledFlag, tenantId: string): number {
  let b = c.buckets.get(tenantId)
  if (b === undefined) {
    if (c.buckets.size >= MAX_BUCKETS) c.buckets.clear()
    c.buckets.set(tenantId, (b = bucketOf(c.hashPrefix, tenantId)))
  }
  return b
}

function matches(r: CompiledRule, s: Subject, c: CompiledFlag): boolean {
  if (r.tenants && !((s.tenantId !== undefined && r.tenants.has(s.tenantId)) || (s.slug !== undefined && r.tenants.has(s.slug)))) return false
  if (r.plans && (s.plan === undefined || !r.plans.has(s.plan))) return false
  if (r.regions && (s.region == null || !r.regions.has(s.region))) return false
  if (r.tiers && (s.tier === undefined || !r.tiers.has(s.tier))) return false
  if (r.users && (s.userId === undefined || !r.users.has(s.userId))) return false
  if (r.attributes) {
    for (const [name, values] of r.attributes) if (!s.attrs || !values.has(s.attrs[name])) return false
  }
  if (r.cutoff !== undefined && (s.tenantId === undefined || bucketFor(c, s.tenantId) >= r.cutoff)) return false
  return true
}

/**
 * Feature flags (issue 12): definitions in the catalog, evaluated in memory; every process sees a
 * change within a second (the catalog's notifications). Evaluation is synchronous.
 */
export class FlagStore {
  private flags = new Map<string, CompiledFlag>()
  /** Re-read every flag (after a notification); coalesces overlapping calls. */
  readonly reload: () => Promise<void>
  private readonly audit: TenantConfigStore['audit']

  constructor(
    private readonly catalog: Catalog,
    private readonly admin: AdminQueryable,
    private readonly config: TenantConfigStore,
    private readonly onError: (error: unknown, context: string) => void,
  ) {
    this.audit = config.audit
    this.reload = liveReload(catalog, 'flag:', () => this.readAll(), (e) => onError(e, 'reloading feature flags'))
  }

  async init(): Promise<void> {
    await this.reload()
  }

  private async readAll(): Promise<void> {
    const res = await this.admin.query<{ key: string; definition: unknown }>(sql.allFlags().text, [])
    const next = new Map<string, CompiledFlag>()
    for (const row of res.rows) {
      try {
        next.set(row.key, compile(parseFlag(typeof row.definition === 'string' ? JSON.parse(row.definition) : row.definition)))
      } catch (error) {
        // Written by an older release or by hand: served as before rather than dropped.
        this.onError(error, `feature flag '${row.key}'`)
        const before = this.flags.get(row.key)
        if (before) next.set(row.key, before)
      }
    }
    this.flags = next
  }

  /** Every flag of this process's view (as of the last notification), by key. */
  list(): Flag[] {
    return [...this.flags.values()].map((c) => c.flag).sort((a, b) => a.key.localeCompare(b.key))
  }

  get(key: string): Flag | null {
    return this.flags.get(key)?.flag ?? null
  }

  /** Create or replace a flag; recorded as a version. */
  async set(definition: FlagDefinition, opts: ChangeOptions = {}): Promise<Flag> {
    const flag = parseFlag(definition)
    await this.write(flag.key, () => flag, opts, null)
    return flag
  }

  /**
   * Set the flag's rollout percentage (the last rule with a percentage and no other condition, made
   * if missing, serving `variant`, default `on`). 10 → 20 keeps the first 10 %'s tenants.
   */
  async rollout(key: string, percentage: number, opts: ChangeOptions & { variant?: string } = {}): Promise<Flag> {
    if (typeof percentage !== 'number' || !Number.isFinite(percentage) || percentage < 0 || percentage > 100) {
      throw new TenantryError('VALIDATION_FAILED', `A rollout percentage is a number from 0 to 100; got ${printable(String(percentage))}.`, { details: { percentage: printable(String(percentage)) } })
    }
    return this.write(key, (current) => {
      if (!current) throw notFound(key)
      const rules = [...current.rules]
      let i = rules.length - 1
      while (i >= 0 && !isPlainRollout(rules[i])) i--
      const variant = opts.variant ?? (i >= 0 ? rules[i].variant : 'on')
      if (i >= 0) rules[i] = { ...rules[i], percentage, variant }
      else rules.push({ name: 'rollout', percentage, variant })
      return parseFlag({ ...current, rules })
    }, opts, `rollout ${percentage}%`)
  }

  async remove(key: string, opts: ChangeOptions = {}): Promise<void> {
    await this.write(key, (current) => {
      if (!current) throw notFound(key)
      return null
    }, opts, 'removed')
  }

  async history(key: string, opts: { limit?: number } = {}): Promise<ConfigVersion[]> {
    return this.config.versions(`flag:${key}`, opts.limit)
  }

  /** Undo change `versionId` of the flag and every later one. */
  async rollback(key: string, versionId: number, opts: ChangeOptions = {}): Promise<Flag | null> {
    let back: Flag | null = null
    await this.catalog.change(`flag:${key}`, async (tx) => {
      const undone = await this.config.undoable(tx, `flag:${key}`, versionId, `flag '${key}'`)
      const before = undone[0].before
      back = before === null ? null : parseFlag(before)
      await this.store(tx, key, back, opts, `rollback to before version ${versionId}`)
    })
    this.local(key, back)
    return back
  }

  private async write(key: string, edit: (current: Flag | null) => Flag | null, opts: ChangeOptions, note: string | null): Promise<Flag> {
    if (typeof key !== 'string' || !KEY.test(key)) {
      throw new TenantryError('VALIDATION_FAILED', `Flag key '${printable(String(key))}' must be lowercase letters, digits, '.', '_' and '-' (at most 100).`, { details: { key: printable(String(key)) } })
    }
    let next: Flag | null = null
    await this.catalog.change(`flag:${key}`, async (tx) => {
      next = edit(await this.current(tx, key))
      await this.store(tx, key, next, opts, note)
    })
    this.local(key, next)
    return next!
  }

  private async current(tx: import('../data/executor.ts').Queryable, key: string): Promise<Flag | null> {
    const res = await tx.query<{ definition: unknown }>(sql.lockFlag(key).text, sql.lockFlag(key).values)
    if (res.rows.length === 0) return null
    const d = res.rows[0].definition
    return parseFlag(typeof d === 'string' ? JSON.parse(d) : d)
  }

  private async store(tx: import('../data/executor.ts').Queryable, key: string, flag: Flag | null, opts: ChangeOptions, note: string | null): Promise<void> {
    const before = await this.current(tx, key)
    const by = opts.by ?? 'app'
    const s = flag === null ? sql.deleteFlag(key) : sql.upsertFlag(key, flag, by)
    await tx.query(s.text, s.values)
    await record(tx, { scope: 'flag', subject: `flag:${key}`, label: key, path: null, before, after: flag, by, note }, this.audit)
  }

  private local(key: string, flag: Flag | null): void {
    const next = new Map(this.flags)
    if (flag === null) next.delete(key)
    else next.set(key, compile(flag))
    this.flags = next
  }

  /**
   * Evaluate `key` for the current tenant (or `context.tenant`), with the context's user and
   * attributes. `null` when no flag has the key.
   */
  evaluate(key: string, context?: FlagContext): FlagEvaluation | null {
    const c = this.flags.get(key)
    if (c === undefined) return null
    const flag = c.flag
    if (!flag.enabled) return { key, value: c.defaultValue, variant: flag.defaultVariant, reason: 'DISABLED' }
    const s = subjectOf(context)
    for (const r of c.rules) {
      if (matches(r, s, c)) {
        return { key, value: r.value, variant: r.variant, reason: r.cutoff === undefined ? 'TARGETING_MATCH' : 'SPLIT', rule: r.index, ...(r.name === undefined ? {} : { ruleName: r.name }) }
      }
    }
    return { key, value: c.defaultValue, variant: flag.defaultVariant, reason: 'DEFAULT' }
  }

  /** True when the flag's value for the current tenant is `true`; `FLAG_NOT_FOUND` for an unknown key (a typo must not pass as "off"). */
  isEnabled(key: string, context?: FlagContext): boolean {
    const e = this.evaluate(key, context)
    if (e === null) throw notFound(key)
    return e.value === true
  }
}

function isPlainRollout(r: FlagRule): boolean {
  return r.percentage !== undefined && !r.tenants && !r.plans && !r.regions && !r.tiers && !r.users && !r.attributes
}

function notFound(key: string): TenantryError {
  return new TenantryError('FLAG_NOT_FOUND', `No feature flag has the key '${printable(String(key))}'; create it with 'tenantry flags set ${printable(String(key))}' or tenantry.flags.set().`, { details: { key: printable(String(key)) } })
}

const SUBJECT_KEYS = new Set(['tenant', 'tenantId', 'slug', 'plan', 'tier', 'region', 'userId', 'targetingKey'])

/** The subject of an evaluation: the context's fields, the current tenant's where not given. */
export function subjectOf(context: FlagContext | undefined): Subject {
  const t = context?.tenant ?? currentScope()?.tenant
  if (context === undefined) {
    return { tenantId: t?.id, slug: t?.slug, plan: t?.plan, tier: t?.tier, region: t?.region, userId: undefined, attrs: undefined }
  }
  let attrs: Record<string, unknown> | undefined
  for (const k in context) if (!SUBJECT_KEYS.has(k)) { attrs = context; break }
  return {
    tenantId: context.tenantId ?? t?.id,
    slug: context.slug ?? t?.slug,
    plan: context.plan ?? t?.plan,
    tier: context.tier ?? t?.tier,
    region: context.region !== undefined ? context.region : t?.region,
    userId: typeof context.userId === 'string' ? context.userId : undefined,
    attrs,
  }
}
