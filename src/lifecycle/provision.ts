import { randomUUID } from 'node:crypto'
import { TenantryError } from '../core/errors.ts'
import { TIERS, type Server, type Tenant, type Tier } from '../core/types.ts'
import { assertSlug } from '../core/validation.ts'
import type { Catalog } from '../catalog/catalog.ts'
import type { DataPlane } from '../data/data-plane.ts'
import { TIER_STRATEGIES } from '../data/tiers/index.ts'
import { migrateTarget, type MigrationFile } from './migrator.ts'

/** What a caller gives to create a tenant. */
export interface ProvisionOptions {
  slug: string
  tier: Tier
  name?: string
  plan?: string
  /** A server of the fleet; by default chosen by region, then capacity weight. */
  server?: string
  region?: string
  config?: Record<string, unknown>
}

/**
 * Choose a server for a new tenant: servers in the tenant's region first (all servers when none
 * match), then the one with the highest capacity weight per tenant already placed.
 */
export function chooseServer(servers: Server[], counts: Map<string, number>, region?: string): Server {
  const usable = servers.filter((s) => s.capacityWeight > 0)
  if (usable.length === 0) throw new TenantryError('SERVER_NOT_FOUND', 'No server with a capacity weight above 0 is registered.')
  const inRegion = region ? usable.filter((s) => s.region === region) : []
  const pool = inRegion.length > 0 ? inRegion : usable
  return pool.reduce((best, s) => {
    const score = s.capacityWeight / ((counts.get(s.name) ?? 0) + 1)
    const bestScore = best.capacityWeight / ((counts.get(best.name) ?? 0) + 1)
    return score > bestScore ? s : best
  })
}

/** Check a provision request before anything is created; throws a coded error. */
export function validateProvision(input: ProvisionOptions): void {
  if (!input || typeof input !== 'object') throw new TenantryError('VALIDATION_FAILED', 'provision() needs an options object with slug and tier.')
  assertSlug(input.slug)
  if (!TIERS.includes(input.tier)) {
    throw new TenantryError('VALIDATION_FAILED', `Tier '${String(input.tier)}' is not one of ${TIERS.join(', ')}.`, { details: { tier: String(input.tier) } })
  }
  if (input.name !== undefined && (typeof input.name !== 'string' || input.name.trim().length === 0 || input.name.length > 200)) {
    throw new TenantryError('VALIDATION_FAILED', 'A tenant name must be 1–200 characters.')
  }
  if (input.config !== undefined && (typeof input.config !== 'object' || input.config === null || Array.isArray(input.config))) {
    throw new TenantryError('VALIDATION_FAILED', 'A tenant config must be an object.')
  }
}

/**
 * Create a tenant: its catalog row (status `provisioning`), its room on its tier, its tables at the
 * latest migration, then status `active`. A failure removes what was made and the row, so a slug
 * is never left half-provisioned.
 *
 * @example
 * ```ts
 * const tenant = await provision(catalog, dataPlane, files, { slug: 'acme', tier: 'schema' })
 * ```
 */
export async function provision(catalog: Catalog, dataPlane: DataPlane, files: MigrationFile[], input: ProvisionOptions): Promise<Tenant> {
  validateProvision(input)
  const servers = (await catalog.listServers()).filter((s) => dataPlane.serverNames().includes(s.name))
  let server: Server
  if (input.server !== undefined) {
    const found = servers.find((s) => s.name === input.server)
    if (!found) throw new TenantryError('SERVER_NOT_FOUND', `Server '${input.server}' is not registered.`, { status: 400 })
    server = found
  } else {
    const counts = new Map<string, number>()
    for (const t of await catalog.list()) counts.set(t.placement.server, (counts.get(t.placement.server) ?? 0) + 1)
    server = chooseServer(servers, counts, input.region)
  }
  const id = randomUUID()
  const strategy = TIER_STRATEGIES[input.tier]
  const placement = strategy.placement(id, server, dataPlane.opts.naming)
  let tenant = await catalog.insertTenant({
    id,
    slug: input.slug,
    name: input.name?.trim() ?? input.slug,
    status: 'provisioning',
    tier: input.tier,
    plan: input.plan ?? 'default',
    region: input.region ?? server.region,
    server: server.name,
    database: placement.database,
    schema: placement.schema ?? null,
    config: input.config ?? {},
  })
  const ctx = dataPlane.tierContext(server.name)
  try {
    await strategy.create(ctx, tenant)
    await migrateTarget(ctx.driver.admin(placement.database), dataPlane.migrationTarget(tenant), files)
    tenant = await catalog.setStatus(id, 'active')
    return tenant
  } catch (err) {
    await strategy.remove(ctx, tenant, []).catch(() => undefined)
    await catalog.deleteTenantRow(id).catch(() => undefined)
    throw err
  }
}
