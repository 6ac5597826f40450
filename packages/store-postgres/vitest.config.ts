import { defineConfig } from 'vitest/config';
import { firstFiles } from '../../scripts/vitest-first-files.js';

export default defineConfig({
  test: {
    // A process a file (vitest's default), unlike the other packages: this suite runs beside
    // the chaos run only (scripts/test.sh), off the lanes' critical path, and hundreds of its
    // tests judge time against a real server.
    include: ['test/**/*.test.ts'],
    // The fault test runs alone afterwards (vitest.fault.config.ts): its worker processes
    // would starve the short real leases of the other files on a 2-core machine.
    exclude: ['test/fault.test.ts', '**/node_modules/**'],
    // Finds PostgreSQL (DATABASE_URL or 127.0.0.1:5432/test), creates this run's schema and
    // drops it afterwards.
    globalSetup: ['test/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // The suites mostly wait on real leases (server clock): run the files side by side (748 s
    // of file time in CI, 4 at a time 190 s; beside the chaos run the machine had a core idle).
    maxWorkers: 6,
    // The property suite (about 90 s in CI) first: started last, it was the package's tail.
    sequence: { sequencer: firstFiles(['test/conformance.test.ts']) },
  },
});
