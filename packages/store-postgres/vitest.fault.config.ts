import { defineConfig } from 'vitest/config';

/** The fault test, alone (see vitest.config.ts). */
export default defineConfig({
  test: {
    include: ['test/fault.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    testTimeout: 300_000,
    hookTimeout: 60_000,
  },
});
