import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto'
import { TenantryError } from '../core/errors.ts'
import type { AdminQueryable } from '../data/driver.ts'
import * as sql from './sql.ts'

/**
 * The master key that wraps every tenant's archive data key: 32 bytes as 64 hex characters, from
 * the `masterKey` option or `TENANTRY_MASTER_KEY`. It is never stored by Tenantry; keep it in a
 * secret manager. Null when neither is set (archives can then only be written unencrypted).
 */
export function resolveMasterKey(option: string | undefined): Buffer | null {
  const text = option ?? process.env.TENANTRY_MASTER_KEY
  if (text === undefined || text === '') return null
  if (!/^[0-9a-fA-F]{64}$/.test(text)) {
    throw new TenantryError('CONFIG_INVALID', 'The master key (portability.masterKey or TENANTRY_MASTER_KEY) must be 64 hex characters (32 bytes), e.g. from `openssl rand -hex 32`.')
  }
  return Buffer.from(text, 'hex')
}

/** Names a master key without revealing it: tells "wrong master key" from "corrupt". */
export function fingerprint(master: Buffer): string {
  return createHash('sha256').update('tenantry-master-key').update(master).digest('hex').slice(0, 16)
}

/** AES-256-GCM of a small value: `iv || ciphertext || tag`. */
export function seal(key: Buffer, plain: Buffer, aad: string): Buffer {
  const iv = randomBytes(12)
  const c = createCipheriv('aes-256-gcm', key, iv)
  c.setAAD(Buffer.from(aad))
  const body = Buffer.concat([c.update(plain), c.final()])
  return Buffer.concat([iv, body, c.getAuthTag()])
}

/** The inverse of {@link seal}; throws when the key is wrong or the bytes were changed. */
export function open(key: Buffer, sealed: Buffer, aad: string): Buffer {
  const d = createDecipheriv('aes-256-gcm', key, sealed.subarray(0, 12))
  d.setAAD(Buffer.from(aad))
  d.setAuthTag(sealed.subarray(sealed.length - 16))
  return Buffer.concat([d.update(sealed.subarray(12, sealed.length - 16)), d.final()])
}

/**
 * Per-tenant data keys, kept in the catalog wrapped by the master key. One key per tenant for all
 * its archives, so that destroying it (erasure) makes every one of them unreadable at once.
 *
 * @example
 * ```ts
 * const keys = new TenantKeys(admin, resolveMasterKey(undefined))
 * const dataKey = await keys.dataKey(tenant.id, { create: true })
 * ```
 */
export class TenantKeys {
  constructor(private readonly admin: AdminQueryable, private readonly master: Buffer | null) {}

  get available(): boolean {
    return this.master !== null
  }

  /** The tenant's data key; created on first use with `create`. Coded errors say why it cannot be had. */
  async dataKey(tenantId: string, opts: { create?: boolean } = {}): Promise<Buffer> {
    const master = this.requireMaster('read or write encrypted archives')
    let row = (await this.admin.query<{ wrapped_key: string | null; master_fingerprint: string; destroyed_at: Date | null }>(...args(sql.tenantKey(tenantId)))).rows[0]
    if (!row && opts.create) {
      const wrapped = seal(master, randomBytes(32), `tenant-key:${tenantId}`).toString('base64')
      await this.admin.query(...args(sql.insertTenantKey(tenantId, wrapped, fingerprint(master))))
      row = (await this.admin.query<{ wrapped_key: string | null; master_fingerprint: string; destroyed_at: Date | null }>(...args(sql.tenantKey(tenantId)))).rows[0]
    }
    if (!row) throw new TenantryError('ARCHIVE_KEY_INVALID', `This catalog holds no data key for tenant ${tenantId}: the archive was encrypted by another installation, whose catalog and master key it needs.`)
    if (row.wrapped_key === null) {
      throw new TenantryError('ARCHIVE_KEY_INVALID', `The data key of tenant ${tenantId} was destroyed by its erasure (${new Date(row.destroyed_at ?? 0).toISOString()}): its encrypted archives can no longer be read.`)
    }
    if (row.master_fingerprint !== fingerprint(master)) {
      throw new TenantryError('ARCHIVE_KEY_INVALID', `The master key given (fingerprint ${fingerprint(master)}) is not the one that wrapped tenant ${tenantId}'s data key (${row.master_fingerprint}). Set TENANTRY_MASTER_KEY to the original key.`)
    }
    try {
      return open(master, Buffer.from(row.wrapped_key, 'base64'), `tenant-key:${tenantId}`)
    } catch (err) {
      throw new TenantryError('ARCHIVE_KEY_INVALID', `The wrapped data key of tenant ${tenantId} does not open with the master key given.`, { cause: err })
    }
  }

  /** Destroy the tenant's data key; returns when it was destroyed, or null when it never had one. */
  async destroy(tenantId: string): Promise<Date | null> {
    const res = await this.admin.query<{ destroyed_at: Date | string }>(...args(sql.destroyTenantKey(tenantId)))
    return res.rows[0] ? new Date(res.rows[0].destroyed_at) : null
  }

  private requireMaster(what: string): Buffer {
    if (!this.master) throw new TenantryError('ARCHIVE_KEY_INVALID', `No master key is set: set TENANTRY_MASTER_KEY (64 hex characters) or createTenantry({ portability: { masterKey } }) to ${what}.`)
    return this.master
  }
}

function args(s: { text: string; values: unknown[] }): [string, unknown[]] {
  return [s.text, s.values]
}
