import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // One Redis Cluster for the whole run, started and torn down here.
    globalSetup: ['test/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // The suites mostly wait on real leases (server clock): run the files side by side even
    // on a 2-CPU machine, where the default would run them one after another.
    maxWorkers: 4,
  },
});
