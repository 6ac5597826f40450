import { generateKey } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { appWithFailingBills } from './failing-ledger.js';
import { sleep } from './fault-stack.js';

const LEASE_MS = 1_500;

/**
 * The model ran, then its bill met a store that keeps refusing it for longer than a lease
 * (the idempotency store itself still answers, so heartbeats keep the lease). Before, the
 * bill gave up after a lease: the 503 released the key and the client's retry ran the model
 * a second time. Now the client is answered after a lease while the bill goes on; retries get
 * 409 until the answer is recorded, then the replay.
 */
const setup = (extra: { maxPendingBills?: number } = {}) =>
  appWithFailingBills({ leaseMs: LEASE_MS, billRetryMs: 30_000, ...extra });

/** Sends until an answer that is not 409 (at most 10 s); returns it. */
async function untilSettled(send: () => Response | Promise<Response>): Promise<Response> {
  const until = Date.now() + 10_000;
  for (;;) {
    const response = await send();
    if (response.status !== 409 || Date.now() > until) return response;
    await response.arrayBuffer();
    await sleep(100);
  }
}

describe('a bill the store refuses for longer than a lease', () => {
  it('JSON: 503 after about a lease, 409 meanwhile, then the replay; the model ran once', async () => {
    const { app, ledger, state, close } = await setup();
    const key = generateKey();
    const send = (extra: Record<string, string> = {}) =>
      app.request('/api/messages', {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'idempotency-key': key, ...extra },
        body: JSON.stringify({ prompt: 'billed late', model: 'local-1' }),
      });
    const started = Date.now();
    const first = await send();
    expect(first.status).toBe(503);
    expect(first.headers.get('retry-after')).toBe('1');
    expect(((await first.json()) as { error: { type: string } }).error.type).toBe(
      'not_recorded_yet',
    );
    expect(Date.now() - started).toBeLessThan(LEASE_MS + 1_000);

    // A retry would attach to the stream in flight; this test is about the key staying held.
    const meanwhile = await send({ 'idempotent-attach': 'false' });
    expect(meanwhile.status).toBe(409);
    await meanwhile.arrayBuffer();

    state.failing = false;
    const replay = await untilSettled(() => send());
    expect(replay.status).toBe(201);
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect(await ledger.stats()).toMatchObject({ model_started: 1, model_completed: 1 });
    expect(await ledger.entries()).toHaveLength(1);
    await close();
  });

  it('stream: the client stream is cut after about a lease, then 409, then the replay; the model ran once', async () => {
    const { app, ledger, state, close } = await setup();
    const key = generateKey();
    const send = (extra: Record<string, string> = {}) =>
      app.request('/v1/chat/completions', {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'idempotency-key': key, ...extra },
        body: JSON.stringify({
          model: 'local-1',
          stream: true,
          messages: [{ role: 'user', content: 'streamed, billed late' }],
        }),
      });
    const first = await send();
    expect(first.status).toBe(200);
    await expect(first.text()).rejects.toThrow();

    // A retry would attach to the stream in flight; this test is about the key staying held.
    const meanwhile = await send({ 'idempotent-attach': 'false' });
    expect(meanwhile.status).toBe(409);
    await meanwhile.arrayBuffer();

    state.failing = false;
    const replay = await untilSettled(() => send());
    expect(replay.status).toBe(200);
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect(await replay.text()).toContain('[DONE]');
    expect(await ledger.stats()).toMatchObject({ model_started: 1, model_completed: 1 });
    await close();
  });
});

describe('a request without a key whose bill the store refuses for longer than a lease', () => {
  // Nothing records its answer, so a retry cannot get it back: answered late while its bill
  // went on, the client paid for an answer it never got, and paid again for the retry's.
  const send = (app: Awaited<ReturnType<typeof setup>>['app'], stream: boolean) =>
    app.request('/v1/chat/completions', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        model: 'local-1',
        stream,
        messages: [{ role: 'user', content: `keyless, stream ${stream}` }],
      }),
    });

  it('JSON: 503 after about a lease, and no bill lands for the answer the client never got', async () => {
    const { app, ledger, state, close } = await setup();
    const started = Date.now();
    const first = await send(app, false);
    expect(first.status).toBe(503);
    expect(first.headers.get('retry-after')).toBe('1');
    await first.arrayBuffer();
    expect(Date.now() - started).toBeLessThan(LEASE_MS + 1_000);
    state.failing = false;
    // Longer than the bill's longest pause between attempts (500 ms).
    await sleep(1_200);
    expect(await ledger.entries()).toHaveLength(0);

    const retry = await send(app, false);
    expect(retry.status).toBe(200);
    await retry.arrayBuffer();
    expect(await ledger.entries()).toHaveLength(1);
    await close();
  });

  it('stream: cut after about a lease, and no bill lands for it', async () => {
    const { app, ledger, state, close } = await setup();
    const first = await send(app, true);
    expect(first.status).toBe(200);
    await expect(first.text()).rejects.toThrow();
    state.failing = false;
    await sleep(1_200);
    expect(await ledger.entries()).toHaveLength(0);
    await close();
  });
});

describe('bills that keep failing while the idempotency store answers', () => {
  it('at most maxPendingBills retry at once: past that, no new model run starts (503), and none runs twice', async () => {
    const { app, ledger, state, close } = await setup({ maxPendingBills: 2 });
    const keys = [generateKey(), generateKey(), generateKey()];
    const send = (key: string) =>
      app.request('/api/messages', {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'idempotency-key': key },
        body: JSON.stringify({ prompt: `backlog ${key}`, model: 'local-1' }),
      });
    // Two model runs whose bills keep failing: their clients are answered late.
    const late = await Promise.all(keys.slice(0, 2).map(send));
    for (const response of late) {
      expect(response.status).toBe(503);
      expect(((await response.json()) as { error: { type: string } }).error.type).toBe(
        'not_recorded_yet',
      );
    }
    expect(await ledger.stats()).toMatchObject({ model_started: 2 });

    // Before: a third model ran, and a third bill joined them, without any bound.
    const refused = await send(keys[2] as string);
    expect(refused.status).toBe(503);
    expect(refused.headers.get('retry-after')).toBe('1');
    await refused.arrayBuffer();
    expect(await ledger.stats()).toMatchObject({ model_started: 2 });

    state.failing = false;
    for (const key of keys) {
      const settled = await untilSettled(() => send(key));
      expect(settled.status).toBe(201);
      await settled.arrayBuffer();
    }
    expect(await ledger.stats()).toMatchObject({ model_started: 3, model_completed: 3 });
    expect(await ledger.entries()).toHaveLength(3);
    await close();
  });
});
