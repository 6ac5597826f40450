import { generateKey } from '@idem/core';
import { afterAll, describe, expect, it } from 'vitest';
import { createApp } from '../src/app.js';
import { openBackend } from '../src/backend.js';
import { parseConfig } from '../src/config.js';
import { startServerProcess } from '../src/demo/server-process.js';
import { createLocalModel } from '../src/model/local-model.js';
import { startServer } from '../src/server.js';
import { connectRedis, deletePrefix, REDIS_URL, randomPrefix } from './redis.js';

const post = (url: string, prompt: string, key = generateKey()) =>
  fetch(`${url}/api/messages`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'idempotency-key': key },
    body: JSON.stringify({ prompt, model: 'local-1' }),
  });

const usageOf = async (url: string) =>
  (await (await fetch(`${url}/v1/usage`)).json()) as {
    totals: { messages: number };
    data: { message_id: string }[];
    model_executions: { started: number };
  };

/**
 * Resolves once the server has started running the model for a request: a fixed wait (150 ms)
 * was not enough on a loaded machine, and a close before the request was read is a refused
 * connection, not the in-flight request these tests are about.
 */
async function modelStarted(url: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  while ((await usageOf(url)).model_executions.started === 0) {
    if (Date.now() > deadline) throw new Error('the request never reached the model');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

describe('graceful shutdown', () => {
  const prefixes: string[] = [];
  afterAll(async () => {
    if (prefixes.length === 0) return;
    const redis = await connectRedis();
    for (const prefix of prefixes) await deletePrefix(redis, prefix);
    redis.disconnect();
  });

  it('lets an in-flight request finish and record; a restarted server on Redis replays it', async () => {
    await connectRedis().then((r) => r.disconnect());
    const prefix = randomPrefix();
    prefixes.push(prefix);
    const env = { PORT: '0', REDIS_URL, IDEM_KEY_PREFIX: prefix };
    const server = await startServer(parseConfig(env));
    const key = generateKey();
    const inFlight = post(server.url, '[stall:500] finishing during shutdown', key);
    await modelStarted(server.url);
    const closing = server.close();
    const response = await inFlight;
    expect(response.status).toBe(201);
    const message = (await response.json()) as { id: string };
    await expect(closing).resolves.toBe(true);
    await expect(fetch(`${server.url}/healthz`)).rejects.toThrow();

    const restarted = await startServer(parseConfig(env));
    try {
      const again = await post(restarted.url, '[stall:500] finishing during shutdown', key);
      expect(again.headers.get('idempotent-replayed')).toBe('true');
      expect(((await again.json()) as { id: string }).id).toBe(message.id);
      const usage = await usageOf(restarted.url);
      expect(usage.data.map((d) => d.message_id)).toEqual([message.id]);
    } finally {
      await restarted.close();
    }
  });

  it('answers 503 with Retry-After to requests that arrive while shutting down', async () => {
    const backend = await openBackend({ kind: 'memory' }, 'test:');
    const { app, beginShutdown } = createApp({ backend, model: createLocalModel() });
    expect((await app.request('/healthz')).status).toBe(200);
    // The memory store is always ready.
    expect(await (await app.request('/readyz')).json()).toEqual({
      status: 'ready',
      store: 'memory',
    });
    beginShutdown();
    const refused = await app.request('/api/messages', {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'idempotency-key': generateKey() },
      body: JSON.stringify({ prompt: 'too late', model: 'local-1' }),
    });
    expect(refused.status).toBe(503);
    expect(refused.headers.get('retry-after')).toBe('1');
    // Liveness stays 200 (the process is up and finishing its work); readiness goes 503 at once.
    const health = await app.request('/healthz');
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ status: 'shutting_down' });
    const ready = await app.request('/readyz');
    expect(ready.status).toBe(503);
    expect(ready.headers.get('retry-after')).toBe('1');
    expect(await ready.json()).toMatchObject({ status: 'shutting_down' });
    expect((await backend.ledger.stats()).model_started).toBe(0);
    await backend.close();
  });

  it('on SIGTERM the process finishes the request in flight and exits 0', async () => {
    const server = await startServerProcess({ PORT: '0', REDIS_URL: '', DYNAMODB_TABLE: '' });
    const inFlight = post(server.url, '[stall:600] SIGTERM arrives meanwhile');
    await modelStarted(server.url);
    const exited = server.stop();
    expect((await inFlight).status).toBe(201);
    expect(await exited).toBe(0);
    expect(server.output()).toContain('stopped cleanly');
  });
});
