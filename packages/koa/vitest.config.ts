import { defineConfig } from 'vitest/config';
import { processes } from '../../scripts/vitest-own-process.js';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Files share worker processes but these, which observe the whole process (timers
    // created, heap, module mocks, globals): see scripts/vitest-own-process.ts.
    ...processes(['test/rev10-replay-chunks.test.ts']),
    testTimeout: 30_000,
  },
});
