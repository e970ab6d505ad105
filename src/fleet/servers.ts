import type { AuditActor, AuditLog } from '../audit/index.ts'
import type { Catalog } from '../catalog/catalog.ts'
import { TenantryError } from '../core/errors.ts'
import type { Server } from '../core/types.ts'
import { printable, redactUrl } from '../core/validation.ts'
import type { DataPlane } from '../data/data-plane.ts'
import type { Queryable } from '../data/executor.ts'
import type { ServerDriver } from '../data/driver.ts'

/** What {@link Fleet.addServer} takes: the server record of the catalog without its main database (read from the URL). */
export interface AddServerOptions {
  /** Lowercase letters, digits, `-` and `_`, starting with a letter (at most 63). */
  name: string
  /** Admin URL: `postgres://user:password@host:5432/database`, or `pglite:<dir>` / `pglite:memory`. */
  url: string
  /** Region of the server (tenants of a region are placed on its servers). */
  region?: string
  /** Share of new tenants, relative to the other servers: a whole number from 1 to 1000. Default 1. */
  capacityWeight?: number
}

/** The name rule of a server (the admin API's schema uses the same pattern). */
export const SERVER_NAME_PATTERN = '^[a-z][a-z0-9_-]{0,62}$'
const SERVER_NAME = new RegExp(SERVER_NAME_PATTERN)

/** The servers of the fleet: adding one checks it first and registers it only when it answers. */
export interface Fleet {
  /**
   * Add a PostgreSQL server: its input is validated, the server is reached and prepared (the
   * bootstrap and the app role), and only then is it in the catalog and this process's data plane.
   * A name already in the fleet with another URL (or another region or weight) is a `CONFLICT`
   * and changes nothing; the same name and URL again is a no-op that returns the stored record.
   *
   * @example
   * ```ts
   * await tenantry.addServer({ name: 'eu-2', url: 'postgres://admin@db-eu-2:5432/app', region: 'eu', capacityWeight: 2 })
   * ```
   */
  addServer(input: AddServerOptions, by?: AuditActor): Promise<Server>
}

export interface FleetDeps {
  catalog: Catalog
  dataPlane: DataPlane
  /** Prepare a server's main database (idempotent); throws when it cannot be reached. */
  bootstrap(driver: ServerDriver, server: Server): Promise<void>
  /** A server a notification named could not be registered (emitted, not thrown into nowhere). */
  onError?(error: unknown, context: string): void
  /** Where an added server is recorded (`server.add`, in the insert's transaction). */
  audit?: AuditLog
}

/**
 * Every process learns of a server another process added: the catalog's notification of it
 * registers it here at once, and a tenant statement for a server still unknown (a notification
 * missed) looks it up in the catalog first (see {@link DataPlane.ensureServer}).
 */
function followCatalog(deps: FleetDeps): void {
  const { catalog, dataPlane } = deps
  dataPlane.useServerLookup((name) => catalog.server(name))
  const learn = (name: string) => {
    if (dataPlane.serverNames().includes(name)) return
    dataPlane.ensureServer(name).catch((e) => deps.onError?.(e, `registering server '${name}' added by another process`))
  }
  catalog.onChange((subject, local) => {
    // This process's own additions register through addServer itself.
    if (local) return
    if (subject.startsWith('server:')) learn(subject.slice('server:'.length))
    // A lost notification connection came back: any server may have been added meanwhile.
    else if (subject === '*') catalog.listServers().then((all) => all.forEach((s) => learn(s.name)), (e) => deps.onError?.(e, 'reading the servers of the catalog'))
  })
}

export function createFleet(deps: FleetDeps): Fleet {
  const { catalog, dataPlane } = deps
  followCatalog(deps)
  return {
    async addServer(input, by) {
      const server = serverOf(input)
      const stored = (await catalog.listServers()).find((s) => s.name === server.name)
      if (stored) {
        refuseOther(stored, input)
        if (!dataPlane.serverNames().includes(stored.name)) await connect(stored)
        return stored
      }
      // Another process may have taken the name since it was read: the catalog decides.
      const audit = deps.audit
      const record = audit && (async (tx: Queryable) => {
        await audit.append({ actor: by?.actor ?? 'library', action: 'server.add', requestId: by?.requestId, details: { server: server.name, url: redactUrl(server.url), region: server.region ?? null, ...by?.details } }, tx)
      })
      await connect(server, async () => refuseOther(await catalog.insertServer(server, record), input))
      return server
    },
  }

  /** Reach and prepare the server on a driver of its own, then `after`; registered in the data plane only when both succeeded. */
  async function connect(server: Server, after?: () => Promise<void>): Promise<void> {
    let reached = false
    try {
      await dataPlane.connectServer(server, async (driver) => {
        await deps.bootstrap(driver, server)
        reached = true
        await after?.()
      })
    } catch (err) {
      if (reached) throw err
      const why = String((err as Error)?.message ?? err).split('\n')[0].replaceAll(server.url, redactUrl(server.url))
      throw new TenantryError('VALIDATION_FAILED', `Server '${server.name}' could not be reached or prepared at ${redactUrl(server.url)}: ${why}. Check the URL, that the server runs and that its user may create roles.`, {
        cause: err, details: { field: 'url', rule: 'unreachable' },
      })
    }
  }
}

/** A name held by another record: nothing is repointed (its tenants live there). */
function refuseOther(stored: Server, input: AddServerOptions): void {
  const differs = stored.url !== input.url ? `at ${redactUrl(stored.url)}`
    : input.region !== undefined && input.region !== stored.region ? `with region ${stored.region ?? '(none)'}`
    : input.capacityWeight !== undefined && input.capacityWeight !== stored.capacityWeight ? `with capacity weight ${stored.capacityWeight}`
    : null
  if (differs) {
    throw new TenantryError('CONFLICT', `Server '${stored.name}' is already in the fleet ${differs}; its tenants live there, so it is not repointed. Choose another name.`, { details: { field: 'name' } })
  }
}

function invalid(field: string, rule: string, message: string): TenantryError {
  return new TenantryError('VALIDATION_FAILED', message, { details: { field, rule } })
}

/** The server record of valid input, or a coded error naming the field. */
function serverOf(input: AddServerOptions): Server {
  const { name, url, region, capacityWeight } = (input ?? {}) as Partial<AddServerOptions>
  if (typeof name !== 'string' || !SERVER_NAME.test(name)) {
    throw invalid('name', 'pattern', `Server name '${printable(String(name))}' must be 1 to 63 lowercase letters, digits, - and _, starting with a letter.`)
  }
  const mainDatabase = typeof url === 'string' ? mainDatabaseOf(url) : null
  if (mainDatabase === null) {
    throw invalid('url', 'pattern', `Server URL '${printable(redactUrl(String(url)))}' must be postgres://user@host:port/database or pglite:<dir>.`)
  }
  if (region !== undefined && (typeof region !== 'string' || region.length < 1 || region.length > 100)) {
    throw invalid('region', 'length', 'A server region must be 1 to 100 characters.')
  }
  if (capacityWeight !== undefined && (!Number.isInteger(capacityWeight) || capacityWeight < 1 || capacityWeight > 1000)) {
    throw invalid('capacityWeight', 'range', `A capacity weight must be a whole number from 1 to 1000, not ${printable(String(capacityWeight))}.`)
  }
  return { name, url: url!, region: region ?? null, capacityWeight: capacityWeight ?? 1, mainDatabase }
}

/** The main database a server URL names (`postgres` when none), `main` for PGlite; null for anything else. */
function mainDatabaseOf(url: string): string | null {
  if (url.startsWith('pglite:')) return url.length > 'pglite:'.length ? 'main' : null
  try {
    const u = new URL(url)
    if ((u.protocol !== 'postgres:' && u.protocol !== 'postgresql:') || !u.hostname) return null
    return decodeURIComponent(u.pathname.slice(1)) || 'postgres'
  } catch {
    return null
  }
}
