import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // npm install of a whole app, twice, on a cold cache: minutes, not seconds.
    testTimeout: 300_000,
    hookTimeout: 300_000,
  },
});
