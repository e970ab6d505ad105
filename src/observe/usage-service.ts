import { hostname } from 'node:os'
import type { Catalog } from '../catalog/catalog.ts'
import { TenantryError } from '../core/errors.ts'
import type { Tenant, Tier } from '../core/types.ts'
import { isUuid, printable } from '../core/validation.ts'
import type { DataPlane } from '../data/data-plane.ts'
import type { AdminQueryable } from '../data/driver.ts'
import { tenantToken } from '../data/tenant-token.ts'
import { adviseFrom, resolveAdviseOptions } from './advise.ts'
import * as sql from './sql.ts'
import { TOP_BY, type Advice, type AdviseOptions, type TopBy, type TopQuery, type TopRow, type UsageGranularity, type UsageQuery, type UsageRecord, type UsageRow, type UsageService } from './types.ts'

export interface UsageServiceDeps {
  /** Owner connection to the catalog database (where `tenantry.usage` lives). */
  admin: AdminQueryable
  catalog: Catalog
  /** Storage is sampled through its drivers' owner connections. */
  dataPlane: DataPlane
  options: {
    /** Length of a metering interval, ms: storage samples are stamped with the interval they fall in. */
    intervalMs: number
    retentionDays: number
    /** How often the fleet samples storage, ms; 0 turns the timer off. */
    storageSampleMs: number
  }
  /**
   * Bytes each tenant keeps in object storage (`tenantry.storage`'s usage), read by each storage
   * sample into `objectBytes`. Without it, `objectBytes` stays null.
   */
  objectBytes?: () => Promise<Map<string, number>>
  /** Where background failures (sampling, pruning) go; they never throw. */
  onError?: (error: unknown, context: string) => void
}

const GRANULARITIES: readonly UsageGranularity[] = ['minute', 'hour', 'day']
const HOUR = 3_600_000
const PRUNE_EVERY_MS = HOUR
const FIRST_SAMPLE_MS = 5 * 60_000

interface UsageDbRow {
  tenant_id: string
  slug: string | null
  bucket: Date | string
  requests: number
  errors: number
  rejections: number
  statements: number
  rows: number
  db_time_ms: number
  storage_bytes: number | null
  object_bytes: number | null
}

interface TopDbRow extends Omit<UsageDbRow, 'bucket'> {
  tier: Tier | null
  plan: string | null
  server: string | null
  server_db_time_share: number
  request_share: number
}

/**
 * The control-plane side of usage metering: adds up the meters' records in `tenantry.usage` of the
 * catalog database, answers `usage`, `top` and `advise`, samples tenants' storage (one process of
 * the fleet per period) and prunes rows past the retention.
 *
 * @example
 * ```ts
 * const usage = createUsageService({ admin, catalog, dataPlane, options: { intervalMs: 60_000, retentionDays: 90, storageSampleMs: 900_000 } })
 * await usage.init()
 * await usage.write(records)
 * const top = await usage.top({ by: 'db_time', periodMs: 3_600_000 })
 * ```
 */
export function createUsageService(deps: UsageServiceDeps): UsageService {
  const { admin, catalog, dataPlane, options } = deps
  const onError = deps.onError ?? (() => undefined)
  const me = `${hostname()}:${process.pid}`
  const timers: NodeJS.Timeout[] = []
  const inFlight = new Set<Promise<unknown>>()
  let sampling: Promise<number> | undefined

  async function write(records: UsageRecord[]): Promise<void> {
    if (records.length === 0) return
    for (const r of records) checkRecord(r)
    const s = sql.writeUsage(merged(records))
    await admin.query(s.text, s.values)
  }

  async function usage(q: UsageQuery = {}): Promise<UsageRow[]> {
    const granularity = q.granularity ?? 'hour'
    if (!GRANULARITIES.includes(granularity)) {
      throw new TenantryError('VALIDATION_FAILED', `Granularity '${printable(String(granularity))}' is not one of ${GRANULARITIES.join(', ')}.`, { details: { granularity: printable(String(granularity)) } })
    }
    const to = q.to ?? new Date()
    const from = q.from ?? new Date(to.getTime() - HOUR)
    checkDate('from', from)
    checkDate('to', to)
    if (from.getTime() >= to.getTime()) {
      throw new TenantryError('VALIDATION_FAILED', `The period is empty: from (${from.toISOString()}) must be before to (${to.toISOString()}).`)
    }
    const tenantId = q.tenant === undefined ? null : await tenantIdOf(q.tenant)
    const s = sql.usageByBucket({ tenantId, from, to, granularity })
    const res = await admin.query<UsageDbRow>(s.text, s.values)
    return res.rows.map((r) => ({ tenantId: r.tenant_id, slug: r.slug, bucket: new Date(r.bucket), ...counters(r) }))
  }

  /** The id of a tenant named by slug or id; an id that only usage rows still know (a purged tenant's) is accepted. */
  async function tenantIdOf(slugOrId: string): Promise<string> {
    if (typeof slugOrId !== 'string' || slugOrId.length === 0) throw new TenantryError('TENANT_INVALID', 'A tenant slug or id is required.')
    const id = slugOrId.toLowerCase()
    if (isUuid(id)) {
      const t = await catalog.byId(id)
      if (t) return t.id
      const s = sql.hasUsage(id)
      const kept = await admin.query<{ found: boolean }>(s.text, s.values)
      if (kept.rows[0]?.found) return id
    } else {
      const t = await catalog.bySlug(slugOrId)
      if (t) return t.id
    }
    throw new TenantryError('TENANT_NOT_FOUND', `No tenant has the slug or id '${printable(slugOrId)}'.`, { details: { tenant: printable(slugOrId) } })
  }

  async function topRows(q: { from: Date; to: Date; by: TopBy; server: string | null; limit: number | null }): Promise<TopRow[]> {
    const s = sql.topTenants(q)
    const res = await admin.query<TopDbRow>(s.text, s.values)
    return res.rows.map((r) => ({
      tenantId: r.tenant_id, slug: r.slug, tier: r.tier, plan: r.plan, server: r.server, ...counters(r),
      serverDbTimeShare: Number(r.server_db_time_share), requestShare: Number(r.request_share),
    }))
  }

  async function top(q: TopQuery = {}): Promise<TopRow[]> {
    const by = q.by ?? 'requests'
    if (!TOP_BY.includes(by)) {
      throw new TenantryError('VALIDATION_FAILED', `Cannot sort by '${printable(String(by))}': choose one of ${TOP_BY.join(', ')}.`, { details: { by: printable(String(by)) } })
    }
    const periodMs = checkPeriod(q.periodMs ?? HOUR)
    const limit = q.limit ?? 20
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000) {
      throw new TenantryError('VALIDATION_FAILED', `The limit must be a whole number from 1 to 1000; got ${printable(String(limit))}.`)
    }
    if (q.server !== undefined && typeof q.server !== 'string') throw new TenantryError('VALIDATION_FAILED', 'The server filter must be a server name.')
    const to = new Date()
    return topRows({ from: new Date(to.getTime() - periodMs), to, by, server: q.server ?? null, limit })
  }

  async function advise(opts: AdviseOptions = {}): Promise<Advice[]> {
    const options = resolveAdviseOptions(opts)
    const to = new Date()
    const periodStart = new Date(to.getTime() - options.periodMs)
    const [rows, servers, tenants] = await Promise.all([
      topRows({ from: periodStart, to, by: 'db_time', server: null, limit: null }),
      catalog.listServers(),
      catalog.list(),
    ])
    return adviseFrom({ rows, servers, tenants, periodStart, options })
  }

  async function sampleStorage(opts: { force?: boolean } = {}): Promise<number> {
    // One sampling at a time in this process: a timer tick during a forced run waits for it.
    if (sampling) await sampling.catch(() => undefined)
    const run = (sampling = sampleOnce(opts.force === true))
    try {
      return await run
    } finally {
      if (sampling === run) sampling = undefined
    }
  }

  async function sampleOnce(force: boolean): Promise<number> {
    const claim = sql.claimSampling(Math.max(0, options.storageSampleMs), me, force)
    const claimed = await admin.query(claim.text, claim.values)
    if (claimed.rows.length === 0) return 0
    const intervalStart = new Date(Math.floor(Date.now() / options.intervalMs) * options.intervalMs)
    // Tenants still provisioning may lack their schema or database (and on PGlite, opening a
    // database that does not exist yet would create it); deleted ones are not billed.
    const tenants = (await catalog.list()).filter((t) => t.status === 'active' || t.status === 'suspended')
    const bytes = new Map<string, number>()
    const byServer = new Map<string, Tenant[]>()
    for (const t of tenants) byServer.set(t.placement.server, [...(byServer.get(t.placement.server) ?? []), t])
    for (const [serverName, here] of byServer) {
      try {
        await sampleServer(serverName, here, bytes)
      } catch (err) {
        // An unregistered server (SERVER_NOT_FOUND): its tenants are not sampled by this process.
        onError(err, `sampling the storage of tenants on server '${serverName}'`)
      }
    }
    const objects = await sampleObjects()
    const sampled = tenants.filter((t) => bytes.has(t.id) || objects)
    await write(
      sampled.map((t) => ({
        tenantId: t.id, intervalStart, intervalMs: options.intervalMs,
        requests: 0, errors: 0, rejections: 0, statements: 0, rows: 0, dbTimeMs: 0,
        storageBytes: bytes.has(t.id) ? Math.round(bytes.get(t.id)!) : null,
        objectBytes: objects ? (objects.get(t.id) ?? 0) : null,
      })),
    )
    return sampled.length
  }

  /** Object-storage bytes per tenant, or null when there is no object storage or it cannot be read (reported). */
  async function sampleObjects(): Promise<Map<string, number> | null> {
    if (!deps.objectBytes) return null
    try {
      return await deps.objectBytes()
    } catch (err) {
      onError(err, 'sampling the object storage of tenants')
      return null
    }
  }

  /** Each tier's sampling on its own: one that fails is reported and the others still count. */
  async function sampleServer(serverName: string, tenants: Tenant[], out: Map<string, number>): Promise<void> {
    const driver = dataPlane.driver(serverName)
    const main = driver.admin(dataPlane.server(serverName).mainDatabase)
    const part = async (what: string, fn: () => Promise<void>) => {
      try {
        await fn()
      } catch (err) {
        onError(err, `sampling the storage of ${what} on server '${serverName}'`)
      }
    }

    const schemaTenants = tenants.filter((t) => t.tier === 'schema' && t.placement.schema)
    if (schemaTenants.length > 0) {
      await part('schema tenants', async () => {
        const s = sql.schemaSizes(schemaTenants.map((t) => t.placement.schema!))
        const res = await main.query<{ schema: string; bytes: number }>(s.text, s.values)
        const sizes = new Map(res.rows.map((r) => [r.schema, Number(r.bytes)]))
        for (const t of schemaTenants) if (sizes.has(t.placement.schema!)) out.set(t.id, sizes.get(t.placement.schema!)!)
      })
    }

    const dbTenants = tenants.filter((t) => t.tier === 'database')
    if (driver.kind === 'pg') {
      if (dbTenants.length > 0) {
        await part('database tenants', async () => {
          const s = sql.databaseSizes(dbTenants.map((t) => t.placement.database))
          const res = await main.query<{ database: string; bytes: number }>(s.text, s.values)
          const sizes = new Map(res.rows.map((r) => [r.database, Number(r.bytes)]))
          for (const t of dbTenants) if (sizes.has(t.placement.database)) out.set(t.id, sizes.get(t.placement.database)!)
        })
      }
    } else {
      // PGlite: every database is an instance of its own, asked one by one.
      for (const t of dbTenants) {
        await part(`tenant '${t.slug}'`, async () => {
          if (!(await driver.databaseExists(t.placement.database))) return
          const res = await driver.admin(t.placement.database).query<{ bytes: number }>(sql.CURRENT_DATABASE_SIZE_SQL)
          out.set(t.id, Number(res.rows[0].bytes))
        })
      }
    }

    const pooled = tenants.filter((t) => t.tier === 'pooled')
    if (pooled.length > 0) await part('pooled tenants', () => samplePooled(main, pooled, out))
  }

  /**
   * The pooled estimate: each pooled table's total size (heap, indexes, TOAST) shared out in
   * proportion to the tenants' row counts in it (docs/usage.md says where this is biased).
   */
  async function samplePooled(main: AdminQueryable, pooled: Tenant[], out: Map<string, number>): Promise<void> {
    const schema = dataPlane.opts.pooledSchema
    const t = sql.pooledTables(schema)
    const tables = (await main.query<{ table_name: string; bytes: number }>(t.text, t.values)).rows
    const bypasses = (await main.query<{ bypasses: boolean }>(sql.BYPASSES_RLS_SQL)).rows[0]?.bypasses === true
    // rows.get(table).get(tenant) = that tenant's rows in the table; the table's total is the sum.
    const rows = new Map<string, Map<string, number>>()
    if (bypasses) {
      for (const { table_name } of tables) {
        const s = sql.rowsPerTenant(schema, table_name)
        const res = await main.query<{ tenant_id: string; n: number }>(s.text, s.values)
        rows.set(table_name, new Map(res.rows.map((r) => [r.tenant_id, Number(r.n)])))
      }
    } else {
      // An owner without BYPASSRLS sees only the tenant its transaction is pointed at (forced
      // RLS), so the rows are counted tenant by tenant. Tenants not sampled (deleted ones) are
      // not counted, so their rows do not dilute the others' share.
      for (const { table_name } of tables) rows.set(table_name, new Map())
      for (const tenant of pooled) {
        await main.transaction(async (tx) => {
          await tx.query(sql.SET_TENANT_SQL, [tenantToken(dataPlane.tenantKey, tenant.id)])
          for (const { table_name } of tables) {
            const s = sql.rowsOfTenant(schema, table_name, tenant.id)
            const res = await tx.query<{ n: number }>(s.text, s.values)
            rows.get(table_name)!.set(tenant.id, Number(res.rows[0].n))
          }
        })
      }
    }
    for (const tenant of pooled) {
      let bytes = 0
      for (const { table_name, bytes: size } of tables) {
        const perTenant = rows.get(table_name)!
        let total = 0
        for (const n of perTenant.values()) total += n
        if (total > 0) bytes += Number(size) * ((perTenant.get(tenant.id) ?? 0) / total)
      }
      out.set(tenant.id, bytes)
    }
  }

  async function prune(): Promise<number> {
    const s = sql.pruneUsage(options.retentionDays)
    return (await admin.query(s.text, s.values)).rowCount
  }

  /** Run background work; its failure is reported, never thrown. Skipped while the previous run of the same job is busy. */
  function background(context: string, busy: { running: boolean }, fn: () => Promise<unknown>): void {
    if (busy.running) return
    busy.running = true
    const p = fn()
      .catch((err) => {
        try {
          onError(err, context)
        } catch {
          /* a failing error handler must not take the process down */
        }
      })
      .finally(() => {
        busy.running = false
        inFlight.delete(p)
      })
    inFlight.add(p)
  }

  return {
    async init() {
      await admin.transaction(async (tx) => {
        await tx.exec(sql.USAGE_SCHEMA_SQL)
      })
    },
    write,
    usage,
    top,
    advise,
    sampleStorage,
    prune,
    start() {
      if (timers.length > 0) return
      const sampleBusy = { running: false }
      const pruneBusy = { running: false }
      if (options.storageSampleMs > 0) {
        const sample = () => background('sampling tenant storage', sampleBusy, () => sampleStorage())
        timers.push(setInterval(sample, options.storageSampleMs))
        // A first sample soon after start, so processes that restart more often than the period
        // still sample (the claim keeps it to one process of the fleet per period).
        timers.push(setTimeout(sample, Math.min(options.storageSampleMs, FIRST_SAMPLE_MS)))
      }
      timers.push(setInterval(() => background('pruning usage past the retention', pruneBusy, prune), PRUNE_EVERY_MS))
      for (const t of timers) t.unref()
    },
    async close() {
      for (const t of timers.splice(0)) clearTimeout(t)
      await Promise.all([...inFlight])
    },
  }
}

function counters(r: Omit<UsageDbRow, 'tenant_id' | 'slug' | 'bucket'>) {
  return {
    requests: Number(r.requests),
    errors: Number(r.errors),
    rejections: Number(r.rejections),
    statements: Number(r.statements),
    dbTimeMs: Number(r.db_time_ms),
    rows: Number(r.rows),
    storageBytes: r.storage_bytes === null ? null : Number(r.storage_bytes),
    objectBytes: r.object_bytes === null || r.object_bytes === undefined ? null : Number(r.object_bytes),
  }
}

function checkDate(name: string, d: unknown): void {
  if (!(d instanceof Date) || Number.isNaN(d.getTime())) {
    throw new TenantryError('VALIDATION_FAILED', `'${name}' must be a valid date.`, { details: { [name]: printable(String(d)) } })
  }
}

function checkPeriod(ms: unknown): number {
  if (typeof ms !== 'number' || !Number.isFinite(ms) || ms <= 0) {
    throw new TenantryError('VALIDATION_FAILED', `The period must be a number of milliseconds above 0; got ${printable(String(ms))}.`)
  }
  return ms
}

const COUNTERS = ['requests', 'errors', 'rejections', 'statements', 'rows'] as const

/**
 * Records of the same tenant and interval added up (the last storage sample wins): one INSERT …
 * ON CONFLICT DO UPDATE cannot touch the same row twice.
 */
function merged(records: UsageRecord[]): UsageRecord[] {
  const byKey = new Map<string, UsageRecord>()
  for (const r of records) {
    const key = `${r.tenantId.toLowerCase()}@${r.intervalStart.getTime()}`
    const seen = byKey.get(key)
    if (!seen) {
      byKey.set(key, { ...r })
      continue
    }
    for (const c of COUNTERS) seen[c] += r[c]
    seen.dbTimeMs += r.dbTimeMs
    if (r.storageBytes !== null) seen.storageBytes = r.storageBytes
    if (r.objectBytes !== null && r.objectBytes !== undefined) seen.objectBytes = r.objectBytes
  }
  return [...byKey.values()]
}

/** A record the table cannot take (a bad id, a fractional count) is refused before the batch is sent: one bad record must not be half-written. */
function checkRecord(r: UsageRecord): void {
  const bad = (what: string) => new TenantryError('VALIDATION_FAILED', `Usage record of tenant '${printable(String(r.tenantId))}': ${what}.`)
  if (typeof r.tenantId !== 'string' || !isUuid(r.tenantId.toLowerCase())) throw bad('the tenant id is not a uuid')
  if (!(r.intervalStart instanceof Date) || Number.isNaN(r.intervalStart.getTime())) throw bad('intervalStart is not a valid date')
  if (!Number.isInteger(r.intervalMs) || r.intervalMs <= 0) throw bad(`intervalMs must be a whole number above 0, not ${r.intervalMs}`)
  for (const c of COUNTERS) if (!Number.isSafeInteger(r[c]) || r[c] < 0) throw bad(`${c} must be a whole number of at least 0, not ${r[c]}`)
  if (typeof r.dbTimeMs !== 'number' || !Number.isFinite(r.dbTimeMs) || r.dbTimeMs < 0) throw bad(`dbTimeMs must be a number of at least 0, not ${r.dbTimeMs}`)
  if (r.storageBytes !== null && (!Number.isSafeInteger(r.storageBytes) || r.storageBytes < 0)) throw bad(`storageBytes must be null or a whole number of at least 0, not ${r.storageBytes}`)
  if (r.objectBytes != null && (!Number.isSafeInteger(r.objectBytes) || r.objectBytes < 0)) throw bad(`objectBytes must be null or a whole number of at least 0, not ${r.objectBytes}`)
}
