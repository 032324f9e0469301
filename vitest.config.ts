import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    environment: 'node',
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Integration tests spawn real processes; keep parallelism modest for 2-core CI.
    maxWorkers: 2,
    env: { VSVA_LOG: process.env.VSVA_LOG ?? 'silent' },
    // Under CI also write a JSON report, from which .ci/run prints a plain 'N passed, N failed' line.
    reporters: process.env.CI ? ['default', 'json'] : ['default'],
    outputFile: { json: 'artifacts/test-results.json' },
  },
});
