// Review round 13 (rev13client): the caller's own abort and the key the README tells the
// caller to retry with. A real node:http server behind @idem/http on loopback.
import { describe, expect, it } from 'vitest';
import { type AttemptEvent, createIdempotentFetch } from '../src/index.js';
import type { Fault } from './support/fault-server.js';
import { inOrder, inProgressAnswer, postJson, startHarness } from './support/harness.js';

/** The fault with its body stalled after the first bytes. */
function stalled(fault: Fault): Fault {
  if (fault.kind !== 'status') throw new Error('only a status fault has a body to stall');
  return { ...fault, stallBody: true };
}

describe('rev13 client: an aborted call still names its key', () => {
  // FIXED (was FINDING MEDIUM): when the caller's signal aborted an attempt in flight (the usual
  // `signal: AbortSignal.timeout(…)` around a slow call), the call rejected with the signal's
  // reason and onAttempt was never called for that attempt: the random key the server already
  // received was exposed nowhere (the reason carries no key, there is no response). The README
  // ("Trying the same logical call again yourself") promises it in "the `key` of `onAttempt`
  // events, e.g. when your own signal aborted the call", and onAttempt's doc says "after every
  // attempt". A caller that retried could only do so with a new key, and the server ran the
  // call (the charge) twice. Reproduce: a server slower than the caller's timeout, one call.
  // Fix: the aborted attempt is reported to onAttempt (error: the reason, willRetry: false)
  // before the call rejects, also when the abort comes while a 409/500 problem body is read.
  it('an attempt aborted by the caller is reported with its key, so a retry with it runs once', {
    timeout: 15_000,
  }, async () => {
    const h = await startHarness();
    const events: AttemptEvent[] = [];
    const idemFetch = createIdempotentFetch({ onAttempt: (e) => events.push(e) });
    const body = { item: 'slow-charge', delayMs: 600 };
    const aborted = await idemFetch(
      `${h.url}/charges`,
      postJson(body, { signal: AbortSignal.timeout(150) }),
    ).then(
      () => 'answered',
      (error: unknown) => (error as Error).name,
    );
    expect(aborted).toBe('TimeoutError');
    // What the README says to do: take the key from the onAttempt event, send it again.
    const key = events.at(-1)?.key;
    const retry = await idemFetch(
      `${h.url}/charges`,
      postJson(body, key === undefined ? {} : { headers: { 'Idempotency-Key': key } }),
    );
    await retry.text();
    expect(retry.status).toBe(201);
    expect({ events: events.length > 0, key: typeof key, executions: h.app.total() }).toEqual({
      events: true,
      key: 'string',
      executions: 1,
    });
  });

  // The same while the in-progress 409's problem body is being read (the other place a caller's
  // abort ended the call without a report).
  it('an abort while an in-progress 409 body is read is reported with the key too', {
    timeout: 15_000,
  }, async () => {
    const controller = new AbortController();
    // First answer: an in-progress 409 whose body stalls; the caller aborts meanwhile.
    const h = await startHarness(inOrder(stalled(inProgressAnswer('1'))));
    const events: AttemptEvent[] = [];
    const idemFetch = createIdempotentFetch({ onAttempt: (e) => events.push(e) });
    setTimeout(() => controller.abort(new Error('user gave up')), 200);
    const outcome = await idemFetch(
      `${h.url}/charges`,
      postJson({ item: 'stalled-409' }, { signal: controller.signal }),
    ).then(
      () => 'answered',
      (error: unknown) => (error as Error).message,
    );
    expect(outcome).toBe('user gave up');
    expect(events.map((e) => typeof e.key)).toEqual(['string']);
    expect(events[0]?.willRetry).toBe(false);
  });
});
