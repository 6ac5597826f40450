import { defineConfig } from 'vitest/config';
import { processes } from '../../scripts/vitest-own-process.js';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Files share worker processes but these, which observe the whole process (timers
    // created, heap, module mocks, globals): see scripts/vitest-own-process.ts.
    ...processes([
      'test/core10-review.test.ts',
      'test/core9-review.test.ts',
      'test/engine-strings.test.ts',
      'test/isolation.test.ts',
      'test/memory-bound.test.ts',
      'test/pressure.test.ts',
      'test/held-outcome-runtimes.test.ts',
      'test/flat-copies.test.ts',
    ]),
    testTimeout: 30_000,
  },
});
