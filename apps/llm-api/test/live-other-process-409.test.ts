/**
 * DynamoDB and PostgreSQL have no cross-process live streams (the http README's per-store
 * table): a duplicate of a stream in flight that reaches another process (here: a second
 * handler with a store instance of its own, on the same table) gets the documented 409
 * problem with Retry-After and runs nothing; once the first completed, it gets the replay,
 * byte-identical to what the first caller read.
 */
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import type { IdempotencyStore } from '@idem/core';
import { REPLAYED_HEADER, withIdempotency } from '@idem/http';
import { createDynamoDbStore } from '@idem/store-dynamodb';
import { createPostgresStore } from '@idem/store-postgres';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';

const DATABASE_URL = process.env.DATABASE_URL?.trim() || 'postgres://postgres@127.0.0.1:5432/test';
const helper = fileURLToPath(new URL('../../../scripts/dynamodb-local.mjs', import.meta.url));
const cleanups: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
}, 30_000);

const encoder = new TextEncoder();
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** One process's handler: streams 8 SSE events, one every 60 ms. */
function sseHandler(store: IdempotencyStore) {
  let runs = 0;
  const handle = withIdempotency(
    async () => {
      runs++;
      let n = 0;
      return new Response(
        new ReadableStream<Uint8Array>({
          async pull(controller) {
            if (n > 0) await sleep(60);
            n++;
            controller.enqueue(encoder.encode(`id: ${n}\ndata: token ${n}\n\n`));
            if (n === 8) controller.close();
          },
        }),
        { headers: { 'content-type': 'text/event-stream' } },
      );
    },
    { store, scope: () => ({ principal: 'p' }), onWarning: () => {} },
  );
  return { handle, runs: () => runs };
}

const post = (key: string) =>
  new Request('http://127.0.0.1/v1/chat/completions', {
    method: 'POST',
    headers: { 'idempotency-key': key, 'content-type': 'application/json' },
    body: '{"stream":true}',
  });

async function dynamoPair(): Promise<[IdempotencyStore, IdempotencyStore]> {
  const { startDynamoDbLocal } = (await import(helper)) as {
    startDynamoDbLocal(): Promise<{ endpoint: string; stop(): Promise<void> }>;
  };
  const local = await startDynamoDbLocal();
  cleanups.push(() => local.stop());
  const tableName = `live-409-${randomBytes(4).toString('hex')}`;
  const store = () => {
    const client = new DynamoDBClient({
      endpoint: local.endpoint,
      region: 'us-east-1',
      credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
    });
    cleanups.push(async () => client.destroy());
    return createDynamoDbStore({ client, tableName });
  };
  const [one, two] = [store(), store()];
  await one.ensureTable({ timeoutMs: 60_000 });
  return [one, two];
}

async function postgresPair(): Promise<[IdempotencyStore, IdempotencyStore]> {
  const table = `idem_live_409_${randomBytes(4).toString('hex')}`;
  const store = () => {
    const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 4 });
    cleanups.push(() => pool.end());
    return { pool, store: createPostgresStore({ pool, table }) };
  };
  const [one, two] = [store(), store()];
  await one.store.ensureSchema();
  cleanups.push(() => two.pool.query(`DROP TABLE IF EXISTS ${table}`));
  return [one.store, two.store];
}

describe.each([
  { name: 'DynamoDB (Local)', make: dynamoPair },
  { name: 'PostgreSQL', make: postgresPair },
])('a duplicate of a stream in flight on another process ($name)', ({ make }) => {
  it('gets 409 with Retry-After while it streams, then the byte-identical replay', async () => {
    const [storeA, storeB] = await make();
    const a = sseHandler(storeA);
    const b = sseHandler(storeB);
    const key = `live-409-${randomBytes(6).toString('hex')}`;
    const first = await a.handle(post(key));
    expect(first.status).toBe(200);
    const reader = first.body!.getReader();
    const parts: Uint8Array[] = [(await reader.read()).value as Uint8Array];

    const duplicate = await b.handle(post(key));
    expect(duplicate.status).toBe(409);
    expect(duplicate.headers.get('content-type')).toContain('application/problem+json');
    expect(Number(duplicate.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(await duplicate.json()).toMatchObject({
      type: 'https://idem.dev/problems/in-progress',
      status: 409,
    });

    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      parts.push(value);
    }
    const whole = Buffer.concat(parts);
    expect(whole.toString()).toContain('data: token 8');
    const replay = await b.handle(post(key));
    expect(replay.status).toBe(200);
    expect(replay.headers.get(REPLAYED_HEADER)).toBe('true');
    expect(Buffer.from(await replay.arrayBuffer()).equals(whole)).toBe(true);
    expect([a.runs(), b.runs()]).toEqual([1, 0]);
  }, 90_000);
});
