import fc from 'fast-check';
import { describe, it } from 'vitest';
import { contractChecks } from './checks.js';
import { type Harness, withHarness } from './harness.js';
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
          it(check.name, () => runCheck(options, check.run), timeout);
        }
      });
    }
    describe('exactly once under faults (property)', () => {
      const numRuns = resolveNumRuns(options);
      it(
        `(a)-(f) hold over ${numRuns} random interleavings of retries, failures, crashes, store faults and lease expiry`,
        async () => {
          await fc.assert(exactlyOnceProperty(options), { numRuns, ...replayParameters() });
        },
        Math.max(timeout, numRuns * 2_000),
      );
    });
  });
}

/** Attempts of a check on a store with a clock of its own; see {@link runCheck}. */
const SERVER_CLOCK_ATTEMPTS = 3;

/**
 * Runs one check. On a store with a clock of its own the checks really sleep, and they count
 * on the store calls between two sleeps taking a small part of a lease (a 300 ms lease gives
 * an extend and an acquire 120 ms in "extend moves the lease forward"). On a starved machine
 * (a loaded CI run on two cores) a round trip can take longer than that, and the store then
 * rightly judges a lease passed. So the time the check spent outside its sleeps (plus how
 * late they woke) is measured: a check that failed while that slip exceeded a quarter of the
 * lease did not get the timing it asserts and runs again with a fresh key, at most
 * `SERVER_CLOCK_ATTEMPTS` times in all. A check that fails without such a slip fails at once,
 * and one that fails every attempt fails with its last error: a store that breaks the
 * contract fails as before.
 */
export async function runCheck(
  options: ConformanceOptions,
  run: (h: Harness) => Promise<void>,
): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    let slipMs = 0;
    let leaseMs = Number.POSITIVE_INFINITY;
    try {
      await withHarness(options, async (h) => {
        if (h.time.kind !== 'server') return run(h);
        leaseMs = h.time.leaseMs;
        const started = performance.now();
        let slept = 0;
        const time = {
          ...h.time,
          advance: (ms: number) => {
            slept += ms;
            return h.time.advance(ms);
          },
        };
        try {
          await run({ ...h, time });
        } finally {
          slipMs = performance.now() - started - slept;
        }
      });
      return;
    } catch (error) {
      const slipped = slipMs > leaseMs / 4;
      if (!slipped || attempt >= SERVER_CLOCK_ATTEMPTS) throw error;
      console.warn(
        `[store-conformance] a check failed after its store calls took ${Math.round(slipMs)} ms beyond its sleeps (more than a quarter of the ${leaseMs} ms lease): attempt ${attempt + 1} of ${SERVER_CLOCK_ATTEMPTS} (${error instanceof Error ? error.message : String(error)})`,
      );
    }
  }
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
