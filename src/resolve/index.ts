/**
 * Request resolution: strategies turn a request into a tenant identifier, the resolver turns
 * identifiers into one active tenant.
 *
 * @example
 * ```ts
 * import { TenantResolver, subdomain, header } from './resolve/index.ts'
 * const resolver = new TenantResolver({ strategies: [subdomain({ baseDomain: 'localhost' }), header()], lookup })
 * ```
 */
export type { Identifier, RequestInfo, ResolveStrategy } from './request-info.ts'
export {
  custom,
  customDomain,
  header,
  jwtClaim,
  normalizeHost,
  pathPrefix,
  stripPathPrefix,
  subdomain,
} from './strategies.ts'
export type {
  CustomDomainOptions,
  CustomResult,
  HeaderOptions,
  JwtClaimOptions,
  PathPrefixOptions,
  SubdomainOptions,
  SubdomainStrategy,
} from './strategies.ts'
export { TenantResolver } from './tenant-resolver.ts'
export type { TenantLookup, TenantResolverOptions } from './tenant-resolver.ts'
export { apiKey, apiKeyIdOf, apiKeyOf, clientCertificate, normalizeFingerprint, requireScope, API_KEY_PREFIX } from './credential-strategies.ts'
export type { ApiKeyGrant, ApiKeyOptions, ApiKeyRecord, CertificateRecord, ClientCertificateOptions, CredentialStore, CredentialStrategy } from './credential-strategies.ts'
