import { generateKey } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { answer, expectUnavailable, firstSuccess } from './answers.js';
import { expectRecovery, probeUnavailableFor } from './fault-harness.js';
import { BOUND_MS, LEASE_MS, STORE_TIMEOUT_MS, sleep, useFaultStack } from './fault-stack.js';

const SILENCE_MS = 8_000;

describe('the app on a Redis whose connection goes silent (SIGSTOP) without closing', () => {
  const stack = useFaultStack();

  it('answers every request in bound (503 + Retry-After), /readyz 503 meanwhile, 200 after', async () => {
    const { redis, server } = stack();
    expect((await firstSuccess(server.url, 1, 0, BOUND_MS, Date.now())).recovered).toBe(true);
    // In flight when Redis freezes: acquired, then stalled in the model, then billing. Its
    // model has run, so its bill is retried for up to a lease (a shorter outage must not
    // make the retry run the model again) before it answers 503: its bound is the stall,
    // the lease and the attempts in flight.
    const inFlight = answer(
      `${server.url}/api/messages`,
      {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'idempotency-key': generateKey() },
        body: JSON.stringify({ prompt: '[stall:400] in flight at the freeze', model: 'local-1' }),
      },
      400 + LEASE_MS + 2 * STORE_TIMEOUT_MS,
    );
    await sleep(150);
    redis.freeze();
    try {
      expect(await probeUnavailableFor(server.url, SILENCE_MS, 500)).toBeGreaterThan(3);
      expectUnavailable('the request in flight', await inFlight);
      expect((await answer(`${server.url}/healthz`, {}, BOUND_MS)).status).toBe(200);
    } finally {
      redis.thaw();
    }
    await expectRecovery(
      server.url,
      30,
      (recovery) =>
        `[silent-store] ${SILENCE_MS} ms of silence: first 201 ${recovery.ms} ms after SIGCONT (${recovery.statuses.length} attempts)`,
    );
  }, 60_000);
});
