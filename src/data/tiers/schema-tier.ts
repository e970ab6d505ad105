import { quoteIdent } from '../../core/sql.ts'
import { ensureTenantRoleSql } from '../sql.ts'
import type { TierStrategy } from './tier.ts'

/** The tenant's own schema in its server's main database, reached as the tenant's own role. */
export const schemaTier: TierStrategy = {
  tier: 'schema',
  placement: (id, server, naming) => ({ server: server.name, database: server.mainDatabase, schema: naming.tenantSchema(id) }),
  session: (tenant, naming) => ({
    database: tenant.placement.database,
    tenantId: tenant.id,
    // Only the tenant's schema: an unqualified name never falls through to the pooled tables.
    searchPath: quoteIdent(tenant.placement.schema!),
    role: naming.tenantRole(tenant.id),
  }),
  ownTarget: (tenant, naming) => ({
    server: tenant.placement.server,
    database: tenant.placement.database,
    schema: tenant.placement.schema!,
    role: naming.tenantRole(tenant.id),
    label: `${tenant.placement.server}/${tenant.placement.schema}`,
  }),
  async prepare(ctx, tenant) {
    const role = ctx.naming.tenantRole(tenant.id)
    const schema = quoteIdent(tenant.placement.schema!)
    return `${ensureTenantRoleSql(role, ctx.naming.appRole)}
CREATE SCHEMA IF NOT EXISTS ${schema};
GRANT USAGE ON SCHEMA ${schema} TO ${quoteIdent(role)};`
  },
  async remove(ctx, tenant) {
    const role = ctx.naming.tenantRole(tenant.id)
    const schema = tenant.placement.schema!
    await ctx.driver.admin(tenant.placement.database).exec(
      `DROP SCHEMA IF EXISTS ${quoteIdent(schema)} CASCADE;
DELETE FROM tenantry.migrations WHERE target = '${schema.replace(/'/g, "''")}';
DROP ROLE IF EXISTS ${quoteIdent(role)};`,
    )
    return [`schema ${schema}`, `role ${role}`]
  },
}
