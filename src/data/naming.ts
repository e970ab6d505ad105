import { TenantryError } from '../core/errors.ts'

/** Names of the PostgreSQL objects Tenantry creates, all derived from one prefix. */
export interface Naming {
  prefix: string
  /** The login role the data plane connects as. */
  appRole: string
  /** Role a schema- or database-tier tenant's statements run as. */
  tenantRole(tenantId: string): string
  tenantSchema(tenantId: string): string
  tenantDatabase(tenantId: string): string
}

/**
 * Object names for a role prefix (roles and databases are cluster-wide, so two Tenantry
 * installations on one server need different prefixes).
 *
 * @example
 * ```ts
 * naming('tenantry').tenantSchema('0a1b…') // 't_0a1b…'
 * ```
 */
export function naming(prefix: string): Naming {
  if (!/^[a-z][a-z0-9_]{0,23}$/.test(prefix)) {
    throw new TenantryError('CONFIG_INVALID', `rolePrefix '${prefix}' must be 1–24 characters of a-z, 0-9 and _, starting with a letter.`)
  }
  const hex = (id: string) => id.replace(/-/g, '')
  return {
    prefix,
    appRole: `${prefix}_app`,
    tenantRole: (id) => `${prefix}_t_${hex(id)}`,
    tenantSchema: (id) => `t_${hex(id)}`,
    tenantDatabase: (id) => `${prefix}_t_${hex(id)}`,
  }
}
