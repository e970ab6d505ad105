import { Command, InvalidArgumentError } from 'commander'
import type { CliKit } from './admin-commands.ts'
import type { ConnectionFlags } from './open.ts'
import { table, truncate } from './format.ts'

function since(value: string): Date {
  const d = new Date(value)
  if (!/^[0-9]{4}-[0-9]{2}-[0-9]{2}/.test(value) || Number.isNaN(d.getTime())) throw new InvalidArgumentError('--since must be an ISO 8601 date or time, e.g. 2026-03-01T10:00:00Z.')
  return d
}

function limit(value: string): number {
  const n = Number(value)
  if (!/^[0-9]+$/.test(value) || n < 1 || n > 1000) throw new InvalidArgumentError('--limit must be a whole number from 1 to 1000.')
  return n
}

/** `tenantry audit list [--tenant] [--since]` and `tenantry audit verify` (docs/audit.md). */
export function registerAuditCommands(program: Command, kit: CliKit): void {
  const audit = program.command('audit').description('the audit log of control-plane actions (hash-chained)')

  kit.withConnection(
    audit
      .command('list')
      .description('audit entries, newest first')
      .option('--tenant <slug>', "only this tenant's entries (slug or id)")
      .option('--since <time>', 'only entries from this time on (ISO 8601)', since)
      .option('--action <action>', 'only this action (tenant.suspend, migrations.run…)')
      .option('--limit <n>', 'most entries (1 to 1000)', limit, 100)
      .option('--json', 'print JSON'),
  ).action(async (opts: ConnectionFlags & { tenant?: string; since?: Date; action?: string; limit: number; json?: boolean }) => {
    await kit.withTenantry(opts, async (t) => {
      const entries = await t.audit.list({ tenant: opts.tenant, since: opts.since, action: opts.action, limit: opts.limit })
      kit.print(opts.json, entries, () => entries.length === 0 ? 'No audit entries.' : table(
        ['SEQ', 'AT', 'ACTOR', 'ACTION', 'TENANT', 'REQUEST', 'DETAILS'],
        entries.map((e) => [e.seq, e.at.toISOString(), e.actor, e.action, e.slug ?? '-', e.requestId ?? '-', truncate(JSON.stringify(e.details), 60)]),
      ))
    })
  })

  kit.withConnection(
    audit
      .command('verify')
      .description('recompute the hash chain; exit 1 when an entry was edited, deleted or the newest cut off')
      .option('--json', 'print JSON'),
  ).action(async (opts: ConnectionFlags & { json?: boolean }) => {
    await kit.withTenantry(opts, async (t) => {
      const report = await t.audit.verify()
      kit.print(opts.json, report, () => report.ok
        ? `Audit log intact: ${report.entries} entries, every hash and link checks out.`
        : [`Audit log TAMPERED: ${report.problems.length} problem(s) in ${report.entries} entries:`, ...report.problems.map((p) => `  #${p.seq} ${p.problem}: ${p.message}`)].join('\n'))
      if (!report.ok) process.exitCode = 1
    })
  })
}
