import { existsSync, mkdirSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import { chromium, type Browser } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildDemoApp } from '../demo/app.ts'
import { createTenantry, header, subdomain, type Tenantry } from '../src/index.ts'
import { DEMO_MIGRATIONS } from './helpers/backends.ts'

// Issue 12: the demo's white-label page at `/` for each tenant host, in headless Chromium
// (Debian's `chromium`; .ci/run installs it). acme and globex must look different.

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
const HAVE_CHROMIUM = existsSync(CHROMIUM)
if (!HAVE_CHROMIUM) {
  if (process.env.CI) throw new Error(`CI=true but Chromium is not at ${CHROMIUM}: install Debian's chromium (.ci/run does).`)
  console.warn(`[tenantry tests] Chromium not found at ${CHROMIUM}: the branding screenshot test is SKIPPED.`)
}
const SHOTS = join(tmpdir(), 'tenantry-branding-screenshots')
let shots = 0

describe.skipIf(!HAVE_CHROMIUM)('branded page per tenant host (headless Chromium)', () => {
  let tenantry: Tenantry
  let app: FastifyInstance
  let browser: Browser
  let port = 0

  beforeAll(async () => {
    tenantry = await createTenantry({
      dataDir: 'memory',
      migrations: DEMO_MIGRATIONS,
      resolve: [subdomain({ baseDomain: 'localhost' }), header()],
      observe: { logger: false, metrics: false, tracing: false, metering: false },
    })
    await tenantry.migrate()
    await tenantry.config.plans.create('pro', { branding: { accentColor: '#fde68a' } })
    await tenantry.provision({ slug: 'acme', name: 'Acme Corp', tier: 'pooled', plan: 'pro' })
    await tenantry.provision({ slug: 'globex', name: 'Globex', tier: 'schema' })
    await tenantry.config.set('acme', '/branding', { displayName: 'Acme Corp', primaryColor: '#b91c1c' })
    await tenantry.config.set('globex', '/branding', { displayName: 'Globex Corporation', primaryColor: '#047857', backgroundColor: '#f0fdf4' })
    await tenantry.flags.set({ key: 'new-editor', rules: [{ plans: ['pro'], variant: 'on' }] })
    app = await buildDemoApp(tenantry)
    await app.listen({ host: '127.0.0.1', port: 0 })
    port = (app.server.address() as { port: number }).port
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      // *.localhost to this machine whatever the resolver says.
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--host-resolver-rules=MAP *.localhost 127.0.0.1'],
    })
    mkdirSync(SHOTS, { recursive: true })
  }, 120_000)

  afterAll(async () => {
    await browser?.close()
    await app?.close()
    await tenantry?.close()
  })

  async function visit(slug: string): Promise<{ shot: Buffer; title: string; header: string; background: string; heading: string; tenant: string | null; card: string }> {
    const page = await browser.newPage({ viewport: { width: 800, height: 400 } })
    try {
      const res = await page.goto(`http://${slug}.localhost:${port}/`)
      expect(res?.status()).toBe(200)
      const shot = await page.screenshot({ type: 'png' })
      writeFileSync(join(SHOTS, `${++shots}-${slug}.png`), shot)
      return {
        shot,
        title: await page.title(),
        header: await page.$eval('header', (e) => getComputedStyle(e).backgroundColor),
        background: await page.$eval('body', (e) => getComputedStyle(e).backgroundColor),
        heading: await page.$eval('h1', (e) => e.textContent ?? ''),
        tenant: await page.$eval('body', (e) => e.getAttribute('data-tenant')),
        card: await page.$eval('.card', (e) => e.textContent ?? ''),
      }
    } finally {
      await page.close()
    }
  }

  it('acme and globex look different, each from its own configuration', async () => {
    const acme = await visit('acme')
    const globex = await visit('globex')
    expect([acme.title, acme.heading, acme.tenant, acme.header, acme.background]).toEqual(['Acme Corp', 'Acme Corp', 'acme', 'rgb(185, 28, 28)', 'rgb(255, 255, 255)'])
    expect([globex.title, globex.heading, globex.tenant, globex.header, globex.background]).toEqual(['Globex Corporation', 'Globex Corporation', 'globex', 'rgb(4, 120, 87)', 'rgb(240, 253, 244)'])
    expect(acme.card).toContain('new editor on')
    expect(globex.card).toContain('new editor off')
    // Real screenshots (PNG), and not the same picture.
    for (const s of [acme.shot, globex.shot]) expect(s.subarray(1, 4).toString()).toBe('PNG')
    expect(acme.shot.equals(globex.shot)).toBe(false)
  })

  it('a branding change shows on the next page load, without a restart', async () => {
    await tenantry.config.set('globex', '/branding/primaryColor', '#7c3aed')
    expect((await visit('globex')).header).toBe('rgb(124, 58, 237)')
    await tenantry.config.changePlan('globex', 'pro')
    expect((await visit('globex')).card).toContain('new editor on')
  })

  it('an unknown host is a coded 404, not a page', async () => {
    const page = await browser.newPage()
    try {
      const res = await page.goto(`http://nobody.localhost:${port}/`)
      expect(res?.status()).toBe(404)
      expect(JSON.parse(await page.$eval('body', (e) => e.textContent ?? '')).code).toBe('TENANT_NOT_FOUND')
    } finally {
      await page.close()
    }
  })
})
