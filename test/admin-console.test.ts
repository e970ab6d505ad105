import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, copyFileSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { basename, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { FastifyInstance } from 'fastify'
import { chromium, type Browser, type Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildDemoApp } from '../demo/app.ts'
import { adminTokens } from '../src/admin/tokens.ts'
import { createTenantry, type Tenantry } from '../src/index.ts'
import { DEMO_MIGRATIONS, dropPostgresLeftovers, freshDatabase, postgresAvailable } from './helpers/backends.ts'

// Issue 17: the web console end to end in Debian's headless Chromium (playwright-core, no browser
// download) against the real demo server with the admin plugin mounted at /admin, on PGlite.
// Screenshots of each page go to test-artifacts/admin-console/ (gitignored).

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
const HAS_CHROMIUM = existsSync(CHROMIUM)
if (!HAS_CHROMIUM) {
  if (process.env.CI) throw new Error(`CI=true but Chromium is not installed at ${CHROMIUM} (.ci/run installs Debian's chromium package).`)
  console.warn(`[tenantry tests] Chromium not found at ${CHROMIUM}: the browser tests of the admin console are SKIPPED.`)
}
const ARTIFACTS = fileURLToPath(new URL('../test-artifacts/admin-console/', import.meta.url))

// TENANTRY_TEST_CONSOLE_BACKEND=postgres runs the same pages against the real PostgreSQL of
// TENANTRY_TEST_PG_URL instead of PGlite (the coordinator's full run does it once).
const ON_POSTGRES = process.env.TENANTRY_TEST_CONSOLE_BACKEND === 'postgres'
if (ON_POSTGRES && !(await postgresAvailable())) throw new Error('TENANTRY_TEST_CONSOLE_BACKEND=postgres but PostgreSQL (TENANTRY_TEST_PG_URL) is not reachable.')
const DB_NAME = 'tenantry_test_admin_console'
const ROLE_PREFIX = 'th_admc'

describe.skipIf(!HAS_CHROMIUM)(`admin console in Chromium (${ON_POSTGRES ? 'PostgreSQL' : 'PGlite'})`, () => {
  let dir: string
  let tenantry: Tenantry
  let app: FastifyInstance
  let base: string
  let token: string
  let browser: Browser
  let page: Page
  const problems: string[] = []
  let databaseUrl: string | undefined
  const options = () => ({
    ...(databaseUrl ? { databaseUrl, rolePrefix: ROLE_PREFIX } : { dataDir: join(dir, 'data') }),
    migrations: join(dir, 'migrations'), portability: { backupDir: join(dir, 'backups') },
    observe: { logger: false as const, tracing: false as const, metrics: false as const, metering: false as const },
  })

  const shot = (name: string) => page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: false })

  beforeAll(async () => {
    mkdirSync(ARTIFACTS, { recursive: true })
    dir = mkdtempSync(join(tmpdir(), 'tenantry-admin-console-'))
    if (ON_POSTGRES) {
      await dropPostgresLeftovers(ROLE_PREFIX, DB_NAME)
      databaseUrl = await freshDatabase(DB_NAME)
    }
    mkdirSync(join(dir, 'migrations'))
    copyFileSync(join(DEMO_MIGRATIONS, '0001_projects_and_tasks.sql'), join(dir, 'migrations', '0001_projects_and_tasks.sql'))
    // A fleet at migration 1, then a second migration file: the console will run it.
    const first = await createTenantry(options())
    for (const [slug, tier] of [['acme', 'pooled'], ['globex', 'schema'], ['hooli', 'pooled'], ['initech', 'schema']] as const) await first.provision({ slug, tier, name: slug.toUpperCase() })
    await first.close()
    writeFileSync(join(dir, 'migrations', '0002_labels.sql'), "CREATE TABLE labels (tenant_id uuid NOT NULL DEFAULT current_setting('tenantry.tenant_id')::uuid, id bigint GENERATED ALWAYS AS IDENTITY, name text NOT NULL, PRIMARY KEY (tenant_id, id));\n")
    tenantry = await createTenantry(options())
    token = (await (await adminTokens(tenantry)).create({ name: 'browser', role: 'admin' }, 'test:setup')).token
    // A day of metered usage for acme (what the meter writes each interval), for its charts.
    const acme = (await tenantry.findTenant('acme'))!
    const hour = 3_600_000
    const now = Math.floor(Date.now() / hour) * hour
    await tenantry.observe.usage.write(Array.from({ length: 24 }, (_, i) => ({
      tenantId: acme.id, intervalStart: new Date(now - (23 - i) * hour), intervalMs: 60_000,
      requests: 200 + 150 * Math.round(Math.sin(i / 3) * 10) / 10 + 10 * i, errors: i % 7 === 0 ? 3 : 0, rejections: 0,
      statements: 400 + 20 * i, dbTimeMs: 80 + 5 * i + (i === 17 ? 400 : 0), rows: 1000, storageBytes: null,
    })))
    app = await buildDemoApp(tenantry, { admin: true })
    base = await app.listen({ port: 0, host: '127.0.0.1' })
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'] })
    page = await browser.newPage({ viewport: { width: 1280, height: 800 } })
    // Responses of 400 and more are collected by URL (the wrong token's 401 is expected).
    page.on('response', (r) => { if (r.status() >= 400) problems.push(`${r.status()} ${new URL(r.url()).pathname}${new URL(r.url()).search}`) })
    page.on('console', (m) => { if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) problems.push(m.text()) })
    page.on('pageerror', (e) => problems.push(String(e)))
  })

  afterAll(async () => {
    await browser?.close()
    await app?.close()
    await tenantry?.close()
    if (ON_POSTGRES) await dropPostgresLeftovers(ROLE_PREFIX, DB_NAME)
    rmSync(dir, { recursive: true, force: true })
  })

  it('signs in with an admin token using only the keyboard (a wrong token is refused)', async () => {
    await page.goto(`${base}/admin`)
    expect(page.url()).toBe(`${base}/admin/`)
    await page.getByLabel('Admin token').waitFor()
    await shot('sign-in')
    await page.keyboard.type('tnta_wrong')
    await page.keyboard.press('Enter')
    await expect(page.getByRole('alert').textContent()).resolves.toMatch(/ADMIN_UNAUTHORIZED/)
    await page.getByLabel('Admin token').fill('')
    await page.getByLabel('Admin token').focus()
    await page.keyboard.type(token)
    await page.keyboard.press('Enter')
    await page.getByRole('heading', { level: 1, name: 'Fleet overview' }).waitFor()
    await expect(page.locator('.lead').first().textContent()).resolves.toMatch(/^4 tenants on 1 server/)
    await expect(page.getByRole('img', { name: 'schema: 2 tenants' }).count()).resolves.toBe(1)
    // acme is the only tenant with metered usage: all of main's database time.
    await page.getByRole('img', { name: /^acme: 100% of main's database time, \d+ requests$/ }).waitFor()
    await shot('overview')
  })

  it('provisions a tenant from the keyboard, then finds it in the list by search', async () => {
    await page.goto(`${base}/admin/#/tenants`)
    await page.getByRole('heading', { level: 1, name: 'Tenants' }).waitFor()
    await page.getByRole('button', { name: 'Provision tenant…' }).focus()
    await page.keyboard.press('Enter')
    await page.getByRole('dialog', { name: 'Provision a tenant' }).waitFor()
    // The slug field has the focus; Tab walks the form.
    await page.keyboard.type('wayne')
    await page.keyboard.press('Tab')
    await page.keyboard.type('Wayne Enterprises')
    await page.keyboard.press('Tab')
    await page.keyboard.press('ArrowDown') // pooled → schema
    await page.keyboard.press('Tab')
    await page.keyboard.press('Enter') // submits the form
    await page.getByRole('heading', { level: 1, name: /Wayne Enterprises/ }).waitFor()
    expect((await tenantry.findTenant('wayne'))).toMatchObject({ tier: 'schema', status: 'active', name: 'Wayne Enterprises' })

    await page.goto(`${base}/admin/#/tenants`)
    const rows = page.locator('table[aria-label="Tenants"] tbody tr')
    await expect.poll(() => rows.count()).toBe(5)
    await page.getByRole('searchbox').pressSequentially('way')
    await expect.poll(() => rows.allTextContents()).toEqual([expect.stringMatching(/^wayneWayne Enterprisesschemaactive/)])
    await page.getByRole('searchbox').fill('')
    await expect.poll(() => page.locator('table[aria-label="Tenants"] tbody th').allTextContents()).toEqual(['acme', 'globex', 'hooli', 'initech', 'wayne'])
    await shot('tenants')
  })

  it('suspends the tenant after a confirmation; the demo app then answers 403 for it', async () => {
    const before = await fetch(`${base}/api/tenant`, { headers: { 'x-tenant': 'wayne' } })
    expect(before.status).toBe(200)
    await page.getByRole('link', { name: 'wayne' }).click()
    await page.getByRole('button', { name: 'Suspend…' }).click()
    const dialog = page.getByRole('dialog', { name: 'Suspend wayne?' })
    await dialog.waitFor()
    await page.keyboard.press('Escape')
    await dialog.waitFor({ state: 'detached' })
    expect((await tenantry.findTenant('wayne'))?.status).toBe('active')
    await page.getByRole('button', { name: 'Suspend…' }).click()
    await page.getByLabel('Reason (shown to its users)').fill('Invoice overdue')
    await page.getByRole('dialog').getByRole('button', { name: 'Suspend' }).click()
    await page.locator('h1 .status-suspended').waitFor()
    const after = await fetch(`${base}/api/tenant`, { headers: { 'x-tenant': 'wayne' } })
    expect(after.status).toBe(403)
    expect(await after.json()).toMatchObject({ code: 'TENANT_SUSPENDED' })
    await expect(page.getByRole('table', { name: 'Audit entries' }).locator('tbody tr').first().textContent()).resolves.toMatch(/token:browsertenant\.suspendwayne\{"reason":"Invoice overdue"\}/)
    await shot('tenant')
  })

  it("draws a tenant's usage over time as a chart", async () => {
    await page.goto(`${base}/admin/#/tenants/acme`)
    const chart = page.getByRole('figure', { name: /^Usage chart of acme: \d+ requests in 7 days$/ })
    await chart.waitFor()
    expect(await chart.locator('canvas').count()).toBe(1)
    expect(await chart.locator('.u-legend').textContent()).toMatch(/requests.*db time/)
    await shot('tenant-usage')
  })

  it('runs the pending migration and watches its progress reach 100%', async () => {
    await page.goto(`${base}/admin/#/migrations`)
    await expect(page.locator('.lead').textContent()).resolves.toMatch(/^2 migration files; 3 of 4 targets have pending migrations/)
    await page.getByRole('button', { name: 'Run migrations…' }).click()
    await page.getByRole('dialog').getByRole('button', { name: 'Run' }).click()
    const bar = page.getByRole('progressbar', { name: 'Operation progress' })
    await bar.waitFor()
    await page.locator('.live').getByText('100%').waitFor({ timeout: 120_000 })
    await expect(page.locator('.live p').first().textContent()).resolves.toMatch(/^done 3 of 3 targets/)
    expect(await bar.getAttribute('value')).toBe('100')
    await shot('migrations')
    expect((await tenantry.planMigrations()).filter((t) => t.pending.length > 0)).toEqual([])
    // The plan is read again when the run ends.
    await expect(page.locator('.lead').textContent()).resolves.toMatch(/^2 migration files; 0 of 4 targets have pending migrations/)
  })

  it('backs up a tenant from the console: the operation reaches 100%, the backup is listed and downloads; a restore over it and an erasure need the slug typed', async () => {
    await tenantry.withTenant('acme', () => tenantry.db.query("INSERT INTO projects (name) VALUES ('alpha'), ('beta')"))
    await page.goto(`${base}/admin/#/tenants/acme`)
    const backups = page.getByRole('region', { name: 'Backups' })
    await backups.getByText('No backups yet.').waitFor()
    await page.getByRole('button', { name: 'Back up…' }).click()
    await page.getByRole('dialog', { name: 'Back up acme?' }).getByRole('button', { name: 'Back up' }).click()
    await backups.locator('.live').getByText('100%').waitFor({ timeout: 60_000 })
    await expect(backups.locator('.live p').textContent()).resolves.toMatch(/^done/)
    const rows = backups.getByRole('table', { name: 'Backups of acme' }).locator('tbody tr')
    await expect.poll(() => rows.count()).toBe(1)
    const [archive] = await tenantry.portability.listBackups({ tenant: 'acme' })
    expect([archive.rows, archive.tier, archive.path.startsWith(join(dir, 'backups'))]).toEqual([2, 'pooled', true])
    await expect(rows.first().textContent()).resolves.toMatch(/pooled2[\d.]+ KBno/)
    const [saved] = await Promise.all([page.waitForEvent('download'), backups.getByRole('button', { name: /^Download backup of / }).click()])
    expect(saved.suggestedFilename()).toBe(basename(archive.path))
    expect(readFileSync((await saved.path())!).equals(readFileSync(archive.path))).toBe(true)
    await shot('tenant-backups')

    // Over the live tenant: Restore stays off until the slug is typed; cancelled here.
    await backups.getByRole('button', { name: /^Restore backup of / }).click()
    const dialog = page.getByRole('dialog', { name: /^Restore acme's backup of / })
    await dialog.getByLabel('over acme (its current data is replaced)').check()
    const confirm = dialog.getByRole('button', { name: 'Restore' })
    await dialog.getByLabel('Type acme to confirm').fill('acm')
    expect(await confirm.isDisabled()).toBe(true)
    await dialog.getByLabel('Type acme to confirm').fill('acme')
    expect(await confirm.isDisabled()).toBe(false)
    await dialog.getByLabel('as a new tenant (a copy)').check()
    expect(await dialog.getByLabel('Type acme to confirm').count()).toBe(0)
    // As a copy: its operation's page follows it to 100%; the copy serves the same rows.
    await dialog.getByLabel('New slug').fill('acme-copy')
    await confirm.click()
    await page.getByRole('heading', { level: 1, name: 'restore acme-copy' }).waitFor()
    await page.locator('.live').getByText('100%').waitFor({ timeout: 60_000 })
    expect(await tenantry.findTenant('acme-copy')).toMatchObject({ status: 'active', tier: 'pooled' })
    expect(await tenantry.withTenant('acme-copy', async () => (await tenantry.db.query<{ name: string }>('SELECT name FROM projects ORDER BY name')).rows)).toEqual([{ name: 'alpha' }, { name: 'beta' }])
    // One record each, as a CLI run's: the operation's start and outcome with the console's actor and request id.
    await expect.poll(async () => (await tenantry.audit.list({ limit: 5 })).map((e) => [e.action, e.actor, e.slug, e.requestId !== null])).toEqual([
      ['operation.restore.done', 'token:browser', 'acme-copy', true], ['operation.restore.start', 'token:browser', 'acme-copy', true],
      ['backup.download', 'token:browser', 'acme', true], ['operation.backup.done', 'token:browser', 'acme', true], ['operation.backup.start', 'token:browser', 'acme', true],
    ])

    // Erasing the copy once deleted: Erase stays off until its slug is typed; its operation's page reaches 100%.
    await tenantry.delete('acme-copy')
    await page.goto(`${base}/admin/#/tenants/acme-copy`)
    await page.getByRole('button', { name: 'Erase…' }).click()
    const erase = page.getByRole('dialog', { name: 'Erase acme-copy?' })
    const go = erase.getByRole('button', { name: 'Erase' })
    expect(await go.isDisabled()).toBe(true)
    await erase.getByLabel('Type acme-copy to confirm').fill('acme-copy')
    await go.click()
    await page.getByRole('heading', { level: 1, name: 'erase acme-copy' }).waitFor()
    await page.locator('.live').getByText('100%').waitFor({ timeout: 60_000 })
    expect(await tenantry.findTenant('acme-copy')).toBeNull()
    await expect.poll(async () => (await tenantry.audit.list({ limit: 1 }))[0].action).toBe('operation.erase.done')
  })

  it('moves a tenant to another tier after a confirmation; it serves the same rows from there', async () => {
    await tenantry.withTenant('hooli', () => tenantry.db.query("INSERT INTO projects (name) VALUES ('gamma')"))
    await page.goto(`${base}/admin/#/tenants/hooli`)
    await page.getByRole('button', { name: 'Move…' }).click()
    const dialog = page.getByRole('dialog', { name: 'Move hooli?' })
    await dialog.getByLabel('Tier').selectOption('schema')
    await dialog.getByRole('button', { name: 'Move' }).click()
    await dialog.waitFor({ state: 'detached', timeout: 60_000 })
    await expect.poll(() => page.locator('dl dd').first().textContent()).toBe('schema')
    expect(await tenantry.findTenant('hooli')).toMatchObject({ tier: 'schema', status: 'active' })
    expect(await tenantry.withTenant('hooli', async () => (await tenantry.db.query<{ name: string }>('SELECT name FROM projects')).rows)).toEqual([{ name: 'gamma' }])
  })

  it('shows operations and the audit log; every page is readable at 1280×800 with no script error', async () => {
    await page.goto(`${base}/admin/#/operations`)
    await page.getByRole('table', { name: 'Operations' }).waitFor()
    const opRows = await page.locator('table[aria-label="Operations"] tbody tr').allTextContents()
    expect(opRows.slice(0, 5)).toEqual([expect.stringMatching(/^movehoolidone100%/), expect.stringMatching(/^eraseacme-copydone100%/), expect.stringMatching(/^restoreacme-copydone100%/), expect.stringMatching(/^backupacmedone100%/), expect.stringMatching(/^migrate-done100%/)])
    expect(await page.getByRole('progressbar', { name: /^migrate\s+progress$/ }).getAttribute('value')).toBe('100')
    await shot('operations')
    await page.goto(`${base}/admin/#/audit`)
    await page.getByRole('table', { name: 'Audit entries' }).waitFor()
    await page.getByRole('button', { name: 'Verify chain' }).click()
    // Every entry so far: the sign-ins (and the refused one), the provisions and the migration (start and outcome), the suspension.
    const entries = (await tenantry.audit.verify()).entries
    expect(entries).toBeGreaterThan(4)
    await expect(page.getByRole('status').textContent()).resolves.toMatch(new RegExp(`^Intact: ${entries} entries check out`))
    expect((await tenantry.audit.list({ action: 'admin.sign-in', limit: 1 }))[0].actor).toMatch(/^token:/)
    await shot('audit')
    for (const hash of ['overview', 'tenants', 'tenants/acme', 'plans', 'operations', 'migrations', 'audit']) {
      await page.goto(`${base}/admin/#/${hash}`)
      await page.locator('h1').waitFor()
      expect([hash, await page.evaluate(() => document.documentElement.scrollWidth)]).toEqual([hash, 1280])
    }
    expect(problems).toEqual(['401 /admin/api/sign-in']) // the wrong token of the sign-in test, refused by the (audited) sign-in route
  })

  it("edits a tenant's configuration and branding in the console: the demo's branded page for that tenant changes; plans change and flags roll out with a confirmation", async () => {
    await tenantry.flags.set({ key: 'new-editor' })
    await tenantry.config.plans.create('pro', {})
    // The demo's white-label page at / for globex (the demo resolves the x-tenant header too).
    const branded = await browser.newContext({ extraHTTPHeaders: { 'x-tenant': 'globex' }, viewport: { width: 1280, height: 800 } })
    const site = await branded.newPage()
    const headerColor = async () => {
      await site.goto(`${base}/`)
      return site.locator('header').evaluate((e) => getComputedStyle(e).backgroundColor)
    }
    try {
      expect(await headerColor()).toBe('rgb(51, 65, 85)') // the demo's default #334155
      await page.goto(`${base}/admin/#/tenants/globex`)
      const branding = page.getByRole('region', { name: 'Branding' })
      await branding.getByLabel('Primary colour', { exact: true }).fill('red')
      await branding.getByRole('button', { name: 'Save branding' }).click()
      await expect(branding.getByRole('alert').textContent()).resolves.toMatch(/^CONFIG_INVALID .*at \/branding\/primaryColor$/)
      expect(await tenantry.config.get('globex', '/branding', { layer: 'tenant' })).toBeUndefined()
      await branding.getByLabel('Primary colour', { exact: true }).fill('#b91c1c')
      await branding.getByLabel('Primary colour', { exact: true }).press('Enter')
      await page.getByRole('img', { name: 'Branding preview: GLOBEX, primary colour #b91c1c' }).waitFor()
      await expect.poll(headerColor).toBe('rgb(185, 28, 28)')
      await site.screenshot({ path: join(ARTIFACTS, 'branded-globex.png') })

      // The JSON editor of its own layer: validated by the server, the refusal names the pointer.
      const editor = page.getByLabel('Its own layer (JSON)')
      expect(JSON.parse(await editor.inputValue())).toEqual({ branding: { primaryColor: '#b91c1c' } })
      await editor.fill('{"branding": {"primaryColor": "#b91c1c", "accentColor": "nope"}}')
      await page.getByRole('button', { name: 'Save configuration' }).click()
      await expect(page.getByRole('region', { name: 'Configuration' }).getByRole('alert').textContent()).resolves.toMatch(/^CONFIG_INVALID .*at \/branding\/accentColor$/)
      await editor.fill('{"branding": {"primaryColor": "#b91c1c", "accentColor": "#fde68a"}}')
      await page.getByRole('button', { name: 'Save configuration' }).click()
      await expect.poll(() => tenantry.config.get('globex', '/branding/accentColor', { layer: 'tenant' })).toBe('#fde68a')
      await expect.poll(() => page.getByRole('table', { name: 'Flags as evaluated' }).locator('tbody tr').allTextContents()).toEqual(['new-editorfalseoffDEFAULT'])
      await page.screenshot({ path: join(ARTIFACTS, 'tenant-config.png'), fullPage: true })

      // Its plan, after a confirmation.
      await page.getByLabel('Change to').selectOption('pro')
      await page.getByRole('button', { name: 'Change plan…' }).click()
      await page.getByRole('dialog', { name: 'Move globex to plan pro?' }).getByRole('button', { name: 'Change plan' }).click()
      await page.getByText('On plan pro.').waitFor()
      expect((await tenantry.findTenant('globex'))?.plan).toBe('pro')

      // The Flags page: roll new-editor out to every tenant; the branded page shows it on.
      await page.goto(`${base}/admin/#/flags`)
      await page.getByRole('table', { name: 'Feature flags' }).waitFor()
      await page.getByRole('button', { name: 'Roll out…' }).click()
      await page.getByLabel('Percentage of tenants').fill('100')
      await page.getByRole('dialog', { name: 'Roll out new-editor' }).getByRole('button', { name: 'Roll out' }).click()
      await expect.poll(() => page.getByRole('progressbar', { name: 'new-editor rollout' }).getAttribute('value')).toBe('100')
      await shot('flags')
      await expect.poll(async () => { await site.goto(`${base}/`); return site.locator('.card').textContent() }).toMatch(/new editor on/)
      const audit = (await tenantry.audit.list({ limit: 4 })).map((e) => [e.action, e.actor])
      expect(audit).toEqual([['flag.set', 'token:browser'], ['tenant.plan.set', 'token:browser'], ['config.set', 'token:browser'], ['config.set', 'token:browser']])
    } finally {
      await branded.close()
    }
  })

  it('creates a plan with its limits and changes its layer from the Plans page; a layer that is not JSON is refused in the dialog', async () => {
    await page.goto(`${base}/admin/#/plans`)
    await page.getByRole('table', { name: 'Plans' }).waitFor()
    await page.getByRole('button', { name: 'Create plan…' }).click()
    const create = page.getByRole('dialog', { name: 'Create a plan' })
    await create.getByLabel('Name').fill('gold')
    await create.getByLabel('Settings (JSON)').fill('{"limits": {"concurrency": 4}}')
    await create.getByRole('button', { name: 'Create' }).click()
    await create.waitFor({ state: 'detached' }).catch(async (err) => { throw new Error(`${err}: ${await create.textContent()}`) })
    expect(await tenantry.config.plans.get('gold')).toEqual({ limits: { concurrency: 4 } })
    await page.getByRole('button', { name: 'Edit plan gold' }).click()
    const edit = page.getByRole('dialog', { name: 'Change plan gold?' })
    expect(JSON.parse(await edit.getByLabel('Its layer (JSON)').inputValue())).toEqual({ limits: { concurrency: 4 } })
    await edit.getByLabel('Its layer (JSON)').fill('{"limits": {"concurrency": 8}')
    await edit.getByRole('button', { name: 'Save plan' }).click()
    await expect(edit.getByRole('alert').textContent()).resolves.toMatch(/^INVALID_JSON The layer is not JSON/)
    await edit.getByLabel('Its layer (JSON)').fill('{"limits": {"concurrency": 8}}')
    await edit.getByRole('button', { name: 'Save plan' }).click()
    await edit.waitFor({ state: 'detached' })
    expect(await tenantry.config.plans.get('gold')).toEqual({ limits: { concurrency: 8 } })
    await expect.poll(() => page.getByRole('row', { name: /^gold / }).textContent()).toBe('gold{"limits":{"concurrency":8}}edit…')
    await shot('plans')
  })

  it('has no WCAG 2 A/AA violations on any page (axe-core)', async () => {
    // axe is injected as a script, which the console's CSP forbids: a context that bypasses it.
    const axe = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8')
    const context = await browser.newContext({ bypassCSP: true, viewport: { width: 1280, height: 800 } })
    try {
      const audited = await context.newPage()
      const violations: Record<string, string[]> = {}
      for (const hash of ['sign-in', 'overview', 'tenants', 'tenants/acme', 'tenants/globex', 'plans', 'flags', 'operations', 'migrations', 'audit']) {
        await audited.goto(`${base}/admin/#/${hash}`)
        await audited.evaluate((t) => { if (t) sessionStorage.setItem('tenantry.admin.token', t); else sessionStorage.clear() }, hash === 'sign-in' ? null : token)
        await audited.reload()
        await audited.locator('h1').waitFor()
        await audited.waitForLoadState('networkidle')
        await audited.addScriptTag({ content: axe })
        violations[hash] = await audited.evaluate(async () => {
          const r = await (window as unknown as { axe: { run(d: Document, o: object): Promise<{ violations: { id: string; impact: string; nodes: { html: string }[] }[] }> } }).axe.run(document, { runOnly: ['wcag2a', 'wcag2aa'] })
          return r.violations.map((v) => `${v.impact} ${v.id}: ${v.nodes[0]?.html.slice(0, 120)}`)
        })
      }
      expect(violations).toEqual({ 'sign-in': [], overview: [], tenants: [], 'tenants/acme': [], 'tenants/globex': [], plans: [], flags: [], operations: [], migrations: [], audit: [] })
    } finally {
      await context.close()
    }
  })

  it('a token revoked while signed in sends the console back to the sign-in page', async () => {
    await (await adminTokens(tenantry)).revoke('browser', 'test:teardown')
    await page.goto(`${base}/admin/#/tenants`)
    await page.getByLabel('Admin token').waitFor()
    expect(await page.evaluate(() => sessionStorage.getItem('tenantry.admin.token'))).toBeNull()
  })
})
