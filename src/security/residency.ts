import { resolve, sep } from 'node:path'
import type { AuditActor, AuditLog } from '../audit/index.ts'
import { TenantryError } from '../core/errors.ts'
import type { Queryable } from '../data/executor.ts'

/** Where a tenant's data would land: a server of the fleet, an object-storage bucket, a backup target. */
export interface ResidencyTarget {
  kind: 'server' | 'bucket' | 'backup'
  name: string
  /** The target's region; `null` when it declares none (then it accepts any tenant). */
  region: string | null
}

/** What {@link checkResidency} found: `forced` when the target is of another region and `force` let it through (audit it). */
export interface ResidencyCheck {
  forced: boolean
  tenantRegion: string | null
  targetRegion: string | null
}

/**
 * The one residency rule, for every place a tenant's data can land (provisioning, restores, moves,
 * backups, buckets): a tenant with a region may only go to a target of the same region. A target
 * or tenant without a region is not constrained. Another region → 409 `RESIDENCY_VIOLATION`,
 * unless `force`, which returns `{ forced: true }` for the caller to audit
 * ({@link auditForcedResidency}, in the change's transaction).
 *
 * @example
 * ```ts
 * const check = checkResidency(tenant, { kind: 'server', name: server.name, region: server.region }, { force })
 * if (check.forced) await auditForcedResidency(audit, tenant, target, check, by, tx)
 * ```
 */
export function checkResidency(
  tenant: { slug: string; region: string | null },
  target: ResidencyTarget,
  opts: { force?: boolean } = {},
): ResidencyCheck {
  const tenantRegion = tenant.region ?? null
  const targetRegion = target.region ?? null
  const outside = tenantRegion !== null && targetRegion !== null && tenantRegion !== targetRegion
  if (outside && opts.force !== true) {
    throw new TenantryError(
      'RESIDENCY_VIOLATION',
      `Tenant '${tenant.slug}' must stay in region '${tenantRegion}', but ${target.kind} '${target.name}' is in '${targetRegion}'. Choose a ${target.kind} in '${tenantRegion}', or force it (audited).`,
      { details: { tenantRegion, targetRegion, target: target.name, kind: target.kind } },
    )
  }
  return { forced: outside, tenantRegion, targetRegion }
}

/**
 * Append the audit entry of a forced residency exception (`residency.force`), inside `tx` when
 * given so that it commits with the change.
 *
 * @example
 * ```ts
 * await auditForcedResidency(tenantry.audit, tenant, target, check, { actor: 'cli:ops@host' }, tx)
 * ```
 */
export async function auditForcedResidency(
  audit: AuditLog,
  tenant: { id: string; slug: string },
  target: ResidencyTarget,
  check: ResidencyCheck,
  by: AuditActor | undefined,
  tx?: Queryable,
): Promise<void> {
  await audit.append({
    actor: by?.actor ?? 'library', action: 'residency.force', tenantId: tenant.id, slug: tenant.slug, requestId: by?.requestId ?? null,
    details: { ...by?.details, kind: target.kind, target: target.name, tenantRegion: check.tenantRegion, targetRegion: check.targetRegion },
  }, tx)
}

/**
 * The backup target a path falls in: the longest configured directory containing it, with its
 * region (`portability.backupRegions`, or `TENANTRY_BACKUP_REGIONS` as `dir=region,dir=region`);
 * a path under none has no region (not constrained). An `s3://` URL matches the configured `s3://`
 * prefixes the same way, by its string: `s3://acme-eu/` or `s3://acme-eu` holds every key of the
 * bucket, `s3://acme/eu/` the keys under `eu/`.
 *
 * @example
 * ```ts
 * backupTarget('/mnt/eu/acme.tar', { '/mnt/eu': 'eu', '/mnt/us': 'us' }) // { kind: 'backup', name: '/mnt/eu', region: 'eu' }
 * ```
 */
export function backupTarget(path: string, regions: Record<string, string> | undefined): ResidencyTarget {
  const table = regions ?? parseRegions(process.env.TENANTRY_BACKUP_REGIONS)
  if (path.startsWith('s3://')) return s3BackupTarget(path, table)
  const full = resolve(path)
  let best: ResidencyTarget = { kind: 'backup', name: full, region: null }
  let bestLength = -1
  for (const [dir, region] of Object.entries(table)) {
    const d = resolve(dir)
    if ((full === d || full.startsWith(d.endsWith(sep) ? d : d + sep)) && d.length > bestLength) {
      best = { kind: 'backup', name: d, region }
      bestLength = d.length
    }
  }
  return best
}

function s3BackupTarget(url: string, table: Record<string, string>): ResidencyTarget {
  let best: ResidencyTarget = { kind: 'backup', name: url, region: null }
  let bestLength = -1
  for (const [prefix, region] of Object.entries(table)) {
    if (!prefix.startsWith('s3://')) continue
    const p = prefix.endsWith('/') ? prefix.slice(0, -1) : prefix
    if ((url === p || url.startsWith(p + '/')) && p.length > bestLength) {
      best = { kind: 'backup', name: prefix, region }
      bestLength = p.length
    }
  }
  return best
}

function parseRegions(text: string | undefined): Record<string, string> {
  const out: Record<string, string> = {}
  for (const part of (text ?? '').split(',')) {
    const at = part.lastIndexOf('=')
    if (at > 0 && at < part.length - 1) out[part.slice(0, at).trim()] = part.slice(at + 1).trim()
  }
  return out
}
