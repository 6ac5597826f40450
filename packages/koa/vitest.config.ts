import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // Files share their worker processes (README "Tests"): about half the CPU of one process a file.
    isolate: false,
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
  },
});
