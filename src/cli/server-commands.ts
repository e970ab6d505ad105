import { InvalidArgumentError, type Command } from 'commander'
import type { Server } from '../core/types.ts'
import { redactUrl } from '../core/validation.ts'
import type { Tenantry } from '../runtime.ts'
import { table } from './format.ts'
import type { CommandKit } from './portability-commands.ts'
import type { ConnectionFlags } from './open.ts'

function weight(value: string): number {
  if (!/^[0-9]{1,4}$/.test(value) || Number(value) < 1 || Number(value) > 1000) throw new InvalidArgumentError('--weight must be a whole number from 1 to 1000.')
  return Number(value)
}

/** A server as the CLI shows it: its URL without the password, and its tenants (not deleted). */
async function serverRows(t: Tenantry, servers: Server[]): Promise<Record<string, unknown>[]> {
  const counts = await t.catalog.counts()
  return servers.map((s) => ({
    name: s.name, url: redactUrl(s.url), region: s.region, capacityWeight: s.capacityWeight, mainDatabase: s.mainDatabase,
    tenants: counts.filter((c) => c.server === s.name && c.status !== 'deleted').reduce((n, c) => n + c.count, 0),
  }))
}

function serversTable(rows: Record<string, unknown>[]): string {
  return table(['NAME', 'URL', 'REGION', 'WEIGHT', 'DATABASE', 'TENANTS'], rows.map((r) => [r.name, r.url, r.region ?? '-', r.capacityWeight, r.mainDatabase, r.tenants] as (string | number)[]))
}

/** `tenantry servers list|add` (docs/scale.md): the fleet's PostgreSQL servers, added through `tenantry.addServer`. */
export function registerServerCommands(program: Command, kit: CommandKit): void {
  const { withConnection, withTenantry, startedBy } = kit
  const print = (json: boolean | undefined, data: unknown, text: () => string) => console.log(json ? JSON.stringify(data, null, 2) : text())
  const servers = program.command('servers').description('the PostgreSQL servers of the fleet')

  withConnection(servers.command('list').description('servers in the catalog (passwords hidden), with their tenants').option('--json', 'print JSON')).action(
    async (opts: ConnectionFlags & { json?: boolean }) => {
      await withTenantry(opts, async (t) => {
        const rows = await serverRows(t, await t.catalog.listServers())
        print(opts.json, rows, () => serversTable(rows))
      })
    },
  )

  withConnection(
    servers
      .command('add <name> <url>')
      .description('add a server: reached and prepared first, then in the catalog for every process; a name in use with another URL is refused (CONFLICT), the same name and URL again changes nothing')
      .option('--region <region>', 'region of the server (tenants of a region are placed on its servers)')
      .option('--weight <n>', 'capacity weight from 1 to 1000: its share of new tenants (default 1)', weight)
      .option('--json', 'print JSON'),
  ).action(async (name: string, url: string, opts: ConnectionFlags & { region?: string; weight?: number; json?: boolean }) => {
    await withTenantry(opts, async (t) => {
      const known = (await t.catalog.listServers()).some((s) => s.name === name)
      const server = await t.addServer({ name, url, region: opts.region, capacityWeight: opts.weight }, { actor: startedBy() })
      const [row] = await serverRows(t, [server])
      print(opts.json, row, () => `${known ? 'Already in the fleet' : 'Added'}: server '${server.name}' at ${row.url}${server.region ? ` (region ${server.region})` : ''}, weight ${server.capacityWeight}, main database ${server.mainDatabase}.`)
    })
  })
}
