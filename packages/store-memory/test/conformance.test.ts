import { admitStore, createAdmission } from '@idem/core';
import { describeStoreConformance } from '@idem/store-conformance';
import { createMemoryStore } from '../src/index.js';

describeStoreConformance('memory', {
  clock: 'injectable',
  createStore: ({ clock }) => createMemoryStore({ clock, sweepIntervalMs: 0 }),
  destroyStore: (store) => store.close?.(),
  // IDEM_PROPERTY_RUNS overrides (5000 runs pass too; CI keeps 1000 to stay in its time budget).
  numRuns: Number(process.env.IDEM_PROPERTY_RUNS) || (process.env.CI ? 1_000 : 200),
});

// An admission limit in front of a store (`admitStore`) refuses calls and changes no answer:
// the memory store behind a limit wide enough never to refuse passes the same suite.
describeStoreConformance('memory behind admitStore', {
  clock: 'injectable',
  createStore: ({ clock }) =>
    admitStore(
      createMemoryStore({ clock, sweepIntervalMs: 0 }),
      createAdmission({ targetLatencyMs: 60_000, initialLimit: 4_096, maxLimit: 4_096 }),
    ),
  destroyStore: (store) => store.close?.(),
  numRuns: process.env.CI ? 200 : 50,
});
