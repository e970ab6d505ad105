import { randomUUID } from 'node:crypto'

/** A seeded PRNG (mulberry32): the same seed gives the same plan of attempts, so a leak can be replayed. */
export class Random {
  private a: number

  constructor(seed: number) {
    this.a = seed >>> 0
  }

  /** A float in [0, 1). */
  next(): number {
    this.a = (this.a + 0x6d2b79f5) >>> 0
    let t = this.a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }

  /** An integer in [min, max]. */
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1))
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error('pick() from an empty list')
    return items[Math.floor(this.next() * items.length)]
  }

  /** Two different items (the list must hold at least two). */
  pair<T>(items: readonly T[]): [T, T] {
    const i = Math.floor(this.next() * items.length)
    let j = Math.floor(this.next() * (items.length - 1))
    if (j >= i) j++
    return [items[i], items[j]]
  }

  chance(p: number): boolean {
    return this.next() < p
  }

  hex(bytes: number): string {
    let s = ''
    for (let i = 0; i < bytes; i++) s += this.int(0, 255).toString(16).padStart(2, '0')
    return s
  }

  /** A uuid from the seeded stream (v4 layout). */
  uuid(): string {
    const h = this.hex(16)
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-${((parseInt(h[16], 16) & 3) | 8).toString(16)}${h.slice(17, 20)}-${h.slice(20, 32)}`
  }
}

/** A seed when none is given. */
export function randomSeed(): number {
  return parseInt(randomUUID().slice(0, 8), 16)
}
