import { TenantryError } from '../core/errors.ts'
import { printable } from '../core/validation.ts'

/** A JSON value as configuration holds it. */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue }
export type JsonObject = { [key: string]: JsonValue }

export function isPlainObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

/**
 * Layer configuration objects, later layers winning: objects merge key by key, arrays and
 * scalars (and `null`) replace. Returns a new object; the layers are not changed.
 *
 * @example
 * ```ts
 * layer({ a: { x: 1, y: 2 }, list: [1] }, { a: { y: 3 }, list: [2] }) // { a: { x: 1, y: 3 }, list: [2] }
 * ```
 */
export function layer(...layers: (Record<string, unknown> | undefined | null)[]): JsonObject {
  let out: JsonObject = {}
  for (const l of layers) if (isPlainObject(l)) out = mergeInto(out, l as JsonObject)
  return out
}

function mergeInto(base: JsonObject, over: JsonObject): JsonObject {
  const out: JsonObject = { ...base }
  for (const [k, v] of Object.entries(over)) {
    if (v === undefined) continue
    const b = out[k]
    out[k] = isPlainObject(v) && isPlainObject(b) ? mergeInto(b, v) : clone(v)
  }
  return out
}

function clone<T extends JsonValue>(v: T): T {
  return (typeof v === 'object' && v !== null ? structuredClone(v) : v)
}

const FORBIDDEN = new Set(['__proto__', 'constructor', 'prototype'])

/**
 * The segments of a configuration path: a JSON pointer (`/branding/primaryColor`, RFC 6901
 * escapes `~0` `~1`) or dots (`branding.primaryColor`). The empty pointer `''` or `/` is the root.
 */
export function parsePath(path: string): string[] {
  if (typeof path !== 'string') throw badPath(String(path), 'must be a string')
  if (path === '' || path === '/') return []
  const segments = path.startsWith('/')
    ? path.slice(1).split('/').map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'))
    : path.split('.')
  for (const s of segments) {
    if (s === '') throw badPath(path, 'has an empty segment')
    if (FORBIDDEN.has(s)) throw badPath(path, `may not name '${s}'`)
    if (s.length > 200) throw badPath(path, 'has a segment longer than 200 characters')
  }
  return segments
}

/** The JSON pointer of path segments. */
export function toPointer(segments: readonly (string | number)[]): string {
  return segments.map((s) => `/${String(s).replace(/~/g, '~0').replace(/\//g, '~1')}`).join('')
}

function badPath(path: string, problem: string): TenantryError {
  return new TenantryError('CONFIG_INVALID', `Configuration path '${printable(path)}' ${problem}. Use a JSON pointer (/branding/primaryColor) or dots (branding.primaryColor).`, {
    status: 400, details: { path: printable(path) },
  })
}

/** The value at `segments` of `obj`, or undefined. */
export function getAt(obj: unknown, segments: readonly string[]): JsonValue | undefined {
  let cur: unknown = obj
  for (const s of segments) {
    if (Array.isArray(cur) && /^(0|[1-9][0-9]*)$/.test(s)) cur = cur[Number(s)]
    else if (isPlainObject(cur) && Object.hasOwn(cur, s)) cur = cur[s]
    else return undefined
  }
  return cur as JsonValue | undefined
}

/** A copy of `obj` with `value` at `segments` (objects made on the way). The root is replaced by an object only. */
export function setAt(obj: JsonObject, segments: readonly string[], value: JsonValue): JsonObject {
  if (segments.length === 0) {
    if (!isPlainObject(value)) throw new TenantryError('CONFIG_INVALID', 'The whole configuration must be a JSON object.', { status: 400, details: { pointer: '' } })
    return structuredClone(value)
  }
  const root = structuredClone(obj)
  let cur: JsonObject | JsonValue[] = root
  for (let i = 0; i < segments.length - 1; i++) {
    const s = segments[i]
    const next: JsonValue | undefined = Array.isArray(cur) ? cur[Number(s)] : cur[s]
    if (isPlainObject(next) || Array.isArray(next)) {
      cur = next
    } else {
      if (next !== undefined && next !== null) {
        throw new TenantryError('CONFIG_INVALID', `Cannot set '${toPointer(segments)}': '${toPointer(segments.slice(0, i + 1))}' holds a ${typeof next}, not an object.`, {
          status: 400, details: { pointer: toPointer(segments.slice(0, i + 1)) },
        })
      }
      const made: JsonObject = {}
      if (Array.isArray(cur)) cur[indexOf(cur, s, segments)] = made
      else cur[s] = made
      cur = made
    }
  }
  const last = segments[segments.length - 1]
  if (Array.isArray(cur)) cur[indexOf(cur, last, segments)] = value
  else cur[last] = value
  return root
}

function indexOf(arr: unknown[], s: string, segments: readonly string[]): number {
  const n = s === '-' ? arr.length : /^(0|[1-9][0-9]*)$/.test(s) ? Number(s) : -1
  if (n < 0 || n > arr.length) {
    throw new TenantryError('CONFIG_INVALID', `Cannot set '${toPointer(segments)}': '${printable(s)}' is not an index of an array of ${arr.length} (use 0…${arr.length}, or '-' to append).`, {
      status: 400, details: { pointer: toPointer(segments) },
    })
  }
  return n
}

/** A copy of `obj` without the value at `segments`; `changed` false when there was none. */
export function unsetAt(obj: JsonObject, segments: readonly string[]): { value: JsonObject; changed: boolean } {
  if (segments.length === 0) return { value: {}, changed: Object.keys(obj).length > 0 }
  if (getAt(obj, segments) === undefined) return { value: obj, changed: false }
  const root = structuredClone(obj)
  const parent = getAt(root, segments.slice(0, -1)) as JsonObject | JsonValue[]
  const last = segments[segments.length - 1]
  if (Array.isArray(parent)) parent.splice(Number(last), 1)
  else delete parent[last]
  // Objects left empty by the removal go too, so an unset leaves no `{}` behind to shadow a lower layer.
  for (let i = segments.length - 1; i > 0; i--) {
    const p = segments.slice(0, i)
    const v = getAt(root, p)
    if (isPlainObject(v) && Object.keys(v).length === 0) {
      const up = getAt(root, p.slice(0, -1)) as JsonObject
      if (isPlainObject(up)) delete up[p[p.length - 1]]
    } else break
  }
  return { value: root, changed: true }
}

/** Deep-freeze a configuration object (what `tenantry.config()` hands out is shared by every request). */
export function deepFreeze<T>(v: T): T {
  if (typeof v === 'object' && v !== null && !Object.isFrozen(v)) {
    Object.freeze(v)
    for (const x of Object.values(v)) deepFreeze(x)
  }
  return v
}
