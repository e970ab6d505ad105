/**
 * Security perimeter: the point read resolved by API key and by mTLS client certificate vs by subdomain (one run), and the cost of verifying a propagated tenant assertion.
 *
 * `npm run bench -- security [--duration 3] [--rounds 6] [--connections 16] [--verify 3000]`
 *
 * Four Fastify HTTPS servers (requestCert, the same TLS set-up) in this process, each with its own
 * Tenantry on the same catalog and tenant, differ only in the resolve strategy: `subdomain()`
 * (baseline), `apiKey()`, `clientCertificate()` by fingerprint, and `clientCertificate()` with a
 * certificate bound through a tenant CA and SAN pattern (`mtls-ca`). Every client presents an EC
 * P-256 client certificate (the same one, except the CA-issued one for `mtls-ca`) and keeps its
 * connections alive, so TLS costs the same everywhere; keys and
 * certificates come from the in-process cache after the warm-up. Load comes from this process
 * too (keep-alive https.Agent loops). Rounds rotate the order of the three; ratios are medians of
 * each round's figure over that round's baseline. The machine is shared: read ratios, not rps.
 * Last line: JSON with api_key_rps_ratio, mtls_rps_ratio, mtls_ca_rps_ratio, propagation_verify_us.
 */
import { Agent, request as httpsRequest } from 'node:https'
import type { AddressInfo } from 'node:net'
import { parseArgs } from 'node:util'
import Fastify, { type FastifyInstance } from 'fastify'
import { exportJWK, generateKeyPair } from 'jose'
import { generate } from 'selfsigned'
import { tenantryPlugin } from '../src/adapters/fastify.ts'
import { apiKey, clientCertificate, createTenantry, propagated, subdomain, type Tenantry } from '../src/index.ts'
import { connectBenchAdmin, dropBenchLeftovers, withDatabase } from './lib/bench-db.ts'
import { median, printTable, round } from './lib/load.ts'

const DATABASE = 'tenantry_bench_security'
const ROLE_PREFIX = 'tb_security'
const SLUG = 'bench-sec'
const log = (m: string) => process.stderr.write(`[security] ${m}\n`)

type Variant = 'subdomain' | 'api-key' | 'mtls' | 'mtls-ca'
const VARIANTS: Variant[] = ['subdomain', 'api-key', 'mtls', 'mtls-ca']
/** Round r's order: rotated by r, reversed every other round, so no variant always runs first or after the same one. */
const orderOf = (r: number): Variant[] => {
  const k = r % VARIANTS.length
  const rotated = [...VARIANTS.slice(k), ...VARIANTS.slice(0, k)]
  return Math.floor(r / VARIANTS.length) % 2 === 1 ? rotated.reverse() : rotated
}

export default async function run(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: {
    duration: { type: 'string', default: '3' }, rounds: { type: 'string', default: '6' },
    connections: { type: 'string', default: '16' }, verify: { type: 'string', default: '3000' },
  } })
  const durationMs = Number(values.duration) * 1000
  const rounds = Number(values.rounds)
  const connections = Number(values.connections)
  const verifyN = Number(values.verify)
  if (![durationMs, rounds, connections, verifyN].every((n) => Number.isInteger(n) && n > 0)) {
    console.error('usage: npm run bench -- security [--duration S] [--rounds N] [--connections N] [--verify N]')
    return 2
  }
  const bench = await connectBenchAdmin('security')
  if (!bench) return 1
  await dropBenchLeftovers(bench.admin, DATABASE, ROLE_PREFIX)
  await bench.admin.query(`CREATE DATABASE ${DATABASE}`)
  const url = withDatabase(bench.adminUrl, DATABASE)
  const runtimes: Tenantry[] = []
  const servers: FastifyInstance[] = []
  try {
    const [serverCert, clientCert] = await Promise.all([
      generate([{ name: 'commonName', value: 'localhost' }], { keyType: 'ec', algorithm: 'sha256' }),
      generate([{ name: 'commonName', value: 'bench-client' }], { keyType: 'ec', algorithm: 'sha256' }),
    ])
    const common = { databaseUrl: url, rolePrefix: ROLE_PREFIX, migrations: 'demo/migrations', observe: { logger: false as const, metering: false as const }, resumeOperations: false }
    const make = async (resolve: Parameters<typeof createTenantry>[0] extends infer O ? O extends { resolve?: infer R } ? R : never : never) => {
      const t = await createTenantry({ ...common, resolve })
      runtimes.push(t)
      return t
    }
    const base = await make([subdomain({ baseDomain: 'localhost' })])
    await base.migrate()
    const tenant = await base.provision({ slug: SLUG, tier: 'pooled' })
    await base.withTenant(tenant, async () => {
      for (let i = 0; i < 100; i++) await base.db.query('INSERT INTO projects (name) VALUES ($1)', [`p${i}`])
    })
    const { key } = await base.apiKeys.create(SLUG, { name: 'bench', scopes: ['*'] })
    await base.certificates.add(SLUG, { pem: clientCert.cert, name: 'bench-client' })
    const ca = await generate([{ name: 'commonName', value: 'bench CA' }], {
      keyType: 'ec', algorithm: 'sha256', extensions: [{ name: 'basicConstraints', cA: true, critical: true }, { name: 'keyUsage', keyCertSign: true, digitalSignature: true }],
    } as Parameters<typeof generate>[1])
    const caClient = await generate([{ name: 'commonName', value: 'bench-ca-client' }], {
      keyType: 'ec', algorithm: 'sha256', ca: { key: ca.private, cert: ca.cert }, extensions: [{ name: 'subjectAltName', altNames: [{ type: 2, value: 'svc.bench.example' }] }],
    } as Parameters<typeof generate>[1])
    await base.certificates.add(SLUG, { ca: ca.cert, sanPattern: '*.bench.example', name: 'bench-ca' })
    const clientOf: Record<Variant, { private: string; cert: string }> = { subdomain: clientCert, 'api-key': clientCert, mtls: clientCert, 'mtls-ca': caClient }
    const byKey = await make([apiKey()])
    const byCert = await make([clientCertificate()])
    const byCa = await make([clientCertificate()])

    const ports = new Map<Variant, number>()
    for (const [variant, t] of [['subdomain', base], ['api-key', byKey], ['mtls', byCert], ['mtls-ca', byCa]] as const) {
      const app = Fastify({ https: { key: serverCert.private, cert: serverCert.cert, requestCert: true, rejectUnauthorized: false } })
      app.register(tenantryPlugin, { tenantry: t })
      app.register(async (s) => {
        s.get('/projects/:id', async (request) => (await t.db.query('SELECT id::text AS id, name FROM projects WHERE id = $1', [(request.params as { id: string }).id])).rows[0] ?? null)
      })
      await app.listen({ port: 0, host: '127.0.0.1' })
      servers.push(app)
      ports.set(variant, (app.server.address() as AddressInfo).port)
    }
    const headersOf: Record<Variant, Record<string, string>> = {
      subdomain: { host: `${SLUG}.localhost` },
      'api-key': { host: 'localhost', authorization: `Bearer ${key}` },
      mtls: { host: 'localhost' },
      'mtls-ca': { host: 'localhost' },
    }

    async function load(variant: Variant, ms: number): Promise<number> {
      const agent = new Agent({ keepAlive: true, maxSockets: connections, key: clientOf[variant].private, cert: clientOf[variant].cert, rejectUnauthorized: false })
      let done = 0
      let failed = 0
      const until = Date.now() + ms
      const one = (id: number) => new Promise<void>((resolve) => {
        const req = httpsRequest({ host: '127.0.0.1', port: ports.get(variant), path: `/projects/${id}`, agent, headers: headersOf[variant] }, (res) => {
          res.resume()
          res.on('end', () => { if (res.statusCode === 200) done++; else failed++; resolve() })
        })
        req.on('error', () => { failed++; resolve() })
        req.end()
      })
      await Promise.all(Array.from({ length: connections }, async (_, c) => {
        let id = c
        while (Date.now() < until) await one((id++ % 100) + 1)
      }))
      agent.destroy()
      if (failed > 0) throw new Error(`${variant}: ${failed} requests failed`)
      return done / (ms / 1000)
    }

    log('warm-up')
    for (const v of VARIANTS) await load(v, 1000)
    const rows: (string | number)[][] = []
    const ratios: Record<'api-key' | 'mtls' | 'mtls-ca', number[]> = { 'api-key': [], mtls: [], 'mtls-ca': [] }
    for (let r = 0; r < rounds; r++) {
      const rps = {} as Record<Variant, number>
      for (const v of orderOf(r)) rps[v] = await load(v, durationMs)
      for (const v of ['api-key', 'mtls', 'mtls-ca'] as const) ratios[v].push(rps[v] / rps.subdomain)
      rows.push([r + 1, ...VARIANTS.map((v) => Math.round(rps[v])), ...(['api-key', 'mtls', 'mtls-ca'] as const).map((v) => round(rps[v] / rps.subdomain, 3))])
      log(`round ${r + 1}/${rounds}`)
    }
    printTable(['round', 'subdomain rps', 'api-key rps', 'mtls rps', 'mtls-ca rps', 'api-key ratio', 'mtls ratio', 'mtls-ca ratio'], rows)

    // Propagation: sign once, verify many times (the receiving side's cost per request).
    const { privateKey } = await generateKeyPair('ES256', { extractable: true })
    const jwk = { ...(await exportJWK(privateKey)), kid: 'bench', alg: 'ES256' }
    const signer = await createTenantry({ ...common, propagation: { service: 'bench', signingKey: jwk } })
    runtimes.push(signer)
    const strategy = propagated({ audience: 'target', keys: await signer.propagation.jwks() })
    const headers = await signer.withTenant(SLUG, () => signer.propagation.headers('target'))
    const info = { host: undefined, path: '/', headers }
    for (let i = 0; i < 200; i++) await strategy.identify(info)
    let start = process.hrtime.bigint()
    for (let i = 0; i < verifyN; i++) await strategy.identify(info)
    const verifyUs = Number(process.hrtime.bigint() - start) / 1000 / verifyN
    start = process.hrtime.bigint()
    for (let i = 0; i < 500; i++) await signer.withTenant(SLUG, () => signer.propagation.headers('target'))
    const signUs = Number(process.hrtime.bigint() - start) / 1000 / 500

    const figures = {
      api_key_rps_ratio: round(median(ratios['api-key']), 3),
      mtls_rps_ratio: round(median(ratios.mtls), 3),
      mtls_ca_rps_ratio: round(median(ratios['mtls-ca']), 3),
      propagation_verify_us: round(verifyUs, 1),
      propagation_sign_us: round(signUs, 1),
      rounds, duration_s: durationMs / 1000, connections,
      target_rps_ratio: 0.95,
      note: 'in-process load on a shared 2-core machine; ratios against the subdomain baseline of the same round',
    }
    console.log(`API key ${figures.api_key_rps_ratio}x, mTLS ${figures.mtls_rps_ratio}x (by CA ${figures.mtls_ca_rps_ratio}x) of subdomain req/s; assertion verify ${figures.propagation_verify_us} µs, sign ${figures.propagation_sign_us} µs`)
    console.log(JSON.stringify(figures))
    return 0
  } finally {
    for (const s of servers) await s.close().catch(() => undefined)
    for (const t of runtimes) await t.close().catch(() => undefined)
    await dropBenchLeftovers(bench.admin, DATABASE, ROLE_PREFIX).catch(() => undefined)
    await bench.admin.end()
  }
}
