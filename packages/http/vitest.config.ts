import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Files at once (vitest's default is cores - 1, one file at a time on the 2-core CI): most
    // of these files wait on timers and loopback, so a few side by side overlap their waits.
    maxWorkers: 2,
    testTimeout: 30_000,
  },
});
