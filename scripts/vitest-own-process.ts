import { configDefaults } from 'vitest/config';

/**
 * How a package's test files use worker processes. By default they share them (vitest's
 * `isolate: false`): a worker imports the package and its dependencies once and runs file
 * after file, which took about half the CPU of a fresh process a file (koa: 38.9 to 20.3
 * CPU-seconds, the same 253 tests) and brought CI's run under 20 minutes on a 2-core host.
 *
 * The files in `ownProcess` observe what the whole process does (every timer created, the
 * global `Response` another file's server replaced, a module mocked before import, a
 * module-level store another file wrote to): they run in a second pass, each in a process of
 * its own, `IDEM_OWN_PROCESS=1 vitest run` (the package's test script chains both passes;
 * scripts/rerun-failed.mjs reruns a failed file in the pass it failed in).
 */
export function processes(ownProcess: readonly string[]): {
  isolate: boolean;
  include?: string[];
  exclude?: string[];
} {
  if (process.env.IDEM_OWN_PROCESS === '1') return { isolate: true, include: [...ownProcess] };
  return { isolate: false, exclude: [...configDefaults.exclude, ...ownProcess] };
}
