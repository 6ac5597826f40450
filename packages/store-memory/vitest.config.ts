import { defineConfig } from 'vitest/config';
import { processes } from '../../scripts/vitest-own-process.js';
import { fileWorkers } from '../../scripts/vitest-workers.js';

export default defineConfig({
  test: {
    // Files run 3 at a time: they mostly wait (scripts/vitest-workers.ts).
    maxWorkers: fileWorkers(3),
    include: ['test/**/*.test.ts'],
    // Files share worker processes but these, which observe the whole process (module
    // mocks, globals, every interval created, what the collector frees): see
    // scripts/vitest-own-process.ts.
    ...processes([
      'test/held-outcome-runtimes.test.ts',
      'test/flat-copies.test.ts',
      'test/sweep-timer-gc.test.ts',
    ]),
    testTimeout: 30_000,
  },
});
