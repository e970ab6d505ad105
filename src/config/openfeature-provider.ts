import { FlagNotFoundError, TypeMismatchError, type EvaluationContext, type JsonValue as OFJsonValue, type Provider, type ResolutionDetails } from '@openfeature/server-sdk'
import type { FlagContext, FlagEvaluation, FlagStore } from './flags.ts'

type Kind = 'boolean' | 'string' | 'number' | 'object'

/**
 * Tenantry's flags as an OpenFeature server provider. The evaluation context is filled from the
 * tenant context: `targetingKey` is the tenant id, and `plan`, `tier`, `region`, `slug` come from
 * the tenant unless the context gives them; `userId` and any other attribute feed the per-user
 * rules. Reasons are OpenFeature's (`TARGETING_MATCH`, `SPLIT`, `DEFAULT`, `DISABLED`, `ERROR`)
 * and every result names its variant.
 *
 * @example
 * ```ts
 * import { OpenFeature } from '@openfeature/server-sdk'
 * await OpenFeature.setProviderAndWait(tenantry.flags.provider)
 * const client = OpenFeature.getClient()
 * // inside a request resolved by Tenantry:
 * const on = await client.getBooleanValue('new-editor', false, { userId: req.user.id })
 * ```
 */
export class TenantryFlagProvider implements Provider {
  readonly metadata = { name: 'tenantry' } as const
  readonly runsOn = 'server' as const
  readonly hooks = []

  constructor(private readonly flags: FlagStore) {}

  resolveBooleanEvaluation(flagKey: string, defaultValue: boolean, context: EvaluationContext): Promise<ResolutionDetails<boolean>> {
    return this.resolve(flagKey, 'boolean', context) as Promise<ResolutionDetails<boolean>>
  }

  resolveStringEvaluation(flagKey: string, defaultValue: string, context: EvaluationContext): Promise<ResolutionDetails<string>> {
    return this.resolve(flagKey, 'string', context) as Promise<ResolutionDetails<string>>
  }

  resolveNumberEvaluation(flagKey: string, defaultValue: number, context: EvaluationContext): Promise<ResolutionDetails<number>> {
    return this.resolve(flagKey, 'number', context) as Promise<ResolutionDetails<number>>
  }

  resolveObjectEvaluation<T extends OFJsonValue>(flagKey: string, defaultValue: T, context: EvaluationContext): Promise<ResolutionDetails<T>> {
    return this.resolve(flagKey, 'object', context) as Promise<ResolutionDetails<T>>
  }

  private async resolve(flagKey: string, kind: Kind, context: EvaluationContext): Promise<ResolutionDetails<unknown>> {
    return details(this.flags.evaluate(flagKey, toFlagContext(context)), flagKey, kind)
  }
}

function details(e: FlagEvaluation | null, flagKey: string, kind: Kind): ResolutionDetails<unknown> {
  if (e === null) throw new FlagNotFoundError(`No feature flag has the key '${flagKey}'.`)
  const v = e.value
  const actual = v === null ? 'null' : Array.isArray(v) ? 'object' : typeof v
  if (actual !== kind) throw new TypeMismatchError(`Flag '${flagKey}' has ${actual} variants; asked for a ${kind}.`)
  return {
    value: v,
    variant: e.variant,
    reason: e.reason,
    ...(e.rule === undefined ? {} : { flagMetadata: e.ruleName === undefined ? { rule: e.rule } : { rule: e.rule, ruleName: e.ruleName } }),
  }
}

/** OpenFeature's context as Tenantry's: `targetingKey` is a tenant id; the rest pass through. */
function toFlagContext(context: EvaluationContext | undefined): FlagContext | undefined {
  if (context === undefined) return undefined
  let empty = true
  for (const _ in context) { empty = false; break }
  if (empty) return undefined
  const out = context as FlagContext
  return context.targetingKey === undefined || out.tenantId !== undefined ? out : { ...out, tenantId: context.targetingKey }
}
