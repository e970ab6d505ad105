import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Generous: PGlite instances start in 5–15 s on a busy 2-core machine, and the kill tests run the CLI many times.
    testTimeout: 300_000,
    hookTimeout: 300_000,
    // PGlite instances are large (200–300 MB) and PostgreSQL has 2 cores here: keep parallelism modest.
    maxWorkers: 2,
    fileParallelism: true,
    // Tenantry's default logger writes warnings and errors (planted failures, stopped servers) to
    // stdout; the tests that check log lines pass a logger of their own.
    env: { TENANTRY_LOG_LEVEL: process.env.TENANTRY_LOG_LEVEL ?? 'silent' },
  },
})
