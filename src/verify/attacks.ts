import { isTenantryError, quoteIdent, type Tenant } from '../core/index.ts'
import type { Queryable } from '../index.ts'
import { ROLLBACK_HEADER } from './app.ts'
import type { Arena, AttemptKind, Outcome, Row, VerifyFinding } from './arena.ts'
import type { RelationInfo } from './discover.ts'
import { toText } from './values.ts'

// ─── requests ────────────────────────────────────────────────────────────────────────────────────

/** A request being built: one identifier per slot at most (host, x-tenant header, path prefix, bearer token). */
interface Req {
  host?: string
  prefix: string
  headers: Record<string, string>
  /** What identifies whom, for the report. */
  desc: string[]
}

type Slot = 'host' | 'header' | 'path' | 'auth'

interface Reply {
  status: number
  body: { rows?: Row[]; rowCount?: number; code?: string; message?: string } | null
  /** The request could not even be sent (the HTTP layer refused it). */
  transport?: string
}

const newReq = (): Req => ({ prefix: '', headers: {}, desc: [] })

async function send(a: Arena, req: Req, method: 'GET' | 'POST' | 'PATCH' | 'DELETE', path: string, payload?: unknown): Promise<Reply> {
  try {
    const res = await a.app.inject({
      method,
      url: `${req.prefix}${path}`,
      headers: { ...req.headers, ...(req.host === undefined ? {} : { host: req.host }) },
      ...(payload === undefined ? {} : { payload: payload as Record<string, unknown> }),
    })
    let body: Reply['body'] = null
    try {
      body = res.json()
    } catch {
      body = null
    }
    return { status: res.statusCode, body }
  } catch (err) {
    return { status: 0, body: null, transport: String((err as Error)?.message ?? err) }
  }
}

/** A valid way to name `t` in `slot` (several spellings of the host that must all mean `t`). */
function validForm(a: Arena, req: Req, slot: Slot, t: Tenant): void {
  const r = a.rnd
  switch (slot) {
    case 'host': {
      const forms = [
        `${t.slug}.${a.baseDomain}`,
        `${t.slug}.${a.baseDomain}`.toUpperCase(),
        `${t.slug}.${a.baseDomain}.`,
        `${t.slug}.${a.baseDomain}:${r.int(1, 65535)}`,
        `${t.slug.toUpperCase()}.${a.baseDomain}.:443`,
        `${t.slug}.${a.customDomain}`,
      ]
      req.host = r.pick(forms)
      req.desc.push(`host ${req.host}`)
      return
    }
    case 'header':
      req.headers['x-tenant'] = r.chance(0.5) ? t.slug : t.id
      req.desc.push(`x-tenant ${req.headers['x-tenant']}`)
      return
    case 'path':
      req.prefix = `/t/${t.slug}`
      req.desc.push(`path ${req.prefix}`)
      return
    case 'auth':
      req.headers.authorization = `Bearer ${a.tokens.get(t.id)![r.chance(0.5) ? 'slug' : 'id']}`
      req.desc.push(`jwt for ${t.slug}`)
  }
}

const SLOTS: Slot[] = ['host', 'header', 'path', 'auth']

// Look-alikes of latin letters: Cyrillic, Greek, fullwidth, and the Kelvin sign that String#toLowerCase folds to 'k'.
const LOOKALIKE: Record<string, string> = { a: 'а', e: 'е', o: 'о', p: 'р', c: 'с', x: 'х', i: 'і', s: 'ѕ', k: '\u212a', v: 'ѵ', d: 'ԁ', b: 'Ь', t: 'τ', n: 'ո' }
const LATIN1: Record<string, string> = { a: 'à', e: 'é', i: 'í', o: 'ö', u: 'ü', n: 'ñ', c: 'ç', y: 'ý' }

function swapOne(slug: string, table: Record<string, string>, fallback: string): string {
  for (let i = 0; i < slug.length; i++) if (table[slug[i]]) return slug.slice(0, i) + table[slug[i]] + slug.slice(i + 1)
  return fallback + slug
}
const pct = (s: string) => [...s].map((c) => `%${c.charCodeAt(0).toString(16).padStart(2, '0')}`).join('')

interface Trick {
  slot: Slot
  name: string
  /** A strategy ignores it (it does not name a tenant at all): the request is whoever else it names. */
  ignorable?: boolean
  /**
   * HTTP clients resolve dot segments before sending (WHATWG URL, as fastify.inject does):
   * '/t/victim/../other' arrives as '/t/other' and names that tenant, legitimately.
   */
  resolvesTo?: Tenant
  apply(req: Req): void
}

/** Malformed spellings of `t` in every slot: each must be refused, never read as `t` or anyone else. */
function tricks(a: Arena, t: Tenant, other: Tenant): Trick[] {
  const s = t.slug
  const base = a.baseDomain
  const host = (name: string, value: string): Trick => ({ slot: 'host', name, apply: (q) => { q.host = value } })
  const hdr = (name: string, value: string): Trick => ({ slot: 'header', name, apply: (q) => { q.headers['x-tenant'] = value } })
  const path = (name: string, value: string, more: Partial<Trick> = {}): Trick => ({ slot: 'path', name, ...more, apply: (q) => { q.prefix = value } })
  const tok = a.tokens.get(t.id) ?? a.tokens.get(other.id)!
  const jwt = (name: string, value: string): Trick => ({ slot: 'auth', name, apply: (q) => { q.headers.authorization = value } })
  return [
    host('host: two trailing dots', `${s}.${base}..`),
    host('host: leading dot', `.${s}.${base}`),
    host('host: port out of range', `${s}.${base}:${a.rnd.pick(['0', '65536', '99999', '-1', '80a', ''])}`),
    host('host: percent-encoded', `${pct(s)}.${base}`),
    host('host: punycode label', `xn--${s}.${base}`),
    host('host: unicode look-alike', `${swapOne(s, LOOKALIKE, 'а')}.${base}`),
    host('host: fullwidth letter', `${s.replace(/[a-z]/, (c) => String.fromCharCode(c.charCodeAt(0) + 0xfee0))}.${base}`),
    host('host: underscore', `${s}_x.${base}`),
    host('host: nested subdomain', `${other.slug}.${s}.${base}`),
    host('host: over-long label', `${s}${'x'.repeat(64)}.${base}`),
    host('host: over-long name', `${`${s}.`.repeat(Math.ceil(300 / (s.length + 1)))}${base}`),
    host('host: userinfo', `${s}.${base}@${other.slug}.${base}`),
    host('host: space', `${s} .${base}`),
    hdr('header: uppercase', s.toUpperCase()),
    hdr('header: surrounding space', a.rnd.chance(0.5) ? ` ${s}` : `${s} `),
    hdr('header: trailing dot', `${s}.`),
    hdr('header: percent-encoded', pct(s)),
    hdr('header: punycode', `xn--${s}`),
    hdr('header: unicode look-alike', swapOne(s, LOOKALIKE, 'а')),
    hdr('header: latin-1 look-alike', swapOne(s, LATIN1, 'é')),
    hdr('header: over-long', `${s}-${'x'.repeat(300)}`),
    hdr('header: uppercase uuid', t.id.toUpperCase()),
    hdr('header: braced uuid', `{${t.id}}`),
    hdr('header: two tenants in one value', `${s}, ${other.slug}`),
    hdr('header: empty', ''),
    hdr('header: path in value', `${s}/../${other.slug}`),
    path('path: uppercase', `/t/${s.toUpperCase()}`),
    path('path: percent-encoded', `/t/${pct(s)}`),
    path('path: dot segments', `/t/${s}/../${other.slug}`, { resolvesTo: other }),
    path('path: empty segment', `/t//${s}`),
    path('path: unicode look-alike', `/t/${swapOne(s, LOOKALIKE, 'а')}`),
    path('path: over-long', `/t/${s}${'x'.repeat(64)}`),
    path('path: encoded slash', `/t/${s}%2F..%2F${other.slug}`),
    path('path: other prefix case', `/T/${s}`, { ignorable: true }),
    jwt('jwt: bad signature', `Bearer ${tok.badSignature}`),
    jwt('jwt: expired', `Bearer ${tok.expired}`),
    jwt('jwt: alg none', `Bearer ${tok.unsigned}`),
    jwt('jwt: uppercase claim', `Bearer ${tok.upperClaim}`),
    jwt('jwt: number claim', `Bearer ${tok.numberClaim}`),
    jwt('jwt: not a bearer token', `Basic ${Buffer.from(`${s}:x`).toString('base64')}`),
    jwt('jwt: garbage', `Bearer ${s}.${s}.${s}`),
  ]
}

// ─── judging ─────────────────────────────────────────────────────────────────────────────────────

interface Expect {
  /** Tenants whose rows may appear. */
  allowed: ReadonlySet<string>
  /** true: must be a coded 4xx; false: must be 2xx; 'either'. */
  refuse: boolean | 'either'
  /** For a 2xx: exactly this many rows (the own-read control). */
  rows?: number
}

function slugOf(a: Arena, id: unknown): string {
  return a.all.find((t) => t.id === id)?.slug ?? `tenant_id ${String(id)}`
}

function foreignRows(a: Arena, rows: Row[] | undefined, allowed: ReadonlySet<string>): Row[] {
  return (rows ?? []).filter((r) => !allowed.has(String(r.tenant_id)))
}

function leakOf(a: Arena, kind: AttemptKind, rows: Row[], ctx: Ctx, how: string): VerifyFinding {
  const owners = [...new Set(rows.map((r) => slugOf(a, r.tenant_id)))]
  return {
    type: 'leak',
    kind,
    attacker: ctx.attacker?.slug,
    victim: ctx.victim?.slug,
    relation: ctx.relation?.name,
    detail: `${how} returned ${rows.length} row(s) of ${owners.join(', ')}`,
  }
}

interface Ctx {
  attacker?: Tenant
  victim?: Tenant
  relation?: RelationInfo
}

function judgeHttp(a: Arena, kind: AttemptKind, what: string, res: Reply, exp: Expect, ctx: Ctx): Outcome {
  const failure = (detail: string): Outcome => ({
    failures: [{ type: 'failure', kind, attacker: ctx.attacker?.slug, victim: ctx.victim?.slug, relation: ctx.relation?.name, detail: `${what}: ${detail}` }],
  })
  if (res.transport !== undefined) return exp.refuse === false ? failure(`could not be sent: ${res.transport}`) : { refusedWith: 'transport' }
  const code = res.body?.code
  if (res.status >= 500) return failure(`${res.status} ${code ?? ''} ${res.body?.message ?? ''}`.trim())
  if (res.status >= 400) {
    if (typeof code !== 'string' || code.length === 0) return failure(`${res.status} without a code`)
    if (exp.refuse === false) return failure(`refused with ${res.status} ${code}: ${res.body?.message ?? ''}`)
    return { refusedWith: code }
  }
  const rows = res.body?.rows
  const foreign = foreignRows(a, rows, exp.allowed)
  if (foreign.length > 0) return { leaks: [leakOf(a, kind, foreign, ctx, what)] }
  if (exp.refuse === true) return failure(`accepted with ${res.status} (${rows?.length ?? 0} rows); a coded 4xx was expected`)
  if (exp.rows !== undefined && rows?.length !== exp.rows) return failure(`returned ${rows?.length} rows, expected the tenant's own ${exp.rows}`)
  return {}
}

type SqlResult = { rows: Row[]; rowCount: number } | { error: unknown }

async function attempt(fn: () => Promise<{ rows: Row[]; rowCount: number }>): Promise<SqlResult> {
  try {
    return await fn()
  } catch (error) {
    return { error }
  }
}

function codeOf(err: unknown): string {
  if (isTenantryError(err)) return err.code
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' ? `pg:${code}` : 'error'
}

function judgeSql(a: Arena, kind: AttemptKind, what: string, res: SqlResult, exp: Expect & { codes?: string[] }, ctx: Ctx): Outcome {
  const failure = (detail: string): Outcome => ({
    failures: [{ type: 'failure', kind, attacker: ctx.attacker?.slug, victim: ctx.victim?.slug, relation: ctx.relation?.name, detail: `${what}: ${detail}` }],
  })
  if ('error' in res) {
    const code = codeOf(res.error)
    if (exp.refuse === false) return failure(`failed with ${code}: ${String((res.error as Error)?.message ?? res.error).slice(0, 200)}`)
    if (exp.codes && !exp.codes.includes(code)) return failure(`refused with ${code}, expected ${exp.codes.join(' or ')}`)
    return { refusedWith: code }
  }
  const foreign = foreignRows(a, res.rows, exp.allowed)
  if (foreign.length > 0) return { leaks: [leakOf(a, kind, foreign, ctx, what)] }
  if (exp.refuse === true) return failure(`was accepted (${res.rowCount} rows)`)
  if (exp.rows !== undefined && res.rows.length !== exp.rows) return failure(`returned ${res.rows.length} rows, expected the tenant's own ${exp.rows}`)
  return {}
}

function merge(...outcomes: Outcome[]): Outcome {
  const out: Outcome = {}
  for (const o of outcomes) {
    if (o.leaks?.length) (out.leaks ??= []).push(...o.leaks)
    if (o.failures?.length) (out.failures ??= []).push(...o.failures)
    if (o.refusedWith && !out.refusedWith) out.refusedWith = o.refusedWith
  }
  return out
}

// ─── helpers ─────────────────────────────────────────────────────────────────────────────────────

const only = (...ids: string[]): ReadonlySet<string> => new Set(ids)
const NOBODY: ReadonlySet<string> = new Set()

/**
 * A key column and a value of it in one of `t`'s rows of `rel` (the primary key's first column
 * after tenant_id). With `notOf`, a value that tenant does not also have: in the schema and
 * database tiers every tenant's identity columns start at 1, so "id = 3" is also the attacker's own row.
 */
function keyOf(a: Arena, t: Tenant, rel: RelationInfo, notOf?: Tenant): { col: string; val: string } | null {
  const rows = a.rowsOf.get(t.id)?.get(rel.name) ?? []
  if (rows.length === 0) return null
  const cols = (rel.primaryKey ?? []).filter((c) => c !== 'tenant_id')
  const col = cols[0] ?? rel.columns.find((c) => c.name !== 'tenant_id' && rows.some((r) => r[c.name] !== null && r[c.name] !== undefined))?.name
  if (!col) return null
  const taken = new Set((notOf ? (a.rowsOf.get(notOf.id)?.get(rel.name) ?? []) : []).map((r) => toText(r[col])))
  const vals = rows.map((r) => toText(r[col])).filter((v): v is string => v !== null && !taken.has(v))
  return vals.length ? { col, val: a.rnd.pick(vals) } : null
}

const ownCount = (a: Arena, t: Tenant, rel: RelationInfo): number | undefined => (rel.kind === 'table' ? a.countOf.get(t.id)?.get(rel.name) : undefined)

/** A text column that is safe to overwrite (not a key, not generated). */
function textColumn(rel: RelationInfo): string | null {
  const keys = new Set([...(rel.primaryKey ?? []), ...rel.uniques.flat(), ...rel.foreignKeys.flatMap((f) => f.columns)])
  return rel.columns.find((c) => !c.generated && !keys.has(c.name) && c.name !== 'tenant_id' && ['text', 'varchar'].includes(c.base))?.name ?? null
}

function anotherThan(a: Arena, t: Tenant, pool: Tenant[] = a.all): Tenant {
  const others = pool.filter((o) => o.id !== t.id)
  return a.rnd.pick(others.length ? others : a.all.filter((o) => o.id !== t.id))
}

/** Read `rel` as `t` through its own handle: exactly its own rows. */
async function ownRead(a: Arena, kind: AttemptKind, t: Tenant, rel: RelationInfo, after: string): Promise<Outcome> {
  const res = await attempt(() => a.tenantry.handle(t).query<Row>(`SELECT * FROM ${quoteIdent(rel.name)}`))
  return judgeSql(a, kind, `${t.slug} reading ${rel.name} after ${after}`, res, { allowed: only(t.id), refuse: false, rows: ownCount(a, t, rel) }, { attacker: t, relation: rel })
}

// ─── the attempts ────────────────────────────────────────────────────────────────────────────────

type Attack = (a: Arena) => Promise<Outcome>

const httpOwnRead: Attack = async (a) => {
  const t = a.rnd.pick(a.active)
  const rel = a.rnd.pick(a.relations)
  const req = newReq()
  const [s1, s2] = a.rnd.pair(SLOTS)
  validForm(a, req, s1, t)
  if (a.rnd.chance(0.3)) validForm(a, req, s2, t)
  const res = await send(a, req, 'GET', `/v/${rel.name}`)
  return judgeHttp(a, 'http-own-read', `GET ${rel.name} as ${req.desc.join(' + ')}`, res, { allowed: only(t.id), refuse: false, rows: ownCount(a, t, rel) }, { attacker: t, relation: rel })
}

const httpOwnWrite: Attack = async (a) => {
  const t = a.rnd.pick(a.active)
  if (a.writable.length === 0) return {}
  const rel = a.rnd.pick(a.writable)
  const row = a.makeRow(rel, t, t.id)
  if (!row) return {}
  const req = newReq()
  validForm(a, req, a.rnd.pick(SLOTS), t)
  req.headers[ROLLBACK_HEADER] = '1'
  const res = await send(a, req, 'POST', `/v/${rel.name}`, { row })
  const what = `POST own row to ${rel.name} as ${req.desc.join(' + ')} (rolled back)`
  // A generated row may break a CHECK or unique constraint of the app's: a coded 4xx is fine.
  const out = judgeHttp(a, 'http-own-write', what, res, { allowed: only(t.id), refuse: 'either' }, { attacker: t, relation: rel })
  if (!out.leaks && !out.failures && res.status < 300 && res.body?.rows?.length !== 1) {
    return { failures: [{ type: 'failure', kind: 'http-own-write', attacker: t.slug, relation: rel.name, detail: `${what}: returned ${res.body?.rows?.length} rows, expected the one written` }] }
  }
  return out
}

const httpMismatch: Attack = async (a) => {
  const [t, o] = a.rnd.pair(a.active)
  const [s1, s2] = a.rnd.pair(SLOTS)
  const req = newReq()
  validForm(a, req, s1, t)
  validForm(a, req, s2, o)
  const rel = a.rnd.pick(a.relations)
  const res = await send(a, req, 'GET', `/v/${rel.name}`)
  return judgeHttp(a, 'http-mismatch', `GET ${rel.name} with ${req.desc.join(' + ')}`, res, { allowed: NOBODY, refuse: true }, { attacker: t, victim: o, relation: rel })
}

const httpTrick: Attack = async (a) => {
  const victim = a.rnd.pick(a.all)
  const attacker = anotherThan(a, victim, a.active)
  const trick = a.rnd.pick(tricks(a, victim, attacker))
  const req = newReq()
  const withOwn = a.rnd.chance(0.5)
  if (withOwn) validForm(a, req, a.rnd.pick(SLOTS.filter((s) => s !== trick.slot)), attacker)
  trick.apply(req)
  req.desc.push(trick.name)
  const rel = a.rnd.pick(a.relations)
  const res = await send(a, req, 'GET', `/v/${rel.name}`)
  const exp: Expect =
    trick.resolvesTo ? { allowed: only(trick.resolvesTo.id), refuse: 'either' }
    : trick.ignorable && withOwn ? { allowed: only(attacker.id), refuse: 'either' }
    : { allowed: NOBODY, refuse: true }
  return judgeHttp(a, 'http-identifier-trick', `GET ${rel.name} naming ${victim.slug} by ${req.desc.join(' + ')}`, res, exp, { attacker: withOwn ? attacker : undefined, victim, relation: rel })
}

const httpUnknown: Attack = async (a) => {
  const ghost = { ...a.rnd.pick(a.active), id: a.rnd.uuid(), slug: `vi-ghost-${a.rnd.hex(3)}` } as Tenant
  const req = newReq()
  const slot = a.rnd.pick(SLOTS.filter((s) => s !== 'auth'))
  validForm(a, req, slot, ghost)
  const rel = a.rnd.pick(a.relations)
  const res = await send(a, req, 'GET', `/v/${rel.name}`)
  return judgeHttp(a, 'http-unknown-tenant', `GET ${rel.name} naming unknown ${req.desc.join(' + ')}`, res, { allowed: NOBODY, refuse: true }, { relation: rel })
}

const httpInactive: Attack = async (a) => {
  const victim = a.rnd.pick([...a.suspended, ...a.deleted])
  const req = newReq()
  validForm(a, req, a.rnd.pick(SLOTS.filter((s) => s !== 'auth' || a.tokens.has(victim.id))), victim)
  const rel = a.rnd.pick(a.relations)
  const res = await send(a, req, 'GET', `/v/${rel.name}`)
  return judgeHttp(a, 'http-inactive-tenant', `GET ${rel.name} as ${victim.status} ${req.desc.join(' + ')}`, res, { allowed: NOBODY, refuse: true }, { victim, relation: rel })
}

const httpNoTenant: Attack = async (a) => {
  const rel = a.rnd.pick(a.relations)
  const req = newReq()
  req.host = a.rnd.pick([a.baseDomain, 'localhost', '127.0.0.1:3000', '[::1]:8080', `www.${a.baseDomain}`])
  const res = await send(a, req, a.rnd.pick(['GET', 'DELETE'] as const), `/v/${rel.name}`)
  return judgeHttp(a, 'http-no-tenant', `request to ${rel.name} with host ${req.host} and no tenant`, res, { allowed: NOBODY, refuse: true }, { relation: rel })
}

const httpForgedWrite: Attack = async (a) => {
  if (a.writable.length === 0) return {}
  const attacker = a.rnd.pick(a.active)
  const victim = anotherThan(a, attacker)
  const rel = a.rnd.pick(a.writable)
  const row = a.makeRow(rel, attacker, victim.id)
  if (!row) return {}
  const req = newReq()
  validForm(a, req, a.rnd.pick(SLOTS), attacker)
  const res = await send(a, req, 'POST', `/v/${rel.name}`, { row })
  return judgeHttp(a, 'http-forged-write', `POST to ${rel.name} as ${attacker.slug} with tenant_id of ${victim.slug}`, res, { allowed: only(attacker.id), refuse: true }, { attacker, victim, relation: rel })
}

const httpMoveRow: Attack = async (a) => {
  if (a.writable.length === 0) return {}
  const attacker = a.rnd.pick(a.active)
  const victim = anotherThan(a, attacker)
  const rel = a.rnd.pick(a.writable)
  const key = keyOf(a, attacker, rel)
  const req = newReq()
  validForm(a, req, a.rnd.pick(SLOTS), attacker)
  const res = await send(a, req, 'PATCH', `/v/${rel.name}`, { set: { tenant_id: victim.id }, where: key ? { [key.col]: key.val } : {} })
  // Refused (CROSS_TENANT_WRITE), or no row matched: never a row that now belongs to the victim.
  return judgeHttp(a, 'http-move-row', `PATCH ${rel.name} SET tenant_id = ${victim.slug} as ${attacker.slug}`, res, { allowed: only(attacker.id), refuse: 'either' }, { attacker, victim, relation: rel })
}

const httpCrossRead: Attack = async (a) => {
  const attacker = a.rnd.pick(a.active)
  const victim = anotherThan(a, attacker)
  const rel = a.rnd.pick(a.relations)
  const key = a.rnd.chance(0.5) ? keyOf(a, victim, rel, attacker) : null
  const req = newReq()
  validForm(a, req, a.rnd.pick(SLOTS), attacker)
  const q = key ? `col=${encodeURIComponent(key.col)}&val=${encodeURIComponent(key.val)}` : `col=tenant_id&val=${victim.id}`
  const res = await send(a, req, 'GET', `/v/${rel.name}?${q}`)
  return judgeHttp(a, 'http-cross-read', `GET ${rel.name}?${q} as ${attacker.slug}`, res, { allowed: only(attacker.id), refuse: false }, { attacker, victim, relation: rel })
}

const httpCrossUpdate: Attack = async (a) => {
  if (a.writable.length === 0) return {}
  const attacker = a.rnd.pick(a.active)
  const victim = anotherThan(a, attacker)
  const rel = a.rnd.pick(a.writable)
  const col = textColumn(rel)
  const key = keyOf(a, victim, rel, attacker)
  if (!col) return {}
  const req = newReq()
  validForm(a, req, a.rnd.pick(SLOTS), attacker)
  const where = key && a.rnd.chance(0.7) ? { [key.col]: key.val } : { tenant_id: victim.id }
  const res = await send(a, req, 'PATCH', `/v/${rel.name}`, { set: { [col]: `pwned by ${attacker.slug}` }, where })
  return judgeHttp(a, 'http-cross-update', `PATCH ${rel.name} WHERE ${JSON.stringify(where)} as ${attacker.slug}`, res, { allowed: only(attacker.id), refuse: 'either' }, { attacker, victim, relation: rel })
}

const httpCrossDelete: Attack = async (a) => {
  if (a.writable.length === 0) return {}
  const attacker = a.rnd.pick(a.active)
  const victim = anotherThan(a, attacker)
  const rel = a.rnd.pick(a.writable)
  const key = a.rnd.chance(0.7) ? keyOf(a, victim, rel, attacker) : null
  const req = newReq()
  validForm(a, req, a.rnd.pick(SLOTS), attacker)
  const q = key ? `col=${encodeURIComponent(key.col)}&val=${encodeURIComponent(key.val)}` : `col=tenant_id&val=${victim.id}`
  const res = await send(a, req, 'DELETE', `/v/${rel.name}?${q}`)
  return judgeHttp(a, 'http-cross-delete', `DELETE ${rel.name}?${q} as ${attacker.slug}`, res, { allowed: only(attacker.id), refuse: 'either' }, { attacker, victim, relation: rel })
}

/** Statements that would change the session a tenant statement runs in; `$1` is bound to a forged tenant setting. */
export function sessionStatements(victimId: string, appRole: string): string[] {
  const forged = `${victimId}.${'0'.repeat(64)}`
  return [
    'RESET ALL',
    'RESET ROLE',
    'SET ROLE postgres',
    `SET ROLE ${appRole}`,
    'SET search_path TO public',
    'SET LOCAL search_path TO public',
    `SET tenantry.tenant_id = '${forged}'`,
    'SET SESSION AUTHORIZATION postgres',
    'SET row_security = off',
    'DISCARD ALL',
    'BEGIN',
    'COMMIT',
    'START TRANSACTION',
    'set role postgres',
    '  /* hello */ SET ROLE postgres',
    '-- a comment\nRESET ALL',
    "SELECT set_config('tenantry.tenant_id', $1, false)",
    "SELECT set_config('tenantry.tenant_id', $1, true)",
    `SELECT "set_config"('tenantry.tenant_id', $1, true)`,
    `SELECT pg_catalog . "set_config"('role', 'postgres', true)`,
    `SELECT U&"set\\005fconfig"('search_path', 'public', false)`,
    "SELECT set_config/**/('tenantry.tenant_id', $1, false)",
    "select SET_CONFIG ('search_path', 'public', true)",
    "(SELECT set_config('role', 'postgres', true))",
    "SELECT 1 FROM (SELECT set_config('tenantry.tenant_id', $1, true)) s",
    "UPDATE pg_settings SET setting = 'public' WHERE name = 'search_path'",
    "SELECT 1; SET ROLE postgres",
    `DO $$ BEGIN PERFORM set_config('tenantry.tenant_id', '${forged}', false); END $$`,
    'PREPARE vi_p AS SELECT 1',
    'LISTEN vi_channel',
    'LOAD \'auto_explain\'',
  ]
}

const sqlSessionChange: Attack = async (a) => {
  const attacker = a.rnd.pick(a.active)
  const victim = anotherThan(a, attacker)
  const rel = a.rnd.pick(a.relations)
  const stmt = a.rnd.pick(sessionStatements(victim.id, `${a.tenantry.dataPlane.opts.naming.appRole}`))
  const values = stmt.includes('$1') ? [a.rnd.chance(0.5) ? victim.id : `${victim.id}.${a.rnd.hex(32)}`] : []
  const h = a.tenantry.handle(attacker)
  const inTx = a.rnd.chance(0.5)
  const what = `${attacker.slug} ${inTx ? 'in a transaction ' : ''}sending ${JSON.stringify(stmt)}`
  let res: SqlResult
  if (inTx) {
    // If the statement got through, the read after it in the same transaction must still be the attacker's.
    res = await attempt(() => h.transaction(async (tx) => {
      await tx.query(stmt, values)
      return tx.query<Row>(`SELECT * FROM ${quoteIdent(rel.name)}`)
    }))
  } else {
    res = await attempt(() => h.query<Row>(stmt, values))
    if (!('error' in res)) res = { rows: [], rowCount: res.rowCount }
  }
  const first = judgeSql(a, 'sql-session-change', what, res, { allowed: only(attacker.id), refuse: true }, { attacker, victim, relation: rel })
  // Nothing may survive into the next statements on these connections, of the attacker or another tenant.
  const [mine, theirs] = await Promise.all([ownRead(a, 'sql-session-change', attacker, rel, what), ownRead(a, 'sql-session-change', anotherThan(a, attacker, a.active), rel, what)])
  return merge(first, mine, theirs)
}

const sqlCrossRead: Attack = async (a) => {
  const attacker = a.rnd.pick(a.active)
  const victim = anotherThan(a, attacker)
  const rel = a.rnd.pick(a.relations)
  const t = quoteIdent(rel.name)
  const key = keyOf(a, victim, rel, attacker)
  const variants: [string, unknown[]][] = [
    [`SELECT * FROM ${t} WHERE tenant_id = $1`, [victim.id]],
    [`SELECT * FROM ${t} WHERE tenant_id <> $1`, [attacker.id]],
    [`SELECT * FROM ${t} WHERE tenant_id IS DISTINCT FROM $1::uuid OR true`, [attacker.id]],
    [`SELECT * FROM ${t} UNION ALL SELECT * FROM ${t} WHERE tenant_id = $1`, [victim.id]],
    [`WITH x AS MATERIALIZED (SELECT * FROM ${t}) SELECT * FROM x WHERE tenant_id = $1`, [victim.id]],
    [`SELECT * FROM public.${t}`, []],
  ]
  if (key) variants.push([`SELECT * FROM ${t} WHERE ${quoteIdent(key.col)}::text = $1`, [key.val]])
  if (victim.placement.schema) variants.push([`SELECT * FROM ${quoteIdent(victim.placement.schema)}.${t}`, []])
  const [sql, values] = a.rnd.pick(variants)
  const h = a.tenantry.handle(attacker)
  const via = a.rnd.int(0, 9)
  const res =
    via < 3 ? await attempt(() => h.transaction((tx: Queryable) => tx.query<Row>(sql, values)))
    : via === 3 ? await attempt(async () => {
        const rows = await h.kysely<Record<string, Record<string, unknown>>>().selectFrom(rel.name).selectAll().where('tenant_id', '=', victim.id).execute()
        return { rows, rowCount: rows.length }
      })
    : await attempt(() => h.query<Row>(sql, values))
  // An error (no such schema, no privilege) is a refusal; rows must be the attacker's own.
  const how = via === 3 ? `Kysely selectFrom('${rel.name}').where('tenant_id', '=', <${victim.slug}>)` : `${via < 3 ? 'in a transaction: ' : ''}${sql}`
  return judgeSql(a, 'sql-cross-read', `${attacker.slug}: ${how}`, res, { allowed: only(attacker.id), refuse: 'either' }, { attacker, victim, relation: rel })
}

const ROLLBACK = Symbol('verify.rollback')

const sqlForgedWrite: Attack = async (a) => {
  if (a.writable.length === 0) return {}
  const attacker = a.rnd.pick(a.active)
  const victim = anotherThan(a, attacker)
  const rel = a.rnd.pick(a.writable)
  const t = quoteIdent(rel.name)
  const row = a.makeRow(rel, attacker, victim.id)
  const variants: [string, string, unknown[]][] = [[`UPDATE ${t} SET tenant_id = $1 RETURNING *`, 'move every row', [victim.id]]]
  if (row) {
    const cols = Object.keys(row)
    const colInfo = cols.map((c) => rel.columns.find((x) => x.name === c)!)
    const insert = `INSERT INTO ${t} (${cols.map(quoteIdent).join(', ')}) VALUES (${colInfo.map((c, i) => `$${i + 1}::${c.type}`).join(', ')})`
    variants.push([`${insert} RETURNING *`, 'insert with a forged tenant_id', cols.map((c) => row[c])])
    const key = keyOf(a, victim, rel, attacker)
    const pk = rel.primaryKey
    const col = textColumn(rel)
    if (key && pk && col && cols.includes(key.col)) {
      const values = cols.map((c) => (c === key.col ? key.val : row[c]))
      variants.push([`${insert} ON CONFLICT (${pk.map(quoteIdent).join(', ')}) DO UPDATE SET ${quoteIdent(col)} = 'pwned' RETURNING *`, "upsert onto the victim's key", values])
    }
  }
  const [sql, how, values] = a.rnd.pick(variants)
  // Inside a transaction that is always rolled back: a write that got through shows in its RETURNING rows.
  let returned: SqlResult = { rows: [], rowCount: 0 }
  const res = await attempt(() =>
    a.tenantry.handle(attacker).transaction(async (tx) => {
      const r = await tx.query<Row>(sql, values)
      returned = r
      throw ROLLBACK
    }),
  )
  const outcome: SqlResult = 'error' in res && res.error === ROLLBACK ? returned : res
  return judgeSql(a, 'sql-forged-write', `${attacker.slug} ${how} of ${victim.slug} in ${rel.name}`, outcome, { allowed: only(attacker.id), refuse: 'either' }, { attacker, victim, relation: rel })
}

const sqlNoContext: Attack = async (a) => {
  const rel = a.rnd.pick(a.relations)
  const t = a.rnd.pick(a.active)
  const sql = `SELECT * FROM ${quoteIdent(rel.name)}`
  const db = a.tenantry.db
  const variant = a.rnd.int(0, 4)
  let res: SqlResult
  let how: string
  switch (variant) {
    case 0: how = 'tenantry.db.query() outside any context'; res = await attempt(() => db.query<Row>(sql)); break
    case 1: how = 'tenantry.db.transaction() outside any context'; res = await attempt(() => db.transaction((tx) => tx.query<Row>(sql))); break
    case 2: {
      how = 'a closure made inside withTenant() run after it ended'
      let later!: () => Promise<{ rows: Row[]; rowCount: number }>
      await a.tenantry.withTenant(t, async () => { later = () => db.query<Row>(sql) })
      res = await attempt(() => later())
      break
    }
    case 3: how = 'Kysely on tenantry.db outside any context'; res = await attempt(async () => {
      const rows = await db.kysely<Record<string, Record<string, unknown>>>().selectFrom(rel.name).selectAll().execute()
      return { rows, rowCount: rows.length }
    }); break
    default: how = 'a timer started outside any context'; res = await attempt(() => new Promise((resolve, reject) => setImmediate(() => db.query<Row>(sql).then(resolve, reject))))
  }
  return judgeSql(a, 'sql-no-context', `${how}: ${sql}`, res, { allowed: NOBODY, refuse: true, codes: ['TENANT_CONTEXT_MISSING'] }, { relation: rel })
}

const sqlErrorThenRead: Attack = async (a) => {
  const attacker = a.rnd.pick(a.active)
  const next = anotherThan(a, attacker, a.active)
  const rel = a.rnd.pick(a.relations)
  const h = a.tenantry.handle(attacker)
  const t = quoteIdent(rel.name)
  const col = rel.kind === 'table' ? textColumn(rel) : null
  const failures: [string, () => Promise<unknown>][] = [
    ['division by zero', () => h.query('SELECT 1 / 0')],
    ['bad parameter', () => h.query(`SELECT * FROM ${t} WHERE tenant_id = $1`, ['not-a-uuid'])],
    ['unknown table', () => h.query('SELECT * FROM vi_no_such_table')],
    ['multi-statement', () => h.query(`SELECT * FROM ${t}; SELECT 1`)],
    ['error mid-transaction', () => h.transaction(async (tx) => {
      if (col) await tx.query(`UPDATE ${t} SET ${quoteIdent(col)} = ${quoteIdent(col)}`)
      await tx.query('SELECT 1 / 0')
    })],
    ['app error mid-transaction', () => h.transaction(async (tx) => {
      await tx.query(`SELECT * FROM ${t}`)
      throw new Error('app error')
    })],
  ]
  const [name, fail] = a.rnd.pick(failures)
  await fail().catch(() => undefined)
  const [mine, theirs] = await Promise.all([ownRead(a, 'sql-error-then-read', attacker, rel, `${attacker.slug}: ${name}`), ownRead(a, 'sql-error-then-read', next, rel, `${attacker.slug}: ${name}`)])
  return merge(mine, theirs)
}

const sqlConcurrent: Attack = async (a) => {
  const rel = a.rnd.pick(a.relations)
  const picks = Array.from({ length: 8 }, () => a.rnd.pick(a.active))
  return merge(...(await Promise.all(picks.map((t) => ownRead(a, 'sql-concurrent', t, rel, 'a burst of 8 tenants at once')))))
}

/** Every kind of attempt with its weight in the random mix. */
export const ATTACKS: Record<AttemptKind, { weight: number; run: Attack }> = {
  'http-own-read': { weight: 10, run: httpOwnRead },
  'http-own-write': { weight: 4, run: httpOwnWrite },
  'http-mismatch': { weight: 8, run: httpMismatch },
  'http-identifier-trick': { weight: 14, run: httpTrick },
  'http-unknown-tenant': { weight: 3, run: httpUnknown },
  'http-inactive-tenant': { weight: 3, run: httpInactive },
  'http-no-tenant': { weight: 2, run: httpNoTenant },
  'http-forged-write': { weight: 8, run: httpForgedWrite },
  'http-move-row': { weight: 5, run: httpMoveRow },
  'http-cross-read': { weight: 8, run: httpCrossRead },
  'http-cross-update': { weight: 5, run: httpCrossUpdate },
  'http-cross-delete': { weight: 4, run: httpCrossDelete },
  'sql-session-change': { weight: 8, run: sqlSessionChange },
  'sql-cross-read': { weight: 8, run: sqlCrossRead },
  'sql-forged-write': { weight: 6, run: sqlForgedWrite },
  'sql-no-context': { weight: 3, run: sqlNoContext },
  'sql-error-then-read': { weight: 5, run: sqlErrorThenRead },
  'sql-concurrent': { weight: 2, run: sqlConcurrent },
}
