import { defineConfig } from 'vitest/config';
import { processes } from '../../scripts/vitest-own-process.js';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Files share worker processes but these, which observe the whole process (timers
    // created, heap, module mocks, globals): see scripts/vitest-own-process.ts.
    ...processes(['test/nest-review.test.ts', 'test/rev12d-memory.test.ts']),
    testTimeout: 30_000,
  },
});
