import { afterAll, describe, expect, inject, it } from 'vitest';
import { createPostgresStore } from '../src/index.js';
import { acquireInput, makePool, newKey, newOwner, randomName, sleep } from './pg-env.js';

/**
 * The held lease (`<table>_held_leases`, renewed by `<table>_renew_held` while a business
 * transaction holds the record's row) against takeovers, at the store's level.
 */
const table = inject('pgTable');
const pool = makePool({ max: 4 });
const raw = makePool({ max: 2 });
afterAll(async () => {
  await pool.end();
  await raw.end();
});

const store = createPostgresStore({ pool, table, keyPrefix: randomName('held') });
const heldOf = async (key: string) =>
  (
    await raw.query(`SELECT fence, lease_until FROM ${table}_held_leases WHERE key = $1`, [
      store.rowKey(key),
    ])
  ).rows[0] as { fence: string; lease_until: string } | undefined;

describe('a held lease', () => {
  it('keeps a takeover out until it passes, though the record lease passed and its row is free', async () => {
    const key = newKey();
    const owner = newOwner();
    const first = await store.acquire(acquireInput(key, { owner, leaseMs: 100 }));
    expect(first.kind).toBe('acquired');
    const fence = first.kind === 'acquired' ? first.fence : 0;
    expect(
      await store.renewHeld({ key, owner, leaseMs: 700, retentionMs: 60_000 }, fence),
    ).toBeTypeOf('number');
    await sleep(200); // the record's own lease passed
    const duplicate = await store.acquire(acquireInput(key, { leaseMs: 1_000 }));
    expect(duplicate).toMatchObject({ kind: 'found', record: { status: 'in_progress', fence } });
    await sleep(700); // and now the held lease too
    const later = await store.acquire(acquireInput(key, { leaseMs: 1_000 }));
    expect(later).toMatchObject({ kind: 'acquired', fence: fence + 1 });
    // The lease row is marked with the new fence (never a renewal of the old owner's again).
    expect(Number((await heldOf(key))?.fence)).toBe(fence + 1);
    expect(await store.renewHeld({ key, owner, leaseMs: 10_000, retentionMs: 60_000 }, fence)).toBe(
      undefined,
    );
  });

  it('a renewal whose repeatable-read snapshot predates a takeover never answers as the owner', async () => {
    const key = newKey();
    const owner = newOwner();
    const first = await store.acquire(acquireInput(key, { owner, leaseMs: 100 }));
    const fence = first.kind === 'acquired' ? first.fence : 0;
    await store.renewHeld({ key, owner, leaseMs: 150, retentionMs: 60_000 }, fence);
    await sleep(250); // both leases passed
    const client = await raw.connect();
    try {
      // The renewal's snapshot is taken before the takeover commits.
      await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
      await client.query('SELECT 1');
      expect(await store.acquire(acquireInput(key, { leaseMs: 10_000 }))).toMatchObject({
        kind: 'acquired',
        fence: fence + 1,
      });
      const renewal = await client
        .query(`SELECT ${table}_renew_held($1, $2, $3, $4) AS lease_until`, [
          store.rowKey(key),
          owner,
          fence,
          10_000,
        ])
        .then(
          ({ rows }) => rows[0].lease_until,
          (error: { code?: string }) => error.code,
        );
      // A serialization failure (the store sends the statement again, and then reads the
      // takeover), never a lease: its old snapshot still shows the record as the owner's.
      expect(renewal).toBe('40001');
    } finally {
      await client.query('ROLLBACK').catch(() => {});
      client.release();
    }
    expect(await store.renewHeld({ key, owner, leaseMs: 10_000, retentionMs: 60_000 }, fence)).toBe(
      undefined,
    );
  });

  it('bad input: a fence that is not a safe integer is refused', async () => {
    await expect(
      store.renewHeld(
        { key: newKey(), owner: newOwner(), leaseMs: 1_000, retentionMs: 1_000 },
        1.5,
      ),
    ).rejects.toThrow(/fence/);
  });

  it('deleteExpired removes held leases that passed', async () => {
    const key = newKey();
    const owner = newOwner();
    const first = await store.acquire(acquireInput(key, { owner, leaseMs: 50, retentionMs: 50 }));
    const fence = first.kind === 'acquired' ? first.fence : 0;
    await store.renewHeld({ key, owner, leaseMs: 50, retentionMs: 50 }, fence);
    expect(await heldOf(key)).toBeDefined();
    await sleep(150);
    await store.deleteExpired({ graceMs: 0 });
    expect(await heldOf(key)).toBeUndefined();
  });
});
