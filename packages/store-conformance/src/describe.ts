import fc from 'fast-check';
import { describe, it } from 'vitest';
import { contractChecks } from './checks.js';
import { withHarness } from './harness.js';
import type { ConformanceOptions } from './options.js';
import { exactlyOnceProperty, resolveNumRuns } from './properties.js';

/**
 * Registers the whole store contract as vitest tests: one `describe` per concern with
 * example-based checks, then the property-based exactly-once model. Call it once from an
 * adapter's test file:
 *
 * ```ts
 * describeStoreConformance('my-store', { clock: 'server', createStore: ({ prefix }) => createMyStore({ client, keyPrefix: prefix }) });
 * ```
 *
 * Failing property runs print the seed and path; replay one with `IDEM_PROPERTY_SEED` and
 * `IDEM_PROPERTY_PATH`.
 */
export function describeStoreConformance(name: string, options: ConformanceOptions): void {
  const timeout = options.timeoutMs ?? 60_000;
  describe(`store conformance: ${name}`, () => {
    const groups = [...new Set(contractChecks.map((c) => c.group))];
    for (const group of groups) {
      describe(group, () => {
        for (const check of contractChecks.filter((c) => c.group === group)) {
          it(check.name, () => withHarness(options, (h) => check.run(h)), timeout);
        }
      });
    }
    describe('exactly once under faults (property)', () => {
      const numRuns = resolveNumRuns(options);
      it(
        `(a)-(e) hold over ${numRuns} random interleavings of retries, failures, crashes, store faults and lease expiry`,
        async () => {
          await fc.assert(exactlyOnceProperty(options), { numRuns, ...replayParameters() });
        },
        Math.max(timeout, numRuns * 2_000),
      );
    });
  });
}

/** Seed and path from the environment, to replay a failing run that fast-check printed. */
export function replayParameters(): { seed?: number; path?: string } {
  const seed = Number(process.env.IDEM_PROPERTY_SEED);
  const path = process.env.IDEM_PROPERTY_PATH;
  return {
    ...(Number.isInteger(seed) ? { seed } : {}),
    ...(path ? { path } : {}),
  };
}
