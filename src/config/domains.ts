import { randomBytes } from 'node:crypto'
import type { AuditActor, AuditLog } from '../audit/index.ts'
import { resolveTxt } from 'node:dns/promises'
import type { Catalog } from '../catalog/catalog.ts'
import { TenantryError } from '../core/errors.ts'
import type { Tenant } from '../core/types.ts'
import { isUuid, printable } from '../core/validation.ts'
import type { AdminQueryable } from '../data/driver.ts'
import type { Queryable } from '../data/executor.ts'
import { normalizeHost } from '../resolve/strategies.ts'
import * as sql from './sql.ts'

/** Where domain verification looks; both are injectable so tests (and air-gapped installs) need no internet. */
export interface DomainOptions {
  /** TXT lookup (default `dns.promises.resolveTxt`). */
  resolveTxt?: (name: string) => Promise<string[][]>
  /** HTTP GET of the well-known URL, returning status and body (default: `fetch` with a 5 s timeout, no redirects). */
  fetchText?: (url: string) => Promise<{ status: number; body: string }>
}

/** A custom domain of a tenant. */
export interface CustomDomain {
  domain: string
  tenantId: string
  slug: string
  /** `verified` domains resolve; `pending` ones wait for their token to be seen. */
  status: 'pending' | 'verified'
  /** The token to publish (null for domains added verified by an operator). */
  token: string | null
  verifiedAt: Date | null
  createdAt: Date
  /** Where to publish the token: a TXT record, or a file at an HTTP path. */
  instructions: { txtName: string; txtValue: string; httpUrl: string; httpBody: string } | null
}

/** The well-known path of the HTTP check. */
export const DOMAIN_WELL_KNOWN_PATH = '/.well-known/tenantry-domain-verification'
/** The DNS name of the TXT check is this label before the domain. */
export const DOMAIN_TXT_LABEL = '_tenantry-verification'

interface DomainRow { domain: string; tenant_id: string; slug: string; verification_token: string | null; verified_at: Date | string | null; created_at: Date | string }

function toDomain(r: DomainRow): CustomDomain {
  const token = r.verification_token
  return {
    domain: r.domain,
    tenantId: r.tenant_id,
    slug: r.slug,
    status: r.verified_at === null ? 'pending' : 'verified',
    token,
    verifiedAt: r.verified_at === null ? null : new Date(r.verified_at),
    createdAt: new Date(r.created_at),
    instructions: token === null ? null : {
      txtName: `${DOMAIN_TXT_LABEL}.${r.domain}`,
      txtValue: `tenantry-verification=${token}`,
      httpUrl: `http://${r.domain}${DOMAIN_WELL_KNOWN_PATH}`,
      httpBody: token,
    },
  }
}

async function defaultFetch(url: string): Promise<{ status: number; body: string }> {
  const res = await fetch(url, { redirect: 'manual', signal: AbortSignal.timeout(5000) })
  const body = (await res.text()).slice(0, 4096)
  return { status: res.status, body }
}

/**
 * Custom domains (issue 12): added pending with a verification token, resolving only once the
 * token is seen in DNS (`TXT _tenantry-verification.<domain>`) or over HTTP (the well-known path).
 * Every change goes through the catalog, so every process's lookups forget the domain within a second.
 */
export class DomainStore {
  private readonly resolveTxt: NonNullable<DomainOptions['resolveTxt']>
  private readonly fetchText: NonNullable<DomainOptions['fetchText']>

  constructor(private readonly catalog: Catalog, private readonly admin: AdminQueryable, opts: DomainOptions = {}, private readonly audit?: AuditLog) {
    this.resolveTxt = opts.resolveTxt ?? resolveTxt
    this.fetchText = opts.fetchText ?? defaultFetch
  }

  /**
   * Claim `domain` for a tenant: a pending domain with a new token (the same one again when it is
   * already pending for this tenant). `DOMAIN_TAKEN` (409) when another tenant has it, verified or pending.
   * Every change is appended to the audit log (`tenant.domain.add|verify|remove`) in its transaction.
   */
  async add(slugOrId: string, domain: string, by?: AuditActor): Promise<CustomDomain> {
    const tenant = await this.tenant(slugOrId)
    const name = checkDomain(domain)
    return this.catalog.change(name, async (tx) => {
      const existing = await row(tx, name, true)
      if (existing) {
        if (existing.tenant_id !== tenant.id) throw taken(name, existing)
        return toDomain(existing)
      }
      await run(tx, sql.insertPendingDomain(name, tenant.id, randomBytes(16).toString('hex')))
      const added = toDomain((await row(tx, name, false))!)
      await this.audited(tx, 'tenant.domain.add', added, by, null, { status: added.status })
      return added
    })
  }

  /**
   * Look for the token of a pending domain (DNS TXT first, then HTTP, unless `method` says one)
   * and mark it verified: from then on it resolves to its tenant in every process.
   * `DOMAIN_VERIFICATION_FAILED` (400) says what was looked for and what was found.
   */
  async verify(domain: string, opts: { method?: 'dns' | 'http' | 'any' } = {}, by?: AuditActor): Promise<CustomDomain> {
    const name = checkDomain(domain)
    const found = await row(this.admin, name, false)
    if (!found) throw new TenantryError('NOT_FOUND', `No tenant has added the domain '${name}'; add it with 'tenantry domains add <slug> ${name}'.`, { details: { domain: name } })
    if (found.verified_at !== null) return toDomain(found)
    const d = toDomain(found)
    const method = opts.method ?? 'any'
    const seen: string[] = []
    let ok = false
    if (method !== 'http') ok = await this.checkDns(d, seen)
    if (!ok && method !== 'dns') ok = await this.checkHttp(d, seen)
    if (!ok) {
      throw new TenantryError(
        'DOMAIN_VERIFICATION_FAILED',
        `The verification token of '${name}' was not found: ${seen.join('; ')}. Publish TXT '${d.instructions!.txtName}' = '${d.instructions!.txtValue}'${method === 'dns' ? '' : ` or serve '${d.token}' at ${d.instructions!.httpUrl}`}, then verify again.`,
        { details: { domain: name, checked: seen } },
      )
    }
    return this.catalog.change(name, async (tx) => {
      const again = await row(tx, name, true)
      // Removed or re-added meanwhile: the token seen is not this row's.
      if (!again || again.verification_token !== d.token) throw new TenantryError('CONFLICT', `The domain '${name}' changed while it was being verified; verify again.`, { details: { domain: name } })
      await run(tx, sql.markDomainVerified(name))
      const verified = toDomain((await row(tx, name, false))!)
      await this.audited(tx, 'tenant.domain.verify', verified, by, d, { method })
      return verified
    })
  }

  /** Remove a domain (pending or verified); every process stops resolving it within a second. */
  async remove(domain: string, by?: AuditActor): Promise<boolean> {
    const name = checkDomain(domain)
    return this.catalog.change(name, async (tx) => {
      const found = await row(tx, name, true)
      const res = await tx.query(sql.deleteDomain(name).text, sql.deleteDomain(name).values)
      if (found !== undefined && res.rowCount > 0) {
        const gone = toDomain(found)
        await this.audited(tx, 'tenant.domain.remove', gone, by, gone, { status: gone.status }, null)
      }
      return res.rowCount > 0
    })
  }

  /** The entry of a domain change, in its transaction (both commit or neither). */
  private async audited(tx: Queryable, action: string, d: CustomDomain, by: AuditActor | undefined, before: CustomDomain | null, facts: Record<string, unknown>, after: CustomDomain | null = d): Promise<void> {
    if (this.audit === undefined) return
    const state = (x: CustomDomain | null) => (x === null ? null : { domain: x.domain, tenantId: x.tenantId, status: x.status, verifiedAt: x.verifiedAt })
    await this.audit.append({
      actor: by?.actor ?? 'library', action, tenantId: d.tenantId, slug: d.slug, requestId: by?.requestId ?? null,
      before: state(before), after: state(after), details: { ...by?.details, domain: d.domain, ...facts },
    }, tx)
  }

  /** Domains of one tenant, or of all. */
  async list(slugOrId?: string): Promise<CustomDomain[]> {
    const tenantId = slugOrId === undefined ? null : (await this.tenant(slugOrId)).id
    const s = sql.listDomains(tenantId)
    return (await this.admin.query<DomainRow>(s.text, s.values)).rows.map(toDomain)
  }

  private async checkDns(d: CustomDomain, seen: string[]): Promise<boolean> {
    const { txtName, txtValue } = d.instructions!
    try {
      const records = (await this.resolveTxt(txtName)).map((chunks) => chunks.join(''))
      if (records.includes(txtValue)) return true
      seen.push(`TXT ${txtName} has ${records.length === 0 ? 'no records' : records.map((r) => `'${printable(r, 80)}'`).join(', ')}`)
    } catch (err) {
      seen.push(`TXT ${txtName}: ${printable(String((err as { code?: string }).code ?? (err as Error).message), 80)}`)
    }
    return false
  }

  private async checkHttp(d: CustomDomain, seen: string[]): Promise<boolean> {
    const { httpUrl } = d.instructions!
    try {
      const res = await this.fetchText(httpUrl)
      if (res.status === 200 && res.body.trim() === d.token) return true
      seen.push(`GET ${httpUrl} answered ${res.status}${res.status === 200 ? ' without the token' : ''}`)
    } catch (err) {
      seen.push(`GET ${httpUrl}: ${printable((err as Error).message, 80)}`)
    }
    return false
  }

  private async tenant(slugOrId: string): Promise<Tenant> {
    const t = typeof slugOrId === 'string' ? (isUuid(slugOrId) ? await this.catalog.byId(slugOrId) : await this.catalog.bySlug(slugOrId)) : null
    if (!t || t.status === 'deleted') throw new TenantryError('TENANT_NOT_FOUND', `No tenant has the slug or id '${printable(String(slugOrId))}'.`)
    return t
  }
}

/** A domain as stored: lowercase, no port or trailing dot, a valid host name of two labels or more. */
export function checkDomain(domain: string): string {
  let name: string | null = null
  try {
    name = typeof domain === 'string' ? normalizeHost(domain) : null
  } catch (err) {
    throw new TenantryError('VALIDATION_FAILED', `'${printable(String(domain))}' is not a valid domain name: ${(err as Error).message}`, { cause: err, details: { domain: printable(String(domain)) } })
  }
  if (name === null || !name.includes('.') || domain.includes(':')) {
    throw new TenantryError('VALIDATION_FAILED', `'${printable(String(domain))}' is not a domain name like app.example.com (no port, no IP address).`, { details: { domain: printable(String(domain)) } })
  }
  return name
}

async function row(q: Queryable, domain: string, lock: boolean): Promise<DomainRow | undefined> {
  const s = sql.domainRow(domain, lock)
  return (await q.query<DomainRow>(s.text, s.values)).rows[0]
}

async function run(tx: Queryable, s: { text: string; values: unknown[] }): Promise<void> {
  await tx.query(s.text, s.values)
}

function taken(domain: string, existing: DomainRow): TenantryError {
  const state = existing.verified_at === null ? 'is pending verification for' : 'is verified for'
  return new TenantryError('DOMAIN_TAKEN', `The domain '${domain}' ${state} another tenant. Only one tenant can have a domain; remove it there first ('tenantry domains remove ${domain}').`, {
    details: { domain },
  })
}
