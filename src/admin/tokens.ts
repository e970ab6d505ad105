import { createHash, randomBytes, randomUUID } from 'node:crypto'
import type { AuditLog } from '../audit/index.ts'
import { TenantryError } from '../core/errors.ts'
import { isUuid, printable } from '../core/validation.ts'
import type { AdminQueryable } from '../data/driver.ts'
import type { Tenantry } from '../runtime.ts'
import * as sql from './sql.ts'

/** What an admin may do: a viewer reads, an operator acts on tenants and operations, an admin also purges and manages tokens. */
export type AdminRole = 'viewer' | 'operator' | 'admin'
export const ADMIN_ROLES: readonly AdminRole[] = ['viewer', 'operator', 'admin']

/** Whether `role` includes the rights of `needed`. */
export function roleAllows(role: AdminRole, needed: AdminRole): boolean {
  return ADMIN_ROLES.indexOf(role) >= ADMIN_ROLES.indexOf(needed)
}

/** An admin token as listed (never the token itself). */
export interface AdminToken {
  id: string
  name: string
  role: AdminRole
  createdBy: string
  createdAt: Date
  lastUsedAt: Date | null
  revokedAt: Date | null
}

/** Admin tokens start with this, so that a leaked one is recognisable (secret scanners, logs). */
export const TOKEN_PREFIX = 'tnta_'

type Row = { id: string; name: string; role: AdminRole; created_by: string; created_at: Date | string; last_used_at: Date | string | null; revoked_at: Date | string | null }
const toToken = (r: Row): AdminToken => ({
  id: r.id, name: r.name, role: r.role, createdBy: r.created_by, createdAt: new Date(r.created_at),
  lastUsedAt: r.last_used_at === null ? null : new Date(r.last_used_at), revokedAt: r.revoked_at === null ? null : new Date(r.revoked_at),
})

const hashOf = (token: string) => createHash('sha256').update(token).digest('hex')
const NAME_RE = /^[a-z0-9][a-z0-9._-]{0,62}$/

/**
 * The admin tokens of the catalog: created (shown once), listed, revoked, and checked on every
 * admin API request. Creating and revoking are audited in the same transaction.
 *
 * @example
 * ```ts
 * const tokens = await adminTokens(tenantry)
 * const { token } = await tokens.create({ name: 'ops-alice', role: 'operator' }, 'cli:alice@host')
 * ```
 */
export class AdminTokens {
  /** When this process last recorded each token's use: at most one write a minute per token, not one per request. */
  private readonly touched = new Map<string, number>()
  private constructor(private readonly admin: AdminQueryable, private readonly audit: AuditLog) {}

  static async open(admin: AdminQueryable, audit: AuditLog): Promise<AdminTokens> {
    await admin.transaction((tx) => tx.exec(sql.ADMIN_SCHEMA_SQL))
    return new AdminTokens(admin, audit)
  }

  /** Create a token; the plain token is in the result only, the catalog keeps its hash. */
  async create(input: { name: string; role: AdminRole }, actor: string, requestId?: string): Promise<{ token: string; info: AdminToken }> {
    if (typeof input.name !== 'string' || !NAME_RE.test(input.name)) {
      throw new TenantryError('VALIDATION_FAILED', `Token name '${printable(String(input.name))}' must be 1–63 lowercase letters, digits, '.', '_' or '-'.`, { details: { field: 'name' } })
    }
    if (!ADMIN_ROLES.includes(input.role)) {
      throw new TenantryError('VALIDATION_FAILED', `Role '${printable(String(input.role))}' is not one of ${ADMIN_ROLES.join(', ')}.`, { details: { field: 'role' } })
    }
    const token = TOKEN_PREFIX + randomBytes(32).toString('base64url')
    try {
      const info = await this.admin.transaction(async (tx) => {
        const row = toToken((await tx.query<Row>(...args(sql.insertToken({ id: randomUUID(), name: input.name, role: input.role, hash: hashOf(token), createdBy: actor })))).rows[0])
        await this.audit.append({ actor, action: 'admin-token.create', requestId, after: { id: row.id, name: row.name, role: row.role }, details: { name: row.name, role: row.role } }, tx)
        return row
      })
      return { token, info }
    } catch (err) {
      if ((err as { code?: string }).code === '23505') throw new TenantryError('CONFLICT', `A token named '${input.name}' exists already; choose another name or revoke it first.`, { cause: err, details: { field: 'name' } })
      throw err
    }
  }

  async list(): Promise<AdminToken[]> {
    return (await this.admin.query<Row>(...args(sql.listTokens()))).rows.map(toToken)
  }

  /** Revoke by name or id; a token already revoked or unknown is `NOT_FOUND`. */
  async revoke(nameOrId: string, actor: string, requestId?: string): Promise<AdminToken> {
    return this.admin.transaction(async (tx) => {
      const row = (await tx.query<Row>(...args(sql.revokeToken(nameOrId, isUuid(nameOrId))))).rows[0]
      if (!row) throw new TenantryError('NOT_FOUND', `No active admin token is named '${printable(nameOrId)}'; 'tenantry admin tokens list' shows them.`)
      const info = toToken(row)
      await this.audit.append({ actor, action: 'admin-token.revoke', requestId, after: { id: info.id, revokedAt: info.revokedAt }, details: { name: info.name } }, tx)
      return info
    })
  }

  /** The active token a bearer string names, or null. */
  async verify(token: string): Promise<AdminToken | null> {
    if (typeof token !== 'string' || !token.startsWith(TOKEN_PREFIX) || token.length > 200) return null
    const hash = hashOf(token)
    const row = (await this.admin.query<Row & { token_hash?: string }>(...args(sql.tokenByHash(hash)))).rows[0]
    if (!row) return null
    const now = Date.now()
    if ((this.touched.get(row.id) ?? 0) < now - 60_000) {
      if (this.touched.size > 10_000) this.touched.clear()
      this.touched.set(row.id, now)
      this.admin.query(...args(sql.touchToken(row.id))).catch(() => undefined)
    }
    return toToken(row)
  }
}

/**
 * The admin tokens of a Tenantry installation (creates their table on first use).
 *
 * @example
 * ```ts
 * const tokens = await adminTokens(tenantry)
 * await tokens.revoke('ops-alice', 'cli:bob@host')
 * ```
 */
export function adminTokens(tenantry: Tenantry): Promise<AdminTokens> {
  const main = tenantry.dataPlane.server('main')
  return AdminTokens.open(tenantry.dataPlane.driver('main').admin(main.mainDatabase), tenantry.audit)
}

function args(s: { text: string; values: unknown[] }): [string, unknown[]] {
  return [s.text, s.values]
}
