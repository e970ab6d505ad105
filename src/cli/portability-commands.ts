import cliProgress from 'cli-progress'
import { InvalidArgumentError, type Command } from 'commander'
import { TIERS, type Tier } from '../core/types.ts'
import { lowerProcessPriority } from '../lifecycle/pacer.ts'
import { BACKUP_NICE, EXPORT_FORMATS, type BackupRecord, type ErasureCertificate, type ExportFormat, type PortabilityProgress, type SubjectErasureCertificate } from '../portability/index.ts'
import type { Tenantry } from '../runtime.ts'
import { table, tenantJson } from './format.ts'
import type { ConnectionFlags } from './open.ts'

/** What main.ts lends these commands: its connection options, its open-and-close, and who runs them. */
export interface CommandKit {
  withConnection(cmd: Command): Command
  withTenantry<T>(flags: ConnectionFlags, fn: (t: Tenantry) => Promise<T>): Promise<T>
  startedBy(): string
}

export function tier(value: string): Tier {
  if (!TIERS.includes(value as Tier)) throw new InvalidArgumentError(`--tier must be one of ${TIERS.join(', ')}.`)
  return value as Tier
}

function positiveInt(value: string): number {
  if (!/^[1-9][0-9]{0,5}$/.test(value)) throw new InvalidArgumentError('--limit must be a whole number of at least 1.')
  return Number(value)
}

/** Rows per table as a bar on stderr, only on a terminal. */
function progressBar(enabled: boolean): { update(p: PortabilityProgress): void; stop(): void } {
  if (!enabled) return { update() {}, stop() {} }
  const bar = new cliProgress.SingleBar(
    { format: '{phase} [{bar}] {value}/{total} tables | {rows} rows | {table}', hideCursor: true, stream: process.stderr },
    cliProgress.Presets.shades_classic,
  )
  let phase = ''
  return {
    update(p) {
      if (p.phase !== phase) {
        if (phase) bar.stop()
        phase = p.phase
        bar.start(p.tables, p.tablesDone, { phase: p.phase, rows: p.rows, table: p.table })
      } else bar.update(p.tablesDone, { rows: p.rows, table: p.table })
    },
    stop() {
      if (phase) bar.stop()
    },
  }
}

function mb(bytes: number): string {
  return bytes < 1024 * 1024 ? `${(bytes / 1024).toFixed(1)} KB` : `${(bytes / 1024 / 1024).toFixed(1)} MB`
}

export function backupsTable(rows: BackupRecord[]): string {
  if (rows.length === 0) return 'No backups.'
  return table(
    ['CREATED', 'TENANT', 'TIER', 'ROWS', 'SIZE', 'ENCRYPTED', 'PATH'],
    rows.map((b) => [b.createdAt.toISOString(), b.slug, b.tier, b.rows, mb(b.bytes), b.encrypted ? 'yes' : 'no', b.path]),
  )
}

function format(value: string): ExportFormat {
  if (!EXPORT_FORMATS.includes(value as ExportFormat)) throw new InvalidArgumentError(`--format must be one of ${EXPORT_FORMATS.join(', ')}.`)
  return value as ExportFormat
}

/** The human form of a data subject's erasure certificate. */
export function subjectCertificateText(c: SubjectErasureCertificate): string {
  return [
    `Subject erasure certificate ${c.certificateId} in tenant '${c.tenant.slug}' (${c.tenant.id}); subject sha256 ${c.subjectSha256}`,
    `operation ${c.operationId}, completed ${c.completedAt}`,
    '',
    table(['TABLE', 'MARKED COLUMNS', 'ROWS BEFORE', 'ROWS AFTER'], c.tables.map((t) => [t.table, t.columns.join(', '), t.before, t.after])),
    '',
    c.verified ? `VERIFIED: ${c.rowsBefore} rows of the subject removed, 0 left.` : `NOT VERIFIED: ${c.rowsAfter} rows of the subject remain.`,
  ].join('\n')
}

/** The human form of an erasure certificate. */
export function certificateText(c: ErasureCertificate | SubjectErasureCertificate): string {
  if ('kind' in c && c.kind === 'subject') return subjectCertificateText(c)
  c = c as ErasureCertificate
  const lines = [
    `Erasure certificate ${c.certificateId} for tenant '${c.tenant.slug}' (${c.tenant.id}, ${c.tenant.tier})`,
    `operation ${c.operationId}, ${c.startedAt} → ${c.completedAt}`,
    '',
    'Removed:',
    ...c.removed.map((r) => `  - ${r}`),
    '',
    table(['SERVER', 'DATABASE', 'TABLE', 'ROWS BEFORE', 'ROWS AFTER'], c.scan.map((s) => [s.server, s.database, s.table, s.before, s.after])),
    '',
    table(['CATALOG', 'ROWS AFTER'], c.catalog.map((r) => [r.table, r.after])),
  ]
  if (c.objects.length) lines.push('', table(['OBJECT', 'EXISTS AFTER'], c.objects.map((o) => [o.object, o.existsAfter ? 'YES' : 'no'])))
  if (c.archives.length) lines.push('', table(['ARCHIVE', 'ENCRYPTED', 'ACTION'], c.archives.map((a) => [a.path, a.encrypted ? 'yes' : 'no', a.action])))
  lines.push('', `Crypto-shredding: ${c.cryptoShredding.statement}${c.cryptoShredding.dataKeyDestroyedAt ? ` (key destroyed ${c.cryptoShredding.dataKeyDestroyedAt})` : ''}`)
  lines.push(c.verified
    ? `VERIFIED: ${c.rowsBefore} rows before, 0 rows of tenant ${c.tenant.id} left in ${c.scan.length} tenant tables and the catalog.`
    : `NOT VERIFIED: ${c.rowsAfter} rows or objects of the tenant remain (see above).`)
  return lines.join('\n')
}

/** `tenantry backup`, `backups list`, `restore`, `erase` and `erasures` (docs/portability.md). */
export function registerPortabilityCommands(program: Command, kit: CommandKit): void {
  const { withConnection, withTenantry, startedBy } = kit
  const print = (json: boolean | undefined, data: unknown, text: () => string) => console.log(json ? JSON.stringify(data, null, 2) : text())

  withConnection(
    program
      .command('backup <slug>')
      .description("write one tenant's archive: a consistent snapshot of its rows in any tier, taken while it serves")
      .option('--to <path>', 'a file, a directory (existing or ending in /), s3://bucket/prefix/ or s3://bucket/key.tar (S3 client from AWS_REGION, AWS_ENDPOINT_URL_S3…; packed in TENANTRY_SPOOL_DIR first); default TENANTRY_BACKUP_DIR or ./backups/')
      .option('--no-gzip', 'store the tables uncompressed')
      .option('--encrypt', 'encrypt with the tenant\'s data key (the default when TENANTRY_MASTER_KEY is set)')
      .option('--no-encrypt', 'write an unencrypted archive even when a master key is set')
      .option('--force-residency', "write to a backup directory of another region than the tenant's anyway (audited; regions from TENANTRY_BACKUP_REGIONS)")
      .option('--pace', "pace the copy by the server's load and run it at the lowest CPU priority (this process, and the backends where the server has the prioritize extension), to leave the other tenants the CPU (default: full speed, like pg_dump)")
      .option('--json', 'print JSON'),
  ).action(async (slug: string, opts: ConnectionFlags & { to?: string; gzip: boolean; encrypt?: boolean; forceResidency?: boolean; pace?: boolean; json?: boolean }) => {
    // Like `chrt --idle nice -n 19 pg_dump`: this process (its start, compression and writing) yields the CPU too.
    if (opts.pace) lowerProcessPriority(BACKUP_NICE, { idle: true })
    await withTenantry(opts, async (t) => {
      const bar = progressBar(!opts.json && Boolean(process.stderr.isTTY))
      try {
        const r = await t.portability.backup(slug, { to: opts.to, gzip: opts.gzip, encrypt: opts.encrypt, forceResidency: opts.forceResidency, pace: opts.pace, startedBy: startedBy(), onProgress: (p) => bar.update(p) })
        bar.stop()
        const pace = !r.pace ? 'not paced' : r.pace.free ? 'paced: the server was free, full speed' : `paced by the server's load: ${r.pace.meanLevel.toFixed(2)} streams on average`
        const priority = !r.priority ? ''
          : !r.priority.available ? '\nThe backends ran at full priority: the server has no prioritize extension (docs/portability.md#pacing).'
          : r.priority.autogroup ? `\nThe backends ran at nice ${BACKUP_NICE}, but the server's kernel has autogroup on, which makes that inert (docs/portability.md#pacing).`
          : `\nThe backends ran at nice ${BACKUP_NICE}.`
        print(opts.json, r, () => [
          `Backed up '${r.slug}' (${r.tier}): ${r.rows} rows in ${r.tables.length} tables, ${mb(r.bytes)}${r.encrypted ? ', encrypted' : ''} (${(r.ms / 1000).toFixed(1)} s, ${pace}; operation ${r.operationId})`,
          r.path,
        ].join('\n') + priority)
      } finally {
        bar.stop()
      }
    })
  })

  const backups = program.command('backups').description('archives written by backup')
  withConnection(
    backups
      .command('list')
      .description('archives written, newest first')
      .option('--tenant <slug>', 'only this tenant\'s')
      .option('--limit <n>', 'at most this many', positiveInt, 100)
      .option('--json', 'print JSON'),
  ).action(async (opts: ConnectionFlags & { tenant?: string; limit: number; json?: boolean }) => {
    await withTenantry(opts, async (t) => {
      const rows = await t.portability.listBackups({ tenant: opts.tenant, limit: opts.limit })
      print(opts.json, rows, () => backupsTable(rows))
    })
  })

  withConnection(
    program
      .command('restore <archive>')
      .description('restore an archive (a file, or s3://bucket/key.tar: downloaded first) into any tier and server: verified whole first, loaded beside what serves, then switched to')
      .option('--as <slug>', 'restore as a new tenant (new id; tenant_id rewritten)')
      .option('--tier <tier>', `tier of the restored tenant (${TIERS.join(', ')})`, tier)
      .option('--server <name>', 'server of the restored tenant')
      .option('--replace', 'restore over the existing tenant of that slug (atomic switch; a failed restore leaves it serving)')
      .option('--force-residency', "restore onto a server outside the tenant's region anyway (audited)")
      .option('--json', 'print JSON'),
  ).action(async (archive: string, opts: ConnectionFlags & { as?: string; tier?: Tier; server?: string; replace?: boolean; forceResidency?: boolean; json?: boolean }) => {
    await withTenantry(opts, async (t) => {
      const bar = progressBar(!opts.json && Boolean(process.stderr.isTTY))
      try {
        const r = await t.portability.restore(archive, { as: opts.as, tier: opts.tier, server: opts.server, replace: opts.replace, forceResidency: opts.forceResidency, startedBy: startedBy(), onProgress: (p) => bar.update(p) })
        bar.stop()
        print(opts.json, { ...r, tenant: tenantJson(r.tenant) }, () => [
          `Restored '${r.tenant.slug}' (${r.tenant.tier} on ${r.tenant.placement.server})${r.replaced ? ', replacing its previous data' : ''}: ${r.rows} rows in ${r.tables.length} tables (operation ${r.operationId}).`,
          ...(r.migratedForward.length ? [`Migrated forward: ${r.migratedForward.join(', ')}`] : []),
        ].join('\n'))
      } finally {
        bar.stop()
      }
    })
  })

  withConnection(
    program
      .command('erase <slug>')
      .description('erase a deleted tenant for good and verify it: every row, room, role, catalog entry and archive; data key destroyed; certificate kept')
      .option('--force', 'erase a tenant that was not deleted first')
      .option('--subject <value>', 'erase only the rows of one person: those whose subject-marked columns equal the value (the tenant stays)')
      .option('--json', 'print the certificate as JSON'),
  ).action(async (slug: string, opts: ConnectionFlags & { force?: boolean; subject?: string; json?: boolean }) => {
    await withTenantry(opts, async (t) => {
      const c = opts.subject !== undefined
        ? await t.portability.eraseSubject(slug, opts.subject, { startedBy: startedBy() })
        : await t.portability.erase(slug, { force: opts.force, startedBy: startedBy() })
      print(opts.json, c, () => certificateText(c))
      if (!c.verified) process.exitCode = 1
    })
  })

  withConnection(
    program
      .command('export <slug>')
      .description("GDPR export (Art. 20): every table of a tenant, or one person's rows, as JSON lines or CSV with a manifest")
      .requiredOption('--format <format>', `${EXPORT_FORMATS.join(' or ')}`, format)
      .option('--subject <value>', 'only the rows whose subject-marked columns equal the value (docs/portability.md)')
      .option('--to <dir>', 'directory to write the export\'s directory into; default TENANTRY_BACKUP_DIR or ./backups/')
      .option('--json', 'print JSON'),
  ).action(async (slug: string, opts: ConnectionFlags & { format: ExportFormat; subject?: string; to?: string; json?: boolean }) => {
    await withTenantry(opts, async (t) => {
      const r = await t.portability.export(slug, { format: opts.format, subject: opts.subject, to: opts.to, startedBy: startedBy() })
      print(opts.json, r, () => [
        `Exported ${r.subject ? "one subject's rows of" : ''} '${r.slug}' as ${r.format}: ${r.rows} rows in ${r.tables.length} files (operation ${r.operationId}).`.replace('  ', ' '),
        r.path,
      ].join('\n'))
    })
  })

  withConnection(
    program
      .command('erasures [slug]')
      .description('erasure certificates kept in the catalog (of one tenant slug or id)')
      .option('--json', 'print JSON'),
  ).action(async (slug: string | undefined, opts: ConnectionFlags & { json?: boolean }) => {
    await withTenantry(opts, async (t) => {
      const certs = await t.portability.certificates(slug)
      print(opts.json, certs, () => (certs.length === 0 ? 'No erasure certificates.' : certs.map(certificateText).join('\n\n')))
    })
  })
}
