import { context, propagation, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type Attributes, type Context, type Span, type Tracer } from '@opentelemetry/api'
import { currentScope } from '../context/context.ts'
import type { Tenant } from '../core/types.ts'

/** `observe.tracing`: OpenTelemetry spans through `@opentelemetry/api` (you bring the SDK). */
export interface TracingOptions {
  /** Default: `trace.getTracer('tenantry')` of the globally registered provider (a no-op until an SDK registers one). */
  tracer?: Tracer
}

/**
 * A map bounded by clearing it when full: statement texts are few in an app (its SQL), so it
 * rarely fills, and a lookup is a plain Map get (an LRU's bookkeeping costs more per statement).
 */
class BoundedMap<V> extends Map<string, V> {
  constructor(private readonly max: number) { super() }
  override set(key: string, value: V): this {
    if (this.size >= this.max) this.clear()
    return super.set(key, value)
  }
}

const redactions = new BoundedMap<string>(2000)

/**
 * A statement's text for a span: literals (strings, dollar-quoted strings, numbers) replaced by
 * `?`, whitespace collapsed, at most 2,000 characters. Tenant values travel as bind parameters
 * and never reach the text; this also hides literals an app wrote into its SQL.
 *
 * @example
 * ```ts
 * redactStatement("SELECT * FROM t WHERE a = 'x' AND b = 42") // "SELECT * FROM t WHERE a = ? AND b = ?"
 * ```
 */
export function redactStatement(text: string): string {
  let r = redactions.get(text)
  if (r === undefined) {
    r = text
      .replace(/\$([A-Za-z_][A-Za-z0-9_]*)?\$[\s\S]*?\$\1\$/g, '?')
      .replace(/(?:[eE])?'(?:[^']|'')*'/g, '?')
      .replace(/(?<![\w$."])(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+)\b/g, '?')
      .replace(/\s+/g, ' ')
      .trim()
      .slice(0, 2000)
    redactions.set(text, r)
  }
  return r
}

// Tenants from the catalog are frozen objects replaced on every change: their attributes are
// made once per object, not once per span.
const tenantAttrs = new WeakMap<Tenant, Attributes>()

function tenantAttributes(tenant: Tenant): Attributes {
  let a = tenantAttrs.get(tenant)
  if (a === undefined) {
    a = Object.freeze({ 'tenant.id': tenant.id, 'tenant.slug': tenant.slug, 'tenant.tier': tenant.tier, 'tenant.plan': tenant.plan })
    tenantAttrs.set(tenant, a)
  }
  return a
}

/** What a statement's span takes from its text: the span name and the tenant-blind attributes, made once per text. */
interface StatementShape {
  name: string
  server: string
  attributes: Attributes
}

const shapes = new BoundedMap<StatementShape>(2000)

function shapeOf(server: string, text: string): StatementShape {
  let shape = shapes.get(text)
  // Keyed by text alone: the same text on another server is rare (a fleet of several servers).
  if (shape === undefined || shape.server !== server) {
    const m = /^\s*(?:--[^\n]*\n\s*)*([A-Za-z]+)/.exec(text)
    shape = {
      name: m ? m[1].toUpperCase() : 'SQL',
      server,
      attributes: Object.freeze({ 'db.system': 'postgresql', 'db.statement': redactStatement(text), 'server.address': server }),
    }
    shapes.set(text, shape)
  }
  return shape
}

/**
 * Tenantry's spans: `tenantry.resolve` of each request whose resolution waits (a catalog lookup;
 * a cached tenant's attributes go on the active span instead), `tenantry.admit` of each request
 * of a tenant with limits, one per statement
 * (`SELECT`, `INSERT`… with `db.system`, `server.address`, the redacted `db.statement`) and one per
 * lifecycle operation and step; each with `tenant.id`. Spans continue the incoming request's
 * trace: the active context (an HTTP instrumentation's server span), else a W3C `traceparent`
 * header of the request, through the registered propagator.
 *
 * @example
 * ```ts
 * const tracing = new Tracing({})
 * const span = tracing.startStatement(tenant, 'main', 'SELECT 1')
 * span.end()
 * ```
 */
export class Tracing {
  readonly tracer: Tracer

  constructor(opts: TracingOptions = {}) {
    this.tracer = opts.tracer ?? trace.getTracer('tenantry')
  }

  /**
   * The parent of a request's spans: the active span's context, else the active context with the
   * request's `traceparent` (its other values kept), else none.
   */
  requestParent(headers: Record<string, unknown>): Context | undefined {
    const active = context.active()
    if (trace.getSpan(active) !== undefined) return active
    if (headers.traceparent === undefined) return undefined
    return propagation.extract(active, headers)
  }

  /**
   * A tenant resolved from cache: its attributes on the active span (an HTTP server span), if
   * any. `parent` is what {@link requestParent} returned: the active context when it has a span
   * (no second lookup of it), else the `traceparent`'s remote span, which records nothing.
   */
  resolvedNow(tenant: Tenant, parent: Context | undefined): void {
    if (parent === undefined) return
    const span = trace.getSpan(parent)
    if (span !== undefined && span.isRecording()) span.setAttributes(tenantAttributes(tenant))
  }

  startResolve(parent: Context | undefined): Span {
    return this.tracer.startSpan('tenantry.resolve', { kind: SpanKind.INTERNAL }, parent ?? context.active())
  }

  /** End a resolve span with what it found (a tenant, or the error that refused the request). */
  endResolve(span: Span, tenant: Tenant | null, error?: unknown): void {
    if (span.isRecording()) {
      if (tenant) span.setAttributes(tenantAttributes(tenant))
      if (error !== undefined) fail(span, error)
    }
    span.end()
  }

  startAdmit(tenant: Tenant, parent: Context | undefined): Span {
    const span = this.tracer.startSpan('tenantry.admit', { kind: SpanKind.INTERNAL }, parent ?? context.active())
    if (span.isRecording()) span.setAttributes(tenantAttributes(tenant))
    return span
  }

  endSpan(span: Span, error?: unknown): void {
    if (error !== undefined && span.isRecording()) fail(span, error)
    span.end()
  }

  /**
   * A statement's span, a child of the active span, else of the request's parent (`parent`, by
   * default the current tenant scope's: read only when there is no active span).
   */
  startStatement(tenant: Tenant, server: string, text: string, parent?: Context): Span {
    const active = context.active()
    const ctx = trace.getSpan(active) !== undefined ? active : (parent ?? (currentScope()?.trace as Context | undefined) ?? active)
    const shape = shapeOf(server, text)
    const span = this.tracer.startSpan(shape.name, { kind: SpanKind.CLIENT }, ctx)
    if (span.isRecording()) {
      // Four attributes, the fewest that say what ran where for whom: each costs the SDK a
      // validated copy and grows the span its batch processor retains (docs/benchmarks.md,
      // "## observe"). The tenant's slug, tier and plan are on the request's spans; rows and
      // database time per tenant are metered.
      span.setAttributes(shape.attributes)
      span.setAttribute('tenant.id', tenant.id)
    }
    return span
  }

  endStatement(span: Span, error?: unknown): void {
    if (error !== undefined && span.isRecording()) fail(span, error)
    span.end()
  }

  /** A lifecycle operation's span (`tenantry.provision`, `tenantry.migrate`…). */
  startOperation(kind: string, attributes: Attributes): Span {
    return this.tracer.startSpan(`tenantry.${kind}`, { kind: SpanKind.INTERNAL, attributes })
  }

  /** A step of an operation (`tenantry.provision.migrate`…), a child of its operation's span. */
  startStep(operation: Span, kind: string, step: string, attributes: Attributes): Span {
    return this.tracer.startSpan(`tenantry.${kind}.${step}`, { kind: SpanKind.INTERNAL, attributes }, trace.setSpan(ROOT_CONTEXT, operation))
  }
}

function fail(span: Span, error: unknown): void {
  const e = error as { code?: unknown; message?: unknown }
  span.setStatus({ code: SpanStatusCode.ERROR, message: typeof e?.message === 'string' ? e.message.slice(0, 500) : String(error) })
  if (typeof e?.code === 'string') span.setAttribute('error.type', e.code)
}
