// rev13fix review of the rev13 abort-key fix: the abort paths its tests did not take (a 500
// problem body that stalls, the backoff wait), each attempt reported once, with one key.
import { describe, expect, it } from 'vitest';
import { type AttemptEvent, createIdempotentFetch } from '../src/index.js';
import { inOrder, postJson, startHarness } from './support/harness.js';

describe('rev13fix client: aborted calls, the other paths', () => {
  it('an abort while a 500 problem body stalls is reported once, with the key, willRetry false', {
    timeout: 15_000,
  }, async () => {
    const controller = new AbortController();
    const h = await startHarness(
      inOrder({
        kind: 'status',
        status: 500,
        headers: { 'content-type': 'application/problem+json' },
        body: JSON.stringify({ type: 'about:blank', title: 'boom', status: 500 }),
        stallBody: true,
      }),
    );
    const events: AttemptEvent[] = [];
    const idemFetch = createIdempotentFetch({ onAttempt: (e) => events.push(e) });
    setTimeout(() => controller.abort(new Error('user gave up')), 200);
    const outcome = await idemFetch(
      `${h.url}/charges`,
      postJson({ item: 'stalled-500' }, { signal: controller.signal }),
    ).then(
      () => 'answered',
      (error: unknown) => (error as Error).message,
    );
    expect(outcome).toBe('user gave up');
    expect(events.map((e) => [e.attempt, typeof e.key, e.willRetry])).toEqual([
      [1, 'string', false],
    ]);
  });

  it('an abort during the backoff wait: every attempt reported once, all with the one key', {
    timeout: 15_000,
  }, async () => {
    const controller = new AbortController();
    const h = await startHarness(
      inOrder({ kind: 'status', status: 503, headers: { 'retry-after': '1' }, body: 'busy' }),
    );
    const events: AttemptEvent[] = [];
    const idemFetch = createIdempotentFetch({
      onAttempt: (e) => {
        events.push(e);
        if (e.willRetry) setTimeout(() => controller.abort(new Error('user gave up')), 50);
      },
    });
    const outcome = await idemFetch(
      `${h.url}/charges`,
      postJson({ item: 'backoff' }, { signal: controller.signal }),
    ).then(
      () => 'answered',
      (error: unknown) => (error as Error).message,
    );
    expect(outcome).toBe('user gave up');
    expect(events.length).toBe(1);
    expect(typeof events[0]?.key).toBe('string');
    // A retry with that key runs the charge once.
    const retry = await idemFetch(
      `${h.url}/charges`,
      postJson({ item: 'backoff' }, { headers: { 'Idempotency-Key': events[0]!.key! } }),
    );
    await retry.text();
    expect(retry.status).toBe(201);
    expect(h.app.total()).toBe(1);
  });
});
