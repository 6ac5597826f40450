import assert from 'node:assert/strict';
import {
  createIdempotency,
  deriveStorageKey,
  isIdemError,
  ManualClock,
  type NotRecordedReason,
} from '@idem/core';
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

/**
 * Longest storage key and owner token a store may accept, in UTF-16 code units (store
 * contract, "Bad input"). Core's keys are 64 characters and its owners 36; each store's own
 * limit lies between (memory 1024, Redis 1024, PostgreSQL 512 with the prefix and 256 for an
 * owner, DynamoDB 1024 UTF-8 bytes).
 */
export const MAX_ACCEPTED_STRING_LENGTH = 4_096;

/**
 * Strings past the bound: one code unit over it; one of astral characters, 4098 code units but
 * 2049 code points (a limit counted in characters, as PostgreSQL's varchar counts, would take
 * it); and 2 MiB (the review's case).
 */
const OVERSIZED = [
  'k'.repeat(MAX_ACCEPTED_STRING_LENGTH + 1),
  '\u{1F600}'.repeat(MAX_ACCEPTED_STRING_LENGTH / 2 + 1),
  'k'.repeat(2 * 1024 * 1024),
];

/** Expects `call` to fail with `INVALID_INPUT` (thrown or rejected), before anything is written. */
async function expectInvalid(call: () => unknown, what: string): Promise<void> {
  await assert.rejects(
    async () => call(),
    (error: unknown) => {
      assert.ok(
        isIdemError(error) && error.code === 'INVALID_INPUT',
        `${what}: expected InvalidInputError (code INVALID_INPUT), got ${String(error)}`,
      );
      return true;
    },
    `${what}: expected InvalidInputError, the call succeeded`,
  );
}

/** Integer deadlines; with the injectable clock, exactly `now + ceil(duration)`. */
function assertWholeMs(value: number, what: string, expected?: number): void {
  assert.ok(Number.isInteger(value), `${what} must be a whole ms, got ${value}`);
  if (expected !== undefined) assert.equal(value, expected, `${what}: durations rounded up`);
}

const exactNow = (h: Harness): number | undefined =>
  h.time.kind === 'injectable' ? h.time.clock.now() : undefined;

/** Bad input handed to the store interface directly, as a user or a contributed adapter can. */
export const inputChecks: ContractCheck[] = [
  {
    group: 'bad input',
    name: `a storage key or owner longer than ${MAX_ACCEPTED_STRING_LENGTH} UTF-16 code units (and one of 2 MiB) is refused with InvalidInputError by acquire, complete, release and extend, writing nothing`,
    async run(h) {
      const key = h.newKey();
      const held = acquireInput(h, key);
      assertAcquired(await h.store.acquire(held));
      const retentionMs = RETENTION_MS;
      for (const long of OVERSIZED) {
        const length = long.length;
        const what = (call: string, field: string) => `${call} with a ${length}-unit ${field}`;
        await expectInvalid(
          () => h.store.acquire(acquireInput(h, long)),
          what('acquire', 'storage key'),
        );
        await expectInvalid(
          () => h.store.acquire(acquireInput(h, key, { owner: long })),
          what('acquire', 'owner'),
        );
        for (const [field, input] of [
          ['storage key', { key: long, owner: held.owner }],
          ['owner', { key, owner: long }],
        ] as const) {
          await expectInvalid(
            () => h.store.complete({ ...input, outcome: bytes('x'), retentionMs }),
            what('complete', field),
          );
          await expectInvalid(
            () => h.store.release({ ...input, retentionMs }),
            what('release', field),
          );
          await expectInvalid(
            () => h.store.extend({ ...input, leaseMs: h.time.leaseMs, retentionMs }),
            what('extend', field),
          );
        }
      }
      // The held record is untouched, and its owner still completes it.
      await expectRecord(h, key, { status: 'in_progress', owner: held.owner, fence: 1 });
      const outcome = bytes('done');
      const done = await h.store.complete({ key, owner: held.owner, outcome, retentionMs });
      assert.deepEqual(done, { ok: true });
      await expectRecord(h, key, { status: 'completed', owner: held.owner, fence: 1, outcome });
    },
  },
  {
    group: 'bad input',
    name: 'fractional durations are rounded up to whole ms: acquire (a redelivered one and a takeover too), extend, complete and release store integer deadlines',
    async run(h) {
      const key = h.newKey();
      const leaseMs = h.time.leaseMs + 0.25;
      const input = acquireInput(h, key, { leaseMs, retentionMs: RETENTION_MS + 0.5 });
      const at = exactNow(h);
      const acquired = assertAcquired(await h.store.acquire(input));
      const lease = at === undefined ? undefined : at + h.time.leaseMs + 1;
      assertWholeMs(acquired.leaseUntil, 'acquire: leaseUntil', lease);
      let record = await readBoth(h, key);
      assert.ok(record, 'the acquired record');
      assertWholeMs(record.leaseUntil, 'acquire: stored leaseUntil', lease);
      assertWholeMs(record.expiresAt, 'acquire: expiresAt', record.leaseUntil + RETENTION_MS + 1);

      // A redelivered acquire (same owner) renews the lease by its own path: rounded too.
      const again = assertAcquired(await h.store.acquire(input));
      const at1 = exactNow(h);
      const relet = at1 === undefined ? undefined : at1 + h.time.leaseMs + 1;
      assertWholeMs(again.leaseUntil, 'redelivered acquire: leaseUntil', relet);
      record = await readBoth(h, key);
      assert.ok(record, 'the re-acquired record');
      assertWholeMs(record.leaseUntil, 'redelivered acquire: stored leaseUntil', relet);
      assertWholeMs(record.expiresAt, 'redelivered acquire: expiresAt');

      // A retention under 1 ms is 1 ms, not 0.
      const extended = await h.store.extend({
        key,
        owner: input.owner,
        leaseMs: h.time.leaseMs + 1.5,
        retentionMs: 0.25,
      });
      assert.equal(extended.ok, true, 'extend by the owner');
      if (extended.ok && extended.leaseUntil !== undefined)
        assertWholeMs(extended.leaseUntil, 'extend: answered leaseUntil');
      record = await readBoth(h, key);
      assert.ok(record, 'the extended record');
      const at2 = exactNow(h);
      assertWholeMs(
        record.leaseUntil,
        'extend: leaseUntil',
        at2 === undefined ? undefined : at2 + h.time.leaseMs + 2,
      );
      assertWholeMs(record.expiresAt, 'extend: expiresAt');
      assert.ok(record.expiresAt >= record.leaseUntil + 1, 'extend: retention 0.25 ms is 1 ms');

      const outcome = bytes('done');
      const retentionMs = RETENTION_MS + 0.125;
      const at3 = exactNow(h);
      assert.deepEqual(await h.store.complete({ key, owner: input.owner, outcome, retentionMs }), {
        ok: true,
      });
      record = await expectRecord(h, key, {
        status: 'completed',
        owner: input.owner,
        fence: 1,
        outcome,
      });
      assertWholeMs(
        record.expiresAt,
        'complete: expiresAt',
        at3 === undefined ? undefined : at3 + RETENTION_MS + 1,
      );

      const other = h.newKey();
      const released = acquireInput(h, other);
      assertAcquired(await h.store.acquire(released));

      // A takeover of a lapsed lease writes the new owner's deadlines by its own path.
      const lapsed = h.newKey();
      assertAcquired(await h.store.acquire(acquireInput(h, lapsed)));
      await h.time.advance(h.time.leaseMs + h.time.toleranceMs + 10);
      const taker = acquireInput(h, lapsed, { leaseMs, retentionMs: RETENTION_MS + 0.5 });
      const at5 = exactNow(h);
      const taken = assertAcquired(await h.store.acquire(taker));
      assert.equal(taken.takeover, true, 'takeover: the lapsed lease is taken over');
      const retaken = at5 === undefined ? undefined : at5 + h.time.leaseMs + 1;
      assertWholeMs(taken.leaseUntil, 'takeover: leaseUntil', retaken);
      record = await readBoth(h, lapsed);
      assert.ok(record, 'the taken-over record');
      assertWholeMs(record.leaseUntil, 'takeover: stored leaseUntil', retaken);
      assertWholeMs(record.expiresAt, 'takeover: expiresAt', record.leaseUntil + RETENTION_MS + 1);
      const at4 = exactNow(h);
      const release = { key: other, owner: released.owner, retentionMs };
      assert.deepEqual(await h.store.release(release), { ok: true });
      record = await expectRecord(h, other, {
        status: 'released',
        owner: released.owner,
        fence: 1,
      });
      assertWholeMs(
        record.expiresAt,
        'release: expiresAt',
        at4 === undefined ? undefined : at4 + RETENTION_MS + 1,
      );
    },
  },
  {
    group: 'bad input',
    name: "completeNotRecorded with an unknown reason ('bogus') is refused with InvalidInputError, writing nothing: the key stays in progress and its owner still completes it",
    async run(h) {
      const idem = createIdempotency<string>({
        store: h.store,
        leaseMs: h.time.leaseMs,
        heartbeatMs: false,
        clock: h.time.clock,
      });
      const scope = h.newKey();
      const begun = await idem.begin({ key: 'k', scope });
      assert.equal(begun.kind, 'acquired');
      if (begun.kind !== 'acquired') return;
      const storageKey = deriveStorageKey(scope, 'k');
      const before = await h.raw(storageKey);
      await expectInvalid(
        () => begun.execution.completeNotRecorded('bogus' as NotRecordedReason),
        "completeNotRecorded('bogus')",
      );
      const after = await h.raw(storageKey);
      assert.equal(after?.status, 'in_progress', 'nothing written: still in progress');
      assert.equal(after?.owner, before?.owner, 'nothing written: the same owner');
      assert.equal(after?.outcome, undefined, 'nothing written: no outcome');
      // The execution is not spent by the refusal: its owner completes the key as usual.
      await begun.execution.complete({ meta: {}, body: bytes('done') });
      assert.equal((await h.raw(storageKey))?.status, 'completed');
    },
  },
  {
    group: 'bad input',
    name: 'a clock reading fractional ms: every deadline written is a whole ms (an engine on such a clock, and an injectable store clock read at a fraction), and a lease is judged by its stored deadline: live half a ms before it, taken over at it',
    async run(h) {
      // An engine whose own clock has a fraction (every store: the store keeps whole ms).
      const fractional = { now: () => h.time.clock.now() + 0.375 };
      const idem = createIdempotency<string>({
        store: h.store,
        leaseMs: h.time.leaseMs,
        heartbeatMs: false,
        clock: fractional,
      });
      const scope = h.newKey();
      assert.deepEqual(await idem.execute({ key: 'k', scope }, async () => 'done'), {
        value: 'done',
        replayed: false,
      });
      const recorded = await readBoth(h, deriveStorageKey(scope, 'k'));
      assert.ok(recorded, 'the recorded outcome');
      assertWholeMs(recorded.leaseUntil, 'engine on a fractional clock: leaseUntil');
      assertWholeMs(recorded.expiresAt, 'engine on a fractional clock: expiresAt');
      if (h.time.kind !== 'injectable' || !(h.time.clock instanceof ManualClock)) return;
      const clock = h.time.clock as ManualClock;

      // The store's own clock reads a fraction: read as whole ms, rounded down (as Date.now).
      clock.set(Math.floor(clock.now()) + 1.6);
      const key = h.newKey();
      const first = acquireInput(h, key);
      const acquired = assertAcquired(await h.store.acquire(first));
      const lease = Math.floor(clock.now()) + h.time.leaseMs;
      assertWholeMs(acquired.leaseUntil, 'acquire at a fractional reading: leaseUntil', lease);
      let record = await readBoth(h, key);
      assert.ok(record, 'the acquired record');
      assertWholeMs(record.leaseUntil, 'acquire: stored leaseUntil', lease);
      assertWholeMs(record.expiresAt, 'acquire: expiresAt', lease + RETENTION_MS);

      clock.advance(1.3);
      const renewed = Math.floor(clock.now()) + h.time.leaseMs;
      const extended = await h.store.extend({
        key,
        owner: first.owner,
        leaseMs: h.time.leaseMs,
        retentionMs: RETENTION_MS,
      });
      assert.equal(extended.ok, true, 'extend by the owner');
      if (extended.ok && extended.leaseUntil !== undefined)
        assertWholeMs(extended.leaseUntil, 'extend: answered leaseUntil', renewed);
      record = await readBoth(h, key);
      assert.ok(record, 'the extended record');
      assertWholeMs(record.leaseUntil, 'extend: leaseUntil', renewed);
      assertWholeMs(record.expiresAt, 'extend: expiresAt');

      // Judged by the stored deadline: live just before it, free at it.
      clock.set(record.leaseUntil - 0.5);
      const taker = acquireInput(h, key);
      assertFound(await h.store.acquire(taker), 'half a ms before its deadline the lease is live');
      clock.set(record.leaseUntil);
      const taken = assertAcquired(await h.store.acquire(taker), 'taken over at its deadline');
      assert.equal(taken.takeover, true, 'a takeover');
      assertWholeMs(taken.leaseUntil, 'takeover: leaseUntil');

      clock.advance(0.75);
      const done = Math.floor(clock.now()) + RETENTION_MS;
      const outcome = bytes('done');
      const completed = await h.store.complete({
        key,
        owner: taker.owner,
        outcome,
        retentionMs: RETENTION_MS,
      });
      assert.deepEqual(completed, { ok: true });
      record = await expectRecord(h, key, {
        status: 'completed',
        owner: taker.owner,
        fence: 2,
        outcome,
      });
      assertWholeMs(record.expiresAt, 'complete: expiresAt', done);

      const other = h.newKey();
      const held = acquireInput(h, other);
      assertAcquired(await h.store.acquire(held));
      clock.advance(0.25);
      assert.deepEqual(
        await h.store.release({ key: other, owner: held.owner, retentionMs: RETENTION_MS }),
        { ok: true },
      );
      record = await readBoth(h, other);
      assert.equal(record?.status, 'released', 'release by the owner');
      assert.ok(record);
      assertWholeMs(record.leaseUntil, 'release: leaseUntil');
      assertWholeMs(record.expiresAt, 'release: expiresAt');
    },
  },
];
