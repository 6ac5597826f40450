/**
 * Both conformance suites as a user runs them: ESM test files in the scratch app, under the
 * vitest version npm installed there (the peer set's), against the packed stores. The HTTP
 * suite's file is its README example, taken from the README.
 */
import { execFile } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { readmeExample } from './examples.js';

const STORE_SUITE = `import { describeStoreConformance } from '@idem/store-conformance';
import { createMemoryStore } from '@idem/store-memory';

describeStoreConformance('packed memory store', {
  clock: 'injectable',
  createStore: ({ clock }) => createMemoryStore({ clock, sweepIntervalMs: 0 }),
  destroyStore: (store) => store.close?.(),
  numRuns: 25,
});
`;

export async function runConformanceInScratch(
  node: string,
  appDir: string,
  packagesDir: string,
): Promise<void> {
  const dir = join(appDir, 'conformance');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'store.test.mjs'), STORE_SUITE);
  writeFileSync(join(dir, 'http.test.ts'), readmeExample(packagesDir, 'http-conformance'));
  try {
    await promisify(execFile)(
      node,
      [join(appDir, 'node_modules/vitest/vitest.mjs'), 'run', '--root', dir],
      {
        cwd: appDir,
        encoding: 'utf8',
        env: { ...process.env, CI: '' },
        timeout: 240_000,
        maxBuffer: 16 << 20,
      },
    );
  } catch (error) {
    const { stdout, stderr } = error as { stdout?: string; stderr?: string };
    throw new Error(
      `the conformance suites failed in ${dir} on ${node}:\n${stdout ?? ''}\n${stderr ?? ''}`,
    );
  }
}
