import { defineConfig } from 'vitest/config';
import { processes } from '../../scripts/vitest-own-process.js';

export default defineConfig({
  test: {
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
