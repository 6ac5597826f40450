import { describe, expect, it } from 'vitest';
import { answer, expectUnavailable, firstSuccess, probes } from './answers.js';
import { BOUND_MS, sleep, useFaultStack } from './fault-stack.js';

/** Longer than ioredis's give-up point before the fix (20 retries, about 15 s). */
const OUTAGE_MS = 22_000;

describe('the app on a Redis that dies (kill -9) for longer than 20 s', () => {
  const stack = useFaultStack();

  it('answers 503 + Retry-After in bound throughout, never 500, and serves again once Redis is back', async () => {
    const { redis, server } = stack();
    expect((await firstSuccess(server.url, 1, 0, BOUND_MS, Date.now())).recovered).toBe(true);
    expect((await answer(`${server.url}/readyz`, {}, BOUND_MS)).status).toBe(200);

    await redis.kill();
    const outageEnds = Date.now() + OUTAGE_MS;
    let rounds = 0;
    while (Date.now() < outageEnds) {
      for (const probe of probes(server.url)) {
        const got = await answer(probe.url, probe.init, BOUND_MS);
        expectUnavailable(probe.name, got);
        if (probe.name !== 'GET /readyz') {
          expect(got.contentType, probe.name).toMatch(/^application\/problem\+json/);
        }
      }
      rounds += 1;
      await sleep(1_000);
    }
    expect(rounds).toBeGreaterThan(10);
    // Liveness is about the process, not the store.
    expect((await answer(`${server.url}/healthz`, {}, BOUND_MS)).status).toBe(200);

    const back = Date.now();
    await redis.restart();
    const answering = Date.now() - back;
    const recovery = await firstSuccess(server.url, 30, 100, BOUND_MS, back);
    console.log(
      `[store-outage] ${OUTAGE_MS} ms outage: first 201 ${recovery.ms} ms after redis-server was started again (it answered PING after ${answering} ms; ${recovery.statuses.length} attempts)`,
    );
    expect(recovery.statuses.every((s) => s === 503 || s === 201)).toBe(true);
    expect(recovery.recovered).toBe(true);
    expect((await answer(`${server.url}/readyz`, {}, BOUND_MS)).status).toBe(200);
    const usage = await answer(`${server.url}/v1/usage`, {}, BOUND_MS);
    expect(usage.status).toBe(200);
  }, 90_000);
});
