import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // PGlite instances are large (200–300 MB) and PostgreSQL has 2 cores here: keep parallelism modest.
    maxWorkers: 2,
    fileParallelism: true,
  },
})
