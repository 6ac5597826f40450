import { defineConfig } from 'vitest/config';

// Each runtime starts once per file (hooks) and answers a handful of requests; a loaded
// machine can take seconds to start one, so the limits are wide but bounded.
export default defineConfig({
  test: { include: ['test/**/*.test.ts'], testTimeout: 60_000, hookTimeout: 120_000 },
});
