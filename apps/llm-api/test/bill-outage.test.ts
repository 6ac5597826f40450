import { generateKey } from '@idem/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config.js';
import { type RunningServer, startServer } from '../src/server.js';
import { type Answer, answer } from './answers.js';
import { type CountingUpstream, startCountingUpstream } from './counting-upstream.js';
import { sleep } from './fault-stack.js';
import { type OwnRedis, startOwnRedis } from './own-redis.js';
import { randomPrefix } from './redis.js';

/** Shorter than the 3 s lease: the brief's "restart after 1 s". */
const OUTAGE_MS = 1_000;
/** One attempt's limit: model, a lease and store timeouts, with margin. */
const ATTEMPT_MS = 15_000;

describe('a Redis kill -9 (AOF always) while model runs end and bill', () => {
  let redis: OwnRedis;
  let upstream: CountingUpstream;
  let server: RunningServer;
  beforeAll(async () => {
    redis = await startOwnRedis(['--appendonly', 'yes', '--appendfsync', 'always', '--save', '']);
    upstream = await startCountingUpstream({ gated: true });
    server = await startServer(
      parseConfig({
        PORT: '0',
        REDIS_URL: redis.url,
        UPSTREAM_URL: upstream.url,
        IDEM_KEY_PREFIX: randomPrefix(),
        IDEM_LEASE_MS: '3000',
        IDEM_STORE_TIMEOUT_MS: '1000',
      }),
    );
  });
  afterAll(async () => {
    await server?.close();
    await upstream?.close();
    await redis?.stop();
  });

  const request = (key: string, body: unknown, path: string) =>
    answer(
      `${server.url}${path}`,
      {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'idempotency-key': key },
        body: JSON.stringify(body),
      },
      ATTEMPT_MS,
    );

  it('runs each model once: the bill waits out the outage instead of a 503 that a takeover runs again', async () => {
    const logical = [
      { key: generateKey(), path: '/api/messages', body: { prompt: 'bill 1', model: 'm' } },
      { key: generateKey(), path: '/api/messages', body: { prompt: 'bill 2', model: 'm' } },
      ...[false, true].map((stream) => ({
        key: generateKey(),
        path: '/v1/chat/completions',
        body: { model: 'm', stream, messages: [{ role: 'user', content: `bill ${stream}` }] },
      })),
    ];
    const first = logical.map((l) => request(l.key, l.body, l.path).catch((e: Error) => e));
    await upstream.waitForCalls(logical.length);

    // Every model run ends (and bills) while Redis is down; Redis is back 1 s later.
    await redis.kill();
    upstream.open();
    await sleep(OUTAGE_MS);
    await redis.restart();

    const firstAnswers = await Promise.all(first);
    const finals: string[] = [];
    for (const [i, l] of logical.entries()) {
      let got = firstAnswers[i] as Answer | Error;
      // A client that retries with its key until it gets an answer (409 while in progress).
      for (let attempt = 0; attempt < 60; attempt += 1) {
        if (!(got instanceof Error) && got.status < 300) break;
        await sleep(250);
        got = await request(l.key, l.body, l.path).catch((e: Error) => e);
      }
      expect(got instanceof Error ? got.message : got.status, l.path).toBeLessThan(300);
      if (!(got instanceof Error)) finals.push(got.body);
    }
    await sleep(500); // let any late second execution finish before counting
    const executions = [...upstream.completed.values()];
    expect({ keys: upstream.started.size, executions }).toEqual({
      keys: logical.length,
      executions: logical.map(() => 1),
    });
    const usage = (await (await fetch(`${server.url}/v1/usage`)).json()) as {
      data: unknown[];
    };
    expect(usage.data).toHaveLength(logical.length);
    expect(finals).toHaveLength(logical.length);
  }, 60_000);
});
