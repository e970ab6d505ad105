import { createHash } from 'node:crypto'
import type { DataPlane } from '../data/data-plane.ts'
import type { ServerDriver } from '../data/driver.ts'
import { bootstrapDatabaseSql } from '../data/sql.ts'
import type { MigrationTarget, TemplateSource } from '../data/tiers/index.ts'
import { migrateTarget, type MigrationFile } from './migrator.ts'

/** Name of a server's template database. */
export function templateDatabase(prefix: string): string {
  return `${prefix}_template`
}

// PGlite only: the last clone of each driver (one queue, as the advisory lock is on PostgreSQL),
// and the migration set its template was brought to. One process owns a PGlite data directory
// (its lock file), so what this process did to the template is all that was done to it: the
// template is opened and checked once per set of files, not before every clone.
const embeddedQueue = new WeakMap<ServerDriver, Promise<unknown>>()
const embeddedState = new WeakMap<ServerDriver, string>()

/**
 * The server's template database as a clone source. Before each clone the template is brought to
 * the latest migration under a lock, which also keeps two clones (or a clone and the template's
 * own migration) from running at once: CREATE DATABASE … TEMPLATE refuses a template that has
 * other sessions, and PGlite copies the template's directory only while its instance is closed.
 *
 * @example
 * ```ts
 * await tier.prepare(ctx, tenant, serverTemplate(dataPlane, 'main', files))
 * ```
 */
export function serverTemplate(dataPlane: DataPlane, serverName: string, files: MigrationFile[]): TemplateSource {
  const template = templateDatabase(dataPlane.opts.naming.prefix)
  const migrate = async (driver: ServerDriver) => {
    if (!(await driver.databaseExists(template))) await driver.createDatabase(template)
    const admin = driver.admin(template)
    await admin.exec(bootstrapDatabaseSql(dataPlane.tenantKey))
    // No role gets rights in the template: each clone grants its own tenant role.
    const target: MigrationTarget = { server: serverName, database: template, schema: 'public', role: '', label: `${serverName}/${template}` }
    await migrateTarget(admin, target, files)
  }
  return {
    async cloneInto(database: string): Promise<boolean> {
      const driver = dataPlane.driver(serverName)
      if (driver.canClone === false) return false
      if (driver.kind === 'pg') {
        const server = dataPlane.server(serverName)
        return driver.admin(server.mainDatabase).transaction(async (lock) => {
          await lock.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`tenantry.template:${template}`])
          await migrate(driver)
          return driver.cloneDatabase(template, database)
        })
      }
      const state = createHash('sha256')
        .update(`${dataPlane.tenantKey}\n${files.map((f) => `${f.version}:${f.checksum}`).join('\n')}`)
        .digest('hex')
      const run = (embeddedQueue.get(driver) ?? Promise.resolve()).catch(() => undefined).then(async () => {
        if (embeddedState.get(driver) !== state || !(await driver.databaseExists(template))) {
          embeddedState.delete(driver)
          await migrate(driver)
          embeddedState.set(driver, state)
        }
        return driver.cloneDatabase(template, database)
      })
      embeddedQueue.set(driver, run)
      return run
    },
  }
}
