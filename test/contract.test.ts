/**
 * The tier contract: one suite that every tier (pooled, schema, database) passes, on real
 * PostgreSQL and on PGlite. A new tier is proved by passing it. Every assertion is exact.
 *
 * The PostgreSQL half uses its own database (`tenantry_test_contract`) and its own role prefix
 * (`tc_contract`): roles and databases are cluster-wide, so afterAll drops both.
 */
import { fileURLToPath } from 'node:url'
import { CompiledQuery, type Generated, type Kysely } from 'kysely'
import pg from 'pg'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { TenantryError } from '../src/core/errors.ts'
import { TIERS, type Tenant, type Tier } from '../src/core/types.ts'
import { naming } from '../src/data/naming.ts'
import type { Queryable } from '../src/data/executor.ts'
import { createTenantry, type Tenantry } from '../src/runtime.ts'
import { dropDatabase, freshDatabase, PG_ADMIN_URL, postgresAvailable, outcome, dropPostgresLeftovers as dropLeftovers } from './helpers/backends.ts'

const PREFIX = 'tc_contract'
const DB_NAME = 'tenantry_test_contract'
const MIGRATIONS = fileURLToPath(new URL('../demo/migrations', import.meta.url))
const NAMES = naming(PREFIX)

type Backend = 'postgres' | 'pglite'

interface DB {
  projects: { tenant_id: Generated<string>; id: Generated<string>; name: string; created_at: Generated<Date> }
  tasks: {
    tenant_id: Generated<string>
    id: Generated<string>
    project_id: string
    title: string
    done: Generated<boolean>
    created_at: Generated<Date>
  }
}

const dropPostgresLeftovers = () => dropLeftovers(PREFIX, DB_NAME)

/** Statements that would change the session or the transaction; `$1` is bound to another tenant's id. */
const FORBIDDEN = [
  'SET ROLE postgres',
  'RESET ROLE',
  'RESET ALL',
  'SET search_path TO public',
  "SELECT set_config('tenantry.tenant_id', $1, false)",
  'BEGIN',
  'DISCARD ALL',
  // The same, spelled as an attacker would.
  'set role postgres',
  '  /* hello */ SET ROLE postgres',
  '-- a comment\nRESET ALL',
  "(SELECT set_config('tenantry.tenant_id', $1, true))",
  "SELECT pg_catalog.set_config('role', 'postgres', true)",
  "select SET_CONFIG ('search_path', 'public', true)",
  "SELECT 1 FROM projects WHERE set_config('tenantry.tenant_id', $1, true) IS NOT NULL",
  'SET LOCAL ROLE postgres',
  'SET SESSION AUTHORIZATION postgres',
  'START TRANSACTION',
  'COMMIT',
  'ROLLBACK',
  'SAVEPOINT s1',
  'DISCARD PLANS',
]

/** Multi-statement strings: PostgreSQL refuses them on the extended protocol both drivers use. */
const MULTI = [
  'SELECT 1; SELECT 2',
  "INSERT INTO projects (name) VALUES ('smuggled'); SELECT 1",
  'DELETE FROM projects; SELECT 1',
  'SELECT 1; SET ROLE postgres',
  "SELECT 1; UPDATE projects SET name = 'smuggled'",
]

/** What each backend returned, with tenant ids and timestamps made comparable; compared at the end. */
const transcripts: Record<Backend, [string, unknown][]> = { postgres: [], pglite: [] }

function contractSuite(backend: Backend): void {
  let tenantry: Tenantry
  /** A pooled tenant next to every subject: its rows must never change or leak. */
  let neighbour: Tenant
  const subjects = {} as Record<Tier, Tenant>
  const NEIGHBOUR_ROWS = ['n-first', 'n-second']

  function normalise(value: unknown): unknown {
    if (value instanceof Date) return '<date>'
    if (Array.isArray(value)) return value.map(normalise)
    if (value && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, normalise(v)]))
    if (typeof value === 'string') {
      const t = [neighbour, ...Object.values(subjects)].find((x) => x.id === value)
      return t ? `<tenant:${t.slug}>` : value
    }
    return value
  }

  const record = (tier: Tier, key: string, value: unknown) => transcripts[backend].push([`${tier}: ${key}`, normalise(value)])

  /** The names of a tenant's projects, each checked to carry the tenant's id. */
  async function projectsOf(tenant: Tenant): Promise<{ tenant_id: string; name: string }[]> {
    const { rows } = await tenantry.handle(tenant).query<{ tenant_id: string; name: string }>('SELECT tenant_id, name FROM projects ORDER BY name')
    return rows
  }
  const own = (tenant: Tenant, names: string[]) => [...names].sort().map((name) => ({ tenant_id: tenant.id, name }))

  beforeAll(async () => {
    let databaseUrl: string | undefined
    if (backend === 'postgres') {
      await dropPostgresLeftovers()
      databaseUrl = await freshDatabase(DB_NAME)
    }
    tenantry = await createTenantry({ databaseUrl, dataDir: 'memory', migrations: MIGRATIONS, rolePrefix: PREFIX })
    expect((await tenantry.migrate()).targets.map((r) => [r.target, r.status])).toEqual([['main/public', 'done']])
    neighbour = await tenantry.provision({ slug: 'neighbour', tier: 'pooled' })
    const nh = tenantry.handle(neighbour)
    const { rows } = await nh.query<{ id: string }>('INSERT INTO projects (name) VALUES ($1), ($2) RETURNING id', NEIGHBOUR_ROWS)
    await nh.query('INSERT INTO tasks (project_id, title) VALUES ($1, $2)', [rows[0].id, 'n-task'])
    for (const tier of TIERS) subjects[tier] = await tenantry.provision({ slug: `subject-${tier}`, tier })
    expect(TIERS.map((tier) => subjects[tier].tier)).toEqual(['pooled', 'schema', 'database'])
  })

  afterAll(async () => {
    await tenantry?.close()
    if (backend === 'postgres') await dropPostgresLeftovers()
  })

  describe.each(TIERS)('%s tier', (tier) => {
    let t: Tenant
    const h = () => tenantry.handle(t)

    /** The tenant, and its pooled neighbour, see exactly their own rows and the tenant's session is its own. */
    async function expectIsolated(names: string[]): Promise<void> {
      expect(await projectsOf(t)).toEqual(own(t, names))
      expect(await projectsOf(neighbour)).toEqual(own(neighbour, NEIGHBOUR_ROWS))
      const { rows } = await h().query("SELECT tenantry.tenant_id()::text AS tenant, current_user::text AS role, current_setting('search_path') AS search_path")
      expect(rows).toEqual([
        {
          tenant: t.id,
          role: tier === 'pooled' ? NAMES.appRole : NAMES.tenantRole(t.id),
          search_path: tier === 'schema' ? `"${NAMES.tenantSchema(t.id)}"` : '"public"',
        },
      ])
    }

    beforeEach(async () => {
      t = subjects[tier]
      await h().query('DELETE FROM projects') // cascades to tasks; RLS keeps it to this tenant
    })

    it('query: insert, select, update and delete', async () => {
      const ins = await h().query<{ tenant_id: string; id: string; name: string }>(
        'INSERT INTO projects (name) VALUES ($1), ($2) RETURNING tenant_id, id, name',
        ['apple', 'banana'],
      )
      expect(ins.rowCount).toBe(2)
      const [apple, banana] = ins.rows
      expect(ins.rows).toEqual([
        { tenant_id: t.id, id: apple.id, name: 'apple' },
        { tenant_id: t.id, id: banana.id, name: 'banana' },
      ])
      expect(await h().query('SELECT id, name FROM projects WHERE id = $1', [banana.id])).toEqual({ rows: [{ id: banana.id, name: 'banana' }], rowCount: 1 })

      const upd = await h().query<{ name: string }>('UPDATE projects SET name = $1 WHERE id = $2 RETURNING name', ['avocado', apple.id])
      expect(upd).toEqual({ rows: [{ name: 'avocado' }], rowCount: 1 })
      expect(await h().query('UPDATE projects SET name = $1 WHERE id = $2', ['x', '999999'])).toEqual({ rows: [], rowCount: 0 })
      expect(await projectsOf(t)).toEqual(own(t, ['avocado', 'banana']))

      expect(await h().query('DELETE FROM projects WHERE id = $1', [banana.id])).toEqual({ rows: [], rowCount: 1 })
      expect(await h().query('SELECT id, name FROM projects ORDER BY id')).toEqual({ rows: [{ id: apple.id, name: 'avocado' }], rowCount: 1 })
      record(tier, 'crud', { ins: ins.rows, upd: upd.rows })
      await expectIsolated(['avocado'])
    })

    it('query: the ambient handle inside withTenant serves the same tenant', async () => {
      await h().query("INSERT INTO projects (name) VALUES ('via-handle')")
      const ambient = await tenantry.withTenant(t.slug, async () => {
        await tenantry.db.query("INSERT INTO projects (name) VALUES ('via-context')")
        return (await tenantry.db.query('SELECT tenant_id, name FROM projects ORDER BY name')).rows
      })
      expect(ambient).toEqual(own(t, ['via-context', 'via-handle']))
      expect(await tenantry.withTenant(t.id, async () => tenantry.db.tenant.id)).toBe(t.id)
      await expectIsolated(['via-context', 'via-handle'])
    })

    it('transaction: commits every statement', async () => {
      const result = await h().transaction(async (tx) => {
        const p = await tx.query<{ id: string }>("INSERT INTO projects (name) VALUES ('tx-project') RETURNING id")
        await tx.query('INSERT INTO tasks (project_id, title) VALUES ($1, $2), ($1, $3)', [p.rows[0].id, 'first', 'second'])
        // The transaction sees its own uncommitted rows.
        const inside = await tx.query('SELECT title FROM tasks ORDER BY title')
        return { projectId: p.rows[0].id, inside: inside.rows }
      })
      expect(result.inside).toEqual([{ title: 'first' }, { title: 'second' }])
      const { rows } = await h().query('SELECT tenant_id, project_id, title, done FROM tasks ORDER BY title')
      expect(rows).toEqual([
        { tenant_id: t.id, project_id: result.projectId, title: 'first', done: false },
        { tenant_id: t.id, project_id: result.projectId, title: 'second', done: false },
      ])
      record(tier, 'transaction', rows)
      await expectIsolated(['tx-project'])
    })

    it('transaction: a throw rolls everything back and rethrows the same error', async () => {
      await h().query("INSERT INTO projects (name) VALUES ('before')")
      const boom = new Error('boom')
      let seenInside: unknown
      const err = await h()
        .transaction(async (tx) => {
          await tx.query("INSERT INTO projects (name) VALUES ('doomed')")
          await tx.query("UPDATE projects SET name = 'changed' WHERE name = 'before'")
          seenInside = (await tx.query('SELECT name FROM projects ORDER BY name')).rows
          throw boom
        })
        .catch((e: unknown) => e)
      expect(err).toBe(boom)
      expect(seenInside).toEqual([{ name: 'changed' }, { name: 'doomed' }])
      await expectIsolated(['before'])
    })

    it('transaction: a failing statement rolls back the earlier ones', async () => {
      await h().query("INSERT INTO projects (name) VALUES ('before')")
      const code = await outcome(
        h().transaction(async (tx) => {
          await tx.query("INSERT INTO projects (name) VALUES ('doomed')")
          await tx.query("INSERT INTO projects (name) VALUES ('')") // CHECK violation
        }),
      )
      expect(code).toBe('VALIDATION_FAILED')
      const div = await outcome(
        h().transaction(async (tx) => {
          await tx.query("DELETE FROM projects WHERE name = 'before'")
          await tx.query('SELECT 1 / 0')
        }),
      )
      expect(div).toBe('pg:22012')
      record(tier, 'transaction failures', [code, div])
      await expectIsolated(['before'])
    })

    it('kysely: select, insert, update and delete', async () => {
      const db: Kysely<DB> = h().kysely<DB>()
      const inserted = await db.insertInto('projects').values([{ name: 'k-one' }, { name: 'k-two' }]).returning(['tenant_id', 'id', 'name']).execute()
      expect(inserted).toEqual([
        { tenant_id: t.id, id: inserted[0].id, name: 'k-one' },
        { tenant_id: t.id, id: inserted[1].id, name: 'k-two' },
      ])
      expect(typeof inserted[0].id).toBe('string')
      expect(await db.selectFrom('projects').select(['id', 'name']).where('name', '=', 'k-two').execute()).toEqual([{ id: inserted[1].id, name: 'k-two' }])

      const upd = await db.updateTable('projects').set({ name: 'k-uno' }).where('id', '=', inserted[0].id).executeTakeFirst()
      expect(upd.numUpdatedRows).toBe(1n)
      const del = await db.deleteFrom('projects').where('name', '=', 'k-two').executeTakeFirst()
      expect(del.numDeletedRows).toBe(1n)
      const none = await db.deleteFrom('projects').where('name', '=', 'nothing').executeTakeFirst()
      expect(none.numDeletedRows).toBe(0n)

      const all = await db.selectFrom('projects').select(['tenant_id', 'name']).orderBy('name').execute()
      expect(all).toEqual(own(t, ['k-uno']))
      record(tier, 'kysely', { inserted, all })
      await expectIsolated(['k-uno'])
    })

    it('kysely: transaction().execute commits, and rolls back on a throw', async () => {
      const db = h().kysely<DB>()
      const committed = await db.transaction().execute(async (trx) => {
        const p = await trx.insertInto('projects').values({ name: 'kt-project' }).returning('id').executeTakeFirstOrThrow()
        await trx.insertInto('tasks').values({ project_id: p.id, title: 'kt-task' }).execute()
        return p.id
      })
      expect(await db.selectFrom('tasks').select(['tenant_id', 'project_id', 'title']).execute()).toEqual([
        { tenant_id: t.id, project_id: committed, title: 'kt-task' },
      ])

      const boom = new Error('kysely boom')
      const err = await db
        .transaction()
        .execute(async (trx) => {
          await trx.insertInto('projects').values({ name: 'kt-doomed' }).execute()
          await trx.deleteFrom('tasks').execute()
          throw boom
        })
        .catch((e: unknown) => e)
      expect(err).toBe(boom)

      const failed = await db
        .transaction()
        .execute(async (trx) => {
          await trx.insertInto('projects').values({ name: 'kt-doomed-too' }).execute()
          await trx.insertInto('projects').values({ name: '' }).execute()
        })
        .catch((e: unknown) => e)
      expect(failed).toBeInstanceOf(Error) // its code: see the BUG test below

      expect(await db.selectFrom('tasks').select(['tenant_id', 'title']).execute()).toEqual([{ tenant_id: t.id, title: 'kt-task' }])
      await expectIsolated(['kt-project'])
    })

    // Kysely rethrows the error its callback saw: the tx.query a transaction hands out maps errors too.
    it('a database error inside kysely().transaction() is coded like any other', async () => {
      const code = await outcome(h().kysely<DB>().transaction().execute(async (trx) => {
        await trx.insertInto('projects').values({ name: '' }).execute()
      }))
      expect(code).toBe('VALIDATION_FAILED')
    })

    it('int8 and numeric come back as strings, int4 as numbers', async () => {
      const { rows } = await h().query<{ id: string }>("INSERT INTO projects (name) VALUES ('a'), ('b'), ('c') RETURNING id")
      expect(rows.map((r) => typeof r.id)).toEqual(['string', 'string', 'string'])
      expect(rows.every((r) => /^[1-9][0-9]*$/.test(r.id))).toBe(true)
      const res = await h().query(
        'SELECT count(*) AS n, sum(id) AS total, 9007199254740993::int8 AS big, 1.50::numeric AS dec, 7::int4 AS small, true AS flag FROM projects',
      )
      const total = String(rows.reduce((s, r) => s + BigInt(r.id), 0n))
      expect(res).toEqual({ rows: [{ n: '3', total, big: '9007199254740993', dec: '1.50', small: 7, flag: true }], rowCount: 1 })
      const viaKysely = await h().kysely<DB>().selectFrom('projects').select(['id']).orderBy('id').execute()
      expect(viaKysely).toEqual(rows.map((r) => ({ id: r.id })))
      record(tier, 'types', { ids: rows, res: res.rows })
    })

    it('tenant_id defaults to the current tenant', async () => {
      const p = await h().query<{ tenant_id: string; id: string }>("INSERT INTO projects (name) VALUES ('defaulted') RETURNING tenant_id, id")
      expect(p.rows).toEqual([{ tenant_id: t.id, id: p.rows[0].id }])
      const task = await h().query('INSERT INTO tasks (project_id, title) VALUES ($1, $2) RETURNING tenant_id, title', [p.rows[0].id, 'defaulted'])
      expect(task.rows).toEqual([{ tenant_id: t.id, title: 'defaulted' }])
      // Naming the tenant's own id is allowed and the same thing.
      const explicit = await h().query('INSERT INTO projects (tenant_id, name) VALUES ($1, $2) RETURNING tenant_id', [t.id, 'explicit'])
      expect(explicit.rows).toEqual([{ tenant_id: t.id }])
      const viaContext = await tenantry.withTenant(t.slug, () => tenantry.db.kysely<DB>().insertInto('projects').values({ name: 'ctx' }).returning('tenant_id').execute())
      expect(viaContext).toEqual([{ tenant_id: t.id }])
      await expectIsolated(['ctx', 'defaulted', 'explicit'])
    })

    it('constraint violations are VALIDATION_FAILED (duplicates CONFLICT) and write nothing', async () => {
      const { rows } = await h().query<{ id: string }>("INSERT INTO projects (name) VALUES ('kept') RETURNING id")
      const cases: [string, unknown[]][] = [
        ["INSERT INTO projects (name) VALUES ('')", []], // CHECK
        ['INSERT INTO projects (name) VALUES ($1)', ['x'.repeat(201)]], // CHECK (length)
        ['INSERT INTO projects (name) VALUES (NULL)', []], // NOT NULL
        ['INSERT INTO tasks (project_id, title) VALUES ($1, $2)', ['987654321', 'orphan']], // FK
        ['INSERT INTO tasks (project_id, title) VALUES ($1, $2)', ['not-a-number', 'bad']], // 22P02
        ["UPDATE projects SET name = '' WHERE name = 'kept'", []], // CHECK on update
        ['INSERT INTO projects (id, name) VALUES ($1, $2)', [rows[0].id, 'duplicate']], // PRIMARY KEY
      ]
      const codes: string[] = []
      for (const [text, values] of cases) codes.push(await outcome(h().query(text, values)))
      expect(codes).toEqual(['VALIDATION_FAILED', 'VALIDATION_FAILED', 'VALIDATION_FAILED', 'VALIDATION_FAILED', 'VALIDATION_FAILED', 'VALIDATION_FAILED', 'CONFLICT'])
      const kysely = await outcome(h().kysely<DB>().insertInto('tasks').values({ project_id: '987654321', title: 'orphan' }).execute())
      expect(kysely).toBe('VALIDATION_FAILED')
      const err = await h().query("INSERT INTO projects (name) VALUES ('')").catch((e: unknown) => e)
      expect(err).toBeInstanceOf(TenantryError)
      expect([(err as TenantryError).code, (err as TenantryError).status]).toEqual(['VALIDATION_FAILED', 400])
      expect(await h().query('SELECT count(*) AS n FROM tasks')).toEqual({ rows: [{ n: '0' }], rowCount: 1 })
      record(tier, 'constraints', codes)
      await expectIsolated(['kept'])
    })

    it.each(FORBIDDEN)('session-changing statement is STATEMENT_FORBIDDEN: %s', async (text) => {
      await h().query("INSERT INTO projects (name) VALUES ('kept')")
      const values = text.includes('$1') ? [neighbour.id] : []
      const codes = [
        await outcome(h().query(text, values)),
        await outcome(tenantry.withTenant(t.slug, () => tenantry.db.query(text, values))),
        await outcome(
          h().transaction(async (tx: Queryable) => {
            await tx.query("INSERT INTO projects (name) VALUES ('in-tx')")
            await tx.query(text, values)
          }),
        ),
        await outcome(h().kysely<DB>().executeQuery(CompiledQuery.raw(text, values))),
        await outcome(h().kysely<DB>().transaction().execute(async (trx) => {
          await trx.insertInto('projects').values({ name: 'in-kysely-tx' }).execute()
          await trx.executeQuery(CompiledQuery.raw(text, values))
        })),
      ]
      expect(codes).toEqual(Array(5).fill('STATEMENT_FORBIDDEN'))
      await expectIsolated(['kept'])
    })

    // A quoted or Unicode-escaped identifier is the same function to PostgreSQL, and an UPDATE of
    // pg_settings is set_config(…, false) behind a rule: the guard reads statements as the lexer does.
    it.each([
      `SELECT "set_config"('tenantry.tenant_id', $1, false)`,
      `SELECT pg_catalog."set_config"('tenantry.tenant_id', $1, true)`,
      `SELECT U&"set\\005fconfig"('tenantry.tenant_id', $1, true)`,
      `SELECT "set_config"('statement_timeout', '0', true)`,
      `UPDATE pg_settings SET setting = 'public' WHERE name = 'search_path'`,
    ])('a disguised session change is STATEMENT_FORBIDDEN: %s', async (text) => {
      expect(await outcome(h().query(text, text.includes('$1') ? [neighbour.id] : []))).toBe('STATEMENT_FORBIDDEN')
    })

    it('a multi-statement string fails and changes nothing', async () => {
      await h().query("INSERT INTO projects (name) VALUES ('kept')")
      const codes: string[] = []
      for (const text of MULTI) {
        codes.push(await outcome(h().query(text)))
        codes.push(await outcome(h().transaction(async (tx) => { await tx.query(text) })))
        codes.push(await outcome(h().kysely<DB>().executeQuery(CompiledQuery.raw(text))))
      }
      expect(codes).toEqual(Array(MULTI.length * 3).fill('pg:42601'))
      record(tier, 'multi-statement', codes)
      await expectIsolated(['kept'])
    })
  })

  it('every tier passes doctor, and the neighbour was never touched', async () => {
    // 3 targets (pooled, the schema tenant's schema, the database tenant's database) × 2 tables.
    expect(await tenantry.doctor()).toEqual({ findings: [], tables: 6 })
    const { rows } = await tenantry.handle(neighbour).query('SELECT t.tenant_id, p.name AS project, t.title FROM tasks t JOIN projects p ON p.id = t.project_id')
    expect(rows).toEqual([{ tenant_id: neighbour.id, project: 'n-first', title: 'n-task' }])
    expect(await projectsOf(neighbour)).toEqual(own(neighbour, NEIGHBOUR_ROWS))
  })
}

const pgOk = await postgresAvailable()

describe.skipIf(!pgOk)('tier contract on PostgreSQL', () => contractSuite('postgres'))
describe('tier contract on PGlite', () => contractSuite('pglite'))

describe.skipIf(!pgOk)('tier contract: both drivers', () => {
  it('return identical results for the same statements', () => {
    expect(transcripts.pglite.length).toBeGreaterThan(0)
    expect(transcripts.pglite).toEqual(transcripts.postgres)
  })
})
