import { Command } from 'commander'
import type { CliKit } from './admin-commands.ts'
import type { ConnectionFlags } from './open.ts'
import { table, truncate } from './format.ts'

/** `tenantry audit list [--tenant] [--since]` and `tenantry audit verify` (docs/audit.md). */
export function registerAuditCommands(program: Command, kit: CliKit): void {
  const audit = program.command('audit').description('the audit log of control-plane actions (hash-chained)')

  kit.withConnection(
    audit
      .command('list')
      .description('audit entries, newest first')
      .option('--tenant <slug>', "only this tenant's entries (slug or id)")
      .option('--since <time>', 'only entries from this time on (ISO 8601)', kit.isoTime('--since'))
      .option('--action <action>', 'only this action (tenant.suspend, migrations.run…)')
      .option('--limit <n>', 'most entries (1 to 1000)', kit.intRange('--limit', 1, 1000), 100)
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
