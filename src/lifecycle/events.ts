import { EventEmitter } from 'node:events'
import type { Tenant, UsageRecord } from '../core/types.ts'
import type { Operation } from './operations.ts'

/** Events Tenantry emits, in present/past pairs where an action takes time. */
export interface TenantryEventMap {
  'tenant.provisioning': { tenant: Tenant; operationId: string }
  'tenant.provisioned': { tenant: Tenant; operationId: string; ms: number }
  'tenant.provision_failed': { slug: string; operationId: string; error: Error }
  'tenant.suspended': { tenant: Tenant }
  'tenant.resumed': { tenant: Tenant }
  'tenant.deleted': { tenant: Tenant }
  'tenant.restored': { tenant: Tenant }
  'tenant.purging': { tenant: Tenant; operationId: string }
  'tenant.purged': { tenant: Tenant; operationId: string; removed: string[] }
  /** The server's template database is being created or brought to the latest migration (before a database-tier clone). */
  'template.building': { server: string; database: string; create: boolean; pending: string[] }
  /** A part of the template build begins: step `done` of `total` (creating the database, each file, the clone). */
  'template.step': { server: string; database: string; done: number; total: number; label: string }
  'template.built': { server: string; database: string; applied: string[]; ms: number }
  'migration.target_done': { operationId: string; target: string; tenant: string | null; applied: string[] }
  'migration.target_failed': { operationId: string; target: string; tenant: string | null; error: Error }
  'operation.resumed': { operation: Operation }
  /** Usage of one metering interval was written to the catalog (a billing hook): the records this process added. */
  'usage.flushed': { intervalStart: Date; records: UsageRecord[] }
  /** A queued job was not run: no tenant, a forged or unknown one, or one that is not active (the error's code says which). */
  'job.refused': { queue: string; jobId: string; tenantId: string | null; error: Error }
  /** A failure in background work (it is not thrown anywhere else). */
  error: { error: Error; context: string }
}

/**
 * A typed event emitter.
 *
 * @example
 * ```ts
 * tenantry.events.on('tenant.provisioned', ({ tenant, ms }) => log.info({ tenant: tenant.slug, ms }, 'provisioned'))
 * ```
 */
export class TenantryEvents {
  private readonly emitter = new EventEmitter()

  on<K extends keyof TenantryEventMap>(event: K, listener: (payload: TenantryEventMap[K]) => void): this {
    this.emitter.on(event, listener)
    return this
  }

  off<K extends keyof TenantryEventMap>(event: K, listener: (payload: TenantryEventMap[K]) => void): this {
    this.emitter.off(event, listener)
    return this
  }

  emit<K extends keyof TenantryEventMap>(event: K, payload: TenantryEventMap[K]): void {
    // An 'error' event with no listener must not crash the process: background failures are
    // reported, not thrown into nowhere.
    if (event === 'error' && this.emitter.listenerCount('error') === 0) return
    try {
      this.emitter.emit(event, payload)
    } catch (err) {
      if (event !== 'error') this.emit('error', { error: err as Error, context: `listener of ${event}` })
    }
  }
}
