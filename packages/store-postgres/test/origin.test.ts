import { readFileSync } from 'node:fs';
import { type AcquireResult, createIdempotency, StoreUnavailableError } from '@idem/core';
import type pg from 'pg';
import { afterAll, describe, expect, inject, it } from 'vitest';
import {
  createPostgresIdempotency,
  createPostgresStore,
  type PostgresStore,
} from '../src/index.js';
import { countStatements } from './counted-pool.js';
import { acquireInput, HOUR, makePool, newKey, randomName, sleep } from './pg-env.js';

/**
 * The record's origin (the store contract's "Origin"): kept in the `origin` column, carried
 * over by a takeover, a retry after a release and an operator's forceRelease, forgotten by
 * delete and by expiry; and a table created by the version before origins, brought up to
 * date by `ensureSchema()` with its rows still answering.
 */

const table = inject('pgTable');
const pool = makePool({ max: 8 });
const raw = makePool({ max: 4 });
afterAll(async () => {
  await pool.end();
  await raw.end();
});

/**
 * The schema script of the version before origins: its sql/schema.sql verbatim (as of
 * 1378bc7), a frozen copy (what existing deployments ran), never regenerated.
 */
const SCHEMA_BEFORE_ORIGIN = readFileSync(
  new URL('./schema-before-origin.sql', import.meta.url),
  'utf8',
);

/** That script for `schema.idem_records`, as that version's `schemaSql()` wrote it. */
const schemaBeforeOrigin = (schema: string) =>
  SCHEMA_BEFORE_ORIGIN.replaceAll('"idem_records', `"${schema}"."idem_records`)
    .replaceAll('idem-schema:idem_records', `idem-schema:${schema}.idem_records`)
    // An index is named without its schema.
    .replaceAll(`"${schema}"."idem_records_expires_at"`, '"idem_records_expires_at"');

function acquired(result: AcquireResult): Extract<AcquireResult, { kind: 'acquired' }> {
  expect(result.kind, JSON.stringify(result)).toBe('acquired');
  return result as Extract<AcquireResult, { kind: 'acquired' }>;
}

/** The row's origin column, as stored (null when the row has none). */
async function originColumn(
  store: PostgresStore,
  storageKey: string,
): Promise<string | null | undefined> {
  const { rows } = await raw.query(`SELECT origin FROM ${store.table} WHERE key = $1`, [
    store.rowKey(storageKey),
  ]);
  return rows[0]?.origin;
}

/** Whether `table` (schema.name) has an `origin` column. */
async function hasOriginColumn(schema: string, name: string): Promise<boolean> {
  const { rows } = await raw.query(
    `SELECT 1 FROM information_schema.columns
     WHERE table_schema = $1 AND table_name = $2 AND column_name = 'origin'`,
    [schema, name],
  );
  return rows.length === 1;
}

describe('a table created by the version before origins', () => {
  /**
   * A schema of its own holding `idem_records` as the previous version's script made it,
   * and a client of the previous version on it: its acquire statement prepared (the
   * store's default) and rows written through it.
   */
  async function withLegacyTable(
    run: (ctx: { schema: string; legacyTable: string; old: pg.PoolClient }) => Promise<void>,
  ): Promise<void> {
    const schema = randomName('idem_legacy');
    const old = await raw.connect();
    try {
      await old.query(`CREATE SCHEMA "${schema}"`);
      await old.query(schemaBeforeOrigin(schema));
      const legacyTable = `${schema}.idem_records`;
      expect(await hasOriginColumn(schema, 'idem_records')).toBe(false);
      await run({ schema, legacyTable, old });
    } finally {
      old.release();
      await raw.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    }
  }

  /** The previous version's acquire, as its store sent it (a named prepared statement). */
  function oldAcquire(
    client: pg.PoolClient,
    schema: string,
    rowKey: string,
    owner: string,
    leaseMs: number,
  ) {
    return client.query({
      name: `old_acquire_${schema}`,
      text: `SELECT * FROM "${schema}"."idem_records_acquire"($1, $2, $3, $4, $5)`,
      values: [rowKey, 'fp', owner, leaseMs, HOUR],
    });
  }

  it('this version refuses it with what to run; ensureSchema() (several at once) adds the column; rows written before answer their owner as origin; the previous version keeps working', async () => {
    await withLegacyTable(async ({ schema, legacyTable, old }) => {
      // Rows the previous version wrote: a lease about to pass, a live lease, a release,
      // a stuck execution an operator will release.
      const keys = { lapsed: newKey(), live: newKey(), released: newKey(), stuck: newKey() };
      await oldAcquire(old, schema, keys.lapsed, 'legacy-lapsed', 1);
      await oldAcquire(old, schema, keys.live, 'legacy-live', 60_000);
      await oldAcquire(old, schema, keys.released, 'legacy-released', 60_000);
      await old.query(`SELECT "${schema}"."idem_records_release"($1, $2, $3)`, [
        keys.released,
        'legacy-released',
        HOUR,
      ]);
      await oldAcquire(old, schema, keys.stuck, 'legacy-stuck', 60_000);

      const store = createPostgresStore({ pool, table: legacyTable });
      // Before the upgrade: a clear error naming what to run, never an answer without an
      // origin. (The previous function applied the acquisition: core gives it back.)
      const refused = await store.acquire(acquireInput(newKey())).catch((e: unknown) => e);
      expect(refused).toBeInstanceOf(StoreUnavailableError);
      expect((refused as Error).message).toMatch(/earlier version/);
      expect((refused as Error).message).toMatch(/ensureSchema\(\)/);
      expect((refused as Error).message).toContain(
        `ALTER TABLE "${schema}"."idem_records" ADD COLUMN IF NOT EXISTS origin text;`,
      );
      // A read names the schema too (the column is missing).
      const unread = await store.get(keys.live).catch((e: unknown) => e);
      expect(unread).toBeInstanceOf(StoreUnavailableError);
      expect((unread as Error).message).toMatch(/earlier version: run store\.ensureSchema\(\)/);
      expect((unread as { cause?: { code?: string } }).cause?.code).toBe('42703');

      // Several processes start at once, each running ensureSchema().
      const starting = Array.from({ length: 3 }, () =>
        createPostgresStore({ pool, table: legacyTable }),
      );
      await Promise.all(starting.map((s) => s.ensureSchema()));
      expect(await hasOriginColumn(schema, 'idem_records')).toBe(true);
      await store.ensureSchema(); // and again: nothing to do

      // The previous version's process, its acquire statement prepared before the upgrade,
      // still acquires (the function's columns did not change), and its rows get an origin.
      const oldKey = newKey();
      const { rows: oldRows } = await oldAcquire(old, schema, oldKey, 'old-process', 60_000);
      expect(oldRows[0]).toMatchObject({ o_acquired: true, o_fence: '1' });
      expect(await originColumn(store, oldKey)).toBe('old-process');

      // A row written before: its takeover continues it, with its owner as the origin.
      await sleep(5);
      const tookOver = acquired(
        await store.acquire(acquireInput(keys.lapsed, { owner: 'new-taker' })),
      );
      expect(tookOver).toMatchObject({ fence: 2, takeover: true, origin: 'legacy-lapsed' });
      expect((await store.get(keys.lapsed))?.origin).toBe('legacy-lapsed');
      // Its owner, redelivered: its own origin, and nothing written (no origin in the row).
      const redelivered = acquired(
        await store.acquire(acquireInput(keys.live, { owner: 'legacy-live' })),
      );
      expect(redelivered).toMatchObject({ fence: 1, takeover: false, origin: 'legacy-live' });
      const liveRecord = await store.get(keys.live);
      expect(liveRecord?.owner).toBe('legacy-live');
      expect(liveRecord).not.toHaveProperty('origin');
      // A released tombstone written before: the retry continues it.
      expect(
        acquired(await store.acquire(acquireInput(keys.released, { owner: 'new-retry' }))),
      ).toMatchObject({ fence: 2, takeover: false, origin: 'legacy-released' });
      // An operator's release of a row written before: the retry continues the stuck
      // execution's request, not the token the release wrote.
      expect(await store.admin.forceRelease(keys.stuck)).toMatchObject({
        ok: true,
        fence: 2,
        previousOwner: 'legacy-stuck',
      });
      expect(
        acquired(await store.acquire(acquireInput(keys.stuck, { owner: 'after-operator' }))),
      ).toMatchObject({ fence: 3, takeover: false, origin: 'legacy-stuck' });
      // A new key begins its own.
      const fresh = acquireInput(newKey());
      expect(acquired(await store.acquire(fresh))).toMatchObject({
        fence: 1,
        origin: fresh.owner,
      });
    });
  });

  it('ensureSchema() while a transaction keeps the table locked: waits about 1.5 s at most, store statements are held up 100 ms at a time, then fails naming the statement to run', async () => {
    await withLegacyTable(async ({ schema, legacyTable }) => {
      const store = createPostgresStore({ pool, table: legacyTable });
      // A caller's transaction writing the table, not committed: ROW EXCLUSIVE, as any
      // store write or completeIn holds while it runs.
      const holder = await raw.connect();
      try {
        await holder.query('BEGIN');
        await holder.query(`LOCK TABLE ${legacyTable} IN ROW EXCLUSIVE MODE`);
        const started = performance.now();
        const ensured = store.ensureSchema().then(
          () => undefined,
          (error: unknown) => error,
        );
        // A store statement meanwhile (the previous version's complete: its signature is
        // unchanged) is not held up for the whole wait.
        await sleep(50);
        const during = performance.now();
        const { rows } = await pool.query(
          `SELECT "${schema}"."idem_records_complete"($1, 'nobody', '\\x01'::bytea, 1000) AS ok`,
          [newKey()],
        );
        expect(rows[0].ok).toBe(false);
        expect(performance.now() - during).toBeLessThan(1_000);
        const error = (await ensured) as Error & { cause?: { code?: string; hint?: string } };
        const took = performance.now() - started;
        expect(error).toBeInstanceOf(StoreUnavailableError);
        expect(error.message).toMatch(/could not add the column origin to .*idem_records/);
        expect(error.cause?.code).toBe('55P03');
        expect(error.message).toContain(
          `at a quiet moment: ALTER TABLE "${schema}"."idem_records" ADD COLUMN IF NOT EXISTS origin text;`,
        );
        expect(took).toBeGreaterThan(1_000);
        expect(took).toBeLessThan(5_000);
        expect(await hasOriginColumn(schema, 'idem_records')).toBe(false);
      } finally {
        await holder.query('ROLLBACK').catch(() => {});
        holder.release();
      }
      // Once the table is free, it goes through.
      await store.ensureSchema();
      expect(await hasOriginColumn(schema, 'idem_records')).toBe(true);
      const input = acquireInput(newKey());
      expect(acquired(await store.acquire(input)).origin).toBe(input.owner);
    });
  });
});

describe('the origin across processes', () => {
  it('a takeover and a retry from another pool continue the origin; completion then expiry begins a new one', async () => {
    const keyPrefix = randomName('origin2');
    const otherPool = makePool({ max: 2 });
    try {
      const a = createPostgresStore({ pool, table, keyPrefix });
      const b = createPostgresStore({ pool: otherPool, table, keyPrefix });
      const key = newKey();
      const first = acquireInput(key, { leaseMs: 1, retentionMs: 5_000 });
      expect(acquired(await a.acquire(first)).origin).toBe(first.owner);
      expect(await originColumn(a, key)).toBe(first.owner);
      await sleep(5);
      // Process A crashed; process B takes over through its own pool.
      const taker = acquireInput(key, { retentionMs: 5_000 });
      expect(acquired(await b.acquire(taker))).toMatchObject({
        fence: 2,
        takeover: true,
        origin: first.owner,
      });
      // Redelivered to B: the same.
      expect(acquired(await b.acquire(taker))).toMatchObject({
        fence: 2,
        takeover: false,
        origin: first.owner,
      });
      expect(await b.release({ key, owner: taker.owner, retentionMs: 5_000 })).toEqual({
        ok: true,
      });
      // The retry, back on A's pool.
      const retry = acquireInput(key, { retentionMs: 5_000 });
      expect(acquired(await a.acquire(retry))).toMatchObject({ fence: 3, origin: first.owner });
      expect(await a.get(key)).toMatchObject({ owner: retry.owner, origin: first.owner });
      expect(
        await a.complete({
          key,
          owner: retry.owner,
          outcome: new Uint8Array([1]),
          retentionMs: 300,
        }),
      ).toEqual({ ok: true });
      expect((await b.get(key))?.origin).toBe(first.owner);
      await sleep(400);
      // Its retention passed: the key is a new logical request, the fence still grows.
      const later = acquireInput(key);
      expect(acquired(await b.acquire(later))).toMatchObject({ fence: 4, origin: later.owner });
    } finally {
      await otherPool.end();
    }
  });

  it("the transactional engine's originId: the same for the retry on another pool, as core computes it for the store's origin", async () => {
    const keyPrefix = randomName('origintx');
    const otherPool = makePool({ max: 4 });
    try {
      const engines = [pool, otherPool].map((p) =>
        createPostgresIdempotency<string>({
          store: createPostgresStore({ pool: p, table, keyPrefix }),
          heartbeatMs: false,
        }),
      );
      const seen: string[] = [];
      const request = { key: 'k', scope: 's' };
      await expect(
        engines[0]!.execute(request, async ({ originId }) => {
          seen.push(originId);
          throw new Error('transient');
        }),
      ).rejects.toThrow('transient');
      const done = await engines[1]!.execute(request, async (ctx) => {
        seen.push(ctx.originId);
        expect(Object.keys(ctx)).toContain('originId');
        return ctx.originId;
      });
      expect(done).toEqual({ value: seen[0], replayed: false });
      expect(seen).toHaveLength(2);
      expect(seen[0]).toMatch(/^[0-9a-f]{32}$/);
      expect(seen[1]).toBe(seen[0]);
      // Core's engine on the same store names another key's request otherwise.
      const plain = createIdempotency<string>({
        store: createPostgresStore({ pool, table, keyPrefix }),
        heartbeatMs: false,
      });
      const other = await plain.execute({ key: 'other', scope: 's' }, async (c) => c.originId);
      expect(other.value).toMatch(/^[0-9a-f]{32}$/);
      expect(other.value).not.toBe(seen[0]);
    } finally {
      await otherPool.end();
    }
  });
});

describe('admin and the origin', () => {
  it('forceRelease keeps it; delete forgets it (the tombstone holds none) while the fence keeps growing; each acquisition is still one statement', async () => {
    const counted = makePool({ max: 2 });
    try {
      const store = createPostgresStore({ pool: counted, table, keyPrefix: randomName('oadm') });
      const sent = countStatements(counted);
      const key = newKey();
      const first = acquireInput(key);
      expect(acquired(await store.acquire(first)).origin).toBe(first.owner);
      expect(await store.admin.forceRelease(key)).toMatchObject({ ok: true, fence: 2 });
      expect(await originColumn(store, key)).toBe(first.owner);
      const retry = acquireInput(key);
      expect(acquired(await store.acquire(retry))).toMatchObject({
        fence: 3,
        origin: first.owner,
      });
      expect(await store.admin.delete(key)).toEqual({ deleted: true });
      // The fence-only tombstone carries no origin into the next acquisition.
      expect(await originColumn(store, key)).toBeNull();
      const next = acquireInput(key);
      sent.take();
      expect(acquired(await store.acquire(next))).toMatchObject({
        fence: 4,
        takeover: false,
        origin: next.owner,
      });
      expect(sent.take()).toEqual(['acquire']);
      expect((await store.get(key))?.origin).toBe(next.owner);
      // A completed record deleted: the same.
      expect(
        await store.complete({
          key,
          owner: next.owner,
          outcome: new Uint8Array([2]),
          retentionMs: HOUR,
        }),
      ).toEqual({ ok: true });
      expect(await store.admin.delete(key)).toEqual({ deleted: true });
      const after = acquireInput(key);
      expect(acquired(await store.acquire(after))).toMatchObject({
        fence: 5,
        origin: after.owner,
      });
    } finally {
      await counted.end();
    }
  });
});
