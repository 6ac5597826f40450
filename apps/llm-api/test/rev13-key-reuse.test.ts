import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config.js';
import { type RunningServer, startServer } from '../src/server.js';
import { connectRedis, deletePrefix, REDIS_URL, randomPrefix } from './redis.js';
import type { UsageJson } from './stack.js';

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

  const post = async (prompt: string) => {
    const response = await fetch(`${server.url}/api/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'idempotency-key': 'daily-report' },
      body: JSON.stringify({ prompt, model: 'local-1' }),
    });
    return { status: response.status, json: (await response.json()) as { id: string } };
  };
  const usage = async () => (await (await fetch(`${server.url}/v1/usage`)).json()) as UsageJson;

  // FINDING (MEDIUM, billing / message ids; open): a message id is derived from the storage key
  // alone (`billingTarget`: `msg_` + the key's first 32 characters), so that every execution of
  // one logical request, a takeover included, bills the same ledger entry. But a storage key
  // outlives its logical request: once the completed record's retention (24 h) passes, the
  // same Idempotency-Key is a new request (DESIGN.md: "retention passed -> ACQUIRED"), and it
  // gets the same message id. Within the fence memory (store-redis keeps a key's fence 24 h
  // past its record) its fence is higher, and its bill REPLACES the first request's entry
  // ("a higher fence replaces the entry and never adds to it"): two model runs, two answers
  // delivered, one bill, the first request's tokens gone from the ledger, and two different
  // messages under one id. Later (fence restarted at 1, or on stores without fence memory)
  // its bill is taken for a duplicate of the first ('duplicate'): not billed at all; with the
  // old entry at fence 2 the new execution's bill is refused as stale (409 lease_lost)
  // although nothing else runs (these two by reading the code, not run here). Reproduce: this test (Redis drops a record at the end of its
  // retention; the test deletes it, as that expiry does, instead of waiting 24 h).
  // Suggested fix: tell a new logical request from a takeover when the key is acquired
  // (core knows whether the record it replaced had completed: expose it, or a cycle number,
  // on the execution context) and derive the message id from the storage key and that cycle.
  it.fails('a new request under an expired key is billed as a new message', async () => {
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
