// Review round 13 (rev13client): the backoff past a thousand retries. A real node:http server
// on loopback answering the idem in-progress 409 to every attempt.
import { describe, expect, it } from 'vitest';
import { createIdempotentFetch } from '../src/index.js';
import { inProgressAnswer, postJson, recordingSleep, startHarness } from './support/harness.js';

describe('rev13 client: backoff', () => {
  // FIXED (was FINDING LOW): with `initialDelayMs: 0` (allowed: "backoff ceiling of the first retry"; the
  // floor is minDelayMs) the backoff ceiling is `0 * 2 ** (retry - 1)`, which is `0 * Infinity
  // = NaN` from retry 1025 on. The wait is then NaN: abortableSleep's setTimeout(NaN) fires
  // after 1 ms (the README: "No wait is shorter than minDelayMs"), and the checks
  // `now() + delayMs - inProgressSince > inProgressWaitMs` and `now() + delayMs >= deadline` are
  // false for NaN, so inProgressWaitMs no longer ends the wait: a client allowed many
  // in-progress attempts (a long LLM run) hammers the server about every millisecond. Same for
  // maxAttempts past 1025. Fix: the exponent stops at 1023 (a finite power), so the ceiling
  // is a number whatever the retry.
  it('every wait stays at least minDelayMs and finite past 1024 retries (initialDelayMs 0)', {
    timeout: 25_000,
  }, async () => {
    const h = await startHarness(() => inProgressAnswer());
    const { waits, sleep } = recordingSleep(0);
    const idemFetch = createIdempotentFetch({
      initialDelayMs: 0,
      minDelayMs: 100,
      maxInProgressAttempts: 1_030,
      inProgressWaitMs: 2_000_000_000,
      sleep,
    });
    const response = await idemFetch(`${h.url}/charges`, postJson({ item: 'long-run' }));
    await response.text();
    expect(response.status).toBe(409);
    expect(waits.length).toBe(1_029);
    const bad = waits.filter((w) => !(Number.isFinite(w) && w >= 100));
    expect({ bad: bad.length, first: waits.findIndex((w) => !(w >= 100)) }).toEqual({
      bad: 0,
      first: -1,
    });
  });
});
