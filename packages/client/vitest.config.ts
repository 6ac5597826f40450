import { defineConfig } from 'vitest/config';
import { processes } from '../../scripts/vitest-own-process.js';
import { fileWorkers } from '../../scripts/vitest-workers.js';

export default defineConfig({
  test: {
    // Files run 3 at a time: they mostly wait (scripts/vitest-workers.ts).
    maxWorkers: fileWorkers(3),
    include: ['test/**/*.test.ts'],
    // Files share their worker processes but this one, which measures the whole process's
    // heap (another file's leftover work in a shared process allocated during its measurement
    // and failed a CI lane): see scripts/vitest-own-process.ts. rev12c-resume-memory stays in
    // the shared pass: it counts the abort controllers and signals left alive (v8.queryObjects),
    // which another file's leftover allocations do not move, where it weighed the heap before
    // (a CI lane failed it in a process of its own once, 324 B a call against 289, and in the
    // shared one once, 340.92 against 250).
    ...processes(['test/rev10-memory.test.ts']),
    testTimeout: 30_000,
  },
});
