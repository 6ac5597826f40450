/**
 * Mutation audit (store-postgres): `deleteExpired` at its edges, on a server clock the test
 * sets (see mutpg-helpers.ts). The existing tests passed `graceMs` and a limit larger than
 * the rows at hand, so a default grace of 0 (every key's last fence forgotten the moment its
 * record expired) or a statement deleting one row past its limit passed.
 */
import { describe, expect, it } from 'vitest';
import { acquiring, DAY, frozenClockSession, T0 } from './mutpg-helpers.js';

const clock = frozenClockSession();

describe('mutpg: deleteExpired', () => {
  it('the default grace is 24 h past the expiry, to the millisecond', async () => {
    const store = await clock.store();
    await clock.set(T0);
    await store.acquire(acquiring('a', { leaseMs: 1_000, retentionMs: 1_000 }));
    await clock.set(T0 + 2_000 + DAY);
    expect(await store.deleteExpired()).toBe(0);
    // The key's fence is still there: the next acquisition continues from it.
    await clock.set(T0 + 2_001 + DAY);
    expect(await store.deleteExpired()).toBe(1);
    expect(await store.acquire(acquiring('a'))).toMatchObject({ kind: 'acquired', fence: 1 });
  });

  it('deletes at most `limit` rows per call', async () => {
    const store = await clock.store();
    await clock.set(T0);
    for (const key of ['a', 'b', 'c'])
      await store.acquire(acquiring(key, { leaseMs: 1_000, retentionMs: 1_000 }));
    await clock.set(T0 + 5_000);
    expect(await store.deleteExpired({ graceMs: 0, limit: 2 })).toBe(2);
    expect(await store.deleteExpired({ graceMs: 0, limit: 2 })).toBe(1);
    expect(await store.deleteExpired({ graceMs: 0, limit: 2 })).toBe(0);
  });
});
