#!/usr/bin/env node
// The compiled CLI (dist/, built by `npm run build`, which `npm install` runs) starts in a fraction
// of the time tsx needs. A checkout whose sources changed after the last build runs the
// TypeScript sources through tsx instead, so `npx tenantry` never runs stale code.
import { existsSync, readdirSync, statSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const built = join(root, 'dist/cli/main.js')

function newestSource(dir) {
  let newest = 0
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name)
    const t = entry.isDirectory() ? newestSource(path) : entry.name.endsWith('.ts') ? statSync(path).mtimeMs : 0
    if (t > newest) newest = t
  }
  return newest
}

const sources = join(root, 'src')
if (existsSync(built) && (!existsSync(sources) || statSync(built).mtimeMs >= newestSource(sources))) {
  await import(built)
} else {
  const { register } = await import('tsx/esm/api')
  register()
  await import('../src/cli/main.ts')
}
