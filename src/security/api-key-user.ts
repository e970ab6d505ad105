import type { UserIdentifier } from '../guard/index.ts'
import { apiKeyIdOf } from '../resolve/credential-strategies.ts'

const BEARER_RE = /^Bearer +(\S+) *$/i

/**
 * The "user" of the per-user rate limit is the tenant API key (`key:<key id>`), read from
 * `Authorization: Bearer tnk_…` or `header` without a lookup: the secret part never reaches the
 * limiter store. Requests without a tenant key are anonymous for that layer.
 *
 * @example
 * ```ts
 * createTenantry({ resolve: [apiKey()], guard: { user: userFromTenantApiKey() } })
 * ```
 */
export function userFromTenantApiKey(header?: string): UserIdentifier {
  const name = header?.toLowerCase()
  return function userFromTenantApiKeyValue(req) {
    const raw = req.headers?.[name ?? 'authorization']
    const value = Array.isArray(raw) ? raw[0] : raw
    if (typeof value !== 'string') return null
    const token = name === undefined ? BEARER_RE.exec(value)?.[1] : value
    const id = token === undefined ? null : apiKeyIdOf(token)
    return id === null ? null : `key:${id}`
  }
}
