import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable, Writable } from 'node:stream'
import { createHash, randomUUID } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createTenantry, type Tenantry } from '../src/index.ts'
import { packArchive, readManifest } from '../src/portability/archive.ts'
import { copyTableOut, tenantTables, type TenantTable } from '../src/portability/copy-engine.ts'
import { tenantToken } from '../src/data/tenant-token.ts'
import { BinaryCopyScanner, rewriteTenantIdBinary, uuidBytes } from '../src/portability/copy-binary.ts'
import { backends, outcome, postgresAvailable, type Backend } from './helpers/backends.ts'

// Archives of format version 2 (issue 13): tables whose columns are all of built-in types travel in
// PostgreSQL's binary COPY format, the others in text. The scanner that counts binary rows and
// rewrites their tenant_id, on hand-made streams cut at every byte; then real backups of every
// built-in type the archive claims to carry, restored into other tiers with the same values, and an
// archive restored into pooled tables whose column types a later migration changed.

const A = '0c1a3f5e-7b9d-4e2f-8a6c-1d3b5f7a9c2e'
const B = 'f0e1d2c3-b4a5-4968-8776-655443322110'

/** A binary COPY stream of `rows`, each field a Buffer or null (NULL). */
function binaryCopy(rows: (Buffer | null)[][]): Buffer {
  const parts: Buffer[] = [Buffer.from('PGCOPY\n\xff\r\n\0', 'latin1'), Buffer.alloc(4), Buffer.from([0, 0, 0, 4]), Buffer.from('ext!')]
  for (const row of rows) {
    const count = Buffer.alloc(2)
    count.writeInt16BE(row.length)
    parts.push(count)
    for (const f of row) {
      const len = Buffer.alloc(4)
      len.writeInt32BE(f === null ? -1 : f.length)
      parts.push(len)
      if (f) parts.push(f)
    }
  }
  parts.push(Buffer.from([0xff, 0xff]))
  return Buffer.concat(parts)
}

const ROWS = [
  [uuidBytes(A), Buffer.from('first'), null],
  [uuidBytes(A), Buffer.alloc(0), Buffer.from([0, 0, 0, 7])],
  [uuidBytes(A), null, Buffer.from('third, with a longer value that spans chunks')],
]

/** Every way of cutting `buf` in two, and byte by byte. */
function cuts(buf: Buffer): Buffer[][] {
  const all: Buffer[][] = []
  for (let at = 0; at <= buf.length; at++) all.push([buf.subarray(0, at), buf.subarray(at)])
  all.push([...buf].map((b) => Buffer.from([b])))
  return all
}

describe('binary COPY scanner', () => {
  it('counts the tuples wherever the stream is cut, and sees the trailer', () => {
    const data = binaryCopy(ROWS)
    for (const chunks of cuts(data)) {
      const s = new BinaryCopyScanner()
      for (const c of chunks) s.scan(Buffer.from(c))
      expect([s.rows, s.complete]).toEqual([3, true])
    }
    const cut = new BinaryCopyScanner()
    cut.scan(data.subarray(0, data.length - 5))
    expect([cut.rows, cut.complete]).toEqual([3, false])
  })

  it('rewrites the first field of every tuple, wherever the stream is cut', async () => {
    const want = binaryCopy(ROWS.map(([, ...rest]) => [uuidBytes(B), ...rest]))
    for (const chunks of cuts(binaryCopy(ROWS))) {
      const out: Buffer[] = []
      for await (const c of Readable.from(chunks.map((c) => Buffer.from(c))).pipe(rewriteTenantIdBinary(A, B))) out.push(c as Buffer)
      expect(Buffer.concat(out).equals(want)).toBe(true)
    }
  })

  it('fails on another tenant\'s row, a NULL or short tenant_id, a cut-off stream, data after the trailer and a wrong signature', async () => {
    const fails = async (data: Buffer) => {
      try {
        for await (const _ of Readable.from([Buffer.from(data)]).pipe(rewriteTenantIdBinary(A, B))) { /* drain: the rewrite changes its chunks in place */ }
        return 'ok'
      } catch (err) {
        return (err as Error).message
      }
    }
    expect(await fails(binaryCopy([ROWS[0], [uuidBytes(B), null, null]]))).toBe(`a row does not belong to tenant ${A}`)
    expect(await fails(binaryCopy([[null, null]]))).toBe(`a row does not belong to tenant ${A} (its first field is NULL)`)
    expect(await fails(binaryCopy([[Buffer.from('short')]]))).toBe(`a row does not belong to tenant ${A} (its first field is 5 bytes)`)
    const whole = binaryCopy(ROWS)
    expect(await fails(whole.subarray(0, whole.length - 2))).toBe('binary COPY data cut off before its trailer')
    expect(await fails(Buffer.concat([whole, Buffer.from([0, 1])]))).toBe('binary COPY data goes on after its trailer')
    expect(await fails(Buffer.from('1\tname\n'.repeat(4)))).toBe('not PostgreSQL binary COPY data (no PGCOPY signature)')
    expect(() => rewriteTenantIdBinary('not-a-uuid', B)).toThrow('tenant ids must be uuids')
  })

  it('counts the tuples of an empty stream, and the restore\'s check of a same-tenant load refuses a stream cut before its trailer', async () => {
    const count = (data: Buffer) => {
      const s = new BinaryCopyScanner()
      s.scan(Buffer.from(data))
      return s.rows
    }
    expect(count(binaryCopy(ROWS))).toBe(3)
    expect(count(binaryCopy([]))).toBe(0)
    const checked = async (data: Buffer) => {
      for await (const _ of Readable.from([Buffer.from(data)]).pipe(rewriteTenantIdBinary(A, A))) { /* drain */ }
    }
    await expect(checked(binaryCopy(ROWS).subarray(0, 30))).rejects.toThrow('binary COPY data cut off before its trailer')
  })
})

const DB_NAME = 'tenantry_test_portability_binary'
const PREFIX = 'tp_pbin'
const PG_UP = await postgresAvailable()

/** Every built-in type the binary form must carry unchanged, and a table with a type of the app's own (text form). */
const MIGRATION = `
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE kinds (
  tenant_id uuid NOT NULL DEFAULT tenantry.tenant_id(),
  id bigint GENERATED BY DEFAULT AS IDENTITY,
  n numeric(12,3), f float8, r real, i2 smallint, i4 integer, b boolean, t text, vc varchar(10), ch char(3), bt bit(3),
  bin bytea, js json, jb jsonb, ts timestamptz, tsl timestamp, d date, tm time, iv interval, ip inet,
  arr text[], ints integer[], u uuid,
  PRIMARY KEY (tenant_id, id)
);
CREATE TABLE moods (
  tenant_id uuid NOT NULL DEFAULT tenantry.tenant_id(),
  id bigint GENERATED BY DEFAULT AS IDENTITY,
  m mood, ms mood[],
  PRIMARY KEY (tenant_id, id)
);
ALTER TABLE kinds ENABLE ROW LEVEL SECURITY;
ALTER TABLE kinds FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON kinds USING (tenant_id = (SELECT tenantry.tenant_id())) WITH CHECK (tenant_id = (SELECT tenantry.tenant_id()));
ALTER TABLE moods ENABLE ROW LEVEL SECURITY;
ALTER TABLE moods FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON moods USING (tenant_id = (SELECT tenantry.tenant_id())) WITH CHECK (tenant_id = (SELECT tenantry.tenant_id()));
`

const KINDS = `INSERT INTO kinds (n, f, r, i2, i4, b, t, vc, ch, bt, bin, js, jb, ts, tsl, d, tm, iv, ip, arr, ints, u) VALUES
  (123456789.125, 'NaN', '-Infinity', -32768, 2147483647, true, E'tab\\there\\nline ünï ✓', 'ten chars!', 'ab', B'101', '\\x00ff10'::bytea, '{"a": [1, 2.50]}', '{"b": {"c": null}}',
   '2026-12-06 05:00:00.123456+00', 'infinity', '0001-01-01', '23:59:59.999999', '1 year 2 mons -3 days 04:05:06', '10.0.0.1/8', ARRAY['x', NULL, 'y,z'], ARRAY[1, NULL, -3], '00000000-0000-0000-0000-000000000001'),
  (-0.001, 1e308, 3.25, 0, -1, false, '', '', 'xyz', B'000', '', 'null', '[]', '-infinity', '2000-02-29 12:00', '9999-12-31', '00:00', '0', '::1', '{}', '{}', NULL),
  (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)`

function binarySuite(backend: Backend): void {
  describe.skipIf(!backend.enabled)(`binary archives (${backend.name})`, () => {
    let tenantry: Tenantry
    let url: string | undefined
    let dir: string
    let migrations: string
    let archive: string

    const rowsOf = (t: Tenantry, slug: string, table: string) => t.withTenant(slug, async () =>
      (await t.db.query<{ r: string }>(`SELECT (to_jsonb(x) - 'tenant_id')::text AS r FROM ${table} x ORDER BY id`)).rows.map((r) => r.r))

    beforeAll(async () => {
      dir = mkdtempSync(join(tmpdir(), 'tenantry-binary-'))
      migrations = join(dir, 'migrations')
      mkdirSync(migrations)
      writeFileSync(join(migrations, '0001_kinds.sql'), MIGRATION)
      url = await backend.url()
      tenantry = await createTenantry({
        ...(url ? { databaseUrl: url, rolePrefix: PREFIX } : { dataDir: 'memory' }),
        migrations,
        observe: { metering: false, metrics: false, tracing: false },
        portability: { masterKey: 'c3'.repeat(32), backupDir: join(dir, 'backups') },
      })
      await tenantry.provision({ slug: 'source', tier: 'pooled' })
      await tenantry.provision({ slug: 'neighbour', tier: 'pooled' })
      await tenantry.withTenant('source', async () => {
        await tenantry.db.query(KINDS)
        await tenantry.db.query("INSERT INTO moods (m, ms) VALUES ('happy', ARRAY['sad', 'ok']::mood[]), (NULL, NULL), ('ok', '{}')")
      })
      await tenantry.withTenant('neighbour', async () => { await tenantry.db.query("INSERT INTO kinds (t) VALUES ('theirs')") })
    }, 240_000)

    afterAll(async () => {
      await tenantry?.close()
      await backend.cleanUp()
      rmSync(dir, { recursive: true, force: true })
    }, 120_000)

    it('holds a table of built-in types in binary form and one with the app\'s own enum in text', async () => {
      const r = await tenantry.portability.backup('source', { encrypt: false })
      archive = r.path
      const { manifest } = await readManifest(r.path)
      expect(manifest.formatVersion).toBe(2)
      expect(manifest.tables.map((t) => [t.name, t.format, t.rows, t.entry])).toEqual([
        ['moods', 'text', 3, 'tables/000-moods.copy.gz'],
        ['kinds', 'binary', 3, 'tables/001-kinds.pgcopy.gz'],
      ])
      expect(manifest.tables[0].types).toEqual(['uuid', 'bigint', 'mood', 'mood[]'])
      expect(manifest.tables[1].types?.slice(0, 4)).toEqual(['uuid', 'bigint', 'numeric(12,3)', 'double precision'])
    })

    it('restores it as a copy in the schema tier and in its own tier with every value the same', async () => {
      const tiers = url ? (['schema', 'database', 'pooled'] as const) : (['schema', 'pooled'] as const)
      for (const tier of tiers) {
        const slug = `copy-${tier}`
        const r = await tenantry.portability.restore(archive, { as: slug, tier })
        expect([tier, r.rows, r.tables]).toEqual([tier, 6, [{ name: 'moods', rows: 3 }, { name: 'kinds', rows: 3 }]])
        expect([tier, await rowsOf(tenantry, slug, 'kinds')]).toEqual([tier, await rowsOf(tenantry, 'source', 'kinds')])
        expect([tier, await rowsOf(tenantry, slug, 'moods')]).toEqual([tier, await rowsOf(tenantry, 'source', 'moods')])
        const ids = await tenantry.withTenant(slug, async () => (await tenantry.db.query<{ tenant_id: string }>('SELECT DISTINCT tenant_id FROM kinds')).rows)
        expect(ids).toEqual([{ tenant_id: r.tenant.id }])
      }
      expect(await rowsOf(tenantry, 'neighbour', 'kinds')).toHaveLength(1)
      // Tables with no rows of the tenant: a binary COPY of header and trailer only.
      await tenantry.provision({ slug: 'hollow', tier: 'pooled' })
      const empty = await tenantry.portability.backup('hollow', { encrypt: false })
      expect((await readManifest(empty.path)).manifest.tables.map((t) => [t.name, t.format, t.rows])).toEqual([['moods', 'text', 0], ['kinds', 'binary', 0]])
      const e = await tenantry.portability.restore(empty.path, { as: 'hollow-copy', tier: 'schema' })
      expect(e.tables).toEqual([{ name: 'moods', rows: 0 }, { name: 'kinds', rows: 0 }])
      expect(await rowsOf(tenantry, 'hollow-copy', 'kinds')).toEqual([])
      // Every value compared above, and one read back by eye.
      const [first] = await rowsOf(tenantry, 'copy-schema', 'kinds')
      expect(JSON.parse(first)).toMatchObject({ id: 1, n: 123456789.125, f: 'NaN', r: '-Infinity', i4: 2147483647, bin: '\\x00ff10', iv: '1 year 2 mons -3 days +04:05:06', arr: ['x', null, 'y,z'] })
    }, 180_000)

    it('still restores an archive of format version 1 (every table as COPY text, checksums of the plain text)', async () => {
      // A version 1 archive of the source tenant, as Tenantry wrote them before binary COPY.
      const source = (await tenantry.findTenant('source'))!
      const room = tenantry.dataPlane.migrationTarget(source)
      const copies = await tenantry.dataPlane.driver(source.placement.server).copyTransaction(room.database, 'snapshot', async (tx) => {
        await tx.query("SELECT set_config('tenantry.tenant_id', $1, true)", [tenantToken(tenantry.dataPlane.tenantKey, source.id)])
        const out: { table: TenantTable; data: Buffer; rows: number }[] = []
        for (const table of await tenantTables(tx, room.schema)) {
          const chunks: Buffer[] = []
          const rows = await copyTableOut(tx, room.schema, source.id, table, new Writable({ write(c: Buffer, _e, cb) { chunks.push(c); cb() } }))
          out.push({ table, data: Buffer.concat(chunks), rows })
        }
        return out
      })
      const v2 = (await readManifest(archive)).manifest
      const spooled = copies.map((c, i) => ({ entry: `tables/${String(i).padStart(3, '0')}-${c.table.name}.copy`, file: join(dir, `v1-${i}.copy`), ...c }))
      for (const s of spooled) writeFileSync(s.file, s.data)
      const v1 = {
        ...v2, formatVersion: 1 as const, archiveId: randomUUID(), compression: 'none' as const, encryption: null, rows: 6,
        tables: spooled.map((s) => ({ name: s.table.name, columns: s.table.columns, rows: s.rows, sha256: createHash('sha256').update(s.data).digest('hex'), entry: s.entry, bytes: s.data.length })),
      }
      const path = join(dir, 'v1.tar')
      await packArchive(path, v1, spooled, null)
      const r = await tenantry.portability.restore(path, { as: 'copy-v1', tier: 'schema' })
      expect([r.rows, r.tables]).toEqual([6, [{ name: 'moods', rows: 3 }, { name: 'kinds', rows: 3 }]])
      expect(await rowsOf(tenantry, 'copy-v1', 'kinds')).toEqual(await rowsOf(tenantry, 'source', 'kinds'))
      expect(await rowsOf(tenantry, 'copy-v1', 'moods')).toEqual(await rowsOf(tenantry, 'source', 'moods'))
      // Its checks are still those of version 1: a changed row count is refused before anything is written.
      const miscounted = join(dir, 'v1-miscounted.tar')
      await packArchive(miscounted, { ...v1, tables: v1.tables.map((t, i) => (i === 1 ? { ...t, rows: 2 } : t)) }, spooled, null)
      expect(await outcome(tenantry.portability.restore(miscounted, { as: 'never-v1' }))).toBe('ARCHIVE_CORRUPT')
      expect(await tenantry.findTenant('never-v1')).toBeNull()
    }, 120_000)

    it.skipIf(backend.name !== 'PostgreSQL')('restores into pooled tables whose column types a later migration changed, each value read as its new type', async () => {
      if (!url) throw new Error('no PostgreSQL URL')
      writeFileSync(join(migrations, '0002_wider.sql'), 'ALTER TABLE kinds ALTER COLUMN i4 TYPE bigint; ALTER TABLE kinds ALTER COLUMN vc TYPE text; ALTER TABLE kinds ALTER COLUMN n TYPE numeric(14,1);')
      const newer = await createTenantry({ databaseUrl: url, rolePrefix: PREFIX, migrations, resumeOperations: false, observe: { metering: false, metrics: false, tracing: false }, portability: { masterKey: 'c3'.repeat(32) } })
      try {
        const r = await newer.portability.restore(archive, { as: 'copy-wider', tier: 'pooled' })
        expect([r.rows, r.migratedForward]).toEqual([6, ['0002_wider']])
        const rows = await newer.withTenant('copy-wider', async () => (await newer.db.query('SELECT i4, vc, n, pg_typeof(i4)::text AS type FROM kinds ORDER BY id')).rows)
        expect(rows).toEqual([
          { i4: '2147483647', vc: 'ten chars!', n: '123456789.1', type: 'bigint' },
          { i4: '-1', vc: '', n: '0.0', type: 'bigint' },
          { i4: null, vc: null, n: null, type: 'bigint' },
        ])
        expect(await rowsOf(newer, 'copy-wider', 'moods')).toEqual(await rowsOf(newer, 'source', 'moods'))
      } finally {
        await newer.close()
      }
    }, 120_000)
  })
}

for (const backend of backends(DB_NAME, PREFIX, PG_UP)) binarySuite(backend)
