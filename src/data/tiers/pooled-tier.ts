import { quoteIdent } from '../../core/sql.ts'
import { tenantToken } from '../tenant-token.ts'
import type { TierStrategy } from './tier.ts'

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
  async remove(ctx, tenant, tables) {
    const removed: string[] = []
    await ctx.driver.admin(tenant.placement.database).transaction(async (tx) => {
      // The owner may be subject to FORCEd RLS: point the transaction at the tenant first.
      await tx.query("SELECT set_config('tenantry.tenant_id', $1, true)", [tenantToken(ctx.tenantKey, tenant.id)])
      for (const table of tables) {
        const res = await tx.query(`DELETE FROM ${quoteIdent(ctx.pooledSchema)}.${quoteIdent(table)} WHERE tenant_id = $1`, [tenant.id])
        removed.push(`${res.rowCount} rows from ${ctx.pooledSchema}.${table}`)
      }
    })
    return removed
  },
}
