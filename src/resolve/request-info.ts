/**
 * What resolution needs of a request, independent of any HTTP framework. Adapters build it from
 * their own request object.
 *
 * @example
 * ```ts
 * const info: RequestInfo = {
 *   host: req.headers.host,
 *   path: req.url.split('?')[0],
 *   headers: req.headers,
 *   raw: req,
 * }
 * ```
 */
export interface RequestInfo {
  /** Raw `Host` header value; may carry a port; `undefined` when the request has none. */
  host: string | undefined
  /** URL path without the query string, e.g. `/t/acme/api/projects`. */
  path: string
  /** Request headers with lowercase names, as Node gives them. */
  headers: Record<string, string | string[] | undefined>
  /** The framework request, for custom strategies only. */
  raw?: unknown
}

/**
 * What a strategy found in a request: a tenant slug, id or custom domain, and the name of the
 * strategy that found it (used in error messages).
 *
 * @example
 * ```ts
 * const id: Identifier = { kind: 'slug', value: 'acme', source: 'subdomain' }
 * ```
 */
export type Identifier = { kind: 'slug' | 'id' | 'domain'; value: string; source: string }

/**
 * One way of finding the tenant of a request. `identify` returns `null` when the request does not
 * carry this kind of identifier and throws a `TenantryError` when it carries a malformed one; it
 * never looks the tenant up.
 *
 * @example
 * ```ts
 * const fromQuery: ResolveStrategy = {
 *   name: 'query',
 *   hint: "a '?tenant=' query parameter",
 *   identify: (req) => null,
 * }
 * ```
 */
export interface ResolveStrategy {
  /** Stable name; becomes `Identifier.source`. */
  readonly name: string
  /** How a client sends the tenant this way, for the "no tenant" message: `an x-tenant header`. */
  readonly hint?: string
  identify(req: RequestInfo): Identifier | null | Promise<Identifier | null>
}
