import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  createIdempotency,
  decodeOutcome,
  encodeOutcome,
  InProgressError,
  MismatchError,
} from '@idem/core';
import { acquireEdgeChecks } from './checks-acquire-edges.js';
import { adminChecks } from './checks-admin.js';
import { adminDeleteChecks } from './checks-admin-delete.js';
import { adminExpectChecks } from './checks-admin-expect.js';
import { adminStateChecks } from './checks-admin-states.js';
import { boundaryChecks } from './checks-boundaries.js';
import { dueDeadlineChecks } from './checks-due.js';
import { engineChecks } from './checks-engine.js';
import { inputChecks } from './checks-input.js';
import { originChecks } from './checks-origin.js';
import { processChecks, racers } from './checks-processes.js';
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
  storeOutcome,
} from './checks-records.js';
import { redeliveryChecks } from './checks-redelivery.js';

const notOwner = { ok: false, reason: 'not_owner' };

/** The example-based part of the contract, by group. */
export const contractChecks: ContractCheck[] = [
  {
    group: 'acquire',
    name: 'acquires a free key with fence 1 and persists owner, fingerprint and deadlines',
    async run(h) {
      const key = h.newKey();
      const before = h.time.clock.now();
      const input = acquireInput(h, key);
      const result = assertAcquired(await h.store.acquire(input));
      const after = h.time.clock.now();
      assert.equal(result.fence, 1);
      assert.equal(result.takeover, false);
      const tol = h.time.toleranceMs;
      assert.ok(
        result.leaseUntil >= before + input.leaseMs - tol &&
          result.leaseUntil <= after + input.leaseMs + tol,
        'leaseUntil = now + leaseMs',
      );
      const record = await expectRecord(h, key, {
        status: 'in_progress',
        owner: input.owner,
        fence: 1,
        outcome: undefined,
      });
      assert.equal(record.fingerprint, 'fp-a');
      assert.equal(
        record.leaseUntil,
        result.leaseUntil,
        'persisted leaseUntil equals the returned one',
      );
      assert.ok(
        record.expiresAt >= record.leaseUntil + RETENTION_MS - tol,
        'in-progress record outlives its lease by the retention',
      );
    },
  },
  {
    group: 'acquire',
    name: 'returns the live in-progress record it found and changes nothing',
    async run(h) {
      const key = h.newKey();
      const first = acquireInput(h, key);
      assertAcquired(await h.store.acquire(first));
      const found = assertFound(
        await h.store.acquire(acquireInput(h, key, { fingerprint: 'fp-b' })),
      );
      assert.equal(found.record.status, 'in_progress');
      assert.equal(found.record.owner, first.owner);
      assert.equal(found.record.fingerprint, 'fp-a');
      assert.equal(found.record.fence, 1);
      const now = h.time.clock.now();
      assert.ok(
        Math.abs(found.now - now) <= h.time.toleranceMs,
        `found.now (${found.now}) is the store's clock reading (about ${now})`,
      );
      assert.ok(found.now < found.record.leaseUntil, 'found.now is before the lease end');
      await expectRecord(h, key, { status: 'in_progress', owner: first.owner, fence: 1 });
    },
  },
  {
    group: 'acquire',
    name: 'of 16 concurrent acquires of a free key exactly one wins (across instances with sharedBackend)',
    async run(h) {
      // With `sharedBackend`, spread over instances onto the same records (other processes).
      const stores = await racers(h);
      const key = h.newKey();
      // A lease long enough that no acquire can find the winner's lease passed, however slow
      // the machine: a takeover after expiry is a second, legitimate winner, not this race.
      const inputs = Array.from({ length: 16 }, () => acquireInput(h, key, { leaseMs: 60_000 }));
      const results = await Promise.all(
        inputs.map((input, i) => stores[i % stores.length]!.acquire(input)),
      );
      const winners = results.flatMap((r, i) => (r.kind === 'acquired' ? [inputs[i]!.owner] : []));
      assert.equal(winners.length, 1, `expected one winner, got ${winners.length}`);
      for (const r of results) {
        if (r.kind === 'found') assert.equal(r.record.owner, winners[0], 'losers see the winner');
      }
      await expectRecord(h, key, { status: 'in_progress', owner: winners[0]!, fence: 1 });
    },
  },
  {
    group: 'owner checks',
    name: 'complete, release and extend by a non-owner change nothing',
    async run(h) {
      const key = h.newKey();
      const input = acquireInput(h, key);
      assertAcquired(await h.store.acquire(input));
      const before = await readBoth(h, key);
      const intruder = { key, owner: 'intruder', retentionMs: RETENTION_MS };
      assert.deepEqual(await h.store.complete({ ...intruder, outcome: bytes('stolen') }), notOwner);
      assert.deepEqual(await h.store.release(intruder), notOwner);
      assert.deepEqual(
        await h.store.extend({ ...intruder, leaseMs: h.time.leaseMs * 10 }),
        notOwner,
      );
      const after = await expectRecord(h, key, {
        status: 'in_progress',
        owner: input.owner,
        fence: 1,
        outcome: undefined,
      });
      assert.equal(after.leaseUntil, before?.leaseUntil, 'lease untouched');
    },
  },
  {
    group: 'owner checks',
    name: 'complete stores the outcome once; later writes by the same owner are refused',
    async run(h) {
      const key = h.newKey();
      const input = acquireInput(h, key);
      assertAcquired(await h.store.acquire(input));
      const w = { key, owner: input.owner, retentionMs: RETENTION_MS };
      assert.deepEqual(await h.store.complete({ ...w, outcome: bytes('first') }), { ok: true });
      assert.deepEqual(await h.store.complete({ ...w, outcome: bytes('second') }), notOwner);
      assert.deepEqual(await h.store.release(w), notOwner);
      assert.deepEqual(await h.store.extend({ ...w, leaseMs: 1000 }), notOwner);
      await expectRecord(h, key, {
        status: 'completed',
        owner: input.owner,
        fence: 1,
        outcome: bytes('first'),
      });
    },
  },
  {
    group: 'owner checks',
    name: 'writes to a key with no record are refused and create nothing',
    async run(h) {
      const key = h.newKey();
      const w = { key, owner: 'nobody', retentionMs: RETENTION_MS };
      assert.deepEqual(await h.store.complete({ ...w, outcome: bytes('x') }), notOwner);
      assert.deepEqual(await h.store.release(w), notOwner);
      assert.deepEqual(await h.store.extend({ ...w, leaseMs: 1000 }), notOwner);
      assert.equal(await readBoth(h, key), undefined);
    },
  },
  {
    group: 'owner checks',
    name: 'extend by the owner moves the lease forward',
    async run(h) {
      const key = h.newKey();
      const input = acquireInput(h, key);
      const acquired = assertAcquired(await h.store.acquire(input));
      await h.time.advance(h.time.leaseMs / 2);
      const extended = await h.store.extend({
        key,
        owner: input.owner,
        leaseMs: h.time.leaseMs,
        retentionMs: RETENTION_MS,
      });
      assert.equal(extended.ok, true);
      const record = await readBoth(h, key);
      assert.ok(record && record.leaseUntil > acquired.leaseUntil, 'leaseUntil grew');
      await h.time.advance(h.time.leaseMs * 0.6);
      // Past the first lease's end, inside the extended one.
      assertFound(
        await h.store.acquire(acquireInput(h, key)),
        'extended lease still protects the key',
      );
    },
  },
  {
    group: 'fence',
    name: 'the fence grows across release, takeover and retention expiry',
    async run(h) {
      const key = h.newKey();
      const a = acquireInput(h, key, { retentionMs: h.time.leaseMs });
      assert.equal(assertAcquired(await h.store.acquire(a)).fence, 1);
      assert.deepEqual(await h.store.release({ key, owner: a.owner, retentionMs: RETENTION_MS }), {
        ok: true,
      });
      await expectRecord(h, key, { status: 'released', owner: a.owner, fence: 1 });
      const b = acquireInput(h, key, { retentionMs: h.time.leaseMs });
      const rb = assertAcquired(await h.store.acquire(b), 'a released key is free at once');
      assert.equal(rb.fence, 2);
      assert.equal(rb.takeover, false);
      await h.time.advance(h.time.leaseMs + h.time.toleranceMs + 10);
      const c = acquireInput(h, key, { retentionMs: h.time.leaseMs * 4 });
      const rc = assertAcquired(await h.store.acquire(c), 'a passed lease is taken over');
      assert.equal(rc.fence, 3);
      assert.equal(rc.takeover, true);
      assert.deepEqual(
        await h.store.complete({
          key,
          owner: c.owner,
          outcome: bytes('c'),
          retentionMs: h.time.leaseMs,
        }),
        { ok: true },
      );
      await h.time.advance(h.time.leaseMs + h.time.toleranceMs + 10);
      const rd = assertAcquired(
        await h.store.acquire(acquireInput(h, key)),
        'retention passed: free again',
      );
      assert.equal(rd.fence, 4);
    },
  },
  {
    group: 'lease',
    name: 'a passed lease is taken over; the stale owner can no longer write',
    async run(h) {
      const key = h.newKey();
      const stale = acquireInput(h, key);
      assertAcquired(await h.store.acquire(stale));
      assertFound(await h.store.acquire(acquireInput(h, key)));
      await h.time.advance(h.time.leaseMs + h.time.toleranceMs + 10);
      const fresh = acquireInput(h, key, { fingerprint: 'fp-a' });
      const taken = assertAcquired(await h.store.acquire(fresh));
      assert.equal(taken.fence, 2);
      assert.equal(taken.takeover, true);
      const w = { key, owner: stale.owner, retentionMs: RETENTION_MS };
      assert.deepEqual(await h.store.complete({ ...w, outcome: bytes('stale') }), notOwner);
      assert.deepEqual(await h.store.extend({ ...w, leaseMs: 1000 }), notOwner);
      assert.deepEqual(await h.store.release(w), notOwner);
      await expectRecord(h, key, {
        status: 'in_progress',
        owner: fresh.owner,
        fence: 2,
        outcome: undefined,
      });
    },
  },
  {
    group: 'lease',
    name: 'the owner may still complete after its lease passed if nobody took over',
    async run(h) {
      const key = h.newKey();
      const input = acquireInput(h, key);
      assertAcquired(await h.store.acquire(input));
      await h.time.advance(h.time.leaseMs + h.time.toleranceMs + 10);
      assert.deepEqual(
        await h.store.complete({
          key,
          owner: input.owner,
          outcome: bytes('late'),
          retentionMs: RETENTION_MS,
        }),
        { ok: true },
      );
      await expectRecord(h, key, {
        status: 'completed',
        owner: input.owner,
        fence: 1,
        outcome: bytes('late'),
      });
    },
  },
  {
    group: 'retention',
    name: 'once its record expired, an owner can no longer complete, release or extend',
    async run(h) {
      const key = h.newKey();
      const retentionMs = h.time.leaseMs;
      const input = acquireInput(h, key, { retentionMs });
      assertAcquired(await h.store.acquire(input));
      // Past the lease and the retention after it: the record is gone for every purpose.
      await h.time.advance(h.time.leaseMs + retentionMs + h.time.toleranceMs + 10);
      const w = { key, owner: input.owner, retentionMs: RETENTION_MS };
      assert.deepEqual(await h.store.extend({ ...w, leaseMs: h.time.leaseMs }), notOwner);
      assert.deepEqual(await h.store.complete({ ...w, outcome: bytes('late') }), notOwner);
      assert.deepEqual(await h.store.release(w), notOwner);
      assert.equal(await h.store.get(key), undefined, 'nothing was revived');
      // A store that deletes lazily may still hold the item; it must be as it was.
      const raw = await h.raw(key);
      if (raw) assert.deepEqual([raw.status, raw.outcome], ['in_progress', undefined]);
    },
  },
  {
    group: 'retention',
    name: 'a completed record is returned until retention passes, then the key is free',
    async run(h) {
      const key = h.newKey();
      const input = acquireInput(h, key);
      assertAcquired(await h.store.acquire(input));
      const retentionMs = h.time.leaseMs * 2;
      await h.store.complete({ key, owner: input.owner, outcome: bytes('done'), retentionMs });
      const found = assertFound(await h.store.acquire(acquireInput(h, key)));
      assert.equal(found.record.status, 'completed');
      assertSameBytes(found.record.outcome, bytes('done'), 'the replayed outcome');
      const record = await readBoth(h, key);
      assert.ok(record);
      assert.ok(
        record.expiresAt <= found.now + retentionMs &&
          record.expiresAt >= found.now + retentionMs - 1_000,
        `expiresAt (${record.expiresAt}) is the completion time + retention (about ${found.now + retentionMs})`,
      );
      await h.time.advance(h.time.leaseMs);
      assertFound(
        await h.store.acquire(acquireInput(h, key)),
        'still replayed halfway through retention',
      );
      await h.time.advance(h.time.leaseMs + h.time.toleranceMs + 10);
      assert.equal(await h.store.get(key), undefined, 'get() hides an expired record');
      const again = assertAcquired(await h.store.acquire(acquireInput(h, key)));
      assert.equal(again.fence, 2);
    },
  },
  {
    group: 'mismatch',
    name: 'a different fingerprint is MISMATCH, checked before IN_PROGRESS and on completed records',
    async run(h) {
      const idem = createIdempotency({
        store: h.store,
        leaseMs: h.time.leaseMs,
        heartbeatMs: false,
        clock: h.time.clock,
      });
      const key = `k-${h.newKey()}`;
      const begun = await idem.begin({ key, fingerprint: 'fp-a' });
      assert.equal(begun.kind, 'acquired');
      await assert.rejects(idem.begin({ key, fingerprint: 'fp-b' }), MismatchError);
      await assert.rejects(idem.begin({ key, fingerprint: 'fp-a' }), InProgressError);
      if (begun.kind !== 'acquired') return;
      await begun.execution.complete({ meta: { n: 1 }, body: bytes('one') });
      await assert.rejects(idem.begin({ key, fingerprint: 'fp-b' }), MismatchError);
      const replay = await idem.begin({ key, fingerprint: 'fp-a' });
      assert.equal(replay.kind, 'replay');
    },
  },
  {
    group: 'outcomes',
    name: 'binary outcomes round-trip byte for byte (every byte value, empty body, trailing zero bytes)',
    async run(h) {
      const all = new Uint8Array(512).map((_, i) => i % 256);
      // Zero bytes at the end: a store that pads to blocks and trims zeros drops them.
      const bodies = [
        all,
        new Uint8Array(0),
        bytes('\u0000\r\n\u00ff{"json":true}'),
        Uint8Array.of(0x1f, 0x8b, 0, 0, 0),
        new Uint8Array(1024),
      ];
      for (const body of bodies) {
        const encoded = encodeOutcome({
          meta: { status: 200, headers: [['content-type', 'application/octet-stream']] },
          body,
        });
        const { key, outcome } = await storeOutcome(h, encoded);
        assert.equal(outcome, 'stored', 'a small outcome must be stored');
        const found = assertFound(await h.store.acquire(acquireInput(h, key)));
        assert.ok(found.record.outcome);
        assertSameBytes(found.record.outcome, encoded, 'the replayed outcome');
        assertSameBytes(decodeOutcome(found.record.outcome).body, body, 'the replayed body');
      }
    },
  },
  {
    group: 'outcomes',
    name: 'a 256 KiB random outcome round-trips, or is refused with OutcomeTooLargeError writing nothing',
    async run(h) {
      await storeOutcome(
        h,
        encodeOutcome({ meta: {}, body: new Uint8Array(randomBytes(256 * 1024)) }),
      );
    },
  },
  {
    group: 'outcomes',
    name: 'past the declared limit an outcome is refused writing nothing; with no limit (or one over 32 MiB) 4 MiB round-trips',
    async run(h) {
      const limit = h.store.capabilities.maxOutcomeBytes;
      // Random bytes do not compress, so a store that compresses cannot sneak them in.
      // A limit beyond 32 MiB is tested like none: 4 MiB must fit.
      const testable = limit !== undefined && limit <= 32 * 1024 * 1024;
      const size = testable ? limit + 1 : 4 * 1024 * 1024;
      const { outcome } = await storeOutcome(
        h,
        encodeOutcome({ meta: {}, body: new Uint8Array(randomBytes(size)) }),
      );
      assert.equal(outcome, testable ? 'refused' : 'stored');
    },
  },
  {
    group: 'isolation',
    name: 'storage keys never affect each other',
    async run(h) {
      const k1 = h.newKey();
      const k2 = h.newKey();
      const a = acquireInput(h, k1);
      const b = acquireInput(h, k2);
      assertAcquired(await h.store.acquire(a));
      assertAcquired(await h.store.acquire(b));
      // Owner of k1 writing to k2 is not the owner there.
      assert.deepEqual(
        await h.store.complete({
          key: k2,
          owner: a.owner,
          outcome: bytes('x'),
          retentionMs: RETENTION_MS,
        }),
        notOwner,
      );
      await h.store.complete({
        key: k1,
        owner: a.owner,
        outcome: bytes('one'),
        retentionMs: RETENTION_MS,
      });
      await h.store.release({ key: k2, owner: b.owner, retentionMs: RETENTION_MS });
      await expectRecord(h, k1, {
        status: 'completed',
        owner: a.owner,
        fence: 1,
        outcome: bytes('one'),
      });
      await expectRecord(h, k2, { status: 'released', owner: b.owner, fence: 1 });
      assert.equal(await readBoth(h, h.newKey()), undefined);
    },
  },
  {
    group: 'executor',
    name: 'the core executor runs once and replays the same value',
    async run(h) {
      const idem = createIdempotency<{ n: number }>({
        store: h.store,
        leaseMs: h.time.leaseMs,
        heartbeatMs: false,
        clock: h.time.clock,
      });
      let runs = 0;
      const op = async ({ fence }: { fence: number }) => ({ n: ++runs * 100 + fence });
      const first = await idem.execute({ key: 'executor-key', scope: h.newKey() }, op);
      assert.deepEqual(first, { value: { n: 101 }, replayed: false });
      const scope = h.newKey();
      await idem.execute({ key: 'k', scope }, op);
      const again = await idem.execute({ key: 'k', scope }, op);
      assert.equal(again.replayed, true);
      assert.deepEqual(again.value, { n: 201 });
      assert.equal(runs, 2);
    },
  },
  ...boundaryChecks,
  ...acquireEdgeChecks,
  ...processChecks,
  ...engineChecks,
  ...redeliveryChecks,
  ...dueDeadlineChecks,
  ...originChecks,
  ...adminChecks,
  ...adminStateChecks,
  ...adminExpectChecks,
  ...adminDeleteChecks,
  ...inputChecks,
];
