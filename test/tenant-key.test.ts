/**
 * `tenantry.tenant_id()`, the signed check every policy calls, on its own: which settings it
 * accepts, and that the key it folds into its plan (read once per connection) never outlives a
 * change of the key, on a connection that has used the old one many times.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { randomUUID } from 'node:crypto'
import pg from 'pg'
import type { PGlite } from '@electric-sql/pglite'
import { bootstrapDatabaseSql, ensureAppRoleSql } from '../src/data/sql.ts'
import { tenantToken } from '../src/data/tenant-token.ts'
import { PG_ADMIN_URL, dropDatabase, freshDatabase, freshPGlite, outcome, postgresAvailable } from './helpers/backends.ts'

const KEY_A = 'a'.repeat(32) + '0123456789abcdef0123456789abcdef'
const KEY_B = 'b'.repeat(32) + 'fedcba9876543210fedcba9876543210'
const APP_ROLE = 'ts_tenant_key_app'
const ID = randomUUID()
const OTHER = randomUUID()

/** Run SQL as the app role (not owner, not superuser) and return the first column of the first row. */
type AsApp = (sql: string, values?: unknown[]) => Promise<unknown>
/** Run SQL as the owner. */
type AsOwner = (sql: string) => Promise<void>

function suite(setup: () => Promise<{ asApp: AsApp; asOwner: AsOwner; close(): Promise<void> }>) {
  let asApp: AsApp
  let asOwner: AsOwner
  let close: () => Promise<void>

  beforeAll(async () => {
    ;({ asApp, asOwner, close } = await setup())
  }, 60_000)
  afterAll(async () => {
    await close?.()
  })

  const verified = async (setting: string | null) => {
    if (setting !== null) await asApp("SELECT set_config('tenantry.tenant_id', $1, false)", [setting])
    else await asApp("SELECT set_config('tenantry.tenant_id', '', false)")
    return asApp('SELECT tenantry.tenant_id()::text')
  }

  it('accepts exactly the setting signed with the key, and nothing near it', async () => {
    const good = tenantToken(KEY_A, ID)
    const sig = good.slice(37)
    // Past the plan cache's first custom plans, so the generic plan (the folded key) is in use.
    for (let i = 0; i < 8; i++) expect(await verified(good)).toBe(ID)
    expect({
      empty: await verified(null),
      bareId: await verified(ID),
      otherIdMySignature: await verified(`${OTHER}.${sig}`),
      upperCaseSignature: await verified(`${ID}.${sig.toUpperCase()}`),
      flippedLastChar: await verified(`${ID}.${sig.slice(0, -1)}${sig.endsWith('0') ? '1' : '0'}`),
      trailingSpace: await verified(`${good} `),
      colonForDot: await verified(`${ID}:${sig}`),
      signedWithOtherKey: await verified(tenantToken(KEY_B, ID)),
      // 101 bytes but not 101 characters: byte-level checks must still refuse it.
      multibyte: await verified(`${ID}.${sig.slice(0, 62)}é`),
    }).toEqual({
      empty: null,
      bareId: null,
      otherIdMySignature: null,
      upperCaseSignature: null,
      flippedLastChar: null,
      trailingSpace: null,
      colonForDot: null,
      signedWithOtherKey: null,
      multibyte: null,
    })
  })

  it('keeps the key out of reach of the app role, in the table and through the function that reads it', async () => {
    expect(await outcome(asApp('SELECT key FROM tenantry.secret'))).toBe('pg:42501')
    expect(await outcome(asApp('SELECT tenantry.secret_key()'))).toBe('pg:42501')
  })

  it('a new key takes effect at once on a connection that cached the old one', async () => {
    for (let i = 0; i < 8; i++) expect(await verified(tenantToken(KEY_A, ID))).toBe(ID)
    await asOwner(bootstrapDatabaseSql(KEY_B))
    try {
      expect({ oldKey: await verified(tenantToken(KEY_A, ID)), newKey: await verified(tenantToken(KEY_B, ID)) }).toEqual({ oldKey: null, newKey: ID })
    } finally {
      await asOwner(bootstrapDatabaseSql(KEY_A))
    }
    expect({ oldKey: await verified(tenantToken(KEY_B, ID)), newKey: await verified(tenantToken(KEY_A, ID)) }).toEqual({ oldKey: null, newKey: ID })
  })
}

const PG_OK = await postgresAvailable()
const DB = 'tenantry_test_tenant_key'

describe.skipIf(!PG_OK)('tenantry.tenant_id() on PostgreSQL', () =>
  suite(async () => {
    const url = await freshDatabase(DB)
    const owner = new pg.Client({ connectionString: url })
    await owner.connect()
    await owner.query(bootstrapDatabaseSql(KEY_A))
    await owner.query(ensureAppRoleSql(APP_ROLE))
    await owner.query(`GRANT CONNECT ON DATABASE ${DB} TO ${APP_ROLE}`)
    const appUrl = new URL(url)
    appUrl.username = APP_ROLE
    appUrl.password = ''
    // One connection for the whole suite: the point is what it has cached.
    const app = new pg.Client({ connectionString: appUrl.toString() })
    await app.connect()
    return {
      asApp: async (sql, values) => {
        const r = await app.query({ text: sql, values, rowMode: 'array' })
        return r.rows[0]?.[0] ?? null
      },
      asOwner: async (sql) => {
        await owner.query(sql)
      },
      close: async () => {
        await app.end().catch(() => undefined)
        await owner.end().catch(() => undefined)
        await dropDatabase(DB)
        const admin = new pg.Client({ connectionString: PG_ADMIN_URL })
        await admin.connect()
        await admin.query(`DROP ROLE IF EXISTS ${APP_ROLE}`).finally(() => admin.end())
      },
    }
  }))

describe('tenantry.tenant_id() on PGlite', () =>
  suite(async () => {
    const db: PGlite = await freshPGlite()
    await db.exec(bootstrapDatabaseSql(KEY_A))
    await db.exec(ensureAppRoleSql(APP_ROLE))
    // PGlite has one connection: the app's statements run under SET ROLE, the owner's after RESET ROLE.
    const asApp: AsApp = async (sql, values) => {
      await db.exec(`SET ROLE ${APP_ROLE}`)
      try {
        const r = await db.query<Record<string, unknown>>(sql, values ?? [])
        const row = r.rows[0]
        return row ? (Object.values(row)[0] ?? null) : null
      } finally {
        await db.exec('RESET ROLE')
      }
    }
    return {
      asApp,
      asOwner: async (sql) => {
        await db.exec(sql)
      },
      close: () => db.close(),
    }
  }))
