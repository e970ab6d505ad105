import { pino, type Logger, type LoggerOptions } from 'pino'
import { currentScope } from '../context/context.ts'

/** Marks a pino logger (and, through the prototype chain, its children) whose lines already carry the tenant. */
export const TENANT_MIXIN = Symbol.for('tenantry.logger.tenantMixin')

// Read once: the mixin runs for every line.
const { chindingsSym, mixinSym } = pino.symbols

/**
 * A pino `mixin` that adds the current tenant (`tenant`: its slug, `tenantId`: its id) and request id (`reqId`)
 * to every line logged inside a tenant context, so the app passes nothing. Tenantry's own logger
 * has it; give it to your own pino instance to get the same:
 *
 * @example
 * ```ts
 * const logger = pino({ mixin: tenantLogMixin })
 * const tenantry = await createTenantry({ observe: { logger } })
 * const app = Fastify({ loggerInstance: logger })
 * ```
 */
export function tenantLogMixin(_merge?: object, _level?: number, logger?: unknown): Record<string, unknown> {
  const scope = currentScope()
  if (!scope) return {}
  const t = scope.tenant
  // A Fastify request's child logger has its reqId bound already: no second key of the same name.
  // Flat string values: pino writes them on its fast path (a nested object costs a stringify per line).
  if (scope.requestId === null || boundReqId(logger)) return { tenant: t.slug, tenantId: t.id }
  return { tenant: t.slug, tenantId: t.id, reqId: scope.requestId }
}

function boundReqId(logger: unknown): boolean {
  const chindings = (logger as Record<symbol, unknown> | undefined)?.[chindingsSym]
  return typeof chindings === 'string' && chindings.includes('"reqId":')
}

/** `observe.logger`: your pino instance, pino options for Tenantry's own, or `false` for none. */
export type LoggerOption = Logger | LoggerOptions | false

function isLogger(x: unknown): x is Logger {
  return typeof x === 'object' && x !== null && typeof (x as Logger).child === 'function' && typeof (x as Logger).info === 'function'
}

/**
 * The logger Tenantry writes its own events to. A pino instance is used as it is (add
 * {@link tenantLogMixin} to its options for the tenant on your own lines; Tenantry's lines carry
 * it either way). Options make a pino logger with the mixin, at `TENANTRY_LOG_LEVEL` or `warn`
 * unless they set a level. `false` is a silent logger.
 */
export function createLogger(option: LoggerOption | undefined): Logger {
  if (option === false) return pino({ level: 'silent' })
  if (isLogger(option)) return option
  const opts: LoggerOptions = option ?? {}
  const logger = pino({ level: process.env.TENANTRY_LOG_LEVEL ?? 'warn', ...opts, mixin: opts.mixin ?? tenantLogMixin })
  ;(logger as unknown as Record<symbol, boolean>)[TENANT_MIXIN] = opts.mixin === undefined
  return logger
}

/** Whether lines of `logger` (or of the logger it is a child of) get the tenant from the mixin already. */
export function hasTenantMixin(logger: unknown): boolean {
  if (typeof logger !== 'object' || logger === null) return false
  const l = logger as Record<symbol, unknown>
  return l[mixinSym] === tenantLogMixin || l[TENANT_MIXIN] === true
}

/** Bindings of a tenant for a log line made outside its context (events of the control plane). */
export function tenantBindings(t: { id: string; slug: string } | null | undefined): Record<string, unknown> {
  return t ? { tenant: t.slug, tenantId: t.id } : {}
}
