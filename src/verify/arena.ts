import type { FastifyInstance } from 'fastify'
import type { Tenant, Tenantry } from '../index.ts'
import type { RelationInfo } from './discover.ts'
import type { Random } from './random.ts'

/** A row as the database returned it (the suite reads `tenant_id` and key columns). */
export type Row = Record<string, unknown>

/** Kinds of attempt, in the order the report lists them. */
export const ATTEMPT_KINDS = [
  'http-own-read',
  'http-own-write',
  'http-mismatch',
  'http-identifier-trick',
  'http-unknown-tenant',
  'http-inactive-tenant',
  'http-no-tenant',
  'http-forged-write',
  'http-move-row',
  'http-cross-read',
  'http-cross-update',
  'http-cross-delete',
  'sql-session-change',
  'sql-cross-read',
  'sql-forged-write',
  'sql-no-context',
  'sql-error-then-read',
  'sql-concurrent',
] as const

export type AttemptKind = (typeof ATTEMPT_KINDS)[number]

/** One leak (a row of another tenant returned or changed) or failure (a bad input not refused with a coded 4xx, a control that did not work). */
export interface VerifyFinding {
  type: 'leak' | 'failure'
  kind: AttemptKind | 'integrity'
  /** Slug of the tenant the attempt ran as (or named), when there is one. */
  attacker?: string
  /** Slug of the tenant whose rows were aimed at. */
  victim?: string
  relation?: string
  /** What was sent and what came back. */
  detail: string
}

/** Per-kind tally. */
export interface KindStats {
  attempts: number
  leaks: number
  failures: number
  /** Attempts refused as they should be (a coded 4xx, a coded error). */
  refused: number
  /** Codes of the refusals, with counts. */
  codes: Record<string, number>
}

/** Everything the attempts need: the scratch Tenantry, the app, the tenants and what they own. */
export interface Arena {
  tenantry: Tenantry
  app: FastifyInstance
  rnd: Random
  /** Active tenants (attackers and victims). */
  active: Tenant[]
  /** Every tenant with rows: active, suspended and deleted (victims). */
  all: Tenant[]
  suspended: Tenant[]
  deleted: Tenant[]
  /** Tenant relations the suite attacks (with `tenant_id`). */
  relations: RelationInfo[]
  /** Tables rows could be written to, per tenant. */
  writable: RelationInfo[]
  /** Rows each tenant was filled with, per table. */
  rowsOf: Map<string, Map<string, Row[]>>
  /** Rows of each tenant in each table as committed after the fill (the own-read control). */
  countOf: Map<string, Map<string, number>>
  /** Signed bearer tokens per tenant id: `slug`, `id`, and the rejected kinds. */
  tokens: Map<string, Record<TokenKind, string>>
  /** Build a row of `table` for `tenant`, `tenant_id` set to `tenantId` (another tenant's, to forge). */
  makeRow(table: RelationInfo, tenant: Tenant, tenantId: string): Record<string, string | null> | null
  baseDomain: string
  customDomain: string
}

export type TokenKind = 'slug' | 'id' | 'badSignature' | 'expired' | 'unsigned' | 'upperClaim' | 'numberClaim'

/** How one attempt ended, for the tally. */
export interface Outcome {
  refusedWith?: string
  leaks?: VerifyFinding[]
  failures?: VerifyFinding[]
}
