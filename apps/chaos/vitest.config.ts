import { configDefaults, defineConfig } from 'vitest/config';

/**
 * IDEM_CHAOS_FILES picks the files: `alone` the chaos run itself (scripts/test.sh runs it
 * first, with nothing beside it: it judges the app's latency under faults), `side` every
 * other file (the harness's own tests: verdicts, orphans, the proxy; they judge no latency,
 * so they run in a lane beside other packages); unset, all of them.
 */
const part = process.env.IDEM_CHAOS_FILES;
const run = 'test/chaos.test.ts';

export default defineConfig({
  test: {
    include: part === 'alone' ? [run] : ['test/**/*.test.ts'],
    exclude: part === 'side' ? [...configDefaults.exclude, run] : configDefaults.exclude,
    // The chaos run is timing-sensitive: no other test file competes with it for the CPU.
    fileParallelism: false,
    testTimeout: 30_000,
    hookTimeout: 30_000,
  },
});
