import { fileURLToPath } from 'node:url';
import { generateKey } from '@idem/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config.js';
import { type RunningServer, startServer } from '../src/server.js';
import { answer, expectUnavailable, firstSuccess, probes } from './answers.js';
import { BOUND_MS, STORE_TIMEOUT_MS, sleep } from './fault-stack.js';
import { startTcpProxy, type TcpProxy } from './tcp-proxy.js';

interface DynamoDbLocal {
  endpoint: string;
  stop(): Promise<void>;
}

// The repository's DynamoDB Local helper (see dynamodb.test.ts).
const helper = fileURLToPath(new URL('../../../scripts/dynamodb-local.mjs', import.meta.url));

describe('the app on DynamoDB behind a network that fails', () => {
  let local: DynamoDbLocal;
  let proxy: TcpProxy;
  let server: RunningServer;
  beforeAll(async () => {
    const { startDynamoDbLocal } = (await import(helper)) as {
      startDynamoDbLocal(): Promise<DynamoDbLocal>;
    };
    local = await startDynamoDbLocal();
    proxy = await startTcpProxy(local.endpoint);
    server = await startServer(
      parseConfig({
        PORT: '0',
        DYNAMODB_TABLE: `llm-api-faults-${generateKey().slice(0, 8)}`,
        DYNAMODB_ENDPOINT: proxy.url,
        AWS_REGION: 'us-east-1',
        IDEM_LEASE_MS: '3000',
        IDEM_STORE_TIMEOUT_MS: String(STORE_TIMEOUT_MS),
        MODEL_CHUNK_DELAY_MS: '1',
      }),
    );
  }, 90_000);
  afterAll(async () => {
    proxy?.set('pass');
    await server?.close();
    await proxy?.close();
    await local?.stop();
  });

  /** Probes every endpoint for `ms`, each answer 503 + Retry-After within the bound. */
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
    const recovery = await firstSuccess(server.url, 30, 100, BOUND_MS, back);
    console.log(
      `[dynamodb-faults] ${label}: first 201 ${recovery.ms} ms after the network came back (${recovery.statuses.length} attempts)`,
    );
    expect(recovery.statuses.every((s) => s === 503 || s === 201)).toBe(true);
    expect(recovery.recovered).toBe(true);
    expect((await answer(`${server.url}/readyz`, {}, BOUND_MS)).status).toBe(200);
    expect((await answer(`${server.url}/v1/usage`, {}, BOUND_MS)).status).toBe(200);
  }

  it('a silent connection: every request answered in bound (503), /readyz 503, then service returns', async () => {
    // Works before the fault. A few tries: the emulator's first calls after its start can
    // outlast the 1 s store timeout on a loaded machine (one try failed the suite on main).
    expect((await firstSuccess(server.url, 30, 100, BOUND_MS, Date.now())).recovered).toBe(true);
    expect((await answer(`${server.url}/readyz`, {}, BOUND_MS)).status).toBe(200);
    proxy.set('silent');
    try {
      await expectUnavailableFor(5_000);
    } finally {
      proxy.set('pass');
    }
    await expectRecovery('5 s of silence');
  }, 60_000);

  it('a flood of /readyz while the table is silent makes one store call at a time, not one per probe', async () => {
    // /readyz is essential work (never refused by the admission limit), so each probe used to
    // send its own GetItem: anyone able to reach /readyz could put any number of calls in
    // flight on a slow table, past the limit that protects it, and fill the limit so that
    // new requests were refused.
    expect((await answer(`${server.url}/readyz`, {}, BOUND_MS)).status).toBe(200);
    proxy.set('silent');
    const before = proxy.accepted;
    try {
      const answers = await Promise.all(
        Array.from({ length: 40 }, () => answer(`${server.url}/readyz`, {}, BOUND_MS)),
      );
      for (const got of answers) expect(got.status).toBe(503);
      expect(proxy.accepted - before).toBeLessThanOrEqual(2);
    } finally {
      proxy.set('pass');
    }
    await expectRecovery('a /readyz flood');
  }, 60_000);

  it('connections reset (DynamoDB unreachable): 503 + Retry-After, then service returns', async () => {
    proxy.set('down');
    try {
      await expectUnavailableFor(5_000);
    } finally {
      proxy.set('pass');
    }
    await expectRecovery('5 s of resets');
  }, 60_000);
});
