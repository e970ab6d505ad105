import { fileURLToPath } from 'node:url'
import { createTenantry, subdomain, header, isTenantryError, type Branding, type Tier } from '../src/index.ts'
import { adminTokens } from '../src/admin/tokens.ts'
import { SUMMARY_QUEUE, buildDemoApp, dailySummary } from './app.ts'
import { exportPlugin } from './export-plugin.ts'

const SEED: { slug: string; name: string; tier: Tier; plan: string; branding?: Branding }[] = [
  { slug: 'acme', name: 'Acme Corp', tier: 'pooled', plan: 'free', branding: { displayName: 'Acme Corp', primaryColor: '#b91c1c', accentColor: '#fde68a', emailSenderName: 'Acme Support', supportUrl: 'mailto:help@acme.example' } },
  { slug: 'globex', name: 'Globex', tier: 'schema', plan: 'default', branding: { displayName: 'Globex Corporation', primaryColor: '#047857', accentColor: '#a7f3d0', backgroundColor: '#f0fdf4', supportUrl: 'https://globex.example/help' } },
  { slug: 'initech', name: 'Initech', tier: 'database', plan: 'default' },
]

// The free plan's limits (docs/guards.md): small enough to see a 429 by hand.
const FREE_LIMITS = { rate: { points: 10, duration: 60 }, concurrency: 2, queue: 2, statementTimeoutMs: 2000 }

async function main(): Promise<void> {
  const port = Number(process.env.PORT ?? 3000)
  const started = Date.now()
  const tenantry = await createTenantry({
    migrations: fileURLToPath(new URL('./migrations', import.meta.url)),
    resolve: [subdomain({ baseDomain: 'localhost' }), header({ name: 'x-tenant' })],
    // Tenantry's events (provisioning, breakers, rejections…) at info; lines in a request carry the tenant.
    observe: { logger: { level: process.env.LOG_LEVEL ?? 'info' } },
    plugins: [exportPlugin],
  })
  const where = process.env.DATABASE_URL ? 'PostgreSQL (DATABASE_URL)' : `embedded PGlite in ${process.env.TENANTRY_DATA_DIR ?? '.tenantry'}/`

  const results = await tenantry.migrate()
  const failed = results.targets.filter((r) => r.status === 'failed')
  if (failed.length) {
    for (const f of failed) console.error(`migration failed on ${f.target}: ${f.error}`)
    process.exit(1)
  }
  await tenantry.catalog.upsertPlan({ name: 'free', settings: { limits: FREE_LIMITS, plugins: { export: { enabled: true } } } })
  await tenantry.guard.reloadPlans()
  for (const seed of SEED) {
    const found = await tenantry.findTenant(seed.slug)
    if (!found) {
      console.log(`seeding tenant '${seed.slug}' (${seed.tier} tier, ${seed.plan} plan)…`)
      await tenantry.provision(seed)
    } else if (found.plan !== seed.plan) {
      await tenantry.config.changePlan(found.id, seed.plan, { by: 'demo' })
    }
    // Branding is configuration (docs/config.md): seeded once, then the CLI changes it live.
    if (seed.branding && (await tenantry.config.get(seed.slug, '/branding', { layer: 'tenant' })) === undefined) {
      await tenantry.config.set(seed.slug, '/branding', seed.branding, { by: 'demo' })
    }
  }
  if (!tenantry.flags.get('new-editor')) await tenantry.flags.set({ key: 'new-editor', rules: [{ plans: ['free'], variant: 'on' }] }, { by: 'demo' })

  // A daily summary per tenant at 06:00 UTC, run by this process's worker inside each tenant.
  for (const seed of SEED) await tenantry.withTenant(seed.slug, () => tenantry.jobs.schedule(SUMMARY_QUEUE, '0 6 * * *'))
  await tenantry.jobs.work(SUMMARY_QUEUE, () => dailySummary(tenantry))

  // LOG=1: Fastify logs each request through Tenantry's logger, so every line carries the tenant.
  const app = await buildDemoApp(tenantry, { loggerInstance: process.env.LOG === '1' ? tenantry.logger : undefined, plugin: { metrics: true }, admin: true })
  // A fresh operator token for the console on each start (the previous one is revoked).
  const tokens = await adminTokens(tenantry)
  if ((await tokens.list()).some((t) => t.name === 'demo' && !t.revokedAt)) await tokens.revoke('demo', 'demo:server')
  const { token: adminToken } = await tokens.create({ name: 'demo', role: 'admin' }, 'demo:server')
  await app.listen({ port, host: '127.0.0.1' })
  console.log(`
  Tenantry demo on ${where}, ready in ${((Date.now() - started) / 1000).toFixed(1)} s
  Tenants: acme (pooled, free plan: ${FREE_LIMITS.rate.points} requests/min), globex (schema), initech (database)

  Try:
    open http://acme.localhost:${port}/ and http://globex.localhost:${port}/   # each tenant's branded page
    curl http://acme.localhost:${port}/plugins/export/projects.csv             # the export plugin: on for the free plan (acme), 404 for globex
    npx tenantry config set globex /branding/primaryColor '#7c3aed'          # after Ctrl-C, or on PostgreSQL live
    curl http://acme.localhost:${port}/api/tenant
    curl -X POST http://globex.localhost:${port}/api/projects -H 'content-type: application/json' -d '{"name":"Launch"}'
    curl http://globex.localhost:${port}/api/projects
    curl -H 'x-tenant: initech' http://localhost:${port}/api/projects
    curl http://nobody.localhost:${port}/api/projects      # 404 TENANT_NOT_FOUND
    curl -i http://acme.localhost:${port}/api/projects     # RateLimit-Limit/Remaining/Reset headers
    for i in $(seq 1 12); do curl -s -o /dev/null -w '%{http_code} ' http://acme.localhost:${port}/api/projects; done; echo
                                                           # acme's free plan allows ${FREE_LIMITS.rate.points} a minute, then 429 RATE_LIMITED
    curl -X POST http://acme.localhost:${port}/api/projects/1/tasks -H 'content-type: application/json' -d '{"title":"Ship"}'
    curl -X PUT --data-binary @README.md -H 'content-type: text/markdown' http://acme.localhost:${port}/api/tasks/1/attachments/readme.md
    curl http://acme.localhost:${port}/api/tasks/1/attachments          # globex gets 404 for acme's task
    curl -X POST http://acme.localhost:${port}/api/summary; sleep 1; curl http://acme.localhost:${port}/api/summary
                                                           # the daily-summary job, run inside acme (also at 06:00 UTC daily)
    curl -s http://localhost:${port}/metrics | grep '^tenantry_tenant_requests_total'
                                                           # requests per tenant (top 20 by name, the rest "other")
    Admin console:  http://localhost:${port}/admin/   (sign in with the token below; API docs at /admin/docs/)
    Admin token:    ${adminToken}
    curl -H 'authorization: Bearer ${adminToken}' http://localhost:${port}/admin/api/tenants

    After Ctrl-C (usage is written each minute and at exit):
    npx tenantry top --by db_time --period 1h              # which tenant took the database time
  `)

  async function shutdown(): Promise<void> {
    await app.close()
    await tenantry.close()
    process.exit(0)
  }
  process.on('SIGINT', shutdown)
  process.on('SIGTERM', shutdown)
}

main().catch((err) => {
  console.error(isTenantryError(err) ? `${err.code}: ${err.message}` : err)
  process.exit(1)
})
