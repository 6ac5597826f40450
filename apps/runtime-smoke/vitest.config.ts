import { defineConfig } from 'vitest/config';

// Each runtime starts once per file (hooks) and answers a handful of requests; a loaded
// machine can take seconds to start one, so the limits are wide but bounded.
export default defineConfig({
  test: {
    // Files share their worker processes (README "Tests"): about half the CPU of one process a file.
    isolate: false,
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
  },
});
