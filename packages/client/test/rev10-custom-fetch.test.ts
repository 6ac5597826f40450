// Review round 10 (rev10a): limits and aborts when the `fetch` option does not pass the
// signal on (a logging or tracing wrapper that rebuilds the init), against a real node:http
// server that never answers. Findings are `it.fails` (they state the correct behaviour);
// attacks that held are plain `it`.
import { describe, expect, it } from 'vitest';
import { createIdempotentFetch, type FetchFunction } from '../src/index.js';
import { startHarness } from './support/harness.js';

/** A wrapper that forwards method, headers and body, but not the signal. */
const signalDropping: FetchFunction = (input, init) =>
  globalThis.fetch(input, {
    method: init?.method ?? 'GET',
    headers: init?.headers ?? {},
    ...(init?.body === undefined ? {} : { body: init.body }),
  });

/** Settles with the call's outcome, or 'still pending' after `ms`. */
async function outcomeWithin(call: Promise<Response>, ms: number): Promise<unknown> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const result = await Promise.race([
    call.then(
      (r) => `response ${r.status}`,
      (e: unknown) => e,
    ),
    new Promise((resolve) => {
      timer = setTimeout(() => resolve('still pending'), ms);
    }),
  ]);
  clearTimeout(timer);
  return result;
}

const post = { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' };

describe('rev10a client: a fetch option that ignores the signal', () => {
  // FIXED (was FINDING MEDIUM): sendAttempt awaits the `fetch` option without racing the attempt's signal: a fetch that ignores its signal (a wrapper that drops init.signal) makes attemptTimeoutMs and deadlineMs no bound at all; the call hangs as long as the server does.
  it('deadlineMs 500 ends the call (DEADLINE_EXCEEDED) even if the fetch ignores its signal', async () => {
    const h = await startHarness(() => ({ kind: 'hang' }));
    const idemFetch = createIdempotentFetch({
      fetch: signalDropping,
      attemptTimeoutMs: 200,
      deadlineMs: 500,
    });
    // Expected: rejected with IdemClientError DEADLINE_EXCEEDED by about 500 ms, as with the
    // global fetch (the same sleep option is raced against the signal already). Observed:
    // still pending at 3 s, one attempt sent, none after it.
    const outcome = await outcomeWithin(idemFetch(`${h.url}/charges`, post), 3_000);
    expect(outcome).toMatchObject({ code: 'DEADLINE_EXCEEDED' });
  });

  // FIXED (was FINDING MEDIUM): same cause: the caller's abort does not end the call while such a fetch is pending.
  it("the caller's abort rejects at once even if the fetch ignores its signal", async () => {
    const h = await startHarness(() => ({ kind: 'hang' }));
    const idemFetch = createIdempotentFetch({ fetch: signalDropping });
    const controller = new AbortController();
    const call = idemFetch(`${h.url}/charges`, { ...post, signal: controller.signal });
    setTimeout(() => controller.abort(new Error('user pressed stop')), 200);
    // Expected: rejects with 'user pressed stop' right after 200 ms. Before the fix: still pending.
    const outcome = await outcomeWithin(call, 3_000);
    expect(outcome).toMatchObject({ message: 'user pressed stop' });
  });

  it('held: with a fetch that passes the signal on, deadlineMs 500 ends the call', async () => {
    const h = await startHarness(() => ({ kind: 'hang' }));
    const idemFetch = createIdempotentFetch({
      fetch: (input, init) => globalThis.fetch(input, init),
      attemptTimeoutMs: 200,
      deadlineMs: 500,
    });
    const outcome = await outcomeWithin(idemFetch(`${h.url}/charges`, post), 3_000);
    expect(outcome).toMatchObject({ code: 'DEADLINE_EXCEEDED' });
  });
});
