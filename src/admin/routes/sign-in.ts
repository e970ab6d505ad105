import type { FastifyRequest } from 'fastify'
import type { AdminRoutes } from '../context.ts'
import { errors } from '../schemas.ts'

/** At most one failed-sign-in entry per source address and this long, per process; the attempts in between are counted into the next. */
const FAILED_ENTRY_INTERVAL_MS = 10_000

/**
 * `POST api/sign-in`: the console's sign-in (and any client's). It checks the credentials like
 * every API call does, and appends `admin.sign-in` (actor, role, method, address) to the audit
 * log; a refused sign-in appends `admin.sign-in-failed` with the error code, at most one entry per
 * address every 10 s per process (so that guessing cannot flood the log).
 */
export const signInRoutes: AdminRoutes = (app, { tenantry, authenticate }) => {
  const failures = new Map<string, { at: number; suppressed: number }>()
  const auditFailure = async (request: FastifyRequest, code: string) => {
    const now = Date.now()
    const seen = failures.get(request.ip)
    if (seen !== undefined && now - seen.at < FAILED_ENTRY_INTERVAL_MS) { seen.suppressed++; return }
    if (failures.size > 10_000) failures.clear()
    failures.set(request.ip, { at: now, suppressed: 0 })
    await tenantry.audit.append({
      actor: `anonymous@${request.ip}`, action: 'admin.sign-in-failed', requestId: request.id,
      details: { code, address: request.ip, earlierAttempts: seen?.suppressed ?? 0 },
    })
  }

  app.post('/sign-in', {
    schema: {
      tags: ['admin'], summary: 'Sign in with an admin token or JWT (Authorization header): returns who you are; audited',
      response: { 200: { type: 'object', required: ['actor', 'role'], properties: { actor: { type: 'string' }, role: { type: 'string' } } }, ...errors(403) },
    },
    config: { adminRole: 'public' },
  }, async function signIn(request) {
    let principal
    try {
      principal = await authenticate(request.headers.authorization)
    } catch (err) {
      await auditFailure(request, String((err as { code?: string }).code ?? 'ADMIN_UNAUTHORIZED'))
      throw err
    }
    await tenantry.audit.append({
      actor: principal.actor, action: 'admin.sign-in', requestId: request.id,
      details: { role: principal.role, method: principal.actor.startsWith('jwt:') ? 'jwt' : 'token', address: request.ip },
    })
    return principal
  })
}
