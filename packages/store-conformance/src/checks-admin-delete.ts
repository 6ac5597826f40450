import assert from 'node:assert/strict';
import type { DeleteExpectation, RecordInspection, RecordStatus } from '@idem/core';
import { adminOf, assertCutOff } from './checks-admin.js';
import {
  assertEachLeftAsItIs,
  assertRetryCompletes,
  takenOver,
  unholdableOwners,
} from './checks-admin-expect.js';
import { racers } from './checks-processes.js';
import {
  acquireInput,
  assertAcquired,
  assertFound,
  assertSameBytes,
  bytes,
  type ContractCheck,
  RETENTION_MS,
  readBoth,
} from './checks-records.js';
import type { Harness } from './harness.js';

type Seen = Pick<RecordInspection, 'status' | 'owner' | 'fence'>;

/** How an operator names what `inspect` showed: all of it, or one field alone. */
const PICKS: ((seen: Seen) => DeleteExpectation)[] = [
  ({ status, owner, fence }) => ({ status, owner, fence }),
  ({ status }) => ({ status }),
  ({ owner }) => ({ owner }),
  ({ fence }) => ({ fence }),
];

/** A fresh key holding one record of `status` (an in-progress one with its lease live). */
async function recordOf(h: Harness, status: RecordStatus) {
  const key = h.newKey();
  const input = acquireInput(h, key);
  const { fence } = assertAcquired(await h.store.acquire(input));
  const write = { key, owner: input.owner, retentionMs: RETENTION_MS };
  if (status === 'completed')
    assert.deepEqual(await h.store.complete({ ...write, outcome: bytes('done') }), { ok: true });
  if (status === 'released') assert.deepEqual(await h.store.release(write), { ok: true });
  return { key, owner: input.owner, fence };
}

/** `admin.delete` limited to the record the operator inspected (`DeleteExpectation`). */
export const adminDeleteChecks: ContractCheck[] = [
  {
    group: 'admin',
    name: 'delete with the status, owner and/or fence inspect showed deletes that record (in progress, completed, released), and the fence still outlives it',
    async run(h) {
      const admin = adminOf(h);
      for (const status of ['in_progress', 'completed', 'released'] as const) {
        for (const pick of PICKS) {
          const { key, owner, fence } = await recordOf(h, status);
          const seen = await admin.inspect(key);
          assert.ok(seen, `inspect finds the ${status} record`);
          const expected = pick(seen);
          assert.deepEqual(
            await admin.delete(key, expected),
            { deleted: true },
            `delete(key, ${JSON.stringify(expected)}) of a ${status} record`,
          );
          assert.equal(await readBoth(h, key), undefined, 'the record is gone');
          assert.equal(await admin.inspect(key), undefined, 'inspect finds nothing');
          const next = acquireInput(h, key);
          const again = assertAcquired(await h.store.acquire(next), 'the key is free again');
          assert.equal(again.takeover, false, 'a deleted record is no takeover');
          assert.ok(
            again.fence > fence,
            `fence ${again.fence} after delete must exceed the deleted record's ${fence}`,
          );
          await assertCutOff(h, key, owner);
        }
      }
    },
  },
  {
    group: 'admin',
    name: 'delete expecting a record that changed since inspect (a retry took it over, it completed) answers changed with the status, owner and fence the store holds now, and changes nothing',
    async run(h) {
      const admin = adminOf(h);
      // A released key that a retry took over after the operator inspected it.
      const failed = await recordOf(h, 'released');
      const { key } = failed;
      const seen = await admin.inspect(key);
      assert.ok(seen, 'inspect finds the released tombstone');
      const retry = acquireInput(h, key);
      const won = assertAcquired(await h.store.acquire(retry), 'the retry takes the key');
      const now = { status: 'in_progress', owner: retry.owner, fence: won.fence };
      const stale: DeleteExpectation[] = [
        { status: seen.status, owner: seen.owner, fence: seen.fence },
        { status: 'released' },
        { owner: failed.owner },
        { fence: failed.fence },
        // Every field given must hold: the others holding is not enough.
        { status: 'released', owner: retry.owner, fence: won.fence },
        { status: 'in_progress', owner: failed.owner, fence: won.fence },
        { status: 'in_progress', owner: retry.owner, fence: failed.fence },
        { status: 'completed' },
        ...unholdableOwners(retry.owner),
      ];
      const changed = { deleted: false, reason: 'changed', ...now };
      const remove = (expected: DeleteExpectation) => admin.delete(key, expected);
      await assertEachLeftAsItIs(h, key, stale, remove, changed, 'delete');

      // An execution whose lease passed, taken over by another.
      const other = h.newKey();
      const { first, second } = await takenOver(h, other);
      assert.deepEqual(
        await admin.delete(other, { status: 'in_progress', ...first }),
        { deleted: false, reason: 'changed', status: 'in_progress', ...second },
        'the lapsed execution was taken over',
      );

      // An execution that completed after it was inspected: its outcome stays.
      const running = await recordOf(h, 'in_progress');
      const inspected = await admin.inspect(running.key);
      assert.ok(inspected, 'inspect finds the in-progress record');
      const done = { key: running.key, owner: running.owner, retentionMs: RETENTION_MS };
      assert.deepEqual(await h.store.complete({ ...done, outcome: bytes('paid') }), { ok: true });
      const { status, owner, fence } = inspected;
      assert.deepEqual(
        await admin.delete(running.key, { status, owner, fence }),
        { deleted: false, reason: 'changed', status: 'completed', owner, fence },
        'the execution completed since it was inspected',
      );
      const replay = assertFound(await h.store.acquire(acquireInput(h, running.key)));
      assertSameBytes(replay.record.outcome, bytes('paid'), 'the completed outcome is replayed');

      assert.deepEqual(
        await admin.delete(h.newKey(), { status, owner, fence }),
        { deleted: false },
        'no live record: nothing to delete, expectation or not',
      );
      const retried = { key, owner: retry.owner, outcome: bytes('retried') };
      assert.deepEqual(
        await h.store.complete({ ...retried, retentionMs: RETENTION_MS }),
        { ok: true },
        'the retry that took the released key over still completes',
      );
    },
  },
  {
    group: 'admin',
    name: 'delete expecting the released record, racing the retry that takes the key over: the retry is never deleted (8 rounds; across instances with sharedBackend)',
    async run(h) {
      const admin = adminOf(h);
      const stores = await racers(h);
      for (let round = 0; round < 8; round++) {
        const failed = await recordOf(h, 'released');
        const { key } = failed;
        const seen = await admin.inspect(key);
        assert.ok(seen, 'inspect finds the released tombstone');
        const retry = acquireInput(h, key);
        const store = stores[round % stores.length] ?? h.store;
        const expected = { status: seen.status, owner: seen.owner, fence: seen.fence };
        // Each order of sending: the retry first in even rounds, the delete first in odd ones.
        const retryFirst = round % 2 === 0 ? store.acquire(retry) : undefined;
        const deleting = admin.delete(key, expected);
        const [deleted, taken] = await Promise.all([deleting, retryFirst ?? store.acquire(retry)]);
        const won = assertAcquired(taken, 'the retry takes the key, before or after the delete');
        assert.ok(won.fence > failed.fence, `fence ${won.fence} must exceed ${failed.fence}`);
        if (deleted.deleted === false)
          assert.deepEqual(deleted, {
            deleted: false,
            reason: 'changed',
            status: 'in_progress',
            owner: retry.owner,
            fence: won.fence,
          });
        await assertRetryCompletes(h, key, retry.owner, won.fence);
      }
    },
  },
];
