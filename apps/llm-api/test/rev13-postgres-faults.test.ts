import { generateKey } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { deleteDemoRows } from '../src/stores/postgres-cleanup.js';
import { answer, firstSuccess } from './answers.js';
import { expectRecovery, probeUnavailableFor, useAppBehindProxy } from './fault-harness.js';
import { BOUND_MS, STORE_TIMEOUT_MS, sleep } from './fault-stack.js';

const DATABASE_URL = process.env.DATABASE_URL?.trim() || 'postgres://postgres@127.0.0.1:5432/test';

/**
 * The app's PostgreSQL backend (records, ledger, counters; the bill in the completion's
 * transaction) behind a TCP proxy of the test's own in front of the shared PostgreSQL: the
 * proxy goes silent or resets connections, the database itself is never touched.
 */
describe('rev13: the app on PostgreSQL behind a network that fails', () => {
  const prefix = `rev13pg${generateKey().slice(0, 8)}:`;
  const app = useAppBehindProxy({
    startStore: async () => {
      const target = new URL(DATABASE_URL);
      return {
        target: `http://${target.hostname}:${target.port || 5432}`,
        stop: () => deleteDemoRows(DATABASE_URL, prefix).catch(() => undefined),
      };
    },
    env: (proxy) => {
      const viaProxy = new URL(DATABASE_URL);
      viaProxy.hostname = '127.0.0.1';
      viaProxy.port = String(proxy.port);
      return { DATABASE_URL: viaProxy.toString(), IDEM_KEY_PREFIX: prefix };
    },
    hookTimeoutMs: 60_000,
  });

  async function expectUnavailableFor(ms: number): Promise<void> {
    expect(await probeUnavailableFor(app().server.url, ms, 300)).toBeGreaterThan(2);
  }

  const expectRecoveryAfter = (label: string) =>
    expectRecovery(
      app().server.url,
      40,
      (recovery) =>
        `[rev13-postgres-faults] ${label}: first 201 ${recovery.ms} ms after the network came back (${recovery.statuses.join(',')})`,
    );

  it('a silent connection: every request answered in bound (503), then service returns', async () => {
    const { proxy, server } = app();
    expect((await firstSuccess(server.url, 30, 100, BOUND_MS, Date.now())).recovered).toBe(true);
    // In flight when the network goes silent: stalled in the model, then completing.
    const key = generateKey();
    const send = (boundMs: number) =>
      answer(
        `${server.url}/api/messages`,
        {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'idempotency-key': key },
          body: JSON.stringify({
            prompt: '[stall:400] in flight at the silence',
            model: 'local-1',
          }),
        },
        boundMs,
      );
    // Its outcome may not be storable: then the connection is dropped before any status (no
    // 2xx for an unstored answer; @idem/hono on node-server), which is the one answer here
    // that is not a status. It must still come within the bound (`answer` throws otherwise).
    const inFlight = send(400 + 3_000 + 4 * STORE_TIMEOUT_MS).catch((error: unknown) => {
      if (/got no answer within/.test(String(error))) throw error;
      return { status: 0, error: String((error as { cause?: unknown }).cause ?? error) };
    });
    await sleep(150);
    proxy.set('silent');
    try {
      await expectUnavailableFor(5_000);
      const got = await inFlight;
      expect([0, 201, 503]).toContain(got.status);
      if (got.status === 0)
        expect('error' in got && got.error).toMatch(/other side closed|socket/i);
      // A 201 only for a stored answer: a whole message, never an empty or cut body.
      if (got.status === 201 && 'body' in got) expect(JSON.parse(got.body)).toHaveProperty('id');
    } finally {
      proxy.set('pass');
    }
    await expectRecoveryAfter('5 s of silence');
    // The request in flight: its retry gets one answer, billed once under its id.
    let retry = await send(BOUND_MS);
    for (let i = 0; i < 60 && (retry.status === 409 || retry.status === 503); i++) {
      await sleep(200);
      retry = await send(BOUND_MS);
    }
    expect(retry.status).toBe(201);
    const { id } = JSON.parse(retry.body) as { id: string };
    const usage = JSON.parse((await answer(`${server.url}/v1/usage`, {}, BOUND_MS)).body) as {
      data: { message_id: string }[];
    };
    expect(usage.data.filter((e) => e.message_id === id)).toHaveLength(1);
  }, 60_000);

  it('connections reset: 503 + Retry-After in bound, then service returns', async () => {
    const { proxy } = app();
    proxy.set('down');
    try {
      await expectUnavailableFor(4_000);
    } finally {
      proxy.set('pass');
    }
    await expectRecoveryAfter('4 s of resets');
  }, 60_000);
});
