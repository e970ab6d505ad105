import { quoteIdent } from '../../core/sql.ts'
import { bootstrapDatabaseSql, ensureAppRoleSql, ensureTenantRoleSql } from '../sql.ts'
import type { TierStrategy } from './tier.ts'

/** The tenant's own database on any server of the fleet, reached as the tenant's own role. */
export const databaseTier: TierStrategy = {
  tier: 'database',
  placement: (id, server, naming) => ({ server: server.name, database: naming.tenantDatabase(id) }),
  session: (tenant, naming) => ({
    database: tenant.placement.database,
    tenantId: tenant.id,
    searchPath: '"public"',
    role: naming.tenantRole(tenant.id),
  }),
  ownTarget: (tenant, naming) => ({
    server: tenant.placement.server,
    database: tenant.placement.database,
    schema: 'public',
    role: naming.tenantRole(tenant.id),
    label: `${tenant.placement.server}/${tenant.placement.database}/public`,
  }),
  async prepare(ctx, tenant, template) {
    const database = tenant.placement.database
    if (!(await ctx.driver.databaseExists(database)) && !(await template.cloneInto(database))) {
      await ctx.driver.createDatabase(database)
    }
    const role = ctx.naming.tenantRole(tenant.id)
    return `${bootstrapDatabaseSql(ctx.tenantKey)}
${ensureAppRoleSql(ctx.naming.appRole)}
${ensureTenantRoleSql(role, ctx.naming.appRole)}
DO $tenantry$ BEGIN
  -- current_database(): on PGlite each instance's database is called 'postgres' whatever we call it.
  EXECUTE format('REVOKE CONNECT ON DATABASE %I FROM PUBLIC', current_database());
  EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), '${ctx.naming.appRole}');
END $tenantry$;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO ${quoteIdent(role)};`
  },
  async remove(ctx, tenant) {
    const role = ctx.naming.tenantRole(tenant.id)
    const database = tenant.placement.database
    await ctx.driver.dropDatabase(database)
    // On a real server roles are cluster-wide and outlive the database; PGlite's died with it.
    if (ctx.driver.kind === 'pg') await ctx.driver.admin(ctx.server.mainDatabase).exec(`DROP ROLE IF EXISTS ${quoteIdent(role)};`)
    return [`database ${database}`, `role ${role}`]
  },
}
