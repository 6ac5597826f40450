import assert from 'node:assert/strict';
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

const notOwner = { ok: false, reason: 'not_owner' };

/**
 * Lost answers then redelivery: a client library resends a call whose answer it did not
 * get (the first delivery may have been applied). The store contract makes a repeat of
 * one's own acquire or complete the caller's own, never a conflict.
 */
export const redeliveryChecks: ContractCheck[] = [
  {
    group: 'lost answers then redelivery',
    name: "a repeated acquire by the same owner is that owner's acquisition: same fence, lease renewed; another owner still finds it in progress",
    async run(h) {
      const key = h.newKey();
      const input = acquireInput(h, key);
      const first = assertAcquired(await h.store.acquire(input));
      await h.time.advance(h.time.leaseMs / 4);
      const before = h.time.clock.now();
      const again = assertAcquired(
        await h.store.acquire(input),
        'a redelivered acquire of one\'s own in-progress record must answer "acquired"',
      );
      const after = h.time.clock.now();
      assert.equal(again.fence, first.fence, 'the fence is unchanged (no increment)');
      assert.equal(again.takeover, false, 'a redelivery is not a takeover');
      const tol = h.time.toleranceMs;
      assert.ok(
        again.leaseUntil >= before + input.leaseMs - tol &&
          again.leaseUntil <= after + input.leaseMs + tol,
        `the lease is renewed to now + leaseMs (got ${again.leaseUntil}, first ${first.leaseUntil})`,
      );
      const record = await expectRecord(h, key, {
        status: 'in_progress',
        owner: input.owner,
        fence: first.fence,
        outcome: undefined,
      });
      assert.equal(record.leaseUntil, again.leaseUntil, 'persisted leaseUntil is the renewed one');
      assert.equal(record.fingerprint, input.fingerprint);
      assert.ok(
        record.expiresAt >= record.leaseUntil + RETENTION_MS - tol,
        'the renewed record outlives its lease by the retention',
      );
      const other = assertFound(await h.store.acquire(acquireInput(h, key)));
      assert.equal(other.record.status, 'in_progress');
      assert.equal(other.record.owner, input.owner);
      assert.equal(other.record.fence, first.fence);
    },
  },
  {
    group: 'lost answers then redelivery',
    name: 'a repeated acquire after the lease passed, nobody having taken over, is still the same acquisition',
    async run(h) {
      const key = h.newKey();
      const input = acquireInput(h, key);
      const first = assertAcquired(await h.store.acquire(input));
      await h.time.advance(h.time.leaseMs + h.time.toleranceMs + 10);
      const again = assertAcquired(await h.store.acquire(input));
      assert.equal(again.fence, first.fence, 'the fence is unchanged');
      assert.equal(again.takeover, false, "taking over one's own lease is not a takeover");
      await expectRecord(h, key, { status: 'in_progress', owner: input.owner, fence: first.fence });
      assertFound(
        await h.store.acquire(acquireInput(h, key)),
        'the renewed lease protects the key',
      );
    },
  },
  {
    group: 'lost answers then redelivery',
    name: 'a repeated complete with the same owner and bytes succeeds and changes nothing; other bytes are not_owner',
    async run(h) {
      const key = h.newKey();
      const input = acquireInput(h, key);
      assertAcquired(await h.store.acquire(input));
      const w = { key, owner: input.owner, retentionMs: RETENTION_MS };
      const outcome = bytes('\u0000charged\u00ff');
      assert.deepEqual(await h.store.complete({ ...w, outcome }), { ok: true });
      const stored = await expectRecord(h, key, {
        status: 'completed',
        owner: input.owner,
        fence: 1,
        outcome,
      });
      await h.time.advance(h.time.leaseMs / 4);
      assert.deepEqual(
        await h.store.complete({ ...w, outcome: outcome.slice() }),
        { ok: true },
        'a redelivered complete (same owner, same bytes) must answer ok',
      );
      const unchanged = await expectRecord(h, key, {
        status: 'completed',
        owner: input.owner,
        fence: 1,
        outcome,
      });
      assert.equal(unchanged.expiresAt, stored.expiresAt, 'the redelivery changed nothing');
      assert.deepEqual(await h.store.complete({ ...w, outcome: bytes('other') }), notOwner);
      const still = await readBoth(h, key);
      assert.deepEqual(
        still && { ...still, outcome: Buffer.from(still.outcome ?? []) },
        { ...stored, outcome: Buffer.from(outcome) },
        'a complete with other bytes changed nothing',
      );
    },
  },
  {
    group: 'lost answers then redelivery',
    name: 'a repeated complete by another owner, or on a record taken over, is not_owner',
    async run(h) {
      const key = h.newKey();
      const a = acquireInput(h, key);
      assertAcquired(await h.store.acquire(a));
      const outcome = bytes('a');
      const w = { key, retentionMs: RETENTION_MS, outcome };
      assert.deepEqual(await h.store.complete({ ...w, owner: a.owner }), { ok: true });
      assert.deepEqual(await h.store.complete({ ...w, owner: 'someone-else' }), notOwner);
      // The same owner token on a record now held by a newer acquisition is not_owner too.
      const key2 = h.newKey();
      const stale = acquireInput(h, key2);
      assertAcquired(await h.store.acquire(stale));
      await h.time.advance(h.time.leaseMs + h.time.toleranceMs + 10);
      const fresh = acquireInput(h, key2);
      assertAcquired(await h.store.acquire(fresh));
      assert.deepEqual(await h.store.complete({ ...w, key: key2, owner: fresh.owner }), {
        ok: true,
      });
      assert.deepEqual(await h.store.complete({ ...w, key: key2, owner: stale.owner }), notOwner);
      await expectRecord(h, key2, { status: 'completed', owner: fresh.owner, fence: 2, outcome });
    },
  },
];
