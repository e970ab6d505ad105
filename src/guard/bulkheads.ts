/** Why a request got no in-flight slot. */
export type BulkheadRefusal = { reason: 'queue-full' | 'timeout'; active: number; queued: number }

interface Compartment {
  active: number
  /** The tenant's limit as of its latest request (a plan may change). */
  limit: number
  queue: { grant(): void; timer: NodeJS.Timeout }[]
}

/**
 * Per-tenant bulkheads: at most `limit` requests of a tenant in flight in this process, up to
 * `queue` more waiting (first in, first out) for at most `timeoutMs`. A compartment exists only
 * while its tenant has requests in flight or waiting.
 *
 * @example
 * ```ts
 * const release = await bulkheads.enter(tenant.id, 4, 8, 2000) // rejects with a BulkheadRefusal
 * try { … } finally { release() }
 * ```
 */
export class Bulkheads {
  private readonly compartments = new Map<string, Compartment>()

  /** Resolves with an idempotent release function; rejects with a {@link BulkheadRefusal}. */
  enter(key: string, limit: number, queue: number, timeoutMs: number): Promise<() => void> {
    let c = this.compartments.get(key)
    if (!c) this.compartments.set(key, (c = { active: 0, limit, queue: [] }))
    const comp = c
    comp.limit = limit
    if (comp.active < limit && comp.queue.length === 0) {
      comp.active++
      return Promise.resolve(this.releaser(key, comp))
    }
    if (comp.queue.length >= queue) {
      return Promise.reject({ reason: 'queue-full', active: comp.active, queued: comp.queue.length } satisfies BulkheadRefusal)
    }
    return new Promise((resolve, reject) => {
      const entry = {
        grant: () => {
          clearTimeout(entry.timer)
          comp.active++
          resolve(this.releaser(key, comp))
        },
        timer: setTimeout(() => {
          const i = comp.queue.indexOf(entry)
          if (i >= 0) comp.queue.splice(i, 1)
          reject({ reason: 'timeout', active: comp.active, queued: comp.queue.length } satisfies BulkheadRefusal)
          this.forget(key, comp)
        }, timeoutMs),
      }
      comp.queue.push(entry)
    })
  }

  /** In-flight and queued requests per tenant key. */
  stats(): Record<string, { active: number; queued: number }> {
    return Object.fromEntries([...this.compartments].map(([k, c]) => [k, { active: c.active, queued: c.queue.length }]))
  }

  private releaser(key: string, comp: Compartment): () => void {
    let done = false
    return () => {
      if (done) return
      done = true
      comp.active--
      while (comp.queue.length > 0 && comp.active < comp.limit) comp.queue.shift()!.grant()
      this.forget(key, comp)
    }
  }

  private forget(key: string, comp: Compartment): void {
    if (comp.active === 0 && comp.queue.length === 0 && this.compartments.get(key) === comp) this.compartments.delete(key)
  }
}
