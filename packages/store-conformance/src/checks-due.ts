import assert from 'node:assert/strict';
import type { AcquireInput, RecordStatus } from '@idem/core';
import {
  acquireInput,
  assertAcquired,
  assertFound,
  assertSameBytes,
  bytes,
  type ContractCheck,
  expectRecord,
  RETENTION_MS,
  readBoth,
} from './checks-records.js';
import type { Harness } from './harness.js';

const notOwner = { ok: false, reason: 'not_owner' };

/**
 * With a store's own clock, how far past a deadline (in ms) a check sleeps before it counts
 * the deadline as due by that clock: it moves on with ours, and this covers a store rounding
 * a deadline up to a whole millisecond. With the manual clock the check moves 1 ms past it.
 */
export const DUE_SLACK_MS = 10;

/** Lets a deadline `ms` after a write pass, by the store's clock (bounded: `ms` + a few ms). */
async function passDeadline(h: Harness, ms: number): Promise<void> {
  await h.time.advance(ms + (h.time.kind === 'injectable' ? 1 : DUE_SLACK_MS));
}

/**
 * Right after a write whose deadline is due as it is written: the record is gone (expired at
 * once, its fence kept aside), or still the one written (it lives to the end of its last
 * millisecond). Either is the contract; a read that fails, or finds anything else, is not.
 * Each channel is judged on its own: with a clock of the store's own, the record may expire
 * between the two reads, so they need not agree on whether it is there.
 */
async function expectGoneOrWritten(
  h: Harness,
  key: string,
  written: {
    status: RecordStatus;
    owner: string;
    fence: number;
    outcome?: Uint8Array;
    /** For an in-progress record: the latest lease it may hold. */
    leaseUntilAtMost?: number;
  },
  what: string,
): Promise<void> {
  const channels = [
    ['get()', () => h.store.get(key)],
    ['the raw read', () => h.raw(key)],
  ] as const;
  for (const [channel, read] of channels) {
    const record = await read();
    if (record === undefined) continue;
    const says = `${what}: the record ${channel} still finds`;
    assert.equal(record.status, written.status, `${says}: status`);
    assert.equal(record.owner, written.owner, `${says}: owner`);
    assert.equal(record.fence, written.fence, `${says}: fence`);
    if (written.status === 'completed') assertSameBytes(record.outcome, written.outcome, says);
    if (written.leaseUntilAtMost !== undefined)
      assert.ok(
        record.leaseUntil <= written.leaseUntilAtMost,
        `${says}: a lease of 0 ms ends at once, or keeps the earlier lease (leaseUntil ${record.leaseUntil}, at most ${written.leaseUntilAtMost}, now about ${h.time.clock.now()})`,
      );
  }
}

/** Moments of an owner's lease at which a check renews it with a lease and retention of 0. */
const RENEWED = ['while its lease is live', 'after its lease passed, nobody having taken over'];

/**
 * An owner renews its lease with a lease and a retention of 0 (`renew` answers the lease it
 * was told, if any), while its lease is live and again, on another key, after it passed.
 * The record may expire at once. A store may keep a later lease it already granted rather
 * than move a lease back (DynamoDB does, against a renewal that arrives after a later one);
 * a lease that passed, it must end at once. Past the lease the record holds, another owner
 * takes the key with a higher fence and the old owner is cut off.
 */
async function renewDue(
  h: Harness,
  what: string,
  renew: (input: AcquireInput, fence: number, label: string) => Promise<number | undefined>,
): Promise<void> {
  for (const when of RENEWED) {
    const label = `${what}, ${when}`;
    const key = h.newKey();
    const input = acquireInput(h, key);
    const first = assertAcquired(await h.store.acquire(input));
    const { fence } = first;
    const live = when === RENEWED[0];
    if (!live) await h.time.advance(h.time.leaseMs + h.time.toleranceMs + 10);
    const answered = await renew(input, fence, label);
    const atOnce = h.time.clock.now() + h.time.toleranceMs;
    const leaseUntilAtMost = live
      ? Math.max(first.leaseUntil + h.time.toleranceMs, atOnce)
      : atOnce;
    if (answered !== undefined)
      assert.ok(
        answered <= leaseUntilAtMost,
        `${label}: the answered lease ends at once, or is the earlier one (${answered}, at most ${leaseUntilAtMost})`,
      );
    const written = { status: 'in_progress', owner: input.owner, fence, leaseUntilAtMost } as const;
    await expectGoneOrWritten(h, key, written, label);
    // Past the lease the record may hold (bounded: at most the first lease).
    if (!live) await passDeadline(h, 0);
    else if (h.time.kind === 'injectable')
      await h.time.advance(Math.max(1, first.leaseUntil + 1 - h.time.clock.now()));
    else await h.time.advance(h.time.leaseMs + h.time.toleranceMs + 10);
    await expectGoneOrWritten(h, key, written, label);
    await expectKeyTakenAgain(h, key, { owner: input.owner, fence }, label);
  }
}

/**
 * After a due-deadline write by `old`: another owner acquires the key with a fence above
 * `old.fence` (the fence outlives the record), `old`'s complete, extend and release answer
 * `not_owner` and change nothing, and the new owner's execution runs to a replayed outcome.
 */
async function expectKeyTakenAgain(
  h: Harness,
  key: string,
  old: { owner: string; fence: number; outcome?: Uint8Array },
  what: string,
): Promise<void> {
  const next = acquireInput(h, key);
  const taken = assertAcquired(
    await h.store.acquire(next),
    `${what}: another owner must acquire the key`,
  );
  assert.ok(
    taken.fence > old.fence,
    `${what}: the next fence (${taken.fence}) must be above the earlier one (${old.fence})`,
  );
  await expectRecord(h, key, { status: 'in_progress', owner: next.owner, fence: taken.fence });
  const w = { key, owner: old.owner, retentionMs: RETENTION_MS };
  assert.deepEqual(
    await h.store.complete({ ...w, outcome: old.outcome ?? bytes('late') }),
    notOwner,
    `${what}: the earlier owner's complete`,
  );
  assert.deepEqual(
    await h.store.extend({ ...w, leaseMs: h.time.leaseMs }),
    notOwner,
    `${what}: the earlier owner's extend`,
  );
  assert.deepEqual(await h.store.release(w), notOwner, `${what}: the earlier owner's release`);
  await expectRecord(h, key, {
    status: 'in_progress',
    owner: next.owner,
    fence: taken.fence,
    outcome: undefined,
  });
  const outcome = bytes(`the outcome after ${what}`);
  assert.deepEqual(
    await h.store.complete({ key, owner: next.owner, outcome, retentionMs: RETENTION_MS }),
    { ok: true },
    `${what}: the new owner completes`,
  );
  const found = assertFound(await h.store.acquire(acquireInput(h, key)), `${what}: replayed`);
  assert.equal(found.record.fence, taken.fence, `${what}: the replayed record's fence`);
  assertSameBytes(found.record.outcome, outcome, `${what}: the replayed outcome`);
}

/**
 * Writes whose new deadline is already due when written: a release or complete with a
 * retention of 0 or 1 ms (core's smallest `retentionMs` is 1 ms; the store API takes 0), an
 * extend or a redelivered acquire with a lease and a retention of 0. The record may expire as
 * it is written, but the key must stay usable: readable, acquirable by another owner with a
 * higher fence, the earlier owner cut off. (The Redis store left such a key unreadable for
 * ever before rev20: every later call failed with STORE_UNAVAILABLE.) Fences are compared
 * with the key's first one, not with 1: a store may start a fresh key higher (the memory
 * store's fence floor is shared by its keys).
 */
export const dueDeadlineChecks: ContractCheck[] = [
  {
    group: 'due deadlines',
    name: 'a release with a retention of 0 or 1 ms: the key is acquired again with a higher fence, at once and after the deadline; the released owner is cut off',
    async run(h) {
      for (const retentionMs of [0, 1]) {
        for (const when of ['at once', 'after the deadline'] as const) {
          const what = `release with retentionMs ${retentionMs}, next acquire ${when}`;
          const key = h.newKey();
          const input = acquireInput(h, key);
          const { fence } = assertAcquired(await h.store.acquire(input));
          assert.deepEqual(
            await h.store.release({ key, owner: input.owner, retentionMs }),
            { ok: true },
            what,
          );
          await expectGoneOrWritten(
            h,
            key,
            { status: 'released', owner: input.owner, fence },
            what,
          );
          if (when === 'after the deadline') {
            await passDeadline(h, retentionMs);
            assert.equal(await readBoth(h, key), undefined, `${what}: the tombstone expired`);
          }
          await expectKeyTakenAgain(h, key, { owner: input.owner, fence }, what);
        }
      }
    },
  },
  {
    group: 'due deadlines',
    name: 'an extend with a lease and a retention of 0 (lease live, or passed): past the lease the record holds, another owner takes the key with a higher fence and the old owner is cut off',
    async run(h) {
      await renewDue(h, 'extend with leaseMs 0 and retentionMs 0', async (input, _fence, label) => {
        const extended = await h.store.extend({
          key: input.key,
          owner: input.owner,
          leaseMs: 0,
          retentionMs: 0,
        });
        assert.equal(extended.ok, true, `${label}: the owner's extend answers ok`);
        return extended.ok ? extended.leaseUntil : undefined;
      });
    },
  },
  {
    group: 'due deadlines',
    name: 'a redelivered acquire with a lease and a retention of 0 (lease live, or passed): same fence; past the lease the record holds, another owner takes the key with a higher fence and the old owner is cut off',
    async run(h) {
      await renewDue(
        h,
        'redelivered acquire with leaseMs 0 and retentionMs 0',
        async (input, fence, label) => {
          const again = assertAcquired(
            await h.store.acquire({ ...input, leaseMs: 0, retentionMs: 0 }),
            `${label}: the owner's own acquisition`,
          );
          assert.equal(again.takeover, false, `${label}: a redelivery is not a takeover`);
          assert.equal(again.fence, fence, `${label}: the fence is unchanged`);
          return again.leaseUntil;
        },
      );
    },
  },
  {
    group: 'due deadlines',
    name: 'a complete with a retention of 0 or 1 ms: the record is gone once the deadline passed, and the key is acquired again with a higher fence',
    async run(h) {
      for (const retentionMs of [0, 1]) {
        const what = `complete with retentionMs ${retentionMs}`;
        const key = h.newKey();
        const input = acquireInput(h, key);
        const { fence } = assertAcquired(await h.store.acquire(input));
        const outcome = bytes(`outcome kept ${retentionMs} ms`);
        assert.deepEqual(
          await h.store.complete({ key, owner: input.owner, outcome, retentionMs }),
          { ok: true },
          what,
        );
        await expectGoneOrWritten(
          h,
          key,
          { status: 'completed', owner: input.owner, fence, outcome },
          what,
        );
        await passDeadline(h, retentionMs);
        assert.equal(await readBoth(h, key), undefined, `${what}: the outcome expired`);
        await expectKeyTakenAgain(h, key, { owner: input.owner, fence, outcome }, what);
      }
    },
  },
];
