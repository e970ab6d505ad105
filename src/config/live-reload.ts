import type { Catalog } from '../catalog/catalog.ts'

/**
 * A re-read of catalog state kept in memory (plans, flags), run when the catalog says its subject
 * changed (`prefix…`, or `*` after a lost notification connection). One read runs at a time; a
 * change meanwhile makes it read once more afterwards, so the last change is never missed.
 *
 * @example
 * ```ts
 * const reload = liveReload(catalog, 'flag:', () => readAllFlags(), (e) => report(e, 'reloading feature flags'))
 * await reload()
 * ```
 */
export function liveReload(catalog: Catalog, prefix: string, read: () => Promise<void>, onError: (error: unknown) => void): () => Promise<void> {
  const reload = coalesce(read)
  catalog.onChange((subject) => {
    if (subject.startsWith(prefix) || subject === '*') reload().catch(onError)
  })
  return reload
}

/**
 * `work` run one at a time: a call while it runs makes it run once more afterwards (and returns
 * the running promise), so the last call's state is never missed and calls do not pile up.
 *
 * @example
 * ```ts
 * const refresh = coalesce(() => readAll())
 * await Promise.all([refresh(), refresh(), refresh()]) // at most two reads
 * ```
 */
export function coalesce(work: () => Promise<void>): () => Promise<void> {
  let running: Promise<void> | null = null
  let again = false
  return (): Promise<void> => {
    if (running) {
      again = true
      return running
    }
    running = (async () => {
      try {
        do {
          again = false
          await work()
        } while (again)
      } finally {
        running = null
      }
    })()
    return running
  }
}
