import { readFileSync } from 'node:fs';
import {
  createIdempotency,
  InProgressError,
  InvalidInputError,
  MismatchError,
  StoreUnavailableError,
} from '@idem/core';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { createPostgresStore, schemaSql } from '../src/index.js';
import { countStatements } from './counted-pool.js';
import { acquireInput, HOUR, makePool, newKey, newOwner, randomName, sleep } from './pg-env.js';

const table = inject('pgTable');
const pool = makePool({ max: 16 });
const raw = makePool({ max: 2 });
afterAll(async () => {
  await pool.end();
  await raw.end();
});

const rawRow = async (rowKey: string) =>
  (await raw.query(`SELECT * FROM ${table} WHERE key = $1`, [rowKey])).rows[0];

describe('round trips', () => {
  it('first execution 2 (acquire + complete), replay 1, conflict 1, released failure 2, heartbeats 1 each', async () => {
    const counted = makePool({ max: 4 });
    try {
      const sent = countStatements(counted);
      const store = createPostgresStore({ pool: counted, table, keyPrefix: randomName('rt') });
      const idem = createIdempotency<string>({ store, heartbeatMs: false });
      sent.take();
      expect(await idem.execute({ key: 'first', scope: 's' }, async () => 'done')).toEqual({
        value: 'done',
        replayed: false,
      });
      expect(sent.take()).toEqual(['acquire', 'complete']);
      expect(await idem.execute({ key: 'first', scope: 's' }, async () => 'again')).toEqual({
        value: 'done',
        replayed: true,
      });
      expect(sent.take()).toEqual(['acquire']);

      const begun = await idem.begin({ key: 'busy', scope: 's', fingerprint: 'a' });
      expect(sent.take()).toEqual(['acquire']);
      await expect(
        idem.begin({ key: 'busy', scope: 's', fingerprint: 'a' }),
      ).rejects.toBeInstanceOf(InProgressError);
      expect(sent.take()).toEqual(['acquire']);
      await expect(
        idem.begin({ key: 'busy', scope: 's', fingerprint: 'b' }),
      ).rejects.toBeInstanceOf(MismatchError);
      expect(sent.take()).toEqual(['acquire']);
      if (begun.kind === 'acquired') await begun.execution.release();
      expect(sent.take()).toEqual(['release']);

      await expect(
        idem.execute({ key: 'fails', scope: 's' }, async () => Promise.reject(new Error('boom'))),
      ).rejects.toThrow('boom');
      expect(sent.take()).toEqual(['acquire', 'release']);

      const beating = createIdempotency<string>({ store, leaseMs: 600, heartbeatMs: 150 });
      await beating.execute({ key: 'slow', scope: 's' }, async () => {
        await sleep(800);
        return 'slow';
      });
      const ops = sent.take();
      const done = ops.indexOf('complete');
      expect(ops.slice(0, done + 1)).toEqual([
        'acquire',
        ...Array(done - 1).fill('extend'),
        'complete',
      ]);
      expect(done - 1).toBeGreaterThanOrEqual(2);
      // One heartbeat may be on its way while the completion is.
      expect(ops.length - done - 1).toBeLessThanOrEqual(1);
    } finally {
      await counted.end();
    }
  });

  it('a replay and a conflict take no row lock and write nothing', async () => {
    const store = createPostgresStore({ pool, table, keyPrefix: randomName('ro') });
    const key = newKey();
    const first = acquireInput(key);
    await store.acquire(first);
    const busyBefore = (await rawRow(store.rowKey(key))).xmin;
    // Hold the row lock in another transaction: a read-only answer does not wait for it.
    const holder = await raw.connect();
    try {
      await holder.query('BEGIN');
      await holder.query(`SELECT 1 FROM ${table} WHERE key = $1 FOR UPDATE`, [store.rowKey(key)]);
      const started = performance.now();
      const conflict = await store.acquire(acquireInput(key));
      expect(conflict.kind).toBe('found');
      expect(performance.now() - started).toBeLessThan(1_000);
    } finally {
      await holder.query('ROLLBACK');
      holder.release();
    }
    expect((await rawRow(store.rowKey(key))).xmin).toBe(busyBefore);
    await store.complete({
      key,
      owner: first.owner,
      outcome: new Uint8Array([1]),
      retentionMs: HOUR,
    });
    const completed = (await rawRow(store.rowKey(key))).xmin;
    expect((await store.acquire(acquireInput(key))).kind).toBe('found');
    expect((await rawRow(store.rowKey(key))).xmin).toBe(completed);
  });
});

describe('concurrency over many connections', () => {
  it('one winner of 32, then mutual exclusion and contiguous fences under contention', async () => {
    const store = createPostgresStore({ pool, table, keyPrefix: randomName('cc') });
    const key = newKey();
    const inputs = Array.from({ length: 32 }, () => acquireInput(key));
    const results = await Promise.all(inputs.map((input) => store.acquire(input)));
    const winners = inputs.filter((_, i) => results[i]!.kind === 'acquired');
    expect(winners).toHaveLength(1);
    for (const r of results) if (r.kind === 'found') expect(r.record.owner).toBe(winners[0]!.owner);
    await store.release({ key, owner: winners[0]!.owner, retentionMs: HOUR });

    let holder: string | undefined;
    const fences: number[] = [];
    const overlaps: string[] = [];
    async function worker(): Promise<void> {
      // Until 40 grants in all (bounded: 300 tries a worker).
      for (let round = 0; round < 300 && fences.length < 40; round++) {
        const input = acquireInput(key);
        const result = await store.acquire(input);
        if (result.kind !== 'acquired') continue;
        if (holder !== undefined)
          overlaps.push(`fence ${result.fence} granted while ${holder} held`);
        holder = input.owner;
        fences.push(result.fence);
        await sleep(1);
        holder = undefined;
        expect(await store.release({ key, owner: input.owner, retentionMs: HOUR })).toEqual({
          ok: true,
        });
      }
    }
    await Promise.all(Array.from({ length: 8 }, worker));
    expect(overlaps).toEqual([]);
    expect(fences.length).toBeGreaterThanOrEqual(40);
    expect([...fences].sort((a, b) => a - b)).toEqual(fences.map((_, i) => i + 2));
    expect(await rawRow(store.rowKey(key))).toMatchObject({
      status: 'released',
      fence: String(fences.length + 1),
    });
  });

  it('keys and prefixes never meet: the same storage key under two prefixes is two records', async () => {
    const a = createPostgresStore({ pool, table, keyPrefix: randomName('a') });
    const b = createPostgresStore({ pool, table, keyPrefix: randomName('b') });
    const key = newKey();
    const inA = acquireInput(key);
    expect(await a.acquire(inA)).toMatchObject({ kind: 'acquired', fence: 1 });
    expect(await b.acquire(acquireInput(key))).toMatchObject({ kind: 'acquired', fence: 1 });
    expect(
      await b.complete({ key, owner: inA.owner, outcome: new Uint8Array(), retentionMs: HOUR }),
    ).toEqual({
      ok: false,
      reason: 'not_owner',
    });
    expect((await a.get(key))?.status).toBe('in_progress');
  });
});

describe('schema', () => {
  it('sql/schema.sql is exactly what ensureSchema() runs for the default table', () => {
    const file = readFileSync(new URL('../sql/schema.sql', import.meta.url), 'utf8');
    expect(file).toBe(schemaSql());
  });

  it('ensureSchema() from several processes at once, and again, leaves one working table', async () => {
    const schema = randomName('idem_schema');
    try {
      const stores = Array.from({ length: 4 }, () =>
        createPostgresStore({ pool, table: `${schema}.records` }),
      );
      await Promise.all(stores.map((s) => s.ensureSchema()));
      await stores[0]!.ensureSchema();
      expect((await stores[1]!.acquire(acquireInput('k'))).kind).toBe('acquired');
      const { rows } = await raw.query(
        `SELECT indexname FROM pg_indexes WHERE schemaname = $1 ORDER BY indexname`,
        [schema],
      );
      expect(rows.map((r) => r.indexname)).toEqual([
        'records_expires_at',
        'records_held_leases_pkey',
        'records_pkey',
      ]);
    } finally {
      await raw.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    }
  });

  it('a missing schema is StoreUnavailableError with the driver error as cause and a hint', async () => {
    const store = createPostgresStore({ pool, table: `${randomName('nowhere')}.records` });
    const error = await store.acquire(acquireInput('k')).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StoreUnavailableError);
    expect((error as Error).message).toMatch(/ensureSchema/);
    expect(['3F000', '42883']).toContain((error as { cause?: { code?: string } }).cause?.code);
  });
});

describe('deleteExpired', () => {
  // A table of its own: deleting with no grace would take other tests' expired records.
  async function withOwnTable(
    run: (
      store: ReturnType<typeof createPostgresStore>,
      row: (key: string) => Promise<Record<string, unknown> | undefined>,
      gcTable: string,
    ) => Promise<void>,
  ): Promise<void> {
    const schema = randomName('idem_gc');
    const gcTable = `${schema}.records`;
    const store = createPostgresStore({ pool, table: gcTable });
    await store.ensureSchema();
    const row = async (key: string) =>
      (await raw.query(`SELECT * FROM ${gcTable} WHERE key = $1`, [key])).rows[0];
    try {
      await run(store, row, gcTable);
    } finally {
      await raw.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    }
  }

  it('deletes only records expired past the grace, through the expires_at index; fences continue until then', () =>
    withOwnTable(async (store, row, gcTable) => {
      const gone = newKey();
      const kept = newKey();
      const live = newKey();
      await store.acquire(acquireInput(gone, { leaseMs: 10, retentionMs: 10 }));
      await store.acquire(acquireInput(kept, { leaseMs: 10, retentionMs: 10 }));
      await store.acquire(acquireInput(live));
      await sleep(50);
      // Expired but within the grace: kept, and its fence continues.
      expect(await store.deleteExpired({ graceMs: HOUR })).toBe(0);
      expect(await store.acquire(acquireInput(kept))).toMatchObject({ kind: 'acquired', fence: 2 });
      // Past the grace: deleted, in batches of `limit`; the live ones stay.
      expect(await store.deleteExpired({ graceMs: 0, limit: 1 })).toBe(1);
      expect(await store.deleteExpired({ graceMs: 0, limit: 1 })).toBe(0);
      expect(await row(gone)).toBeUndefined();
      expect(await row(kept)).toBeDefined();
      expect(await row(live)).toBeDefined();
      // After deletion the fence starts again at 1 (documented).
      expect(await store.acquire(acquireInput(gone))).toMatchObject({ kind: 'acquired', fence: 1 });

      const client = await raw.connect();
      try {
        await client.query('BEGIN');
        await client.query('SET LOCAL enable_seqscan = off');
        const plan = await client.query(
          `EXPLAIN DELETE FROM ${gcTable} WHERE key IN (SELECT key FROM ${gcTable} WHERE expires_at < 5 AND lease_until < 5 ORDER BY expires_at LIMIT 10 FOR UPDATE SKIP LOCKED) AND expires_at < 5 AND lease_until < 5`,
        );
        expect(plan.rows.map((r) => r['QUERY PLAN']).join('\n')).toMatch(/records_expires_at/);
      } finally {
        await client.query('ROLLBACK');
        client.release();
      }
    }));

  it("an admin delete leaves a tombstone with the fence that deleteExpired spares until the deleted record's retention passed", () =>
    withOwnTable(async (store, row) => {
      const kept = newKey();
      const owner = newOwner();
      await store.acquire(acquireInput(kept, { owner, leaseMs: 10 }));
      const outcome = new TextEncoder().encode('paid');
      expect(await store.complete({ key: kept, owner, outcome, retentionMs: HOUR })).toEqual({
        ok: true,
      });
      const before = await row(kept);
      expect(await store.admin.delete(kept)).toEqual({ deleted: true });
      const tombstone = await row(kept);
      expect(tombstone).toMatchObject({ status: 'released', fingerprint: '', outcome: null });
      expect(tombstone?.fence).toBe('1');
      expect(tombstone?.owner).not.toBe(owner);
      expect(Number(tombstone?.lease_until)).toBe(Number(before?.expires_at));
      expect(await store.get(kept)).toBeUndefined();
      // Expired at once, but its fence outlives the cleanup until the deleted record's retention.
      await sleep(20);
      expect(await store.deleteExpired({ graceMs: 0 })).toBe(0);
      expect(await store.acquire(acquireInput(kept))).toMatchObject({ kind: 'acquired', fence: 2 });

      // A tombstone of a short-lived record goes once that record's retention passed.
      // (Lease and retention long enough that a loaded machine still deletes it before it
      // expires: an expired record is not found, and then there is nothing to delete.)
      const brief = newKey();
      await store.acquire(acquireInput(brief, { leaseMs: 1_000, retentionMs: 1_000 }));
      expect(await store.admin.delete(brief)).toEqual({ deleted: true });
      expect(await row(brief)).toBeDefined();
      let removed = 0;
      for (let i = 0; i < 60 && removed === 0; i++) {
        await sleep(100);
        removed = await store.deleteExpired({ graceMs: 0 });
      }
      expect(removed).toBe(1);
      expect(await row(brief)).toBeUndefined();
    }));
});

describe('bad input is refused before anything is sent', () => {
  it('refuses malformed keys, owners, fingerprints, durations, outcomes and table names', async () => {
    const counted = makePool({ max: 1 });
    try {
      const sent = countStatements(counted);
      const store = createPostgresStore({ pool: counted, table });
      const ok = acquireInput(newKey());
      const bad: Array<() => Promise<unknown>> = [
        () => store.acquire({ ...ok, key: '' }),
        () => store.acquire({ ...ok, key: 'a\0b' }),
        () => store.acquire({ ...ok, key: 'x'.repeat(600) }),
        () => store.acquire({ ...ok, owner: '' }),
        () => store.acquire({ ...ok, owner: '\ud800' }),
        () => store.acquire({ ...ok, owner: 'o'.repeat(300) }),
        () => store.acquire({ ...ok, fingerprint: 'f\0' }),
        () => store.acquire({ ...ok, fingerprint: 42 as unknown as string }),
        () => store.acquire({ ...ok, leaseMs: -1 }),
        () => store.acquire({ ...ok, leaseMs: Number.NaN }),
        () => store.acquire({ ...ok, retentionMs: 2 ** 60 }),
        () =>
          store.complete({
            key: ok.key,
            owner: ok.owner,
            outcome: 'x' as unknown as Uint8Array,
            retentionMs: HOUR,
          }),
        () =>
          store.extend({
            key: ok.key,
            owner: ok.owner,
            leaseMs: Number.POSITIVE_INFINITY,
            retentionMs: HOUR,
          }),
        () => store.release({ key: ok.key, owner: '', retentionMs: HOUR }),
        () => store.get('\ud800'),
        () => store.deleteExpired({ limit: 0 }),
      ];
      for (const call of bad) await expect(call()).rejects.toBeInstanceOf(InvalidInputError);
      expect(sent.take()).toEqual([]);
      for (const table of ['idem; DROP TABLE x', 'Idem', 'a.b.c', '"quoted"', 'x'.repeat(51), '']) {
        expect(() => createPostgresStore({ pool: counted, table })).toThrow(InvalidInputError);
      }
      expect(() => createPostgresStore({ pool: {} as never })).toThrow(InvalidInputError);
      expect(() => createPostgresStore({ pool: counted, statementTimeoutMs: 0 })).toThrow(
        InvalidInputError,
      );
      expect(() => createPostgresStore({ pool: counted, maxOutcomeBytes: 0 })).toThrow(
        InvalidInputError,
      );
      // Past 2^31 - 1 ms a timer fires at once: every call would time out.
      expect(() => createPostgresStore({ pool: counted, statementTimeoutMs: 2 ** 31 })).toThrow(
        InvalidInputError,
      );
      await expect(
        store.completeIn(counted, {
          key: ok.key,
          owner: ok.owner,
          outcome: new Uint8Array(),
          retentionMs: HOUR,
        }),
      ).rejects.toBeInstanceOf(InvalidInputError);
      const small = createPostgresStore({ pool: counted, table, maxOutcomeBytes: 4 });
      await expect(
        small.complete({
          key: ok.key,
          owner: ok.owner,
          outcome: new Uint8Array(5),
          retentionMs: HOUR,
        }),
      ).rejects.toMatchObject({ code: 'OUTCOME_TOO_LARGE' });
      expect(sent.take()).toEqual([]);
    } finally {
      await counted.end();
    }
  });

  it('two owners differing only in a lone surrogate are refused, never confused', async () => {
    const store = createPostgresStore({ pool, table, keyPrefix: randomName('sur') });
    await expect(
      store.acquire(acquireInput(newKey(), { owner: 'a\udc00' })),
    ).rejects.toBeInstanceOf(InvalidInputError);
  });

  it('completeIn refuses a client outside a transaction and writes nothing', async () => {
    const store = createPostgresStore({ pool, table, keyPrefix: randomName('cin') });
    const key = newKey();
    const input = acquireInput(key);
    await store.acquire(input);
    const client = await pool.connect();
    try {
      const w = { key, owner: input.owner, outcome: new Uint8Array([1]), retentionMs: HOUR };
      await expect(store.completeIn(client, w)).rejects.toBeInstanceOf(InvalidInputError);
      expect((await store.get(key))?.status).toBe('in_progress');
      await client.query('BEGIN');
      expect(await store.completeIn(client, w)).toEqual({ ok: true });
      await client.query('ROLLBACK');
      expect((await store.get(key))?.status).toBe('in_progress');
      await client.query('BEGIN');
      expect(await store.completeIn(client, w)).toEqual({ ok: true });
      await client.query('COMMIT');
      expect((await store.get(key))?.status).toBe('completed');
      expect(await store.complete({ ...w, owner: newOwner() })).toEqual({
        ok: false,
        reason: 'not_owner',
      });
    } finally {
      client.release();
    }
  });
});
