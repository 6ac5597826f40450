/**
 * `drain(timeoutMs, { finalWritesOnly: true })` reaches core's drain: during a store outage a
 * shutdown waits for the final writes only, not for the give-back of an acquisition that timed
 * out (retried up to a lease), whose key then waits for its lease (never a second run).
 */
import type { IdempotencyStore } from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';
import { describe, expect, it } from 'vitest';
import { createIdempotencyHandler } from '../src/index.js';

/** A store whose every call is accepted and never answered (a silent connection). */
function silentStore(): IdempotencyStore {
  const inner = createMemoryStore();
  const never = () => new Promise<never>(() => {});
  return {
    capabilities: inner.capabilities,
    acquire: never,
    complete: never,
    release: never,
    extend: never,
    get: never,
  } as IdempotencyStore;
}

describe('drain of final writes only (@idem/http)', () => {
  it('counts the give-back of a timed-out acquisition in a whole drain, not in one of final writes', async () => {
    const handler = createIdempotencyHandler({
      store: silentStore(),
      scope: 'global',
      storeTimeoutMs: 50,
    });
    const response = await handler.handle(
      new Request('http://api.test/orders', {
        method: 'POST',
        headers: { 'idempotency-key': 'k', 'content-type': 'application/json' },
        body: '{}',
      }),
      async () => Response.json({}, { status: 201 }),
    );
    expect(response.status).toBe(503);
    expect(await handler.drain(20)).toBeGreaterThanOrEqual(1);
    expect(await handler.drain(20, { finalWritesOnly: true })).toBe(0);
  });
});
