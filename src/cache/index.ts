export { TenantCache, createCache, type CacheOptions, type CacheStats } from './cache.ts'
export type { CacheStore } from './stores.ts'
