import type { Tier } from '../../core/types.ts'
import { databaseTier } from './database-tier.ts'
import { pooledTier } from './pooled-tier.ts'
import { schemaTier } from './schema-tier.ts'
import type { TierStrategy } from './tier.ts'

export type { MigrationTarget, TemplateSource, TierContext, TierStrategy } from './tier.ts'

/** The tier strategies by name. */
export const TIER_STRATEGIES: Readonly<Record<Tier, TierStrategy>> = {
  pooled: pooledTier,
  schema: schemaTier,
  database: databaseTier,
}
