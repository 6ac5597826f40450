import { deriveStorageKey } from '@idem/core';
import { createPostgresStore } from '@idem/store-postgres';
import { beforeAll, describe, expect, it } from 'vitest';
import { DATABASE_URL, postgresTable } from './in-process.js';
import { idem, idemJson, requireBuild } from './spawn-cli.js';

describe('idem against a real PostgreSQL', () => {
  const { pool, table } = postgresTable('idem_cli');
  const store = createPostgresStore({ pool, table });
  const scope = ['tenant-1', 'POST /refunds'];
  const args = ['--store', DATABASE_URL, '--table', table, '--scope', JSON.stringify(scope)];
  const input = (key: string, owner: string) => ({
    key: deriveStorageKey(scope, key),
    fingerprint: 'fp',
    owner,
    leaseMs: 60_000,
    retentionMs: 3_600_000,
  });

  beforeAll(async () => {
    requireBuild();
    await store.ensureSchema().catch((error: unknown) => {
      throw new Error(
        `No PostgreSQL at ${DATABASE_URL} (${String(error)}): start it with \`bash scripts/bootstrap.sh --services\` or set DATABASE_URL`,
      );
    });
  });

  it('release cuts the stuck owner off: its complete is refused, the next acquire gets a higher fence', async () => {
    const first = input('refund-1', 'owner-a');
    expect((await store.acquire(first)).kind).toBe('acquired');
    const seen = await idemJson('inspect', 'refund-1', ...args);
    expect(seen).toMatchObject({
      code: 0,
      json: { status: 'in_progress', owner: 'owner-a', fence: 1 },
    });

    const released = await idemJson('release', 'refund-1', ...args, '--force');
    expect(released).toEqual({
      code: 0,
      json: { storageKey: first.key, ok: true, fence: 2, previousOwner: 'owner-a' },
    });
    const outcome = new Uint8Array([1, 2, 3]);
    expect(await store.complete({ ...first, outcome })).toEqual({ ok: false, reason: 'not_owner' });
    const row = await pool.query(`SELECT status, fence, owner FROM ${table} WHERE key = $1`, [
      first.key,
    ]);
    expect(row.rows[0]).toMatchObject({ status: 'released', fence: '2' });
    expect(row.rows[0].owner).not.toBe('owner-a');

    const next = await store.acquire(input('refund-1', 'owner-b'));
    expect(next).toMatchObject({ kind: 'acquired', fence: 3, takeover: false });
    await store.complete({ ...input('refund-1', 'owner-b'), outcome });
    const done = await idemJson('inspect', 'refund-1', ...args);
    expect(done.json).toMatchObject({ status: 'completed', fence: 3, outcomeBytes: 3 });
    expect((await idemJson('release', 'refund-1', ...args, '--force')).code).toBe(4);

    expect(await idemJson('delete', 'refund-1', ...args)).toEqual({
      code: 0,
      json: {
        storageKey: first.key,
        deleted: true,
        was: { status: 'completed', owner: 'owner-b', fence: 3, outcomeBytes: 3 },
      },
    });
    // What stays is a tombstone holding only the fence: no outcome, no fingerprint.
    const tombstone = await pool.query(
      `SELECT status, fence, fingerprint, outcome FROM ${table} WHERE key = $1`,
      [first.key],
    );
    expect(tombstone.rows[0]).toEqual({
      status: 'released',
      fence: '3',
      fingerprint: '',
      outcome: null,
    });
    expect((await idem('inspect', 'refund-1', ...args)).code).toBe(3);
    expect((await idem('delete', 'refund-1', ...args)).code).toBe(3);
    expect((await idem('release', 'refund-1', ...args, '--force')).code).toBe(3);
    // Fences keep growing after delete: a fenced downstream that saw 3 accepts the next one.
    expect(await store.acquire(input('refund-1', 'owner-c'))).toMatchObject({ fence: 4 });
  });
});
