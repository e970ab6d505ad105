/** A parameterised statement: text with `$n` placeholders and the values that bind to them. */
export interface Statement {
  text: string
  values: unknown[]
}

/**
 * Quote an SQL identifier (schema, table, role, database). The one place identifiers are put into
 * SQL text; tenant *values* always travel as bind parameters instead.
 *
 * @example
 * ```ts
 * `CREATE SCHEMA ${quoteIdent('t_0a1b')}` // CREATE SCHEMA "t_0a1b"
 * ```
 */
export function quoteIdent(name: string): string {
  if (name.length === 0 || name.length > 63 || name.includes('\0')) {
    throw new Error(`Invalid SQL identifier '${name}'`)
  }
  return `"${name.replace(/"/g, '""')}"`
}

/** Quote a string literal, for the few DDL statements that cannot take parameters (e.g. role passwords). */
export function quoteLiteral(value: string): string {
  if (value.includes('\0')) throw new Error('Invalid SQL literal')
  return `'${value.replace(/'/g, "''")}'`
}
