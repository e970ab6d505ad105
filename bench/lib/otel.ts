/**
 * What the observe benchmarks' processes share of OpenTelemetry: an exporter that drops every
 * batch (the SDK's work up to the wire, without the wire) and the app's own span per request (an
 * instrumented app's, shaped like Tenantry's statement span), to hold the SDK's span equal.
 */
import { propagation, ROOT_CONTEXT, SpanKind, trace, type Span } from '@opentelemetry/api'
import { ExportResultCode, type ExportResult } from '@opentelemetry/core'
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace-node'
import type { FastifyInstance } from 'fastify'

/** Takes every batch and drops it, reporting success. */
export class DroppingExporter implements SpanExporter {
  spans = 0
  batches = 0
  export(spans: ReadableSpan[], resultCallback: (result: ExportResult) => void): void {
    this.spans += spans.length
    this.batches++
    resultCallback({ code: ExportResultCode.SUCCESS })
  }
  shutdown(): Promise<void> {
    return Promise.resolve()
  }
  forceFlush(): Promise<void> {
    return Promise.resolve()
  }
}

/** The four attributes of Tenantry's statement span (src/observe/tracing.ts) for the demo's point read. */
export const STATEMENT_ATTRIBUTES = Object.freeze({ 'db.system': 'postgresql', 'db.statement': 'SELECT id, name, created_at FROM projects WHERE id = $1', 'server.address': 'main' })

/**
 * One span per request made by the app through Fastify hooks, as an instrumented app would: the
 * statement's name, kind and attributes, parented on the request's `traceparent`, ended when the
 * response is. Add before `app.ready()`.
 */
export function appSpans(app: FastifyInstance): void {
  const tracer = trace.getTracer('bench-app')
  const kSpan = Symbol('bench.span')
  type Traced = { [kSpan]?: Span }
  app.addHook('onRequest', function benchSpanStart(request, _reply, done) {
    const span = tracer.startSpan('SELECT', { kind: SpanKind.CLIENT }, propagation.extract(ROOT_CONTEXT, request.headers))
    if (span.isRecording()) {
      span.setAttributes(STATEMENT_ATTRIBUTES)
      const slug = request.headers['x-tenant']
      if (typeof slug === 'string') span.setAttribute('tenant.id', slug)
    }
    ;(request as unknown as Traced)[kSpan] = span
    done()
  })
  app.addHook('onResponse', function benchSpanEnd(request, _reply, done) {
    ;(request as unknown as Traced)[kSpan]?.end()
    done()
  })
}
