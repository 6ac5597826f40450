import assert from 'node:assert/strict';
import type { ForceReleaseExpectation } from '@idem/core';
import { adminOf, assertCutOff } from './checks-admin.js';
import {
  acquireInput,
  assertAcquired,
  bytes,
  type ContractCheck,
  RETENTION_MS,
  readBoth,
} from './checks-records.js';
import type { Harness } from './harness.js';

/** A key whose first execution's lease passed and a second took it over: both owners and fences. */
export async function takenOver(h: Harness, key: string) {
  const first = acquireInput(h, key);
  const won = assertAcquired(await h.store.acquire(first));
  await h.time.advance(h.time.leaseMs + 50);
  const second = acquireInput(h, key);
  const over = assertAcquired(await h.store.acquire(second), 'the takeover');
  assert.equal(over.takeover, true);
  return {
    first: { owner: first.owner, fence: won.fence },
    second: { owner: second.owner, fence: over.fence },
  };
}

/**
 * Owners a store may not be able to hold (U+0000, a character outside the Basic Multilingual
 * Plane, past its longest owner), each another execution than `owner`'s: an expectation
 * naming one is answered `changed`, never a store error.
 */
export const unholdableOwners = (owner: string) =>
  [`${owner}\0`, `${owner}\u{1F600}`, owner.padEnd(5_000, 'x')].map((o) => ({ owner: o }));

/**
 * Each stale expectation, given to `act` (an operator write of the record at `key`), answers
 * `answer` and leaves the record as it was (read through both channels).
 */
export async function assertEachLeftAsItIs<E>(
  h: Harness,
  key: string,
  stale: E[],
  act: (expected: E) => Promise<unknown>,
  answer: unknown,
  what: string,
): Promise<void> {
  const before = await readBoth(h, key);
  for (const expected of stale) {
    assert.deepEqual(await act(expected), answer, `${what}(key, ${JSON.stringify(expected)})`);
    assert.deepEqual(await readBoth(h, key), before, 'the record is left as it is');
  }
}

/** The retry that took `key` over still holds it (owner, fence) and completes. */
export async function assertRetryCompletes(
  h: Harness,
  key: string,
  owner: string,
  fence: number,
): Promise<void> {
  const record = await readBoth(h, key);
  assert.equal(record?.status, 'in_progress', 'the retry still runs');
  assert.equal(record?.owner, owner);
  assert.equal(record?.fence, fence);
  const write = { key, owner, retentionMs: RETENTION_MS };
  assert.deepEqual(await h.store.complete({ ...write, outcome: bytes('ok') }), { ok: true });
}

/** forceRelease limited to the execution the operator inspected (`ForceReleaseExpectation`). */
export const adminExpectChecks: ContractCheck[] = [
  {
    group: 'admin',
    name: 'forceRelease with the owner and/or fence inspect showed releases that execution',
    async run(h) {
      const admin = adminOf(h);
      const pick: ((seen: { owner: string; fence: number }) => ForceReleaseExpectation)[] = [
        ({ owner, fence }) => ({ owner, fence }),
        ({ owner }) => ({ owner }),
        ({ fence }) => ({ fence }),
      ];
      for (const expectation of pick) {
        const key = h.newKey();
        const stuck = acquireInput(h, key);
        const { fence } = assertAcquired(await h.store.acquire(stuck));
        const seen = await admin.inspect(key);
        assert.ok(seen, 'inspect finds the in-progress record');
        const expected = expectation(seen);
        assert.deepEqual(
          await admin.forceRelease(key, expected),
          { ok: true, fence: fence + 1, previousOwner: stuck.owner },
          `forceRelease(key, ${JSON.stringify(expected)})`,
        );
        const record = await readBoth(h, key);
        assert.equal(record?.status, 'released', 'the record is a released tombstone');
        assert.equal(record?.fence, fence + 1);
        await assertCutOff(h, key, stuck.owner);
      }
    },
  },
  {
    group: 'admin',
    name: 'forceRelease expecting an execution that was taken over answers changed with the current owner and fence, and leaves the new execution running',
    async run(h) {
      const admin = adminOf(h);
      const key = h.newKey();
      const { first, second } = await takenOver(h, key);
      const stale: ForceReleaseExpectation[] = [
        first,
        { owner: first.owner },
        { fence: first.fence },
        // Both must hold: one of the two is not enough.
        { owner: second.owner, fence: first.fence },
        { owner: first.owner, fence: second.fence },
        ...unholdableOwners(second.owner),
      ];
      const changed = { ok: false, reason: 'changed', ...second };
      const release = (expected: ForceReleaseExpectation) => admin.forceRelease(key, expected);
      await assertEachLeftAsItIs(h, key, stale, release, changed, 'forceRelease');
      const write = { key, owner: second.owner, retentionMs: RETENTION_MS };
      assert.deepEqual(
        await h.store.complete({ ...write, outcome: bytes('done') }),
        { ok: true },
        'the execution that took the key over still completes',
      );
      assert.deepEqual(
        await admin.forceRelease(key, second),
        { ok: false, reason: 'not_in_progress' },
        'a completed record: not_in_progress, expectation or not',
      );
      assert.deepEqual(await admin.forceRelease(h.newKey(), first), {
        ok: false,
        reason: 'not_found',
      });
    },
  },
  {
    group: 'admin',
    name: 'forceRelease expecting the lapsed execution, racing the takeover: the execution that took the key over is never released',
    async run(h) {
      const admin = adminOf(h);
      const rounds = Array.from({ length: 8 }, () => ({ key: h.newKey() }));
      const lapsed = await Promise.all(
        rounds.map(async ({ key }) => {
          const input = acquireInput(h, key);
          const { fence } = assertAcquired(await h.store.acquire(input));
          return { key, owner: input.owner, fence };
        }),
      );
      await h.time.advance(h.time.leaseMs + 50);
      for (const gone of lapsed) {
        const { key } = gone;
        const retry = acquireInput(h, key);
        const [taken, forced] = await Promise.all([
          h.store.acquire(retry),
          admin.forceRelease(key, { owner: gone.owner, fence: gone.fence }),
        ]);
        const won = assertAcquired(taken, 'the retry takes the key, before or after the release');
        if (forced.ok) {
          assert.equal(forced.previousOwner, gone.owner, 'only the lapsed execution is released');
        } else {
          assert.deepEqual(forced, {
            ok: false,
            reason: 'changed',
            owner: retry.owner,
            fence: won.fence,
          });
        }
        await assertRetryCompletes(h, key, retry.owner, won.fence);
        await assertCutOff(h, key, gone.owner);
      }
    },
  },
];
