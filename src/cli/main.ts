import { existsSync } from 'node:fs'
import { hostname, userInfo } from 'node:os'
import cliProgress from 'cli-progress'
import { Command, InvalidArgumentError, Option } from 'commander'
import { TenantryError, isTenantryError } from '../core/errors.ts'
import { isUuid } from '../core/validation.ts'
import { TIERS, type Tier, type TenantStatus } from '../core/types.ts'
import { formatFindings } from '../doctor/index.ts'
import type { FleetMigrateResult, MigrateProgress } from '../lifecycle/fleet-migrate.ts'
import { requireMigrations } from '../lifecycle/migrator.ts'
import type { Tenantry } from '../runtime.ts'
import { formatPeriod } from '../observe/advise.ts'
import { TOP_BY, type TopBy, type UsageGranularity } from '../observe/types.ts'
import { adviceLines, operationsTable, table, tenantDetails, tenantJson, tenantsTable, topTable, truncate, usageTable } from './format.ts'
import { openTenantry, type ConnectionFlags } from './open.ts'
import { registerResourceCommands } from './resources-commands.ts'
import { registerConfigCommands } from './config-commands.ts'
import { registerAdminCommands } from './admin-commands.ts'
import { registerAuditCommands } from './audit-commands.ts'
import { registerPortabilityCommands } from './portability-commands.ts'
import { registerSecurityCommands } from './security-commands.ts'
import { applyAdviceCommand, registerMoveCommands } from './move-commands.ts'
import { registerServerCommands } from './server-commands.ts'
import { formatVerifyReport, verifyIsolation, type VerifyIsolationReport, type VerifyProgress } from '../verify/index.ts'

const STATUSES: TenantStatus[] = ['provisioning', 'active', 'suspended', 'deleted']
const OP_STATES = ['running', 'done', 'failed', 'rolled_back']
const GRANULARITIES: UsageGranularity[] = ['minute', 'hour', 'day']

function startedBy(): string {
  let user = 'unknown'
  try { user = userInfo().username } catch { /* no passwd entry in some containers */ }
  return `cli:${user}@${hostname()}`
}

function positiveInt(name: string) {
  return (value: string): number => {
    const n = Number(value)
    if (!/^[0-9]+$/.test(value) || !Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`${name} must be a whole number of at least 1.`)
    return n
  }
}

/** An ISO 8601 date or time (`2026-03-01`, `2026-03-01T10:00Z`). */
function isoTime(name: string) {
  return (value: string): Date => {
    const d = new Date(value)
    if (!/^[0-9]{4}-[0-9]{2}-[0-9]{2}/.test(value) || Number.isNaN(d.getTime())) throw new InvalidArgumentError(`${name} must be an ISO 8601 date or time, e.g. 2026-03-01T10:00:00Z.`)
    return d
  }
}

const UNIT_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }

/** A length of time as `<n><unit>`: `90s`, `15m`, `1h`, `24h`, `7d`; in ms. */
function duration(name: string) {
  return (value: string): number => {
    const m = /^([1-9][0-9]{0,5})([smhd])$/.exec(value)
    if (!m) throw new InvalidArgumentError(`${name} must be a whole number and a unit (s, m, h, d), e.g. 15m, 1h, 24h, 7d.`)
    return Number(m[1]) * UNIT_MS[m[2]]
  }
}

function intRange(name: string, min: number, max: number) {
  return (value: string): number => {
    const n = Number(value)
    if (!/^[0-9]+$/.test(value) || n < min || n > max) throw new InvalidArgumentError(`${name} must be a whole number from ${min} to ${max}.`)
    return n
  }
}

function list(value: string): string[] {
  return value.split(',').map((s) => s.trim()).filter(Boolean)
}

function print(json: boolean | undefined, data: unknown, text: () => string): void {
  console.log(json ? JSON.stringify(data, null, 2) : text())
}

/** Open Tenantry for one command and always close it. */
async function withTenantry<T>(flags: ConnectionFlags, fn: (t: Tenantry) => Promise<T>): Promise<T> {
  const tenantry = await openTenantry(flags)
  try {
    return await fn(tenantry)
  } finally {
    await tenantry.close()
  }
}

function progressBar(enabled: boolean): { update(p: MigrateProgress): void; stop(): void } {
  if (!enabled) return { update() {}, stop() {} }
  const bar = new cliProgress.SingleBar(
    {
      format: 'migrate [{bar}] {value}/{total} targets | {rate}/s | ETA {eta_formatted} | failed {failed}',
      etaBuffer: 50,
      hideCursor: true,
      stream: process.stderr,
    },
    cliProgress.Presets.shades_classic,
  )
  let started = false
  return {
    update(p) {
      const finished = p.done + p.failed + p.skipped
      const payload = { rate: p.rate.toFixed(1), failed: p.failed }
      if (!started) {
        bar.start(p.total, finished, payload)
        started = true
      } else {
        bar.setTotal(p.total)
        bar.update(finished, payload)
      }
    },
    stop() {
      if (started) bar.stop()
    },
  }
}

function migrateReport(r: FleetMigrateResult): string {
  const lines: string[] = []
  const shown = r.targets.filter((t) => t.status !== 'skipped')
  if (shown.length > 0) {
    lines.push(
      table(
        ['TARGET', 'TIER', 'SERVER', 'TENANT', 'STATUS', 'APPLIED / PENDING', 'ERROR'],
        shown.map((t) => [t.target, t.tier, t.server, t.tenant ?? '(pooled)', t.status, t.applied.join(', '), t.error ? truncate(t.error, 80) : '']),
      ),
    )
  }
  const c = r.counts
  const head =
    r.state === 'dry-run' ? 'Dry run: nothing was changed.'
    : r.state === 'up-to-date' ? 'Every target is at the latest migration.'
    : r.state === 'done' ? 'Migration done.'
    : `Migration incomplete${r.halted ? `: ${r.halted}` : ''}.`
  lines.push(`${head} ${c.total} targets: ${c.done} done, ${c.failed} failed, ${c.skipped} up to date, ${c.pending} pending (${(r.elapsedMs / 1000).toFixed(1)} s)${r.operationId ? `; operation ${r.operationId}` : ''}`)
  return lines.join('\n')
}

function dryRunReport(r: FleetMigrateResult): string {
  const pending = r.targets.filter((t) => t.status === 'pending')
  if (pending.length === 0) return `Every target is at the latest migration (${r.counts.total} targets).`
  const groups = new Map<string, typeof pending>()
  for (const t of pending) {
    const key = `${t.tier} on ${t.server}`
    groups.set(key, [...(groups.get(key) ?? []), t])
  }
  const out: string[] = [`Plan: ${pending.length} of ${r.counts.total} targets have pending migrations (nothing was changed).`]
  for (const [key, ts] of groups) {
    out.push('', `${key} (${ts.length}):`)
    for (const t of ts) out.push(`  ${t.target}${t.tenant ? ` [${t.tenant}]` : ''}: ${t.applied.join(', ')}`)
  }
  return out.join('\n')
}

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

  // ---- tenants -------------------------------------------------------------------------------
  const tenants = program.command('tenants').description('create, list and manage tenants')

  withConnection(
    tenants
      .command('create <slug>')
      .description('provision a tenant (a durable operation: killed, it is finished by the next run)')
      .addOption(new Option('--tier <tier>', 'isolation tier').choices(TIERS as string[]).makeOptionMandatory())
      .option('--name <name>', 'display name (default: the slug)')
      .option('--plan <plan>', 'plan name', 'default')
      .option('--server <server>', 'server of the fleet (default: chosen by region, then capacity)')
      .option('--region <region>', 'region of the tenant')
      .option('--force-residency', "place the tenant on a server outside its region anyway (audited)")
      .option('--json', 'print the tenant as JSON'),
  ).action(async (slug: string, opts: ConnectionFlags & { tier: Tier; name?: string; plan?: string; server?: string; region?: string; forceResidency?: boolean; json?: boolean }) => {
    await withTenantry(opts, async (t) => {
      const started = Date.now()
      // The first database-tier tenant of a server builds its template: a progress bar on a terminal.
      const { templateProgress } = await import('./template-progress.ts')
      const bar = templateProgress(t, !opts.json && Boolean(process.stderr.isTTY))
      const tenant = await t.provision({ slug, tier: opts.tier, name: opts.name, plan: opts.plan, server: opts.server, region: opts.region, forceResidency: opts.forceResidency }, startedBy()).finally(() => bar.stop())
      print(opts.json, tenantJson(tenant), () => `Created tenant '${tenant.slug}' (${tenant.tier} tier on ${tenant.placement.server}) in ${Date.now() - started} ms.`)
    })
  })

  withConnection(
    tenants
      .command('list')
      .description('list tenants')
      .addOption(new Option('--status <status>', 'only tenants in this status').choices(STATUSES))
      .addOption(new Option('--tier <tier>', 'only tenants on this tier').choices(TIERS as string[]))
      .option('--server <server>', 'only tenants placed on this server')
      .option('--plan <plan>', 'only tenants on this plan')
      .option('--search <text>', 'slug prefix or part of the name')
      .option('--limit <n>', 'one page of at most n tenants (1 to 500); the next page\'s cursor goes to stderr', intRange('--limit', 1, 500))
      .option('--cursor <cursor>', 'start after the page that printed this cursor')
      .option('--json', 'print JSON'),
  ).action(async (opts: ConnectionFlags & { status?: TenantStatus; tier?: Tier; server?: string; plan?: string; search?: string; limit?: number; cursor?: string; json?: boolean }) => {
    await withTenantry(opts, async (t) => {
      // The admin API's paginated list: one page with --limit, every page without.
      const query = { status: opts.status, tier: opts.tier, server: opts.server, plan: opts.plan, search: opts.search }
      let page = await t.catalog.page({ ...query, cursor: opts.cursor, limit: opts.limit ?? 500 })
      const all = [...page.tenants]
      while (opts.limit === undefined && page.next) {
        page = await t.catalog.page({ ...query, cursor: page.next, limit: 500 })
        all.push(...page.tenants)
      }
      print(opts.json, all.map(tenantJson), () => tenantsTable(all))
      if (opts.limit !== undefined && page.next) console.error(`next page: --cursor ${page.next}`)
    })
  })

  withConnection(tenants.command('show <slug>').description('show one tenant').option('--json', 'print JSON')).action(
    async (slug: string, opts: ConnectionFlags & { json?: boolean }) => {
      await withTenantry(opts, async (t) => {
        const tenant = await t.findTenant(slug)
        if (!tenant) throw new TenantryError('TENANT_NOT_FOUND', `No tenant has the slug or id '${slug}'.`)
        const domains = await t.catalog.domainsOf(tenant.id)
        print(opts.json, { ...tenantJson(tenant), domains }, () => tenantDetails(tenant, domains))
      })
    },
  )

  withConnection(tenants.command('suspend <slug>').description('stop serving a tenant (403 TENANT_SUSPENDED); data is untouched').option('--reason <text>', 'shown to the tenant\'s users').option('--json', 'print JSON')).action(
    async (slug: string, opts: ConnectionFlags & { reason?: string; json?: boolean }) => {
      await withTenantry(opts, async (t) => {
        const tenant = await t.suspend(slug, opts.reason, { actor: startedBy() })
        print(opts.json, tenantJson(tenant), () => `Suspended '${tenant.slug}'${tenant.statusReason ? `: ${tenant.statusReason}` : ''}.`)
      })
    },
  )

  withConnection(tenants.command('resume <slug>').description('serve a suspended tenant again').option('--json', 'print JSON')).action(
    async (slug: string, opts: ConnectionFlags & { json?: boolean }) => {
      await withTenantry(opts, async (t) => {
        const tenant = await t.resume(slug, { actor: startedBy() })
        print(opts.json, tenantJson(tenant), () => `Resumed '${tenant.slug}'.`)
      })
    },
  )

  withConnection(tenants.command('delete <slug>').description('soft delete: no longer served (404), data kept for the retention period').option('--json', 'print JSON')).action(
    async (slug: string, opts: ConnectionFlags & { json?: boolean }) => {
      await withTenantry(opts, async (t) => {
        const tenant = await t.delete(slug, { actor: startedBy() })
        print(opts.json, tenantJson(tenant), () => `Deleted '${tenant.slug}' (data kept; 'tenants purge ${tenant.slug}' removes it after the retention period, 'tenants restore ${tenant.slug}' undoes this).`)
      })
    },
  )

  withConnection(tenants.command('restore <slug>').description('undo a soft delete (the tenant comes back suspended)').option('--json', 'print JSON')).action(
    async (slug: string, opts: ConnectionFlags & { json?: boolean }) => {
      await withTenantry(opts, async (t) => {
        const tenant = await t.restore(slug, { actor: startedBy() })
        print(opts.json, tenantJson(tenant), () => `Restored '${tenant.slug}' as suspended; 'tenants resume ${tenant.slug}' serves it again.`)
      })
    },
  )

  withConnection(
    tenants
      .command('purge <slug>')
      .description("remove a deleted tenant's data for good: database, or schema and role, or its pooled rows; then its catalog row")
      .option('--force', 'purge before the retention period ends, or a tenant that was not deleted')
      .option('--json', 'print JSON'),
  ).action(async (slug: string, opts: ConnectionFlags & { force?: boolean; json?: boolean }) => {
    await withTenantry(opts, async (t) => {
      const r = await t.purge(slug, { force: opts.force, startedBy: startedBy() })
      print(opts.json, { tenant: tenantJson(r.tenant), operationId: r.operationId, removed: r.removed }, () =>
        [`Purged '${r.tenant.slug}' (operation ${r.operationId}). Removed:`, ...r.removed.map((x) => `  - ${x}`)].join('\n'),
      )
    })
  })

  // ---- migrate -------------------------------------------------------------------------------
  withConnection(
    program
      .command('migrate')
      .description('bring every target (pooled tables, tenant schemas, tenant databases) to the latest migration')
      .option('--dry-run', 'print the plan: every target with its pending files; change nothing')
      .option('--canary <slugs>', 'migrate these tenants first; the rest only if all of them succeed', list)
      .option('--concurrency <n>', 'targets migrated at once by this process', positiveInt('--concurrency'), 4)
      .option('--max-failures <n>', 'stop after this many failed targets', positiveInt('--max-failures'))
      .option('--only <items>', 'only these tenant slugs, tiers (pooled, schema, database) or servers', list)
      .option('--no-pace', "run at --concurrency regardless of the server's load (default: paced to leave the app CPU)")
      .option('--json', 'print the result per target as JSON'),
  ).action(async (opts: ConnectionFlags & { dryRun?: boolean; canary?: string[]; concurrency: number; maxFailures?: number; only?: string[]; pace: boolean; json?: boolean }) => {
    await withTenantry(opts, async (t) => {
      requireMigrations(t.migrationFiles)
      const bar = progressBar(!opts.json && !opts.dryRun && Boolean(process.stderr.isTTY))
      let result: FleetMigrateResult
      try {
        result = await t.migrate({
          dryRun: opts.dryRun,
          canary: opts.canary,
          concurrency: opts.concurrency,
          maxFailures: opts.maxFailures,
          only: opts.only,
          pace: opts.pace,
          startedBy: startedBy(),
          onProgress: (p) => bar.update(p),
        })
      } finally {
        bar.stop()
      }
      print(opts.json, result, () => (result.state === 'dry-run' ? dryRunReport(result) : migrateReport(result)))
      if (result.state === 'failed') process.exitCode = 1
    })
  })

  // ---- operations ----------------------------------------------------------------------------
  const operations = program.command('operations').description('list, inspect and resume durable operations')

  withConnection(
    operations
      .command('list')
      .description('recent operations, newest first')
      .addOption(new Option('--state <state>', 'only operations in this state').choices(OP_STATES))
      .option('--kind <kind>', 'only this kind (provision, migrate, purge)')
      .option('--limit <n>', 'how many', positiveInt('--limit'), 50)
      .option('--json', 'print JSON'),
  ).action(async (opts: ConnectionFlags & { state?: 'running' | 'done' | 'failed' | 'rolled_back'; kind?: string; limit: number; json?: boolean }) => {
    await withTenantry(opts, async (t) => {
      const ops = await t.operations.list({ state: opts.state, kind: opts.kind, limit: opts.limit })
      print(opts.json, ops, () => operationsTable(ops))
    })
  })

  withConnection(operations.command('show <id>').description('one operation, with its targets for a migration').option('--json', 'print JSON')).action(
    async (id: string, opts: ConnectionFlags & { json?: boolean }) => {
      await withTenantry(opts, async (t) => {
        if (!isUuid(id)) throw new TenantryError('VALIDATION_FAILED', `'${id}' is not an operation id (a uuid).`)
        const op = await t.operations.get(id)
        if (!op) throw new TenantryError('NOT_FOUND', `No operation has the id '${id}'.`)
        const targets = op.kind === 'migrate' ? await t.operationTargets(id) : []
        print(opts.json, { ...op, targets }, () => {
          const lines = [
            `id        ${op.id}`, `kind      ${op.kind}`, `tenant    ${op.slug ?? '-'}`, `state     ${op.state}`, `step      ${op.step ?? '-'}`,
            `started   ${op.createdAt.toISOString()} by ${op.startedBy}`, `finished  ${op.finishedAt?.toISOString() ?? '-'}`,
            `progress  ${JSON.stringify(op.progress)}`, ...(op.error ? [`error     ${op.error}`] : []),
          ]
          if (targets.length) lines.push('', table(['TARGET', 'TENANT', 'STATE', 'APPLIED', 'ERROR'], targets.map((x) => [x.target, x.slug ?? '(pooled)', x.state, x.applied.join(', '), x.error ? truncate(x.error, 80) : ''])))
          return lines.join('\n')
        })
      })
    },
  )

  withConnection(operations.command('resume [id]').description('finish operations whose process died (all of them, or the one given)').option('--json', 'print JSON')).action(
    async (id: string | undefined, opts: ConnectionFlags & { json?: boolean }) => {
      // Opening Tenantry already resumes orphans at start-up; with an id, that one is taken over explicitly.
      await withTenantry(opts, async (t) => {
        // The one asked for may be among those finished at start-up: resuming it again would be a CONFLICT.
        const more = id === undefined ? await t.resumeOperations() : t.resumedAtStartup.some((o) => o.id === id) ? [] : await t.resumeOperations(id)
        const resumed = [...t.resumedAtStartup, ...more]
        const after = await Promise.all(resumed.map((o) => t.operations.get(o.id)))
        print(opts.json, after, () => (after.length === 0 ? 'No interrupted operations.' : operationsTable(after.filter((o) => o !== null))))
      })
    },
  )

  // ---- doctor --------------------------------------------------------------------------------
  withConnection(
    program
      .command('doctor')
      .description('check every tenant table and app role against the isolation invariants (tenant_id, forced RLS, policies, tenant-led keys, role rights)')
      .option('--json', 'print the findings as JSON'),
  ).action(async (opts: ConnectionFlags & { json?: boolean }) => {
    await withTenantry(opts, async (tenantry) => {
      const { findings, tables } = await tenantry.doctor()
      if (opts.json) console.log(JSON.stringify({ ok: findings.length === 0, tables, findings }, null, 2))
      else console.log(formatFindings(findings, { tables }))
      process.exitCode = findings.length === 0 ? 0 : 1
    })
  })

  // ---- verify-isolation ----------------------------------------------------------------------
  withConnection(
    program
      .command('verify-isolation')
      .description('attack a scratch copy of your schema: tenants on every tier, random rows, randomized attempts to cross tenants (exit 1 on any leak)')
      .option('--tenants <n>', 'active tenants, spread over the tiers', positiveInt('--tenants'), 6)
      .option('--attempts <n>', 'randomized attempts to cross tenants', positiveInt('--attempts'), 2000)
      .option('--rows <n>', 'random rows per tenant per table', positiveInt('--rows'), 4)
      .option('--concurrency <n>', 'attempts in flight at once', positiveInt('--concurrency'), 16)
      .option('--seed <n>', 'seed of the random plan (the report prints it; the same seed replays the same attempts)', (v: string) => {
        if (!/^[0-9]{1,10}$/.test(v) || Number(v) > 0xffffffff) throw new InvalidArgumentError('--seed must be a whole number from 0 to 4294967295.')
        return Number(v)
      })
      .option('--keep', 'keep the scratch database for a post-mortem (dropped by default)')
      .option('--json', 'print the report as JSON'),
  ).action(async (opts: ConnectionFlags & { tenants: number; attempts: number; rows: number; concurrency: number; seed?: number; keep?: boolean; json?: boolean }) => {
    const migrations = opts.migrations ?? process.env.TENANTRY_MIGRATIONS ?? (existsSync('migrations') ? 'migrations' : undefined)
    if (!migrations) throw new TenantryError('CONFIG_INVALID', 'No migrations to verify: pass --migrations <dir> or set TENANTRY_MIGRATIONS (default ./migrations).')
    // Never the user's data: a scratch database on the server of --database-url, or PGlite in memory.
    if (!opts.databaseUrl && opts.dataDir && !opts.json) console.error('verify-isolation: runs on PGlite in memory; --data-dir is not touched.')
    const bar = progressOf(!opts.json && Boolean(process.stderr.isTTY))
    let report: VerifyIsolationReport
    try {
      report = await verifyIsolation({
        migrations,
        databaseUrl: opts.databaseUrl,
        rolePrefix: opts.rolePrefix,
        tenants: opts.tenants,
        attempts: opts.attempts,
        rowsPerTable: opts.rows,
        concurrency: opts.concurrency,
        seed: opts.seed,
        keep: opts.keep,
        onProgress: (p) => bar.update(p),
      })
    } finally {
      bar.stop()
    }
    print(opts.json, report, () => formatVerifyReport(report))
    process.exitCode = report.ok ? 0 : 1
  })

  // ---- usage, top, advise (issue 11) ---------------------------------------------------------
  withConnection(
    program
      .command('usage <slug>')
      .description("a tenant's metered usage per bucket: requests, errors, rejections, statements, rows, database time, storage")
      .option('--from <time>', 'start, inclusive (ISO 8601; default one hour before --to)', isoTime('--from'))
      .option('--to <time>', 'end, exclusive (ISO 8601; default now)', isoTime('--to'))
      .addOption(new Option('--granularity <unit>', 'bucket size').choices(GRANULARITIES).default('hour'))
      .option('--json', 'print the rows as JSON'),
  ).action(async (slug: string, opts: ConnectionFlags & { from?: Date; to?: Date; granularity: UsageGranularity; json?: boolean }) => {
    const to = opts.to ?? new Date()
    const from = opts.from ?? new Date(to.getTime() - 3_600_000)
    await withTenantry(opts, async (t) => {
      const rows = await t.usage({ tenant: slug, from, to, granularity: opts.granularity })
      print(opts.json, rows, () =>
        rows.length === 0
          ? `No usage of '${slug}' from ${from.toISOString()} to ${to.toISOString()}.`
          : `Usage of '${slug}' per ${opts.granularity} from ${from.toISOString()} to ${to.toISOString()}:\n${usageTable(rows)}`,
      )
    })
  })

  withConnection(
    program
      .command('top')
      .description("the busiest tenants over a period, with their share of their server's database time (like citus_stat_tenants)")
      .addOption(new Option('--by <key>', 'sort key').choices(TOP_BY as string[]).default('requests'))
      .addOption(new Option('--period <length>', 'the period that ends now: 15m, 1h, 24h, 7d…').argParser(duration('--period')).default(3_600_000, '1h'))
      .option('--server <name>', 'only tenants placed on this server')
      .option('--limit <n>', 'most tenants shown (1 to 1000)', intRange('--limit', 1, 1000), 20)
      .option('--json', 'print the rows as JSON'),
  ).action(async (opts: ConnectionFlags & { by: TopBy; period: number; server?: string; limit: number; json?: boolean }) => {
    await withTenantry(opts, async (t) => {
      const rows = await t.top({ by: opts.by, periodMs: opts.period, server: opts.server, limit: opts.limit })
      const where = opts.server === undefined ? '' : ` on server ${opts.server}`
      print(opts.json, rows, () =>
        rows.length === 0
          ? `No usage${where} in the last ${formatPeriod(opts.period)}.`
          : `Top tenants by ${opts.by} in the last ${formatPeriod(opts.period)}${where}:\n${topTable(rows)}`,
      )
    })
  })

  withConnection(
    program
      .command('advise')
      .description('placement advice from usage: tenants that outgrew their tier, idle dedicated tenants, servers out of balance (recommends only)')
      .addOption(new Option('--period <length>', 'the period that ends now: 15m, 1h, 24h, 7d…').argParser(duration('--period')).default(24 * 3_600_000, '24h'))
      .option('--json', 'print the advice as JSON')
      .option('--apply', 'carry the advice out as moves (docs/moves.md)')
      .addOption(new Option('--max-moves <n>', 'with --apply: at most this many moves').argParser(intRange('--max-moves', 0, 10_000)))
      .addOption(new Option('--concurrency <n>', 'with --apply: moves at once (never two on one server)').argParser(intRange('--concurrency', 1, 64)).default(1)),
  ).action(async (opts: ConnectionFlags & { period: number; json?: boolean; apply?: boolean; maxMoves?: number; concurrency: number }) => {
    await withTenantry(opts, async (t) => {
      const advice = await t.advise({ periodMs: opts.period })
      if (opts.apply) return applyAdviceCommand(t, advice, opts, startedBy())
      print(opts.json, advice, () =>
        advice.length === 0 ? `No advice: no tenant or server crossed a threshold in the last ${formatPeriod(opts.period)}.` : adviceLines(advice),
      )
    })
  })

  registerResourceCommands(program, { withConnection, withTenantry, print })
  registerConfigCommands(program, { withConnection, withTenantry, print, startedBy })
  // ---- admin API and console, audit log (issue 17) -------------------------------------------
  const kit = { withConnection, withTenantry, print, startedBy, isoTime, intRange }
  registerAdminCommands(program, kit)
  registerAuditCommands(program, kit)
  registerPortabilityCommands(program, { withConnection, withTenantry, startedBy })
  registerSecurityCommands(program, kit)
  registerMoveCommands(program, { withConnection, withTenantry, startedBy })
  registerServerCommands(program, { withConnection, withTenantry, startedBy })

  return program
}

function progressOf(enabled: boolean): { update(p: VerifyProgress): void; stop(): void } {
  if (!enabled) return { update() {}, stop() {} }
  const bar = new cliProgress.SingleBar(
    { format: 'verify-isolation {phase} [{bar}] {value}/{total} | leaks {leaks} | failures {failures}', hideCursor: true, stream: process.stderr },
    cliProgress.Presets.shades_classic,
  )
  let phase = ''
  return {
    update(p) {
      if (p.phase === 'cleanup') return
      if (p.phase !== phase) {
        if (phase) bar.stop()
        phase = p.phase
        bar.start(p.total, p.done, { phase: p.phase, leaks: p.leaks, failures: p.failures })
      } else {
        bar.setTotal(p.total)
        bar.update(p.done, { phase: p.phase, leaks: p.leaks, failures: p.failures })
      }
    },
    stop() {
      if (phase) bar.stop()
    },
  }
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
      return e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.code === 'commander.help' ? 0 : 2
    }
    if (isTenantryError(err)) {
      console.error(`error ${err.code}: ${err.message}`)
      return 1
    }
    // Not ours and not expected: one line for the user, the stack only on request.
    console.error(`error: ${(err as Error)?.message ?? String(err)}`)
    if (process.env.DEBUG) console.error(err)
    return 1
  }
}

const isMain = process.argv[1] !== undefined && /tenantry(\.js)?$|cli[/\\]main\.[jt]s$/.test(process.argv[1])
if (isMain) {
  runCli(process.argv.slice(2)).then((code) => process.exit(code))
}
