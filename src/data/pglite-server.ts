import { mkdirSync, existsSync, readFileSync, writeFileSync, rmSync, openSync, closeSync, cpSync, renameSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { AsyncLocalStorage } from 'node:async_hooks'
import type { Readable, Writable } from 'node:stream'
import { PGlite, types } from '@electric-sql/pglite'
import { TenantryError, fromPostgresError } from '../core/errors.ts'
import type { Queryable, QueryResult } from './executor.ts'
import { enterStatement, type AdminQueryable, type CopyMode, type CopyTransaction, type CopyTransactionOptions, type ServerDriver, type SessionTarget, type TenantBudget } from './driver.ts'
import { copyFormatOptions, type CopyDataFormat } from './sql.ts'

export interface PgliteServerOptions {
  name: string
  /** A directory, or `memory` for an in-memory fleet (tests). */
  dataDir: string
  mainDatabase: string
  /** Most PGlite instances open at once (each costs 200–300 MB); idle ones beyond it are closed. */
  maxOpen?: number
}

interface Instance {
  db: Promise<PGlite>
  refs: number
  lastUsed: number
}

// node-postgres returns int8 and numeric as strings; PGlite must agree so that app code is the same
// on both drivers.
// The databases whose instance the current async context holds in a transaction. PGlite runs one
// statement at a time, so a second statement on that instance from inside the transaction (not
// through its `tx`) would wait for the transaction forever.
const holding = new AsyncLocalStorage<ReadonlySet<string>>()

const PARSERS = { [types.INT8]: (v: string) => v, [types.NUMERIC]: (v: string) => v }

function toResult<R>(res: { rows: unknown[]; affectedRows?: number }): QueryResult<R> {
  return { rows: res.rows as R[], rowCount: res.affectedRows || res.rows.length }
}

/**
 * The embedded engine: PostgreSQL compiled to WebAssembly. PGlite has one database per instance,
 * so each database of this "server" is its own instance (the main one in `<dataDir>/main`, a
 * database-tier tenant's in `<dataDir>/databases/<name>`). Each instance runs one statement at a
 * time; a tenant statement holds the instance for its whole transaction.
 *
 * PGlite's session is a superuser: every tenant transaction switches to a non-owner role with
 * `set_config('role', …, true)`, and tenant handles refuse statements that would switch back.
 *
 * @example
 * ```ts
 * const server = new PgliteServer({ name: 'main', dataDir: '.tenantry', mainDatabase: 'main' })
 * ```
 */
export class PgliteServer implements ServerDriver {
  readonly kind = 'pglite' as const
  readonly server: string
  private readonly opts: PgliteServerOptions
  private readonly instances = new Map<string, Instance>()
  private readonly memory: boolean
  private readonly lockFile?: string
  private busy = 0
  private peakOpen = 0

  constructor(opts: PgliteServerOptions) {
    this.opts = opts
    this.server = opts.name
    this.memory = opts.dataDir === 'memory'
    if (!this.memory) {
      const dir = resolve(opts.dataDir)
      mkdirSync(join(dir, 'databases'), { recursive: true })
      this.lockFile = join(dir, 'tenantry.pid')
      acquireDirLock(this.lockFile, dir)
    }
  }

  async tenantQuery<R>(target: SessionTarget, text: string, values: unknown[], budget?: TenantBudget): Promise<QueryResult<R>> {
    try {
      return await this.use(target.database, (db) =>
        db.transaction(async (tx) => {
          const enter = enterStatement(target, budget)
          await tx.query(enter.text, enter.values)
          return toResult<R>(await tx.query(text, values))
        }),
      )
    } catch (err) {
      throw fromPostgresError(err)
    }
  }

  async tenantTransaction<T>(target: SessionTarget, fn: (tx: Queryable) => Promise<T>, budget?: TenantBudget): Promise<T> {
    return this.use(target.database, (db) =>
      db.transaction(async (tx) => {
        const enter = enterStatement(target, budget)
        await tx.query(enter.text, enter.values)
        return fn({ query: async <R>(text: string, values: unknown[] = []) => toResult<R>(await tx.query(text, values)) })
      }),
    )
  }

  admin(database: string): AdminQueryable {
    return {
      query: <R>(text: string, values?: unknown[]) => this.use(database, async (db) => toResult<R>(await db.query(text, values ?? []))),
      exec: (sql) => this.use(database, async (db) => { await db.exec(sql) }),
      transaction: (fn) =>
        this.use(database, (db) =>
          db.transaction((tx) =>
            fn({
              query: async <R>(text: string, values?: unknown[]) => toResult<R>(await tx.query(text, values ?? [])),
              exec: async (sql: string) => { await tx.exec(sql) },
            }),
          ),
        ),
    }
  }

  /**
   * PGlite has no COPY protocol stream: its COPY reads and writes the virtual file `/dev/blob`,
   * so a table's rows pass through memory whole (the embedded default holds small tenants; a
   * server tenant streams). One instance runs one transaction at a time, so any transaction is a
   * consistent snapshot; `snapshot` still asks for REPEATABLE READ READ ONLY.
   */
  async copyTransaction<T>(database: string, mode: CopyMode, fn: (tx: CopyTransaction) => Promise<T>, opts: CopyTransactionOptions = {}): Promise<T> {
    // One connection per instance: there is no second transaction to import a snapshot into.
    if (opts.snapshot !== undefined) throw new TenantryError('VALIDATION_FAILED', 'PGlite runs one transaction at a time: it cannot import a snapshot; copy the tables one after another.')
    return this.use(database, (db) =>
      db.transaction(async (tx) => {
        if (mode === 'snapshot') await tx.query('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY')
        return fn({
          query: async <R>(text: string, values?: unknown[]) => toResult<R>(await tx.query(text, values ?? [])),
          exec: async (sql: string) => { await tx.exec(sql) },
          copyOut: async (source: string, sink: Writable, format?: CopyDataFormat) => {
            const res = await tx.query(`COPY ${source} TO '/dev/blob'${copyFormatOptions(format)}`)
            const bytes = res.blob ? Buffer.from(await res.blob.arrayBuffer()) : Buffer.alloc(0)
            await new Promise<void>((resolve, reject) => {
              sink.once('error', reject)
              sink.end(bytes, () => resolve())
            })
            return res.affectedRows ?? 0
          },
          copyIn: async (target: string, source: Readable, format?: CopyDataFormat) => {
            const chunks: Buffer[] = []
            for await (const c of source) chunks.push(Buffer.isBuffer(c) ? c : Buffer.from(c as Uint8Array))
            const res = await tx.query(`COPY ${target} FROM '/dev/blob'${copyFormatOptions(format)}`, [], { blob: new Blob(chunks as Uint8Array<ArrayBuffer>[]) })
            return res.affectedRows ?? 0
          },
        })
      }),
    )
  }

  async databaseExists(name: string): Promise<boolean> {
    if (this.instances.has(name)) return true
    return !this.memory && existsSync(join(this.dirOf(name), 'PG_VERSION'))
  }

  async createDatabase(name: string): Promise<void> {
    if (await this.databaseExists(name)) {
      throw new TenantryError('CONFLICT', `Database '${name}' already exists on server '${this.server}'.`)
    }
    await this.use(name, async () => undefined)
  }

  async dropDatabase(name: string): Promise<void> {
    const inst = this.instances.get(name)
    if (inst) {
      this.instances.delete(name)
      await (await inst.db).close().catch(() => undefined)
    }
    if (!this.memory) rmSync(this.dirOf(name), { recursive: true, force: true })
  }

  get canClone(): boolean {
    return !this.memory
  }

  /**
   * Copy the template's data directory. The template instance is closed first (a clean shutdown,
   * so the files are complete); the copy goes to a hidden directory renamed into place, so a
   * process killed mid-copy leaves no directory that {@link databaseExists} would take for a
   * database, and the next attempt removes the leftover.
   */
  async cloneDatabase(template: string, name: string): Promise<boolean> {
    if (this.memory) return false
    const inst = this.instances.get(template)
    if (inst) {
      if (inst.refs > 0) throw new TenantryError('CONFLICT', `The template database '${template}' is in use; it cannot be copied now.`)
      this.instances.delete(template)
      await (await inst.db).close()
    }
    const from = this.dirOf(template)
    if (!existsSync(join(from, 'PG_VERSION'))) return false
    if (await this.databaseExists(name)) throw new TenantryError('CONFLICT', `Database '${name}' already exists on server '${this.server}'.`)
    const to = this.dirOf(name)
    const tmp = join(dirname(to), `.${name}.clone`)
    rmSync(tmp, { recursive: true, force: true })
    // A directory without PG_VERSION is an initdb that was killed, not a database.
    rmSync(to, { recursive: true, force: true })
    // Synchronous on purpose: PGlite blocks the event loop for every statement anyway, and the
    // synchronous copy measured ~2.5x faster than fs.promises.cp here.
    cpSync(from, tmp, { recursive: true })
    renameSync(tmp, to)
    return true
  }

  async releaseDatabase(database: string): Promise<void> {
    const inst = this.instances.get(database)
    if (!inst || inst.refs > 0 || database === this.opts.mainDatabase) return
    this.instances.delete(database)
    await (await inst.db).close().catch(() => undefined)
  }

  // One statement at a time per instance: more owner "connections" would only queue.
  readonly adminPoolSize = 1

  async listen(channel: string, onMessage: (payload: string) => void): Promise<() => Promise<void>> {
    const db = await this.open(this.opts.mainDatabase).db
    const unlisten = await db.listen(channel, onMessage)
    return async () => { await unlisten().catch(() => undefined) }
  }

  stats() {
    return { open: this.instances.size, busy: this.busy, idle: this.instances.size - this.busy, waiting: 0, peakOpen: this.peakOpen }
  }

  async close(): Promise<void> {
    const all = [...this.instances.values()]
    this.instances.clear()
    await Promise.all(all.map(async (i) => (await i.db.catch(() => null))?.close().catch(() => undefined)))
    if (this.lockFile) rmSync(this.lockFile, { force: true })
  }

  private dirOf(database: string): string {
    const root = resolve(this.opts.dataDir)
    return database === this.opts.mainDatabase ? join(root, 'main') : join(root, 'databases', database)
  }

  private open(database: string): Instance {
    let inst = this.instances.get(database)
    if (!inst) {
      const db = PGlite.create(this.memory ? undefined : this.dirOf(database), { parsers: PARSERS })
      inst = { db, refs: 0, lastUsed: Date.now() }
      this.instances.set(database, inst)
      db.catch(() => this.instances.delete(database))
      if (this.instances.size > this.peakOpen) this.peakOpen = this.instances.size
      this.evictIdle()
    }
    return inst
  }

  private async use<T>(database: string, fn: (db: PGlite) => Promise<T>): Promise<T> {
    const held = holding.getStore()
    if (held?.has(database)) {
      throw new TenantryError(
        'STATEMENT_FORBIDDEN',
        'A statement was sent outside the open transaction of the same embedded database, which runs one statement at a time and would wait forever. Inside transaction(), use the `tx` it gives you.',
      )
    }
    const inst = this.open(database)
    inst.refs++
    this.busy++
    try {
      const db = await inst.db
      return await holding.run(new Set([...(held ?? []), database]), () => fn(db))
    } finally {
      inst.refs--
      this.busy--
      inst.lastUsed = Date.now()
    }
  }

  private evictIdle(): void {
    const max = this.opts.maxOpen ?? 16
    if (this.memory || this.instances.size <= max) return
    const idle = [...this.instances.entries()]
      .filter(([name, i]) => i.refs === 0 && name !== this.opts.mainDatabase)
      .sort((a, b) => a[1].lastUsed - b[1].lastUsed)
    for (const [name, inst] of idle.slice(0, this.instances.size - max)) {
      this.instances.delete(name)
      inst.db.then((db) => db.close()).catch(() => undefined)
    }
  }
}

/** One process per data directory: PGlite would corrupt a directory two processes write to. */
function acquireDirLock(lockFile: string, dir: string): void {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(lockFile, 'wx')
      writeFileSync(fd, String(process.pid))
      closeSync(fd)
      return
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      const pid = Number(readFileSync(lockFile, 'utf8').trim())
      if (pid && pid !== process.pid && isAlive(pid)) {
        throw new TenantryError(
          'DATA_DIR_LOCKED',
          `The data directory '${dir}' is in use by process ${pid} (probably a running 'npm start'). Stop it first, or set TENANTRY_DATA_DIR to another directory, or use DATABASE_URL.`,
          { details: { pid, dir } },
        )
      }
      // A stale lock from a process that died: take it over.
      rmSync(lockFile, { force: true })
    }
  }
  throw new TenantryError('DATA_DIR_LOCKED', `Could not lock the data directory '${dir}'.`)
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}
