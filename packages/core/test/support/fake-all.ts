import { vi } from 'vitest';

/**
 * Fake timers, `Date` and `performance` (which the engine's elapsed clock reads), so that
 * leases, heartbeats, waits and retries are counted exactly. Undo with `vi.useRealTimers()`.
 */
export const fakeAll = () =>
  vi.useFakeTimers({
    toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date', 'performance'],
  });
