import { createHash } from 'node:crypto'

/**
 * The signed tenant setting `<uuid>.<sha256(key || uuid)>` that `tenantry.tenant_id()` accepts
 * (see `bootstrapDatabaseSql`). Only a holder of the installation key can make one.
 *
 * @example
 * ```ts
 * tenantToken(key, tenant.id) // '0a1b…-….9f3c…'
 * ```
 */
export function tenantToken(key: string, tenantId: string): string {
  return `${tenantId}.${createHash('sha256').update(key + tenantId, 'utf8').digest('hex')}`
}
