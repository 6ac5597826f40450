import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import { generateKey } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { appWithFailingBills } from './failing-ledger.js';
import { sleep } from './fault-stack.js';

const LEASE_MS = 1_000;

/** The app over real HTTP on a ledger whose bills fail while `state.failing`. */
async function startApp() {
  const { app, ledger, state, close } = await appWithFailingBills({
    leaseMs: LEASE_MS,
    billRetryMs: 60_000,
  });
  const server = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0 }) as Server;
  await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const key = generateKey();
  const send = (signal: AbortSignal = AbortSignal.timeout(10_000), attach = true) =>
    fetch(`${url}/v1/chat/completions`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'idempotency-key': key,
        // A retry would attach to the stream in flight; this test is about the key staying held.
        ...(attach ? {} : { 'idempotent-attach': 'false' }),
      },
      body: JSON.stringify({
        model: 'local-1',
        stream: true,
        messages: [{ role: 'user', content: 'streamed over HTTP, billed late' }],
      }),
      signal,
    });
  return {
    ledger,
    state,
    send,
    close: async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
      await close();
    },
  };
}

/**
 * With the ledger down for four more leases, retries get 409 (the key is held); once it is
 * back, the replay; the model ran once.
 */
async function expectHeldThenReplayed(stack: Awaited<ReturnType<typeof startApp>>) {
  const { ledger, state, send } = stack;
  const until = Date.now() + 4 * LEASE_MS;
  while (Date.now() < until) {
    const meanwhile = await send(undefined, false);
    expect(meanwhile.status).toBe(409);
    await meanwhile.arrayBuffer();
    await sleep(200);
  }
  expect(await ledger.stats()).toMatchObject({ model_started: 1 });
  state.failing = false;
  let replay = await send();
  for (let i = 0; i < 50 && replay.status === 409; i++) {
    await replay.arrayBuffer();
    await sleep(100);
    replay = await send();
  }
  expect(replay.status).toBe(200);
  expect(replay.headers.get('idempotent-replayed')).toBe('true');
  expect(await replay.text()).toContain('[DONE]');
  expect(await ledger.stats()).toMatchObject({ model_started: 1, model_completed: 1 });
}

/**
 * A streamed answer whose bill keeps failing, over real HTTP: the key must stay held
 * (heartbeats) for as long as the bill is retried, as it is for a JSON answer, whether the
 * server cut the stream after a lease or the client went away first.
 */
describe('a streamed answer over HTTP whose bill keeps failing', () => {
  it('cut by the server after a lease: 409 until the bill lands, then the replay; one model run', async () => {
    const stack = await startApp();
    try {
      const first = await stack.send();
      expect(first.status).toBe(200);
      await expect(first.text()).rejects.toThrow();
      await expectHeldThenReplayed(stack);
    } finally {
      await stack.close();
    }
  }, 30_000);

  // Before, the recorder took the body, silent while its bill retried, for one that may never
  // end: a lease after the client left it stopped the heartbeats, and a retry took the key
  // over and ran the model again.
  it('left by its client while the bill retries: the same, never a second model run', async () => {
    const stack = await startApp();
    try {
      const leave = new AbortController();
      const first = await stack.send(leave.signal);
      expect(first.status).toBe(200);
      const reader = (first.body as ReadableStream<Uint8Array>).getReader();
      await reader.read();
      await sleep(LEASE_MS / 4);
      leave.abort();
      await reader.cancel().catch(() => undefined);
      await expectHeldThenReplayed(stack);
    } finally {
      await stack.close();
    }
  }, 30_000);
});
