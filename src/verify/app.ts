import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify'
import { tenantryPlugin } from '../adapters/fastify.ts'
import { TenantryError, quoteIdent } from '../core/index.ts'
import type { Queryable, Tenantry } from '../index.ts'
import type { ColumnInfo, RelationInfo } from './discover.ts'

/** Header that makes a write roll back after its RETURNING rows are read (the suite's own control writes). */
export const ROLLBACK_HEADER = 'x-verify-rollback'

const ROLLBACK = Symbol('verify.rollback')

type Values = Record<string, string | null>

/**
 * A generic app over the tenant relations, the kind of thin CRUD layer an attacker meets: every
 * route runs plain SQL on unqualified names through `request.db`, so the only thing between one
 * tenant and another is Tenantry. Routes (also under `/t/:slug`, for the path-prefix strategy):
 *
 * - `GET /v/:table?col=&val=` — rows, optionally where `col::text = val`
 * - `POST /v/:table` `{ row }` — insert, RETURNING *
 * - `PATCH /v/:table` `{ set, where }` — update, RETURNING *
 * - `DELETE /v/:table?col=&val=` — delete, RETURNING *
 *
 * Replies are `{ rows, rowCount }`; errors are Tenantry's coded JSON.
 *
 * @example
 * ```ts
 * const app = await buildVerifyApp(tenantry, relations)
 * const res = await app.inject({ url: '/v/projects', headers: { host: 'acme.verify.test' } })
 * ```
 */
export async function buildVerifyApp(tenantry: Tenantry, relations: RelationInfo[]): Promise<FastifyInstance> {
  const app = Fastify({ logger: false, ajv: { customOptions: { coerceTypes: false } } })
  await app.register(tenantryPlugin, { tenantry })
  const byName = new Map(relations.map((r) => [r.name, r]))

  app.setNotFoundHandler(function verifyNotFound(req, reply) {
    const e = new TenantryError('NOT_FOUND', `No route ${req.method} ${req.url.split('?')[0]}.`)
    reply.code(404).send(e.toJSON())
  })

  const relation = (req: FastifyRequest, write: boolean): RelationInfo => {
    const name = (req.params as { table: string }).table
    const rel = byName.get(name)
    if (!rel || (write && rel.kind !== 'table')) throw new TenantryError('NOT_FOUND', `No ${write ? 'table' : 'relation'} '${name.slice(0, 60)}'.`)
    return rel
  }
  const column = (rel: RelationInfo, name: unknown): ColumnInfo => {
    const col = rel.columns.find((c) => c.name === name)
    if (!col) throw new TenantryError('VALIDATION_FAILED', `Relation '${rel.name}' has no column '${String(name).slice(0, 60)}'.`)
    return col
  }
  const values = (v: unknown, what: string): Values => {
    if (!v || typeof v !== 'object' || Array.isArray(v)) throw new TenantryError('VALIDATION_FAILED', `${what} must be an object of column values.`)
    for (const x of Object.values(v)) {
      if (x !== null && typeof x !== 'string') throw new TenantryError('VALIDATION_FAILED', `${what} values must be strings or null.`)
    }
    return v as Values
  }
  /** Run a write; with the rollback header, inside a transaction that is rolled back after the rows are read. */
  const write = async (req: FastifyRequest, text: string, params: unknown[]) => {
    if (req.headers[ROLLBACK_HEADER] !== '1') return req.db.query(text, params)
    let result: Awaited<ReturnType<Queryable['query']>> | undefined
    await req.db
      .transaction(async (tx) => {
        result = await tx.query(text, params)
        throw ROLLBACK
      })
      .catch((err: unknown) => { if (err !== ROLLBACK) throw err })
    return result!
  }
  const where = (rel: RelationInfo, q: { col?: unknown; val?: unknown }, params: unknown[]): string => {
    if (q.col === undefined) return ''
    const col = column(rel, q.col)
    params.push(typeof q.val === 'string' ? q.val : null)
    return ` WHERE ${quoteIdent(col.name)}::text = $${params.length}`
  }

  const routes = (prefix: string) => {
    app.get(`${prefix}/v/:table`, async (req) => {
      const rel = relation(req, false)
      const params: unknown[] = []
      const sql = `SELECT * FROM ${quoteIdent(rel.name)}${where(rel, req.query as object, params)} LIMIT 1000`
      const r = await req.db.query(sql, params)
      return { rows: r.rows, rowCount: r.rowCount }
    })
    app.post(`${prefix}/v/:table`, async (req, reply) => {
      const rel = relation(req, true)
      const row = values((req.body as { row?: unknown } | undefined)?.row, 'row')
      const cols = Object.keys(row).map((k) => column(rel, k))
      const params = cols.map((c) => row[c.name])
      const sql = cols.length
        ? `INSERT INTO ${quoteIdent(rel.name)} (${cols.map((c) => quoteIdent(c.name)).join(', ')}) VALUES (${cols.map((c, i) => `$${i + 1}::${c.type}`).join(', ')}) RETURNING *`
        : `INSERT INTO ${quoteIdent(rel.name)} DEFAULT VALUES RETURNING *`
      const r = await write(req, sql, params)
      return reply.code(201).send({ rows: r.rows, rowCount: r.rowCount })
    })
    app.patch(`${prefix}/v/:table`, async (req) => {
      const rel = relation(req, true)
      const body = req.body as { set?: unknown; where?: unknown } | undefined
      const set = values(body?.set, 'set')
      const cond = values(body?.where ?? {}, 'where')
      const params: unknown[] = []
      const sets = Object.keys(set).map((k) => {
        const c = column(rel, k)
        params.push(set[k])
        return `${quoteIdent(c.name)} = $${params.length}::${c.type}`
      })
      if (sets.length === 0) throw new TenantryError('VALIDATION_FAILED', 'set must name at least one column.')
      const conds = Object.keys(cond).map((k) => {
        const c = column(rel, k)
        params.push(cond[k])
        return `${quoteIdent(c.name)}::text = $${params.length}`
      })
      const sql = `UPDATE ${quoteIdent(rel.name)} SET ${sets.join(', ')}${conds.length ? ` WHERE ${conds.join(' AND ')}` : ''} RETURNING *`
      const r = await write(req, sql, params)
      return { rows: r.rows, rowCount: r.rowCount }
    })
    app.delete(`${prefix}/v/:table`, async (req) => {
      const rel = relation(req, true)
      const params: unknown[] = []
      const q = req.query as { col?: unknown; val?: unknown }
      if (q.col === undefined) throw new TenantryError('VALIDATION_FAILED', 'DELETE needs ?col=&val=.')
      const r = await write(req, `DELETE FROM ${quoteIdent(rel.name)}${where(rel, q, params)} RETURNING *`, params)
      return { rows: r.rows, rowCount: r.rowCount }
    })
  }
  routes('')
  routes('/t/:slug')
  return app
}
