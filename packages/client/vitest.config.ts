import { defineConfig } from 'vitest/config';
import { processes } from '../../scripts/vitest-own-process.js';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Files share their worker processes but these, which measure the whole process's heap
    // (another file's leftover work in a shared process allocated during rev10-memory's
    // measurement and failed a CI lane): see scripts/vitest-own-process.ts.
    ...processes(['test/rev10-memory.test.ts', 'test/rev12c-resume-memory.test.ts']),
    testTimeout: 30_000,
  },
});
