import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { StoreAdmin } from '@idem/core';
import {
  acquireInput,
  assertAcquired,
  assertFound,
  bytes,
  type ContractCheck,
  expectRecord,
  RETENTION_MS,
  readBoth,
} from './checks-records.js';
import type { Harness } from './harness.js';

const notOwner = { ok: false, reason: 'not_owner' };

/** The store's admin, failing the check when the store has none. */
export function adminOf(h: Harness): StoreAdmin {
  const { admin } = h.store;
  assert.ok(
    admin &&
      typeof admin.inspect === 'function' &&
      typeof admin.forceRelease === 'function' &&
      typeof admin.delete === 'function',
    'the store must provide `admin` with inspect, forceRelease and delete',
  );
  return admin;
}

/** Every owner-checked write of `owner` answers not_owner and leaves the record as it was. */
export async function assertCutOff(h: Harness, key: string, owner: string): Promise<void> {
  const before = await readBoth(h, key);
  const write = { key, owner, retentionMs: RETENTION_MS };
  assert.deepEqual(
    await h.store.complete({ ...write, outcome: bytes('late') }),
    notOwner,
    "the cut-off executor's complete",
  );
  assert.deepEqual(
    await h.store.extend({ ...write, leaseMs: h.time.leaseMs }),
    notOwner,
    "the cut-off executor's extend",
  );
  assert.deepEqual(await h.store.release(write), notOwner, "the cut-off executor's release");
  assert.deepEqual(await readBoth(h, key), before, 'the record is unchanged');
}

/** Operator actions: inspect, force-release, delete (contract `StoreAdmin`). */
export const adminChecks: ContractCheck[] = [
  {
    group: 'capabilities',
    name: 'the store declares the clock it is tested with (capabilities.clock)',
    async run(h) {
      assert.equal(
        h.store.capabilities.clock,
        h.time.kind,
        `capabilities.clock is '${h.store.capabilities.clock}' but the suite runs it with clock: '${h.time.kind}'`,
      );
    },
  },
  {
    group: 'admin',
    name: 'inspect shows status, owner, fence, deadlines and outcome size, changes nothing, and finds no missing key',
    async run(h) {
      const admin = adminOf(h);
      const key = h.newKey();
      assert.equal(await admin.inspect(key), undefined, 'no record: undefined');
      const input = acquireInput(h, key);
      const acquired = assertAcquired(await h.store.acquire(input));
      const before = h.time.clock.now();
      const seen = await admin.inspect(key);
      const after = h.time.clock.now();
      assert.ok(seen, 'inspect finds the in-progress record');
      const record = await expectRecord(h, key, {
        status: 'in_progress',
        owner: input.owner,
        fence: 1,
      });
      assert.deepEqual(seen, {
        status: 'in_progress',
        fingerprint: input.fingerprint,
        owner: input.owner,
        fence: acquired.fence,
        leaseUntil: record.leaseUntil,
        expiresAt: record.expiresAt,
        outcomeBytes: 0,
        now: seen.now,
      });
      const tol = h.time.toleranceMs;
      assert.ok(seen.now >= before - tol && seen.now <= after + tol, 'now is the store clock');
      const outcome = new Uint8Array(randomBytes(1_000));
      const write = { key, owner: input.owner, retentionMs: RETENTION_MS };
      assert.deepEqual(await h.store.complete({ ...write, outcome }), { ok: true });
      const done = await admin.inspect(key);
      assert.equal(done?.status, 'completed');
      assert.equal(done?.outcomeBytes, 1_000, 'the outcome size in bytes');
      await expectRecord(h, key, { status: 'completed', owner: input.owner, fence: 1, outcome });
    },
  },
  {
    group: 'admin',
    name: "forceRelease frees a stuck key with fence + 1: the old owner's writes get not_owner, the next acquire gets a higher fence",
    async run(h) {
      const admin = adminOf(h);
      const key = h.newKey();
      const stuck = acquireInput(h, key);
      assertAcquired(await h.store.acquire(stuck));
      const result = await admin.forceRelease(key);
      assert.deepEqual(result, { ok: true, fence: 2, previousOwner: stuck.owner });
      const record = await readBoth(h, key);
      assert.equal(record?.status, 'released', 'the record is a released tombstone');
      assert.equal(record?.fence, 2, 'the tombstone holds fence + 1');
      assert.notEqual(record?.owner, stuck.owner, 'no executor holds the new owner token');
      await assertCutOff(h, key, stuck.owner);
      const next = acquireInput(h, key);
      const taken = assertAcquired(await h.store.acquire(next), 'the key is free again');
      assert.equal(taken.fence, 3, 'the next acquisition continues above the forced fence');
      await expectRecord(h, key, { status: 'in_progress', owner: next.owner, fence: 3 });
      await assertCutOff(h, key, stuck.owner);
    },
  },
  {
    group: 'admin',
    name: 'forceRelease also frees a key whose lease passed, and leaves completed, released and missing keys unchanged',
    async run(h) {
      const admin = adminOf(h);
      const lapsed = h.newKey();
      const gone = acquireInput(h, lapsed);
      assertAcquired(await h.store.acquire(gone));
      await h.time.advance(h.time.leaseMs + 50);
      assert.deepEqual(await admin.forceRelease(lapsed), {
        ok: true,
        fence: 2,
        previousOwner: gone.owner,
      });
      await assertCutOff(h, lapsed, gone.owner);

      const done = h.newKey();
      const input = acquireInput(h, done);
      assertAcquired(await h.store.acquire(input));
      const outcome = bytes('kept');
      const write = { key: done, owner: input.owner, retentionMs: RETENTION_MS };
      assert.deepEqual(await h.store.complete({ ...write, outcome }), { ok: true });
      const before = await readBoth(h, done);
      assert.deepEqual(await admin.forceRelease(done), { ok: false, reason: 'not_in_progress' });
      assert.deepEqual(await readBoth(h, done), before, 'a completed record is not destroyed');
      const replay = assertFound(await h.store.acquire(acquireInput(h, done)));
      assert.equal(replay.record.status, 'completed', 'it is still replayed');

      assert.deepEqual(await admin.forceRelease(lapsed), { ok: false, reason: 'not_in_progress' });
      const missing = h.newKey();
      assert.deepEqual(await admin.forceRelease(missing), { ok: false, reason: 'not_found' });
      assert.equal(await readBoth(h, missing), undefined, 'nothing was created');
    },
  },
  {
    group: 'admin',
    name: "forceRelease racing the owner's complete: exactly one of them wins",
    async run(h) {
      const admin = adminOf(h);
      for (let round = 0; round < 8; round++) {
        const key = h.newKey();
        const input = acquireInput(h, key);
        assertAcquired(await h.store.acquire(input));
        const [completed, forced] = await Promise.all([
          h.store.complete({
            key,
            owner: input.owner,
            outcome: bytes('x'),
            retentionMs: RETENTION_MS,
          }),
          admin.forceRelease(key),
        ]);
        const record = await readBoth(h, key);
        if (completed.ok) {
          assert.deepEqual(forced, { ok: false, reason: 'not_in_progress' });
          assert.equal(record?.status, 'completed');
        } else {
          assert.equal(forced.ok, true, 'one of complete and forceRelease must win');
          assert.equal(record?.status, 'released');
        }
      }
    },
  },
  {
    group: 'admin',
    name: "forceRelease racing the owner's extend (heartbeat) and release: the forced tombstone stands, or the owner's release won alone",
    async run(h) {
      const admin = adminOf(h);
      for (let round = 0; round < 8; round++) {
        const key = h.newKey();
        const input = acquireInput(h, key);
        const { fence } = assertAcquired(await h.store.acquire(input));
        const write = { key, owner: input.owner, retentionMs: RETENTION_MS };
        // A heartbeat cannot undo a forced release, whichever lands first.
        const [, forced] = await Promise.all([
          h.store.extend({ ...write, leaseMs: h.time.leaseMs }),
          admin.forceRelease(key),
        ]);
        assert.equal(forced.ok, true, 'an in-progress record is force-released, renewed or not');
        const tombstone = await readBoth(h, key);
        assert.equal(tombstone?.status, 'released', 'the forced tombstone stands');
        assert.equal(tombstone?.fence, fence + 1);
        assert.notEqual(tombstone?.owner, input.owner);
        await assertCutOff(h, key, input.owner);

        const other = h.newKey();
        const second = acquireInput(h, other);
        const taken = assertAcquired(await h.store.acquire(second));
        const [released, forcedToo] = await Promise.all([
          h.store.release({ key: other, owner: second.owner, retentionMs: RETENTION_MS }),
          admin.forceRelease(other),
        ]);
        const record = await readBoth(h, other);
        if (released.ok) {
          assert.deepEqual(forcedToo, { ok: false, reason: 'not_in_progress' });
          assert.equal(record?.fence, taken.fence, "the owner's release won: no forced fence");
        } else {
          assert.equal(forcedToo.ok, true, 'one of release and forceRelease must win');
          assert.equal(record?.fence, taken.fence + 1, 'the forced release won: fence + 1');
        }
        assert.equal(record?.status, 'released');
      }
    },
  },
  {
    group: 'admin',
    name: 'delete removes a record of any status; the old owner gets not_owner and the key is free',
    async run(h) {
      const admin = adminOf(h);
      const key = h.newKey();
      assert.deepEqual(await admin.delete(key), { deleted: false }, 'nothing to delete');
      const input = acquireInput(h, key);
      assertAcquired(await h.store.acquire(input));
      assert.deepEqual(await admin.delete(key), { deleted: true });
      assert.equal(await readBoth(h, key), undefined, 'the record is gone');
      assert.equal(await admin.inspect(key), undefined);
      const write = { key, owner: input.owner, retentionMs: RETENTION_MS };
      assert.deepEqual(await h.store.complete({ ...write, outcome: bytes('late') }), notOwner);
      assert.equal(await readBoth(h, key), undefined, 'a late complete creates nothing');

      const next = acquireInput(h, key);
      const again = assertAcquired(await h.store.acquire(next), 'the key is free again');
      assert.equal(again.takeover, false);
      await h.store.complete({
        key,
        owner: next.owner,
        outcome: bytes('v'),
        retentionMs: RETENTION_MS,
      });
      assert.deepEqual(await admin.delete(key), { deleted: true }, 'a completed record too');
      assert.equal(await readBoth(h, key), undefined);
      assertAcquired(await h.store.acquire(acquireInput(h, key)), 'its outcome is forgotten');
    },
  },
  {
    group: 'admin',
    name: 'delete keeps fences growing: the next acquisition of a deleted key gets a fence above every earlier one',
    async run(h) {
      const admin = adminOf(h);
      const key = h.newKey();
      // Fence 2 on a completed record: a release first, so a store cannot pass by luck at 1.
      const first = acquireInput(h, key);
      assertAcquired(await h.store.acquire(first));
      const released = { key, owner: first.owner, retentionMs: RETENTION_MS };
      assert.deepEqual(await h.store.release(released), { ok: true });
      const second = acquireInput(h, key);
      const done = assertAcquired(await h.store.acquire(second));
      const write = { key, owner: second.owner, retentionMs: RETENTION_MS };
      assert.deepEqual(await h.store.complete({ ...write, outcome: bytes('paid') }), { ok: true });
      assert.deepEqual(await admin.delete(key), { deleted: true });
      assert.equal(await readBoth(h, key), undefined, 'the record is gone');
      assert.equal(await admin.inspect(key), undefined, 'inspect finds nothing');
      const third = acquireInput(h, key);
      const after = assertAcquired(await h.store.acquire(third), 'the key is free again');
      assert.ok(
        after.fence > done.fence,
        `fence ${after.fence} after delete must exceed the deleted record's ${done.fence}: a fenced downstream that saw ${done.fence} would refuse it`,
      );
      assert.equal(after.takeover, false, 'a deleted record is no takeover');
      // An in-progress record deleted under its executor: same rule, and the executor is out.
      assert.deepEqual(await admin.delete(key), { deleted: true });
      const late = { key, owner: third.owner, retentionMs: RETENTION_MS };
      assert.deepEqual(await h.store.complete({ ...late, outcome: bytes('late') }), notOwner);
      assert.deepEqual(await h.store.extend({ ...late, leaseMs: h.time.leaseMs }), notOwner);
      assert.deepEqual(await h.store.release(late), notOwner);
      assert.equal(
        await readBoth(h, key),
        undefined,
        "the cut-off executor's writes create nothing",
      );
      const fourth = acquireInput(h, key);
      const last = assertAcquired(await h.store.acquire(fourth));
      assert.ok(last.fence > after.fence, `fence ${last.fence} must exceed ${after.fence}`);
      await expectRecord(h, key, { status: 'in_progress', owner: fourth.owner, fence: last.fence });
    },
  },
];
