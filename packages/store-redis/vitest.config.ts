import { defineConfig } from 'vitest/config';
import { firstFiles } from '../../scripts/vitest-first-files.js';
import { processes } from '../../scripts/vitest-own-process.js';

/**
 * IDEM_IOREDIS=6 runs the suite on ioredis 6 (the `ioredis6` alias devDependency) instead of
 * ioredis 5: the peer range claims both, and each major runs here in CI.
 */
const ioredisMajor = process.env.IDEM_IOREDIS ?? '5';
if (ioredisMajor !== '5' && ioredisMajor !== '6') {
  throw new Error(`IDEM_IOREDIS must be 5 or 6, got ${ioredisMajor}`);
}

export default defineConfig({
  resolve: ioredisMajor === '6' ? { alias: { ioredis: 'ioredis6' } } : {},
  test: {
    include: ['test/**/*.test.ts'],
    // Files share their worker processes: see scripts/vitest-own-process.ts.
    ...processes([]),
    // One Redis Cluster for the whole run, started and torn down here.
    globalSetup: ['test/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // The suites mostly wait on real leases (server clock): run the files side by side even
    // on a 2-CPU machine, where the default would run them one after another.
    maxWorkers: 4,
    // The property suites (about 90 s each in CI) first: started last, they were the tail.
    sequence: {
      sequencer: firstFiles([
        'test/conformance-cluster.test.ts',
        'test/conformance-standalone.test.ts',
      ]),
    },
  },
});
