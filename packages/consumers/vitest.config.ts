import { defineConfig } from 'vitest/config';
import { fileWorkers } from '../../scripts/vitest-workers.js';

export default defineConfig({
  test: {
    // Files run 4 at a time: they mostly wait (scripts/vitest-workers.ts).
    maxWorkers: fileWorkers(4),
    // Files share their worker processes (README "Tests"): about half the CPU of one process a file.
    isolate: false,
    include: ['test/**/*.test.ts'],
    testTimeout: 90_000,
    hookTimeout: 30_000,
  },
});
