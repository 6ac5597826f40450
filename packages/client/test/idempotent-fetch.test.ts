import { describe, expect, it } from 'vitest';
import {
  type AttemptEvent,
  createIdempotentFetch,
  getIdempotencyInfo,
  IdemClientError,
  parseKeyHeader,
} from '../src/index.js';
import { inOrder, postJson, recordingSleep, startHarness } from './support/harness.js';

describe('createIdempotentFetch against a loopback @idem server with faults', () => {
  it('replays the recorded outcome when the connection drops after the server committed', async () => {
    const h = await startHarness(inOrder({ kind: 'drop-after' }));
    const events: AttemptEvent[] = [];
    const idemFetch = createIdempotentFetch({
      sleep: recordingSleep().sleep,
      onAttempt: (e) => events.push(e),
    });
    const response = await idemFetch(`${h.url}/charges`, postJson({ item: 'a', amount: 5 }));
    expect(response.status).toBe(201);
    const body = (await response.json()) as { charge: string; item: string };
    expect(body.item).toBe('a');
    expect(h.app.executions.get('a')).toBe(1);
    expect(h.server.seen).toHaveLength(2);
    const [first, second] = h.server.seen;
    expect(first?.key).not.toBeNull();
    expect(second?.key).toBe(first?.key);
    const info = getIdempotencyInfo(response);
    expect(info).toEqual({ key: parseKeyHeader(first?.key ?? ''), attempts: 2, replayed: true });
    expect(events.map((e) => [e.attempt, e.failure, e.willRetry])).toEqual([
      [1, 'network', true],
      [2, undefined, false],
    ]);

    // The body is the one the first execution produced: a third call with the same key
    // replays the same charge id.
    const again = await idemFetch(
      `${h.url}/charges`,
      postJson({ item: 'a', amount: 5 }, { headers: { 'Idempotency-Key': first?.key ?? '' } }),
    );
    expect(((await again.json()) as { charge: string }).charge).toBe(body.charge);
    expect(h.app.executions.get('a')).toBe(1);
  });

  it('retries a 500 from the gateway and then succeeds, executing once', async () => {
    const h = await startHarness(
      inOrder({ kind: 'status', status: 500 }, { kind: 'status', status: 502 }),
    );
    const idemFetch = createIdempotentFetch({ sleep: recordingSleep().sleep });
    const response = await idemFetch(`${h.url}/charges`, postJson({ item: 'b' }));
    expect(response.status).toBe(201);
    expect(getIdempotencyInfo(response)).toMatchObject({ attempts: 3, replayed: false });
    expect(h.app.executions.get('b')).toBe(1);
    expect(new Set(h.server.seen.map((s) => s.key)).size).toBe(1);
  });

  it('executes again after a handler 500, which the server did not record', async () => {
    let failures = 1;
    const h = await startHarness();
    const idemFetch = createIdempotentFetch({
      sleep: recordingSleep().sleep,
      // The first attempt asks the app to fail; later ones do not.
      fetch: (input, init) => {
        const body = failures-- > 0 ? JSON.stringify({ item: 'c', status: 500 }) : init?.body;
        return fetch(input, { ...init, body: body ?? null });
      },
    });
    const response = await idemFetch(`${h.url}/charges`, postJson({ item: 'c' }));
    // The failed execution was released, so the retry with the same key and another body
    // fingerprint is not a mismatch only if the server released it: it executes again.
    expect(response.status).toBe(201);
    expect(h.app.executions.get('c')).toBe(2);
    expect(getIdempotencyInfo(response)).toMatchObject({ attempts: 2, replayed: false });
  });

  it('honours Retry-After in seconds on a 429', async () => {
    const h = await startHarness(
      inOrder({ kind: 'status', status: 429, headers: { 'retry-after': '1' } }),
    );
    const { waits, sleep } = recordingSleep();
    const idemFetch = createIdempotentFetch({ sleep, random: () => 0.5 });
    const response = await idemFetch(`${h.url}/charges`, postJson({ item: 'd' }));
    expect(response.status).toBe(201);
    // The second asked for, plus jitter that only adds (a tenth of it at random() = 0.5).
    expect(waits).toEqual([1100]);
    expect(h.app.executions.get('d')).toBe(1);
  });

  it('honours Retry-After as an HTTP date, capped by maxRetryAfterMs', async () => {
    const h = await startHarness(
      inOrder(
        {
          kind: 'status',
          status: 503,
          headers: { 'retry-after': new Date(Date.now() + 3_000).toUTCString() },
        },
        {
          kind: 'status',
          status: 503,
          headers: { 'retry-after': new Date(Date.now() + 60_000).toUTCString() },
        },
      ),
    );
    const { waits, sleep } = recordingSleep();
    const idemFetch = createIdempotentFetch({ sleep, maxRetryAfterMs: 10_000 });
    const response = await idemFetch(`${h.url}/charges`, postJson({ item: 'e' }));
    expect(response.status).toBe(201);
    expect(waits).toHaveLength(2);
    expect(waits[0]).toBeGreaterThan(1_000);
    // Jitter only adds, up to a fifth of the wait asked for.
    expect(waits[0]).toBeLessThanOrEqual(3_600);
    expect(waits[1]).toBe(10_000);
  });

  it('aborts an attempt slower than attemptTimeoutMs, then gets 409 while in progress, then the replay', async () => {
    const h = await startHarness();
    const events: AttemptEvent[] = [];
    const idemFetch = createIdempotentFetch({
      attemptTimeoutMs: 100,
      maxAttempts: 50,
      maxRetryAfterMs: 40,
      minDelayMs: 10,
      initialDelayMs: 10,
      maxDelayMs: 40,
      onAttempt: (e) => events.push(e),
    });
    const response = await idemFetch(`${h.url}/charges`, postJson({ item: 'f', delayMs: 400 }));
    expect(response.status).toBe(201);
    expect(h.app.executions.get('f')).toBe(1);
    expect(events[0]).toMatchObject({ attempt: 1, failure: 'timeout', willRetry: true });
    expect(events[0]?.error).toMatchObject({ name: 'TimeoutError' });
    const conflicts = events.filter((e) => e.status === 409);
    expect(conflicts.length).toBeGreaterThan(0);
    // The server's Retry-After (whole seconds) was honoured, capped at maxRetryAfterMs.
    expect(
      conflicts.every((e) => e.willRetry && e.delayMs === 40 && e.failure === 'in-progress'),
    ).toBe(true);
    expect(getIdempotencyInfo(response)).toMatchObject({ replayed: true, attempts: events.length });
  });

  it('waits out a long first execution: 409s use inProgressWaitMs, not maxAttempts', async () => {
    const h = await startHarness();
    const events: AttemptEvent[] = [];
    // The first attempt times out on the long execution; the 409s after it must each come
    // back within attemptTimeoutMs: 50 ms was not enough in a loaded CI run (both attempts
    // timed out), 400 ms is, and the execution stays far longer than that.
    const idemFetch = createIdempotentFetch({
      attemptTimeoutMs: 400,
      maxAttempts: 2,
      maxRetryAfterMs: 25,
      initialDelayMs: 5,
      onAttempt: (e) => events.push(e),
    });
    const response = await idemFetch(
      `${h.url}/charges`,
      postJson({ item: 'long', delayMs: 1_500 }),
    );
    expect(response.status).toBe(201);
    expect(getIdempotencyInfo(response)?.replayed).toBe(true);
    expect(events.filter((e) => e.status === 409).length).toBeGreaterThan(2);
    expect(h.app.executions.get('long')).toBe(1);

    const impatient = createIdempotentFetch({
      attemptTimeoutMs: 400,
      maxAttempts: 2,
      maxRetryAfterMs: 25,
      initialDelayMs: 5,
      inProgressWaitMs: 200,
    });
    const gaveUp = await impatient(
      `${h.url}/charges`,
      postJson({ item: 'longer', delayMs: 3_000 }),
    );
    expect(gaveUp.status).toBe(409);
  });

  it('a second caller with the same key gets 409 while the first runs, then the replay', async () => {
    const h = await startHarness();
    const statuses: number[] = [];
    const idemFetch = createIdempotentFetch({ maxRetryAfterMs: 30, maxAttempts: 50 });
    const observed = createIdempotentFetch({
      maxRetryAfterMs: 30,
      maxAttempts: 50,
      onAttempt: (e) => statuses.push(e.status ?? 0),
    });
    const init = postJson(
      { item: 'g', delayMs: 300 },
      { headers: { 'Idempotency-Key': 'order-g-1' } },
    );
    const first = idemFetch(`${h.url}/charges`, init);
    // The second caller comes while the first one's execution runs.
    while (h.app.inFlight() === 0) await new Promise((r) => setTimeout(r, 5));
    const second = await observed(`${h.url}/charges`, init);
    const firstBody = await (await first).json();
    expect(statuses[0]).toBe(409);
    expect(statuses.at(-1)).toBe(201);
    expect(getIdempotencyInfo(second)?.replayed).toBe(true);
    expect(await second.json()).toEqual(firstBody);
    expect(h.app.executions.get('g')).toBe(1);
  });

  for (const status of [400, 401, 403, 404, 418, 422]) {
    it(`returns a ${status} from the handler at once, without a retry`, async () => {
      const h = await startHarness();
      const idemFetch = createIdempotentFetch({ sleep: recordingSleep().sleep });
      const response = await idemFetch(
        `${h.url}/charges`,
        postJson({ item: `s${status}`, status }),
      );
      expect(response.status).toBe(status);
      expect(h.server.seen).toHaveLength(1);
      expect(getIdempotencyInfo(response)?.attempts).toBe(1);
    });
  }

  it("does not retry the server's own 400 for an invalid key", async () => {
    const h = await startHarness();
    const idemFetch = createIdempotentFetch({ sleep: recordingSleep().sleep });
    const response = await idemFetch(
      `${h.url}/charges`,
      postJson({ item: 'h' }, { headers: { 'Idempotency-Key': 'x'.repeat(300) } }),
    );
    expect(response.status).toBe(400);
    expect(h.server.seen).toHaveLength(1);
    expect(h.app.total()).toBe(0);
  });

  it("does not retry the server's own 422 for a key reused with another body", async () => {
    const h = await startHarness();
    const idemFetch = createIdempotentFetch({ sleep: recordingSleep().sleep });
    const headers = { 'Idempotency-Key': 'reused-key' };
    expect((await idemFetch(`${h.url}/charges`, postJson({ item: 'i' }, { headers }))).status).toBe(
      201,
    );
    const response = await idemFetch(`${h.url}/charges`, postJson({ item: 'j' }, { headers }));
    expect(response.status).toBe(422);
    expect(h.server.seen).toHaveLength(2);
    expect(h.app.executions.get('j')).toBeUndefined();
  });

  it('stops at once when the caller aborts mid-backoff', async () => {
    const h = await startHarness(() => ({
      kind: 'status',
      status: 503,
      headers: { 'retry-after': '30' },
    }));
    const controller = new AbortController();
    const idemFetch = createIdempotentFetch({
      // Real sleep: the wait would last 30 s.
      onAttempt: (e) => {
        if (e.willRetry) setTimeout(() => controller.abort(), 20);
      },
    });
    const startedAt = performance.now();
    const call = idemFetch(
      `${h.url}/charges`,
      postJson({ item: 'k' }, { signal: controller.signal }),
    );
    await expect(call).rejects.toMatchObject({ name: 'AbortError' });
    // Far below the 30 s wait; a loose bound, not a timing figure.
    expect(performance.now() - startedAt).toBeLessThan(5_000);
    expect(h.server.seen).toHaveLength(1);
  });

  it('stops at once on abort even with an injected sleep that ignores the signal', async () => {
    const h = await startHarness(() => ({ kind: 'status', status: 503 }));
    const controller = new AbortController();
    let sleeping = false;
    const idemFetch = createIdempotentFetch({
      sleep: () => {
        sleeping = true;
        return new Promise(() => undefined);
      },
    });
    const call = idemFetch(
      `${h.url}/charges`,
      postJson({ item: 'l' }, { signal: controller.signal }),
    );
    while (!sleeping) await new Promise((r) => setTimeout(r, 5));
    controller.abort(new Error('user gave up'));
    await expect(call).rejects.toThrow('user gave up');
    expect(h.server.seen).toHaveLength(1);
  });

  it('aborts an attempt in flight when the caller aborts', async () => {
    const h = await startHarness(() => ({ kind: 'hang' }));
    const controller = new AbortController();
    const idemFetch = createIdempotentFetch();
    const call = idemFetch(
      `${h.url}/charges`,
      postJson({ item: 'm' }, { signal: controller.signal }),
    );
    // Abort once the server holds the request: the attempt is in flight, not yet answered.
    while (h.server.seen.length === 0) await new Promise((r) => setTimeout(r, 5));
    controller.abort(new DOMException('caller timed out', 'TimeoutError'));
    await expect(call).rejects.toMatchObject({ name: 'TimeoutError', message: 'caller timed out' });
    await new Promise((r) => setTimeout(r, 50));
    expect(h.server.seen).toHaveLength(1);
  });

  it('respects the deadline: a server that never answers ends in DEADLINE_EXCEEDED', async () => {
    const h = await startHarness(() => ({ kind: 'hang' }));
    const idemFetch = createIdempotentFetch({ deadlineMs: 200 });
    const error = await idemFetch(`${h.url}/charges`, postJson({ item: 'n' })).catch(
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(IdemClientError);
    expect(error).toMatchObject({ code: 'DEADLINE_EXCEEDED', attempts: 1 });
    expect(h.server.seen).toHaveLength(1);
  });

  it('respects the deadline: a Retry-After beyond it returns the last response without waiting', async () => {
    const h = await startHarness(() => ({
      kind: 'status',
      status: 503,
      headers: { 'retry-after': '5' },
    }));
    const { waits, sleep } = recordingSleep();
    const idemFetch = createIdempotentFetch({ deadlineMs: 2_000, sleep });
    const response = await idemFetch(`${h.url}/charges`, postJson({ item: 'o' }));
    expect(response.status).toBe(503);
    expect(waits).toEqual([]);
    expect(getIdempotencyInfo(response)?.attempts).toBe(1);
    expect(h.server.seen).toHaveLength(1);
  });

  it('gives up after maxAttempts network failures with RETRIES_EXHAUSTED', async () => {
    const h = await startHarness(() => ({ kind: 'drop-before' }));
    const { waits, sleep } = recordingSleep();
    const idemFetch = createIdempotentFetch({ maxAttempts: 3, sleep });
    const error = await idemFetch(`${h.url}/charges`, postJson({ item: 'p' })).catch(
      (e: unknown) => e,
    );
    expect(error).toMatchObject({ code: 'RETRIES_EXHAUSTED', attempts: 3 });
    expect((error as Error).cause).toBeInstanceOf(Error);
    expect(waits).toHaveLength(2);
    expect(h.server.seen).toHaveLength(3);
    expect(new Set(h.server.seen.map((s) => s.key)).size).toBe(1);
  });

  it('returns the last retryable response once attempts run out', async () => {
    const h = await startHarness(() => ({ kind: 'status', status: 503 }));
    const idemFetch = createIdempotentFetch({ maxAttempts: 2, sleep: recordingSleep().sleep });
    const response = await idemFetch(`${h.url}/charges`, postJson({ item: 'q' }));
    expect(response.status).toBe(503);
    expect(await response.text()).toBe('injected 503');
    expect(getIdempotencyInfo(response)).toMatchObject({ attempts: 2, replayed: false });
  });

  it('buffers a one-shot stream body and resends the same bytes', async () => {
    const h = await startHarness(inOrder({ kind: 'drop-after' }));
    const idemFetch = createIdempotentFetch({ sleep: recordingSleep().sleep });
    const payload = JSON.stringify({ item: 'r', text: 'x'.repeat(10_000) });
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        const bytes = new TextEncoder().encode(payload);
        for (let i = 0; i < bytes.length; i += 1000) controller.enqueue(bytes.slice(i, i + 1000));
        controller.close();
      },
    });
    const response = await idemFetch(`${h.url}/charges`, {
      method: 'POST',
      body: stream,
      duplex: 'half',
    } as RequestInit);
    expect(response.status).toBe(201);
    expect(h.server.seen.map((s) => s.body)).toEqual([payload, payload]);
    expect(h.app.executions.get('r')).toBe(1);
    expect(getIdempotencyInfo(response)?.replayed).toBe(true);
  });

  it('refuses a one-shot stream longer than maxBufferedBodyBytes before sending anything', async () => {
    const h = await startHarness();
    const idemFetch = createIdempotentFetch({ maxBufferedBodyBytes: 100 });
    async function* body() {
      for (let i = 0; i < 10; i++) yield new Uint8Array(50);
    }
    const error = await idemFetch(`${h.url}/charges`, {
      method: 'POST',
      body: body(),
    } as unknown as RequestInit).catch((e: unknown) => e);
    expect(error).toMatchObject({
      name: 'IdemClientError',
      code: 'BODY_NOT_REPLAYABLE',
      attempts: 0,
    });
    expect(h.server.seen).toHaveLength(0);
  });

  it('takes a Request object apart and sends its body on every attempt', async () => {
    const h = await startHarness(inOrder({ kind: 'status', status: 500 }));
    const idemFetch = createIdempotentFetch({ sleep: recordingSleep().sleep });
    const request = new Request(`${h.url}/charges`, postJson({ item: 's' }));
    const response = await idemFetch(request);
    expect(response.status).toBe(201);
    expect(h.server.seen.map((s) => s.body)).toEqual([
      JSON.stringify({ item: 's' }),
      JSON.stringify({ item: 's' }),
    ]);
  });

  it('derives the same key from the same content, so a repeated call is a replay', async () => {
    const h = await startHarness();
    const idemFetch = createIdempotentFetch({ key: 'content', keyFormat: 'bare' });
    const a = await idemFetch(`${h.url}/charges`, postJson({ item: 't' }));
    const b = await idemFetch(`${h.url}/charges`, postJson({ item: 't' }));
    const c = await idemFetch(`${h.url}/charges`, postJson({ item: 'u' }));
    expect(getIdempotencyInfo(b)?.replayed).toBe(true);
    expect(getIdempotencyInfo(c)?.replayed).toBe(false);
    expect(getIdempotencyInfo(a)?.key).toBe(getIdempotencyInfo(b)?.key);
    expect(getIdempotencyInfo(a)?.key).toMatch(/^[0-9a-f]{64}$/);
    expect(h.server.seen[0]?.key).toBe(getIdempotencyInfo(a)?.key);
    expect(h.app.executions.get('t')).toBe(1);
  });

  it('sends a fresh random key per logical call, as a Structured Field String', async () => {
    const h = await startHarness();
    const idemFetch = createIdempotentFetch();
    await idemFetch(`${h.url}/charges`, postJson({ item: 'v' }));
    await idemFetch(`${h.url}/charges`, postJson({ item: 'v2' }));
    const [k1, k2] = h.server.seen.map((s) => s.key);
    expect(k1).toMatch(/^"[0-9a-f-]{36}"$/);
    expect(k2).toMatch(/^"[0-9a-f-]{36}"$/);
    expect(k1).not.toBe(k2);
  });

  it('sends no key on GET and retries it as an idempotent method', async () => {
    const h = await startHarness(inOrder({ kind: 'status', status: 503 }));
    const idemFetch = createIdempotentFetch({ sleep: recordingSleep().sleep });
    const response = await idemFetch(`${h.url}/charges`);
    expect(response.status).toBe(201);
    expect(h.server.seen.map((s) => s.key)).toEqual([null, null]);
    expect(getIdempotencyInfo(response)).toEqual({ key: undefined, attempts: 2, replayed: false });
  });

  it('does not retry a method that is neither keyed nor idempotent', async () => {
    const h = await startHarness(inOrder({ kind: 'status', status: 503 }));
    const idemFetch = createIdempotentFetch({ methods: ['POST'], sleep: recordingSleep().sleep });
    const response = await idemFetch(`${h.url}/charges`, { method: 'PATCH', body: '{}' });
    expect(response.status).toBe(503);
    expect(h.server.seen).toHaveLength(1);
    expect(h.server.seen[0]?.key).toBeNull();
  });
});
