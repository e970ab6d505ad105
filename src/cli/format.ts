import type { Tenant } from '../core/types.ts'
import type { Operation } from '../lifecycle/operations.ts'
import { formatBytes, formatMs } from '../observe/advise.ts'
import type { Advice, TopRow, UsageRow } from '../observe/types.ts'

/** Columns padded to their widest cell; the header underlined. */
export function table(headers: string[], rows: (string | number | null | undefined)[][]): string {
  const cells = rows.map((r) => r.map((c) => (c === null || c === undefined ? '' : String(c))))
  const widths = headers.map((h, i) => Math.max(h.length, ...cells.map((r) => r[i].length)))
  const line = (r: string[]) => r.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd()
  return [line(headers), line(widths.map((w) => '-'.repeat(w))), ...cells.map(line)].join('\n')
}

export function tenantJson(t: Tenant): Record<string, unknown> {
  return {
    id: t.id, slug: t.slug, name: t.name, status: t.status, statusReason: t.statusReason, tier: t.tier, plan: t.plan,
    region: t.region, placement: t.placement, config: t.config, createdAt: t.createdAt, updatedAt: t.updatedAt, deletedAt: t.deletedAt,
  }
}

export function tenantsTable(tenants: Tenant[]): string {
  if (tenants.length === 0) return 'No tenants.'
  return table(
    ['SLUG', 'NAME', 'TIER', 'STATUS', 'PLAN', 'SERVER', 'WHERE'],
    tenants.map((t) => [t.slug, t.name, t.tier, t.status, t.plan, t.placement.server, t.placement.schema ?? t.placement.database]),
  )
}

export function tenantDetails(t: Tenant, domains: string[]): string {
  const rows: [string, string][] = [
    ['slug', t.slug], ['id', t.id], ['name', t.name], ['tier', t.tier],
    ['status', t.statusReason ? `${t.status} (${t.statusReason})` : t.status], ['plan', t.plan], ['region', t.region ?? '-'],
    ['server', t.placement.server], ['database', t.placement.database], ['schema', t.placement.schema ?? '-'],
    ['domains', domains.join(', ') || '-'], ['created', t.createdAt.toISOString()],
    ...(t.deletedAt ? [['deleted', t.deletedAt.toISOString()] as [string, string]] : []),
  ]
  return rows.map(([k, v]) => `${k.padEnd(9)} ${v}`).join('\n')
}

export function operationsTable(ops: Operation[]): string {
  if (ops.length === 0) return 'No operations.'
  return table(
    ['ID', 'KIND', 'TENANT', 'STATE', 'STEP', 'STARTED', 'BY', 'ERROR'],
    ops.map((o) => [o.id, o.kind, o.slug ?? '-', o.state, o.step ?? '-', o.createdAt.toISOString(), o.startedBy, o.error ? truncate(o.error, 60) : '']),
  )
}

export function truncate(s: string, n: number): string {
  return s.length > n ? `${s.slice(0, n - 1)}…` : s
}

const count = (n: number) => Math.round(n).toLocaleString('en-US')

const bytesOrDash = (n: number | null | undefined) => (n === null || n === undefined ? '-' : formatBytes(n))

/** `tenantry usage`: one line per bucket. */
export function usageTable(rows: UsageRow[]): string {
  return table(
    ['BUCKET', 'REQUESTS', 'ERRORS', 'REJECTED', 'STATEMENTS', 'ROWS', 'DB TIME', 'STORAGE', 'OBJECTS'],
    rows.map((r) => [r.bucket.toISOString(), count(r.requests), count(r.errors), count(r.rejections), count(r.statements), count(r.rows), formatMs(r.dbTimeMs), bytesOrDash(r.storageBytes), bytesOrDash(r.objectBytes)]),
  )
}

/** `tenantry top`: one line per tenant, like `citus_stat_tenants`. */
export function topTable(rows: TopRow[]): string {
  return table(
    ['TENANT', 'TIER', 'SERVER', 'REQUESTS', 'ERRORS', 'REJECTED', 'STATEMENTS', 'DB TIME', '% OF SERVER DB', 'STORAGE', 'OBJECTS'],
    rows.map((r) => [
      r.slug ?? `${r.tenantId} (purged)`, r.tier ?? '-', r.server ?? '-', count(r.requests), count(r.errors), count(r.rejections), count(r.statements),
      formatMs(r.dbTimeMs), `${(r.serverDbTimeShare * 100).toFixed(1)}%`, bytesOrDash(r.storageBytes), bytesOrDash(r.objectBytes),
    ]),
  )
}

/** `tenantry advise`: one line per piece of advice. */
export function adviceLines(advice: Advice[]): string {
  return advice.map((a) => `${a.kind}: ${a.reason}`).join('\n')
}
