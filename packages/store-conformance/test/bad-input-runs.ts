import { inputChecks } from '../src/checks-input.js';
import { type ConformanceOptions, withHarness } from '../src/index.js';
import { type Bug, createNaiveStore } from './naive-store.js';

const options = (bug: Bug): ConformanceOptions => ({
  clock: 'injectable',
  createStore: ({ clock }) => createNaiveStore(bug, clock),
});

/** The names of the "bad input" checks the naive store with `bug` fails. */
export async function failingChecks(bug: Bug): Promise<string[]> {
  const failed: string[] = [];
  for (const check of inputChecks) {
    try {
      await withHarness(options(bug), (h) => check.run(h));
    } catch {
      failed.push(check.name);
    }
  }
  return failed;
}
