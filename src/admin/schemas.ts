/** JSON schemas shared by the admin routes (also the OpenAPI document's components). */

export const SLUG_PATTERN = '^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$'
export { SERVER_NAME_PATTERN as SERVER_PATTERN } from '../fleet/index.ts'
export const UUID_PATTERN = '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'

export const slugParam = {
  type: 'object',
  required: ['slug'],
  additionalProperties: false,
  properties: { slug: { type: 'string', pattern: SLUG_PATTERN, description: 'tenant slug' } },
} as const

export const idParam = {
  type: 'object',
  required: ['id'],
  additionalProperties: false,
  properties: { id: { type: 'string', pattern: UUID_PATTERN, description: 'operation id' } },
} as const

export const emptyBody = { type: 'object', additionalProperties: false, properties: {} } as const

export const errorSchema = {
  type: 'object',
  required: ['statusCode', 'code', 'message'],
  properties: {
    statusCode: { type: 'integer' },
    code: { type: 'string', description: 'stable error code (docs/errors.md)' },
    error: { type: 'string' },
    message: { type: 'string' },
    details: { type: 'object', additionalProperties: true },
  },
} as const

export const tenantSchema = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    slug: { type: 'string' },
    name: { type: 'string' },
    status: { type: 'string', enum: ['provisioning', 'active', 'suspended', 'deleted'] },
    statusReason: { type: ['string', 'null'] },
    tier: { type: 'string', enum: ['pooled', 'schema', 'database'] },
    plan: { type: 'string' },
    region: { type: ['string', 'null'] },
    placement: { type: 'object', properties: { server: { type: 'string' }, database: { type: 'string' }, schema: { type: 'string' } } },
    createdAt: { type: 'string', format: 'date-time' },
    updatedAt: { type: 'string', format: 'date-time' },
    deletedAt: { type: ['string', 'null'], format: 'date-time' },
  },
} as const

export const operationSchema = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    kind: { type: 'string' },
    tenantId: { type: ['string', 'null'] },
    slug: { type: ['string', 'null'] },
    state: { type: 'string', enum: ['running', 'done', 'failed', 'rolled_back'] },
    step: { type: ['string', 'null'] },
    progress: { type: 'object', additionalProperties: true },
    error: { type: ['string', 'null'] },
    startedBy: { type: 'string' },
    createdAt: { type: 'string', format: 'date-time' },
    updatedAt: { type: 'string', format: 'date-time' },
    finishedAt: { type: ['string', 'null'], format: 'date-time' },
  },
} as const

/** Error responses every route may give, for the OpenAPI document. */
export function errors(...statuses: number[]): Record<number, typeof errorSchema> {
  const out: Record<number, typeof errorSchema> = {}
  for (const s of [400, 401, 403, ...statuses]) out[s] = errorSchema
  return out
}

/** A custom domain: pending until its token is seen, then verified (docs/domains.md). */
export const domainSchema = {
  type: 'object',
  properties: {
    domain: { type: 'string' },
    tenantId: { type: 'string' },
    slug: { type: 'string' },
    status: { type: 'string', enum: ['pending', 'verified'] },
    token: { type: ['string', 'null'] },
    verifiedAt: { type: ['string', 'null'], format: 'date-time' },
    createdAt: { type: 'string', format: 'date-time' },
    instructions: {
      type: ['object', 'null'],
      description: 'where to publish the token: a TXT record, or a file served over HTTP',
      properties: { txtName: { type: 'string' }, txtValue: { type: 'string' }, httpUrl: { type: 'string' }, httpBody: { type: 'string' } },
    },
  },
} as const
