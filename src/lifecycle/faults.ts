/**
 * Fault injection for the kill tests of durable operations: with `TENANTRY_FAULT=pause:<point>`
 * (several separated by commas) the process announces `tenantry-fault: paused at <point>` on
 * stderr and stops there, so a test can kill it at exactly that point. Without the variable this
 * is a no-op.
 */
export async function faultPoint(point: string): Promise<void> {
  const spec = process.env.TENANTRY_FAULT
  if (!spec) return
  for (const rule of spec.split(',')) {
    const sep = rule.indexOf(':')
    if (rule.slice(0, sep) === 'pause' && rule.slice(sep + 1) === point) {
      process.stderr.write(`tenantry-fault: paused at ${point}\n`)
      await new Promise(() => undefined)
    }
  }
}
