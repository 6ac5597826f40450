import { generateKey, StoreUnavailableError } from '@idem/core';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../src/app.js';
import { openBackend } from '../src/backend.js';
import { parseConfig } from '../src/config.js';
import { createLocalModel } from '../src/model/local-model.js';
import { type RunningServer, startServer } from '../src/server.js';
import { type Answer, answer, expectUnavailable } from './answers.js';
import { connectRedis, deletePrefix, REDIS_URL, randomPrefix } from './redis.js';

const BOUND_MS = 10_000;

describe('Redis errors inside the ledger and the counters', () => {
  let redis: Redis;
  let server: RunningServer;
  const prefix = randomPrefix();
  beforeAll(async () => {
    redis = await connectRedis();
    server = await startServer(
      parseConfig({ PORT: '0', REDIS_URL, IDEM_KEY_PREFIX: prefix, MODEL_CHUNK_DELAY_MS: '1' }),
    );
  });
  afterAll(async () => {
    await server?.close();
    if (redis) {
      await deletePrefix(redis, prefix);
      redis.disconnect();
    }
  });

  const message = (key = generateKey()): Promise<Answer> =>
    answer(
      `${server.url}/api/messages`,
      {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'idempotency-key': key },
        body: JSON.stringify({ prompt: `ledger fault ${key.slice(0, 8)}`, model: 'local-1' }),
      },
      BOUND_MS,
    );
  const chat = (stream: boolean): Promise<Answer> =>
    answer(
      `${server.url}/v1/chat/completions`,
      {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'idempotency-key': generateKey() },
        body: JSON.stringify({
          model: 'local-1',
          stream,
          messages: [{ role: 'user', content: `ledger fault ${generateKey().slice(0, 8)}` }],
        }),
      },
      BOUND_MS,
    );

  const expectProblem = (name: string, got: Answer) => {
    expectUnavailable(name, got);
    expect(got.contentType, name).toMatch(/^application\/problem\+json/);
  };

  it('a bill that Redis refuses (WRONGTYPE) answers 503 + Retry-After, and a retry succeeds once Redis is sane', async () => {
    // The ledger hash is a string now: HGET/HSET in the bill script fail.
    await redis.set(`${prefix}ledger`, 'not a hash');
    const key = generateKey();
    expectProblem('POST /api/messages', await message(key));
    expectProblem('POST /v1/chat/completions', await chat(false));
    expectProblem('GET /v1/usage', await answer(`${server.url}/v1/usage`, {}, BOUND_MS));

    await redis.del(`${prefix}ledger`);
    const retried = await message(key);
    expect(retried.status).toBe(201);
  });

  it('a counter that Redis refuses (WRONGTYPE) answers 503 + Retry-After, streaming included', async () => {
    await redis.set(`${prefix}stats`, 'not a hash');
    expectProblem('POST /api/messages', await message());
    expectProblem('POST /v1/chat/completions', await chat(false));
    expectProblem('POST /v1/chat/completions stream', await chat(true));
    expectProblem('GET /v1/usage', await answer(`${server.url}/v1/usage`, {}, BOUND_MS));
    await redis.del(`${prefix}stats`);
    expect((await message()).status).toBe(201);
  });
});

describe('a counter that fails after the bill landed', () => {
  it('does not fail the request: the answer is recorded and a retry replays it (one execution)', async () => {
    const backend = await openBackend({ kind: 'memory' }, 'test:');
    const ledger = backend.ledger;
    // The counters are monitoring, the bill is the record: once the bill landed, a counter
    // the store refuses must not turn a billed answer into a 503 that a retry runs again.
    backend.ledger = {
      ...ledger,
      count: async (name) => {
        if (name === 'model_completed') throw new StoreUnavailableError('counter refused');
        return ledger.count(name);
      },
    };
    const { app } = createApp({ backend, model: createLocalModel({ chunkDelayMs: 0 }) });
    const key = generateKey();
    const send = () =>
      app.request('/api/messages', {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'idempotency-key': key },
        body: JSON.stringify({ prompt: 'counted late', model: 'local-1' }),
      });
    const first = await send();
    expect(first.status).toBe(201);
    const again = await send();
    expect(again.headers.get('idempotent-replayed')).toBe('true');
    expect(await ledger.stats()).toMatchObject({ model_started: 1 });
    expect(await ledger.entries()).toHaveLength(1);
    await backend.close();
  });
});

describe('recording the answer fails', () => {
  it('answers 503 + Retry-After (problem+json), not 500', async () => {
    const backend = await openBackend({ kind: 'memory' }, 'test:');
    const store = backend.store;
    backend.store = {
      ...store,
      complete: async () => {
        throw new StoreUnavailableError('the store went away before the answer was recorded');
      },
    };
    const { app } = createApp({ backend, model: createLocalModel({ chunkDelayMs: 0 }) });
    const response = await app.request('/api/messages', {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'idempotency-key': generateKey() },
      body: JSON.stringify({ prompt: 'not recorded', model: 'local-1' }),
    });
    expect(response.status).toBe(503);
    expect(response.headers.get('retry-after')).toBe('1');
    expect(response.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    await backend.close();
  });
});
