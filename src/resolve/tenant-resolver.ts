import { TenantryError } from '../core/errors.ts'
import type { Tenant } from '../core/types.ts'
import { printable } from '../core/validation.ts'
import type { Identifier, RequestInfo, ResolveStrategy } from './request-info.ts'

/**
 * Where the resolver finds tenants; usually the catalog's cache. A miss is `null`. Caching is
 * the lookup's job.
 *
 * @example
 * ```ts
 * const bySlug = new Map(tenants.map((t) => [t.slug, t]))
 * const lookup: TenantLookup = {
 *   bySlug: async (slug) => bySlug.get(slug) ?? null,
 *   byId: async (id) => tenants.find((t) => t.id === id) ?? null,
 *   byDomain: async () => null,
 * }
 * ```
 */
export interface TenantLookup {
  bySlug(slug: string): Promise<Tenant | null>
  byId(id: string): Promise<Tenant | null>
  byDomain(domain: string): Promise<Tenant | null>
  /** A result at hand without waiting (a tenant, or `null` for a known miss); `undefined` when only a lookup can tell. Optional. */
  cachedBy?(kind: 'slug' | 'id' | 'domain', value: string): Tenant | null | undefined
}

/**
 * Options of {@link TenantResolver}.
 *
 * @example
 * ```ts
 * const options: TenantResolverOptions = { strategies: [subdomain({ baseDomain: 'localhost' })], lookup }
 * ```
 */
export interface TenantResolverOptions {
  /** Tried in order; every one runs on every request so that disagreements are caught. */
  strategies: ResolveStrategy[]
  lookup: TenantLookup
  /** Base domain named in "no tenant matches host" messages. Default: that of the first subdomain strategy. */
  baseDomainHint?: string
}

/**
 * Turns a request into its tenant. Runs every strategy in order (a strategy's error propagates
 * at once), looks each identifier up, and insists they all name the same tenant.
 *
 * Errors: none found → 400 `TENANT_REQUIRED`; unknown or deleted → 404 `TENANT_NOT_FOUND`; two
 * tenants → 403 `TENANT_MISMATCH`; suspended → 403 `TENANT_SUSPENDED`; provisioning → 503
 * `TENANT_NOT_READY` (retry after 5 s).
 *
 * @example
 * ```ts
 * const resolver = new TenantResolver({
 *   strategies: [subdomain({ baseDomain: 'localhost' }), header(), jwtClaim({ secret })],
 *   lookup: catalog.cache,
 * })
 * const tenant = await resolver.resolve({ host: 'acme.localhost:3000', path: '/', headers: {} })
 * ```
 */
export class TenantResolver {
  readonly #strategies: readonly ResolveStrategy[]
  readonly #lookup: TenantLookup
  readonly #baseDomainHint: string | undefined
  readonly #hostSources: ReadonlySet<string>
  readonly #requiredMessage: string
  readonly #tried: readonly string[]

  constructor(options: TenantResolverOptions) {
    const strategies = options?.strategies
    if (!Array.isArray(strategies) || strategies.length === 0) {
      throw new TenantryError('CONFIG_INVALID', 'TenantResolver needs at least one strategy, e.g. subdomain({ baseDomain }) or header().')
    }
    for (const s of strategies) {
      if (!s || typeof s.name !== 'string' || typeof s.identify !== 'function') {
        throw new TenantryError('CONFIG_INVALID', 'Every TenantResolver strategy needs a name and an identify(req) function.')
      }
    }
    const lookup = options.lookup
    if (!lookup || typeof lookup.bySlug !== 'function' || typeof lookup.byId !== 'function' || typeof lookup.byDomain !== 'function') {
      throw new TenantryError('CONFIG_INVALID', 'TenantResolver needs a lookup with bySlug, byId and byDomain functions.')
    }
    this.#strategies = [...strategies]
    this.#lookup = lookup
    const hostSources = new Set<string>()
    let firstBase: string | undefined
    for (const s of strategies) {
      const base = (s as { baseDomain?: unknown }).baseDomain
      if (typeof base === 'string') {
        hostSources.add(s.name)
        firstBase ??= base
      }
    }
    this.#hostSources = hostSources
    this.#baseDomainHint = options.baseDomainHint ?? firstBase
    this.#tried = strategies.map((s) => s.name)
    const hints = strategies.map((s) => s.hint ?? `the '${s.name}' strategy`)
    const ways = hints.length === 1 ? hints[0] : `${hints.slice(0, -1).join(', ')} or ${hints[hints.length - 1]}`
    this.#requiredMessage = `The request does not name a tenant. Send the tenant as ${ways}.`
  }

  /**
   * The active tenant the request names, or a coded error.
   *
   * @example
   * ```ts
   * const tenant = await resolver.resolve({ host: req.headers.host, path, headers: req.headers, raw: req })
   * ```
   */
  resolve(req: RequestInfo): Promise<Tenant> {
    const found = this.resolveNow(req)
    return found instanceof Promise ? found : Promise.resolve(found)
  }

  /**
   * {@link resolve}, but the tenant itself when the answer is at hand without waiting (synchronous
   * strategies, one identifier, the lookup cached); otherwise a promise. Never throws: errors are
   * a rejected promise. For adapters, where a promise per request is worth saving (each costs more
   * while AsyncLocalStorage is active, and it is).
   *
   * @example
   * ```ts
   * const found = resolver.resolveNow(info)
   * if (found instanceof Promise) found.then(serve, refuse)
   * else serve(found)
   * ```
   */
  resolveNow(req: RequestInfo): Tenant | Promise<Tenant> {
    let first: Identifier | null = null
    try {
      for (let i = 0; i < this.#strategies.length; i++) {
        const found = this.#strategies[i].identify(req)
        if (found === null || found === undefined) continue
        if (typeof (found as Promise<unknown>).then === 'function' || first !== null) return this.#resolveSlowly(req, i, first, found)
        first = found as Identifier
      }
      if (first === null) throw this.#required()
      const ident = first
      const cached = this.#lookup.cachedBy?.(ident.kind, ident.value)
      if (cached !== undefined) return this.#servable(this.#found(cached, ident, req), ident)
      return this.#lookupOf(ident).then((tenant) => this.#servable(this.#found(tenant, ident, req), ident))
    } catch (err) {
      return Promise.reject(err)
    }
  }

  /** The general case: asynchronous strategies, or several identifiers that must agree. */
  async #resolveSlowly(req: RequestInfo, from: number, first: Identifier | null, pendingFound: Identifier | Promise<Identifier | null>): Promise<Tenant> {
    let more: Identifier[] | null = null
    const add = (found: Identifier | null | undefined) => {
      if (found === null || found === undefined) return
      if (first === null) first = found
      else (more ??= []).push(found)
    }
    add(await pendingFound)
    for (let i = from + 1; i < this.#strategies.length; i++) {
      let found = this.#strategies[i].identify(req)
      if (found !== null && typeof (found as Promise<unknown>).then === 'function') found = await found
      add(found as Identifier | null)
    }
    if (first === null) throw this.#required()
    const ident: Identifier = first
    const tenant = await this.#find(ident, req)
    if (more !== null) {
      // Sequential, so the reported error is always the one of the earliest strategy.
      for (const other of more as Identifier[]) {
        if (namesTenant(other, tenant, ident)) continue
        const t = await this.#find(other, req)
        if (t.id !== tenant.id) throw mismatch(ident, other)
      }
    }
    return this.#servable(tenant, ident)
  }

  #required(): TenantryError {
    return new TenantryError('TENANT_REQUIRED', this.#requiredMessage, { details: { tried: this.#tried } })
  }

  #servable(tenant: Tenant, ident: Identifier): Tenant {
    if (tenant.status === 'active') return tenant
    throw refusal(tenant, ident)
  }

  #lookupOf(ident: Identifier): Promise<Tenant | null> {
    const lookup = this.#lookup
    switch (ident.kind) {
      case 'slug': return lookup.bySlug(ident.value)
      case 'id': return lookup.byId(ident.value)
      case 'domain': return lookup.byDomain(ident.value)
      default:
        throw new TenantryError('CONFIG_INVALID', `Strategy '${printable(String(ident.source))}' returned an identifier of unknown kind '${printable(String((ident as { kind: unknown }).kind))}'.`)
    }
  }

  #found(tenant: Tenant | null | undefined, ident: Identifier, req: RequestInfo): Tenant {
    if (tenant === null || tenant === undefined || tenant.status === 'deleted') throw this.#notFound(ident, req)
    return tenant
  }

  async #find(ident: Identifier, req: RequestInfo): Promise<Tenant> {
    return this.#found(await this.#lookupOf(ident), ident, req)
  }

  #notFound(ident: Identifier, req: RequestInfo): TenantryError {
    const value = printable(ident.value)
    const details = { source: ident.source, [ident.kind]: value }
    if (ident.kind === 'domain' || this.#hostSources.has(ident.source)) {
      const host = printable(req.host ?? ident.value)
      const base = this.#baseDomainHint
      const fix = base === undefined
        ? 'check the host or register the domain.'
        : `Known base domain is '${printable(base)}'; check the subdomain or register the domain.`
      return new TenantryError('TENANT_NOT_FOUND', `No tenant matches host '${host}' (${ident.source} '${value}'). ${fix}`, { details })
    }
    const what = ident.kind === 'id' ? 'id' : 'slug'
    return new TenantryError(
      'TENANT_NOT_FOUND',
      `No tenant has the ${what} '${value}' (from ${ident.source}). Check the tenant ${what}.`,
      { details },
    )
  }
}

/** True when `ident` is already known to name `tenant` (ids and slugs are unique), so needs no lookup. */
function namesTenant(ident: Identifier, tenant: Tenant, first: Identifier): boolean {
  if (ident.kind === 'id') return ident.value === tenant.id
  if (ident.kind === 'slug') return ident.value === tenant.slug
  return first.kind === ident.kind && first.value === ident.value
}

function mismatch(a: Identifier, b: Identifier): TenantryError {
  return new TenantryError(
    'TENANT_MISMATCH',
    `The request names two different tenants: '${printable(a.value)}' from ${a.source} and '${printable(b.value)}' from ${b.source}. Send identifiers of one tenant only.`,
    { details: { sources: [a.source, b.source] } },
  )
}

/** Why a tenant that exists but is not active cannot be served. */
function refusal(tenant: Tenant, ident: Identifier): TenantryError {
  const name = printable(ident.value)
  const reason = tenant.statusReason
  if (tenant.status === 'suspended') {
    return new TenantryError(
      'TENANT_SUSPENDED',
      reason ? `Tenant '${name}' is suspended: ${reason}` : `Tenant '${name}' is suspended. Contact the service operator.`,
      { details: { reason } },
    )
  }
  // 'provisioning', and any state a newer catalog adds (moving…): the tenant exists but cannot serve yet.
  return new TenantryError(
    'TENANT_NOT_READY',
    `Tenant '${name}' is not ready yet (${printable(String(tenant.status))}); retry in 5 seconds.`,
    { retryAfter: 5, ...(reason ? { details: { reason } } : {}) },
  )
}
