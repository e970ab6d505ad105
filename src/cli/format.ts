import type { Tenant } from '../core/types.ts'
import type { Operation } from '../lifecycle/operations.ts'

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
