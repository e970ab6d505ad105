import { Command, Option } from 'commander'
import { isTenantryError } from '../core/errors.ts'
import { formatFindings } from '../doctor/index.ts'
import { openTenantry, type ConnectionFlags } from './open.ts'

/**
 * The `tenantry` command. Every command exits 0 on success, 1 when it found problems or was
 * refused, 2 on bad usage.
 */
export function buildProgram(): Command {
  const program = new Command('tenantry')
    .description('Tenantry control plane: tenants, migrations and checks for a multi-tenant PostgreSQL fleet.')
    .showHelpAfterError()
    .exitOverride()

  const withConnection = (cmd: Command) =>
    cmd
      .addOption(new Option('--database-url <url>', 'admin URL of the main server').env('DATABASE_URL'))
      .addOption(new Option('--data-dir <dir>', 'embedded data directory (when no database URL)').env('TENANTRY_DATA_DIR'))
      .addOption(new Option('--role-prefix <prefix>', 'prefix of the roles and databases Tenantry creates').env('TENANTRY_ROLE_PREFIX'))
      .addOption(new Option('--migrations <dir>', 'directory of NNNN_name.sql migrations').env('TENANTRY_MIGRATIONS'))

  withConnection(
    program
      .command('doctor')
      .description('check every tenant table and app role against the isolation invariants (tenant_id, forced RLS, policies, tenant-led keys, role rights)')
      .option('--json', 'print the findings as JSON'),
  ).action(async (opts: ConnectionFlags & { json?: boolean }) => {
    const tenantry = await openTenantry(opts)
    try {
      const { findings, tables } = await tenantry.doctor()
      if (opts.json) console.log(JSON.stringify({ ok: findings.length === 0, tables, findings }, null, 2))
      else console.log(formatFindings(findings, { tables }))
      process.exitCode = findings.length === 0 ? 0 : 1
    } finally {
      await tenantry.close()
    }
  })

  return program
}

/** Run the CLI with `argv` (without node and script); resolves to the exit code. */
export async function runCli(argv: string[]): Promise<number> {
  const program = buildProgram()
  try {
    await program.parseAsync(argv, { from: 'user' })
    return Number(process.exitCode ?? 0)
  } catch (err) {
    const e = err as { code?: string; exitCode?: number; message?: string }
    if (typeof e.code === 'string' && e.code.startsWith('commander.')) {
      return e.code === 'commander.helpDisplayed' || e.code === 'commander.version' ? 0 : 2
    }
    if (isTenantryError(err)) {
      console.error(`error ${err.code}: ${err.message}`)
      return 1
    }
    console.error(err)
    return 1
  }
}

const isMain = process.argv[1] !== undefined && /tenantry(\.js)?$|cli[/\\]main\.ts$/.test(process.argv[1])
if (isMain) {
  runCli(process.argv.slice(2)).then((code) => process.exit(code))
}
