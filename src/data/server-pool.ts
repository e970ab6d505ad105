import { TenantryError } from '../core/errors.ts'

/** What the pool needs of a connection. */
export interface PoolableConnection {
  close(): Promise<void>
}

export interface ServerPoolOptions<C extends PoolableConnection> {
  /** Server name, for messages. */
  server: string
  /** Open a connection to `database`. */
  connect(database: string): Promise<C>
  /** The most connections open at once to this server, across all its databases. */
  budget: number
  /** How long `acquire` waits for a connection before failing with `POOL_TIMEOUT`. */
  acquireTimeoutMs: number
  /** Idle connections older than this are closed. */
  idleTimeoutMs: number
  /**
   * A connection is closed after this many uses: it bounds the catalog cache a backend builds up
   * while touching many tenant schemas (LESSONS: out of memory around 800 schemas per backend).
   */
  maxUses: number
}

interface Slot<C> {
  conn: C
  database: string
  uses: number
  idleSince: number
}

interface Waiter<C> {
  database: string
  resolve(slot: Slot<C>): void
  reject(err: unknown): void
  timer: NodeJS.Timeout
}

/**
 * Connections to one server, keyed by database, under one budget. Thousands of tenant databases
 * never mean thousands of connections: when the budget is used up, the least recently used idle
 * connection (of any database) is closed to make room, and if none is idle the caller waits in a
 * FIFO queue with a timeout.
 *
 * @example
 * ```ts
 * const pool = new ServerPool({ server: 'main', connect: openClient, budget: 20, acquireTimeoutMs: 5000, idleTimeoutMs: 30000, maxUses: 7500 })
 * const slot = await pool.acquire('tenant_db_1'); try { … } finally { pool.release(slot) }
 * ```
 */
export class ServerPool<C extends PoolableConnection> {
  private readonly opts: ServerPoolOptions<C>
  /** Idle slots by database; most recently released last. */
  private readonly idle = new Map<string, Slot<C>[]>()
  /** All idle slots in release order (least recently used first) for eviction. */
  private readonly idleOrder = new Set<Slot<C>>()
  private readonly waiters: Waiter<C>[] = []
  private open = 0
  private busy = 0
  private peakOpen = 0
  private closed = false
  private readonly sweeper: NodeJS.Timeout

  constructor(opts: ServerPoolOptions<C>) {
    if (!(opts.budget >= 1)) throw new TenantryError('CONFIG_INVALID', `Connection budget for server '${opts.server}' must be at least 1.`)
    this.opts = opts
    this.sweeper = setInterval(() => this.sweep(), Math.max(1000, Math.min(opts.idleTimeoutMs, 10_000)))
    this.sweeper.unref()
  }

  /** Take a connection to `database`, opening or evicting as the budget allows. */
  acquire(database: string): Promise<Slot<C>> {
    if (this.closed) return Promise.reject(new TenantryError('INTERNAL', `The pool of server '${this.opts.server}' is closed.`))
    const slot = this.takeIdle(database)
    if (slot) {
      this.busy++
      return Promise.resolve(slot)
    }
    if (this.open < this.opts.budget || this.evictOne()) return this.openFor(database)
    return new Promise<Slot<C>>((resolve, reject) => {
      const waiter: Waiter<C> = {
        database,
        resolve,
        reject,
        timer: setTimeout(() => {
          const i = this.waiters.indexOf(waiter)
          if (i >= 0) this.waiters.splice(i, 1)
          reject(
            new TenantryError(
              'POOL_TIMEOUT',
              `No connection to server '${this.opts.server}' within ${this.opts.acquireTimeoutMs} ms: all ${this.opts.budget} connections of its budget are busy. Retry shortly.`,
              { retryAfter: 1 },
            ),
          )
        }, this.opts.acquireTimeoutMs),
      }
      this.waiters.push(waiter)
    })
  }

  /**
   * Give a connection back. `discard` closes it instead (after an error, or when its session
   * state is not known to be clean).
   */
  release(slot: Slot<C>, discard = false): void {
    this.busy--
    slot.uses++
    if (discard || this.closed || slot.uses >= this.opts.maxUses) {
      this.destroy(slot)
      this.serveWaiter()
      return
    }
    const waiter = this.waiters[0]
    if (waiter) {
      this.waiters.shift()
      clearTimeout(waiter.timer)
      if (waiter.database === slot.database) {
        this.busy++
        waiter.resolve(slot)
      } else {
        // FIFO fairness across databases: the connection makes room for the first waiter.
        this.destroy(slot)
        this.openFor(waiter.database).then(waiter.resolve, waiter.reject)
      }
      return
    }
    slot.idleSince = Date.now()
    let list = this.idle.get(slot.database)
    if (!list) this.idle.set(slot.database, (list = []))
    list.push(slot)
    this.idleOrder.add(slot)
  }

  /** Counts for tests, metrics and benchmarks. */
  stats(): { open: number; busy: number; idle: number; waiting: number; peakOpen: number; databases: number } {
    return { open: this.open, busy: this.busy, idle: this.idleOrder.size, waiting: this.waiters.length, peakOpen: this.peakOpen, databases: this.idle.size }
  }

  /** Close idle connections to `database` (before it is dropped) and return how many were closed. */
  async closeDatabase(database: string): Promise<number> {
    const list = this.idle.get(database) ?? []
    this.idle.delete(database)
    await Promise.all(list.map((slot) => { this.idleOrder.delete(slot); return this.destroy(slot) }))
    return list.length
  }

  /** Close everything; waiters fail. */
  async close(): Promise<void> {
    this.closed = true
    clearInterval(this.sweeper)
    for (const w of this.waiters.splice(0)) {
      clearTimeout(w.timer)
      w.reject(new TenantryError('INTERNAL', `The pool of server '${this.opts.server}' was closed.`))
    }
    const slots = [...this.idleOrder]
    this.idle.clear()
    this.idleOrder.clear()
    await Promise.all(slots.map((s) => this.destroy(s)))
  }

  private takeIdle(database: string): Slot<C> | undefined {
    const list = this.idle.get(database)
    const slot = list?.pop()
    if (!slot) return undefined
    if (list!.length === 0) this.idle.delete(database)
    this.idleOrder.delete(slot)
    return slot
  }

  private evictOne(): boolean {
    const oldest = this.idleOrder.values().next().value as Slot<C> | undefined
    if (!oldest) return false
    this.idleOrder.delete(oldest)
    const list = this.idle.get(oldest.database)!
    list.splice(list.indexOf(oldest), 1)
    if (list.length === 0) this.idle.delete(oldest.database)
    this.destroy(oldest)
    return true
  }

  private async openFor(database: string): Promise<Slot<C>> {
    this.open++
    this.busy++
    if (this.open > this.peakOpen) this.peakOpen = this.open
    try {
      const conn = await this.opts.connect(database)
      return { conn, database, uses: 0, idleSince: 0 }
    } catch (err) {
      this.open--
      this.busy--
      this.serveWaiter()
      throw err
    }
  }

  private destroy(slot: Slot<C>): Promise<void> {
    this.open--
    return slot.conn.close().catch(() => undefined)
  }

  private serveWaiter(): void {
    if (this.closed) return
    while (this.waiters.length > 0 && (this.open < this.opts.budget || this.evictOne())) {
      const waiter = this.waiters.shift()!
      clearTimeout(waiter.timer)
      const slot = this.takeIdle(waiter.database)
      if (slot) {
        this.busy++
        waiter.resolve(slot)
      } else {
        this.openFor(waiter.database).then(waiter.resolve, waiter.reject)
      }
    }
  }

  private sweep(): void {
    const cutoff = Date.now() - this.opts.idleTimeoutMs
    for (const slot of this.idleOrder) {
      if (slot.idleSince > cutoff) break
      this.idleOrder.delete(slot)
      const list = this.idle.get(slot.database)!
      list.splice(list.indexOf(slot), 1)
      if (list.length === 0) this.idle.delete(slot.database)
      this.destroy(slot)
    }
  }
}

export type { Slot as PoolSlot }
