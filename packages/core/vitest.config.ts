import { defineConfig } from 'vitest/config';
import { processes } from '../../scripts/vitest-own-process.js';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Files share worker processes but these, which observe the whole process (timers
    // created, module mocks, globals): see scripts/vitest-own-process.ts.
    ...processes([
      'test/completion-retry.test.ts',
      'test/derivation-vectors-portable.test.ts',
      'test/fixed-delay-timers.test.ts',
    ]),
    testTimeout: 30_000,
  },
});
