import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { Tenant } from '../core/types.ts'
import type { Tenantry } from '../runtime.ts'
import type { AdminAuthenticator, AdminPrincipal } from './auth.ts'
import type { AdminRole, AdminTokens } from './tokens.ts'

declare module 'fastify' {
  interface FastifyRequest {
    /** Who is calling the admin API (set by its authentication hook). */
    admin: AdminPrincipal
  }
  interface FastifyContextConfig {
    /** An admin API route: the tenant plugin never resolves a tenant for it. */
    tenantryAdmin?: boolean
    /** The least admin role a route needs (default viewer); `public` routes need none (console files, OpenAPI). */
    adminRole?: AdminRole | 'public'
  }
}

/** What every route module of the admin API gets. */
export interface AdminContext {
  tenantry: Tenantry
  tokens: AdminTokens | null
  /** Where backups and exports may be written, by name (the plugin's `backups.targets`); a request names one, never a path. */
  backupTargets: Readonly<Record<string, string>>
  /** Percent done of operations running in this process that report finer progress than their steps (backups, restores). */
  liveProgress: Map<string, number>
  /** Check an `Authorization` header as the API does (for the sign-in route). */
  authenticate: AdminAuthenticator
  /**
   * Run a change and append it to the audit log (after it succeeded), with the request's actor and id:
   * for a route's own action whose call offers no transaction. Durable operations record themselves
   * (their start and outcome entries); the built-in routes' changes append theirs in their transaction.
   */
  audited<T>(request: FastifyRequest, what: AuditedAction<T>, change: () => Promise<T>): Promise<T>
}

export interface AuditedAction<T> {
  action: string
  /** The tenant before the change (its digest is recorded); null when there was none. */
  before?: Tenant | null
  /** The tenant (or state) after, from the change's result. */
  after?: (result: T) => unknown
  /** The tenant the entry is about, when the result tells better than `before`. */
  tenant?: (result: T) => { id: string; slug: string } | null
  details?: (result: T) => Record<string, unknown>
}

/**
 * A route module: one resource's routes, registered by the admin plugin under `api/`.
 *
 * @example
 * ```ts
 * const planRoutes: AdminRoutes = (app, ctx) => {
 *   app.get('/plans/:name', { schema: { params: { type: 'object', properties: { name: { type: 'string' } } } } },
 *     async (req) => (await ctx.tenantry.catalog.listPlans()).find((p) => p.name === (req.params as { name: string }).name))
 * }
 * await app.register(tenantryAdmin, { prefix: '/admin', tenantry, routes: [planRoutes] })
 * ```
 */
export type AdminRoutes = (app: FastifyInstance, ctx: AdminContext) => void | Promise<void>
