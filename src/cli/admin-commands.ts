import { Command, Option } from 'commander'
import type { Tenantry } from '../runtime.ts'
import { ADMIN_ROLES, adminTokens, type AdminRole } from '../admin/tokens.ts'
import { table } from './format.ts'
import type { ConnectionFlags } from './open.ts'
import { openTenantry } from './open.ts'

/** The helpers of src/cli/main.ts a command file uses (passed in: no import cycle with main). */
export interface CliKit {
  withConnection(cmd: Command): Command
  withTenantry<T>(flags: ConnectionFlags, fn: (t: Tenantry) => Promise<T>): Promise<T>
  print(json: boolean | undefined, data: unknown, text: () => string): void
  startedBy(): string
  /** Argument parsers: an ISO 8601 time; a whole number in a range. */
  isoTime(name: string): (value: string) => Date
  intRange(name: string, min: number, max: number): (value: string) => number
}

/**
 * `tenantry admin tokens create|list|revoke` and `tenantry admin serve`: the admin API and web
 * console on their own server (docs/admin.md).
 */
export function registerAdminCommands(program: Command, kit: CliKit): void {
  const admin = program.command('admin').description('the admin REST API and web console; admin tokens')
  const tokens = admin.command('tokens').description('admin tokens (stored hashed; a token is shown once, when created)')

  kit.withConnection(
    tokens
      .command('create <name>')
      .description('create an admin token and print it (once)')
      .addOption(new Option('--role <role>', 'viewer reads; operator acts on tenants, operations and migrations; admin also purges and manages tokens').choices(ADMIN_ROLES as string[]).makeOptionMandatory())
      .option('--json', 'print JSON'),
  ).action(async (name: string, opts: ConnectionFlags & { role: AdminRole; json?: boolean }) => {
    await kit.withTenantry(opts, async (t) => {
      const { token, info } = await (await adminTokens(t)).create({ name, role: opts.role }, kit.startedBy())
      kit.print(opts.json, { token, ...info }, () => `${token}\n\nAdmin token '${info.name}' (${info.role}). It is shown only now: keep it in a secret store. Revoke it with 'tenantry admin tokens revoke ${info.name}'.`)
    })
  })

  kit.withConnection(tokens.command('list').description('admin tokens (never the tokens themselves)').option('--json', 'print JSON')).action(
    async (opts: ConnectionFlags & { json?: boolean }) => {
      await kit.withTenantry(opts, async (t) => {
        const list = await (await adminTokens(t)).list()
        kit.print(opts.json, list, () => list.length === 0 ? 'No admin tokens.' : table(
          ['NAME', 'ROLE', 'CREATED', 'BY', 'LAST USED', 'REVOKED'],
          list.map((x) => [x.name, x.role, x.createdAt.toISOString(), x.createdBy, x.lastUsedAt?.toISOString() ?? '-', x.revokedAt?.toISOString() ?? '-']),
        ))
      })
    },
  )

  kit.withConnection(tokens.command('revoke <name>').description('revoke an admin token (by name or id); it stops working at once').option('--json', 'print JSON')).action(
    async (name: string, opts: ConnectionFlags & { json?: boolean }) => {
      await kit.withTenantry(opts, async (t) => {
        const info = await (await adminTokens(t)).revoke(name, kit.startedBy())
        kit.print(opts.json, info, () => `Revoked admin token '${info.name}'.`)
      })
    },
  )

  kit.withConnection(
    admin
      .command('serve')
      .description('serve the admin API (OpenAPI at /openapi.json, Swagger UI at /docs) and the web console at / until interrupted')
      .option('--port <port>', 'port to listen on', kit.intRange('--port', 0, 65535), 4000)
      .option('--host <host>', 'address to listen on (keep it internal)', '127.0.0.1'),
  ).action(async (opts: ConnectionFlags & { port: number; host: string }) => {
    const { default: Fastify } = await import('fastify')
    const { tenantryAdmin } = await import('../admin/plugin.ts')
    const tenantry = await openTenantry(opts)
    const app = Fastify({ loggerInstance: tenantry.logger })
    try {
      await app.register(tenantryAdmin, { tenantry })
      const address = await app.listen({ port: opts.port, host: opts.host })
      console.error(`Tenantry admin console on ${address}/ (API ${address}/api, OpenAPI ${address}/openapi.json). Sign in with an admin token ('tenantry admin tokens create <name> --role operator').`)
      await new Promise<void>((resolve) => {
        process.once('SIGINT', resolve)
        process.once('SIGTERM', resolve)
      })
    } finally {
      await app.close()
      await tenantry.close()
    }
  })
}
