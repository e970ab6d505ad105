import { createCipheriv, createDecipheriv, createHash, createHmac, randomBytes, timingSafeEqual, type CipherGCM, type DecipherGCM, type Hash } from 'node:crypto'
import { appendFileSync, createReadStream, createWriteStream, statSync } from 'node:fs'
import { PassThrough, Transform, Writable, type Readable, type TransformCallback, type TransformOptions } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { createGunzip, createGzip } from 'node:zlib'
import * as tar from 'tar-stream'
import { TenantryError } from '../core/errors.ts'
import { mapLimited, type CopyFormat, type TenantTable } from './copy-engine.ts'

/**
 * The tenant archive: one tar file, the same in every tier.
 *
 * ```
 * manifest.json                 what the archive holds (below), in the clear
 * manifest.mac                  HMAC-SHA256 of manifest.json under the data key (encrypted archives)
 * tables/000-projects.pgcopy    each table's rows as COPY data, tenant_id first, in load order:
 * tables/001-tasks.pgcopy.gz    `.pgcopy` PostgreSQL's binary COPY format, `.copy` COPY text;
 * …                             `.gz`: gzip; `.enc`: AES-256-GCM (iv ‖ ciphertext ‖ tag,
 *                               authenticated with the archive id and entry name)
 * ```
 *
 * Format version 2 (written since binary COPY) holds a table in the binary format when every one of
 * its columns has a built-in type (whose binary form is the same on every PostgreSQL server and
 * version), else in text; each table says which (`format`) and lists its column types. Version 1
 * (every table in text) is still read.
 *
 * A table's `sha256`: in version 2, of the entry's stored bytes (compressed, encrypted: as they are
 * in the tar) after its name and row count ({@link entryHash}), so a restore verifies the whole
 * archive by reading it once, without decompressing, and a changed count fails like a changed
 * byte; in version 1, of the plain COPY text, with the rows counted as its lines. Tar entries need
 * their size up front: each table is spooled to a file beside the archive first, then packed.
 */
export interface ArchiveManifest {
  format: 'tenantry-archive'
  formatVersion: 1 | 2
  archiveId: string
  tenantryVersion: string
  createdAt: string
  tenant: { id: string; slug: string; name: string; tier: string; plan: string; region: string | null; config: Record<string, unknown> }
  source: { server: string; database: string; schema: string }
  /** The migration ledger of the tenant's target when it was taken: version, name and checksum of each file. */
  migrations: { version: string; name: string; checksum: string }[]
  compression: 'gzip' | 'none'
  encryption: { algorithm: 'aes-256-gcm'; key: 'tenant-data-key'; tenantId: string } | null
  tables: ArchiveTable[]
  rows: number
}

/** One table of an archive. */
export interface ArchiveTable {
  name: string
  columns: string[]
  /** The columns' types (`format_type`), version 2. */
  types?: string[]
  /** How its rows are held: `binary` (PostgreSQL's binary COPY format) or `text` (version 1: always text). */
  format?: CopyFormat
  rows: number
  sha256: string
  entry: string
  bytes: number
}

/** The format an archive table is held in (version 1 archives: text). */
export const formatOf = (t: Pick<ArchiveTable, 'format'>): CopyFormat => (t.format === 'binary' ? 'binary' : 'text')

/** The manifest version this installation writes. */
export const ARCHIVE_FORMAT_VERSION = 2

export const MANIFEST_ENTRY = 'manifest.json'
/** Stream chunk size: large chunks keep the per-chunk JavaScript work (hashing, counting, gzip calls) small. */
const CHUNK = 256 * 1024
export const MAC_ENTRY = 'manifest.mac'

/** The file a table is spooled to and what was counted on the way. */
export interface SpooledTable {
  table: TenantTable
  file: string
  entry: string
  /** Where the plain COPY data is written; resolves once the spool file is complete. */
  sink: Writable
  /** The entry's size; its checksum needs the row count, which the COPY says ({@link entrySha256}). */
  done: Promise<{ bytes: number }>
}

/**
 * Hashes the bytes passing through and counts their lines (COPY text and JSON lines: one row a
 * line); `countRows: false` only hashes (`hash`: one already fed a prefix).
 */
export class Counter extends Transform {
  readonly hash: Hash
  rows = 0
  private readonly counting: boolean
  constructor(opts: TransformOptions & { countRows?: boolean; hash?: Hash } = {}) {
    super(opts)
    this.hash = opts.hash ?? createHash('sha256')
    this.counting = opts.countRows !== false
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.hash.update(chunk)
    if (this.counting) for (let i = chunk.indexOf(10); i !== -1; i = chunk.indexOf(10, i + 1)) this.rows++
    done(null, chunk)
  }
}

/** Start spooling one table: COPY data in (`format`), gzip and encryption on the way, a file out. */
export function spoolTable(dir: string, index: number, table: TenantTable, opts: { gzip: boolean; key: Buffer | null; archiveId: string; format: CopyFormat; gate?: Transform }): SpooledTable {
  const entry = `tables/${String(index).padStart(3, '0')}-${table.name}.${opts.format === 'binary' ? 'pgcopy' : 'copy'}${opts.gzip ? '.gz' : ''}${opts.key ? '.enc' : ''}`
  const file = `${dir}/${String(index).padStart(3, '0')}.spool`
  const out = createWriteStream(file, { highWaterMark: CHUNK })
  // A pacing gate (copy-engine's pacedStream) goes first, in the same pipeline: a failure on
  // either side of it tears down the whole chain.
  const stages: (Transform | Writable)[] = [opts.gate ?? new PassThrough({ highWaterMark: CHUNK })]
  if (opts.gzip) stages.push(createGzip({ level: 1, chunkSize: CHUNK }))
  let cipher: CipherGCM | undefined
  if (opts.key) {
    const iv = randomBytes(12)
    cipher = createCipheriv('aes-256-gcm', opts.key, iv)
    cipher.setAAD(Buffer.from(`${opts.archiveId}:${entry}`))
    out.write(iv)
    stages.push(cipher)
  }
  const done = (pipeline as (...s: unknown[]) => Promise<void>)(...stages, out).then(() => {
    if (cipher) appendFileSync(file, cipher.getAuthTag())
    return { bytes: statSync(file).size }
  })
  return { table, file, entry, sink: stages[0] as Writable, done }
}

/** Format 2's table checksum, fed the entry's name and row count; its stored bytes follow. */
export function entryHash(entry: string, rows: number): Hash {
  return createHash('sha256').update(`tenantry-archive-table\0${entry}\0${rows}\0`)
}

/** The format 2 checksum of a spooled table (read back from its spool file: compressed, it is small). */
export async function entrySha256(file: string, entry: string, rows: number): Promise<string> {
  const hash = entryHash(entry, rows)
  for await (const chunk of createReadStream(file, { highWaterMark: CHUNK })) hash.update(chunk as Buffer)
  return hash.digest('hex')
}

/** Pack the manifest and the spooled tables into the tar file `path`. */
export async function packArchive(path: string, manifest: ArchiveManifest, spooled: { entry: string; file: string }[], key: Buffer | null): Promise<number> {
  const pack = tar.pack()
  const out = createWriteStream(path)
  const written = new Promise<void>((resolve, reject) => {
    out.on('finish', resolve)
    out.on('error', reject)
    pack.on('error', reject)
  })
  pack.pipe(out)
  const add = (name: string, buffer: Buffer) => new Promise<void>((resolve, reject) => { pack.entry({ name, mode: 0o600 }, buffer, (err) => (err ? reject(err) : resolve())) })
  const json = Buffer.from(JSON.stringify(manifest, null, 2))
  await add(MANIFEST_ENTRY, json)
  if (key) await add(MAC_ENTRY, Buffer.from(manifestMac(key, json)))
  for (const s of spooled) {
    await new Promise<void>((resolve, reject) => {
      const entry = pack.entry({ name: s.entry, size: statSync(s.file).size, mode: 0o600 }, (err) => (err ? reject(err) : resolve()))
      const src = createReadStream(s.file, { highWaterMark: CHUNK })
      src.on('error', reject)
      src.pipe(entry as unknown as NodeJS.WritableStream)
    })
  }
  pack.finalize()
  await written
  return statSync(path).size
}

function manifestMac(key: Buffer, json: Buffer): string {
  return createHmac('sha256', key).update('tenantry-manifest').update(json).digest('hex')
}

/** The archive's manifest, read without the data (only the first entries are read). */
export async function readManifest(path: string): Promise<{ manifest: ArchiveManifest; json: Buffer; mac: string | null }> {
  let json: Buffer | undefined
  let mac: string | null = null
  await walk(path, async (name, _size, stream) => {
    if (name === MANIFEST_ENTRY) json = await collect(stream)
    else if (name === MAC_ENTRY) mac = (await collect(stream)).toString()
    else {
      stream.resume()
      return 'stop'
    }
    return 'next'
  })
  if (!json) throw corrupt(path, 'it has no manifest.json (not a Tenantry archive, or cut off at its start)')
  let manifest: ArchiveManifest
  try {
    manifest = JSON.parse(json.toString()) as ArchiveManifest
  } catch (err) {
    throw corrupt(path, 'its manifest.json is not valid JSON', err)
  }
  if (manifest.format !== 'tenantry-archive' || !Array.isArray(manifest.tables) || !manifest.tenant?.id) {
    throw corrupt(path, 'its manifest.json is not a Tenantry archive manifest')
  }
  if (manifest.formatVersion !== 1 && manifest.formatVersion !== 2) {
    throw new TenantryError('ARCHIVE_INCOMPATIBLE', `The archive '${path}' is of format version ${JSON.stringify(manifest.formatVersion)}; this installation reads versions 1 and 2. Restore it with a newer Tenantry.`, { details: { path } })
  }
  for (const t of manifest.tables) {
    const v2 = manifest.formatVersion === 2
    if (v2 ? (t.format !== 'binary' && t.format !== 'text') || !Array.isArray(t.types) || t.types.length !== t.columns?.length : t.format !== undefined) {
      throw corrupt(path, `its manifest.json describes table ${JSON.stringify(t.name)} in a way format version ${manifest.formatVersion} does not`)
    }
  }
  return { manifest, json, mac }
}

/** Check the manifest's MAC under the data key (encrypted archives). */
export function checkManifestMac(path: string, key: Buffer, json: Buffer, mac: string | null): void {
  const want = Buffer.from(manifestMac(key, json))
  if (mac === null || mac.length !== want.length || !timingSafeEqual(Buffer.from(mac), want)) {
    throw corrupt(path, 'its manifest does not authenticate under the tenant\'s data key: it was changed after it was written')
  }
}

/**
 * Read every table of the archive in order, each as plain COPY text through `consume`, checking
 * each one's checksum and row count against the manifest (and its authentication tag when
 * encrypted). Any difference, a missing or extra entry or a cut-off file → `ARCHIVE_CORRUPT`.
 * Called once with a draining consumer to verify before anything is written, then to load.
 */
export async function readTables(
  path: string,
  manifest: ArchiveManifest,
  key: Buffer | null,
  consume: (table: ArchiveTable, plain: Readable) => Promise<unknown>,
  decode = true,
): Promise<void> {
  let next = 0
  await walk(path, async (name, size, stream) => {
    if (name === MANIFEST_ENTRY || name === MAC_ENTRY) {
      stream.resume()
      return 'next'
    }
    const t = manifest.tables[next]
    if (!t || t.entry !== name) {
      stream.resume()
      throw corrupt(path, `entry '${name}' is not the one its manifest lists next (${t?.entry ?? 'none'})`)
    }
    next++
    await decodeEntry(path, manifest, key, t, size, stream, consume, decode)
    return 'next'
  })
  if (next !== manifest.tables.length) throw corrupt(path, `it ends after ${next} of the ${manifest.tables.length} tables its manifest lists (truncated)`)
}

/**
 * Read the one table `manifest.tables[index]` of the archive as plain COPY text through `consume`,
 * checked like {@link readTables} does; the entries before it are skipped unread. Several can read
 * one archive at once (parallel restores).
 */
export async function readTable(
  path: string,
  manifest: ArchiveManifest,
  key: Buffer | null,
  index: number,
  consume: (table: ArchiveTable, plain: Readable) => Promise<unknown>,
): Promise<void> {
  const t = manifest.tables[index]
  let found = false
  await walk(path, async (name, size, stream) => {
    if (name !== t.entry) {
      stream.resume()
      return 'next'
    }
    found = true
    await decodeEntry(path, manifest, key, t, size, stream, consume)
    return 'stop'
  })
  if (!found) throw corrupt(path, `it has no entry '${t.entry}' for table ${t.name} (truncated)`)
}

/**
 * Check the whole archive before anything is written: its entries are exactly the manifest's, in
 * order, and every table matches its checksum — version 2: its stored bytes, read once and not
 * decoded (bytes identical to those written decode as they did); version 1: its plain text and row
 * count, decoded, with `width` > 1 that many tables at once (after one pass over the entry names).
 */
export async function verifyArchive(path: string, manifest: ArchiveManifest, key: Buffer | null, width: number, onTable?: (table: ArchiveTable) => void): Promise<void> {
  const drainTo = async (t: ArchiveTable, plain: Readable) => {
    for await (const _ of plain) { /* the counter hashes what passes */ }
    onTable?.(t)
  }
  if (manifest.formatVersion === 2) return readTables(path, manifest, key, drainTo, false)
  if (width <= 1) return readTables(path, manifest, key, drainTo)
  const names: string[] = []
  await walk(path, async (name, _size, stream) => {
    stream.resume()
    if (name !== MANIFEST_ENTRY && name !== MAC_ENTRY) names.push(name)
    return 'next'
  })
  names.forEach((name, i) => {
    if (manifest.tables[i]?.entry !== name) throw corrupt(path, `entry '${name}' is not the one its manifest lists next (${manifest.tables[i]?.entry ?? 'none'})`)
  })
  if (names.length !== manifest.tables.length) throw corrupt(path, `it ends after ${names.length} of the ${manifest.tables.length} tables its manifest lists (truncated)`)
  await mapLimited(manifest.tables, width, (_t, i) => readTable(path, manifest, key, i, drainTo))
}

/**
 * Decode one table entry (decrypt, gunzip) through `consume` and check it against the manifest:
 * version 2 by its stored bytes (and, when `consume` resolves with the rows it loaded, their
 * count), version 1 by its plain text and lines. `decode` false (version 2's verify pass) reads the
 * stored bytes as they are.
 */
async function decodeEntry(
  path: string,
  manifest: ArchiveManifest,
  key: Buffer | null,
  t: ArchiveTable,
  size: number,
  stream: Readable,
  consume: (table: ArchiveTable, plain: Readable) => Promise<unknown>,
  decode = true,
): Promise<void> {
  const stored = manifest.formatVersion === 2 ? new Counter({ highWaterMark: CHUNK, countRows: false, hash: entryHash(t.entry, t.rows) }) : null
  const stages: Transform[] = stored ? [stored] : []
  if (decode) {
    if (manifest.encryption) stages.push(new GcmOpen(key!, `${manifest.archiveId}:${t.entry}`, size))
    if (manifest.compression === 'gzip') stages.push(createGunzip({ chunkSize: CHUNK }))
  }
  const plain = stored ? null : new Counter({ highWaterMark: CHUNK })
  if (plain) stages.push(plain)
  // The consumer reads the last stage's output; both must finish.
  const flowing = (pipeline as (...s: unknown[]) => Promise<void>)(stream, ...stages)
  const consumed = consume(t, stages[stages.length - 1])
  let loaded: unknown
  try {
    [, loaded] = await Promise.all([flowing, consumed])
  } catch (err) {
    if (err instanceof TenantryError) throw err
    throw corrupt(path, `table ${t.name} (${t.entry}) does not decode: ${(err as Error).message}`, err)
  }
  const sha = (stored ?? plain!).hash.digest('hex')
  const rows = plain ? plain.rows : typeof loaded === 'number' ? loaded : t.rows
  if (sha !== t.sha256 || rows !== t.rows) {
    throw corrupt(path, `table ${t.name} does not match its manifest (${rows} rows, sha256 ${sha.slice(0, 12)}… instead of ${t.rows} rows, ${t.sha256.slice(0, 12)}…)`)
  }
}

/** Walk the tar entries of `path` in order; `fn` returns 'stop' to end early. */
async function walk(path: string, fn: (name: string, size: number, stream: Readable) => Promise<'next' | 'stop'>): Promise<void> {
  let size: number
  try {
    size = statSync(path).size
  } catch (err) {
    throw new TenantryError('NOT_FOUND', `No archive file at '${path}'.`, { cause: err })
  }
  if (size === 0) throw corrupt(path, 'the file is empty')
  const extract = tar.extract()
  const file = createReadStream(path, { highWaterMark: CHUNK })
  let fileError: unknown
  file.on('error', (err) => { fileError = err; extract.destroy(err) })
  file.pipe(extract as unknown as NodeJS.WritableStream)
  try {
    for await (const entry of extract) {
      const r = await fn(entry.header.name, entry.header.size ?? 0, entry as unknown as Readable)
      if (r === 'stop') break
    }
  } catch (err) {
    if (err instanceof TenantryError) throw err
    throw corrupt(path, `it is not a readable tar file: ${String((fileError as Error)?.message ?? (err as Error)?.message ?? err)}`, err)
  } finally {
    file.destroy()
  }
}

/** AES-256-GCM decryption of one entry (`iv ‖ ciphertext ‖ tag`, `size` bytes); fails at the end if the tag does not verify. */
class GcmOpen extends Transform {
  private decipher?: DecipherGCM
  private head = Buffer.alloc(0)
  private seen = 0
  private tag = Buffer.alloc(0)
  constructor(private readonly key: Buffer, private readonly aad: string, private readonly size: number) {
    super()
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    try {
      let buf = chunk
      if (!this.decipher) {
        this.head = Buffer.concat([this.head, buf])
        if (this.head.length < 12) { this.seen += buf.length; done(); return }
        this.decipher = createDecipheriv('aes-256-gcm', this.key, this.head.subarray(0, 12))
        this.decipher.setAAD(Buffer.from(this.aad))
        buf = this.head.subarray(12)
        this.seen = 12
      }
      const bodyEnd = this.size - 16
      const bodyPart = buf.subarray(0, Math.max(0, Math.min(buf.length, bodyEnd - this.seen)))
      this.tag = Buffer.concat([this.tag, buf.subarray(bodyPart.length)])
      this.seen += buf.length
      done(null, bodyPart.length ? this.decipher.update(bodyPart) : undefined)
    } catch (err) {
      done(err as Error)
    }
  }

  override _flush(done: TransformCallback): void {
    try {
      if (!this.decipher || this.tag.length !== 16) throw new Error('the entry is cut off')
      this.decipher.setAuthTag(this.tag)
      done(null, this.decipher.final())
    } catch (err) {
      done(new Error(`authentication failed (${(err as Error).message}): changed, cut off, or encrypted with another key`))
    }
  }
}

async function collect(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const c of stream) chunks.push(Buffer.from(c as Uint8Array))
  return Buffer.concat(chunks)
}

export function corrupt(path: string, why: string, cause?: unknown): TenantryError {
  return new TenantryError('ARCHIVE_CORRUPT', `The archive '${path}' cannot be used: ${why}. Nothing was written; restore from another backup.`, { cause, details: { path } })
}
