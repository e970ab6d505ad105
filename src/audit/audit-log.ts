import { createHash } from 'node:crypto'
import { TenantryError } from '../core/errors.ts'
import type { AdminQueryable } from '../data/driver.ts'
import type { Queryable } from '../data/executor.ts'
import * as sql from './sql.ts'
import { currentRequestId } from './audit-context.ts'

/** What a caller records: who did what to which tenant, and the state before and after. */
export interface AuditInput {
  /** Who acted: `token:<name>`, `jwt:<subject>`, `cli:<user>@<host>`. */
  actor: string
  /** What was done, `<resource>.<verb>`: `tenant.suspend`, `migrations.run`, `admin-token.create`. */
  action: string
  tenantId?: string | null
  slug?: string | null
  requestId?: string | null
  /** The state before and after (hashed into the digests; the values themselves are not stored). */
  before?: unknown
  after?: unknown
  /** Small facts worth reading later (a reason, an operation id); stored as they are. */
  details?: Record<string, unknown>
}

/** Who asks for a change, for the audit entry a library call appends in the change's own transaction. */
export interface AuditActor {
  actor: string
  requestId?: string | null
  details?: Record<string, unknown>
}

/** One entry of the audit log. */
export interface AuditEntry {
  seq: number
  at: Date
  actor: string
  action: string
  tenantId: string | null
  slug: string | null
  requestId: string | null
  beforeDigest: string | null
  afterDigest: string | null
  details: Record<string, unknown>
  prevHash: string
  hash: string
}

export interface AuditQuery {
  /** A tenant's id or slug. */
  tenant?: string
  since?: Date
  action?: string
  /** Entries with a seq below this (the `next` of the previous page). */
  before?: number
  /** 1 to 1000, default 100. */
  limit?: number
}

/** What `verify` found: `ok` when every entry matches its hash and the chain is whole up to the head. */
export interface AuditVerifyReport {
  ok: boolean
  entries: number
  /** The first problems found (at most 100): an entry edited, missing, or the newest cut off. */
  problems: { seq: number; problem: 'edited' | 'missing' | 'chain-broken' | 'truncated'; message: string }[]
}

/**
 * The audit port: where control-plane actions are appended, read back and checked. The admin API
 * appends through it today; the CLI and lifecycle can route their actions through the same port.
 *
 * @example
 * ```ts
 * await tenantry.audit.append({ actor: 'cli:ops@host', action: 'tenant.suspend', slug: 'acme', before, after })
 * const report = await tenantry.audit.verify() // { ok: true, entries: 1, problems: [] }
 * ```
 */
export interface AuditLog {
  /** Append an entry; with `tx`, inside that transaction (it commits or rolls back with the change). */
  append(input: AuditInput, tx?: Queryable): Promise<AuditEntry>
  /** Entries newest first. */
  list(query?: AuditQuery): Promise<AuditEntry[]>
  /** Recompute every hash and check the chain and head: detects an edited, deleted or cut-off entry. */
  verify(): Promise<AuditVerifyReport>
}

/**
 * SHA-256 of a value's canonical JSON (keys sorted, dates as ISO strings), hex; the digest of a
 * state before or after, so a snapshot can later be proved to match an entry.
 *
 * @example
 * ```ts
 * digestOf(tenant) === entry.afterDigest // the tenant is in the state the entry recorded
 * ```
 */
export function digestOf(value: unknown): string {
  return createHash('sha256').update(canonicalJson(value)).digest('hex')
}

/** JSON with object keys sorted at every level, so that jsonb's own key order does not change a hash. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortKeys(value))
}

function sortKeys(value: unknown): unknown {
  if (value instanceof Date) return value.toISOString()
  if (Array.isArray(value)) return value.map(sortKeys)
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {}
    for (const k of Object.keys(value).sort()) {
      const v = (value as Record<string, unknown>)[k]
      if (v !== undefined) out[k] = sortKeys(v)
    }
    return out
  }
  return value
}

type Row = {
  seq: string | number; at: Date | string; actor: string; action: string; tenant_id: string | null; slug: string | null; request_id: string | null
  before_digest: string | null; after_digest: string | null; details: unknown; prev_hash: string; hash: string
}

function toEntry(r: Row): AuditEntry {
  return {
    seq: Number(r.seq), at: new Date(r.at), actor: r.actor, action: r.action, tenantId: r.tenant_id, slug: r.slug, requestId: r.request_id,
    beforeDigest: r.before_digest, afterDigest: r.after_digest,
    details: (typeof r.details === 'string' ? JSON.parse(r.details) : r.details ?? {}) as Record<string, unknown>,
    prevHash: r.prev_hash, hash: r.hash,
  }
}

/** The hash of an entry: its fields in a fixed order, chained to the previous entry's hash. */
function entryHash(e: Omit<AuditEntry, 'hash'>): string {
  const body = canonicalJson([e.seq, e.at.toISOString(), e.actor, e.action, e.tenantId, e.slug, e.requestId, e.beforeDigest, e.afterDigest, e.details])
  return createHash('sha256').update(`${e.prevHash}\n${body}`).digest('hex')
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

/** The audit log in the catalog database (`tenantry.audit_log`), hash-chained. */
class CatalogAuditLog implements AuditLog {
  constructor(private readonly admin: AdminQueryable) {}

  async append(input: AuditInput, tx?: Queryable): Promise<AuditEntry> {
    if (!input.actor || !input.action) throw new TenantryError('VALIDATION_FAILED', 'An audit entry needs an actor and an action.')
    // The request the caller runs for, read before any wait (see onBehalfOfRequest).
    const requestId = input.requestId ?? currentRequestId()
    const write = async (q: Queryable): Promise<AuditEntry> => {
      const head = (await q.query<{ seq: string | number; hash: string }>(...args(sql.lockHead()))).rows[0]
      if (!head) throw new TenantryError('INTERNAL', 'The audit head row is missing; run `tenantry audit verify`.')
      const entry: Omit<AuditEntry, 'hash'> = {
        seq: Number(head.seq) + 1,
        // Milliseconds: what a JavaScript Date and the hash can hold exactly.
        at: new Date(Math.floor(Date.now())),
        actor: input.actor,
        action: input.action,
        tenantId: input.tenantId ?? null,
        slug: input.slug ?? null,
        requestId,
        beforeDigest: input.before === undefined ? null : digestOf(input.before),
        afterDigest: input.after === undefined ? null : digestOf(input.after),
        details: JSON.parse(canonicalJson(input.details ?? {})) as Record<string, unknown>,
        prevHash: head.hash,
      }
      const hash = entryHash(entry)
      await q.query(...args(sql.insertEntry({ ...entry, at: entry.at.toISOString(), hash })))
      await q.query(...args(sql.updateHead(entry.seq, hash)))
      return { ...entry, hash }
    }
    return tx ? write(tx) : this.admin.transaction(write)
  }

  async list(query: AuditQuery = {}): Promise<AuditEntry[]> {
    const limit = query.limit ?? 100
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000) throw new TenantryError('VALIDATION_FAILED', 'limit must be a whole number from 1 to 1000.', { details: { field: 'limit' } })
    const byId = query.tenant !== undefined && UUID_RE.test(query.tenant)
    const res = await this.admin.query<Row>(...args(sql.listEntries({
      tenantId: byId ? query.tenant!.toLowerCase() : undefined,
      slug: query.tenant !== undefined && !byId ? query.tenant : undefined,
      since: query.since, action: query.action, before: query.before, limit,
    })))
    return res.rows.map(toEntry)
  }

  async verify(): Promise<AuditVerifyReport> {
    const problems: AuditVerifyReport['problems'] = []
    const note = (p: AuditVerifyReport['problems'][number]) => { if (problems.length < 100) problems.push(p) }
    let expectedSeq = 1
    let prevHash = 'genesis'
    let entries = 0
    for (;;) {
      const rows = (await this.admin.query<Row>(...args(sql.entriesAfter(expectedSeq - 1, 1000)))).rows.map(toEntry)
      if (rows.length === 0) break
      for (const e of rows) {
        if (e.seq !== expectedSeq) {
          note({ seq: expectedSeq, problem: 'missing', message: `Entries ${expectedSeq}${e.seq - 1 > expectedSeq ? `–${e.seq - 1}` : ''} are missing (deleted).` })
        } else if (e.prevHash !== prevHash) {
          note({ seq: e.seq, problem: 'chain-broken', message: `Entry ${e.seq} does not follow the entry before it (its previous hash differs).` })
        }
        const { hash, ...rest } = e
        if (entryHash(rest) !== hash) note({ seq: e.seq, problem: 'edited', message: `Entry ${e.seq} was changed after it was written (its hash does not match its content).` })
        prevHash = hash
        expectedSeq = e.seq + 1
        entries++
      }
    }
    const head = (await this.admin.query<{ seq: string | number; hash: string }>(...args(sql.readHead()))).rows[0]
    const headSeq = Number(head?.seq ?? 0)
    if (!head || headSeq !== expectedSeq - 1 || head.hash !== prevHash) {
      note({ seq: headSeq, problem: 'truncated', message: `The log ends at entry ${expectedSeq - 1} but its head records entry ${headSeq}: the newest entries were removed or the head was changed.` })
    }
    return { ok: problems.length === 0, entries, problems }
  }
}

/**
 * Create the audit log's tables in the catalog database (if needed) and return the port over them.
 *
 * @example
 * ```ts
 * const audit = await createAuditLog(admin)
 * ```
 */
export async function createAuditLog(admin: AdminQueryable): Promise<AuditLog> {
  await admin.transaction((tx) => tx.exec(sql.AUDIT_SCHEMA_SQL))
  return new CatalogAuditLog(admin)
}

function args(s: { text: string; values: unknown[] }): [string, unknown[]] {
  return [s.text, s.values]
}
