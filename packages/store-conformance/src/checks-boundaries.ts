import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { encodeOutcome, StoreFullError } from '@idem/core';
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
 * The outcome the at-the-limit check stores for a store that declares no limit, or one above
 * {@link TESTED_LIMIT_MAX_BYTES}: slow stores stay fast.
 */
export const AT_LIMIT_MAX_BYTES = 8 * 1024 * 1024;

/**
 * The largest declared limit the at-the-limit check stores an outcome of (as the past-the-limit
 * check, which tests a larger one like none): a store declaring 16 MiB must take 16 MiB.
 */
export const TESTED_LIMIT_MAX_BYTES = 32 * 1024 * 1024;

/** Keys the capacity check completes when the options declare no `capacity`. */
export const UNBOUNDED_CAPACITY_KEYS = 24;

/**
 * An encoded outcome of exactly `size` bytes whose body is a random 1 KiB block repeated: it
 * compresses well (a store may compress and declare the limit of what it tries), and a store
 * that truncates, reorders or zeroes part of it still fails.
 */
function outcomeOfSize(size: number): Uint8Array {
  const overhead = encodeOutcome({ meta: {}, body: new Uint8Array(0) }).length;
  const body = new Uint8Array(Math.max(0, size - overhead));
  const block = randomBytes(1024);
  for (let at = 0; at < body.length; at += block.length)
    body.set(block.subarray(0, body.length - at), at);
  const encoded = encodeOutcome({ meta: {}, body });
  assert.equal(encoded.length, size, 'test outcome size');
  return encoded;
}

/** Acquires with another owner and expects the completed record's outcome, byte for byte. */
async function expectReplay(h: Harness, key: string, outcome: Uint8Array, what: string) {
  const found = assertFound(await h.store.acquire(acquireInput(h, key)), `${what}: replayed`);
  assert.equal(found.record.status, 'completed', `${what}: status`);
  assertSameBytes(found.record.outcome, outcome, what);
  return found;
}

/** Checks at the edges: a lease's last moment, fences after abandoned records, copies, limits. */
export const boundaryChecks: ContractCheck[] = [
  {
    group: 'lease',
    name: 'a lease is live until its end: another owner finds it in progress just before leaseUntil, takes over just after',
    async run(h) {
      const key = h.newKey();
      const first = acquireInput(h, key);
      const acquired = assertAcquired(await h.store.acquire(first));
      if (h.time.kind === 'injectable') {
        // The last millisecond of the lease.
        await h.time.advance(acquired.leaseUntil - 1 - h.time.clock.now());
      } else {
        // A clock of its own: as close to the end as the tolerance allows.
        await h.time.advance(h.time.leaseMs - 2 * h.time.toleranceMs);
      }
      const found = assertFound(
        await h.store.acquire(acquireInput(h, key)),
        'a live lease protects the key until its end',
      );
      assert.equal(found.record.owner, first.owner);
      assert.equal(found.record.status, 'in_progress');
      await expectRecord(h, key, { status: 'in_progress', owner: first.owner, fence: 1 });
      await h.time.advance(h.time.kind === 'injectable' ? 2 : 3 * h.time.toleranceMs + 10);
      const fresh = acquireInput(h, key);
      const taken = assertAcquired(await h.store.acquire(fresh), 'a passed lease is taken over');
      assert.equal(taken.fence, 2);
      assert.equal(taken.takeover, true);
      await expectRecord(h, key, { status: 'in_progress', owner: fresh.owner, fence: 2 });
    },
  },
  {
    group: 'fence',
    name: 'the fence keeps growing after an abandoned in-progress record and a released tombstone passed their retention',
    async run(h) {
      const key = h.newKey();
      const short = { retentionMs: h.time.leaseMs };
      const a = acquireInput(h, key, short);
      assert.equal(assertAcquired(await h.store.acquire(a)).fence, 1);
      assert.deepEqual(await h.store.release({ key, owner: a.owner, ...short }), { ok: true });
      const b = acquireInput(h, key, short);
      assert.equal(assertAcquired(await h.store.acquire(b)).fence, 2);
      // b never completes: past its lease and the retention after it, the record is gone.
      await h.time.advance(2 * h.time.leaseMs + h.time.toleranceMs + 10);
      const c = acquireInput(h, key, short);
      const rc = assertAcquired(await h.store.acquire(c), 'an expired record frees the key');
      assert.ok(rc.fence > 2, `fence after an abandoned record expired: ${rc.fence}, expected > 2`);
      assert.deepEqual(await h.store.release({ key, owner: c.owner, ...short }), { ok: true });
      // The released tombstone passes its retention.
      await h.time.advance(h.time.leaseMs + h.time.toleranceMs + 10);
      const rd = assertAcquired(await h.store.acquire(acquireInput(h, key)));
      assert.ok(
        rd.fence > rc.fence,
        `fence after a released tombstone expired: ${rd.fence}, expected > ${rc.fence}`,
      );
    },
  },
  {
    group: 'owner checks',
    name: "after its owner released a record, that owner's complete and extend are not_owner and leave the tombstone unchanged",
    async run(h) {
      const key = h.newKey();
      const input = acquireInput(h, key);
      assertAcquired(await h.store.acquire(input));
      const w = { key, owner: input.owner, retentionMs: RETENTION_MS };
      assert.deepEqual(await h.store.release(w), { ok: true });
      const before = await expectRecord(h, key, {
        status: 'released',
        owner: input.owner,
        fence: 1,
        outcome: undefined,
      });
      assert.deepEqual(await h.store.complete({ ...w, outcome: bytes('late') }), notOwner);
      assert.deepEqual(await h.store.extend({ ...w, leaseMs: h.time.leaseMs }), notOwner);
      const after = await expectRecord(h, key, {
        status: 'released',
        owner: input.owner,
        fence: 1,
        outcome: undefined,
      });
      assert.equal(after.leaseUntil, before.leaseUntil, 'leaseUntil unchanged');
      assert.equal(after.expiresAt, before.expiresAt, 'expiresAt unchanged');
      // The owner's own release delivered again may answer ok; either way nothing revives.
      const again = await h.store.release(w);
      assert.ok(
        again.ok === true || (again.ok === false && again.reason === 'not_owner'),
        `a repeated release answers ok or not_owner, got ${JSON.stringify(again)}`,
      );
      await expectRecord(h, key, { status: 'released', owner: input.owner, fence: 1 });
      const next = assertAcquired(await h.store.acquire(acquireInput(h, key)));
      assert.equal(next.fence, 2);
    },
  },
  {
    group: 'outcomes',
    name: "the store keeps its own copy of an outcome: overwriting the caller's buffer or a replayed array changes no later replay",
    async run(h) {
      const key = h.newKey();
      const input = acquireInput(h, key);
      assertAcquired(await h.store.acquire(input));
      const original = encodeOutcome({
        meta: { status: 200 },
        body: new Uint8Array(randomBytes(300)),
      });
      const buffer = original.slice();
      assert.deepEqual(
        await h.store.complete({
          key,
          owner: input.owner,
          outcome: buffer,
          retentionMs: RETENTION_MS,
        }),
        { ok: true },
      );
      buffer.fill(0);
      const found = await expectReplay(
        h,
        key,
        original,
        'replay after the caller reused its buffer',
      );
      found.record.outcome?.fill(1);
      await expectReplay(h, key, original, 'replay after a reader overwrote its copy');
      const got = await readBoth(h, key);
      got?.outcome?.fill(2);
      await expectReplay(h, key, original, 'replay after a get() reader overwrote its copy');
      assertSameBytes((await h.store.get(key))?.outcome, original, 'get() after the overwrites');
    },
  },
  {
    group: 'outcomes',
    name: 'an outcome of exactly the declared limit (up to 32 MiB; 8 MiB when the limit is larger or none) round-trips, on the replay path too',
    async run(h) {
      const limit = h.store.capabilities.maxOutcomeBytes;
      const size =
        limit !== undefined && limit <= TESTED_LIMIT_MAX_BYTES ? limit : AT_LIMIT_MAX_BYTES;
      const encoded = outcomeOfSize(size);
      const key = h.newKey();
      const input = acquireInput(h, key);
      assertAcquired(await h.store.acquire(input));
      assert.deepEqual(
        await h.store.complete({
          key,
          owner: input.owner,
          outcome: encoded,
          retentionMs: RETENTION_MS,
        }),
        { ok: true },
        `an outcome of ${size} bytes (declared limit ${limit ?? 'none'}) must be stored`,
      );
      await expectRecord(h, key, {
        status: 'completed',
        owner: input.owner,
        fence: 1,
        outcome: encoded,
      });
      await expectReplay(h, key, encoded, 'the replayed outcome at the limit');
    },
  },
  {
    group: 'capacity',
    name: 'a bounded store never drops a completed record inside its retention: it refuses a new key with StoreFullError instead',
    async run(h) {
      const n = h.capacity !== undefined ? h.capacity + 4 : UNBOUNDED_CAPACITY_KEYS;
      const done: { key: string; outcome: Uint8Array }[] = [];
      let full = false;
      for (let i = 0; i < n; i++) {
        const key = h.newKey();
        const input = acquireInput(h, key);
        let result: Awaited<ReturnType<typeof h.store.acquire>>;
        try {
          result = await h.store.acquire(input);
        } catch (error) {
          if (!(error instanceof StoreFullError)) throw error;
          full = true;
          assert.equal(await h.store.get(key), undefined, 'a refused acquire writes nothing');
          break;
        }
        assertAcquired(result);
        const outcome = bytes(`outcome ${i} of ${key}`);
        assert.deepEqual(
          await h.store.complete({ key, owner: input.owner, outcome, retentionMs: RETENTION_MS }),
          { ok: true },
        );
        done.push({ key, outcome });
      }
      for (const [i, { key, outcome }] of done.entries())
        await expectReplay(h, key, outcome, `completed record ${i + 1} of ${done.length}`);
      if (h.capacity !== undefined)
        assert.ok(
          full,
          `a store declared to hold ${h.capacity} records took ${done.length} completed ones without StoreFullError`,
        );
    },
  },
];
