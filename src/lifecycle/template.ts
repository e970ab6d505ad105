import type { DataPlane } from '../data/data-plane.ts'
import { bootstrapDatabaseSql } from '../data/sql.ts'
import type { MigrationTarget, TemplateSource } from '../data/tiers/index.ts'
import { migrateTarget, type MigrationFile } from './migrator.ts'

/** Name of a server's template database. */
export function templateDatabase(prefix: string): string {
  return `${prefix}_template`
}

/**
 * The server's template database as a clone source. Before each clone the template is brought to
 * the latest migration under an advisory lock, which also keeps two clones (or a clone and the
 * template's own migration) from running at once: CREATE DATABASE … TEMPLATE refuses a template
 * that has other sessions.
 *
 * @example
 * ```ts
 * await tier.prepare(ctx, tenant, serverTemplate(dataPlane, 'main', files))
 * ```
 */
export function serverTemplate(dataPlane: DataPlane, serverName: string, files: MigrationFile[]): TemplateSource {
  return {
    async cloneInto(database: string): Promise<boolean> {
      const driver = dataPlane.driver(serverName)
      if (driver.kind !== 'pg') return false
      const server = dataPlane.server(serverName)
      const template = templateDatabase(dataPlane.opts.naming.prefix)
      return driver.admin(server.mainDatabase).transaction(async (lock) => {
        await lock.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`tenantry.template:${template}`])
        if (!(await driver.databaseExists(template))) await driver.createDatabase(template)
        const admin = driver.admin(template)
        await admin.exec(bootstrapDatabaseSql(dataPlane.tenantKey))
        // No role gets rights in the template: each clone grants its own tenant role.
        const target: MigrationTarget = { server: serverName, database: template, schema: 'public', role: '', label: `${serverName}/${template}` }
        await migrateTarget(admin, target, files)
        return driver.cloneDatabase(template, database)
      })
    },
  }
}
