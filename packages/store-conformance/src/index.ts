export { contractChecks } from './checks.js';
export type { ContractCheck } from './checks-records.js';
export { describeStoreConformance, replayParameters } from './describe.js';
export type { Harness, TestTime } from './harness.js';
export { createHarness, withHarness } from './harness.js';
export type { Fault, Grant } from './observed-store.js';
export { FencedLedger, ObservedStore } from './observed-store.js';
export type { ConformanceContext, ConformanceOptions } from './options.js';
export { exactlyOnceProperty, resolveNumRuns, runScenario } from './properties.js';
