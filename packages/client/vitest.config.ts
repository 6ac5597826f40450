import { defineConfig } from 'vitest/config';
import { processes } from '../../scripts/vitest-own-process.js';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Files share their worker processes: see scripts/vitest-own-process.ts.
    ...processes([]),
    testTimeout: 30_000,
  },
});
