import { randomBytes } from 'node:crypto'
import { SignJWT, UnsecuredJWT } from 'jose'
// Runtime imports from the modules src/index.ts re-exports (it re-exports this one: no cycle).
import { TenantryError, quoteIdent, type Tenant, type Tier } from '../core/index.ts'
import { customDomain, header, jwtClaim, pathPrefix, subdomain } from '../resolve/index.ts'
import { createTenantry, type Tenantry } from '../runtime.ts'
import { buildVerifyApp } from './app.ts'
import { ATTEMPT_KINDS, type Arena, type AttemptKind, type KindStats, type Outcome, type Row, type TokenKind, type VerifyFinding } from './arena.ts'
import { ATTACKS } from './attacks.ts'
import { discoverSchema, type RelationInfo } from './discover.ts'
import { Random, randomSeed } from './random.ts'
import { createScratch, type Scratch } from './scratch.ts'
import { toText, valueFor } from './values.ts'

/**
 * Options of {@link verifyIsolation}.
 *
 * @example
 * ```ts
 * const options: VerifyIsolationOptions = { migrations: './migrations', databaseUrl: process.env.DATABASE_URL, attempts: 5000 }
 * ```
 */
export interface VerifyIsolationOptions {
  /** Directory of the app's migrations (`NNNN_name.sql`): the schema that is attacked. */
  migrations: string
  /**
   * Admin URL of a PostgreSQL server (a role that may create databases and roles). The suite
   * creates a scratch database on it, never touches any other, and drops it (with every role and
   * database it made) at the end. Without one: embedded PGlite in memory.
   */
  databaseUrl?: string
  /** Active tenants, spread over the tiers (pooled, schema, database). Default 6. On PGlite at most 2 are on the database tier. */
  tenants?: number
  /** Randomized attempts to cross tenants. Default 2000. */
  attempts?: number
  /** Rows written per tenant per table. Default 4. */
  rowsPerTable?: number
  /** Attempts in flight at once (on shared connections). Default 16. */
  concurrency?: number
  /** Seed of the random plan: the same seed replays the same attempts. Default: random (printed). */
  seed?: number
  /** Start of the prefix of the scratch roles and databases (a run id is appended). Default `tv`. */
  rolePrefix?: string
  /** Connections of the scratch data plane per server: fewer than `concurrency`, so that tenants share them. Default 10. */
  connectionBudget?: number
  /** Keep the scratch database (for a post-mortem); its name is in the report. */
  keep?: boolean
  /** Called as the run goes. */
  onProgress?: (p: VerifyProgress) => void
  /** Only these kinds of attempt (default: all). */
  kinds?: AttemptKind[]
}

/** Where a run is. */
export interface VerifyProgress {
  phase: 'setup' | 'provision' | 'fill' | 'attack' | 'integrity' | 'cleanup'
  done: number
  total: number
  leaks: number
  failures: number
}

/** What {@link verifyIsolation} found. `ok` is true only with no leak and no failure. */
export interface VerifyIsolationReport {
  ok: boolean
  backend: 'postgres' | 'pglite'
  seed: number
  attempts: number
  leaks: number
  failures: number
  /** Attempts refused as they should be (coded 4xx or coded error). */
  refused: number
  elapsedMs: number
  attackMs: number
  attemptsPerSecond: number
  tenants: Record<Tier, number> & { suspended: number; deleted: number }
  relations: { name: string; kind: 'table' | 'view'; rls: boolean; forceRls: boolean; rowsPerTenant: number; filled: boolean; note?: string }[]
  kinds: Record<AttemptKind, KindStats>
  /** The first leaks and failures in detail (all are counted). */
  findings: VerifyFinding[]
  /** Rows compared, as the owner, before and after the attacks. */
  integrity: { rows: number; changed: number }
  notes: string[]
  scratch: { database: string; kept: boolean; prefix: string }
}

const MAX_FINDINGS = 50
const BASE_DOMAIN = 'verify.test'
const CUSTOM_DOMAIN = 'customer.test'

/**
 * The isolation attack suite: provisions tenants on every tier from the app's own migrations in a
 * scratch database, fills every tenant table with random rows (types and foreign keys read from
 * the catalog), then runs randomized attempts to cross tenants — through HTTP (mismatched and
 * malformed host/header/path/JWT identifiers, forged `tenant_id` writes, cross-tenant reads,
 * updates and deletes) and through tenant handles (session-changing SQL, disguised `set_config`,
 * queries outside any context, errors followed by another tenant's statement, bursts of tenants
 * on shared connections). A leak is any row of another tenant returned or changed; a failure is a
 * bad input not refused with a coded 4xx or error. Finally every tenant table is compared, as the
 * owner, with what was written before the attacks.
 *
 * @example
 * ```ts
 * const report = await verifyIsolation({ migrations: './migrations', databaseUrl: process.env.DATABASE_URL, attempts: 5000 })
 * if (!report.ok) process.exit(1)
 * ```
 */
export async function verifyIsolation(options: VerifyIsolationOptions): Promise<VerifyIsolationReport> {
  const started = Date.now()
  if (!options?.migrations) throw new TenantryError('CONFIG_INVALID', 'verifyIsolation() needs the directory of your migrations (--migrations).')
  const seed = options.seed ?? randomSeed()
  const rnd = new Random(seed)
  const tenantCount = options.tenants ?? 6
  const attempts = options.attempts ?? 2000
  const rowsPerTable = options.rowsPerTable ?? 4
  const concurrency = options.concurrency ?? 16
  for (const [name, v, min] of [['tenants', tenantCount, 2], ['attempts', attempts, 1], ['rowsPerTable', rowsPerTable, 1], ['concurrency', concurrency, 1]] as const) {
    if (!Number.isInteger(v) || v < min) throw new TenantryError('CONFIG_INVALID', `${name} must be a whole number of at least ${min}.`)
  }
  const base = (options.rolePrefix ?? 'tv').toLowerCase().replace(/[^a-z0-9_]/g, '').slice(0, 14) || 'tv'
  const prefix = `${/^[a-z]/.test(base) ? base : `t${base}`}_vi${randomBytes(3).toString('hex')}`
  const progress = (p: VerifyProgress) => options.onProgress?.(p)
  const notes: string[] = []

  let scratch: Scratch | undefined
  let tenantry: Tenantry | undefined
  let app: Awaited<ReturnType<typeof buildVerifyApp>> | undefined
  let kept = false
  try {
    progress({ phase: 'setup', done: 0, total: 1, leaks: 0, failures: 0 })
    if (options.databaseUrl) scratch = await createScratch(options.databaseUrl, `${prefix}_scratch`, prefix)
    const jwtSecret = randomBytes(32)
    tenantry = await createTenantry({
      ...(scratch ? { databaseUrl: scratch.url } : { dataDir: 'memory' }),
      migrations: options.migrations,
      rolePrefix: prefix,
      connectionBudget: options.connectionBudget ?? 10,
      acquireTimeoutMs: 30_000,
      resolve: [
        subdomain({ baseDomain: BASE_DOMAIN }),
        customDomain({ exclude: [BASE_DOMAIN] }),
        pathPrefix({ prefix: '/t' }),
        header({ name: 'x-tenant' }),
        jwtClaim({ secret: jwtSecret }),
      ],
      // Limits are not what is verified here: none, and no shared store.
      guard: { redis: null },
      resumeOperations: false,
    })
    const t = tenantry
    if (t.migrationFiles.length === 0) throw new TenantryError('CONFIG_INVALID', `No migrations found in '${options.migrations}'.`)
    const migrated = await t.migrate()
    if (migrated.state === 'failed') {
      throw new TenantryError('MIGRATION_FAILED', `Your migrations do not apply to a fresh database: ${migrated.targets.map((x) => x.error).filter(Boolean).join('; ')}`)
    }
    const backend = t.dataPlane.driver('main').kind === 'pg' ? 'postgres' : 'pglite'

    // ── tenants ──
    const tiers: Tier[] = ['pooled', 'schema', 'database']
    const plan: { slug: string; tier: Tier }[] = []
    const perTier: Record<Tier, number> = { pooled: 0, schema: 0, database: 0 }
    const maxDatabase = backend === 'pglite' ? 2 : Infinity
    let capped = false
    for (let i = 0; plan.length < tenantCount; i++) {
      let tier = tiers[i % 3]
      if (tier === 'database' && perTier.database >= maxDatabase) {
        tier = perTier.pooled <= perTier.schema ? 'pooled' : 'schema'
        capped = true
      }
      perTier[tier]++
      plan.push({ slug: `vi-${tier[0]}${perTier[tier]}`, tier })
    }
    if (capped) notes.push(`PGlite: at most ${maxDatabase} database-tier tenants (each is a whole embedded instance); the rest are pooled and schema.`)
    // A suspended and a deleted tenant: their rows stay in the shared tables and must stay out of reach.
    plan.push({ slug: 'vi-suspended', tier: 'pooled' }, { slug: 'vi-deleted', tier: 'pooled' })
    const all: Tenant[] = []
    let provisioned = 0
    const provisionOne = async (p: { slug: string; tier: Tier }) => {
      const tenant = await t.provision({ ...p, name: `verify ${p.slug}` }, 'verify-isolation')
      await t.addDomain(tenant.id, `${p.slug}.${CUSTOM_DOMAIN}`)
      all.push(tenant)
      progress({ phase: 'provision', done: ++provisioned, total: plan.length, leaks: 0, failures: 0 })
    }
    // Database tenants one at a time (clones of the template are serialised anyway), the rest four at a time.
    for (const p of plan.filter((x) => x.tier === 'database')) await provisionOne(p)
    await mapLimit(plan.filter((x) => x.tier !== 'database'), 4, provisionOne)
    all.sort((x, y) => plan.findIndex((p) => p.slug === x.slug) - plan.findIndex((p) => p.slug === y.slug))

    // ── relations ──
    const mainDb = t.dataPlane.server('main').mainDatabase
    const pooledSchema = t.dataPlane.pooledTarget('main').schema
    const discovered = await discoverSchema(t.dataPlane.driver('main').admin(mainDb), pooledSchema)
    const relations = discovered.filter((r) => r.tenant)
    const shared = discovered.filter((r) => !r.tenant)
    if (shared.length) notes.push(`Not attacked (no tenant_id column, shared by design): ${shared.map((r) => r.name).join(', ')}.`)
    if (relations.length === 0) throw new TenantryError('CONFIG_INVALID', 'Your migrations create no relation with a tenant_id column: there is nothing to attack.')

    // ── fill ──
    const rowsOf = new Map<string, Map<string, Row[]>>(all.map((x) => [x.id, new Map()]))
    const unfillable = new Map<string, string>()
    const order = fillOrder(relations.filter((r) => r.kind === 'table'))
    const makeRow = (rel: RelationInfo, tenant: Tenant, tenantId: string, attemptNo = 0): Record<string, string | null> | null => {
      const row: Record<string, string | null> = {}
      const fkCols = new Set<string>()
      for (const fk of rel.foreignKeys) {
        const refRows = fk.refTable === rel.name ? [] : (rowsOf.get(tenant.id)?.get(fk.refTable) ?? [])
        const nullable = fk.columns.filter((c) => c !== 'tenant_id').every((c) => !rel.columns.find((x) => x.name === c)?.notNull)
        if (refRows.length > 0) {
          const ref = rnd.pick(refRows)
          fk.columns.forEach((c, i) => { if (c !== 'tenant_id') row[c] = toText(ref[fk.refColumns[i]]) })
        } else if (nullable) {
          for (const c of fk.columns) if (c !== 'tenant_id') row[c] = null
        } else {
          return null
        }
        for (const c of fk.columns) fkCols.add(c)
      }
      for (const col of rel.columns) {
        if (col.name === 'tenant_id') { row.tenant_id = tenantId; continue }
        if (fkCols.has(col.name)) continue
        const v = valueFor(col, rnd, tenant.slug, attemptNo)
        if (v === 'default') continue
        if ('unsupported' in v) return null
        row[col.name] = v.value
      }
      return row
    }
    const insert = (rel: RelationInfo, row: Record<string, string | null>) => {
      const cols = Object.keys(row)
      const types = cols.map((c) => rel.columns.find((x) => x.name === c)!.type)
      return cols.length
        ? `INSERT INTO ${quoteIdent(rel.name)} (${cols.map(quoteIdent).join(', ')}) VALUES (${types.map((ty, i) => `$${i + 1}::${ty}`).join(', ')}) RETURNING *`
        : `INSERT INTO ${quoteIdent(rel.name)} DEFAULT VALUES RETURNING *`
    }
    let filled = 0
    for (const tenant of all) {
      const h = t.handle(tenant)
      for (const rel of order) {
        if (unfillable.has(rel.name)) continue
        const rows: Row[] = []
        let lastError = ''
        for (let n = 0; n < rowsPerTable; n++) {
          let done = false
          for (let attemptNo = 0; attemptNo < 5 && !done; attemptNo++) {
            const row = makeRow(rel, tenant, tenant.id, attemptNo)
            if (!row) {
              lastError = rel.foreignKeys.some((fk) => !(rowsOf.get(tenant.id)?.get(fk.refTable)?.length))
                ? `it needs rows in ${rel.foreignKeys.map((f) => f.refTable).join(', ')}, which could not be filled`
                : `a required column has a type the suite cannot generate`
              break
            }
            try {
              const r = await h.query<Row>(insert(rel, row), Object.values(row))
              rows.push(...r.rows)
              done = true
            } catch (err) {
              lastError = String((err as Error)?.message ?? err).split('\n')[0]
            }
          }
          if (!done) break
        }
        if (rows.length === 0) {
          unfillable.set(rel.name, lastError || 'no row could be written')
          continue
        }
        rowsOf.get(tenant.id)!.set(rel.name, rows)
      }
      progress({ phase: 'fill', done: ++filled, total: all.length, leaks: 0, failures: 0 })
    }
    for (const [name, why] of unfillable) notes.push(`Table ${name} was not filled (${why}); it is attacked empty.`)

    // ── suspend / delete, then the snapshot every change is compared with ──
    const suspendedT = await t.suspend('vi-suspended', 'verify-isolation: must not be served')
    const deletedT = await t.delete('vi-deleted')
    const finalAll = await Promise.all(all.map(async (x) => (await t.findTenant(x.id)) ?? x))
    const active = finalAll.filter((x) => x.status === 'active')
    const suspended = finalAll.filter((x) => x.id === suspendedT.id)
    const deleted = finalAll.filter((x) => x.id === deletedT.id)
    const before = await snapshot(t, finalAll, relations)
    const countOf = new Map<string, Map<string, number>>()
    for (const x of finalAll) {
      const m = new Map<string, number>()
      for (const rel of relations) if (rel.kind === 'table') m.set(rel.name, before.count(x, rel.name))
      countOf.set(x.id, m)
    }

    // ── tokens ──
    const tokens = new Map<string, Record<TokenKind, string>>()
    const otherSecret = randomBytes(32)
    const sign = (claims: Record<string, unknown>, key = jwtSecret, exp = '1h') => new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).setIssuedAt().setExpirationTime(exp).sign(key)
    for (const x of finalAll) {
      tokens.set(x.id, {
        slug: await sign({ tenant: x.slug }),
        id: await sign({ tenant: x.id }),
        badSignature: await sign({ tenant: x.slug }, otherSecret),
        expired: await new SignJWT({ tenant: x.slug }).setProtectedHeader({ alg: 'HS256' }).setIssuedAt(Math.floor(Date.now() / 1000) - 7200).setExpirationTime(Math.floor(Date.now() / 1000) - 3600).sign(jwtSecret),
        unsigned: new UnsecuredJWT({ tenant: x.slug }).setIssuedAt().setExpirationTime('1h').encode(),
        upperClaim: await sign({ tenant: x.slug.toUpperCase() }),
        numberClaim: await sign({ tenant: 42 }),
      })
    }

    // ── attacks ──
    app = await buildVerifyApp(t, relations)
    const kinds = Object.fromEntries(ATTEMPT_KINDS.map((k) => [k, { attempts: 0, leaks: 0, failures: 0, refused: 0, codes: {} }])) as Record<AttemptKind, KindStats>
    const findings: VerifyFinding[] = []
    let leaks = 0
    let failures = 0
    let refused = 0
    const record = (kind: AttemptKind | 'integrity', o: Outcome) => {
      if (kind !== 'integrity') {
        const k = kinds[kind]
        k.attempts++
        k.leaks += o.leaks?.length ?? 0
        k.failures += o.failures?.length ?? 0
        if (o.refusedWith) {
          k.refused++
          k.codes[o.refusedWith] = (k.codes[o.refusedWith] ?? 0) + 1
        }
      }
      if (o.refusedWith) refused++
      leaks += o.leaks?.length ?? 0
      failures += o.failures?.length ?? 0
      for (const f of [...(o.leaks ?? []), ...(o.failures ?? [])]) if (findings.length < MAX_FINDINGS) findings.push(f)
    }
    const writable = relations.filter((r) => r.kind === 'table' && !unfillable.has(r.name))
    const arena: Arena = {
      tenantry: t, app, rnd, active, all: finalAll, suspended, deleted, relations, writable, rowsOf, countOf, tokens,
      makeRow: (rel, tenant, tenantId) => makeRow(rel, tenant, tenantId),
      baseDomain: BASE_DOMAIN, customDomain: CUSTOM_DOMAIN,
    }
    const enabled = (options.kinds?.length ? ATTEMPT_KINDS.filter((k) => options.kinds!.includes(k)) : [...ATTEMPT_KINDS])
    const totalWeight = enabled.reduce((s, k) => s + ATTACKS[k].weight, 0)
    const pickKind = (): AttemptKind => {
      let x = rnd.next() * totalWeight
      for (const k of enabled) if ((x -= ATTACKS[k].weight) < 0) return k
      return enabled[enabled.length - 1]
    }
    const attackStarted = Date.now()
    let issued = 0
    let finished = 0
    let lastReport = 0
    const worker = async () => {
      while (issued < attempts) {
        issued++
        const kind = pickKind()
        let outcome: Outcome
        try {
          outcome = await ATTACKS[kind].run(arena)
        } catch (err) {
          outcome = { failures: [{ type: 'failure', kind, detail: `the attempt itself threw: ${String((err as Error)?.stack ?? err).slice(0, 400)}` }] }
        }
        record(kind, outcome)
        finished++
        if (finished - lastReport >= Math.max(1, Math.floor(attempts / 100)) || finished === attempts) {
          lastReport = finished
          progress({ phase: 'attack', done: finished, total: attempts, leaks, failures })
        }
      }
    }
    await Promise.all(Array.from({ length: Math.min(concurrency, attempts) }, worker))
    const attackMs = Date.now() - attackStarted

    // ── integrity: every row as the owner sees it, compared with the snapshot ──
    progress({ phase: 'integrity', done: 0, total: 1, leaks, failures })
    const after = await snapshot(t, finalAll, relations)
    const changes = before.diff(after)
    for (const c of changes) record('integrity', { leaks: [{ type: 'leak', kind: 'integrity', relation: c.relation, victim: c.tenant, detail: c.detail }] })
    const report: VerifyIsolationReport = {
      ok: leaks === 0 && failures === 0,
      backend,
      seed,
      attempts,
      leaks,
      failures,
      refused,
      elapsedMs: Date.now() - started,
      attackMs,
      attemptsPerSecond: Math.round((attempts / Math.max(1, attackMs)) * 1000),
      tenants: { ...perTier, suspended: 1, deleted: 1 },
      relations: relations.map((r) => ({
        name: r.name, kind: r.kind, rls: r.rls, forceRls: r.forceRls,
        rowsPerTenant: r.kind === 'table' && !unfillable.has(r.name) ? rowsPerTable : 0,
        filled: r.kind === 'table' && !unfillable.has(r.name),
        ...(unfillable.has(r.name) ? { note: unfillable.get(r.name) } : r.kind === 'view' ? { note: 'view: read attempts only' } : {}),
      })),
      kinds,
      findings,
      integrity: { rows: before.rows, changed: changes.length },
      notes,
      scratch: { database: scratch?.database ?? 'pglite:memory', kept: false, prefix },
    }
    kept = Boolean(options.keep && scratch)
    report.scratch.kept = kept
    return report
  } finally {
    progress({ phase: 'cleanup', done: 0, total: 1, leaks: 0, failures: 0 })
    await app?.close().catch(() => undefined)
    await tenantry?.close().catch(() => undefined)
    if (scratch && !kept) await scratch.drop()
  }
}

/** Tables in an order where every table comes after the tenant tables it references (cycles broken anywhere). */
function fillOrder(tables: RelationInfo[]): RelationInfo[] {
  const byName = new Map(tables.map((r) => [r.name, r]))
  const out: RelationInfo[] = []
  const seen = new Set<string>()
  const visit = (r: RelationInfo, path: Set<string>) => {
    if (seen.has(r.name) || path.has(r.name)) return
    path.add(r.name)
    for (const fk of r.foreignKeys) {
      const ref = byName.get(fk.refTable)
      if (ref && ref !== r) visit(ref, path)
    }
    path.delete(r.name)
    seen.add(r.name)
    out.push(r)
  }
  for (const r of tables) visit(r, new Set())
  return out
}

interface Snapshot {
  rows: number
  count(tenant: Tenant, table: string): number
  diff(other: Snapshot): { relation: string; tenant: string; detail: string }[]
  entries: Map<string, Map<string, string[]>>
}

/**
 * Every row of every tenant table in every place tenants live (pooled tables, tenant schemas,
 * tenant databases), read as the owner, which bypasses RLS: `place/table → tenant_id → row hashes`.
 */
async function snapshot(t: Tenantry, tenants: Tenant[], relations: RelationInfo[]): Promise<Snapshot> {
  const places = new Map<string, { server: string; database: string; schema: string }>()
  for (const x of tenants) {
    const target = t.dataPlane.migrationTarget(x)
    places.set(`${target.server}/${target.database}/${target.schema}`, { server: target.server, database: target.database, schema: target.schema })
  }
  const entries = new Map<string, Map<string, string[]>>()
  let rows = 0
  for (const [label, p] of places) {
    const admin = t.dataPlane.driver(p.server).admin(p.database)
    for (const rel of relations) {
      if (rel.kind !== 'table') continue
      const r = await admin.query<{ t: string | null; h: string }>(`SELECT tenant_id::text AS t, md5(x::text) AS h FROM ${quoteIdent(p.schema)}.${quoteIdent(rel.name)} x`)
      const m = new Map<string, string[]>()
      for (const row of r.rows) {
        const k = row.t ?? '(null)'
        let list = m.get(k)
        if (!list) m.set(k, (list = []))
        list.push(row.h)
        rows++
      }
      for (const list of m.values()) list.sort()
      entries.set(`${label}/${rel.name}`, m)
    }
  }
  const slugOf = (id: string) => tenants.find((x) => x.id === id)?.slug ?? id
  const placeOf = (x: Tenant) => {
    const target = t.dataPlane.migrationTarget(x)
    return `${target.server}/${target.database}/${target.schema}`
  }
  return {
    rows,
    entries,
    count: (x, table) => entries.get(`${placeOf(x)}/${table}`)?.get(x.id)?.length ?? 0,
    diff(other) {
      const out: { relation: string; tenant: string; detail: string }[] = []
      for (const key of new Set([...entries.keys(), ...other.entries.keys()])) {
        const a = entries.get(key) ?? new Map<string, string[]>()
        const b = other.entries.get(key) ?? new Map<string, string[]>()
        for (const id of new Set([...a.keys(), ...b.keys()])) {
          const x = a.get(id) ?? []
          const y = b.get(id) ?? []
          if (x.join() === y.join()) continue
          const ys = new Set(y)
          const xs = new Set(x)
          const removed = x.filter((h) => !ys.has(h)).length
          const added = y.filter((h) => !xs.has(h)).length
          out.push({ relation: key, tenant: slugOf(id), detail: `rows of ${slugOf(id)} in ${key} changed by the attacks: ${added} added or changed, ${removed} removed or changed` })
        }
      }
      return out
    },
  }
}

async function mapLimit<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0
  const worker = async () => {
    while (next < items.length) await fn(items[next++])
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker))
}
