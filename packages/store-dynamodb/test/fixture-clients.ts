import type { makeClient } from './dynamodb-env.js';

/** The clients a test file made through store-fixture.ts (or added): destroyed after the file. */
export const clients = new Set<ReturnType<typeof makeClient>>();
