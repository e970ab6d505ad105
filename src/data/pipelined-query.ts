import pg from 'pg'

/** One step sent ahead of the main statement. Its rows are discarded. */
export interface PipelineStep {
  /** Name for a server-side prepared statement (parsed once per connection), or undefined. */
  name?: string
  text: string
  values: unknown[]
}

// node-postgres' Query is a "Submittable" (the public extension point pg-cursor and
// pg-query-stream use). Its type declaration does not include the protocol hooks we override.
const BaseQuery = pg.Query as unknown as new (text: string, values: unknown[], callback: (err: Error | null, res: pg.QueryResult) => void) => PgQueryInternals

interface PgQueryInternals {
  text: string
  queryMode?: string
  values?: unknown[]
  name?: string
  handleDataRow(msg: unknown): void
  handleCommandComplete(msg: unknown, connection: PgConnection): void
  handleError(err: Error, connection: PgConnection): void
  prepare(connection: PgConnection): void
}

interface PgConnection {
  parsedStatements: Record<string, string>
  parse(msg: { text: string; name?: string; types?: unknown[] }): void
  bind(msg: { portal?: string; statement?: string; values: unknown[]; valueMapper?: unknown }): void
  execute(msg: { portal?: string; rows?: number }): void
  close(msg: { type: 'S' | 'P'; name: string }): void
}

// Statements whose Parse may or may not have reached the server (an error came before the step
// completed). They are closed before being parsed again; Close of a missing statement is not an error.
const uncertain = new WeakMap<PgConnection, Set<string>>()

const prepareValue = (pg as unknown as { utils?: { prepareValue: unknown } }).utils?.prepareValue

/**
 * A query that sends `steps` and then its own statement in one extended-protocol pipeline with a
 * single Sync: one network round trip for all of them, and all of them inside one implicit
 * transaction, so `set_config(…, true)` in a step applies to the statement and is gone at Sync.
 * PostgreSQL documents this in "Extended Query" / "Pipelining": statements up to a Sync run as one
 * implicit transaction block, and an error skips the rest until the Sync.
 *
 * Only the last statement's rows and command tag are returned.
 */
export class PipelinedQuery extends BaseQuery {
  private pendingSteps: number
  private readonly steps: PipelineStep[]

  constructor(steps: PipelineStep[], text: string, values: unknown[], name: string | undefined, callback: (err: Error | null, res: pg.QueryResult) => void) {
    // Text, values and callback as arguments: a config object would be copied property by
    // property (node-postgres clones it), which showed in the routing benchmark's profile.
    super(text, values, callback)
    this.name = name
    // Extended protocol even without values, which also means the server accepts exactly one
    // statement per text: no `; SET ROLE …` smuggled behind it.
    this.queryMode = 'extended'
    this.steps = steps
    this.pendingSteps = steps.length
  }

  override prepare(connection: PgConnection): void {
    for (const step of this.steps) {
      if (step.name === undefined || connection.parsedStatements[step.name] !== step.text) {
        if (step.name !== undefined && uncertain.get(connection)?.has(step.name)) {
          connection.close({ type: 'S', name: step.name })
        }
        connection.parse({ text: step.text, name: step.name })
      }
      connection.bind({ statement: step.name, values: step.values, valueMapper: prepareValue })
      connection.execute({})
    }
    super.prepare(connection)
  }

  override handleDataRow(msg: unknown): void {
    if (this.pendingSteps > 0) return
    super.handleDataRow(msg)
  }

  override handleCommandComplete(msg: unknown, connection: PgConnection): void {
    if (this.pendingSteps > 0) {
      // The step ran, so its Parse (if any) succeeded: later queries on this connection skip it.
      const step = this.steps[this.steps.length - this.pendingSteps]
      if (step.name !== undefined) {
        connection.parsedStatements[step.name] = step.text
        uncertain.get(connection)?.delete(step.name)
      }
      this.pendingSteps--
      return
    }
    super.handleCommandComplete(msg, connection)
  }

  override handleError(err: Error, connection: PgConnection): void {
    if (this.pendingSteps > 0 && connection?.parsedStatements) {
      for (const step of this.steps.slice(this.steps.length - this.pendingSteps)) {
        if (step.name === undefined || connection.parsedStatements[step.name] === step.text) continue
        let names = uncertain.get(connection)
        if (!names) uncertain.set(connection, (names = new Set()))
        names.add(step.name)
      }
    }
    super.handleError(err, connection)
  }
}

/**
 * Run `steps` and then `text` on `client` in one round trip; resolves with the last statement's
 * result.
 *
 * @example
 * ```ts
 * const r = await pipelined(client, [{ text: "SELECT set_config('x', $1, true)", values: ['1'] }], 'SELECT 1', [])
 * ```
 */
export function pipelined(client: pg.ClientBase, steps: PipelineStep[], text: string, values: unknown[], name?: string): Promise<pg.QueryResult> {
  return new Promise((resolve, reject) => {
    const query = new PipelinedQuery(steps, text, values, name, (err, res) => (err ? reject(err) : resolve(res)))
    client.query(query as unknown as pg.QueryConfig)
  })
}
