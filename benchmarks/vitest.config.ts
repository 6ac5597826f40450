import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // Files share their worker processes (README "Tests"): about half the CPU of one process a file.
    isolate: false,
    include: ['test/**/*.test.ts'],
    // The smoke run loads both cores with its own servers: nothing else competes with it.
    fileParallelism: false,
    testTimeout: 300_000,
    hookTimeout: 30_000,
  },
});
