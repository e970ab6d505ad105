export { Guard, GuardRejection, createGuard, type Admission, type GuardOptions, type RejectionEvent, type RejectionLayer } from './guard.ts'
export { DEFAULT_LIMITS, mergeLimits, parseLimits, type Limits, type LimitsInput, type RateSpec } from './limits.ts'
export { userFromApiKey, userFromHeader, userFromJwt, type AdmitRequest, type JwtUserOptions, type UserIdentifier } from './users.ts'
export type { BreakerEvent, BreakerOptions, BreakerState } from './breakers.ts'
