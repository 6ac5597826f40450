import { randomBytes } from 'node:crypto';
import { createIdempotency } from '@idem/core';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Backend, openBackend } from '../src/backend.js';
import type { LedgerEntry } from '../src/ledger/ledger.js';
import { deleteDemoRows } from '../src/stores/postgres-cleanup.js';
import { openPostgresBackend, RECORDS_TABLE } from '../src/stores/postgres-connection.js';

const DATABASE_URL = process.env.DATABASE_URL?.trim() || 'postgres://postgres@127.0.0.1:5432/test';
const prefix = `llm-test:${randomBytes(4).toString('hex')}:`;
let backend: Backend;
const raw = new pg.Pool({ connectionString: DATABASE_URL, max: 2 });

beforeAll(async () => {
  try {
    backend = await openBackend({ kind: 'postgres', url: DATABASE_URL }, prefix, {
      timeoutMs: 2_000,
    });
  } catch (error) {
    throw new Error(
      `These tests need PostgreSQL at ${DATABASE_URL} (${(error as Error).message}): run bash scripts/bootstrap.sh --services, or set DATABASE_URL`,
    );
  }
});
afterAll(async () => {
  await deleteDemoRows(DATABASE_URL, prefix).catch(() => undefined);
  await backend?.close();
  await raw.end();
});

/** A request's message id in these tests (the app derives it from the request's originId). */
const idOf = (storageKey: string) => `msg_${storageKey.slice(0, 32)}`;

const bill = (storageKey: string, fence: number): LedgerEntry => ({
  messageId: idOf(storageKey),
  model: 'local-1',
  promptTokens: 3,
  completionTokens: 4,
  totalTokens: 7,
  fence,
  billedAt: Date.now(),
});
const billed = async () => (await backend.ledger.entries()).map((e) => [e.messageId, e.fence]);
const outcome = new Uint8Array([1, 2, 3]);
const HOUR = 3_600_000;

describe('PostgreSQL backend: the bill commits with the completion', () => {
  it('a keyed bill is written by the completion, not before', async () => {
    const key = randomBytes(32).toString('hex');
    const owner = 'owner-a';
    await backend.store.acquire({
      key,
      owner,
      fingerprint: '',
      leaseMs: 30_000,
      retentionMs: HOUR,
    });
    expect(await backend.ledger.bill(bill(key, 1), key)).toBe('billed');
    expect(await billed()).not.toContainEqual([idOf(key), 1]);
    expect(await backend.store.complete({ key, owner, outcome, retentionMs: HOUR })).toEqual({
      ok: true,
    });
    expect(await billed()).toContainEqual([idOf(key), 1]);
    expect((await backend.store.get(key))?.status).toBe('completed');
  });

  it('an execution that lost its lease neither completes nor bills; the new owner bills once', async () => {
    const key = randomBytes(32).toString('hex');
    await backend.store.acquire({
      key,
      owner: 'stale',
      fingerprint: '',
      leaseMs: 50,
      retentionMs: HOUR,
    });
    await backend.ledger.bill(bill(key, 1), key);
    await new Promise((resolve) => setTimeout(resolve, 80));
    const taken = await backend.store.acquire({
      key,
      owner: 'new',
      fingerprint: '',
      leaseMs: 30_000,
      retentionMs: HOUR,
    });
    expect(taken).toMatchObject({ kind: 'acquired', fence: 2, takeover: true });
    expect(await backend.ledger.bill(bill(key, 2), key)).toBe('replaced');
    expect(
      await backend.store.complete({ key, owner: 'stale', outcome, retentionMs: HOUR }),
    ).toEqual({
      ok: false,
      reason: 'not_owner',
    });
    expect(await billed()).not.toContainEqual([idOf(key), 1]);
    expect(await backend.store.complete({ key, owner: 'new', outcome, retentionMs: HOUR })).toEqual(
      { ok: true },
    );
    expect((await billed()).filter(([id]) => id === idOf(key))).toEqual([[idOf(key), 2]]);
  });

  it('a released execution is not billed', async () => {
    const key = randomBytes(32).toString('hex');
    await backend.store.acquire({
      key,
      owner: 'o',
      fingerprint: '',
      leaseMs: 30_000,
      retentionMs: HOUR,
    });
    await backend.ledger.bill(bill(key, 1), key);
    expect(await backend.store.release({ key, owner: 'o', retentionMs: HOUR })).toEqual({
      ok: true,
    });
    expect(await billed()).not.toContainEqual([idOf(key), 1]);
  });

  it('a completion whose connection is killed mid-transaction records and bills nothing; core retries it, once', async () => {
    const idem = createIdempotency<string>({
      store: backend.store,
      heartbeatMs: false,
      completionWaitMs: 10_000,
    });
    const scope = randomBytes(4).toString('hex');
    const blocker = await raw.connect();
    let storageKey = '';
    try {
      const running = idem.execute({ key: 'k', scope }, async (ctx) => {
        storageKey = ctx.storageKey;
        // Another transaction holds the ledger row this bill will write: the completion's
        // transaction waits there, after its completion statement, until we kill it.
        await blocker.query('BEGIN');
        await blocker.query(
          `INSERT INTO llm_api_ledger (message_id, fence, billed_at, entry) VALUES ($1, 0, 0, '{}')`,
          [`${prefix}${idOf(ctx.storageKey)}`],
        );
        await backend.ledger.bill(bill(ctx.storageKey, ctx.fence), ctx.storageKey);
        return 'answer';
      });
      let killed = 0;
      for (let i = 0; i < 200 && killed === 0; i++) {
        const { rowCount } = await raw.query(
          `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'llm-api' AND wait_event_type = 'Lock'`,
        );
        killed = rowCount ?? 0;
        if (killed === 0) await new Promise((resolve) => setTimeout(resolve, 10));
      }
      expect(killed, 'the completion transaction was caught and killed').toBe(1);
      // Killed: nothing of it is there, neither the record's completion nor the bill.
      expect((await backend.store.get(storageKey))?.status).toBe('in_progress');
      await blocker.query('ROLLBACK');
      // Core retries the completion: a new transaction completes and bills, once.
      expect(await running).toEqual({ value: 'answer', replayed: false });
    } finally {
      await blocker.query('ROLLBACK').catch(() => undefined);
      blocker.release();
    }
    expect((await billed()).filter(([id]) => id === idOf(storageKey))).toEqual([
      [idOf(storageKey), 1],
    ]);
    expect((await backend.store.get(storageKey))?.status).toBe('completed');
  });
});

describe('PostgreSQL backend: expired records do not pile up', () => {
  it('deletes records whose retention passed more than a day ago, on its own, and no others', async () => {
    const ancient = `${prefix}idem:${randomBytes(32).toString('hex')}`;
    const live = `${prefix}idem:${randomBytes(32).toString('hex')}`;
    // Expired long ago (epoch ms 1), and one that lives for an hour.
    await raw.query(
      `INSERT INTO ${RECORDS_TABLE} (key, status, fingerprint, owner, fence, lease_until, expires_at)
       VALUES ($1, 'released', '', 'o', 7, 1, 1),
              ($2, 'completed', '', 'o', 1, 1, floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint + 3600000)`,
      [ancient, live],
    );
    const own = await openPostgresBackend(DATABASE_URL, prefix, 2_000, { cleanupEveryMs: 100 });
    try {
      const count = async (key: string) =>
        Number(
          (await raw.query(`SELECT count(*) AS n FROM ${RECORDS_TABLE} WHERE key = $1`, [key]))
            .rows[0].n,
        );
      let left = 1;
      for (let i = 0; i < 100 && left > 0; i++) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        left = await count(ancient);
      }
      expect(left, 'the expired record was deleted').toBe(0);
      expect(await count(live), 'the live record is kept').toBe(1);
    } finally {
      await own.close();
    }
  });
});
