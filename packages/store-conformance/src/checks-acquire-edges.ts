import assert from 'node:assert/strict';
import {
  acquireInput,
  assertAcquired,
  assertFound,
  bytes,
  type ContractCheck,
  expectRecord,
  readBoth,
} from './checks-records.js';
import type { Harness } from './harness.js';

/** The retention of the lease check: shorter than any lease (core's smallest is 1 ms). */
const SHORT_RETENTION_MS = 1;

/**
 * Lets time pass to just before the end of a lease acquired just now: its last millisecond,
 * or with a clock of the store's own as close as the tolerance allows.
 */
async function toLeaseEnd(h: Harness, leaseUntil: number): Promise<void> {
  if (h.time.kind === 'injectable') await h.time.advance(leaseUntil - 1 - h.time.clock.now());
  else await h.time.advance(h.time.leaseMs - 2 * h.time.toleranceMs);
}

/** Checks of what an acquisition must find free, and how long a record must live. */
export const acquireEdgeChecks: ContractCheck[] = [
  {
    group: 'lease',
    name: 'a retention shorter than the lease never shortens it: the record lives to leaseUntil + retention, after an acquire and after an extend past the first lease and its retention',
    async run(h) {
      const short = { retentionMs: SHORT_RETENTION_MS };
      const key = h.newKey();
      const first = acquireInput(h, key, short);
      const acquired = assertAcquired(await h.store.acquire(first));
      const record = await readBoth(h, key);
      assert.ok(
        record && record.expiresAt >= record.leaseUntil + SHORT_RETENTION_MS - h.time.toleranceMs,
        `the record outlives its lease by the retention (${JSON.stringify(record)})`,
      );
      await toLeaseEnd(h, acquired.leaseUntil);
      const found = assertFound(
        await h.store.acquire(acquireInput(h, key)),
        `a lease with a retention of ${SHORT_RETENTION_MS} ms protects the key until its end`,
      );
      assert.equal(found.record.owner, first.owner);

      // An extend: the record lives to its new lease's end plus the retention, not the first's.
      const key2 = h.newKey();
      const second = acquireInput(h, key2, short);
      const held = assertAcquired(await h.store.acquire(second));
      await h.time.advance(h.time.leaseMs / 2);
      const extended = await h.store.extend({
        key: key2,
        owner: second.owner,
        leaseMs: h.time.leaseMs,
        ...short,
      });
      assert.equal(extended.ok, true, "the owner's extend");
      const renewed = await readBoth(h, key2);
      assert.ok(renewed && renewed.leaseUntil > held.leaseUntil, 'the extend moved the lease');
      assert.ok(
        renewed.expiresAt >= renewed.leaseUntil + SHORT_RETENTION_MS - h.time.toleranceMs,
        `the extended record outlives its new lease by the retention (${JSON.stringify(renewed)})`,
      );
      // Past the first lease and its retention, inside the extended lease.
      await h.time.advance(h.time.leaseMs * 0.6);
      assertFound(
        await h.store.acquire(acquireInput(h, key2)),
        'the extended lease protects the key past the first lease and its retention',
      );
      await expectRecord(h, key2, { status: 'in_progress', owner: second.owner, fence: 1 });
    },
  },
  {
    group: 'mismatch',
    name: 'the store never compares fingerprints: a released tombstone, a passed lease and an expired completed record are acquired by a request with another fingerprint',
    async run(h) {
      const other = { fingerprint: 'fp-other' };
      const released = h.newKey();
      const a = acquireInput(h, released);
      const ra = assertAcquired(await h.store.acquire(a));
      assert.deepEqual(
        await h.store.release({ key: released, owner: a.owner, retentionMs: 3_600_000 }),
        { ok: true },
      );
      const b = acquireInput(h, released, other);
      const rb = assertAcquired(
        await h.store.acquire(b),
        'a released key is free for a request with another fingerprint',
      );
      assert.equal(rb.fence, ra.fence + 1);
      assert.equal(rb.takeover, false);
      const passed = h.newKey();
      const c = acquireInput(h, passed);
      const rc = assertAcquired(await h.store.acquire(c));
      const expired = h.newKey();
      const d = acquireInput(h, expired);
      const rd = assertAcquired(await h.store.acquire(d));
      assert.deepEqual(
        await h.store.complete({
          key: expired,
          owner: d.owner,
          outcome: bytes('done'),
          retentionMs: h.time.leaseMs,
        }),
        { ok: true },
      );
      await h.time.advance(h.time.leaseMs + h.time.toleranceMs + 10);
      const e = acquireInput(h, passed, other);
      const re = assertAcquired(
        await h.store.acquire(e),
        'a passed lease is taken over by a request with another fingerprint',
      );
      assert.equal(re.fence, rc.fence + 1);
      assert.equal(re.takeover, true);
      const f = acquireInput(h, expired, other);
      const rf = assertAcquired(
        await h.store.acquire(f),
        'an expired completed record frees the key for a request with another fingerprint',
      );
      assert.ok(
        rf.fence > rd.fence,
        `the fence after the completed record expired: ${rf.fence}, expected > ${rd.fence}`,
      );
      for (const [key, input, fence] of [
        [released, b, rb.fence],
        [passed, e, re.fence],
        [expired, f, rf.fence],
      ] as const) {
        const record = await expectRecord(h, key, {
          status: 'in_progress',
          owner: input.owner,
          fence,
        });
        assert.equal(record.fingerprint, other.fingerprint, 'the new fingerprint is stored');
      }
    },
  },
];
