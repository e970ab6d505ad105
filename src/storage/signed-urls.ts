import { createHmac, timingSafeEqual } from 'node:crypto'
import { TenantryError } from '../core/errors.ts'
import { isUuid } from '../core/validation.ts'

/** Path under which the adapters serve the local driver's presigned URLs. */
export const SIGNED_URL_PATH = '/_tenantry/storage'

/** What a presigned URL of the local driver allows: one method on one object of one tenant, until `expires`. */
export interface SignedObject {
  method: 'GET' | 'PUT'
  tenantId: string
  key: string
  /** Unix seconds. */
  expires: number
  /** PUT: the exact size checked against the quota at signing. */
  size: number | null
  /** PUT: the content type the upload must carry, if one was signed. */
  contentType: string | null
}

function mac(secret: string, o: SignedObject): string {
  const text = ['tenantry.storage.url', o.method, o.tenantId, o.key, o.expires, o.size ?? '', o.contentType ?? ''].join('\n')
  return createHmac('sha256', secret).update(text, 'utf8').digest('base64url')
}

/**
 * A URL (relative to `base`, the app's public origin, or `''`) that lets its holder do `o.method`
 * on one object: the tenant id and key are in the path and, with the expiry, size and content
 * type, under an HMAC-SHA256 with the installation's key.
 */
export function signObjectUrl(secret: string, base: string, o: SignedObject): string {
  const path = `${SIGNED_URL_PATH}/${o.tenantId}/${o.key.split('/').map(encodeURIComponent).join('/')}`
  const q = new URLSearchParams({ method: o.method, expires: String(o.expires) })
  if (o.size !== null) q.set('size', String(o.size))
  if (o.contentType !== null) q.set('type', o.contentType)
  q.set('sig', mac(secret, o))
  return `${base.replace(/\/+$/, '')}${path}?${q}`
}

/**
 * The object a presigned URL names, if its signature verifies for `method` and it has not expired;
 * otherwise 403 `STORAGE_URL_INVALID` (nothing says which part was wrong beyond expiry).
 */
export function verifyObjectUrl(secret: string, method: string, url: string, now = Date.now()): SignedObject {
  const invalid = (why: string) => new TenantryError('STORAGE_URL_INVALID', `This storage URL ${why}; ask the app for a new one.`)
  const u = new URL(url, 'http://x')
  if (!u.pathname.startsWith(`${SIGNED_URL_PATH}/`)) throw invalid('is not a presigned storage URL')
  const rest = u.pathname.slice(SIGNED_URL_PATH.length + 1)
  const slash = rest.indexOf('/')
  let key: string
  try {
    key = rest.slice(slash + 1).split('/').map(decodeURIComponent).join('/')
  } catch {
    throw invalid('is malformed')
  }
  const q = u.searchParams
  const m = method === 'HEAD' ? 'GET' : method
  const o: SignedObject = {
    method: q.get('method') as 'GET' | 'PUT',
    tenantId: slash > 0 ? rest.slice(0, slash) : '',
    key,
    expires: Number(q.get('expires')),
    size: q.has('size') ? Number(q.get('size')) : null,
    contentType: q.get('type'),
  }
  if (!isUuid(o.tenantId) || (o.method !== 'GET' && o.method !== 'PUT') || !Number.isSafeInteger(o.expires)) throw invalid('is malformed')
  if (o.method !== m) throw invalid(`is for ${o.method}, not ${printableMethod(method)}`)
  const expected = Buffer.from(mac(secret, o))
  const got = Buffer.from(q.get('sig') ?? '')
  if (got.length !== expected.length || !timingSafeEqual(got, expected)) throw invalid('has a signature that does not verify')
  if (o.expires * 1000 <= now) throw invalid(`expired at ${new Date(o.expires * 1000).toISOString()}`)
  return o
}

function printableMethod(m: string): string {
  return /^[A-Z]{1,10}$/.test(m) ? m : '?'
}
