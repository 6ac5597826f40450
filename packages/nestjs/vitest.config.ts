import { defineConfig } from 'vitest/config';
import { processes } from '../../scripts/vitest-own-process.js';
import { fileWorkers } from '../../scripts/vitest-workers.js';

export default defineConfig({
  test: {
    // Files run 3 at a time: they mostly wait (scripts/vitest-workers.ts).
    maxWorkers: fileWorkers(3),
    include: ['test/**/*.test.ts'],
    // Files share their worker processes: see scripts/vitest-own-process.ts.
    ...processes([]),
    testTimeout: 30_000,
  },
});
