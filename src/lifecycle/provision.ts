import { TenantryError } from '../core/errors.ts'
import { TIERS, type Server, type Tier } from '../core/types.ts'
import { assertSlug } from '../core/validation.ts'

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
  /** Place the tenant on a server outside its region anyway (audited as `residency.force`); otherwise 409 `RESIDENCY_VIOLATION`. */
  forceResidency?: boolean
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
  if (input.forceResidency !== undefined && typeof input.forceResidency !== 'boolean') {
    throw new TenantryError('VALIDATION_FAILED', 'forceResidency must be true or false.')
  }
  if (input.config !== undefined && (typeof input.config !== 'object' || input.config === null || Array.isArray(input.config))) {
    throw new TenantryError('VALIDATION_FAILED', 'A tenant config must be an object.')
  }
}
