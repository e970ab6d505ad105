/** Rows and count of one statement. */
export interface QueryResult<R = Record<string, unknown>> {
  rows: R[]
  rowCount: number
}

/**
 * The smallest thing that runs SQL: text with `$n` placeholders and bind values. Both drivers
 * (node-postgres and PGlite) implement it, and so does a tenant handle.
 *
 * @example
 * ```ts
 * const { rows } = await q.query<{ id: number }>('SELECT id FROM projects WHERE id = $1', [7])
 * ```
 */
export interface Queryable {
  query<R = Record<string, unknown>>(text: string, values?: unknown[]): Promise<QueryResult<R>>
}

/** A {@link Queryable} that can also run a function inside one transaction. */
export interface TransactionalQueryable extends Queryable {
  transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T>
}
