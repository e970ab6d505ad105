/**
 * A scripted CPU gauge for pacer tests: cumulative CPU times that grow by `utilisation()` of each
 * 100 units read, as a server's `/proc/stat` would at that utilisation.
 */
export function scriptedCpuTimes(utilisation: () => number): () => Promise<{ busy: number; total: number }> {
  const times = { busy: 0, total: 0 }
  return async () => {
    times.total += 100
    times.busy += utilisation() * 100
    return { ...times }
  }
}
