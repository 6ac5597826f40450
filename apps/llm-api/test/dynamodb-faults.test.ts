import { fileURLToPath } from 'node:url';
import { generateKey } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { answer, firstSuccess } from './answers.js';
import { expectRecovery, probeUnavailableFor, useAppBehindProxy } from './fault-harness.js';
import { BOUND_MS } from './fault-stack.js';

interface DynamoDbLocal {
  endpoint: string;
  stop(): Promise<void>;
}

// The repository's DynamoDB Local helper (see dynamodb.test.ts).
const helper = fileURLToPath(new URL('../../../scripts/dynamodb-local.mjs', import.meta.url));

describe('the app on DynamoDB behind a network that fails', () => {
  const app = useAppBehindProxy({
    startStore: async () => {
      const { startDynamoDbLocal } = (await import(helper)) as {
        startDynamoDbLocal(): Promise<DynamoDbLocal>;
      };
      const local = await startDynamoDbLocal();
      return { target: local.endpoint, stop: () => local.stop() };
    },
    env: (proxy) => ({
      DYNAMODB_TABLE: `llm-api-faults-${generateKey().slice(0, 8)}`,
      DYNAMODB_ENDPOINT: proxy.url,
      AWS_REGION: 'us-east-1',
    }),
    hookTimeoutMs: 90_000,
  });

  /** Probes every endpoint for `ms`, each answer 503 + Retry-After within the bound. */
  async function expectUnavailableFor(ms: number): Promise<void> {
    expect(await probeUnavailableFor(app().server.url, ms, 300)).toBeGreaterThan(2);
  }

  const expectRecoveryAfter = (label: string) =>
    expectRecovery(
      app().server.url,
      30,
      (recovery) =>
        `[dynamodb-faults] ${label}: first 201 ${recovery.ms} ms after the network came back (${recovery.statuses.length} attempts)`,
    );

  it('a silent connection: every request answered in bound (503), /readyz 503, then service returns', async () => {
    const { proxy, server } = app();
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
    await expectRecoveryAfter('5 s of silence');
  }, 60_000);

  it('a flood of /readyz while the table is silent makes one store call at a time, not one per probe', async () => {
    // /readyz is essential work (never refused by the admission limit), so each probe used to
    // send its own GetItem: anyone able to reach /readyz could put any number of calls in
    // flight on a slow table, past the limit that protects it, and fill the limit so that
    // new requests were refused.
    const { proxy, server } = app();
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
    await expectRecoveryAfter('a /readyz flood');
  }, 60_000);

  it('connections reset (DynamoDB unreachable): 503 + Retry-After, then service returns', async () => {
    const { proxy } = app();
    proxy.set('down');
    try {
      await expectUnavailableFor(5_000);
    } finally {
      proxy.set('pass');
    }
    await expectRecoveryAfter('5 s of resets');
  }, 60_000);
});
