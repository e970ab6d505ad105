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
  /**
   * A statement for a database whose own connections are all busy waits this long for one of them
   * before a connection of another database is closed to make room (default 25 ms). A new
   * connection costs a backend start, far more than a statement; without the wait, a few busy
   * databases took connections from one another over and over.
   */
  switchGraceMs?: number
}

/**
 * A tenant's share of the server (from its plan, via the guard). Without one, an acquire is
 * served in plain FIFO order and counts toward no tenant.
 */
export interface PoolShare {
  /** Key of the tenant (its id). */
  tenant: string
  /** Fair-share weight (> 0). */
  weight: number
  /** Fraction of the budget the tenant may hold at once (0 < share ≤ 1); at least one connection. */
  connectionShare: number
  /** Most waiters of this tenant at once; one more fails at once with `TENANT_BUSY`. */
  maxWaiting: number
  /** Longest wait (capped by `acquireTimeoutMs`). */
  waitTimeoutMs: number
}

interface Slot<C> {
  conn: C
  database: string
  uses: number
  idleSince: number
  /** The tenant the slot is lent to, while it is busy. */
  holder?: string
}

/** Called once, with the slot or the reason there is none. */
export type AcquireCallback<C> = (err: unknown, slot?: Slot<C>) => void

interface Waiter<C> {
  database: string
  done: AcquireCallback<C>
  share?: PoolShare
  /** The use of the waiter's tenant (kept while the tenant waits: `forget` leaves it in place). */
  use?: TenantUse
  /** When the wait fails (`POOL_TIMEOUT` or `TENANT_BUSY`). */
  deadline: number
  waitMs: number
  /** Until then, the waiter waits for a connection of its own database (see `switchGraceMs`); 0 when it may take any. */
  graceUntil: number
}

interface TenantUse {
  held: number
  waiting: number
  weight: number
  cap: number
}

/**
 * Connections to one server, keyed by database, under one budget. Thousands of tenant databases
 * never mean thousands of connections: when the budget is used up, the least recently used idle
 * connection (of any database) is closed to make room, and if none is idle the caller waits in a
 * FIFO queue with a timeout.
 *
 * With a {@link PoolShare} (issue 4, noisy neighbours) the queue is fair instead: a tenant holds
 * at most its share of the budget (beyond it, it waits even while connections are free), and a
 * freed connection goes to the waiter whose tenant holds the least per unit of weight, FIFO among
 * equals. So tenants over their fair share wait first, and a quiet tenant (holding none) is
 * always next in line.
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
  /** Per-tenant use, for tenants with a share that hold or wait for a connection. */
  private readonly tenants = new Map<string, TenantUse>()
  private open = 0
  private busy = 0
  /** Busy connections per database. */
  private readonly busyByDb = new Map<string, number>()
  private readonly switchGraceMs: number
  private peakOpen = 0
  private closed = false
  private readonly sweeper: NodeJS.Timeout
  // One timer for every waiter's deadline and grace, armed for the earliest: a timer per waiter
  // (two with a grace) cost more than the rest of an acquire under load.
  private wake: NodeJS.Timeout | undefined
  private wakeAt = Infinity

  constructor(opts: ServerPoolOptions<C>) {
    if (!(opts.budget >= 1)) throw new TenantryError('CONFIG_INVALID', `Connection budget for server '${opts.server}' must be at least 1.`)
    this.opts = opts
    this.switchGraceMs = opts.switchGraceMs ?? 25
    this.sweeper = setInterval(() => this.sweep(), Math.max(1000, Math.min(opts.idleTimeoutMs, 10_000)))
    this.sweeper.unref()
  }

  /**
   * Take a connection to `database`, opening or evicting as the budget allows. With `share`, the
   * connection counts toward that tenant, which waits while it holds its whole share.
   */
  acquire(database: string, share?: PoolShare): Promise<Slot<C>> {
    return new Promise((resolve, reject) => this.acquireThen(database, share, (err, slot) => (slot ? resolve(slot) : reject(err))))
  }

  /**
   * {@link acquire} with a callback, called synchronously when a connection is idle: the data
   * plane's statement path, where every promise counts (each costs more while AsyncLocalStorage is
   * active).
   */
  acquireThen(database: string, share: PoolShare | undefined, done: AcquireCallback<C>): void {
    if (this.closed) return done(new TenantryError('INTERNAL', `The pool of server '${this.opts.server}' is closed.`))
    const use = share ? this.useOf(share) : undefined
    // Connections of this database are busy: one will be free within a statement's time, which
    // is cheaper than closing another database's connection to open a new one.
    const ownBusy = (this.busyByDb.get(database) ?? 0) > 0
    if (!use || use.held < use.cap) {
      const slot = this.takeIdle(database)
      if (slot) {
        this.lend(slot, share)
        return done(undefined, slot)
      }
      if (this.open < this.opts.budget || (!ownBusy && this.evictOne())) return this.openFor(database, share, done)
    }
    if (share && use!.waiting >= share.maxWaiting) {
      this.forget(share.tenant)
      return done(this.busyError(share, use!, 'its queue for a connection is full'))
    }
    const waitMs = share ? Math.min(this.opts.acquireTimeoutMs, share.waitTimeoutMs) : this.opts.acquireTimeoutMs
    const now = Date.now()
    const waiter: Waiter<C> = { database, done, share, use, deadline: now + waitMs, waitMs, graceUntil: ownBusy ? now + this.switchGraceMs : 0 }
    if (use) use.waiting++
    this.waiters.push(waiter)
    this.arm(waiter.graceUntil > 0 ? waiter.graceUntil : waiter.deadline)
  }

  /**
   * Give a connection back. `discard` closes it instead (after an error, or when its session
   * state is not known to be clean).
   */
  release(slot: Slot<C>, discard = false): void {
    this.returned(slot)
    slot.uses++
    if (discard || this.closed || slot.uses >= this.opts.maxUses) {
      this.destroy(slot)
      this.serveWaiter()
      return
    }
    // The fairest waiter; but while that one waits for a connection of its own (other) database
    // within its grace, a waiter for this connection's database goes first. A waiter of another
    // database gets the connection closed and a new one opened.
    let i = this.nextWaiter()
    if (i >= 0 && this.waiters[i].database !== slot.database && !this.mayTakeOther(this.waiters[i])) {
      i = this.nextWaiter((w) => w.database === slot.database)
      if (i < 0) i = this.nextWaiter((w) => this.mayTakeOther(w))
    }
    if (i >= 0) {
      const waiter = this.takeWaiter(i)
      if (waiter.database === slot.database) {
        this.lend(slot, waiter.share)
        waiter.done(undefined, slot)
      } else {
        this.destroy(slot)
        this.openFor(waiter.database, waiter.share, waiter.done)
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

  /** Connections held and statements waiting, per tenant with a share (for tests, metrics and benchmarks). */
  tenantStats(): Record<string, { held: number; waiting: number; cap: number }> {
    return Object.fromEntries([...this.tenants].map(([t, u]) => [t, { held: u.held, waiting: u.waiting, cap: u.cap }]))
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
    this.tenants.clear()
    this.disarm()
    for (const w of this.waiters.splice(0)) {
      w.done(new TenantryError('INTERNAL', `The pool of server '${this.opts.server}' was closed.`))
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

  private openFor(database: string, share: PoolShare | undefined, done: AcquireCallback<C>): void {
    this.open++
    if (this.open > this.peakOpen) this.peakOpen = this.open
    // Counted from now, so that concurrent acquires of the tenant see the connection being opened.
    const slot: Slot<C> = { conn: undefined as unknown as C, database, uses: 0, idleSince: 0 }
    this.lend(slot, share)
    let connecting: Promise<C>
    try {
      connecting = this.opts.connect(database)
    } catch (err) {
      connecting = Promise.reject(err)
    }
    connecting.then(
      (conn) => {
        slot.conn = conn
        done(undefined, slot)
      },
      (err: unknown) => {
        this.open--
        this.returned(slot)
        this.serveWaiter()
        done(err)
      },
    )
  }

  private destroy(slot: Slot<C>): Promise<void> {
    this.open--
    return slot.conn.close().catch(() => undefined)
  }

  private serveWaiter(): void {
    if (this.closed) return
    for (;;) {
      const i = this.nextWaiter((w) => this.idle.has(w.database) || this.mayTakeOther(w))
      if (i < 0) return
      const waiter = this.waiters[i]
      const slot = this.takeIdle(waiter.database)
      if (!slot && !(this.open < this.opts.budget || this.evictOne())) return
      this.takeWaiter(i)
      if (slot) {
        this.lend(slot, waiter.share)
        waiter.done(undefined, slot)
      } else {
        this.openFor(waiter.database, waiter.share, waiter.done)
      }
    }
  }

  /** A waiter may be served by closing another database's connection: its grace is over, or its database has no busy connection to wait for. */
  private mayTakeOther(waiter: Waiter<C>): boolean {
    return waiter.graceUntil === 0 || Date.now() >= waiter.graceUntil || (this.busyByDb.get(waiter.database) ?? 0) === 0
  }

  /**
   * The waiter a free connection goes to: among waiters whose tenant is below its share, the one
   * whose tenant holds the least per unit of weight; the first in line among equals. Waiters
   * without a share count as holding nothing. -1 when no waiter may take one. Only waiters that
   * pass `eligible` are considered.
   */
  private nextWaiter(eligible?: (w: Waiter<C>) => boolean): number {
    let best = -1
    let bestLoad = Infinity
    let bestUse: TenantUse | undefined
    for (let i = 0; i < this.waiters.length; i++) {
      const w = this.waiters[i]
      // A later waiter of the tenant already chosen holds as much: it cannot go first. Under load
      // the queue is mostly one tenant's, and this keeps a release from weighing each of them.
      if (best >= 0 && w.use !== undefined && w.use === bestUse) continue
      if (eligible && !eligible(w)) continue
      const use = w.use
      let load = 0
      if (use) {
        if (use.held >= use.cap) continue
        load = use.held / use.weight
      }
      if (load < bestLoad) {
        best = i
        bestLoad = load
        bestUse = use
        if (load === 0) break
      }
    }
    return best
  }

  /** The slot goes out to a statement (of the tenant of `share`, if any). */
  private lend(slot: Slot<C>, share: PoolShare | undefined): void {
    this.busy++
    this.busyByDb.set(slot.database, (this.busyByDb.get(slot.database) ?? 0) + 1)
    this.hold(slot, share)
  }

  /** The slot is back from its statement. */
  private returned(slot: Slot<C>): void {
    this.busy--
    const n = (this.busyByDb.get(slot.database) ?? 1) - 1
    if (n > 0) this.busyByDb.set(slot.database, n)
    else this.busyByDb.delete(slot.database)
    this.unhold(slot)
  }

  private takeWaiter(i: number): Waiter<C> {
    const waiter = i === 0 ? this.waiters.shift()! : this.waiters.splice(i, 1)[0]
    if (this.waiters.length === 0) this.disarm()
    if (waiter.use) waiter.use.waiting--
    return waiter
  }

  /** Make sure the wake-up timer fires by `at`. */
  private arm(at: number): void {
    if (at >= this.wakeAt) return
    if (this.wake) clearTimeout(this.wake)
    this.wakeAt = at
    this.wake = setTimeout(() => this.onWake(), Math.max(0, at - Date.now()))
  }

  private disarm(): void {
    if (this.wake) clearTimeout(this.wake)
    this.wake = undefined
    this.wakeAt = Infinity
  }

  /** Fail the waiters whose deadline passed, serve those whose grace ended, and re-arm for the next. */
  private onWake(): void {
    this.wake = undefined
    this.wakeAt = Infinity
    const now = Date.now()
    for (let i = 0; i < this.waiters.length; ) {
      const w = this.waiters[i]
      if (w.deadline > now) { i++; continue }
      this.takeWaiter(i)
      w.done(this.timeoutError(w))
    }
    this.serveWaiter()
    let next = Infinity
    for (const w of this.waiters) {
      const at = w.graceUntil > now ? Math.min(w.graceUntil, w.deadline) : w.deadline
      if (at < next) next = at
    }
    if (next < Infinity) this.arm(Math.max(next, now + 1))
  }

  /** The error of a waiter whose wait ran out (already taken from the queue). */
  private timeoutError(w: Waiter<C>): TenantryError {
    const share = w.share
    const use = w.use
    if (share && use) {
      // takeWaiter() counted the wait off but does not forget the tenant.
      // Over its share (or its fair share of a saturated pool): this tenant's own load.
      const own = use.held >= use.cap || use.held > this.fairShare(use)
      this.forget(share.tenant)
      if (own) return this.busyError(share, use, `no connection was free for it within ${w.waitMs} ms`)
    }
    return new TenantryError(
      'POOL_TIMEOUT',
      `No connection to server '${this.opts.server}' within ${w.waitMs} ms: all ${this.opts.budget} connections of its budget are busy. Retry shortly.`,
      { retryAfter: 1 },
    )
  }

  private useOf(share: PoolShare): TenantUse {
    const weight = share.weight > 0 ? share.weight : 1
    const cap = Math.max(1, Math.floor(Math.min(1, Math.max(0, share.connectionShare)) * this.opts.budget))
    let use = this.tenants.get(share.tenant)
    if (!use) this.tenants.set(share.tenant, (use = { held: 0, waiting: 0, weight, cap }))
    // The plan may have changed since the tenant's last statement.
    use.weight = weight
    use.cap = cap
    return use
  }

  /** The tenant's fair share of the budget: its weight over the weight of every tenant in play. */
  private fairShare(use: TenantUse): number {
    let total = 0
    for (const u of this.tenants.values()) total += u.weight
    return (this.opts.budget * use.weight) / total
  }

  private hold(slot: Slot<C>, share: PoolShare | undefined): void {
    if (!share) return
    slot.holder = share.tenant
    this.useOf(share).held++
  }

  private unhold(slot: Slot<C>): void {
    const tenant = slot.holder
    if (tenant === undefined) return
    slot.holder = undefined
    const use = this.tenants.get(tenant)
    if (!use) return
    use.held--
    this.forget(tenant)
  }

  /** Drop a tenant's entry once it neither holds nor waits. */
  private forget(tenant: string): void {
    const use = this.tenants.get(tenant)
    if (use && use.held <= 0 && use.waiting <= 0) this.tenants.delete(tenant)
  }

  private busyError(share: PoolShare, use: TenantUse, why: string): TenantryError {
    return new TenantryError(
      'TENANT_BUSY',
      `This tenant already holds ${use.held} of its ${use.cap} connections to server '${this.opts.server}' and ${why}. Retry shortly, or move it to a plan with a larger share.`,
      { retryAfter: 1, details: { layer: 'connections', server: this.opts.server, held: use.held, cap: use.cap } },
    )
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
