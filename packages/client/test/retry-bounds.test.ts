import { getEventListeners } from 'node:events';
import { describe, expect, it } from 'vitest';
import { createIdempotentFetch, getIdempotencyInfo, IdemClientError } from '../src/index.js';
import { inOrder, postJson, recordingSleep, startHarness } from './support/harness.js';

/** Resolves to 'hung' if `promise` has not settled within `ms`: a hang detector, not a timing figure. */
function orHang<T>(promise: Promise<T>, ms = 3_000): Promise<T | 'hung'> {
  let timer: NodeJS.Timeout | undefined;
  const hung = new Promise<'hung'>((resolve) => {
    timer = setTimeout(() => resolve('hung'), ms);
  });
  return Promise.race([promise, hung]).finally(() => clearTimeout(timer));
}

/** A stream body that sends a first chunk and then never ends. */
function stalledStream(): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(new TextEncoder().encode('{"item":'));
    },
  });
}

describe('retry bounds', () => {
  it('never waits under the floor, even for Retry-After: 0 on a 503', async () => {
    const h = await startHarness(() => ({
      kind: 'status',
      status: 503,
      headers: { 'retry-after': '0' },
    }));
    const { waits, sleep } = recordingSleep(1);
    const idemFetch = createIdempotentFetch({ sleep, random: () => 0, maxAttempts: 4 });
    const response = await idemFetch(`${h.url}/charges`, postJson({ item: 'floor' }));
    expect(response.status).toBe(503);
    expect(h.server.seen).toHaveLength(4);
    expect(waits).toHaveLength(3);
    for (const wait of waits) expect(wait).toBeGreaterThanOrEqual(100);
  });

  it('caps a huge Retry-After at maxRetryAfterMs', async () => {
    const h = await startHarness(
      inOrder({ kind: 'status', status: 429, headers: { 'retry-after': '9'.repeat(400) } }),
    );
    const { waits, sleep } = recordingSleep();
    const idemFetch = createIdempotentFetch({ sleep, maxRetryAfterMs: 5_000 });
    const response = await idemFetch(`${h.url}/charges`, postJson({ item: 'huge' }));
    expect(response.status).toBe(201);
    expect(waits).toEqual([5_000]);
  });

  it('never retries a 422, even when isRetryableStatus says so', async () => {
    const h = await startHarness();
    const idemFetch = createIdempotentFetch({
      sleep: recordingSleep().sleep,
      isRetryableStatus: () => true,
    });
    const response = await idemFetch(`${h.url}/charges`, postJson({ item: 'v422', status: 422 }));
    expect(response.status).toBe(422);
    expect(h.server.seen).toHaveLength(1);
  });

  it('never retries a replayed answer: it is the recorded outcome', async () => {
    const h = await startHarness(() => ({
      kind: 'status',
      status: 503,
      headers: { 'idempotent-replayed': 'true' },
    }));
    const idemFetch = createIdempotentFetch({ sleep: recordingSleep().sleep });
    const response = await idemFetch(`${h.url}/charges`, postJson({ item: 'rec' }));
    expect(response.status).toBe(503);
    expect(h.server.seen).toHaveLength(1);
    expect(getIdempotencyInfo(response)).toMatchObject({ attempts: 1, replayed: true });
  });

  it('stops reading a stream body that never ends when the caller aborts', async () => {
    const h = await startHarness();
    const controller = new AbortController();
    const idemFetch = createIdempotentFetch();
    const call = idemFetch(`${h.url}/charges`, {
      method: 'POST',
      body: stalledStream(),
      duplex: 'half',
      signal: controller.signal,
    } as RequestInit).catch((e: unknown) => e);
    setTimeout(() => controller.abort(new Error('caller gave up')), 20);
    const outcome = await orHang(call);
    expect(outcome).toBeInstanceOf(Error);
    expect((outcome as Error).message).toBe('caller gave up');
    expect(h.server.seen).toHaveLength(0);
  });

  it('stops reading a stream body that never ends at the deadline', async () => {
    const h = await startHarness();
    const idemFetch = createIdempotentFetch({ deadlineMs: 100 });
    const call = idemFetch(`${h.url}/charges`, {
      method: 'POST',
      body: stalledStream(),
      duplex: 'half',
    } as RequestInit).catch((e: unknown) => e);
    const outcome = await orHang(call);
    expect(outcome).toBeInstanceOf(IdemClientError);
    expect(outcome).toMatchObject({ code: 'DEADLINE_EXCEEDED', attempts: 0 });
    expect(h.server.seen).toHaveLength(0);
  });

  it('stops waiting for a key function that never answers, at the deadline', async () => {
    const h = await startHarness();
    const idemFetch = createIdempotentFetch({
      deadlineMs: 100,
      key: () => new Promise<string>(() => undefined),
    });
    const outcome = await orHang(
      idemFetch(`${h.url}/charges`, postJson({ item: 'k' })).catch((e: unknown) => e),
    );
    expect(outcome).toMatchObject({ code: 'DEADLINE_EXCEEDED', attempts: 0 });
    expect(h.server.seen).toHaveLength(0);
  });

  it('sends the bytes of the call on every attempt, even if the caller mutates its buffer', async () => {
    const h = await startHarness(inOrder({ kind: 'status', status: 503 }));
    const bytes = new TextEncoder().encode(JSON.stringify({ item: 'buf' }));
    const sent = new TextDecoder().decode(bytes);
    const idemFetch = createIdempotentFetch({
      sleep: recordingSleep().sleep,
      // The caller reuses its buffer while the call is still retrying.
      onAttempt: () => bytes.fill(0x20),
    });
    const response = await idemFetch(`${h.url}/charges`, { method: 'POST', body: bytes });
    expect(response.status).toBe(201);
    expect(h.server.seen.map((s) => s.body)).toEqual([sent, sent]);
  });

  it('sends the same form on every attempt, even if the caller mutates its URLSearchParams', async () => {
    const h = await startHarness(inOrder({ kind: 'status', status: 503 }));
    const params = new URLSearchParams({ item: 'form' });
    const idemFetch = createIdempotentFetch({
      sleep: recordingSleep().sleep,
      onAttempt: () => params.set('item', 'other'),
    });
    const response = await idemFetch(`${h.url}/charges`, { method: 'POST', body: params });
    expect(response.status).toBe(201);
    expect(h.server.seen.map((s) => s.body)).toEqual(['item=form', 'item=form']);
  });

  it('gives two calls made with the same init object two keys', async () => {
    const h = await startHarness();
    const idemFetch = createIdempotentFetch();
    const init = postJson({ item: 'same-init' });
    await idemFetch(`${h.url}/charges`, init);
    await idemFetch(`${h.url}/charges`, init);
    const [a, b] = h.server.seen.map((s) => s.key);
    expect(a).not.toBe(b);
    expect(new Headers(init.headers).has('idempotency-key')).toBe(false);
  });

  it('leaves no abort listener per call on a long-lived caller signal (one in all)', async () => {
    const h = await startHarness(inOrder({ kind: 'status', status: 503 }));
    const controller = new AbortController();
    const idemFetch = createIdempotentFetch({ sleep: recordingSleep().sleep });
    const calls = async (from: number, count: number) => {
      for (let i = from; i < from + count; i++) {
        const response = await idemFetch(
          `${h.url}/charges`,
          postJson({ item: `l${i}` }, { signal: controller.signal }),
        );
        await response.text();
      }
    };
    await calls(0, 15);
    // One listener follows every call made with the signal (their signals held weakly).
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(1);
    await calls(15, 15);
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(1);
  });

  it('aborting the caller signal still aborts reading a returned body', async () => {
    const h = await startHarness(() => ({ kind: 'status', status: 200, stallBody: true }));
    const controller = new AbortController();
    const idemFetch = createIdempotentFetch();
    const response = await idemFetch(
      `${h.url}/charges`,
      postJson({ item: 'body' }, { signal: controller.signal }),
    );
    const reading = response.text().catch((e: unknown) => e);
    controller.abort(new Error('stop reading'));
    const outcome = await orHang(reading);
    expect(outcome).toBeInstanceOf(Error);
  });
});

describe('a request that fetch can never send', () => {
  for (const [name, url, init] of [
    ['a relative URL', '/charges', postJson({ item: 'rel' })],
    ['a GET with a body', 'http://127.0.0.1:9/charges', { method: 'GET', body: 'x' }],
    ['a forbidden method', 'http://127.0.0.1:9/charges', { method: 'CONNECT' }],
  ] as const) {
    it(`fails at once with INVALID_INPUT for ${name}, nothing retried`, async () => {
      const { waits, sleep } = recordingSleep();
      let attempts = 0;
      const idemFetch = createIdempotentFetch({ sleep, onAttempt: () => attempts++ });
      const error = await idemFetch(url, init as RequestInit).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(IdemClientError);
      expect(error).toMatchObject({ code: 'INVALID_INPUT', attempts: 0 });
      expect((error as Error).cause).toBeInstanceOf(TypeError);
      expect(attempts).toBe(0);
      expect(waits).toEqual([]);
    });
  }
});

describe('retrying a logical call after the client gave up', () => {
  it('names the key on RETRIES_EXHAUSTED, so a later retry with it replays instead of executing again', async () => {
    const h = await startHarness(
      inOrder({ kind: 'drop-after' }, { kind: 'drop-after' }, { kind: 'drop-after' }),
    );
    const idemFetch = createIdempotentFetch({ maxAttempts: 3, sleep: recordingSleep().sleep });
    const error = await idemFetch(`${h.url}/charges`, postJson({ item: 'gave-up' })).catch(
      (e: unknown) => e,
    );
    expect(error).toMatchObject({ code: 'RETRIES_EXHAUSTED', attempts: 3 });
    const key = (error as IdemClientError).key;
    expect(key).toBeDefined();
    expect(h.server.seen.every((s) => s.key === `"${key}"`)).toBe(true);
    expect(h.app.executions.get('gave-up')).toBe(1);

    const again = await idemFetch(
      `${h.url}/charges`,
      postJson({ item: 'gave-up' }, { headers: { 'Idempotency-Key': key ?? '' } }),
    );
    expect(again.status).toBe(201);
    expect(getIdempotencyInfo(again)?.replayed).toBe(true);
    expect(h.app.executions.get('gave-up')).toBe(1);
  });

  it('names the key on DEADLINE_EXCEEDED', async () => {
    const h = await startHarness(() => ({ kind: 'hang' }));
    const idemFetch = createIdempotentFetch({ deadlineMs: 100 });
    const error = await idemFetch(
      `${h.url}/charges`,
      postJson({ item: 'late' }, { headers: { 'Idempotency-Key': 'late-1' } }),
    ).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'DEADLINE_EXCEEDED', key: 'late-1' });
  });
});
