import { defineConfig } from 'vitest/config';
import { firstFiles } from '../../scripts/vitest-first-files.js';
import { fileWorkers } from '../../scripts/vitest-workers.js';

// The SDK warns once per process that releases after January 2027 need Node 22; tests run on 20.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

export default defineConfig({
  test: {
    // Files run 4 at a time: they mostly wait (scripts/vitest-workers.ts).
    maxWorkers: fileWorkers(4),
    // The lamrev2 suite (about 30 s of lease waits on each Middy major, a file each) first:
    // small files, started last they were the package's tail.
    sequence: {
      sequencer: firstFiles(['test/lamrev2-middy6.test.ts', 'test/lamrev2-middy7.test.ts']),
    },
    // Files share their worker processes (README "Tests"): about half the CPU of one process a file.
    isolate: false,
    include: ['test/**/*.test.ts'],
    // Starts DynamoDB Local (or uses DYNAMODB_ENDPOINT), creates this run's table, checks Redis.
    globalSetup: ['test/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
  },
});
