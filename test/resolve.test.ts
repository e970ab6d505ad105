import { generateKeyPair, exportJWK, SignJWT } from 'jose'
import { describe, expect, it } from 'vitest'
import { TenantryError } from '../src/core/errors.ts'
import type { Tenant, TenantStatus } from '../src/core/types.ts'
import {
  custom,
  customDomain,
  header,
  jwtClaim,
  normalizeHost,
  pathPrefix,
  stripPathPrefix,
  subdomain,
  TenantResolver,
} from '../src/resolve/index.ts'
import type { Identifier, RequestInfo, ResolveStrategy, TenantLookup } from '../src/resolve/index.ts'

// ─── fixtures ────────────────────────────────────────────────────────────────────────────────────

const ACME_ID = '0d1f6a0e-4c1b-4f7e-9a53-2d6c9b1e7a01'
const BETA_ID = '5b2e9c44-8f0a-4d2b-b1c7-93e0f6a4d802'
const FROZEN_ID = '9c7d3e21-6a5b-4e8f-8d0c-1f2a3b4c5d03'
const GONE_ID = 'a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c04'
const FRESH_ID = 'b2c3d4e5-f6a7-4b8c-9d0e-1f2a3b4c5d05'
const NOBODY_ID = 'c3d4e5f6-a7b8-4c9d-8e0f-1a2b3c4d5e06'

function makeTenant(slug: string, id: string, status: TenantStatus = 'active', statusReason: string | null = null): Tenant {
  return {
    id, slug, name: `${slug} Inc.`, status, statusReason, tier: 'pooled', plan: 'free', region: null,
    placement: { server: 'main', database: 'app' }, config: {}, createdAt: new Date(0), updatedAt: new Date(0), deletedAt: null,
  }
}

const TENANTS = [
  makeTenant('acme', ACME_ID),
  makeTenant('beta', BETA_ID),
  makeTenant('frozen', FROZEN_ID, 'suspended', 'Unpaid invoice #42'),
  makeTenant('quiet', 'd4e5f6a7-b8c9-4d0e-9f1a-2b3c4d5e6f07', 'suspended', null),
  makeTenant('gone', GONE_ID, 'deleted'),
  makeTenant('fresh', FRESH_ID, 'provisioning'),
]
const DOMAINS = new Map<string, string>([['shop.acme-corp.com', ACME_ID]])

/** In-memory lookup that counts its calls. */
function memoryLookup(): TenantLookup & { calls: string[] } {
  const bySlug = new Map(TENANTS.map((t) => [t.slug, t]))
  const byId = new Map(TENANTS.map((t) => [t.id, t]))
  const calls: string[] = []
  return {
    calls,
    async bySlug(slug) { calls.push(`slug:${slug}`); return bySlug.get(slug) ?? null },
    async byId(id) { calls.push(`id:${id}`); return byId.get(id) ?? null },
    async byDomain(domain) {
      calls.push(`domain:${domain}`)
      const id = DOMAINS.get(domain)
      return id === undefined ? null : byId.get(id) ?? null
    },
  }
}

function req(partial: Partial<RequestInfo> = {}): RequestInfo {
  return { host: undefined, path: '/', headers: {}, ...partial }
}

/** The TenantryError `fn` throws or rejects with; fails the test when it returns. */
async function caught(fn: () => unknown): Promise<TenantryError> {
  let result: unknown
  try {
    result = await fn()
  } catch (err) {
    expect(err).toBeInstanceOf(TenantryError)
    return err as TenantryError
  }
  throw new Error(`expected a TenantryError, got ${JSON.stringify(result)}`)
}

async function expectError(fn: () => unknown, code: string, status: number, message?: RegExp): Promise<TenantryError> {
  const err = await caught(fn)
  expect({ code: err.code, status: err.status }).toEqual({ code, status })
  if (message) expect(err.message).toMatch(message)
  return err
}

const slug = (value: string, source: string): Identifier => ({ kind: 'slug', value, source })

// ─── normalizeHost ───────────────────────────────────────────────────────────────────────────────

describe('normalizeHost', () => {
  it('lowercases, strips the port and one trailing dot', () => {
    expect(normalizeHost('ACME.Example.COM.:8080')).toBe('acme.example.com')
    expect(normalizeHost('acme.localhost:3000')).toBe('acme.localhost')
    expect(normalizeHost('acme.localhost.')).toBe('acme.localhost')
    expect(normalizeHost('localhost:65535')).toBe('localhost')
    expect(normalizeHost('localhost:1')).toBe('localhost')
  })

  it('returns null without a host', () => {
    expect(normalizeHost(undefined)).toBeNull()
    expect(normalizeHost('')).toBeNull()
  })

  it('returns null for IPv4 and IPv6 literals', () => {
    for (const host of ['127.0.0.1', '127.0.0.1:3000', '10.1.2.3', '127.1', '0x7f.1', '[::1]', '[::1]:3000', '[2001:db8::1]:443', '[::ffff:127.0.0.1]']) {
      expect(normalizeHost(host), host).toBeNull()
    }
  })

  it.each([
    ['two trailing dots', 'acme.localhost..'],
    ['an empty label', 'a..b.localhost'],
    ['a leading dot', '.acme.localhost'],
    ['only a port', ':3000'],
    ['port 0', 'acme.localhost:0'],
    ['port 65536', 'acme.localhost:65536'],
    ['a six-digit port', 'acme.localhost:000080'],
    ['an empty port', 'acme.localhost:'],
    ['a named port', 'acme.localhost:http'],
    ['a negative port', 'acme.localhost:-1'],
    ['two colons', 'acme.localhost:1:2'],
    ['an unclosed IPv6 literal', '[::1'],
    ['a non-hex IPv6 literal', '[zz::1]'],
    ['a bad port on IPv6', '[::1]:99999'],
    ['percent-encoding', '%61cme.localhost'],
    ['an underscore', 'acme_corp.localhost'],
    ['a space', 'ac me.localhost'],
    ['a Cyrillic look-alike', '\u0430cme.localhost'],
    ['a KELVIN SIGN that lowercases to k', 'ac\u212Ame.localhost'],
    ['a fullwidth letter', '\uff41cme.localhost'],
    ['a label starting with a hyphen', '-acme.localhost'],
    ['a label ending with a hyphen', 'acme-.localhost'],
    ['a 64-character label', `${'a'.repeat(64)}.localhost`],
  ])('rejects a host with %s as TENANT_INVALID 400', async (_what, host) => {
    await expectError(() => normalizeHost(host), 'TENANT_INVALID', 400, /^Host '/)
  })

  it('accepts 253 characters and rejects 254', async () => {
    const host253 = [...Array(3).fill('a'.repeat(63)), 'a'.repeat(61)].join('.')
    expect(host253).toHaveLength(253)
    expect(normalizeHost(host253)).toBe(host253)
    expect(normalizeHost(`${host253}.`)).toBe(host253)
    const host254 = [...Array(3).fill('a'.repeat(63)), 'a'.repeat(62)].join('.')
    await expectError(() => normalizeHost(host254), 'TENANT_INVALID', 400, /254 characters long; at most 253/)
  })

  it('gives each host its own answer when hosts alternate, and keeps throwing for a bad one', async () => {
    expect(normalizeHost('a.localhost')).toBe('a.localhost')
    expect(normalizeHost('B.localhost')).toBe('b.localhost')
    expect(normalizeHost('a.localhost')).toBe('a.localhost')
    await expectError(() => normalizeHost('a_b.localhost'), 'TENANT_INVALID', 400)
    await expectError(() => normalizeHost('a_b.localhost'), 'TENANT_INVALID', 400)
    expect(normalizeHost('127.0.0.1')).toBeNull()
    expect(normalizeHost('a.localhost')).toBe('a.localhost')
  })

  it('keeps the message short for a huge host', async () => {
    const err = await expectError(() => normalizeHost('a'.repeat(100_000)), 'TENANT_INVALID', 400, /100000 characters long/)
    expect(err.message.length).toBeLessThan(200)
  })
})

// ─── subdomain ───────────────────────────────────────────────────────────────────────────────────

describe('subdomain strategy', () => {
  const s = subdomain({ baseDomain: 'localhost' })

  it('finds the slug in the label before the base domain, case-insensitively', () => {
    expect(s.identify(req({ host: 'acme.localhost:3000' }))).toEqual(slug('acme', 'subdomain'))
    expect(s.identify(req({ host: 'ACME.LocalHost' }))).toEqual(slug('acme', 'subdomain'))
    expect(s.identify(req({ host: 'acme.localhost.' }))).toEqual(slug('acme', 'subdomain'))
    expect(s.identify(req({ host: `${'a'.repeat(63)}.localhost` }))).toEqual(slug('a'.repeat(63), 'subdomain'))
  })

  it('returns null for the base domain itself, other hosts, IPs and no host', () => {
    for (const host of [undefined, 'localhost', 'localhost:3000', 'LOCALHOST.', 'example.org', 'acmelocalhost', 'acme.notlocalhost', '127.0.0.1:3000', '[::1]:3000']) {
      expect(s.identify(req({ host })), String(host)).toBeNull()
    }
  })

  it.each(['www', 'admin', 'api'])('rejects the reserved subdomain %s', async (label) => {
    const err = await expectError(() => s.identify(req({ host: `${label}.localhost` })), 'TENANT_INVALID', 400, /is reserved/)
    expect(err.message).toContain(`'${label}'`)
  })

  it('rejects IDN (xn--) labels', async () => {
    await expectError(() => s.identify(req({ host: 'xn--80ak6aa92e.localhost' })), 'TENANT_INVALID', 400, /IDN/)
  })

  it('rejects nested subdomains', async () => {
    await expectError(() => s.identify(req({ host: 'a.b.localhost' })), 'TENANT_INVALID', 400, /nested subdomains/)
  })

  it('rejects a 64-character label', async () => {
    await expectError(() => s.identify(req({ host: `${'a'.repeat(64)}.localhost` })), 'TENANT_INVALID', 400, /64 characters/)
  })

  it('rejects an all-digit label and garbage hosts', async () => {
    await expectError(() => s.identify(req({ host: '123.localhost' })), 'TENANT_INVALID', 400, /must contain a letter/)
    await expectError(() => s.identify(req({ host: '\u0430cme.localhost' })), 'TENANT_INVALID', 400)
    await expectError(() => s.identify(req({ host: 'acme.localhost:99999' })), 'TENANT_INVALID', 400, /port/)
  })

  it('works under a multi-label base domain given in any case', () => {
    const ex = subdomain({ baseDomain: 'Example.COM' })
    expect(ex.baseDomain).toBe('example.com')
    expect(ex.identify(req({ host: 'acme.example.com' }))).toEqual(slug('acme', 'subdomain'))
    expect(ex.identify(req({ host: 'example.com' }))).toBeNull()
    expect(ex.identify(req({ host: 'acme.example.com.evil.net' }))).toBeNull()
  })

  it.each(['', 'localhost:3000', '127.0.0.1', 'bad_domain', 'a..b'])('rejects baseDomain %j as CONFIG_INVALID', async (baseDomain) => {
    await expectError(() => subdomain({ baseDomain }), 'CONFIG_INVALID', 500, /baseDomain/)
  })
})

// ─── customDomain ────────────────────────────────────────────────────────────────────────────────

describe('customDomain strategy', () => {
  const s = customDomain({ exclude: ['example.com'] })

  it('returns the normalised host as a domain identifier', () => {
    expect(s.identify(req({ host: 'Shop.Acme-Corp.com:443' }))).toEqual({ kind: 'domain', value: 'shop.acme-corp.com', source: 'custom-domain' })
    expect(s.identify(req({ host: 'notexample.com' }))).toEqual({ kind: 'domain', value: 'notexample.com', source: 'custom-domain' })
  })

  it('returns null for IPs, localhost, single labels and excluded domains', () => {
    for (const host of [undefined, '127.0.0.1', '[::1]:80', 'localhost', 'acme.localhost:3000', 'intranet', 'example.com', 'EXAMPLE.com.', 'acme.example.com', 'a.b.example.com']) {
      expect(s.identify(req({ host })), String(host)).toBeNull()
    }
  })

  it('rejects garbage hosts', async () => {
    await expectError(() => s.identify(req({ host: 'shop_acme.com' })), 'TENANT_INVALID', 400)
  })

  it('rejects a bad excluded domain at factory time', async () => {
    await expectError(() => customDomain({ exclude: ['example.com:80'] }), 'CONFIG_INVALID', 500)
    await expectError(() => customDomain({ exclude: ['bad_domain'] }), 'CONFIG_INVALID', 500)
  })
})

// ─── header ──────────────────────────────────────────────────────────────────────────────────────

describe('header strategy', () => {
  const s = header()

  it('reads a slug or a uuid', () => {
    expect(s.identify(req({ headers: { 'x-tenant': 'acme' } }))).toEqual(slug('acme', 'header'))
    expect(s.identify(req({ headers: { 'x-tenant': ACME_ID } }))).toEqual({ kind: 'id', value: ACME_ID, source: 'header' })
    expect(s.identify(req({ headers: { 'x-tenant': ['acme', 'acme'] } }))).toEqual(slug('acme', 'header'))
  })

  it('returns null without the header', () => {
    expect(s.identify(req({ headers: {} }))).toBeNull()
    expect(s.identify(req({ headers: { 'x-tenant': undefined } }))).toBeNull()
    expect(s.identify(req({ headers: { 'x-tenant': [] } }))).toBeNull()
    expect(s.identify(req({ headers: { 'x-org': 'acme' } }))).toBeNull()
  })

  it('reads a configured header name', () => {
    const org = header({ name: 'X-Org' })
    expect(org.identify(req({ headers: { 'x-org': 'beta' } }))).toEqual(slug('beta', 'header'))
    expect(org.identify(req({ headers: { 'x-tenant': 'beta' } }))).toBeNull()
  })

  it('does not case-fold: ACME is TENANT_INVALID', async () => {
    await expectError(() => s.identify(req({ headers: { 'x-tenant': 'ACME' } })), 'TENANT_INVALID', 400, /must be lowercase/)
    await expectError(() => s.identify(req({ headers: { 'x-tenant': ACME_ID.toUpperCase() } })), 'TENANT_INVALID', 400, /must be lowercase/)
  })

  it.each([
    ['empty', '', /is empty/],
    ['padded', ' acme', /DNS label/],
    ['joined by Node from two headers', 'acme, beta', /DNS label/],
    ['reserved', 'admin', /is reserved/],
    ['IDN', 'xn--acme', /IDN/],
    ['a Cyrillic look-alike', '\u0430cme', /DNS label/],
    ['percent-encoded', '%61cme', /DNS label/],
    ['64 characters', 'a'.repeat(64), /64 characters long/],
  ])('rejects a value that is %s', async (_what, value, message) => {
    await expectError(() => s.identify(req({ headers: { 'x-tenant': value } })), 'TENANT_INVALID', 400, message)
  })

  it('rejects repeated headers with different values', async () => {
    await expectError(() => s.identify(req({ headers: { 'x-tenant': ['acme', 'beta'] } })), 'TENANT_INVALID', 400, /more than once/)
  })

  it('does not echo an over-long value', async () => {
    const err = await expectError(() => s.identify(req({ headers: { 'x-tenant': 'b'.repeat(10_000) } })), 'TENANT_INVALID', 400, /10000 characters long/)
    expect(err.message).not.toContain('b'.repeat(81))
    expect(err.message.length).toBeLessThan(250)
    expect(JSON.stringify(err.toJSON()).length).toBeLessThan(500)
  })

  it('rejects an invalid header name at factory time', async () => {
    await expectError(() => header({ name: 'x tenant' }), 'CONFIG_INVALID', 500)
  })
})

// ─── pathPrefix ──────────────────────────────────────────────────────────────────────────────────

describe('pathPrefix strategy', () => {
  const s = pathPrefix()

  it('reads the slug after the prefix', () => {
    expect(s.identify(req({ path: '/t/acme' }))).toEqual(slug('acme', 'path-prefix'))
    expect(s.identify(req({ path: '/t/acme/' }))).toEqual(slug('acme', 'path-prefix'))
    expect(s.identify(req({ path: '/t/acme/api/projects' }))).toEqual(slug('acme', 'path-prefix'))
    expect(s.identify(req({ path: '/t/acme?page=2' }))).toEqual(slug('acme', 'path-prefix'))
  })

  it('returns null for paths outside the prefix', () => {
    for (const path of ['/', '/api/projects', '/tenants/acme', '/T/acme', '/tx/acme', '']) {
      expect(s.identify(req({ path })), path).toBeNull()
    }
  })

  it.each(['/t', '/t/', '/t//api', '/t?x=1'])('rejects %s (no slug) as TENANT_INVALID', async (path) => {
    await expectError(() => s.identify(req({ path })), 'TENANT_INVALID', 400, /has no tenant after '\/t\/'/)
  })

  it('validates the slug strictly', async () => {
    await expectError(() => s.identify(req({ path: '/t/ACME/api' })), 'TENANT_INVALID', 400, /must be lowercase/)
    await expectError(() => s.identify(req({ path: '/t/www' })), 'TENANT_INVALID', 400, /is reserved/)
    await expectError(() => s.identify(req({ path: `/t/${'a'.repeat(64)}` })), 'TENANT_INVALID', 400, /64 characters long/)
    await expectError(() => s.identify(req({ path: '/t/xn--80ak6aa92e' })), 'TENANT_INVALID', 400, /IDN/)
    await expectError(() => s.identify(req({ path: '/t/\u0430cme' })), 'TENANT_INVALID', 400, /DNS label/)
  })

  it('rejects percent-encoded slugs', async () => {
    await expectError(() => s.identify(req({ path: '/t/%61cme/api' })), 'TENANT_INVALID', 400, /percent-encoded/)
    await expectError(() => s.identify(req({ path: '/t/acme%2Fbeta' })), 'TENANT_INVALID', 400, /percent-encoded/)
  })

  it('rejects dot segments that a proxy would normalise to another tenant', async () => {
    await expectError(() => s.identify(req({ path: '/t/../admin' })), 'TENANT_INVALID', 400)
    await expectError(() => s.identify(req({ path: '/t/acme/../beta/api' })), 'TENANT_INVALID', 400, /'\.' or '\.\.' segments/)
    await expectError(() => s.identify(req({ path: '/t/acme/./api' })), 'TENANT_INVALID', 400, /'\.' or '\.\.' segments/)
    expect(s.identify(req({ path: '/t/acme/.well-known/x' }))).toEqual(slug('acme', 'path-prefix'))
  })

  it('takes a custom prefix, with or without a trailing slash', () => {
    const org = pathPrefix({ prefix: '/org/' })
    expect(org.identify(req({ path: '/org/beta/x' }))).toEqual(slug('beta', 'path-prefix'))
    expect(org.identify(req({ path: '/t/beta/x' }))).toBeNull()
  })

  it.each(['/', '', 't', '/t/<x>'])('rejects prefix %j as CONFIG_INVALID', async (prefix) => {
    await expectError(() => pathPrefix({ prefix }), 'CONFIG_INVALID', 500)
  })

  it('stripPathPrefix returns the rest of the path', () => {
    expect(stripPathPrefix('/t/acme/api/projects', '/t')).toBe('/api/projects')
    expect(stripPathPrefix('/t/acme/api/projects')).toBe('/api/projects')
    expect(stripPathPrefix('/t/acme', '/t')).toBe('/')
    expect(stripPathPrefix('/t/acme/', '/t')).toBe('/')
    expect(stripPathPrefix('/t/acme?x=1', '/t')).toBe('/?x=1')
    expect(stripPathPrefix('/t/acme/p?x=1', '/t')).toBe('/p?x=1')
    expect(stripPathPrefix('/health', '/t')).toBe('/health')
    expect(stripPathPrefix('/tx/acme', '/t')).toBe('/tx/acme')
    expect(stripPathPrefix('/org/acme/x', '/org/')).toBe('/x')
  })
})

// ─── jwtClaim ────────────────────────────────────────────────────────────────────────────────────

const SECRET = 'test-secret-that-is-at-least-32-bytes-long'
const OTHER_SECRET = 'another-secret-that-is-32-bytes-or-more!'
const ISSUER = 'https://auth.tenantry.test'
const AUDIENCE = 'tenantry-api'

async function token(
  claims: Record<string, unknown>,
  opts: { secret?: string; issuer?: string; audience?: string; expiresIn?: string | number; notBefore?: string } = {},
): Promise<string> {
  const jwt = new SignJWT(claims)
    .setProtectedHeader({ alg: 'HS256' })
    .setIssuedAt()
    .setIssuer(opts.issuer ?? ISSUER)
    .setAudience(opts.audience ?? AUDIENCE)
    .setExpirationTime(opts.expiresIn ?? '5m')
  if (opts.notBefore) jwt.setNotBefore(opts.notBefore)
  return jwt.sign(new TextEncoder().encode(opts.secret ?? SECRET))
}

const bearer = (t: string): RequestInfo => req({ headers: { authorization: `Bearer ${t}` } })

describe('jwtClaim strategy', () => {
  const s = jwtClaim({ secret: SECRET, issuer: ISSUER, audience: AUDIENCE })

  it('reads a slug or an id from a verified token', async () => {
    expect(await s.identify(bearer(await token({ tenant: 'acme' })))).toEqual(slug('acme', 'jwt-claim'))
    expect(await s.identify(bearer(await token({ tenant: BETA_ID })))).toEqual({ kind: 'id', value: BETA_ID, source: 'jwt-claim' })
  })

  it('accepts the scheme in any case and a configured claim and header', async () => {
    const t = await token({ org: 'beta' })
    expect(await s.identify(req({ headers: { authorization: `bearer ${t}` } }))).toBeNull()
    const org = jwtClaim({ secret: new TextEncoder().encode(SECRET), claim: 'org', header: 'X-Auth' })
    expect(await org.identify(req({ headers: { 'x-auth': `BEARER ${t}` } }))).toEqual(slug('beta', 'jwt-claim'))
  })

  it('returns null without the header and synchronously', () => {
    expect(s.identify(req())).toBeNull()
  })

  it('returns null for a verified token without the claim', async () => {
    expect(await s.identify(bearer(await token({ sub: 'user-1' })))).toBeNull()
  })

  it.each([
    ['Basic dXNlcjpwYXNz'],
    ['Bearer'],
    ['Bearer '],
    ['Bearer two tokens'],
    [''],
  ])('rejects authorization %j as TENANT_TOKEN_INVALID 401', async (authorization) => {
    await expectError(() => s.identify(req({ headers: { authorization } })), 'TENANT_TOKEN_INVALID', 401, /not 'Bearer <token>'/)
  })

  it('rejects an expired token', async () => {
    const t = await token({ tenant: 'acme' }, { expiresIn: Math.floor(Date.now() / 1000) - 60 })
    const err = await expectError(() => s.identify(bearer(t)), 'TENANT_TOKEN_INVALID', 401, /token expired/)
    expect(err.details).toEqual({ reason: 'token expired' })
  })

  it('rejects a token not valid yet', async () => {
    const t = await token({ tenant: 'acme' }, { notBefore: '10m' })
    await expectError(() => s.identify(bearer(t)), 'TENANT_TOKEN_INVALID', 401, /not yet valid/)
  })

  it('rejects a wrong issuer and a wrong audience', async () => {
    await expectError(async () => s.identify(bearer(await token({ tenant: 'acme' }, { issuer: 'https://evil.test' }))), 'TENANT_TOKEN_INVALID', 401, /wrong issuer/)
    await expectError(async () => s.identify(bearer(await token({ tenant: 'acme' }, { audience: 'other-api' }))), 'TENANT_TOKEN_INVALID', 401, /wrong audience/)
  })

  it('rejects a bad signature and a tampered payload', async () => {
    await expectError(async () => s.identify(bearer(await token({ tenant: 'acme' }, { secret: OTHER_SECRET }))), 'TENANT_TOKEN_INVALID', 401, /bad signature/)
    const [h, , sig] = (await token({ tenant: 'acme' })).split('.')
    const forged = Buffer.from(JSON.stringify({ tenant: 'beta', iss: ISSUER, aud: AUDIENCE, exp: Math.floor(Date.now() / 1000) + 300 })).toString('base64url')
    await expectError(() => s.identify(bearer(`${h}.${forged}.${sig}`)), 'TENANT_TOKEN_INVALID', 401, /bad signature/)
  })

  it('rejects unsigned (alg none) and malformed tokens', async () => {
    const none = `${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from('{"tenant":"acme"}').toString('base64url')}.`
    await expectError(() => s.identify(bearer(none)), 'TENANT_TOKEN_INVALID', 401)
    await expectError(() => s.identify(bearer('abc.def.ghi')), 'TENANT_TOKEN_INVALID', 401, /malformed token/)
  })

  it('rejects an asymmetric token on a secret strategy, and a HS256 token on a public key', async () => {
    const { publicKey, privateKey } = await generateKeyPair('RS256')
    const rs = await new SignJWT({ tenant: 'acme' }).setProtectedHeader({ alg: 'RS256' }).setExpirationTime('5m').sign(privateKey)
    await expectError(() => s.identify(bearer(rs)), 'TENANT_TOKEN_INVALID', 401, /algorithm not allowed/)
    const byKey = jwtClaim({ publicKey })
    expect(await byKey.identify(bearer(rs))).toEqual(slug('acme', 'jwt-claim'))
    const hs = await new SignJWT({ tenant: 'acme' }).setProtectedHeader({ alg: 'HS256' }).sign(new TextEncoder().encode(SECRET))
    await expectError(() => byKey.identify(bearer(hs)), 'TENANT_TOKEN_INVALID', 401)
  })

  it('verifies against a JWKS', async () => {
    const { publicKey, privateKey } = await generateKeyPair('ES256')
    const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256' }
    const byJwks = jwtClaim({ jwks: { keys: [jwk] } })
    const t = await new SignJWT({ tenant: 'beta' }).setProtectedHeader({ alg: 'ES256', kid: 'k1' }).setExpirationTime('5m').sign(privateKey)
    expect(await byJwks.identify(bearer(t))).toEqual(slug('beta', 'jwt-claim'))
    const unknown = await new SignJWT({ tenant: 'beta' }).setProtectedHeader({ alg: 'ES256', kid: 'k2' }).sign(privateKey)
    await expectError(() => byJwks.identify(bearer(unknown)), 'TENANT_TOKEN_INVALID', 401, /no known key/)
  })

  it.each([
    ['uppercase', 'ACME', /must be lowercase/],
    ['a number', 42, /not number/],
    ['null', null, /not null/],
    ['reserved', 'admin', /is reserved/],
  ])('rejects a claim that is %s as TENANT_INVALID', async (_what, value, message) => {
    await expectError(async () => s.identify(bearer(await token({ tenant: value }))), 'TENANT_INVALID', 400, message)
  })

  it('rejects repeated authorization headers with different values', async () => {
    const a = await token({ tenant: 'acme' })
    const b = await token({ tenant: 'beta' })
    await expectError(() => s.identify(req({ headers: { authorization: [`Bearer ${a}`, `Bearer ${b}`] } })), 'TENANT_TOKEN_INVALID', 401, /more than once/)
  })

  it('rejects a missing, doubled or weak key at factory time', async () => {
    await expectError(() => jwtClaim({}), 'CONFIG_INVALID', 500, /exactly one of secret, publicKey or jwks \(got 0\)/)
    const { publicKey } = await generateKeyPair('RS256')
    await expectError(() => jwtClaim({ secret: SECRET, publicKey }), 'CONFIG_INVALID', 500, /got 2/)
    await expectError(() => jwtClaim({ secret: 'short' }), 'CONFIG_INVALID', 500, /at least 32 bytes/)
    await expectError(() => jwtClaim({ jwks: { keys: 'nope' } as never }), 'CONFIG_INVALID', 500, /JSON Web Key Set/)
  })
})

// ─── custom ──────────────────────────────────────────────────────────────────────────────────────

describe('custom strategy', () => {
  it('validates a returned string like the header', async () => {
    expect(custom('cookie', () => 'acme').identify(req())).toEqual(slug('acme', 'cookie'))
    expect(custom('cookie', () => ACME_ID).identify(req())).toEqual({ kind: 'id', value: ACME_ID, source: 'cookie' })
    expect(custom('cookie', () => null).identify(req())).toBeNull()
    expect(custom('cookie', () => undefined).identify(req())).toBeNull()
    expect(await custom('cookie', async () => 'beta').identify(req())).toEqual(slug('beta', 'cookie'))
    await expectError(() => custom('cookie', () => 'ACME').identify(req()), 'TENANT_INVALID', 400, /must be lowercase/)
    await expectError(() => custom('cookie', async () => 'www').identify(req()), 'TENANT_INVALID', 400, /is reserved/)
  })

  it('validates a returned identifier and sets its source', async () => {
    expect(custom('mtls', () => ({ kind: 'slug', value: 'acme', source: 'spoofed' })).identify(req())).toEqual(slug('acme', 'mtls'))
    expect(custom('mtls', () => ({ kind: 'domain', value: 'Shop.Acme-Corp.com', source: 'x' })).identify(req()))
      .toEqual({ kind: 'domain', value: 'shop.acme-corp.com', source: 'mtls' })
    await expectError(() => custom('mtls', () => ({ kind: 'id', value: 'acme', source: 'x' })).identify(req()), 'TENANT_INVALID', 400, /uuid/)
    await expectError(() => custom('mtls', () => ({ kind: 'slug', value: 'Acme', source: 'x' })).identify(req()), 'TENANT_INVALID', 400, /lowercase/)
  })

  it('passes the raw request through', () => {
    const s = custom('raw', (r) => (r.raw as { org: string }).org)
    expect(s.identify(req({ raw: { org: 'beta' } }))).toEqual(slug('beta', 'raw'))
  })

  it('treats a wrong return type and a missing name as CONFIG_INVALID', async () => {
    await expectError(() => custom('bad', () => 42 as never).identify(req()), 'CONFIG_INVALID', 500, /returned number/)
    await expectError(() => custom('', () => null), 'CONFIG_INVALID', 500)
  })
})

// ─── TenantResolver ──────────────────────────────────────────────────────────────────────────────

describe('TenantResolver', () => {
  const jwt = jwtClaim({ secret: SECRET, issuer: ISSUER, audience: AUDIENCE })
  const resolver = (strategies: ResolveStrategy[], lookup = memoryLookup(), baseDomainHint?: string) =>
    new TenantResolver({ strategies, lookup, ...(baseDomainHint ? { baseDomainHint } : {}) })
  const standard = () => resolver([subdomain({ baseDomain: 'localhost' }), header(), jwt])

  it('resolves by subdomain, header slug, header id, path and custom domain', async () => {
    const r = resolver([subdomain({ baseDomain: 'example.com' }), customDomain({ exclude: ['example.com'] }), header(), pathPrefix()])
    expect((await r.resolve(req({ host: 'acme.example.com' }))).id).toBe(ACME_ID)
    expect((await r.resolve(req({ headers: { 'x-tenant': 'beta' } }))).id).toBe(BETA_ID)
    expect((await r.resolve(req({ headers: { 'x-tenant': BETA_ID } }))).slug).toBe('beta')
    expect((await r.resolve(req({ path: '/t/beta/x' }))).id).toBe(BETA_ID)
    expect((await r.resolve(req({ host: 'shop.acme-corp.com' }))).id).toBe(ACME_ID)
  })

  it('returns the tenant object from the lookup', async () => {
    expect(await standard().resolve(req({ host: 'acme.localhost:3000' }))).toBe(TENANTS[0])
  })

  it('is TENANT_REQUIRED when no strategy finds an identifier, naming the ways to send one', async () => {
    const err = await expectError(() => standard().resolve(req({ host: 'localhost:3000' })), 'TENANT_REQUIRED', 400)
    expect(err.message).toBe(
      "The request does not name a tenant. Send the tenant as a subdomain of 'localhost', an x-tenant header or a bearer token with a 'tenant' claim.",
    )
    expect(err.details).toEqual({ tried: ['subdomain', 'header', 'jwt-claim'] })
  })

  it('is TENANT_REQUIRED for a verified token without the claim when it is the only strategy', async () => {
    const t = await token({ sub: 'user-1' })
    await expectError(() => resolver([jwt]).resolve(bearer(t)), 'TENANT_REQUIRED', 400, /bearer token with a 'tenant' claim\.$/)
  })

  it('uses a custom strategy and its hint', async () => {
    const cookie = custom('cookie', (r) => (r.headers.cookie === 'tenant=beta' ? 'beta' : null), { hint: 'a tenant cookie' })
    const r = resolver([header(), cookie])
    expect((await r.resolve(req({ headers: { cookie: 'tenant=beta' } }))).id).toBe(BETA_ID)
    await expectError(() => r.resolve(req()), 'TENANT_REQUIRED', 400, /an x-tenant header or a tenant cookie\.$/)
    await expectError(() => resolver([custom('plain', () => null)]).resolve(req()), 'TENANT_REQUIRED', 400, /the 'plain' strategy\.$/)
  })

  it('is TENANT_NOT_FOUND for an unknown subdomain, naming the host and base domain', async () => {
    const err = await expectError(() => standard().resolve(req({ host: 'nope.localhost:3000' })), 'TENANT_NOT_FOUND', 404)
    expect(err.message).toBe(
      "No tenant matches host 'nope.localhost:3000' (subdomain 'nope'). Known base domain is 'localhost'; check the subdomain or register the domain.",
    )
    expect(err.details).toEqual({ source: 'subdomain', slug: 'nope' })
  })

  it('uses baseDomainHint for unknown custom domains', async () => {
    const r = resolver([customDomain({ exclude: ['example.com'] })], memoryLookup(), 'example.com')
    await expectError(() => r.resolve(req({ host: 'shop.unknown.com' })), 'TENANT_NOT_FOUND', 404, /host 'shop\.unknown\.com' \(custom-domain 'shop\.unknown\.com'\)\. Known base domain is 'example\.com'/)
  })

  it('is TENANT_NOT_FOUND for an unknown header slug or id, naming source and value', async () => {
    await expectError(() => standard().resolve(req({ headers: { 'x-tenant': 'nope' } })), 'TENANT_NOT_FOUND', 404, /^No tenant has the slug 'nope' \(from header\)/)
    await expectError(() => standard().resolve(req({ headers: { 'x-tenant': NOBODY_ID } })), 'TENANT_NOT_FOUND', 404, new RegExp(`the id '${NOBODY_ID}' \\(from header\\)`))
  })

  it('treats a deleted tenant as not found, by slug and by id', async () => {
    await expectError(() => standard().resolve(req({ host: 'gone.localhost' })), 'TENANT_NOT_FOUND', 404)
    await expectError(() => standard().resolve(req({ headers: { 'x-tenant': GONE_ID } })), 'TENANT_NOT_FOUND', 404)
  })

  it('is TENANT_SUSPENDED with the reason for a suspended tenant', async () => {
    const err = await expectError(() => standard().resolve(req({ host: 'frozen.localhost' })), 'TENANT_SUSPENDED', 403, /Unpaid invoice #42/)
    expect(err.details).toEqual({ reason: 'Unpaid invoice #42' })
    const quiet = await expectError(() => standard().resolve(req({ headers: { 'x-tenant': 'quiet' } })), 'TENANT_SUSPENDED', 403, /is suspended\./)
    expect(quiet.details).toEqual({ reason: null })
  })

  it('is TENANT_NOT_READY with retryAfter 5 for a provisioning tenant', async () => {
    const err = await expectError(() => standard().resolve(req({ host: 'fresh.localhost' })), 'TENANT_NOT_READY', 503, /retry in 5 seconds/)
    expect(err.retryAfter).toBe(5)
  })

  it('is TENANT_MISMATCH for a token of tenant A on tenant B\'s host, without B\'s details', async () => {
    const t = await token({ tenant: 'beta' })
    const err = await expectError(
      () => standard().resolve(req({ host: 'acme.localhost', headers: { authorization: `Bearer ${t}` } })),
      'TENANT_MISMATCH', 403,
    )
    expect(err.message).toBe(
      "The request names two different tenants: 'acme' from subdomain and 'beta' from jwt-claim. Send identifiers of one tenant only.",
    )
    expect(err.details).toEqual({ sources: ['subdomain', 'jwt-claim'] })
    expect(JSON.stringify(err.toJSON())).not.toContain(BETA_ID)
  })

  it('is TENANT_MISMATCH before looking at the status of either tenant', async () => {
    const t = await token({ tenant: 'frozen' })
    await expectError(() => standard().resolve(req({ host: 'acme.localhost', headers: { authorization: `Bearer ${t}` } })), 'TENANT_MISMATCH', 403)
  })

  it('accepts the same tenant named by slug and by id', async () => {
    const lookup = memoryLookup()
    const r = resolver([subdomain({ baseDomain: 'localhost' }), header(), jwt], lookup)
    const t = await token({ tenant: ACME_ID })
    const tenant = await r.resolve(req({ host: 'acme.localhost', headers: { 'x-tenant': ACME_ID, authorization: `Bearer ${t}` } }))
    expect(tenant.id).toBe(ACME_ID)
    // The id is checked against the tenant found by slug: no second lookup.
    expect(lookup.calls).toEqual(['slug:acme'])
  })

  it('accepts the same tenant named by id first and slug second', async () => {
    const lookup = memoryLookup()
    const r = resolver([header(), pathPrefix()], lookup)
    expect((await r.resolve(req({ path: '/t/beta/x', headers: { 'x-tenant': BETA_ID } }))).slug).toBe('beta')
    expect(lookup.calls).toEqual([`id:${BETA_ID}`])
    await expectError(() => r.resolve(req({ path: '/t/acme/x', headers: { 'x-tenant': BETA_ID } })), 'TENANT_MISMATCH', 403, /from header and 'acme' from path-prefix/)
  })

  it('accepts the same tenant named by custom domain and header', async () => {
    const r = resolver([customDomain(), header()])
    expect((await r.resolve(req({ host: 'shop.acme-corp.com', headers: { 'x-tenant': 'acme' } }))).id).toBe(ACME_ID)
    await expectError(() => r.resolve(req({ host: 'shop.acme-corp.com', headers: { 'x-tenant': 'beta' } })), 'TENANT_MISMATCH', 403)
  })

  it('looks a repeated identifier up once', async () => {
    const lookup = memoryLookup()
    const r = resolver([subdomain({ baseDomain: 'localhost' }), header()], lookup)
    expect((await r.resolve(req({ host: 'acme.localhost', headers: { 'x-tenant': 'acme' } }))).id).toBe(ACME_ID)
    expect(lookup.calls).toEqual(['slug:acme'])
  })

  it('is TENANT_NOT_FOUND when a second identifier names no tenant', async () => {
    await expectError(
      () => standard().resolve(req({ host: 'acme.localhost', headers: { 'x-tenant': 'nope' } })),
      'TENANT_NOT_FOUND', 404, /'nope' \(from header\)/,
    )
  })

  it('uses the subdomain when a verified token lacks the claim', async () => {
    const t = await token({ sub: 'user-1' })
    expect((await standard().resolve(req({ host: 'acme.localhost', headers: { authorization: `Bearer ${t}` } }))).id).toBe(ACME_ID)
  })

  it('propagates the first strategy error, even when another strategy found a tenant', async () => {
    await expectError(() => standard().resolve(req({ host: 'www.localhost', headers: { 'x-tenant': 'ACME' } })), 'TENANT_INVALID', 400, /^Subdomain 'www'/)
    await expectError(() => standard().resolve(req({ host: 'acme.localhost', headers: { 'x-tenant': 'ACME' } })), 'TENANT_INVALID', 400, /^Header x-tenant/)
    const expired = await token({ tenant: 'acme' }, { expiresIn: Math.floor(Date.now() / 1000) - 60 })
    await expectError(() => standard().resolve(req({ host: 'acme.localhost', headers: { authorization: `Bearer ${expired}` } })), 'TENANT_TOKEN_INVALID', 401, /token expired/)
  })

  it('propagates lookup failures unchanged', async () => {
    const boom = new Error('catalog down')
    const lookup: TenantLookup = { bySlug: async () => { throw boom }, byId: async () => null, byDomain: async () => null }
    await expect(resolver([header()], lookup as never).resolve(req({ headers: { 'x-tenant': 'acme' } }))).rejects.toBe(boom)
  })

  it('rejects a hand-written strategy that returns an unknown kind', async () => {
    const odd: ResolveStrategy = { name: 'odd', identify: () => ({ kind: 'email', value: 'a@b', source: 'odd' }) as never }
    await expectError(() => resolver([odd]).resolve(req()), 'CONFIG_INVALID', 500, /unknown kind 'email'/)
  })

  it('rejects a bad configuration', async () => {
    await expectError(() => new TenantResolver({ strategies: [], lookup: memoryLookup() }), 'CONFIG_INVALID', 500)
    await expectError(() => new TenantResolver({ strategies: [header()], lookup: {} as TenantLookup }), 'CONFIG_INVALID', 500)
  })
})
