import { createHash } from 'node:crypto'
import type { DataPlane } from '../data/data-plane.ts'
import type { ServerDriver } from '../data/driver.ts'
import { bootstrapDatabaseSql } from '../data/sql.ts'
import type { MigrationTarget, TemplateSource } from '../data/tiers/index.ts'
import type { TenantryEvents } from './events.ts'
import { appliedMigrations, migrateTarget, pendingMigrations, type MigrationFile } from './migrator.ts'

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
 * When the template has to be created or migrated (the first database tenant of a server, or the
 * first after new migration files), `events` get `template.building`, a `template.step` as each
 * part begins, and `template.built`: the CLI draws its progress bar from them.
 *
 * @example
 * ```ts
 * await tier.prepare(ctx, tenant, serverTemplate(dataPlane, 'main', files, events))
 * ```
 */
export function serverTemplate(dataPlane: DataPlane, serverName: string, files: MigrationFile[], events?: TenantryEvents): TemplateSource {
  const template = templateDatabase(dataPlane.opts.naming.prefix)
  // No role gets rights in the template: each clone grants its own tenant role.
  const target: MigrationTarget = { server: serverName, database: template, schema: 'public', role: '', label: `${serverName}/${template}` }
  const migrate = async (driver: ServerDriver) => {
    const create = !(await driver.databaseExists(template))
    const started = Date.now()
    const where = { server: serverName, database: template }
    // Steps: creating the database (when it is new), one per pending file, then the clone.
    let total = 0
    let done = 0
    const step = (label: string) => events?.emit('template.step', { ...where, done: done++, total, label })
    if (create) {
      // A new template lacks every file.
      total = 1 + files.length + 1
      events?.emit('template.building', { ...where, create, pending: files.map((f) => `${f.version}_${f.name}`) })
      step(`creating the template database ${template}`)
      await driver.createDatabase(template)
    }
    const admin = driver.admin(template)
    await admin.exec(bootstrapDatabaseSql(dataPlane.tenantKey))
    if (!create && events) {
      const pending = pendingMigrations(files, await appliedMigrations(admin, target), target.label)
      if (pending.length === 0) return
      total = pending.length + 1
      events.emit('template.building', { ...where, create, pending: pending.map((f) => `${f.version}_${f.name}`) })
    }
    const r = await migrateTarget(admin, target, files, { onFile: (f) => step(`migrating the template: ${f.version}_${f.name}`) })
    if (total > 0) {
      events?.emit('template.built', { ...where, applied: r.applied, ms: Date.now() - started })
      step('cloning the template')
    }
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
