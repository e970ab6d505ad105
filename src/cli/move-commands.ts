import cliProgress from 'cli-progress'
import { InvalidArgumentError, type Command } from 'commander'
import { TIERS, type Tier } from '../core/types.ts'
import { tier, type CommandKit } from './portability-commands.ts'
import type { KeptRoom, MoveProgress, MoveResult } from '../moves/index.ts'
import type { Advice } from '../observe/types.ts'
import type { Tenantry } from '../runtime.ts'
import { table, tenantJson } from './format.ts'
import type { ConnectionFlags } from './open.ts'

function graceMs(value: string): number {
  const m = /^([0-9]{1,7})(ms|s|m|h)?$/.exec(value)
  if (!m) throw new InvalidArgumentError('--grace must be a length such as 0, 30s, 15m or 2h.')
  return Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] ?? 'ms']!
}

/** The steps as a bar on stderr (tables copied during the copy), only on a terminal. */
function moveBar(enabled: boolean): { update(p: MoveProgress): void; stop(): void } {
  if (!enabled) return { update() {}, stop() {} }
  const bar = new cliProgress.SingleBar(
    { format: '{step} [{bar}] {value}/{total} tables | {rows} rows | {table}', hideCursor: true, stream: process.stderr },
    cliProgress.Presets.shades_classic,
  )
  let started = false
  return {
    update(p) {
      if (!started) {
        started = true
        bar.start(Math.max(p.tables, 1), p.tablesDone, { step: p.step, rows: p.rows, table: p.table ?? '' })
      }
      if (p.tables > 0) bar.setTotal(p.tables)
      bar.update(p.tablesDone, { step: p.step, rows: p.rows, table: p.table ?? '' })
    },
    stop() {
      if (started) bar.stop()
      started = false
    },
  }
}

function resultText(r: MoveResult): string {
  const where = (x: MoveResult['from']) => `${x.tier} on ${x.placement.server}${x.tier === 'database' ? ` (${x.placement.database})` : x.placement.schema ? ` (${x.placement.schema})` : ''}`
  return [
    `Moved '${r.tenant.slug}' from ${where(r.from)} to ${where(r.to)}: ${r.rows} rows in ${r.tables.length} tables, verified; ${r.catchUp ? `online, ${r.catchUp.keys} changed rows caught up; ` : ''}writes fenced ${r.fenceMs} ms, ${r.ms} ms in all (operation ${r.operationId}).`,
    table(['TABLE', 'ROWS', 'CHECKSUM'], r.tables.map((t) => [t.table, t.rows, t.targetChecksum])),
    r.keptUntil ? `The old room is kept until ${r.keptUntil.toISOString()}: 'tenantry move ${r.tenant.slug} --rollback' moves back until then.` : 'The old room was removed.',
  ].join('\n')
}

function keptTable(rooms: KeptRoom[]): string {
  if (rooms.length === 0) return 'No rooms kept by moves.'
  return table(['TENANT', 'TIER', 'SERVER', 'DATABASE', 'SCHEMA', 'KEPT UNTIL'], rooms.map((k) => [k.tenantId, k.tier, k.placement.server, k.placement.database, k.placement.schema ?? '', k.keepUntil.toISOString()]))
}

/**
 * `tenantry move <slug> --tier T [--server S]`, `--rollback`, and `tenantry move --cleanup` /
 * `--kept` (docs/moves.md): the same library functions the API has.
 */
export function registerMoveCommands(program: Command, kit: CommandKit): void {
  const { withConnection, withTenantry, startedBy } = kit
  const print = (json: boolean | undefined, data: unknown, text: () => string) => console.log(json ? JSON.stringify(data, null, 2) : text())
  withConnection(
    program
      .command('move [slug]')
      .description("move a tenant to another tier and/or server, online: new room, write fence (writes wait), snapshot copy, verify, switch; the old room is kept for --rollback")
      .option('--tier <tier>', `the new tier (${TIERS.join(', ')})`, tier)
      .option('--server <name>', "the new server (default: the tenant's)")
      .option('--force', "move to a server outside the tenant's region (recorded in the audit log)")
      .option('--grace <length>', 'how long the old room is kept for --rollback (0 removes it at once; default 15m)', graceMs)
      .option('--rollback', "move back to the room the tenant's last move left (within its grace period)")
      .option('--cleanup', 'remove the rooms whose grace period ended (with --all: every kept room)')
      .option('--all', 'with --cleanup: every kept room')
      .option('--kept', 'list the rooms kept by moves')
      .option('--json', 'print JSON'),
  ).action(async (slug: string | undefined, opts: ConnectionFlags & { tier?: Tier; server?: string; force?: boolean; grace?: number; rollback?: boolean; cleanup?: boolean; all?: boolean; kept?: boolean; json?: boolean }, cmd: Command) => {
    const modes = [opts.rollback, opts.cleanup, opts.kept, opts.tier !== undefined].filter(Boolean).length
    if (modes !== 1 || ((opts.cleanup || opts.kept) ? slug !== undefined : slug === undefined)) {
      cmd.error("error: give one of: 'move <slug> --tier <tier> [--server S]', 'move <slug> --rollback', 'move --cleanup [--all]', 'move --kept'", { exitCode: 2 })
    }
    await withTenantry(opts, async (t) => {
      if (opts.cleanup) {
        const rooms = await t.moves.cleanup({ all: opts.all })
        print(opts.json, rooms, () => (rooms.length ? `Removed ${rooms.length} kept room(s):\n${keptTable(rooms)}` : 'No kept room was due for removal.'))
        return
      }
      if (opts.kept) {
        const rooms = await t.moves.keptRooms()
        print(opts.json, rooms, () => keptTable(rooms))
        return
      }
      const bar = moveBar(!opts.json && Boolean(process.stderr.isTTY))
      try {
        const o = { force: opts.force, graceMs: opts.grace, startedBy: startedBy(), onProgress: (p: MoveProgress) => bar.update(p) }
        const r = opts.rollback ? await t.moves.rollback(slug!, o) : await t.move(slug!, { ...o, tier: opts.tier!, server: opts.server })
        bar.stop()
        print(opts.json, { ...r, tenant: tenantJson(r.tenant) }, () => resultText(r))
      } finally {
        bar.stop()
      }
    })
  })
}

/** `tenantry advise --apply`: the advice carried out as moves, a line per move; exit 1 when one failed. */
export async function applyAdviceCommand(t: Tenantry, advice: Advice[], opts: { json?: boolean; maxMoves?: number; concurrency: number }, startedBy: string): Promise<void> {
  const results = await t.moves.applyAdvice(advice, await t.catalog.listServers(), { maxMoves: opts.maxMoves, concurrency: opts.concurrency, startedBy })
  if (opts.json) console.log(JSON.stringify(results, null, 2))
  else if (results.length === 0) console.log('No advice asks for a move.')
  else {
    console.log(table(['TENANT', 'KIND', 'FROM', 'TO', 'STATUS', 'OPERATION / ERROR'], results.map((r) => [
      r.slug, r.kind, r.fromServer, `${r.tier} on ${r.server}`, r.status, r.status === 'failed' ? `${r.error!.code}: ${r.error!.message}` : (r.operationId ?? ''),
    ])))
  }
  if (results.some((r) => r.status === 'failed')) process.exitCode = 1
}
