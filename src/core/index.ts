export * from './errors.ts'
export * from './types.ts'
export * from './validation.ts'
export * from './sql.ts'
