/**
 * clirev: an operator's `forceRelease` or `delete` (`idem release`, `idem delete`) on a row no
 * store wrote (a fence below 0, or past what a JS number holds exactly) leaves it as it is and
 * fails. It wrote first and then failed on the fence it answered (the caller told "failed"
 * while the row had been released), or carried the fence into the tombstone.
 */
import { afterAll, describe, expect, inject, it } from 'vitest';
import { createPostgresStore } from '../src/index.js';
import { makePool, newKey } from './pg-env.js';

const pool = makePool({ max: 2 });
const table = inject('pgTable');
const store = createPostgresStore({ pool, table });
afterAll(() => pool.end());

/** An in-progress row written by hand, with this fence. */
async function insertInProgress(key: string, fence: string): Promise<void> {
  const now = Date.now();
  await pool.query(
    `INSERT INTO ${table} (key, status, fingerprint, owner, fence, lease_until, expires_at)
     VALUES ($1, 'in_progress', 'fp', 'o', $2, $3, $4)`,
    [key, fence, now + 60_000, now + 120_000],
  );
}

async function row(key: string): Promise<unknown> {
  const { rows } = await pool.query(`SELECT * FROM ${table} WHERE key = $1`, [key]);
  return rows[0];
}

describe('admin on a malformed PostgreSQL row', () => {
  it.each([
    ['a negative fence', '-5'],
    ['a fence past 2^53', '9007199254740993'],
    ['the largest bigint', '9223372036854775807'],
  ])('%s: forceRelease and delete write nothing and fail', async (_what, fence) => {
    for (const action of ['forceRelease', 'delete'] as const) {
      const key = newKey();
      await insertInProgress(key, fence);
      const before = await row(key);
      await expect(store.admin[action](key)).rejects.toThrow(
        new RegExp(`fence ${fence} \\(not written by a store.*\\): left as it is`),
      );
      expect(await row(key)).toEqual(before);
    }
  });

  it('at fence 2^53 - 1: forceRelease writes nothing and fails (no fence left); delete works', async () => {
    const key = newKey();
    await insertInProgress(key, '9007199254740991');
    const before = await row(key);
    await expect(store.admin.forceRelease(key)).rejects.toThrow(/no fence left below 2\^53/);
    expect(await row(key)).toEqual(before);
    expect(await store.admin.delete(key)).toEqual({ deleted: true });
  });

  it('a row at the largest fence a release can raise is still released and deleted', async () => {
    const key = newKey();
    await insertInProgress(key, '9007199254740990');
    expect(await store.admin.forceRelease(key)).toEqual({
      ok: true,
      fence: 2 ** 53 - 1,
      previousOwner: 'o',
    });
    // A completed or released row is never changed by a release, whatever its fence.
    expect(await store.admin.forceRelease(key)).toEqual({ ok: false, reason: 'not_in_progress' });
    expect(await store.admin.delete(key)).toEqual({ deleted: true });
  });
});
