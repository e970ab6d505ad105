import cliProgress from 'cli-progress'
import type { TenantryEventMap } from '../lifecycle/events.ts'
import type { Tenantry } from '../runtime.ts'

/**
 * The progress bar of `tenants create` while a server's template database is built: the first
 * database-tier tenant of a server (on embedded PGlite a new database instance, seconds to half a
 * minute), or the first after new migration files. Steps done of total, the step running now and
 * the time so far, on stderr; nothing when `enabled` is false or no template is built.
 *
 * @example
 * ```ts
 * const bar = templateProgress(tenantry, Boolean(process.stderr.isTTY))
 * try { await tenantry.provision({ slug: 'acme', tier: 'database' }) } finally { bar.stop() }
 * ```
 */
export function templateProgress(tenantry: Pick<Tenantry, 'events'>, enabled: boolean): { stop(): void } {
  if (!enabled) return { stop() {} }
  let bar: cliProgress.SingleBar | undefined
  const onStep = ({ server, done, total, label }: TenantryEventMap['template.step']) => {
    if (!bar) {
      bar = new cliProgress.SingleBar(
        {
          format: `template of ${server} [{bar}] {value}/{total} | {label} | {duration}s`,
          hideCursor: true,
          stream: process.stderr,
        },
        cliProgress.Presets.shades_classic,
      )
      bar.start(total, done, { label })
    } else {
      bar.setTotal(total)
      bar.update(done, { label })
    }
  }
  const onProvisioned = () => bar?.update(bar.getTotal(), { label: 'done' })
  tenantry.events.on('template.step', onStep)
  tenantry.events.on('tenant.provisioned', onProvisioned)
  return {
    stop() {
      tenantry.events.off('template.step', onStep)
      tenantry.events.off('tenant.provisioned', onProvisioned)
      bar?.stop()
    },
  }
}
