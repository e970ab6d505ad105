#!/usr/bin/env node
// Runs the TypeScript sources directly through tsx, so `npx tenantry` works in a fresh clone.
import { register } from 'tsx/esm/api'

register()
await import('../src/cli/main.ts')
