import type { FastifyRequest } from 'fastify'
import type { FlagDefinition } from '../../config/index.ts'
import { TenantryError } from '../../core/errors.ts'
import type { Tenant } from '../../core/types.ts'
import { tenantJson } from '../../cli/format.ts'
import type { AdminContext, AdminRoutes } from '../context.ts'
import { SERVER_PATTERN, errors, slugParam, tenantSchema } from '../schemas.ts'

// Per-tenant configuration, plans' layers, feature flags and branding (issue 12) in the admin API:
// thin over tenantry.config / tenantry.flags, which `tenantry config|plans|flags` call too. Every
// write records the admin actor in the configuration history ({ by }) and appends to the audit log.
// Roles: viewer reads; operator changes a tenant (its layer, branding, plan) and flags; admin
// changes a plan's layer (every tenant on the plan, limits included).

const CONFIG = ['config']
const FLAGS = ['flags']

const PLAN_PATTERN = SERVER_PATTERN // lowercase letters, digits, - and _, starting with a letter
const FLAG_KEY_PATTERN = '^[a-z0-9][a-z0-9._-]{0,99}$'
const path = { type: 'string', minLength: 1, maxLength: 500, description: 'a JSON pointer (/branding/primaryColor) or dots (branding.primaryColor)' } as const
const anyJson = { description: 'any JSON value' } as const

export const configVersionSchema = {
  type: 'object',
  properties: {
    id: { type: 'integer', description: 'the version, for rollback' },
    scope: { type: 'string', enum: ['tenant', 'plan', 'flag', 'assignment'] },
    subject: { type: 'string' },
    label: { type: 'string' },
    path: { type: ['string', 'null'] },
    before: anyJson,
    after: anyJson,
    changedBy: { type: 'string' },
    changedAt: { type: 'string', format: 'date-time' },
    note: { type: ['string', 'null'] },
  },
} as const
const versions = { type: 'array', items: configVersionSchema } as const
const maybeVersion = { type: 'object', properties: { version: { anyOf: [configVersionSchema, { type: 'null' }], description: 'null when nothing changed' } } } as const

const flagSchema = {
  type: 'object',
  properties: {
    key: { type: 'string' },
    description: { type: 'string' },
    enabled: { type: 'boolean' },
    variants: { type: 'object', additionalProperties: true },
    defaultVariant: { type: 'string' },
    rules: { type: 'array', items: { type: 'object', additionalProperties: true } },
  },
} as const
const evaluationSchema = {
  type: 'object',
  properties: {
    key: { type: 'string' }, value: anyJson, variant: { type: 'string' },
    reason: { type: 'string', enum: ['TARGETING_MATCH', 'SPLIT', 'DEFAULT', 'DISABLED'] },
    rule: { type: 'integer' }, ruleName: { type: 'string' },
  },
} as const

const obj = <P extends Record<string, unknown>>(properties: P, required: (keyof P & string)[] = []) =>
  ({ type: 'object', additionalProperties: false, required, properties }) as const
const planParam = obj({ plan: { type: 'string', pattern: PLAN_PATTERN, description: 'plan name' } }, ['plan'])
const keyParam = obj({ key: { type: 'string', pattern: FLAG_KEY_PATTERN, description: 'flag key' } }, ['key'])
const getQuery = obj({ path, layer: { type: 'string', enum: ['merged', 'tenant'], default: 'merged', description: "merged (defaults ← plan ← tenant) or the tenant's own layer" } })
const pathQuery = obj({ path })
const requiredPath = obj({ path }, ['path'])
const historyQuery = obj({ limit: { type: 'integer', minimum: 1, maximum: 1000, default: 50 } })
const setBody = obj({ path, value: anyJson }, ['path', 'value'])
const rollbackBody = obj({ version: { type: 'integer', minimum: 1, description: 'undo this version and every later one' } }, ['version'])
const brandingBody = {
  type: 'object',
  description: "the tenant's own branding layer (checked against the branding schema: colours #rgb/#rrggbb, https or /path URLs)",
  additionalProperties: true,
} as const
const flagBody = {
  type: 'object',
  additionalProperties: false,
  properties: {
    description: { type: 'string', maxLength: 500 },
    enabled: { type: 'boolean' },
    variants: { type: 'object', additionalProperties: true },
    defaultVariant: { type: 'string' },
    rules: { type: 'array', items: { type: 'object', additionalProperties: true } },
  },
} as const
const rolloutBody = obj({ percentage: { type: 'number', minimum: 0, maximum: 100 }, variant: { type: 'string', minLength: 1, maxLength: 100 } }, ['percentage'])
const evalQuery = obj({ tenant: slugParam.properties.slug, user: { type: 'string', minLength: 1, maxLength: 200 } }, ['tenant'])

const slugOf = (r: FastifyRequest) => (r.params as { slug: string }).slug
const planOf = (r: FastifyRequest) => (r.params as { plan: string }).plan
const keyOf = (r: FastifyRequest) => (r.params as { key: string }).key

/** A tenant the admin may configure (not deleted), or 404. */
async function liveTenant(ctx: AdminContext, slug: string): Promise<Tenant> {
  const t = await ctx.tenantry.findTenant(slug)
  if (!t || t.status === 'deleted') throw new TenantryError('TENANT_NOT_FOUND', `No tenant has the slug '${slug}'.`)
  return t
}

/** Configuration, plans' layers, branding and feature flags. */
export const configRoutes: AdminRoutes = (app, ctx) => {
  const { tenantry } = ctx
  const by = (request: FastifyRequest) => ({ by: request.admin.actor })
  // Every change below is versioned with the admin actor (`by`) and audited by the library itself,
  // in the change's own transaction (src/config/tenant-config.ts record()): the CLI's changes get
  // the same entries, and the routes add none of their own (one implementation, no double entries).
  /** Run a change of a tenant's configuration, recorded (and audited) with the admin actor. */
  const tenantChange = async <T>(request: FastifyRequest, change: (t: Tenant) => Promise<T>): Promise<T> => {
    const tenant = await liveTenant(ctx, slugOf(request))
    return change(tenant)
  }

  // ---- a tenant's configuration ---------------------------------------------------------------
  app.get('/tenants/:slug/config', {
    schema: { tags: CONFIG, summary: "The tenant's configuration: merged (defaults ← plan ← tenant) or its own layer, whole or at a path", params: slugParam, querystring: getQuery,
      response: { 200: { type: 'object', properties: { slug: { type: 'string' }, plan: { type: 'string' }, layer: { type: 'string' }, path: { type: ['string', 'null'] }, value: anyJson } }, ...errors(404) } },
  }, async function getTenantConfig(request) {
    const q = request.query as { path?: string; layer: 'merged' | 'tenant' }
    const tenant = await liveTenant(ctx, slugOf(request))
    const value = await tenantry.config.get(tenant.id, q.path, { layer: q.layer })
    return { slug: tenant.slug, plan: tenant.plan, layer: q.layer, path: q.path ?? null, value: value ?? null }
  })

  app.put('/tenants/:slug/config', {
    schema: { tags: CONFIG, summary: "Validate and set a value of the tenant's layer; 400 CONFIG_INVALID names the JSON pointer and rule, and stores nothing", params: slugParam, body: setBody, response: { 200: configVersionSchema, ...errors(404) } },
    config: { adminRole: 'operator' },
  }, async function setTenantConfig(request) {
    const b = request.body as { path: string; value: unknown }
    return tenantChange(request, (t) => tenantry.config.set(t.id, b.path, b.value, by(request)))
  })

  app.delete('/tenants/:slug/config', {
    schema: { tags: CONFIG, summary: "Remove a path from the tenant's layer (the plan's or default value shows again)", params: slugParam, querystring: requiredPath, response: { 200: maybeVersion, ...errors(404) } },
    config: { adminRole: 'operator' },
  }, async function unsetTenantConfig(request) {
    const { path: p } = request.query as { path: string }
    const version = await tenantChange(request, (t) => tenantry.config.unset(t.id, p, by(request)))
    return { version }
  })

  app.get('/tenants/:slug/config/history', {
    schema: { tags: CONFIG, summary: "The tenant's configuration and plan changes, newest first", params: slugParam, querystring: historyQuery, response: { 200: versions, ...errors(404) } },
  }, async function tenantConfigHistory(request) {
    const tenant = await liveTenant(ctx, slugOf(request))
    return tenantry.config.history(tenant.id, { limit: (request.query as { limit: number }).limit })
  })

  app.post('/tenants/:slug/config/rollback', {
    schema: { tags: CONFIG, summary: 'Undo a version and every later one of the tenant (its layer and plan as they were before it)', params: slugParam, body: rollbackBody, response: { 200: versions, ...errors(404, 409) } },
    config: { adminRole: 'operator' },
  }, async function rollbackTenantConfig(request) {
    const { version } = request.body as { version: number }
    return tenantChange(request, (t) => tenantry.config.rollback(t.id, version, by(request)))
  })

  app.put('/tenants/:slug/plan', {
    schema: { tags: CONFIG, summary: 'Put the tenant on another plan: its configuration, flags and limits follow in every process within a second', params: slugParam,
      body: obj({ plan: { type: 'string', pattern: PLAN_PATTERN } }, ['plan']), response: { 200: tenantSchema, ...errors(404) } },
    config: { adminRole: 'operator' },
  }, async function assignPlan(request) {
    const { plan } = request.body as { plan: string }
    const before = await liveTenant(ctx, slugOf(request))
    const after = await tenantry.config.changePlan(before.id, plan, by(request))
    return tenantJson(after)
  })

  // ---- branding: the validated `branding` part of the configuration ----------------------------
  app.get('/tenants/:slug/branding', {
    schema: { tags: CONFIG, summary: "The tenant's branding as its pages get it (merged) and its own layer", params: slugParam,
      response: { 200: { type: 'object', properties: { slug: { type: 'string' }, name: { type: 'string' }, merged: { type: 'object', additionalProperties: true }, own: { type: 'object', additionalProperties: true } } }, ...errors(404) } },
  }, async function getBranding(request) {
    const tenant = await liveTenant(ctx, slugOf(request))
    const [merged, own] = await Promise.all([tenantry.config.get(tenant.id, '/branding'), tenantry.config.get(tenant.id, '/branding', { layer: 'tenant' })])
    return { slug: tenant.slug, name: tenant.name, merged: merged ?? {}, own: own ?? {} }
  })

  app.put('/tenants/:slug/branding', {
    schema: { tags: CONFIG, summary: "Replace the tenant's own branding layer (the plan's and defaults' fill what it leaves out); 400 CONFIG_INVALID names the pointer", params: slugParam, body: brandingBody, response: { 200: configVersionSchema, ...errors(404) } },
    config: { adminRole: 'operator' },
  }, async function setBranding(request) {
    return tenantChange(request, (t) => tenantry.config.set(t.id, '/branding', request.body, by(request)))
  })

  // ---- plans' configuration layer ---------------------------------------------------------------
  app.post('/plans', {
    schema: {
      tags: CONFIG, summary: "Create a plan with its first configuration layer (limits under `limits`), validated like any layer",
      body: obj({ name: planParam.properties.plan, settings: { type: 'object', additionalProperties: true, description: 'its configuration layer, e.g. {"limits":{"concurrency":4}}' } }, ['name']),
      response: { 201: { type: 'object', properties: { name: { type: 'string' }, settings: { type: 'object', additionalProperties: true } } }, ...errors(409) },
    },
    config: { adminRole: 'admin' },
  }, async function createPlan(request, reply) {
    const b = request.body as { name: string; settings?: Record<string, unknown> }
    await tenantry.config.plans.create(b.name, b.settings ?? {}, by(request))
    return reply.code(201).send({ name: b.name, settings: (await tenantry.config.plans.get(b.name)) ?? {} })
  })

  app.get('/plans/:plan/config', {
    schema: { tags: CONFIG, summary: "A plan's configuration layer (between the defaults and its tenants'), whole or at a path", params: planParam, querystring: pathQuery,
      response: { 200: { type: 'object', properties: { plan: { type: 'string' }, path: { type: ['string', 'null'] }, value: anyJson } }, ...errors(404) } },
  }, async function getPlanConfig(request) {
    const { path: p } = request.query as { path?: string }
    const value = await tenantry.config.plans.get(planOf(request), p)
    return { plan: planOf(request), path: p ?? null, value: value ?? null }
  })


  app.put('/plans/:plan/config', {
    schema: { tags: CONFIG, summary: "Set a value of the plan's layer, validated against every tenant on the plan", params: planParam, body: setBody, response: { 200: configVersionSchema, ...errors(404) } },
    config: { adminRole: 'admin' },
  }, async function setPlanConfig(request) {
    const b = request.body as { path: string; value: unknown }
    return tenantry.config.plans.set(planOf(request), b.path, b.value, by(request))
  })

  app.delete('/plans/:plan/config', {
    schema: { tags: CONFIG, summary: "Remove a path from the plan's layer", params: planParam, querystring: requiredPath, response: { 200: maybeVersion, ...errors(404) } },
    config: { adminRole: 'admin' },
  }, async function unsetPlanConfig(request) {
    const { path: p } = request.query as { path: string }
    return { version: await tenantry.config.plans.unset(planOf(request), p, by(request)) }
  })

  app.get('/plans/:plan/config/history', {
    schema: { tags: CONFIG, summary: "The plan's changes, newest first", params: planParam, querystring: historyQuery, response: { 200: versions, ...errors(404) } },
  }, async function planConfigHistory(request) {
    return tenantry.config.plans.history(planOf(request), { limit: (request.query as { limit: number }).limit })
  })

  app.post('/plans/:plan/config/rollback', {
    schema: { tags: CONFIG, summary: "Undo a version of the plan's layer and every later one", params: planParam, body: rollbackBody, response: { 200: maybeVersion, ...errors(404, 409) } },
    config: { adminRole: 'admin' },
  }, async function rollbackPlanConfig(request) {
    const { version } = request.body as { version: number }
    return { version: await tenantry.config.plans.rollback(planOf(request), version, by(request)) }
  })

  // ---- feature flags ----------------------------------------------------------------------------
  const mustFlag = (key: string) => {
    const flag = tenantry.flags.get(key)
    if (!flag) throw new TenantryError('FLAG_NOT_FOUND', `No feature flag has the key '${key}'.`, { details: { key } })
    return flag
  }

  app.get('/flags', {
    schema: { tags: FLAGS, summary: 'Every feature flag with its variants and rules (a rollout is a rule with a percentage)', response: { 200: { type: 'array', items: flagSchema }, ...errors() } },
  }, async function listFlags() {
    return tenantry.flags.list()
  })

  app.get('/flags/:key', {
    schema: { tags: FLAGS, summary: 'One feature flag', params: keyParam, response: { 200: flagSchema, ...errors(404) } },
  }, async function getFlag(request) {
    return mustFlag(keyOf(request))
  })

  app.put('/flags/:key', {
    schema: { tags: FLAGS, summary: 'Create or replace a flag (default: an on/off flag, off); 400 names the pointer of a bad definition', params: keyParam, body: flagBody, response: { 200: flagSchema, ...errors() } },
    config: { adminRole: 'operator' },
  }, async function setFlag(request) {
    const def = { ...(request.body as Omit<FlagDefinition, 'key'>), key: keyOf(request) }
    return tenantry.flags.set(def, by(request))
  })

  app.post('/flags/:key/rollout', {
    schema: { tags: FLAGS, summary: 'Serve a variant to a stable percentage of tenants (10 → 20 keeps the first 10 %)', params: keyParam, body: rolloutBody, response: { 200: flagSchema, ...errors(404) } },
    config: { adminRole: 'operator' },
  }, async function rolloutFlag(request) {
    const { percentage, variant } = request.body as { percentage: number; variant?: string }
    return tenantry.flags.rollout(keyOf(request), percentage, { ...by(request), variant })
  })

  app.get('/flags/:key/eval', {
    schema: { tags: FLAGS, summary: 'What a tenant (and optionally a user) gets, and why', params: keyParam, querystring: evalQuery, response: { 200: evaluationSchema, ...errors(404) } },
  }, async function evalFlag(request) {
    const q = request.query as { tenant: string; user?: string }
    const tenant = await liveTenant(ctx, q.tenant)
    mustFlag(keyOf(request))
    return tenantry.flags.evaluate(keyOf(request), { tenant, ...(q.user ? { userId: q.user } : {}) })
  })

  app.get('/tenants/:slug/flags', {
    schema: { tags: FLAGS, summary: 'Every flag as evaluated for the tenant', params: slugParam, response: { 200: { type: 'array', items: evaluationSchema }, ...errors(404) } },
  }, async function tenantFlags(request) {
    const tenant = await liveTenant(ctx, slugOf(request))
    return tenantry.flags.list().map((f) => tenantry.flags.evaluate(f.key, { tenant })).filter((e) => e !== null)
  })

  app.get('/flags/:key/history', {
    schema: { tags: FLAGS, summary: "The flag's changes, newest first", params: keyParam, querystring: historyQuery, response: { 200: versions, ...errors() } },
  }, async function flagHistory(request) {
    return tenantry.flags.history(keyOf(request), { limit: (request.query as { limit: number }).limit })
  })

  app.post('/flags/:key/rollback', {
    schema: { tags: FLAGS, summary: 'Undo a version of the flag and every later one (null: the flag did not exist before it, and is removed)', params: keyParam, body: rollbackBody,
      response: { 200: { type: 'object', properties: { flag: { anyOf: [flagSchema, { type: 'null' }] } } }, ...errors(404, 409) } },
    config: { adminRole: 'operator' },
  }, async function rollbackFlag(request) {
    const { version } = request.body as { version: number }
    return { flag: await tenantry.flags.rollback(keyOf(request), version, by(request)) }
  })

  app.delete('/flags/:key', {
    schema: { tags: FLAGS, summary: 'Delete a flag (its history stays; rollback brings it back)', params: keyParam, response: { 200: { type: 'object', properties: { removed: { type: 'string' } } }, ...errors(404) } },
    config: { adminRole: 'admin' },
  }, async function removeFlag(request) {
    mustFlag(keyOf(request))
    await tenantry.flags.remove(keyOf(request), by(request))
    return { removed: keyOf(request) }
  })
}
