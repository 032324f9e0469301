import { defineConfig } from 'vitest/config';
import { SLOWDOWN, scaled } from './test/support/slowdown.js';
import { testMemoryDir } from './test/support/memory-dir.js';

/** Guest RAM files of the run, and the directory its hosts allow in the path form (test/support/memory-dir.ts). */
const memoryDir = testMemoryDir();

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    environment: 'node',
    // Timeouts scale with the slowdown factor (VSVA_TEST_SLOWDOWN; CI → 3): docs/testing.md.
    testTimeout: scaled(30_000),
    hookTimeout: scaled(30_000),
    // expect.poll's default deadline (1 s) is far too short on a loaded machine.
    expect: { poll: { timeout: scaled(5_000), interval: 50 } },
    // Integration tests spawn real processes; keep parallelism modest for 2-core CI.
    maxWorkers: 2,
    // VSVA_FROM_SOURCE: processes the tests spawn through bin/vsva.js run the source, not a dist/ build.
    // VSVA_MEM_DIR / VSVA_ALLOW_MEMORY_PATHS: file-backed guest RAM and the hosts' path form (docs/testing.md).
    env: { VSVA_LOG: process.env.VSVA_LOG ?? 'silent', VSVA_TEST_SLOWDOWN: String(SLOWDOWN), VSVA_FROM_SOURCE: '1', VSVA_MEM_DIR: memoryDir, VSVA_ALLOW_MEMORY_PATHS: memoryDir },
    // Under CI also write a JSON report, from which .ci/run prints a plain 'N passed, N failed' line.
    reporters: process.env.CI ? ['default', 'json'] : ['default'],
    outputFile: { json: 'artifacts/test-results.json' },
  },
});
