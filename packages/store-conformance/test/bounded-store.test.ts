// The capacity check (contract 8) on a bounded store that declares its bound: the memory
// store made small (16 records) runs the whole suite with `capacity: 16`, so the check fills
// it and expects StoreFullError, and no other check trips over the bound.
import { describe, expect, it } from 'vitest';
import { createMemoryStore } from '../../store-memory/src/index.js';
import { runCheck } from '../src/describe.js';
import { contractChecks, describeStoreConformance } from '../src/index.js';
import { createVariantStore, optionsFor } from './confrev-variants.js';

describeStoreConformance('memory, bounded to 16 records', {
  clock: 'injectable',
  capacity: 16,
  createStore: ({ clock }) => createMemoryStore({ clock, sweepIntervalMs: 0, maxEntries: 16 }),
  destroyStore: (store) => store.close?.(),
  numRuns: 25,
});

const capacityCheck = contractChecks.find((c) => c.group === 'capacity');

describe('the capacity check', () => {
  it('fails on a store declared bounded that never refuses a new key', async () => {
    expect(capacityCheck).toBeDefined();
    // The plain memory store (100,000 records) told to the suite as holding 16.
    await expect(runCheck({ ...optionsFor({}), capacity: 16 }, capacityCheck!.run)).rejects.toThrow(
      /without StoreFullError/,
    );
  });

  it('passes on the plain memory store without a declared capacity', async () => {
    await runCheck(
      { clock: 'injectable', createStore: ({ clock }) => createVariantStore({}, clock) },
      capacityCheck!.run,
    );
  });
});
