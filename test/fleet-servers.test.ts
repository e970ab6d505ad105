import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { randomUUID } from 'node:crypto'
import { createTenantry, isTenantryError, type Tenantry } from '../src/index.ts'
import type { Server } from '../src/core/types.ts'
import type { ServerDriver } from '../src/data/driver.ts'
import { backends, DEMO_MIGRATIONS, dropPostgresLeftovers, freshDatabase, outcome, postgresAvailable, type Backend } from './helpers/backends.ts'
import { cli, show } from './helpers/cli-process.ts'

// tenantry.addServer: a server is checked (valid input, reachable, prepared) before it is
// registered; a name in the fleet is never repointed (409 CONFLICT); the same name and URL again
// is a no-op. On PostgreSQL (the second server is another database of the test server) and PGlite.

const DB_NAME = 'tenantry_test_fleet_servers'
const PREFIX = 'th_fleet'
const PG_UP = await postgresAvailable()
const OBSERVE = { metering: false, metrics: false, tracing: false } as const

/** The code, details and message of a refused call. */
async function refusal(p: Promise<unknown>): Promise<{ code: string; status: number; details: unknown; message: string }> {
  try {
    await p
  } catch (err) {
    if (isTenantryError(err)) return { code: err.code, status: err.status, details: err.details, message: err.message }
    throw err
  }
  throw new Error('expected a refusal')
}

function fleetSuite(backend: Backend): void {
  describe.skipIf(!backend.enabled)(`tenantry.addServer (${backend.name})`, () => {
    let tenantry: Tenantry
    let url: string | undefined
    let dir: string
    let secondUrl: string
    let otherUrl: string
    let unreachableUrl: string

    const registered = async () => ({
      catalog: (await tenantry.catalog.listServers()).map((s) => `${s.name} ${s.region ?? '-'} ${s.capacityWeight} ${s.url}`),
      dataPlane: tenantry.dataPlane.serverNames().sort(),
    })

    beforeAll(async () => {
      dir = mkdtempSync(join(tmpdir(), 'tenantry-fleet-servers-'))
      url = await backend.url()
      tenantry = await createTenantry({ ...(url ? { databaseUrl: url, rolePrefix: PREFIX } : { dataDir: 'memory' }), migrations: DEMO_MIGRATIONS, observe: OBSERVE })
      if (url) {
        secondUrl = await freshDatabase(`${PREFIX}_second`)
        // The same database under another host name: another URL for the name.
        otherUrl = secondUrl.replace('127.0.0.1', 'localhost')
        unreachableUrl = 'postgres://postgres:secret-pw@127.0.0.1:1/none'
      } else {
        secondUrl = `pglite:${join(dir, 'second')}`
        otherUrl = 'pglite:memory'
        // A data directory under a regular file cannot be made.
        unreachableUrl = `pglite:${join(dir, 'a-file', 'data')}`
        writeFileSync(join(dir, 'a-file'), 'not a directory')
      }
    }, 240_000)

    afterAll(async () => {
      await tenantry?.close()
      await backend.cleanUp()
      rmSync(dir, { recursive: true, force: true })
    }, 120_000)

    it('refuses bad input with VALIDATION_FAILED naming the field, and registers nothing', async () => {
      const before = await registered()
      expect(before.dataPlane).toEqual(['main'])
      const cases: [Record<string, unknown>, string, string][] = [
        [{ name: 'Second', url: secondUrl }, 'name', 'pattern'],
        [{ name: '2nd', url: secondUrl }, 'name', 'pattern'],
        [{ name: 'second', url: 'ftp://127.0.0.1/db' }, 'url', 'pattern'],
        [{ name: 'second', url: 'pglite:' }, 'url', 'pattern'],
        [{ name: 'second', url: 42 }, 'url', 'pattern'],
        [{ name: 'second', url: secondUrl, region: '' }, 'region', 'length'],
        [{ name: 'second', url: secondUrl, capacityWeight: 1.5 }, 'capacityWeight', 'range'],
        [{ name: 'second', url: secondUrl, capacityWeight: 0 }, 'capacityWeight', 'range'],
      ]
      for (const [input, field, rule] of cases) {
        const r = await refusal(tenantry.addServer(input as never))
        expect([r.code, r.status, r.details], JSON.stringify(input)).toEqual(['VALIDATION_FAILED', 400, { field, rule }])
      }
      expect(await registered()).toEqual(before)
    })

    it('an unreachable server is refused (400, field url) and stays registered nowhere: not in the catalog, not in this process', async () => {
      const before = await registered()
      const r = await refusal(tenantry.addServer({ name: 'nowhere', url: unreachableUrl }))
      expect([r.code, r.status, r.details]).toEqual(['VALIDATION_FAILED', 400, { field: 'url', rule: 'unreachable' }])
      expect(r.message).toMatch(/^Server 'nowhere' could not be reached or prepared at /)
      expect(r.message).not.toMatch(/secret-pw/)
      expect(await registered()).toEqual(before)
      expect(await outcome(Promise.resolve().then(() => tenantry.dataPlane.driver('nowhere')))).toBe('SERVER_NOT_FOUND')
      // doctor walks the registered servers only
      expect((await tenantry.doctor()).findings).toEqual([])
    })

    it('adds a reachable server with its region and weight, and tenants can be placed on it', async () => {
      const added = await tenantry.addServer({ name: 'second', url: secondUrl, region: 'eu', capacityWeight: 2 })
      expect(added).toEqual({ name: 'second', url: secondUrl, region: 'eu', capacityWeight: 2, mainDatabase: url ? `${PREFIX}_second` : 'main' })
      const now = await registered()
      expect(now.catalog.slice(1)).toEqual([`second eu 2 ${secondUrl}`])
      expect(now.dataPlane).toEqual(['main', 'second'])
      const t = await tenantry.provision({ slug: 'on-second', tier: 'schema', server: 'second' })
      expect([t.tier, t.placement.server]).toEqual(['schema', 'second'])
      await tenantry.withTenant('on-second', () => tenantry.db.query("INSERT INTO projects (name) VALUES ('there')"))
      const rows = await tenantry.withTenant('on-second', async () => (await tenantry.db.query<{ name: string }>('SELECT name FROM projects')).rows)
      expect(rows).toEqual([{ name: 'there' }])
    })

    it('the same name and URL again is a no-op that returns the stored record (region and weight as stored when omitted)', async () => {
      const before = await registered()
      const driver = tenantry.dataPlane.driver('second')
      const stored = { name: 'second', url: secondUrl, region: 'eu', capacityWeight: 2, mainDatabase: url ? `${PREFIX}_second` : 'main' }
      expect(await tenantry.addServer({ name: 'second', url: secondUrl })).toEqual(stored)
      expect(await tenantry.addServer({ name: 'second', url: secondUrl, region: 'eu', capacityWeight: 2 })).toEqual(stored)
      expect(await registered()).toEqual(before)
      expect(tenantry.dataPlane.driver('second')).toBe(driver)
    })

    it('a name in the fleet with another URL, region or weight is a CONFLICT (409) naming the server; nothing is repointed', async () => {
      const before = await registered()
      const driver = tenantry.dataPlane.driver('second')
      const cases = [
        [{ name: 'second', url: otherUrl }, /^Server 'second' is already in the fleet at /],
        [{ name: 'second', url: secondUrl, region: 'us' }, /^Server 'second' is already in the fleet with region eu;/],
        [{ name: 'second', url: secondUrl, capacityWeight: 3 }, /^Server 'second' is already in the fleet with capacity weight 2;/],
        [{ name: 'main', url: secondUrl }, /^Server 'main' is already in the fleet at /],
      ] as const
      for (const [input, message] of cases) {
        const r = await refusal(tenantry.addServer(input))
        expect([r.code, r.status, r.details], JSON.stringify(input)).toEqual(['CONFLICT', 409, { field: 'name' }])
        expect(r.message).toMatch(message)
      }
      expect(await registered()).toEqual(before)
      expect(tenantry.dataPlane.driver('second')).toBe(driver)
      expect(tenantry.dataPlane.server('second').url).toBe(secondUrl)
      // its tenant is still served where it was
      const rows = await tenantry.withTenant('on-second', async () => (await tenantry.db.query<{ name: string }>('SELECT name FROM projects')).rows)
      expect(rows).toEqual([{ name: 'there' }])
    })

    it.skipIf(backend.name === 'PGlite')('another process: the same name and URL registers the server there too; another URL is a CONFLICT; two processes racing for a new name with different URLs: one wins, and every process registers the winner', async () => {
      const other = await createTenantry({ databaseUrl: url!, rolePrefix: PREFIX, migrations: DEMO_MIGRATIONS, observe: OBSERVE, resumeOperations: false })
      const third = await createTenantry({ databaseUrl: url!, rolePrefix: PREFIX, migrations: DEMO_MIGRATIONS, observe: OBSERVE, resumeOperations: false })
      try {
        expect(other.dataPlane.serverNames().sort()).toEqual(['main', 'second'])
        const r = await refusal(other.addServer({ name: 'second', url: otherUrl }))
        expect([r.code, r.details]).toEqual(['CONFLICT', { field: 'name' }])

        const raceUrl = await freshDatabase(`${PREFIX}_race`)
        const outcomes = await Promise.all([
          outcome(other.addServer({ name: 'race', url: raceUrl })),
          outcome(third.addServer({ name: 'race', url: raceUrl.replace('127.0.0.1', 'localhost') })),
        ])
        expect([...outcomes].sort()).toEqual(['CONFLICT', 'ok'])
        const winner = outcomes[0] === 'ok' ? other : third
        const loser = winner === other ? third : other
        const stored = (await tenantry.catalog.listServers()).find((s) => s.name === 'race')!
        expect(winner.dataPlane.server('race').url).toBe(stored.url)
        // the loser and this process hear of the winner's server (its notification) and register it, at the stored URL
        for (const p of [loser, tenantry]) {
          await vi.waitFor(() => expect(p.dataPlane.serverNames()).toContain('race'), { timeout: 10_000, interval: 20 })
          expect(p.dataPlane.server('race')).toEqual(stored)
        }
        // the loser asks again with the winner's URL: a no-op returning the record, the same driver kept
        const driver = loser.dataPlane.driver('race')
        expect(await loser.addServer({ name: 'race', url: stored.url })).toEqual(stored)
        expect(loser.dataPlane.driver('race')).toBe(driver)
        expect(tenantry.dataPlane.serverNames().sort()).toEqual(['main', 'race', 'second'])
      } finally {
        await other.close()
        await third.close()
      }
    })

    it('a server met while its addServer is in flight is not opened twice: the discovery waits and shares the one driver', async () => {
      const third: Server = url
        ? { name: 'third', url: await freshDatabase(`${PREFIX}_third`), region: null, capacityWeight: 1, mainDatabase: `${PREFIX}_third` }
        : { name: 'third', url: `pglite:${join(dir, 'third')}`, region: null, capacityWeight: 1, mainDatabase: 'main' }
      let lookups = 0
      tenantry.dataPlane.useServerLookup((name) => { lookups++; return tenantry.catalog.server(name) })
      let checked: ServerDriver | undefined
      let met: Promise<ServerDriver>[] = []
      const connected = tenantry.dataPlane.connectServer(third, async (driver) => {
        checked = driver
        // In the catalog now (its notification is on its way), the check not finished yet.
        await tenantry.catalog.insertServer(third)
        met = [tenantry.dataPlane.ensureServer('third'), tenantry.dataPlane.ensureServer('third')]
        await driver.admin(third.mainDatabase).query('SELECT 1')
      })
      expect(await connected).toBe(checked)
      const drivers = await Promise.all(met)
      expect(drivers[0]).toBe(checked)
      expect(drivers[1]).toBe(checked)
      expect(tenantry.dataPlane.driver('third')).toBe(checked)
      // no lookup: the discoveries waited for the registration in flight and found the server registered
      expect(lookups).toBe(0)
      // a name the catalog does not hold: SERVER_NOT_FOUND, nothing registered, and looked up again next time
      expect(await outcome(tenantry.dataPlane.ensureServer('ghost'))).toBe('SERVER_NOT_FOUND')
      expect(await outcome(tenantry.dataPlane.ensureServer('ghost'))).toBe('SERVER_NOT_FOUND')
      expect(lookups).toBe(2)
      expect(tenantry.dataPlane.serverNames().sort()).toEqual(url ? ['main', 'race', 'second', 'third'] : ['main', 'second', 'third'])
    })
  })
}

for (const backend of backends(DB_NAME, PREFIX, PG_UP)) fleetSuite(backend)

// `tenantry servers list|add`: the real bin, the same library call.
describe.skipIf(!PG_UP)('tenantry servers list|add (CLI, PostgreSQL)', { timeout: 180_000 }, () => {
  const CLI_DB = 'tenantry_test_fleet_servers_cli'
  const CLI_PREFIX = 'th_fleetcli'
  let env: Record<string, string>
  let secondUrl: string
  const run = (...args: string[]) => cli(args, env)

  beforeAll(async () => {
    await dropPostgresLeftovers(CLI_PREFIX, CLI_DB)
    env = { DATABASE_URL: await freshDatabase(CLI_DB), TENANTRY_ROLE_PREFIX: CLI_PREFIX, TENANTRY_MIGRATIONS: DEMO_MIGRATIONS }
    secondUrl = (await freshDatabase(`${CLI_PREFIX}_second`)).replace('postgres@', 'postgres:not-shown@')
  }, 120_000)

  afterAll(() => dropPostgresLeftovers(CLI_PREFIX, CLI_DB), 120_000)

  it('adds a server (checked first), lists the fleet without passwords, refuses a taken name, an unreachable URL and a bad weight, and repeats idempotently', async () => {
    const added = await run('servers', 'add', 'second', secondUrl, '--region', 'eu', '--weight', '2')
    expect(added.code, show(added)).toBe(0)
    const shown = secondUrl.replace('not-shown', '***')
    expect(added.stdout).toBe(`Added: server 'second' at ${shown} (region eu), weight 2, main database ${CLI_PREFIX}_second.\n`)

    const list = await run('servers', 'list', '--json')
    expect(list.code, show(list)).toBe(0)
    expect(JSON.parse(list.stdout)).toEqual([
      { name: 'main', url: env.DATABASE_URL, region: null, capacityWeight: 1, mainDatabase: CLI_DB, tenants: 0 },
      { name: 'second', url: shown, region: 'eu', capacityWeight: 2, mainDatabase: `${CLI_PREFIX}_second`, tenants: 0 },
    ])
    const text = await run('servers', 'list')
    expect(text.stdout.split('\n').slice(0, 1)).toEqual([expect.stringMatching(/^NAME\s+URL\s+REGION\s+WEIGHT\s+DATABASE\s+TENANTS$/)])
    expect(text.stdout).not.toMatch(/not-shown/)

    const again = await run('servers', 'add', 'second', secondUrl)
    expect(again.code, show(again)).toBe(0)
    expect(again.stdout).toMatch(/^Already in the fleet: server 'second'/)

    const taken = await run('servers', 'add', 'second', secondUrl.replace('127.0.0.1', 'localhost'))
    expect(taken.code, show(taken)).toBe(1)
    expect(taken.stderr.trim()).toBe(`error CONFLICT: Server 'second' is already in the fleet at ${shown}; its tenants live there, so it is not repointed. Choose another name.`)
    const unreachable = await run('servers', 'add', 'nowhere', 'postgres://postgres:pw-secret@127.0.0.1:1/none')
    expect(unreachable.code, show(unreachable)).toBe(1)
    expect(unreachable.stderr).toMatch(/^error VALIDATION_FAILED: Server 'nowhere' could not be reached or prepared at postgres:\/\/postgres:\*\*\*@127\.0\.0\.1:1\/none: /)
    expect(unreachable.stderr).not.toMatch(/pw-secret/)
    const badName = await run('servers', 'add', 'Bad', secondUrl)
    expect([badName.code, badName.stderr.split(':')[0]]).toEqual([1, 'error VALIDATION_FAILED'])
    const badWeight = await run('servers', 'add', 'third', secondUrl, '--weight', '0')
    expect(badWeight.code, show(badWeight)).toBe(2)
    expect(badWeight.stderr).toMatch(/--weight must be a whole number from 1 to 1000/)

    const after = await run('servers', 'list', '--json')
    expect(JSON.parse(after.stdout).map((s: { name: string; url: string }) => `${s.name} ${s.url}`)).toEqual([`main ${env.DATABASE_URL}`, `second ${shown}`])
    const audit = await run('audit', 'list', '--action', 'server.add', '--json')
    expect(audit.code, show(audit)).toBe(0)
    expect(JSON.parse(audit.stdout).map((e: { action: string; details: unknown }) => [e.action, e.details])).toEqual([['server.add', { server: 'second', url: shown, region: 'eu' }]])
  })

  it('processes already running serve tenants placed on (or moved to) a server another process added: through the notification, and with notifications off through a catalog lookup at first use', async () => {
    const open = () => createTenantry({ databaseUrl: env.DATABASE_URL, rolePrefix: CLI_PREFIX, migrations: DEMO_MIGRATIONS, observe: OBSERVE, resumeOperations: false })
    const a = await open()
    const b = await open()
    const c = await open()
    try {
      expect(a.dataPlane.serverNames().sort()).toEqual(['main', 'second'])
      expect(b.dataPlane.serverNames().sort()).toEqual(['main', 'second'])
      // b and c hear no more changes (a notification missed): only a lookup can tell them of s2.
      await b.catalog.close()
      await c.catalog.close()
      let lookups = 0
      b.dataPlane.useServerLookup((name) => { lookups++; return b.catalog.server(name) })
      const names = (p: Promise<{ rows: { name: string }[] }>) => p.then((r) => r.rows.map((x) => x.name))

      const mover = await run('tenants', 'create', 'mover', '--tier', 'pooled')
      expect(mover.code, show(mover)).toBe(0)
      await a.withTenant('mover', () => a.db.query("INSERT INTO projects (name) VALUES ('before the move')"))

      const s2Url = await freshDatabase(`${CLI_PREFIX}_s2`)
      for (const args of [['servers', 'add', 's2', s2Url], ['tenants', 'create', 'placed', '--tier', 'schema', '--server', 's2'], ['move', 'mover', '--tier', 'database', '--server', 's2']]) {
        const r = await run(...args)
        expect(r.code, `${args.join(' ')}\n${show(r)}`).toBe(0)
      }
      // a: the notification of the new server registered it (waiting for it to arrive; no timing is asserted)
      await vi.waitFor(() => expect(a.dataPlane.serverNames().sort()).toEqual(['main', 's2', 'second']), { timeout: 10_000, interval: 20 })
      expect(b.dataPlane.serverNames().sort()).toEqual(['main', 'second'])
      const placedA = (await a.findTenant('placed'))!
      expect([placedA.tier, placedA.placement.server]).toEqual(['schema', 's2'])
      await a.withTenant('placed', () => a.db.query("INSERT INTO projects (name) VALUES ('on s2')"))
      expect(await a.withTenant('placed', () => names(a.db.query('SELECT name FROM projects ORDER BY name')))).toEqual(['on s2'])
      const moverA = (await a.findTenant('mover'))!
      expect([moverA.tier, moverA.placement.server]).toEqual(['database', 's2'])
      expect(await a.withTenant('mover', () => names(a.db.query('SELECT name FROM projects ORDER BY name')))).toEqual(['before the move'])
      expect(lookups).toBe(0)

      // b: five statements at once for tenants on the unknown server share one catalog lookup, then run
      const placedB = (await b.findTenant('placed'))!
      const moverB = (await b.findTenant('mover'))!
      const served = await Promise.all([
        ...[1, 2, 3].map(() => names(b.handle(placedB).query('SELECT name FROM projects ORDER BY name'))),
        ...[1, 2].map(() => b.handle(moverB).transaction((tx) => names(tx.query('SELECT name FROM projects ORDER BY name')))),
      ])
      expect(served).toEqual([['on s2'], ['on s2'], ['on s2'], ['before the move'], ['before the move']])
      expect(lookups).toBe(1)
      expect(b.dataPlane.serverNames().sort()).toEqual(['main', 's2', 'second'])
      expect(b.dataPlane.server('s2')).toEqual(a.dataPlane.server('s2'))

      // c plans a fleet migration: the servers of the catalog it lacked are registered first, none skipped
      const planned = await c.planMigrations()
      expect(planned.filter((t) => t.server === 's2').map((t) => `${t.tier} ${t.slug ?? '-'}`).sort()).toEqual(['database mover', 'pooled -', 'schema placed'])
      expect(c.dataPlane.serverNames().sort()).toEqual(['main', 's2', 'second'])

      // A catalog record whose server does not answer: the request gets the coded 503 (not a crash,
      // not SERVER_NOT_FOUND), and the next request tries again.
      const gone: Server = { name: 'gone', url: 'postgres://postgres@127.0.0.1:1/none', region: null, capacityWeight: 1, mainDatabase: 'none' }
      await a.catalog.insertServer(gone)
      const stranded = await a.catalog.insertTenant({ id: randomUUID(), slug: 'stranded', name: 'Stranded', status: 'active', tier: 'pooled', plan: 'default', region: null, server: 'gone', database: 'none', schema: null, config: {} })
      for (let i = 0; i < 2; i++) {
        const r = await refusal(b.handle(stranded).query('SELECT 1'))
        expect([r.code, r.status], r.message).toEqual(['TENANT_UNAVAILABLE', 503])
      }
      expect(lookups).toBe(2)
      await a.catalog.deleteTenantRow(stranded.id)
    } finally {
      await a.close()
      await b.close()
      await c.close()
    }
  })
})
