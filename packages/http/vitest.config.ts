import { defineConfig } from 'vitest/config';
import { processes } from '../../scripts/vitest-own-process.js';
import { fileWorkers } from '../../scripts/vitest-workers.js';

export default defineConfig({
  test: {
    // Files run 3 at a time: they mostly wait (scripts/vitest-workers.ts).
    maxWorkers: fileWorkers(3),
    include: ['test/**/*.test.ts'],
    // Files share worker processes but these, which observe the whole process (module
    // mocks, globals): see scripts/vitest-own-process.ts.
    ...processes([
      'test/lightweight-response.test.ts',
      // These serve with @hono/node-server, which replaces the global Response for good.
      'test/rev10-short-stream.test.ts',
      'test/after-acquisition.test.ts',
      'test/fastify10-review.test.ts',
    ]),
    testTimeout: 30_000,
  },
});
