import { Moves } from './moves.ts'

export { Moves } from './moves.ts'
export type { KeptRoom, MoveOptions, MoveProgress, MoveResult, MoveTableCheck, MovesOptions } from './moves.ts'
export { FENCED_SQLSTATE } from './sql.ts'

/** The moves part of the wiring: its catalog table, and the `move` operations it finishes when their process died. */
export async function createMoves(deps: ConstructorParameters<typeof Moves>[0]): Promise<Moves> {
  const m = new Moves(deps)
  await m.init()
  return m
}
export { planMoves, runPlanned, type AppliedMove, type ApplyAdviceOptions, type PlannedMove } from './rebalance.ts'
