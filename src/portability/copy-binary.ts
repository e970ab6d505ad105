import { Transform, type TransformCallback } from 'node:stream'

/**
 * PostgreSQL's binary COPY format, read incrementally: an 11-byte signature, flags and a header
 * extension, then tuples (an int16 field count, each field an int32 length, -1 for NULL, and its
 * bytes), then the trailer (a field count of -1). Archives of format version 2 hold rows in it: the
 * server skips the text conversion of every value (a uuid, a timestamptz), which is most of a
 * COPY's CPU. The scanner counts the tuples and, when asked, checks and rewrites the first field
 * (`tenant_id`, 16 bytes) of each one in place, across chunk boundaries.
 */

const SIGNATURE = Buffer.from('PGCOPY\n\xff\r\n\0', 'latin1')
/** Signature, flags (int32) and the header extension's length (int32). */
const HEADER = SIGNATURE.length + 8

const enum State { Header, Extension, Count, Length, Data, Trailer }

/** Counts the tuples of a binary COPY stream; optionally swaps the first field's 16 bytes `want` for `put`. */
export class BinaryCopyScanner {
  rows = 0
  private state = State.Header
  /** Bytes still to skip (extension, field data). */
  private skip = 0
  /** A header or integer split across chunks: its bytes so far. */
  private part = Buffer.alloc(HEADER)
  private partLen = 0
  private fieldsLeft = 0
  /** Whether the field being read is the tuple's first, and how far into it we are. */
  private first = false
  private firstAt = 0

  constructor(private readonly rewrite?: { want: Buffer; put: Buffer; what: string }) {}

  /** Whether the trailer was read (a complete stream). */
  get complete(): boolean {
    return this.state === State.Trailer
  }

  /** Where {@link int} stopped in its chunk. */
  private at = 0

  /**
   * The big-endian int16 or int32 (`size`) at `i`, or its bytes carried over from the chunk
   * before; null when this chunk ends first (its bytes so far are kept). Sets {@link at}.
   */
  private int(buf: Buffer, i: number, size: 2 | 4): number | null {
    if (this.partLen === 0 && buf.length - i >= size) {
      this.at = i + size
      return size === 2 ? buf.readInt16BE(i) : buf.readInt32BE(i)
    }
    this.part[this.partLen++] = buf[i]
    this.at = i + 1
    if (this.partLen < size) return null
    this.partLen = 0
    return size === 2 ? this.part.readInt16BE(0) : this.part.readInt32BE(0)
  }

  /** Read `buf` (changed in place when rewriting); throws on a malformed stream or a foreign first field. */
  scan(buf: Buffer): void {
    let i = 0
    const n = buf.length
    while (i < n) {
      switch (this.state) {
        case State.Header: {
          const take = Math.min(HEADER - this.partLen, n - i)
          buf.copy(this.part, this.partLen, i, i + take)
          this.partLen += take
          i += take
          if (this.partLen < HEADER) return
          if (this.part.compare(SIGNATURE, 0, SIGNATURE.length, 0, SIGNATURE.length) !== 0) throw new Error('not PostgreSQL binary COPY data (no PGCOPY signature)')
          this.skip = this.part.readInt32BE(HEADER - 4)
          if (this.skip < 0) throw new Error('binary COPY data with a negative header extension length')
          this.partLen = 0
          this.state = State.Extension
          break
        }
        case State.Extension:
        case State.Data: {
          const take = Math.min(this.skip, n - i)
          if (this.first && this.rewrite && take > 0) {
            const { want, put } = this.rewrite
            if (buf.compare(want, this.firstAt, this.firstAt + take, i, i + take) !== 0) throw new Error(`a row does not belong to ${this.rewrite.what}`)
            put.copy(buf, i, this.firstAt, this.firstAt + take)
            this.firstAt += take
          }
          i += take
          this.skip -= take
          if (this.skip > 0) return
          this.first = false
          this.state = this.state === State.Extension || this.fieldsLeft === 0 ? State.Count : State.Length
          break
        }
        case State.Count: {
          const count = this.int(buf, i, 2)
          i = this.at
          if (count === null) continue
          if (count === -1) {
            this.state = State.Trailer
            break
          }
          if (count < 0) throw new Error(`binary COPY data with a tuple of ${count} fields`)
          this.rows++
          this.fieldsLeft = count
          if (this.rewrite && count === 0) throw new Error(`a row without fields, so not of ${this.rewrite.what}`)
          this.first = true
          this.firstAt = 0
          if (count > 0) this.state = State.Length
          break
        }
        case State.Length: {
          const len = this.int(buf, i, 4)
          i = this.at
          if (len === null) continue
          this.fieldsLeft--
          if (this.first && this.rewrite && len !== this.rewrite.want.length) throw new Error(`a row does not belong to ${this.rewrite.what} (its first field is ${len < 0 ? 'NULL' : `${len} bytes`})`)
          if (len < -1) throw new Error(`binary COPY data with a field of length ${len}`)
          if (len <= 0) {
            this.first = false
            this.state = this.fieldsLeft === 0 ? State.Count : State.Length
          } else {
            this.skip = len
            this.state = State.Data
          }
          break
        }
        case State.Trailer:
          throw new Error('binary COPY data goes on after its trailer')
      }
    }
  }
}

/** A uuid's 16 bytes. */
export function uuidBytes(id: string): Buffer {
  const hex = id.replace(/-/g, '')
  if (!/^[0-9a-fA-F]{32}$/.test(hex)) throw new Error('tenant ids must be uuids')
  return Buffer.from(hex, 'hex')
}

/**
 * Rewrite the first field (`tenant_id`) of every tuple of a binary COPY stream from `from` to `to`,
 * in place. A tuple whose first field is not `from` fails the stream, as does a stream cut off
 * before its trailer: rows of another tenant never pass through a rewrite unnoticed.
 */
export function rewriteTenantIdBinary(from: string, to: string): Transform {
  const scanner = new BinaryCopyScanner({ want: uuidBytes(from), put: uuidBytes(to), what: `tenant ${from}` })
  return new Transform({
    transform(chunk: Buffer, _enc, done: TransformCallback) {
      const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk)
      try {
        scanner.scan(buf)
      } catch (err) {
        done(err as Error)
        return
      }
      done(null, buf)
    },
    flush(done: TransformCallback) {
      done(scanner.complete ? null : new Error('binary COPY data cut off before its trailer'))
    },
  })
}
