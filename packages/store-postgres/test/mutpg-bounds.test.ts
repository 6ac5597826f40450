/**
 * Mutation audit (store-postgres): the size bounds at their exact edges (README, Guarantees:
 * "Bad input is refused before anything is sent"). The existing test sent values far past
 * each bound (a 600-character key, a 300-character owner), so a bound moved by one, or a key
 * whose prefix pushed it past 512 characters, passed. Here: the largest accepted value
 * works, one more is refused with nothing sent.
 */
import { InvalidInputError } from '@idem/core';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { createPostgresStore } from '../src/index.js';
import { countStatements } from './counted-pool.js';
import { acquireInput, HOUR, makePool, newOwner, randomName } from './pg-env.js';

const table = inject('pgTable');
const pool = makePool({ max: 2 });
afterAll(() => pool.end());

/** A key prefix of `length` characters, unique to this call. */
const prefixOf = (length: number) => randomName('mb').padEnd(length, '_');

describe('mutpg: bounds at their edges', () => {
  it('a key with its prefix of 512 characters is stored; 513 is refused, nothing sent', async () => {
    const store = createPostgresStore({ pool, table, keyPrefix: prefixOf(448) });
    const key = 'k'.repeat(64);
    expect(await store.acquire(acquireInput(key))).toMatchObject({ kind: 'acquired' });
    expect((await store.get(key))?.status).toBe('in_progress');
    expect(store.rowKey(key)).toHaveLength(512);
    const counted = makePool({ max: 1 });
    try {
      const sent = countStatements(counted);
      const same = createPostgresStore({ pool: counted, table, keyPrefix: prefixOf(448) });
      await expect(same.acquire(acquireInput(`${key}k`))).rejects.toBeInstanceOf(InvalidInputError);
      await expect(same.get(`${key}k`)).rejects.toBeInstanceOf(InvalidInputError);
      const bare = createPostgresStore({ pool: counted, table });
      await expect(bare.acquire(acquireInput('k'.repeat(513)))).rejects.toBeInstanceOf(
        InvalidInputError,
      );
      expect(sent.take()).toEqual([]);
    } finally {
      await counted.end();
    }
  });

  it('a key prefix of 448 characters is taken (room for a 64-character key), 449 refused', () => {
    expect(() => createPostgresStore({ pool, table, keyPrefix: 'p'.repeat(448) })).not.toThrow();
    expect(() => createPostgresStore({ pool, table, keyPrefix: 'p'.repeat(449) })).toThrow(
      InvalidInputError,
    );
  });

  it('owners of 256 and fingerprints of 1024 characters work; one more is refused, nothing sent', async () => {
    const store = createPostgresStore({ pool, table, keyPrefix: randomName('mb') });
    const owner = 'o'.repeat(256);
    const fingerprint = 'f'.repeat(1024);
    expect(await store.acquire({ ...acquireInput('a', { owner }), fingerprint })).toMatchObject({
      kind: 'acquired',
    });
    expect(
      await store.complete({ key: 'a', owner, outcome: new Uint8Array([1]), retentionMs: HOUR }),
    ).toEqual({ ok: true });
    expect(await store.get('a')).toMatchObject({ owner, fingerprint, status: 'completed' });
    // An empty fingerprint is a fingerprint (a request without a body may hash to it).
    expect(await store.acquire({ ...acquireInput('b'), fingerprint: '' })).toMatchObject({
      kind: 'acquired',
    });
    const counted = makePool({ max: 1 });
    try {
      const sent = countStatements(counted);
      const same = createPostgresStore({ pool: counted, table, keyPrefix: randomName('mb') });
      await expect(
        same.acquire(acquireInput('c', { owner: 'o'.repeat(257) })),
      ).rejects.toBeInstanceOf(InvalidInputError);
      await expect(
        same.acquire({ ...acquireInput('c'), fingerprint: 'f'.repeat(1025) }),
      ).rejects.toBeInstanceOf(InvalidInputError);
      await expect(
        same.extend({ key: 'c', owner: 'o'.repeat(257), leaseMs: 1, retentionMs: 1 }),
      ).rejects.toBeInstanceOf(InvalidInputError);
      expect(sent.take()).toEqual([]);
    } finally {
      await counted.end();
    }
  });

  it('an outcome of exactly maxOutcomeBytes is stored; one byte more is refused, nothing sent', async () => {
    const counted = makePool({ max: 1 });
    try {
      const sent = countStatements(counted);
      const store = createPostgresStore({
        pool: counted,
        table,
        keyPrefix: randomName('mb'),
        maxOutcomeBytes: 100,
      });
      const input = acquireInput('o');
      await store.acquire(input);
      sent.take();
      const w = { key: 'o', owner: input.owner, retentionMs: HOUR };
      await expect(store.complete({ ...w, outcome: new Uint8Array(101) })).rejects.toMatchObject({
        code: 'OUTCOME_TOO_LARGE',
      });
      expect(sent.take()).toEqual([]);
      expect(await store.complete({ ...w, outcome: new Uint8Array(100).fill(7) })).toEqual({
        ok: true,
      });
      expect(Buffer.from((await store.get('o'))?.outcome ?? [])).toEqual(Buffer.alloc(100, 7));
    } finally {
      await counted.end();
    }
  });

  it('table names: a 50-character name and a 63-character schema are taken, one more refused', () => {
    const schema = 's'.repeat(63);
    expect(() => createPostgresStore({ pool, table: `${schema}.${'t'.repeat(50)}` })).not.toThrow();
    expect(() => createPostgresStore({ pool, table: 't'.repeat(51) })).toThrow(InvalidInputError);
    expect(() => createPostgresStore({ pool, table: `${schema}s.t` })).toThrow(InvalidInputError);
  });

  it('a transaction id of the engine is a positive integer: 0 and a sign are refused', async () => {
    const store = createPostgresStore({ pool, table, keyPrefix: randomName('mb') });
    const client = await pool.connect();
    try {
      await client.query('BEGIN');
      const w = { key: 'x', owner: newOwner(), outcome: new Uint8Array(), retentionMs: HOUR };
      for (const id of ['0', '-1', '01', '1.5', '1e3'])
        await expect(store.completeInTransaction(client, w, id)).rejects.toBeInstanceOf(
          InvalidInputError,
        );
    } finally {
      await client.query('ROLLBACK');
      client.release();
    }
  });
});
