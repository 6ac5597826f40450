import { describeStoreConformance } from '@idem/store-conformance';
import { createMemoryStore } from '../src/index.js';

describeStoreConformance('memory', {
  clock: 'injectable',
  createStore: ({ clock }) => createMemoryStore({ clock, sweepIntervalMs: 0 }),
  destroyStore: (store) => store.close?.(),
  numRuns: process.env.CI ? 5_000 : 200,
});
