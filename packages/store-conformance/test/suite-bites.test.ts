import { ManualClock } from '@idem/core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { assertSameBytes } from '../src/checks-records.js';
import {
  type ConformanceOptions,
  contractChecks,
  describeStoreConformance,
  exactlyOnceProperty,
  withHarness,
} from '../src/index.js';
import { type Bug, createNaiveStore } from './naive-store.js';

const options = (bug: Bug): ConformanceOptions => ({
  clock: 'injectable',
  createStore: ({ clock }) => createNaiveStore(bug, clock),
});

// The baseline: an independent, correct implementation passes the whole suite.
describeStoreConformance('naive reference store', options('none'));

// Also with real time and short leases, as server-clock stores run it. The service's clock is
// not the process's `Date` (which the suite steps to tell the two apart): a monotonic one.
const serviceClock = { now: () => Math.floor(performance.timeOrigin + performance.now()) };
describeStoreConformance('naive reference store on a clock of its own', {
  clock: 'server',
  leaseMs: 120,
  createStore: () => createNaiveStore('none', serviceClock, 'server'),
  numRuns: 10,
});

async function failingChecks(bug: Bug): Promise<string[]> {
  const failed: string[] = [];
  for (const check of contractChecks) {
    try {
      await withHarness(options(bug), (h) => check.run(h));
    } catch {
      failed.push(`${check.group}: ${check.name}`);
    }
  }
  return failed;
}

async function propertyFails(bug: Bug): Promise<string | undefined> {
  const details = await fc.check(exactlyOnceProperty(options(bug)), { numRuns: 5_000 });
  return details.failed ? fc.defaultReportMessage(details) : undefined;
}

describe('the suite bites: each broken store fails it', () => {
  const cases: [Bug, 'checks' | 'property' | 'both'][] = [
    ['complete-ignores-owner', 'both'],
    ['release-ignores-owner', 'both'],
    ['check-then-set-acquire', 'both'],
    ['release-forgets-fence', 'both'],
    ['no-expiry-check', 'both'],
    ['takeover-keeps-fence', 'both'],
    ['binary-as-text', 'checks'],
    ['in-progress-expires-with-lease', 'checks'],
    // (f): a takeover or a retry after a release that begins another logical request.
    ['takeover-new-origin', 'both'],
    ['release-new-origin', 'both'],
  ];
  for (const [bug, where] of cases) {
    it(`${bug} is caught by ${where === 'both' ? 'the checks and the property' : `the ${where}`}`, async () => {
      if (where !== 'property') expect(await failingChecks(bug)).not.toEqual([]);
      if (where !== 'checks') {
        const report = await propertyFails(bug);
        expect(report).toBeDefined();
        expect(report).toMatch(/seed/i);
      }
    }, 120_000);
  }
  // Stores that miss the redelivery rule pass (nearly) every older check: the new group catches them.
  const redelivery: Bug[] = [
    'acquire-redelivery-found',
    'acquire-redelivery-new-fence',
    'acquire-redelivery-keeps-lease',
    'complete-redelivery-refused',
    'complete-redelivery-overwrites',
    'complete-redelivery-ignores-owner',
  ];
  for (const bug of redelivery) {
    it(`${bug} is caught by the redelivery checks`, async () => {
      const failed = await failingChecks(bug);
      expect(failed.some((name) => name.startsWith('lost answers then redelivery:'))).toBe(true);
    });
  }
  const admin: [Bug, string][] = [
    ['force-release-keeps-fence', 'admin'],
    ['force-release-keeps-owner', 'admin'],
    ['force-release-destroys-completed', 'admin'],
    ['force-release-ignores-expectation', 'admin'],
    ['delete-keeps-record', 'admin'],
    ['delete-forgets-fence', 'admin'],
    ['delete-ignores-expectation', 'admin'],
    ['wrong-clock-capability', 'capabilities'],
    ['takeover-new-origin', 'origin'],
    ['release-new-origin', 'origin'],
    ['origin-outlives-retention', 'origin'],
  ];
  for (const [bug, group] of admin) {
    it(`${bug} is caught by the ${group} checks`, async () => {
      const failed = await failingChecks(bug);
      expect(failed.some((name) => name.startsWith(`${group}:`))).toBe(true);
    });
  }
  it('a store without admin fails the admin checks', async () => {
    const failed: string[] = [];
    for (const check of contractChecks.filter((c) => c.group === 'admin')) {
      await withHarness(
        {
          clock: 'injectable',
          createStore: ({ clock }) => {
            const { admin: _, ...store } = createNaiveStore('none', clock);
            return store;
          },
        },
        (h) => check.run(h),
      ).catch(() => failed.push(check.name));
    }
    expect(failed.length).toBe(contractChecks.filter((c) => c.group === 'admin').length);
  });
  it('a broken store whose found record carries a bogus clock reading is caught', async () => {
    expect(await failingChecks('found-without-clock')).not.toEqual([]);
  });
  it('the manual clock refuses to go backwards (the suite relies on it)', () => {
    expect(() => new ManualClock(10).set(5)).toThrow(RangeError);
  });
});

describe('a check that finds corrupted outcome bytes fails fast, with a short message', () => {
  // node:assert/strict's diff of two differing byte arrays grows with the square of their
  // length on Node 22+: the 4 MiB outcome check took 21 GB against a corrupting store.
  it('binary-as-text on the 256 KiB and 4 MiB outcome checks: the first differing byte, bounded message', async () => {
    const big = contractChecks.filter((check) => /256 KiB|4 MiB/.test(check.name));
    expect(big).toHaveLength(2);
    for (const check of big) {
      const started = Date.now();
      const error = await withHarness(options('binary-as-text'), (h) => check.run(h)).then(
        () => undefined,
        (thrown: unknown) => thrown,
      );
      expect(error, check.name).toBeInstanceOf(Error);
      const { message } = error as Error;
      expect(message).toMatch(
        /^outcome bytes: got \d+ bytes, expected \d+, first difference at byte \d+/,
      );
      expect(message.length).toBeLessThan(400);
      expect(Date.now() - started, 'the check failed fast').toBeLessThan(10_000);
    }
  });

  it('assertSameBytes tells equal bytes, absence and a difference apart', () => {
    const bytes = new Uint8Array([1, 2, 3, 4]);
    expect(() => assertSameBytes(bytes, Uint8Array.from(bytes), 'same')).not.toThrow();
    expect(() => assertSameBytes(undefined, undefined, 'none')).not.toThrow();
    expect(() => assertSameBytes(undefined, bytes, 'x')).toThrow(
      'x: got undefined, expected 4 bytes',
    );
    expect(() => assertSameBytes(bytes, bytes.subarray(0, 3), 'x')).toThrow(
      'x: got 4 bytes, expected 3, first difference at byte 3 (got 01020304, expected 010203)',
    );
    // A view into a larger buffer compares only its own bytes.
    const backing = new Uint8Array([9, 1, 2, 3, 4, 9]);
    expect(() => assertSameBytes(backing.subarray(1, 5), bytes, 'view')).not.toThrow();
  });
});
