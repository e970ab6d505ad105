/**
 * The one catalogue of Tenantry errors. Every error has a stable `code`, an HTTP `status` and a
 * message that says what to do. The HTTP and CLI edges turn them into responses and exit codes.
 *
 * @example
 * ```ts
 * try { await tenantry.withTenant('acme', work) }
 * catch (err) { if (isTenantryError(err) && err.code === ErrorCodes.TENANT_NOT_FOUND) … }
 * ```
 */
export const ErrorCodes = {
  /** Nothing in the request identifies a tenant. */
  TENANT_REQUIRED: 'TENANT_REQUIRED',
  /** An identifier is malformed (not a DNS label, reserved, too long, wrong case…). */
  TENANT_INVALID: 'TENANT_INVALID',
  /** The identifier is well-formed but no tenant has it. */
  TENANT_NOT_FOUND: 'TENANT_NOT_FOUND',
  /** The tenant exists but is suspended. */
  TENANT_SUSPENDED: 'TENANT_SUSPENDED',
  /** The tenant exists but is not ready to serve (provisioning, moving). */
  TENANT_NOT_READY: 'TENANT_NOT_READY',
  /** Two strategies named different tenants (e.g. a JWT for A on B's host). */
  TENANT_MISMATCH: 'TENANT_MISMATCH',
  /** A token that was meant to identify the tenant failed verification. */
  TENANT_TOKEN_INVALID: 'TENANT_TOKEN_INVALID',
  /** Tenant SQL was attempted outside a tenant context. */
  TENANT_CONTEXT_MISSING: 'TENANT_CONTEXT_MISSING',
  /** A write tried to create or move a row into another tenant. */
  CROSS_TENANT_WRITE: 'CROSS_TENANT_WRITE',
  /** A statement that would change the session (SET, RESET, BEGIN…) was sent through a tenant handle. */
  STATEMENT_FORBIDDEN: 'STATEMENT_FORBIDDEN',
  /** A request body or argument failed validation. */
  VALIDATION_FAILED: 'VALIDATION_FAILED',
  /** A row referenced by the request does not exist (in this tenant). */
  NOT_FOUND: 'NOT_FOUND',
  /** A unique value is already taken. */
  CONFLICT: 'CONFLICT',
  /** No connection could be had within the time allowed. */
  POOL_TIMEOUT: 'POOL_TIMEOUT',
  /** The tenant's database cannot be reached. */
  TENANT_UNAVAILABLE: 'TENANT_UNAVAILABLE',
  /** A tenant or one of its users sent more requests than its plan allows (`details.layer`). */
  RATE_LIMITED: 'RATE_LIMITED',
  /** The tenant already uses its whole share of in-flight requests or connections; its queue is full or timed out. */
  TENANT_BUSY: 'TENANT_BUSY',
  /** A statement ran past the tenant's statement budget (`statement_timeout`) and was cancelled. */
  STATEMENT_TIMEOUT: 'STATEMENT_TIMEOUT',
  /** A server named in a placement is not registered. */
  SERVER_NOT_FOUND: 'SERVER_NOT_FOUND',
  /** A configuration or option is wrong. */
  CONFIG_INVALID: 'CONFIG_INVALID',
  /** An applied migration file was edited after it ran. */
  MIGRATION_CHECKSUM_MISMATCH: 'MIGRATION_CHECKSUM_MISMATCH',
  /** Provisioning failed at a step (a hook, a migration) and was rolled back. */
  PROVISION_FAILED: 'PROVISION_FAILED',
  /** A migration failed to apply. */
  MIGRATION_FAILED: 'MIGRATION_FAILED',
  /** The catalog database (the main server) cannot be opened. */
  CATALOG_UNAVAILABLE: 'CATALOG_UNAVAILABLE',
  /** The embedded data directory is held by another process. */
  DATA_DIR_LOCKED: 'DATA_DIR_LOCKED',
  /** A cache key is not a non-empty string, or a value cannot be stored (undefined, not JSON). */
  CACHE_KEY_INVALID: 'CACHE_KEY_INVALID',
  /** An object key is empty, too long, absolute, has `..` or control characters. */
  STORAGE_KEY_INVALID: 'STORAGE_KEY_INVALID',
  /** An upload would take the tenant over its plan's stored bytes or object count; nothing was stored. */
  STORAGE_QUOTA_EXCEEDED: 'STORAGE_QUOTA_EXCEEDED',
  /** The object store (S3, the storage directory) failed or cannot be reached. */
  STORAGE_UNAVAILABLE: 'STORAGE_UNAVAILABLE',
  /** A presigned storage URL of the local driver was changed, is for another method, or has expired. */
  STORAGE_URL_INVALID: 'STORAGE_URL_INVALID',
  /** A queued job carries no tenant, or a tenant whose signature does not verify: it is not run. */
  JOB_TENANT_INVALID: 'JOB_TENANT_INVALID',
  /** Background jobs cannot run here (no queue configured, or the queue's database is unreachable). */
  JOBS_UNAVAILABLE: 'JOBS_UNAVAILABLE',
  /** A custom domain is already claimed (verified or pending) by another tenant. */
  DOMAIN_TAKEN: 'DOMAIN_TAKEN',
  /** A custom domain's verification token was not found (DNS TXT or HTTP well-known path). */
  DOMAIN_VERIFICATION_FAILED: 'DOMAIN_VERIFICATION_FAILED',
  /** No plan has the name. */
  PLAN_NOT_FOUND: 'PLAN_NOT_FOUND',
  /** No feature flag has the key. */
  FLAG_NOT_FOUND: 'FLAG_NOT_FOUND',
  /** A plugin's route, hook or handler threw; `details.plugin` names it. */
  PLUGIN_FAILED: 'PLUGIN_FAILED',
  /** The admin API was called without valid admin credentials (no token, an unknown or revoked one, a bad JWT). */
  ADMIN_UNAUTHORIZED: 'ADMIN_UNAUTHORIZED',
  /** The admin credentials are valid but their role may not do this (viewer < operator < admin). */
  ADMIN_FORBIDDEN: 'ADMIN_FORBIDDEN',
  /** A tenant archive is truncated, corrupt or was changed after it was written (checksum or authentication failed). */
  ARCHIVE_CORRUPT: 'ARCHIVE_CORRUPT',
  /** A tenant archive is encrypted and its key cannot be had: no or wrong master key, or the tenant's data key was destroyed by erasure. */
  ARCHIVE_KEY_INVALID: 'ARCHIVE_KEY_INVALID',
  /** A tenant archive does not fit this installation's migrations (a file it was taken at is missing or was edited). */
  ARCHIVE_INCOMPATIBLE: 'ARCHIVE_INCOMPATIBLE',
  /** Loading an archive failed and was rolled back; the data that was serving before still serves. */
  RESTORE_FAILED: 'RESTORE_FAILED',
  /** A tenant API key is malformed, unknown, revoked or expired (`details.reason`). */
  API_KEY_INVALID: 'API_KEY_INVALID',
  /** The tenant API key is valid but lacks the scope the route needs (`details.scope`). */
  API_KEY_SCOPE_MISSING: 'API_KEY_SCOPE_MISSING',
  /** The request came without a TLS client certificate where one is required. */
  CLIENT_CERT_REQUIRED: 'CLIENT_CERT_REQUIRED',
  /** The client certificate is not registered to any tenant, was revoked or is outside its validity (`details.reason`). */
  CLIENT_CERT_INVALID: 'CLIENT_CERT_INVALID',
  /** A service-to-service tenant assertion is forged, expired, for another audience or malformed (`details.reason`). */
  TENANT_ASSERTION_INVALID: 'TENANT_ASSERTION_INVALID',
  /** Another move of the same tenant is running. */
  MOVE_IN_PROGRESS: 'MOVE_IN_PROGRESS',
  /** A move failed at a step and was rolled back; the tenant serves from its old placement. */
  MOVE_FAILED: 'MOVE_FAILED',
  /** Data of a tenant would land on a server or bucket outside the tenant's region; pass force to override (audited). */
  RESIDENCY_VIOLATION: 'RESIDENCY_VIOLATION',
  /** Something unexpected; a bug or an infrastructure fault. */
  INTERNAL: 'INTERNAL',
} as const

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes]

const STATUS: Record<ErrorCode, number> = {
  TENANT_REQUIRED: 400,
  TENANT_INVALID: 400,
  TENANT_NOT_FOUND: 404,
  TENANT_SUSPENDED: 403,
  TENANT_NOT_READY: 503,
  TENANT_MISMATCH: 403,
  TENANT_TOKEN_INVALID: 401,
  TENANT_CONTEXT_MISSING: 500,
  CROSS_TENANT_WRITE: 403,
  STATEMENT_FORBIDDEN: 500,
  VALIDATION_FAILED: 400,
  NOT_FOUND: 404,
  CONFLICT: 409,
  POOL_TIMEOUT: 503,
  TENANT_UNAVAILABLE: 503,
  RATE_LIMITED: 429,
  TENANT_BUSY: 503,
  STATEMENT_TIMEOUT: 504,
  SERVER_NOT_FOUND: 500,
  CONFIG_INVALID: 500,
  MIGRATION_CHECKSUM_MISMATCH: 500,
  PROVISION_FAILED: 500,
  MIGRATION_FAILED: 500,
  CATALOG_UNAVAILABLE: 503,
  DATA_DIR_LOCKED: 500,
  CACHE_KEY_INVALID: 400,
  STORAGE_KEY_INVALID: 400,
  STORAGE_QUOTA_EXCEEDED: 413,
  STORAGE_UNAVAILABLE: 503,
  STORAGE_URL_INVALID: 403,
  JOB_TENANT_INVALID: 403,
  JOBS_UNAVAILABLE: 503,
  DOMAIN_TAKEN: 409,
  DOMAIN_VERIFICATION_FAILED: 400,
  PLAN_NOT_FOUND: 404,
  FLAG_NOT_FOUND: 404,
  PLUGIN_FAILED: 500,
  ADMIN_UNAUTHORIZED: 401,
  ADMIN_FORBIDDEN: 403,
  ARCHIVE_CORRUPT: 400,
  ARCHIVE_KEY_INVALID: 400,
  ARCHIVE_INCOMPATIBLE: 409,
  RESTORE_FAILED: 500,
  API_KEY_INVALID: 401,
  API_KEY_SCOPE_MISSING: 403,
  CLIENT_CERT_REQUIRED: 401,
  CLIENT_CERT_INVALID: 401,
  TENANT_ASSERTION_INVALID: 401,
  MOVE_IN_PROGRESS: 409,
  MOVE_FAILED: 500,
  RESIDENCY_VIOLATION: 409,
  INTERNAL: 500,
}

/**
 * A Tenantry error: stable `code`, HTTP `status`, actionable message, optional `details` that are
 * safe to show a client, and the underlying `cause`.
 *
 * @example
 * ```ts
 * throw new TenantryError('TENANT_NOT_FOUND', "No tenant has the slug 'acme'.")
 * ```
 */
export class TenantryError extends Error {
  readonly code: ErrorCode
  readonly status: number
  readonly details?: Record<string, unknown>
  /** Seconds a client should wait before retrying (sent as `Retry-After`). */
  readonly retryAfter?: number

  constructor(
    code: ErrorCode,
    message: string,
    options: { cause?: unknown; details?: Record<string, unknown>; status?: number; retryAfter?: number } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'TenantryError'
    this.code = code
    this.status = options.status ?? STATUS[code]
    if (options.details) this.details = options.details
    if (options.retryAfter !== undefined) this.retryAfter = options.retryAfter
  }

  /** Alias of `status`, the name Fastify and Express error handlers read. */
  get statusCode(): number {
    return this.status
  }

  /** The JSON body sent to HTTP clients. Never includes the cause (it may hold internals). */
  toJSON(): { statusCode: number; code: ErrorCode; error: string; message: string; details?: Record<string, unknown> } {
    return {
      statusCode: this.status,
      code: this.code,
      error: httpReason(this.status),
      message: this.message,
      ...(this.details ? { details: this.details } : {}),
    }
  }
}

/** True when `err` is a {@link TenantryError}, optionally with the given code. */
export function isTenantryError(err: unknown, code?: ErrorCode): err is TenantryError {
  return err instanceof TenantryError && (code === undefined || err.code === code)
}

/** The HTTP status a code maps to. */
export function statusOf(code: ErrorCode): number {
  return STATUS[code]
}

function httpReason(status: number): string {
  switch (status) {
    case 400: return 'Bad Request'
    case 401: return 'Unauthorized'
    case 403: return 'Forbidden'
    case 404: return 'Not Found'
    case 409: return 'Conflict'
    case 413: return 'Payload Too Large'
    case 423: return 'Locked'
    case 429: return 'Too Many Requests'
    case 503: return 'Service Unavailable'
    case 504: return 'Gateway Timeout'
    default: return status >= 500 ? 'Internal Server Error' : 'Error'
  }
}

/**
 * Map a PostgreSQL error raised by tenant SQL to a coded error where it is the client's doing, so
 * that a forged `tenant_id` or a duplicate value is a 4xx, never a 500. Returns the input when
 * it is not one of those.
 */
export function fromPostgresError(err: unknown): unknown {
  if (!err || typeof err !== 'object' || !('code' in err)) return err
  const pgCode = (err as { code?: unknown }).code
  const message = String((err as { message?: unknown }).message ?? '')
  if (pgCode === '42501' && /row-level security/i.test(message)) {
    return new TenantryError(
      'CROSS_TENANT_WRITE',
      'The row does not belong to the current tenant: tenant_id must be left to its default or equal the current tenant.',
      { cause: err },
    )
  }
  if (pgCode === '57014' && /statement timeout/i.test(message)) {
    return new TenantryError(
      'STATEMENT_TIMEOUT',
      "The statement ran longer than this tenant's statement budget and was cancelled. Make the query cheaper (filter and index by tenant_id first) or raise the plan's statementTimeoutMs.",
      { cause: err },
    )
  }
  if (pgCode === '23505') {
    return new TenantryError('CONFLICT', 'A row with the same unique value already exists.', { cause: err })
  }
  if (pgCode === '23503') {
    return new TenantryError('VALIDATION_FAILED', 'A referenced row does not exist in this tenant.', { cause: err })
  }
  if (pgCode === '23502' || pgCode === '23514' || pgCode === '22P02' || pgCode === '22001' || pgCode === '22003') {
    return new TenantryError('VALIDATION_FAILED', `A value was rejected by the database: ${message}`, { cause: err })
  }
  return err
}
