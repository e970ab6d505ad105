import { Command, Option } from 'commander'
import { TenantryError } from '../core/errors.ts'
import { formatBytes } from '../observe/advise.ts'
import type { Tenantry } from '../runtime.ts'
import { table } from './format.ts'
import type { ConnectionFlags } from './open.ts'

/** What main.ts lends the resource commands: the connection options and the open/print helpers. */
export interface ResourceCommandHelpers {
  withConnection(cmd: Command): Command
  withTenantry<T>(flags: ConnectionFlags, fn: (t: Tenantry) => Promise<T>): Promise<T>
  print(json: boolean | undefined, data: unknown, text: () => string): void
}

/**
 * `tenantry cache flush <slug>`, `tenantry storage usage [slug] [--recount]`,
 * `tenantry jobs schedules [--tenant slug]`, `tenantry jobs run-schedules`: the same library calls
 * as `tenantry.cache.flushTenant`, `tenantry.storage.usage`/`recount` and `tenantry.jobs`.
 */
export function registerResourceCommands(program: Command, h: ResourceCommandHelpers): void {
  const cache = program.command('cache').description('the tenant cache (Redis)')
  h.withConnection(
    cache.command('flush <slug>')
      .description("forget every cache key of a tenant in O(1) (needs the app's Redis: REDIS_URL)")
      .addOption(new Option('--redis-url <url>', 'Redis of the cache').env('REDIS_URL')),
  ).action(async (slug: string, opts: ConnectionFlags & { redisUrl?: string }) => {
    if (!opts.redisUrl) {
      throw new TenantryError('CONFIG_INVALID', 'Without Redis the cache lives inside each app process, so there is nothing to flush from here. Set REDIS_URL (or --redis-url) to the Redis of the app\'s cache.')
    }
    await h.withTenantry({ ...opts, cache: { redis: opts.redisUrl } }, async (t) => {
      if (!(await t.cache.flushTenant(slug))) {
        throw new TenantryError('CONFIG_INVALID', `Redis at the configured URL did not answer: the cache of '${slug}' was not flushed.`)
      }
      console.log(`Flushed the cache of '${slug}'.`)
    })
  })

  const storage = program.command('storage').description('object storage per tenant')
  h.withConnection(
    storage.command('usage [slug]')
      .description('stored bytes and objects per tenant, against the plan\'s quota')
      .option('--recount', 'recount from a listing of the tenant\'s prefix first (after presigned uploads)')
      .option('--json', 'print JSON'),
  ).action(async (slug: string | undefined, opts: ConnectionFlags & { recount?: boolean; json?: boolean }, cmd: Command) => {
    if (opts.recount && !slug) cmd.error('error: --recount needs a tenant slug.', { exitCode: 2, code: 'commander.usage' })
    await h.withTenantry(opts, async (t) => {
      const tenants = slug ? [await t.findTenant(slug)] : (await t.catalog.list()).filter((x) => x.status !== 'deleted')
      if (tenants[0] === null) throw new TenantryError('TENANT_NOT_FOUND', `No tenant has the slug or id '${slug}'.`)
      const rows: { tenant: string; plan: string; bytes: number; objects: number; maxBytes: number | null; maxObjects: number | null }[] = []
      for (const tenant of tenants) {
        if (opts.recount) await t.storage.recount(tenant!)
        const u = await t.storage.usage(tenant!)
        rows.push({ tenant: tenant!.slug, plan: tenant!.plan, bytes: u.bytes, objects: u.objects, maxBytes: u.limits.maxBytes, maxObjects: u.limits.maxObjects })
      }
      h.print(opts.json, rows, () => table(['TENANT', 'PLAN', 'OBJECTS', 'STORED', 'MAX OBJECTS', 'MAX STORED'], rows.map((r) => [
        r.tenant, r.plan, r.objects, formatBytes(r.bytes), r.maxObjects ?? '-', r.maxBytes === null ? '-' : formatBytes(r.maxBytes),
      ])))
    })
  })

  const jobs = program.command('jobs').description('background jobs per tenant')
  h.withConnection(
    jobs.command('schedules')
      .description('cron schedules of every tenant (or one)')
      .option('--tenant <slug>', 'only this tenant')
      .option('--json', 'print JSON'),
  ).action(async (opts: ConnectionFlags & { tenant?: string; json?: boolean }) => {
    await h.withTenantry(opts, async (t) => {
      const tenant = opts.tenant ? await t.findTenant(opts.tenant) : null
      if (opts.tenant && !tenant) throw new TenantryError('TENANT_NOT_FOUND', `No tenant has the slug or id '${opts.tenant}'.`)
      const all = tenant ? await t.withTenant(tenant, () => t.jobs.schedules()) : await t.jobs.allSchedules()
      const slugs = new Map((await t.catalog.list()).map((x) => [x.id, x.slug]))
      const rows = all.map((s) => ({ tenant: slugs.get(s.tenantId) ?? s.tenantId, queue: s.queue, name: s.name, cron: s.cron, tz: s.tz, lastFired: s.lastFired }))
      h.print(opts.json, rows, () => rows.length === 0 ? 'No schedules.' : table(['TENANT', 'QUEUE', 'NAME', 'CRON', 'TZ', 'LAST FIRED'], rows.map((r) => [
        r.tenant, r.queue, r.name, r.cron, r.tz, r.lastFired ? r.lastFired.toISOString() : '-',
      ])))
    })
  })
  h.withConnection(
    jobs.command('run-schedules').description('send the jobs of every schedule due now (worker processes do this every 30 s)'),
  ).action(async (opts: ConnectionFlags) => {
    await h.withTenantry(opts, async (t) => {
      const n = await t.jobs.runSchedules()
      console.log(`Sent ${n} scheduled job${n === 1 ? '' : 's'}.`)
    })
  })
}
