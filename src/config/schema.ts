import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv'
import { TenantryError } from '../core/errors.ts'
import { parseLimits } from '../guard/limits.ts'
import { toPointer, type JsonObject } from './merge.ts'

/**
 * A validator that follows Standard Schema (zod, valibot, arktype…): `schema['~standard'].validate`.
 * Only synchronous validation is accepted: `tenantry.config()` is synchronous.
 */
export interface StandardSchemaLike {
  readonly '~standard': {
    readonly version: 1
    readonly vendor: string
    validate(value: unknown): StandardResult | Promise<StandardResult>
  }
}
type StandardResult =
  | { readonly value: unknown; readonly issues?: undefined }
  | { readonly issues: readonly { readonly message: string; readonly path?: readonly (PropertyKey | { readonly key: PropertyKey })[] }[] }

/** One reason a configuration is refused: where (a JSON pointer) and which rule. */
export interface ConfigIssue {
  pointer: string
  rule: string
  message: string
}

/** Configuration keys Tenantry itself reads and checks (`plugins` by the plugins' schemas); the app's schema sees the rest. */
export const RESERVED_KEYS = ['branding', 'limits', 'plugins'] as const

const COLOR = '^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$'
// http(s) or a path of the app; never javascript:, data: and the like (the values end up in pages).
const URL_OR_PATH = '^(?:https?://[^\\s"<>]+|/[^\\s"<>]*)$'

/**
 * The white-label branding of a tenant (`config.branding`), checked like every configuration
 * value: colours are `#rgb`/`#rrggbb`, URLs are http(s) or a path, the sender name has no line
 * breaks or angle brackets (it goes into a mail header).
 */
export interface Branding {
  displayName?: string
  logoUrl?: string
  faviconUrl?: string
  primaryColor?: string
  accentColor?: string
  backgroundColor?: string
  textColor?: string
  emailSenderName?: string
  supportUrl?: string
}

export const BRANDING_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  properties: {
    displayName: { type: 'string', minLength: 1, maxLength: 100 },
    logoUrl: { type: 'string', maxLength: 2048, pattern: URL_OR_PATH },
    faviconUrl: { type: 'string', maxLength: 2048, pattern: URL_OR_PATH },
    primaryColor: { type: 'string', pattern: COLOR },
    accentColor: { type: 'string', pattern: COLOR },
    backgroundColor: { type: 'string', pattern: COLOR },
    textColor: { type: 'string', pattern: COLOR },
    emailSenderName: { type: 'string', minLength: 1, maxLength: 100, pattern: '^[^\\r\\n<>"]+$' },
    supportUrl: { type: 'string', maxLength: 2048, pattern: '^(?:https?://[^\\s"<>]+|mailto:[^\\s"<>]+)$' },
  },
} as const

/** Checks a whole merged configuration: Tenantry's own keys, then the app's schema on the rest. */
export interface ConfigValidator {
  /** The issues of `config` (empty when valid). Fills in the app schema's defaults (JSON Schema `default`). */
  check(config: JsonObject): ConfigIssue[]
}

/**
 * Compile the app's schema (a JSON Schema for ajv, or a Standard Schema validator) together with
 * Tenantry's own checks of `branding` and `limits`. A schema ajv cannot compile is `CONFIG_INVALID`.
 */
export function compileValidator(schema: object | undefined, plugins: object = { type: 'object', additionalProperties: false }): ConfigValidator {
  const ajv = new Ajv({ allErrors: true, useDefaults: true, strict: false })
  const branding = ajv.compile(BRANDING_SCHEMA)
  let pluginCheck: ValidateFunction
  try {
    pluginCheck = ajv.compile(plugins)
  } catch (err) {
    throw new TenantryError('CONFIG_INVALID', `A plugin's settingsSchema is not a valid JSON Schema: ${(err as Error).message}`, { cause: err })
  }
  let app: ((value: JsonObject) => ConfigIssue[]) | null = null
  if (schema && '~standard' in schema) {
    app = standardCheck(schema as StandardSchemaLike)
  } else if (schema) {
    let fn: ValidateFunction
    try {
      fn = ajv.compile(schema)
    } catch (err) {
      throw new TenantryError('CONFIG_INVALID', `The configuration schema (config.schema) is not a valid JSON Schema: ${(err as Error).message}`, { cause: err })
    }
    app = (value) => (fn(value) ? [] : ajvIssues(fn.errors ?? [], ''))
  }
  return {
    check(config) {
      const issues: ConfigIssue[] = []
      if (config.branding !== undefined && !branding(config.branding)) issues.push(...ajvIssues(branding.errors ?? [], '/branding'))
      if (config.plugins !== undefined && !pluginCheck(config.plugins)) issues.push(...ajvIssues(pluginCheck.errors ?? [], '/plugins'))
      if (config.limits !== undefined) {
        try {
          parseLimits(config.limits, 'the configuration')
        } catch (err) {
          const key = (err as TenantryError).details?.key
          issues.push({ pointer: key && key !== 'limits' ? `/limits/${String(key)}` : '/limits', rule: 'limits', message: (err as Error).message.replace(/^Limits of the configuration: /, '') })
        }
      }
      if (app) {
        const rest: JsonObject = { ...config }
        for (const k of RESERVED_KEYS) delete rest[k]
        issues.push(...app(rest))
        // Defaults the schema filled in belong to the merged configuration.
        for (const [k, v] of Object.entries(rest)) if (!(k in config)) config[k] = v
      }
      return issues
    },
  }
}

function ajvIssues(errors: ErrorObject[], prefix: string): ConfigIssue[] {
  return errors.map((e) => {
    const p = e.params as Record<string, unknown>
    const extra = e.keyword === 'required' ? `/${String(p.missingProperty)}` : e.keyword === 'additionalProperties' ? `/${String(p.additionalProperty)}` : ''
    const pointer = prefix + e.instancePath + extra.replace(/~/g, '~0')
    const detail = e.keyword === 'enum' ? ` (${(p.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(', ')})` : ''
    return { pointer, rule: e.keyword, message: `${e.message ?? 'is invalid'}${detail}` }
  })
}

function standardCheck(schema: StandardSchemaLike): (value: JsonObject) => ConfigIssue[] {
  return (value) => {
    const result = schema['~standard'].validate(value)
    if (result instanceof Promise) {
      throw new TenantryError('CONFIG_INVALID', 'The configuration schema validates asynchronously; tenantry.config() is synchronous, so give a schema without async refinements.')
    }
    if (!result.issues) return []
    return result.issues.map((i) => ({
      pointer: toPointer((i.path ?? []).map((s) => String(typeof s === 'object' ? s.key : s))),
      rule: schema['~standard'].vendor,
      message: i.message,
    }))
  }
}

/** The coded error of a refused configuration, naming the first issue's pointer and rule. */
export function invalidConfig(where: string, issues: ConfigIssue[], status = 400): TenantryError {
  const first = issues[0]
  const more = issues.length > 1 ? ` (and ${issues.length - 1} more problem${issues.length > 2 ? 's' : ''})` : ''
  return new TenantryError(
    'CONFIG_INVALID',
    `Configuration of ${where} is invalid at '${first.pointer || '/'}': ${first.message} (rule '${first.rule}')${more}. Nothing was stored; fix the value and try again.`,
    { status, details: { pointer: first.pointer, rule: first.rule, issues } },
  )
}
