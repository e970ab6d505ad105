import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createTenantry, type Tenantry } from '../src/index.ts'
import { tenantToken } from '../src/data/tenant-token.ts'
import { copyTableOut, eachTableAtSnapshot, loadWaves, mapLimited, pacedStream, tenantTables, type TenantTable } from '../src/portability/copy-engine.ts'
import { LoadPacer } from '../src/lifecycle/pacer.ts'
import { scriptedCpuTimes } from './helpers/gauges.ts'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { DEMO_MIGRATIONS, PG_ADMIN_URL, dropPostgresLeftovers, outcome, postgresAvailable } from './helpers/backends.ts'

// Parallel tables in backups and restores (issue 13): the exported snapshot every table is read
// at, the foreign-key waves tables load in, and the restore path of an operator role that is not
// superuser (no BYPASSRLS, so no COPY straight into tables with row-level security, and no
// session_replication_role) — in every tier, in parallel and one table after another.

const PG_UP = await postgresAvailable()
const DB_NAME = 'tenantry_test_portability_op'
const PREFIX = 'tp_portop'
const OPERATOR = `${PREFIX}_operator`

const table = (name: string, references: string[] = []): TenantTable => ({ name, columns: ['tenant_id'], sequences: [], references })

/** Collects what is written into it. */
class Collect extends Writable {
  readonly chunks: Buffer[] = []
  override _write(chunk: Buffer, _enc: BufferEncoding, done: () => void): void {
    this.chunks.push(chunk)
    done()
  }
  lines(): string[] {
    return Buffer.concat(this.chunks).toString().split('\n').filter(Boolean)
  }
}

describe('load waves and the limited map (units)', () => {
  it('puts a table after every table it references; tables of one wave do not reference each other', () => {
    const waves = loadWaves([table('accounts'), table('projects'), table('tasks', ['projects', 'tasks']), table('comments', ['tasks', 'accounts']), table('tags')])
    expect(waves?.map((w) => w.map((t) => t.name))).toEqual([['accounts', 'projects', 'tags'], ['tasks'], ['comments']])
  })

  it('gives no waves for a reference cycle (those tables load in one transaction)', () => {
    expect(loadWaves([table('a', ['b']), table('b', ['a'])])).toBeNull()
  })

  it('keeps at most `width` running, returns results in order, and throws the first failure after the running ones settle', async () => {
    let running = 0
    let peak = 0
    const out = await mapLimited([5, 1, 4, 2, 3], 2, async (n) => {
      peak = Math.max(peak, ++running)
      await new Promise((r) => setTimeout(r, n))
      running--
      return n * 10
    })
    expect([out, peak]).toEqual([[50, 10, 40, 20, 30], 2])
    const started: number[] = []
    const failed = mapLimited([1, 2, 3, 4], 1, async (n) => {
      started.push(n)
      if (n === 2) throw new Error('second fails')
      return n
    })
    await expect(failed).rejects.toThrow('second fails')
    expect(started).toEqual([1, 2])
  })
})

describe('paced copy streams', () => {
  const chunks = Array.from({ length: 200 }, (_, i) => Buffer.from(`${i}\t${'x'.repeat(i % 50)}\n`))

  it('passes every byte through in order, free or held to a twentieth of a stream', async () => {
    for (const u of [0.01, 1]) {
      const pacer = new LoadPacer(() => ({ cpuTimes: scriptedCpuTimes(() => u) }), 2, { windowMs: 5, freeBelow: 0.2, startLevel: 0.05, recalibrateSeconds: 3600 })
      await pacer.start('main')
      expect(pacer.report()).toMatchObject(u < 0.2 ? { free: true, level: 2 } : { free: false, level: 0.05 })
      const out = new Collect()
      await pipeline(Readable.from(chunks), pacedStream(pacer, 0), out)
      expect(Buffer.concat(out.chunks).equals(Buffer.concat(chunks))).toBe(true)
      await pacer.stop()
    }
  })

  it('gives its slot back when the stream fails, so the other tables go on', async () => {
    const pacer = new LoadPacer(() => ({}), 1) // no gauge: one slot, never rested
    await pacer.start('main')
    const failing = new Writable({ write(_c, _e, done) { done(new Error('disk full')) } })
    await expect(pipeline(Readable.from(chunks), pacedStream(pacer, 1_000_000), failing)).rejects.toThrow('disk full')
    // Held for a long slice when it failed: the one slot is free again (else this waits forever).
    await pacer.acquire()
    pacer.release(0)
    await pacer.stop()
  })
})

describe.skipIf(!PG_UP)('parallel tables and a non-superuser operator role (PostgreSQL)', { timeout: 240_000 }, () => {
  let admin: pg.Client
  let tenantry: Tenantry
  let dir: string
  let operatorUrl: string

  beforeAll(async () => {
    await dropPostgresLeftovers(PREFIX, DB_NAME)
    admin = new pg.Client({ connectionString: PG_ADMIN_URL })
    await admin.connect()
    // An operator as managed PostgreSQL gives one: may create databases and roles, is not superuser, does not bypass RLS.
    await admin.query(`CREATE ROLE ${OPERATOR} LOGIN CREATEDB CREATEROLE NOSUPERUSER NOBYPASSRLS`)
    await admin.query(`CREATE DATABASE ${DB_NAME} OWNER ${OPERATOR}`)
    dir = mkdtempSync(join(tmpdir(), 'tenantry-portability-parallel-'))
    mkdirSync(join(dir, 'migrations'))
    // tasks references projects; notes references nothing (loads beside projects).
    writeFileSync(join(dir, 'migrations', '0001_demo.sql'), `${readFileSync(join(DEMO_MIGRATIONS, '0001_projects_and_tasks.sql'), 'utf8')}
CREATE TABLE notes (
  tenant_id uuid NOT NULL DEFAULT tenantry.tenant_id(),
  id bigint GENERATED BY DEFAULT AS IDENTITY,
  body text NOT NULL,
  PRIMARY KEY (tenant_id, id)
);
ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
ALTER TABLE notes FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON notes USING (tenant_id = (SELECT tenantry.tenant_id())) WITH CHECK (tenant_id = (SELECT tenantry.tenant_id()));
`)
    const url = new URL(PG_ADMIN_URL)
    url.username = OPERATOR
    url.pathname = `/${DB_NAME}`
    operatorUrl = url.toString()
    tenantry = await createTenantry({
      databaseUrl: operatorUrl, rolePrefix: PREFIX, migrations: join(dir, 'migrations'),
      observe: { metering: false, metrics: false, tracing: false }, portability: { masterKey: 'c3'.repeat(32), backupDir: join(dir, 'backups') },
    })
    await tenantry.provision({ slug: 'acme', tier: 'pooled' })
    await tenantry.withTenant('acme', async () => {
      await tenantry.db.query("INSERT INTO projects (name) VALUES ('one'), ('two\ttab'), ('three')")
      await tenantry.db.query("INSERT INTO tasks (project_id, title, done) VALUES (1, 'a', true), (3, 'b', false)")
      await tenantry.db.query("INSERT INTO notes (body) VALUES ('n1'), ('n2'), ('n3'), ('n4')")
    })
  }, 240_000)

  afterAll(async () => {
    await tenantry?.close()
    await admin?.end()
    await dropPostgresLeftovers(PREFIX, DB_NAME)
    if (dir) rmSync(dir, { recursive: true, force: true })
  }, 120_000)

  const rowsOf = (slug: string) => tenantry.withTenant(slug, async () => ({
    projects: (await tenantry.db.query('SELECT id, name FROM projects ORDER BY id')).rows,
    tasks: (await tenantry.db.query('SELECT id, project_id, title, done FROM tasks ORDER BY id')).rows,
    notes: (await tenantry.db.query('SELECT id, body FROM notes ORDER BY id')).rows,
  }))

  it('paces a backup when asked (by round trips: the operator may not read the server\'s CPU times), not by default', async () => {
    const paced = await tenantry.portability.backup('acme', { to: join(dir, 'paced.tar'), pace: true })
    expect(paced.pace).toMatchObject({ gauge: 'rtt', free: false })
    // No prioritize extension in its database, and no reading of the host's settings: nothing lowered, nothing known.
    expect(paced.priority).toEqual({ available: false, autogroup: null })
    expect(paced.rows).toBe(9)
    const unpaced = await tenantry.portability.backup('acme', { to: join(dir, 'unpaced.tar') })
    expect(unpaced.pace).toBeUndefined()
    expect(unpaced.priority).toBeUndefined()
    expect(unpaced.rows).toBe(9)
  })

  it('the operator is what the test says: not superuser, no BYPASSRLS, and it may not set session_replication_role', async () => {
    const who = await tenantry.dataPlane.driver('main').admin(DB_NAME).query<{ rolsuper: boolean; rolbypassrls: boolean }>('SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user')
    expect(who.rows).toEqual([{ rolsuper: false, rolbypassrls: false }])
    expect(await outcome(tenantry.dataPlane.driver('main').admin(DB_NAME).query("SET session_replication_role = 'replica'"))).toBe('pg:42501')
  })

  it('every table of a parallel backup is read at the exported snapshot, not at its own connection\'s start', async () => {
    const acme = (await tenantry.findTenant('acme'))!
    const driver = tenantry.dataPlane.driver('main')
    const token = tenantToken(tenantry.dataPlane.tenantKey, acme.id)
    const counts = await driver.copyTransaction(DB_NAME, 'snapshot', async (tx) => {
      await tx.query("SELECT set_config('tenantry.tenant_id', $1, true)", [token]) // the snapshot is taken here
      const tables = await tenantTables(tx, 'public')
      // Committed after the snapshot, before any table is read: no table may see these rows.
      await tenantry.withTenant('acme', async () => {
        await tenantry.db.query("INSERT INTO projects (name) VALUES ('later')")
        await tenantry.db.query("INSERT INTO notes (body) VALUES ('later')")
      })
      return eachTableAtSnapshot(tx, { driver, database: DB_NAME, token }, tables, 3, async (w, t) => {
        const sink = new Collect()
        await copyTableOut(w, 'public', acme.id, t, sink)
        return [t.name, sink.lines().length]
      })
    })
    expect(counts).toEqual([['projects', 3], ['tasks', 2], ['notes', 4]])
    await tenantry.withTenant('acme', async () => {
      await tenantry.db.query("DELETE FROM projects WHERE name = 'later'")
      await tenantry.db.query("DELETE FROM notes WHERE body = 'later'")
    })
    expect(await outcome(tenantry.dataPlane.driver('main').copyTransaction(DB_NAME, 'snapshot', async () => 1, { snapshot: "x'; DROP TABLE projects; --" }))).toBe('VALIDATION_FAILED')
  })

  it('a backup whose helpers get no connection (the owner pool held by others) reads every table itself instead of waiting', async () => {
    const acme = (await tenantry.findTenant('acme'))!
    const driver = tenantry.dataPlane.driver('main')
    const token = tenantToken(tenantry.dataPlane.tenantKey, acme.id)
    // Every connection of the pool but one held, as by that many backups' exporting transactions.
    let release!: () => void
    const held = new Promise<void>((r) => { release = r })
    let holding = 0
    const holders = Array.from({ length: driver.adminPoolSize - 1 }, () => driver.copyTransaction(DB_NAME, 'snapshot', async () => { holding++; await held }))
    while (holding < driver.adminPoolSize - 1) await new Promise((r) => setTimeout(r, 10))
    try {
      const counts = await driver.copyTransaction(DB_NAME, 'snapshot', async (tx) => {
        await tx.query("SELECT set_config('tenantry.tenant_id', $1, true)", [token])
        return eachTableAtSnapshot(tx, { driver, database: DB_NAME, token }, await tenantTables(tx, 'public'), 4, async (w, t) => {
          const sink = new Collect()
          await copyTableOut(w, 'public', acme.id, t, sink)
          return [t.name, sink.lines().length, w === tx]
        })
      })
      expect(counts).toEqual([['projects', 3, true], ['tasks', 2, true], ['notes', 4, true]])
    } finally {
      release()
      await Promise.all(holders)
    }
  })

  for (const tier of ['pooled', 'schema', 'database'] as const) {
    it(`restores as a ${tier}-tier copy through the operator role, in parallel and one table at a time, with the same rows and sequences past them`, async () => {
      const archive = await tenantry.portability.backup('acme')
      expect(archive.tables).toEqual([{ name: 'projects', rows: 3 }, { name: 'tasks', rows: 2 }, { name: 'notes', rows: 4 }])
      const want = await rowsOf('acme')
      const parallel = await tenantry.portability.restore(archive.path, { as: `par-${tier}`, tier })
      expect([parallel.tenant.tier, parallel.rows, parallel.tables]).toEqual([tier, 9, archive.tables])
      expect(await rowsOf(`par-${tier}`)).toEqual(want)
      const next = await tenantry.withTenant(`par-${tier}`, async () => (await tenantry.db.query<{ id: string }>("INSERT INTO projects (name) VALUES ('after') RETURNING id")).rows[0].id)
      // A pooled sequence serves every tenant of the table: past the rows, never lowered.
      if (tier === 'pooled') expect(Number(next)).toBeGreaterThan(4)
      else expect(next).toBe('4')

      const sequential = await createTenantry({
        databaseUrl: operatorUrl, rolePrefix: PREFIX, migrations: join(dir, 'migrations'), resumeOperations: false,
        observe: { metering: false, metrics: false, tracing: false }, portability: { masterKey: 'c3'.repeat(32), parallelTables: 1 },
      })
      try {
        await sequential.portability.restore(archive.path, { as: `seq-${tier}`, tier })
      } finally {
        await sequential.close()
      }
      expect(await rowsOf(`seq-${tier}`)).toEqual(want)
      expect(await rowsOf('acme')).toEqual(want)
    })
  }
})
