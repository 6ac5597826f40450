import { vi } from 'vitest';
import { type Clock, createIdempotency } from '../../src/index.js';
import type { FakeStore } from './fake-store.js';

/** Fake timers with `Date` and `performance` faked (the monotonic clock follows them). */
export const fakeAll = () =>
  vi.useFakeTimers({
    toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date', 'performance'],
  });

/** An injected clock that reads `Date.now()` until `step(ms)` moves it (back or forward). */
export function steppingClock(): { clock: Clock; step(ms: number): void } {
  let offset = 0;
  return { clock: { now: () => Date.now() + offset }, step: (ms) => (offset += ms) };
}

/** `step(elapsed)` for {@link runUntilAbort}: moves the clock by `by` ms once `at` ms passed. */
export function stepOnceAt(stepping: { step(ms: number): void }, at: number, by: number) {
  const state = {
    stepped: false,
    step(elapsed: number): void {
      if (state.stepped || elapsed < at) return;
      state.stepped = true;
      stepping.step(by);
    },
  };
  return state;
}

/**
 * Runs one execution on `store` (fake timers, see {@link fakeAll}) whose operation waits for
 * its signal; `step(elapsed)` is called every fake millisecond. Answers when (elapsed ms from
 * the execute call) its signal aborted and with what, and when the store's lease for it passed
 * by the store's own (monotonic, faked) clock; -1: not within `runMs`.
 */
export async function runUntilAbort(
  store: FakeStore,
  clock: Clock,
  step: (elapsed: number) => void,
  runMs: number,
  options: { leaseMs: number; heartbeatMs: number | false; maxHoldMs?: number },
): Promise<{ abortedAt: number; leaseEnd: number; ran: boolean; reason: unknown }> {
  const idem = createIdempotency<string>({ store, clock, storeTimeoutMs: 5_000, ...options });
  const p0 = performance.now();
  let abortedAt = -1;
  let leaseEnd = -1;
  let ran = false;
  let reason: unknown;
  const done = idem
    .execute({ key: 'k', scope: 'global' }, ({ signal }) => {
      ran = true;
      return new Promise<string>((resolve) => {
        signal.addEventListener('abort', () => {
          abortedAt = performance.now() - p0;
          reason = signal.reason;
          resolve('aborted');
        });
      });
    })
    .catch((error: unknown) => error);
  for (let t = 0; t < runMs; t++) {
    await vi.advanceTimersByTimeAsync(1);
    step(performance.now() - p0);
    const record = [...store.records.values()][0];
    // The store's lease on its own (monotonic, faked) clock: leaseUntil is on it.
    if (leaseEnd < 0 && record && performance.timeOrigin + performance.now() >= record.leaseUntil)
      leaseEnd = performance.now() - p0;
    if (abortedAt >= 0 && leaseEnd >= 0) break;
  }
  await vi.advanceTimersByTimeAsync(10);
  // The operation waits for its signal: settled only once it aborted.
  if (abortedAt >= 0) await done;
  return { abortedAt, leaseEnd, ran, reason };
}
