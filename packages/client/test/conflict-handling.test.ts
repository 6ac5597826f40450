import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type AttemptEvent, createIdempotentFetch, getIdempotencyInfo } from '../src/index.js';
import {
  inOrder,
  inProgressAnswer,
  postJson,
  recordingSleep,
  startHarness,
} from './support/harness.js';

/**
 * 409 handling: only the idem server's in-progress answer is waited on; any other 409 is the
 * application's own answer and goes back to the caller at once.
 */
describe('409 handling', () => {
  it("returns an application's own 409 at once: one attempt, one execution", async () => {
    const h = await startHarness();
    // A short wait so that a client that retries every 409 ends within the test.
    const idemFetch = createIdempotentFetch({
      sleep: recordingSleep().sleep,
      inProgressWaitMs: 1_000,
    });
    const response = await idemFetch(
      `${h.url}/charges`,
      postJson({ item: 'email-taken', status: 409 }),
    );
    expect(response.status).toBe(409);
    expect(h.server.seen).toHaveLength(1);
    expect(h.app.executions.get('email-taken')).toBe(1);
    expect(getIdempotencyInfo(response)?.attempts).toBe(1);
    expect(((await response.json()) as { item: string }).item).toBe('email-taken');
  });

  it('returns a 409 problem of another type at once, even with Retry-After, body intact', async () => {
    const body = JSON.stringify({
      type: 'https://example.com/problems/email-taken',
      title: 'Email already registered',
      status: 409,
    });
    const h = await startHarness(() => ({
      kind: 'status',
      status: 409,
      headers: { 'content-type': 'application/problem+json', 'retry-after': '1' },
      body,
    }));
    const idemFetch = createIdempotentFetch({
      sleep: recordingSleep().sleep,
      inProgressWaitMs: 1_000,
    });
    const response = await idemFetch(`${h.url}/users`, postJson({ email: 'a@example.com' }));
    expect(response.status).toBe(409);
    expect(h.server.seen).toHaveLength(1);
    // The problem type was read: the caller still gets the whole body, status, headers and URL.
    expect(response.url).toBe(`${h.url}/users`);
    expect(response.headers.get('retry-after')).toBe('1');
    expect(getIdempotencyInfo(response)?.attempts).toBe(1);
    expect(await response.text()).toBe(body);
  });

  it('returns a plain 409 with Retry-After (no in-progress problem type) at once', async () => {
    const h = await startHarness(() => ({
      kind: 'status',
      status: 409,
      headers: { 'retry-after': '1' },
      body: 'conflict',
    }));
    const idemFetch = createIdempotentFetch({
      sleep: recordingSleep().sleep,
      inProgressWaitMs: 1_000,
    });
    const response = await idemFetch(`${h.url}/charges`, postJson({ item: 'plain' }));
    expect(response.status).toBe(409);
    expect(h.server.seen).toHaveLength(1);
    expect(await response.text()).toBe('conflict');
  });

  it('bounds an in-progress loop whose Retry-After is 0: attempts capped, no wait under the floor', async () => {
    const h = await startHarness(() => inProgressAnswer('0'));
    const { waits, sleep } = recordingSleep(1);
    const events: AttemptEvent[] = [];
    const idemFetch = createIdempotentFetch({
      sleep,
      maxInProgressAttempts: 6,
      // inProgressWaitMs keeps its default (60 s): only the attempt cap can end this loop.
      onAttempt: (e) => events.push(e),
    });
    const response = await idemFetch(`${h.url}/charges`, postJson({ item: 'zero' }));
    expect(response.status).toBe(409);
    expect(h.server.seen.length).toBeLessThanOrEqual(6);
    expect(h.server.seen).toHaveLength(6);
    expect(getIdempotencyInfo(response)?.attempts).toBe(6);
    expect(waits).toHaveLength(5);
    for (const wait of waits) expect(wait).toBeGreaterThanOrEqual(100);
    expect(events.map((e) => e.failure)).toEqual(Array(6).fill('in-progress'));
    expect(new Set(h.server.seen.map((s) => s.key)).size).toBe(1);
  });

  it('the default attempt cap also bounds an in-progress loop when the clock stands still', async () => {
    const h = await startHarness(() => inProgressAnswer('0'));
    const idemFetch = createIdempotentFetch({
      sleep: recordingSleep(0).sleep,
      // A frozen clock: inProgressWaitMs can never pass, only the cap ends the loop.
      now: () => 1_000_000,
    });
    const response = await idemFetch(`${h.url}/charges`, postJson({ item: 'frozen' }));
    expect(response.status).toBe(409);
    expect(h.server.seen.length).toBeLessThanOrEqual(100);
  });

  it('waits on the in-progress answer without Retry-After, then gets the replay', async () => {
    const h = await startHarness(inOrder(inProgressAnswer(), inProgressAnswer()));
    const { waits, sleep } = recordingSleep();
    const idemFetch = createIdempotentFetch({ sleep, maxAttempts: 1 });
    const response = await idemFetch(`${h.url}/charges`, postJson({ item: 'later' }));
    expect(response.status).toBe(201);
    // In-progress answers do not use up maxAttempts.
    expect(getIdempotencyInfo(response)?.attempts).toBe(3);
    expect(waits).toHaveLength(2);
    for (const wait of waits) expect(wait).toBeGreaterThanOrEqual(100);
    expect(h.app.executions.get('later')).toBe(1);
  });

  it('honours the in-progress Retry-After with jitter that only adds', async () => {
    const h = await startHarness(inOrder(inProgressAnswer('2')));
    const { waits, sleep } = recordingSleep();
    const idemFetch = createIdempotentFetch({ sleep, random: () => 0.999 });
    const response = await idemFetch(`${h.url}/charges`, postJson({ item: 'two' }));
    expect(response.status).toBe(201);
    expect(waits).toHaveLength(1);
    expect(waits[0]).toBeGreaterThan(2_000);
    expect(waits[0]).toBeLessThanOrEqual(2_400);
  });

  it('does not treat a 409 to an unkeyed GET as in progress', async () => {
    const h = await startHarness(() => inProgressAnswer('0'));
    const idemFetch = createIdempotentFetch({ sleep: recordingSleep().sleep });
    const response = await idemFetch(`${h.url}/charges`);
    expect(response.status).toBe(409);
    expect(h.server.seen).toHaveLength(1);
  });

  it('isInProgress lets a plain 409 count, for servers without the problem type', async () => {
    const h = await startHarness(inOrder({ kind: 'status', status: 409 }));
    const idemFetch = createIdempotentFetch({
      sleep: recordingSleep().sleep,
      isInProgress: (answer) => answer.status === 409,
    });
    const response = await idemFetch(`${h.url}/charges`, postJson({ item: 'stripe-like' }));
    expect(response.status).toBe(201);
    expect(h.server.seen).toHaveLength(2);
  });

  it('does not hang on an in-progress answer whose body never ends', async () => {
    const h = await startHarness(() => ({ ...inProgressAnswer('0'), stallBody: true }));
    const idemFetch = createIdempotentFetch({
      sleep: recordingSleep().sleep,
      attemptTimeoutMs: 200,
    });
    const response = await idemFetch(`${h.url}/charges`, postJson({ item: 'stalled' }));
    // The problem type could not be read in time: the caller gets the answer as it is.
    expect(response.status).toBe(409);
    expect(h.server.seen).toHaveLength(1);
    await response.body?.cancel();
  });

  it('a second caller with the same key waits on the real in-progress 409, then replays', async () => {
    const h = await startHarness();
    const events: AttemptEvent[] = [];
    const first = createIdempotentFetch()(
      `${h.url}/charges`,
      postJson({ item: 'real', delayMs: 300 }, { headers: { 'Idempotency-Key': 'real-1' } }),
    );
    while (h.app.inFlight() === 0) await new Promise((r) => setTimeout(r, 5));
    const second = await createIdempotentFetch({
      sleep: recordingSleep().sleep,
      onAttempt: (e) => events.push(e),
    })(
      `${h.url}/charges`,
      postJson({ item: 'real', delayMs: 300 }, { headers: { 'Idempotency-Key': 'real-1' } }),
    );
    await (await first).text();
    expect(events[0]).toMatchObject({ status: 409, failure: 'in-progress', willRetry: true });
    expect(second.status).toBe(201);
    expect(getIdempotencyInfo(second)?.replayed).toBe(true);
    expect(h.app.executions.get('real')).toBe(1);
  });

  describe('no unhandled rejection from reading the problem body', () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    beforeEach(() => {
      unhandled.length = 0;
      process.on('unhandledRejection', onUnhandled);
    });
    afterEach(() => {
      process.off('unhandledRejection', onUnhandled);
    });
    const settle = () => new Promise((r) => setTimeout(r, 100));

    it('when the caller aborts while the in-progress body is being read', async () => {
      const h = await startHarness(() => ({ ...inProgressAnswer('0'), stallBody: true }));
      const controller = new AbortController();
      const call = createIdempotentFetch()(
        `${h.url}/charges`,
        postJson({ item: 'abort-read' }, { signal: controller.signal }),
      ).catch((e: unknown) => e);
      while (h.server.seen.length === 0) await new Promise((r) => setTimeout(r, 5));
      setTimeout(() => controller.abort(new Error('caller gave up')), 30);
      expect(await call).toMatchObject({ message: 'caller gave up' });
      await settle();
      expect(unhandled).toEqual([]);
    });

    it('when the caller aborts after a stalled problem body ran out of time', async () => {
      const h = await startHarness(() => ({ ...inProgressAnswer('0'), stallBody: true }));
      const controller = new AbortController();
      const response = await createIdempotentFetch({ attemptTimeoutMs: 100 })(
        `${h.url}/charges`,
        postJson({ item: 'late-abort' }, { signal: controller.signal }),
      );
      expect(response.status).toBe(409);
      controller.abort(new Error('caller gave up later'));
      await settle();
      expect(unhandled).toEqual([]);
    });
  });
});
