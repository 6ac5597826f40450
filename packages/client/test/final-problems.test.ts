import { describe, expect, it } from 'vitest';
import { createIdempotentFetch, getIdempotencyInfo } from '../src/index.js';
import { postJson, recordingSleep, startHarness } from './support/harness.js';

/**
 * An idem server's 500 problems that the same key would get again (the first request ran but
 * its response was not recorded; the server's scope hook gave no principal) go back at once,
 * while any other 500 is still retried.
 */
describe('final 500 problems', () => {
  for (const type of [
    'https://idem.dev/problems/outcome-not-recorded',
    'https://idem.dev/problems/no-principal',
  ]) {
    it(`returns ${type.split('/').pop()} at once, body intact`, async () => {
      const body = JSON.stringify({ type, title: 'final', status: 500 });
      const h = await startHarness(() => ({
        kind: 'status',
        status: 500,
        headers: { 'content-type': 'application/problem+json' },
        body,
      }));
      const idemFetch = createIdempotentFetch({ sleep: recordingSleep().sleep });
      const response = await idemFetch(`${h.url}/charges`, postJson({ amount: 1 }));
      expect(response.status).toBe(500);
      expect(h.server.seen).toHaveLength(1);
      expect(getIdempotencyInfo(response)?.attempts).toBe(1);
      expect(await response.text()).toBe(body);
    });
  }

  it('still retries a 500 problem of another type', async () => {
    const h = await startHarness(() => ({
      kind: 'status',
      status: 500,
      headers: { 'content-type': 'application/problem+json' },
      body: JSON.stringify({ type: 'https://idem.dev/problems/handler-failed', status: 500 }),
    }));
    const idemFetch = createIdempotentFetch({ sleep: recordingSleep().sleep, maxAttempts: 3 });
    const response = await idemFetch(`${h.url}/charges`, postJson({ amount: 1 }));
    expect(response.status).toBe(500);
    expect(h.server.seen).toHaveLength(3);
  });
});
