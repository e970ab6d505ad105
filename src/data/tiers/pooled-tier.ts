import { quoteIdent } from '../../core/sql.ts'
import { tenantToken } from '../tenant-token.ts'
import type { Tenant } from '../../core/types.ts'
import type { TierContext, TierStrategy } from './tier.ts'

/** Rows in shared tables; row-level security on `tenantry.tenant_id` keeps tenants apart. */
export const pooledTier: TierStrategy = {
  tier: 'pooled',
  placement: (_id, server) => ({ server: server.name, database: server.mainDatabase }),
  session: (tenant, naming, pooledSchema) => ({
    database: tenant.placement.database,
    tenantId: tenant.id,
    searchPath: quoteIdent(pooledSchema),
    role: naming.appRole,
  }),
  ownTarget: () => null,
  prepare: async () => '',
  remove: (ctx, tenant, tables) => eachTable(ctx, tenant, tables, 'DELETE FROM'),
  inventory: (ctx, tenant, tables) => eachTable(ctx, tenant, tables, 'SELECT count(*) AS n FROM'),
}

/** Delete or count the tenant's rows of each table, in one transaction; the report names each table with its row count. */
async function eachTable(ctx: TierContext, tenant: Tenant, tables: string[], verb: 'DELETE FROM' | 'SELECT count(*) AS n FROM'): Promise<string[]> {
  const report: string[] = []
  await ctx.driver.admin(tenant.placement.database).transaction(async (tx) => {
    // The owner may be subject to FORCEd RLS: point the transaction at the tenant first.
    await tx.query("SELECT set_config('tenantry.tenant_id', $1, true)", [tenantToken(ctx.tenantKey, tenant.id)])
    for (const table of tables) {
      const res = await tx.query<{ n: string }>(`${verb} ${quoteIdent(ctx.pooledSchema)}.${quoteIdent(table)} WHERE tenant_id = $1`, [tenant.id])
      const rows = verb === 'DELETE FROM' ? res.rowCount : Number(res.rows[0].n)
      report.push(`${rows} rows from ${ctx.pooledSchema}.${table}`)
    }
  })
  return report
}
