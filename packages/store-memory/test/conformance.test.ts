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

// A bounded memory store declares its bound (`capacity`): the suite's capacity check fills it
// and expects StoreFullError for a new key, never a completed record dropped inside its
// retention (contract 8), and every other check runs within the bound.
describeStoreConformance('memory bounded to 16 records', {
  clock: 'injectable',
  capacity: 16,
  createStore: ({ clock }) => createMemoryStore({ clock, sweepIntervalMs: 0, maxEntries: 16 }),
  destroyStore: (store) => store.close?.(),
  numRuns: process.env.CI ? 100 : 25,
});
