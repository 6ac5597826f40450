import { defineConfig } from 'vitest/config';
import { processes } from '../../scripts/vitest-own-process.js';
import { fileWorkers } from '../../scripts/vitest-workers.js';

export default defineConfig({
  test: {
    // Files run 3 at a time: they mostly wait (scripts/vitest-workers.ts).
    maxWorkers: fileWorkers(3),
    include: ['test/**/*.test.ts'],
    // Files share worker processes but these, which observe the whole process (timers
    // created, module mocks, globals): see scripts/vitest-own-process.ts.
    ...processes([
      'test/completion-retry.test.ts',
      'test/derivation-vectors-portable.test.ts',
      'test/fixed-delay-timers.test.ts',
      // Asserts no fake timer is left: a timer another file's leftover work arms meanwhile
      // (a real one of that file running late on a loaded machine) counted too.
      'test/rv21-lease.test.ts',
    ]),
    testTimeout: 30_000,
  },
});
