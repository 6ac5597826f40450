import { defineConfig } from 'vitest/config';
import { processes } from '../../scripts/vitest-own-process.js';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Files share worker processes but these, which observe the whole process (timers
    // created, heap, module mocks, globals): see scripts/vitest-own-process.ts.
    ...processes([
      'test/rev10-memory.test.ts',
      'test/rev11-abort-gc.test.ts',
      'test/rev12c-resume-cancel.test.ts',
      'test/rev12c-resume-memory.test.ts',
    ]),
    testTimeout: 30_000,
  },
});
