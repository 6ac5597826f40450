/**
 * Mutation audit (store-postgres): deadlines met to the millisecond. "Expiry is decided by the
 * database clock": a record is gone from `now >= expires_at`, a lease has passed from
 * `now >= lease_until` (README, Clock; store contract rule 3). On the real clock no test lands
 * on the very millisecond, so a function that read `>` for `>=` (an owner who writes a record
 * that just expired; a takeover at the lease's last millisecond that skipped the held lease)
 * passed every test. Here the server's clock is one the test sets (see mutpg-helpers.ts).
 */
import { describe, expect, it } from 'vitest';
import { acquiring, frozenClockSession, T0 } from './mutpg-helpers.js';
import { newOwner } from './pg-env.js';

const NOT_OWNER = { ok: false, reason: 'not_owner' };

const clock = frozenClockSession();

describe('mutpg: at the very millisecond a record expires', () => {
  it("its owner's writes answer not_owner, get and inspect see nothing, an acquisition is a new one", async () => {
    await clock.set(T0);
    const input = acquiring('expiring', { leaseMs: 1_000, retentionMs: 2_000 });
    const got = await clock.shared.acquire(input);
    expect(got).toMatchObject({ kind: 'acquired', fence: 1, leaseUntil: T0 + 1_000 });
    const w = { key: 'expiring', owner: input.owner, retentionMs: 2_000 };
    // One millisecond before: still the owner's (extend changes nothing that matters here).
    await clock.set(T0 + 2_999);
    expect((await clock.shared.get('expiring'))?.expiresAt).toBe(T0 + 3_000);
    expect((await clock.shared.admin.inspect('expiring'))?.status).toBe('in_progress');

    await clock.set(T0 + 3_000);
    expect(await clock.shared.get('expiring')).toBeUndefined();
    expect(await clock.shared.admin.inspect('expiring')).toBeUndefined();
    expect(await clock.shared.admin.forceRelease('expiring')).toEqual({
      ok: false,
      reason: 'not_found',
    });
    expect(await clock.shared.extend({ ...w, leaseMs: 1_000 })).toEqual(NOT_OWNER);
    expect(await clock.shared.complete({ ...w, outcome: new Uint8Array([1]) })).toEqual(NOT_OWNER);
    expect(await clock.shared.release(w)).toEqual(NOT_OWNER);
    // The same owner again is a new acquisition above the expired one, not its redelivery
    // nor a takeover (the record is gone, not held by a passed lease).
    expect(await clock.shared.acquire(input)).toMatchObject({
      kind: 'acquired',
      fence: 2,
      takeover: false,
    });
  });

  it('a completed record is replayed up to its last millisecond and free from its expiry', async () => {
    await clock.set(T0);
    const input = acquiring('done', { leaseMs: 1_000, retentionMs: 2_000 });
    await clock.shared.acquire(input);
    await clock.set(T0 + 500);
    expect(
      await clock.shared.complete({ ...input, outcome: new Uint8Array([7]), retentionMs: 2_000 }),
    ).toEqual({ ok: true });
    await clock.set(T0 + 2_499);
    expect(await clock.shared.acquire(acquiring('done'))).toMatchObject({ kind: 'found' });
    await clock.set(T0 + 2_500);
    expect(await clock.shared.acquire(acquiring('done'))).toMatchObject({
      kind: 'acquired',
      fence: 2,
      takeover: false,
    });
  });
});

describe('mutpg: at the very millisecond a lease passes', () => {
  it('another owner takes the key over, and not one millisecond before', async () => {
    await clock.set(T0);
    await clock.shared.acquire(acquiring('lease', { leaseMs: 1_000 }));
    await clock.set(T0 + 999);
    expect(await clock.shared.acquire(acquiring('lease'))).toMatchObject({ kind: 'found' });
    await clock.set(T0 + 1_000);
    expect(await clock.shared.acquire(acquiring('lease'))).toMatchObject({
      kind: 'acquired',
      fence: 2,
      takeover: true,
    });
  });

  it('a takeover at that millisecond still honours the held lease of a business transaction', async () => {
    await clock.set(T0);
    const input = acquiring('held', { leaseMs: 1_000 });
    expect(await clock.shared.acquire(input)).toMatchObject({ kind: 'acquired', fence: 1 });
    // The transactional engine's heartbeat while its transaction holds the row.
    expect(await clock.shared.renewHeld({ ...input, leaseMs: 5_000, retentionMs: 10_000 }, 1)).toBe(
      T0 + 5_000,
    );
    await clock.set(T0 + 1_000);
    const other = { ...acquiring('held'), owner: newOwner() };
    expect(await clock.shared.acquire(other)).toMatchObject({
      kind: 'found',
      record: { status: 'in_progress', owner: input.owner, fence: 1, leaseUntil: T0 + 5_000 },
    });
    await clock.set(T0 + 5_000);
    expect(await clock.shared.acquire(other)).toMatchObject({
      kind: 'acquired',
      fence: 2,
      takeover: true,
    });
  });

  it("a held lease of an earlier fence never holds back the takeover of a later one's passed lease", async () => {
    await clock.set(T0);
    const first = acquiring('old-held', { leaseMs: 1_000 });
    await clock.shared.acquire(first);
    expect(await clock.shared.renewHeld({ ...first, leaseMs: 5_000, retentionMs: 10_000 }, 1)).toBe(
      T0 + 5_000,
    );
    // Its transaction ended and it gave the key back; the next execution dies at once.
    expect(
      await clock.shared.release({ key: 'old-held', owner: first.owner, retentionMs: 10_000 }),
    ).toEqual({ ok: true });
    expect(await clock.shared.acquire(acquiring('old-held', { leaseMs: 1_000 }))).toMatchObject({
      kind: 'acquired',
      fence: 2,
    });
    await clock.set(T0 + 2_000);
    expect(await clock.shared.acquire(acquiring('old-held'))).toMatchObject({
      kind: 'acquired',
      fence: 3,
      takeover: true,
    });
  });
});

describe('mutpg: deadlines', () => {
  it('the longest lease reads back exactly: capped at 2^53 - 1', async () => {
    await clock.set(T0);
    const got = await clock.shared.acquire(
      acquiring('longest', { leaseMs: Number.MAX_SAFE_INTEGER, retentionMs: 1 }),
    );
    expect(got).toMatchObject({ kind: 'acquired', leaseUntil: Number.MAX_SAFE_INTEGER });
    const record = await clock.shared.get('longest');
    expect(record?.leaseUntil).toBe(Number.MAX_SAFE_INTEGER);
    expect(record?.expiresAt).toBe(Number.MAX_SAFE_INTEGER);
  });

  it('a redelivered acquisition never shortens the retention (the clock stepped back)', async () => {
    await clock.set(T0 + 1_000);
    const input = acquiring('stepped', { leaseMs: 1_000, retentionMs: 10_000 });
    await clock.shared.acquire(input);
    await clock.set(T0);
    expect(await clock.shared.acquire(input)).toMatchObject({ kind: 'acquired', fence: 1 });
    expect((await clock.shared.get('stepped'))?.expiresAt).toBe(T0 + 12_000);
  });
});

describe('mutpg: held leases and renewals', () => {
  it("a late renewal of the taken-over execution leaves the new execution's held lease alone", async () => {
    await clock.set(T0);
    const first = acquiring('late', { leaseMs: 1_000 });
    await clock.shared.acquire(first);
    await clock.set(T0 + 1_000);
    const second = acquiring('late', { leaseMs: 1_000 });
    expect(await clock.shared.acquire(second)).toMatchObject({ kind: 'acquired', fence: 2 });
    expect(await clock.shared.renewHeld({ ...second, leaseMs: 5_000 }, 2)).toBe(T0 + 6_000);
    // The first execution's heartbeat, late: refused, and it changes nothing.
    expect(await clock.shared.renewHeld({ ...first, leaseMs: 5_000 }, 1)).toBeUndefined();
    await clock.set(T0 + 3_000);
    expect(await clock.shared.acquire(acquiring('late'))).toMatchObject({
      kind: 'found',
      record: { owner: second.owner, fence: 2, leaseUntil: T0 + 6_000 },
    });
  });

  it('a renewal for an earlier acquisition of the same owner is refused', async () => {
    await clock.set(T0);
    const input = acquiring('same-owner', { leaseMs: 1_000, retentionMs: 1_000 });
    await clock.shared.acquire(input);
    await clock.set(T0 + 2_000);
    expect(await clock.shared.acquire(input)).toMatchObject({ kind: 'acquired', fence: 2 });
    expect(await clock.shared.renewHeld({ ...input, leaseMs: 1_000 }, 1)).toBeUndefined();
    expect(await clock.shared.renewHeld({ ...input, leaseMs: 1_000 }, 2)).toBe(T0 + 3_000);
  });

  it('a held lease only moves forward: a shorter renewal later keeps the longer deadline', async () => {
    await clock.set(T0);
    const input = acquiring('forward', { leaseMs: 1_000 });
    await clock.shared.acquire(input);
    expect(await clock.shared.renewHeld({ ...input, leaseMs: 5_000 }, 1)).toBe(T0 + 5_000);
    await clock.set(T0 + 100);
    await clock.shared.renewHeld({ ...input, leaseMs: 1_000 }, 1);
    await clock.set(T0 + 2_000);
    expect(await clock.shared.acquire(acquiring('forward'))).toMatchObject({
      kind: 'found',
      record: { fence: 1, leaseUntil: T0 + 5_000 },
    });
  });

  it('extend with a shorter lease moves the lease back but never the retention', async () => {
    await clock.set(T0);
    const input = acquiring('shorter', { leaseMs: 10_000, retentionMs: 10_000 });
    await clock.shared.acquire(input);
    expect(await clock.shared.extend({ ...input, leaseMs: 1_000 })).toEqual({
      ok: true,
      leaseUntil: T0 + 1_000,
    });
    expect(await clock.shared.get('shorter')).toMatchObject({
      leaseUntil: T0 + 1_000,
      expiresAt: T0 + 20_000,
    });
  });

  it('the hold of a serializable transaction refuses a record whose retention passed', async () => {
    await clock.set(T0);
    const input = acquiring('hold', { leaseMs: 1_000, retentionMs: 1_000 });
    await clock.shared.acquire(input);
    const row = clock.shared.rowKey('hold');
    const {
      rows: [found],
    } = await clock.pool.query(
      `SELECT ctid::text AS tid FROM ${clock.shared.table} WHERE key = $1`,
      [row],
    );
    const hold = `${clock.shared.table}_hold`;
    const held = (tid: string) =>
      clock.pool.query(`SELECT ${hold}($1::tid, $2, $3, 1) AS fence`, [tid, row, input.owner]);
    expect((await held(found.tid)).rows[0].fence).toBe('1');
    await clock.set(T0 + 2_000);
    expect((await held(found.tid)).rows[0].fence).toBeNull();
  });
});
