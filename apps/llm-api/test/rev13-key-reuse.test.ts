import type { Redis } from 'ioredis';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config.js';
import { type RunningServer, startServer } from '../src/server.js';
import { deleteDemoRows } from '../src/stores/postgres-cleanup.js';
import { RECORDS_TABLE } from '../src/stores/postgres-connection.js';
import { connectRedis, deletePrefix, REDIS_URL, randomPrefix } from './redis.js';
import type { UsageJson } from './stack.js';

/** The same client request, `daily-report`, with another prompt each day. */
async function postReport(url: string, prompt: string) {
  const response = await fetch(`${url}/api/messages`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'idempotency-key': 'daily-report' },
    body: JSON.stringify({ prompt, model: 'local-1' }),
  });
  return { status: response.status, json: (await response.json()) as { id: string } };
}

const usageOf = async (url: string) => (await (await fetch(`${url}/v1/usage`)).json()) as UsageJson;

describe('rev13: a key used again once its record expired (Redis)', () => {
  let server: RunningServer;
  let redis: Redis;
  const prefix = randomPrefix();
  beforeAll(async () => {
    redis = await connectRedis();
    server = await startServer(
      parseConfig({
        PORT: '0',
        REDIS_URL,
        IDEM_KEY_PREFIX: prefix,
        MODEL_CHUNK_DELAY_MS: '1',
        IDEM_OTEL: 'off',
      }),
    );
  });
  afterAll(async () => {
    await server?.close();
    await deletePrefix(redis, prefix);
    redis?.disconnect();
  });

  const post = (prompt: string) => postReport(server.url, prompt);
  const usage = () => usageOf(server.url);

  // FIXED (was FINDING MEDIUM, billing / message ids): a message id was derived from the
  // storage key alone (`billingTarget`: `msg_` + the key's first 32 characters), so that every
  // execution of one logical request, a takeover included, billed the same ledger entry. But a
  // storage key outlives its logical request: once the completed record's retention (24 h)
  // passed, the same Idempotency-Key was a new request and got the same message id; within
  // the fence memory its higher fence REPLACED the first request's bill (two model runs, two
  // answers, one bill, two messages under one id); later (fences restarted) it was taken for
  // a duplicate, or refused as stale. Fix: the stores keep each record's origin (the owner
  // token of the acquisition that began its logical request: carried over by takeovers and
  // by retries after a release, new for a free or expired key) and core hands the handler an
  // `originId` derived from it; the message id is `msg_` + originId. Reproduce: this test
  // (Redis drops a record at the end of its retention; the test deletes it, as that expiry
  // does, instead of waiting 24 h). It failed before the fix.
  it('a new request under an expired key is billed as a new message', async () => {
    const before = await usage();
    const first = await post('the first report');
    expect(first.status).toBe(201);
    // The record's retention has passed: Redis has dropped it (its TTL); its fence memory stays.
    const records = (await redis.keys(`${prefix}idem:{*}`)).filter((k) => !k.endsWith(':fence'));
    expect(records).toHaveLength(1);
    await redis.del(records[0] as string);
    const second = await post('the next day: another report');
    expect(second.status).toBe(201);
    const after = await usage();
    expect(after.model_executions.started - before.model_executions.started).toBe(2);
    expect({
      distinctIds: second.json.id !== first.json.id,
      billed: after.totals.messages - before.totals.messages,
    }).toEqual({ distinctIds: true, billed: 2 });
  }, 20_000);
});

describe('rev13: a key used again once its record expired (PostgreSQL, bills in the completion transaction)', () => {
  const DATABASE_URL =
    process.env.DATABASE_URL?.trim() || 'postgres://postgres@127.0.0.1:5432/test';
  let server: RunningServer;
  const raw = new pg.Pool({ connectionString: DATABASE_URL, max: 1 });
  const prefix = randomPrefix();
  beforeAll(async () => {
    server = await startServer(
      parseConfig({
        PORT: '0',
        DATABASE_URL,
        IDEM_KEY_PREFIX: prefix,
        MODEL_CHUNK_DELAY_MS: '1',
        IDEM_OTEL: 'off',
      }),
    );
  });
  afterAll(async () => {
    await server?.close();
    await deleteDemoRows(DATABASE_URL, prefix).catch(() => undefined);
    await raw.end();
  });

  const post = (prompt: string) => postReport(server.url, prompt);
  const usage = () => usageOf(server.url);

  it('the retention passed (the row stays until deleteExpired): a new message, billed beside the first', async () => {
    const before = await usage();
    const first = await post('the first report');
    expect(first.status).toBe(201);
    // PostgreSQL keeps the row; its retention has passed (the test moves its deadline into
    // the past, as a day going by does).
    const { rowCount } = await raw.query(
      `UPDATE ${RECORDS_TABLE} SET expires_at = 1 WHERE starts_with(key, $1) AND status = 'completed'`,
      [prefix],
    );
    expect(rowCount).toBe(1);
    const second = await post('the next day: another report');
    expect(second.status).toBe(201);
    // A retry of the second request replays it (same id), and bills nothing.
    const replay = await post('the next day: another report');
    expect(replay.json.id).toBe(second.json.id);
    const after = await usage();
    expect(after.model_executions.started - before.model_executions.started).toBe(2);
    expect({
      distinctIds: second.json.id !== first.json.id,
      billed: after.totals.messages - before.totals.messages,
    }).toEqual({ distinctIds: true, billed: 2 });
  }, 20_000);
});
