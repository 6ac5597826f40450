/**
 * stores32: a DynamoDB Local this test owns is frozen (SIGSTOP by PID) for 7 s while callers
 * keep calling with a store time limit (core's `storeTimeoutMs`, here 1 s) shorter than the
 * store's request deadline (5 s by default), through the SDK's default client. Before, a
 * request the engine had given up on ran on to the deadline, holding one of the agent's 50
 * sockets: at SIGCONT all 50 were busy with abandoned requests and dozens of calls queued in
 * the agent behind them, and the store served again only 1.4 to 4 s later (a fresh client:
 * 0.3 s). Now the engine's signal cuts each request at the time limit: at SIGCONT no call
 * waits in the agent and fewer sockets are busy than its limit, and the next call is served.
 * Asserted on the mechanism (the agent's queue), not on a time.
 */
import { randomBytes } from 'node:crypto';
import { callStore } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { ownDynamoDbStore } from './own-dynamodb.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const LIMIT_MS = 1_000;
const FROZEN_MS = 7_000;

const external = Boolean(process.env.DYNAMODB_ENDPOINT);

interface Agent {
  maxSockets: number;
  sockets: Record<string, unknown[]>;
  requests: Record<string, unknown[]>;
}
const count = (lists: Record<string, unknown[]> | undefined) =>
  Object.values(lists ?? {}).reduce((n, list) => n + list.length, 0);

describe.skipIf(external)('a frozen DynamoDB Local, resumed: abandoned requests are cut', () => {
  // The SDK's defaults: no request timeout, an agent of 50 keep-alive sockets.
  const own = ownDynamoDbStore('idem-stores32');

  /** One acquire as core's engine sends it: under its time limit, with its call context. */
  const call = (limitMs = LIMIT_MS) =>
    callStore('acquire', limitMs, (context) =>
      own.store.acquire(
        {
          key: randomBytes(8).toString('hex'),
          fingerprint: 'fp',
          owner: randomBytes(8).toString('hex'),
          leaseMs: 30_000,
          retentionMs: 60_000,
        },
        context,
      ),
    ).then(
      () => true,
      () => false,
    );

  it('at SIGCONT no call waits in the agent behind abandoned requests; the store serves again', async () => {
    // The store serves (and the emulator's JVM is warm): not under the 1 s limit, which is for
    // the frozen service. A fresh DynamoDB Local answers its first conditional write slowly
    // (320 ms here beside two CPU burners, then 30-70 ms): on a loaded CI lane past 1 s.
    for (let i = 0; i < 3; i++) expect(await call(30_000)).toBe(true);
    const handler = own.client.config.requestHandler as unknown as {
      configProvider?: Promise<{ httpAgent?: Agent }>;
      config?: { httpAgent?: Agent };
    };
    const agent = (await (handler.configProvider ?? Promise.resolve(handler.config)))?.httpAgent;
    expect(agent, 'the default request handler keeps an http agent').toBeDefined();

    await own.service.signal('SIGSTOP');
    const calls: Promise<boolean>[] = [];
    const until = performance.now() + FROZEN_MS;
    // Four callers every 200 ms: 20 calls a second, each given up on after 1 s.
    while (performance.now() < until) {
      for (let i = 0; i < 4; i++) calls.push(call());
      await sleep(200);
    }
    const busy = count(agent?.sockets);
    const queued = count(agent?.requests);
    await own.service.signal('SIGCONT');
    let served = false;
    const resumed = performance.now();
    while (!served && performance.now() - resumed < 20_000) {
      served = await call();
      if (!served) await sleep(50);
    }
    const servedMs = Math.round(performance.now() - resumed);
    console.log(
      `[stores32 dynamodb] at SIGCONT: ${busy} sockets busy, ${queued} calls queued in the agent (max ${agent?.maxSockets}); served again ${servedMs} ms after`,
    );
    expect(await Promise.all(calls)).not.toContain(undefined);
    expect(queued).toBe(0);
    expect(busy).toBeLessThan(agent?.maxSockets ?? 50);
    expect(served).toBe(true);
  }, 120_000);
});
