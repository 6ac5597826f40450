import assert from 'node:assert/strict';
import type { RecordInspection } from '@idem/core';
import {
  acquireInput,
  assertAcquired,
  type ContractCheck,
  RETENTION_MS,
  readBoth,
} from './checks-records.js';
import type { Harness } from './harness.js';

/** Inspect agrees with the record read through both channels (outcome size aside). */
async function assertInspectShows(
  h: Harness,
  key: string,
  label: string,
): Promise<RecordInspection> {
  const admin = h.store.admin;
  assert.ok(admin, 'the store must provide `admin`');
  const seen = await admin.inspect(key);
  const record = await readBoth(h, key);
  assert.ok(seen && record, `${label}: inspect and get both find the record`);
  for (const field of ['status', 'owner', 'fence', 'leaseUntil', 'expiresAt'] as const)
    assert.deepEqual(seen[field], record[field], `${label}: inspect shows the stored ${field}`);
  return seen;
}

/** Inspect in the states the other admin checks do not reach. */
export const adminStateChecks: ContractCheck[] = [
  {
    group: 'admin',
    name: 'inspect shows a released tombstone, a passed lease and a taken-over record as stored, and nothing once retention passed',
    async run(h) {
      const key = h.newKey();
      const first = acquireInput(h, key, { retentionMs: 1_000 });
      const won = assertAcquired(await h.store.acquire(first));
      const write = { key, owner: first.owner, retentionMs: 1_000 };
      assert.deepEqual(await h.store.release(write), { ok: true });
      const released = await assertInspectShows(h, key, 'released');
      assert.equal(released.status, 'released');
      assert.equal(released.outcomeBytes, 0);

      const second = acquireInput(h, key, { retentionMs: RETENTION_MS });
      const taken = assertAcquired(await h.store.acquire(second));
      assert.ok(taken.fence > won.fence);
      await h.time.advance(h.time.leaseMs + 50);
      const lapsed = await assertInspectShows(h, key, 'lease passed');
      assert.equal(lapsed.status, 'in_progress');
      assert.ok(lapsed.leaseUntil <= lapsed.now, 'the lease shows as passed by the store clock');

      const third = acquireInput(h, key, { retentionMs: 1_000 });
      const over = assertAcquired(await h.store.acquire(third), 'a takeover');
      assert.equal(over.takeover, true);
      const after = await assertInspectShows(h, key, 'taken over');
      assert.equal(after.owner, third.owner);
      assert.equal(after.fence, over.fence);

      await h.time.advance(h.time.leaseMs + 1_000 + 50);
      assert.equal(await h.store.admin?.inspect(key), undefined, 'expired: inspect finds nothing');
      assert.equal(await readBoth(h, key), undefined);
    },
  },
];
