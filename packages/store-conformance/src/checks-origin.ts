import assert from 'node:assert/strict';
import { type AcquireResult, createIdempotency } from '@idem/core';
import { adminOf } from './checks-admin.js';
import {
  acquireInput,
  assertAcquired,
  assertFound,
  bytes,
  type ContractCheck,
  RETENTION_MS,
} from './checks-records.js';
import type { Harness } from './harness.js';

type Acquired = Extract<AcquireResult, { kind: 'acquired' }>;

/** The acquisition's origin, checked to be a non-empty string. */
function originOf(result: Acquired, what: string): string {
  assert.equal(
    typeof result.origin,
    'string',
    `${what}: an acquired answer must carry the record's origin (got ${JSON.stringify(result)})`,
  );
  assert.ok(result.origin.length > 0, `${what}: the origin is a non-empty string`);
  return result.origin;
}

/** Past a lease and the retention after it (`retentionMs`), by the store's clock. */
const pastRetention = (h: Harness, retentionMs: number) =>
  h.time.advance(h.time.leaseMs + retentionMs + h.time.toleranceMs + 10);

/**
 * The origin of a record (contract `IdempotencyStore.acquire`, "Origin"): every execution of
 * one logical request carries the owner token of the acquisition that began it, and a key
 * used again after its record expired begins a new one. Core names the request by it
 * (`originId`), so a store that loses it (a takeover answering the taker's own token) makes
 * an application bill or write twice, and one that keeps it past retention makes a new
 * request overwrite an old one's.
 */
export const originChecks: ContractCheck[] = [
  {
    group: 'origin',
    name: "a free key's acquisition begins a logical request: its origin is its own owner; a redelivery answers the same",
    async run(h) {
      const key = h.newKey();
      const input = acquireInput(h, key);
      const first = assertAcquired(await h.store.acquire(input));
      assert.equal(originOf(first, 'first acquisition'), input.owner, 'a free key: origin = owner');
      const again = assertAcquired(await h.store.acquire(input), 'a redelivered acquire');
      assert.equal(originOf(again, 'redelivery'), input.owner, 'a redelivery keeps the origin');
      // Another key's origin is its own.
      const other = acquireInput(h, h.newKey());
      const otherResult = assertAcquired(await h.store.acquire(other));
      assert.equal(originOf(otherResult, 'another key'), other.owner);
    },
  },
  {
    group: 'origin',
    name: 'a retry after a release and a takeover after a passed lease continue the origin; a redelivered takeover keeps it',
    async run(h) {
      const key = h.newKey();
      const a = acquireInput(h, key);
      const ra = assertAcquired(await h.store.acquire(a));
      assert.equal(originOf(ra, 'a'), a.owner);
      assert.deepEqual(await h.store.release({ key, owner: a.owner, retentionMs: RETENTION_MS }), {
        ok: true,
      });
      const b = acquireInput(h, key);
      const rb = assertAcquired(await h.store.acquire(b), 'a released key is free at once');
      assert.equal(
        originOf(rb, 'after a release'),
        a.owner,
        'the acquisition of a live released tombstone continues its logical request',
      );
      await h.time.advance(h.time.leaseMs + h.time.toleranceMs + 10);
      const c = acquireInput(h, key);
      const rc = assertAcquired(await h.store.acquire(c), 'a passed lease is taken over');
      assert.equal(rc.takeover, true);
      assert.equal(
        originOf(rc, 'takeover'),
        a.owner,
        'a takeover continues the logical request it took over',
      );
      const redelivered = assertAcquired(await h.store.acquire(c), 'the taker, redelivered');
      assert.equal(originOf(redelivered, 'redelivered takeover'), a.owner);
      // A completion ends the run: the key is found, and the next acquisition (after the
      // retention) is another logical request (next check).
      assert.deepEqual(
        await h.store.complete({
          key,
          owner: c.owner,
          outcome: bytes('c'),
          retentionMs: RETENTION_MS,
        }),
        { ok: true },
      );
      assertFound(await h.store.acquire(acquireInput(h, key)));
    },
  },
  {
    group: 'origin',
    name: 'once the record expired (completed, released or in progress past its retention) the next acquisition begins a new logical request',
    async run(h) {
      const retentionMs = h.time.leaseMs;
      // Completed, then its retention passed.
      const completedKey = h.newKey();
      const a = acquireInput(h, completedKey, { retentionMs });
      assertAcquired(await h.store.acquire(a));
      assert.deepEqual(
        await h.store.complete({
          key: completedKey,
          owner: a.owner,
          outcome: bytes('a'),
          retentionMs,
        }),
        { ok: true },
      );
      // Released, then the tombstone's retention passed.
      const releasedKey = h.newKey();
      const r = acquireInput(h, releasedKey, { retentionMs });
      assertAcquired(await h.store.acquire(r));
      assert.deepEqual(await h.store.release({ key: releasedKey, owner: r.owner, retentionMs }), {
        ok: true,
      });
      // In progress, abandoned: its lease and then its retention passed.
      const abandonedKey = h.newKey();
      const p = acquireInput(h, abandonedKey, { retentionMs });
      assertAcquired(await h.store.acquire(p));
      await pastRetention(h, retentionMs);
      for (const [key, was, what] of [
        [completedKey, a.owner, 'a completed record past its retention'],
        [releasedKey, r.owner, 'a released tombstone past its retention'],
        [abandonedKey, p.owner, 'an in-progress record past its lease and retention'],
      ] as const) {
        const next = acquireInput(h, key);
        const result = assertAcquired(await h.store.acquire(next), `${what}: the key is free`);
        const origin = originOf(result, what);
        assert.notEqual(origin, was, `${what}: the old logical request's origin was kept`);
        assert.equal(origin, next.owner, `${what}: a new logical request's origin is its owner`);
      }
    },
  },
  {
    group: 'origin',
    name: 'forceRelease keeps the origin for the retry; delete forgets it',
    async run(h) {
      const admin = adminOf(h);
      const key = h.newKey();
      const a = acquireInput(h, key);
      assertAcquired(await h.store.acquire(a));
      const released = await admin.forceRelease(key);
      assert.equal(released.ok, true, `forceRelease answered ${JSON.stringify(released)}`);
      const b = acquireInput(h, key);
      const rb = assertAcquired(await h.store.acquire(b));
      assert.equal(
        originOf(rb, 'after forceRelease'),
        a.owner,
        "the retry after an operator's release continues the logical request",
      );
      assert.deepEqual(await admin.delete(key), { deleted: true });
      const c = acquireInput(h, key);
      const rc = assertAcquired(await h.store.acquire(c));
      assert.equal(
        originOf(rc, 'after delete'),
        c.owner,
        'a deleted record is forgotten: the next acquisition begins a new logical request',
      );
    },
  },
  {
    group: 'origin',
    name: "core's originId: the same for a retry after a failure and for a takeover, another once the key is used again after its retention",
    async run(h) {
      const retentionMs = h.time.leaseMs;
      const idem = createIdempotency<string>({
        store: h.store,
        leaseMs: h.time.leaseMs,
        retentionMs,
        heartbeatMs: false,
        clock: h.time.clock,
      });
      const scope = h.newKey();
      const request = { key: 'origin-key', scope };
      const seen: { originId: string; fence: number }[] = [];
      // A failure (not final: the key is released), then the retry that completes.
      await assert.rejects(
        idem.execute(request, async (ctx) => {
          seen.push({ originId: ctx.originId, fence: ctx.fence });
          throw new Error('transient');
        }),
        /transient/,
      );
      const done = await idem.execute(request, async (ctx) => {
        seen.push({ originId: ctx.originId, fence: ctx.fence });
        return ctx.originId;
      });
      assert.equal(done.replayed, false);
      assert.equal(seen.length, 2);
      assert.match(seen[0]?.originId ?? '', /^[0-9a-f]{32}$/, 'originId is 32 lowercase hex');
      assert.equal(seen[1]?.originId, seen[0]?.originId, 'a retry after a failure: the same id');
      assert.ok((seen[1]?.fence ?? 0) > (seen[0]?.fence ?? 0), 'and a higher fence');
      // The retention passes: the same key is a new logical request.
      await pastRetention(h, retentionMs);
      const later = await idem.execute(request, async (ctx) => ctx.originId);
      assert.equal(later.replayed, false);
      assert.notEqual(later.value, done.value, 'a new request under an old key: another id');
    },
  },
];
