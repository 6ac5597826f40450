/**
 * Mutation audit (store-postgres): the operator actions on a record whose retention passed,
 * on a server clock the test sets (see mutpg-helpers.ts). `forceRelease` answers `not_found`
 * and must write nothing (a write raised the fence and replaced the owner of a row nobody
 * reads, and answered as if it had not); `delete` of an expired row keeps its expiry, so that
 * `deleteExpired` removes it when its grace passed, not a grace after the delete.
 */
import { describe, expect, it } from 'vitest';
import { acquiring, DAY, frozenClockSession, T0 } from './mutpg-helpers.js';

const clock = frozenClockSession();

describe('mutpg: admin on an expired record', () => {
  it('forceRelease answers not_found and writes nothing', async () => {
    const store = await clock.store();
    await clock.set(T0);
    const input = acquiring('k', { leaseMs: 1_000, retentionMs: 1_000 });
    await store.acquire(input);
    await clock.set(T0 + 2_000);
    expect(await store.admin.forceRelease('k')).toEqual({ ok: false, reason: 'not_found' });
    const { rows } = await clock.raw.query(
      `SELECT status, owner, fence::int FROM ${store.table} WHERE key = $1`,
      [store.rowKey('k')],
    );
    expect(rows).toEqual([{ status: 'in_progress', owner: input.owner, fence: 1 }]);
    expect(await store.acquire(acquiring('k'))).toMatchObject({ kind: 'acquired', fence: 2 });
  });

  it("delete keeps an expired row's expiry: deleteExpired removes it a grace after that", async () => {
    const store = await clock.store();
    await clock.set(T0);
    await store.acquire(acquiring('k', { leaseMs: 1_000, retentionMs: 1_000 }));
    await clock.set(T0 + 10_000);
    expect(await store.admin.delete('k')).toEqual({ deleted: false });
    await clock.set(T0 + 2_001 + DAY);
    expect(await store.deleteExpired()).toBe(1);
  });

  it('a row at fence -1 (no store writes one) is left as it is: forceRelease and delete fail', async () => {
    const store = await clock.store();
    await clock.set(T0);
    for (const action of ['forceRelease', 'delete'] as const) {
      const key = store.rowKey(action);
      await clock.raw.query(
        `INSERT INTO ${store.table} (key, status, fingerprint, owner, fence, lease_until, expires_at)
         VALUES ($1, 'in_progress', 'fp', 'o', -1, $2, $3)`,
        [key, T0 + 60_000, T0 + 120_000],
      );
      await expect(store.admin[action](action)).rejects.toThrow(
        /fence -1 \(not written by a store/,
      );
      const { rows } = await clock.raw.query(
        `SELECT status, fence::int FROM ${store.table} WHERE key = $1`,
        [key],
      );
      expect(rows).toEqual([{ status: 'in_progress', fence: -1 }]);
    }
  });
});
