/**
 * runrev: the event loop held up between the acquisition and the handler's start (a task the
 * `miss` listener queued, after core's own runway check). Before the fix the handler ran
 * with less than the runway of its lease left, beside a caller that takes the key over once
 * it passes (200). Now: 503 with Retry-After, the handler not run, the key given back (a
 * retry runs at once).
 */
import { createMemoryStore } from '@idem/store-memory';
import { describe, expect, it } from 'vitest';
import { withIdempotency } from '../src/index.js';
import { post } from './web-requests.js';

function holdLoop(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end);
}

describe('runrev: the handler does not start past the runway of its lease', () => {
  it('a hold of 290 of a 300 ms lease after the acquisition: 503, the handler not run, a retry runs', async () => {
    const runs: string[] = [];
    let hold = true;
    const handler = withIdempotency(
      async () => {
        runs.push('handler');
        return new Response('ran');
      },
      {
        scope: 'global',
        store: createMemoryStore(),
        leaseMs: 300,
        storeTimeoutMs: 2_000,
        onWarning: () => {},
        onEvent: (event) => {
          if (event.type === 'miss' && hold) {
            hold = false;
            queueMicrotask(() => holdLoop(290));
          }
        },
      },
    );
    const refused = await handler(post('k'));
    expect(refused.status).toBe(503);
    expect(refused.headers.get('retry-after')).not.toBeNull();
    expect(refused.headers.get('content-type')).toContain('application/problem+json');
    expect(runs).toEqual([]);
    // Given back: the retry is a fresh execution, not a 409 behind the refused one.
    const retry = await handler(post('k'));
    expect(retry.status).toBe(200);
    expect(await retry.text()).toBe('ran');
    expect(runs).toEqual(['handler']);
    await handler.drain(2_000);
  });
});
