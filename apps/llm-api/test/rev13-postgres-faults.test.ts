import { generateKey } from '@idem/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config.js';
import { type RunningServer, startServer } from '../src/server.js';
import { deleteDemoRows } from '../src/stores/postgres-cleanup.js';
import { answer, expectUnavailable, firstSuccess, probes } from './answers.js';
import { BOUND_MS, STORE_TIMEOUT_MS, sleep } from './fault-stack.js';
import { startTcpProxy, type TcpProxy } from './tcp-proxy.js';

const DATABASE_URL = process.env.DATABASE_URL?.trim() || 'postgres://postgres@127.0.0.1:5432/test';

/**
 * The app's PostgreSQL backend (records, ledger, counters; the bill in the completion's
 * transaction) behind a TCP proxy of the test's own in front of the shared PostgreSQL: the
 * proxy goes silent or resets connections, the database itself is never touched.
 */
describe('rev13: the app on PostgreSQL behind a network that fails', () => {
  let proxy: TcpProxy;
  let server: RunningServer;
  const prefix = `rev13pg${generateKey().slice(0, 8)}:`;
  beforeAll(async () => {
    const target = new URL(DATABASE_URL);
    proxy = await startTcpProxy(`http://${target.hostname}:${target.port || 5432}`);
    const viaProxy = new URL(DATABASE_URL);
    viaProxy.hostname = '127.0.0.1';
    viaProxy.port = String(proxy.port);
    server = await startServer(
      parseConfig({
        PORT: '0',
        DATABASE_URL: viaProxy.toString(),
        IDEM_KEY_PREFIX: prefix,
        IDEM_LEASE_MS: '3000',
        IDEM_STORE_TIMEOUT_MS: String(STORE_TIMEOUT_MS),
        MODEL_CHUNK_DELAY_MS: '1',
      }),
    );
  }, 60_000);
  afterAll(async () => {
    proxy?.set('pass');
    await server?.close();
    await proxy?.close();
    await deleteDemoRows(DATABASE_URL, prefix).catch(() => undefined);
  });

  async function expectUnavailableFor(ms: number): Promise<void> {
    const ends = Date.now() + ms;
    let rounds = 0;
    while (Date.now() < ends) {
      const answers = await Promise.all(
        probes(server.url).map(async (p) => ({
          name: p.name,
          got: await answer(p.url, p.init, BOUND_MS),
        })),
      );
      for (const { name, got } of answers) expectUnavailable(name, got);
      rounds += 1;
      await sleep(300);
    }
    expect(rounds).toBeGreaterThan(2);
  }

  async function expectRecovery(label: string): Promise<void> {
    const back = Date.now();
    const recovery = await firstSuccess(server.url, 40, 100, BOUND_MS, back);
    console.log(
      `[rev13-postgres-faults] ${label}: first 201 ${recovery.ms} ms after the network came back (${recovery.statuses.join(',')})`,
    );
    expect(recovery.statuses.every((s) => s === 503 || s === 201)).toBe(true);
    expect(recovery.recovered).toBe(true);
    expect((await answer(`${server.url}/readyz`, {}, BOUND_MS)).status).toBe(200);
    expect((await answer(`${server.url}/v1/usage`, {}, BOUND_MS)).status).toBe(200);
  }

  it('a silent connection: every request answered in bound (503), then service returns', async () => {
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
    const inFlight = send(400 + 3_000 + 4 * STORE_TIMEOUT_MS);
    await sleep(150);
    proxy.set('silent');
    try {
      await expectUnavailableFor(5_000);
      const got = await inFlight;
      expect([201, 503]).toContain(got.status);
    } finally {
      proxy.set('pass');
    }
    await expectRecovery('5 s of silence');
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
    proxy.set('down');
    try {
      await expectUnavailableFor(4_000);
    } finally {
      proxy.set('pass');
    }
    await expectRecovery('4 s of resets');
  }, 60_000);
});
