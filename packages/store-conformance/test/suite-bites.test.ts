import { ManualClock, systemClock } from '@idem/core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
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

// Also with real time and short leases, as server-clock stores run it.
describeStoreConformance('naive reference store on the system clock', {
  clock: 'server',
  leaseMs: 120,
  createStore: () => createNaiveStore('none', systemClock, 'server'),
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
    ['delete-keeps-record', 'admin'],
    ['delete-forgets-fence', 'admin'],
    ['wrong-clock-capability', 'capabilities'],
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
