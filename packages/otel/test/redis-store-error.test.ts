import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { createIdempotency } from '@idem/core';
import { createRedisStore, recommendedRedisOptions } from '@idem/store-redis';
import { SpanStatusCode } from '@opentelemetry/api';
import type { HistogramMetricData } from '@opentelemetry/sdk-metrics';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ATTR, METRIC, SPAN } from '../src/index.js';
import { telemetry } from './support/telemetry.js';

/** A free loopback port (the OS picks it). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

let server: ChildProcess | undefined;
let port = 0;

beforeAll(async () => {
  port = await freePort();
  server = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    {
      stdio: 'ignore',
    },
  );
  const failed = once(server, 'error').then(([error]) => {
    throw new Error(
      `This test starts its own redis-server (Redis 7) on a free port: install it on PATH (apt-get install redis-server). ${String(error)}`,
    );
  });
  const probe = new Redis({ host: '127.0.0.1', port, lazyConnect: true, retryStrategy: () => 50 });
  probe.on('error', () => {}); // refused until the server listens
  try {
    await Promise.race([
      failed,
      (async () => {
        for (let i = 0; i < 100; i++) {
          if ((await probe.ping().catch(() => '')) === 'PONG') return;
          await sleep(50);
        }
        throw new Error(`redis-server on port ${port} did not answer PING within 5 s`);
      })(),
    ]);
  } finally {
    probe.disconnect();
  }
});

afterAll(() => {
  if (server?.exitCode === null) server.kill('SIGKILL');
});

describe('@idem/otel on the Redis store', () => {
  it('store_error: a stopped Redis gives an error acquire span, a store_error count and error latencies', async () => {
    const t = telemetry();
    const client = new Redis({
      host: '127.0.0.1',
      port,
      ...recommendedRedisOptions({ commandTimeoutMs: 300 }),
    });
    // Reconnect attempts after the stop are expected: their errors are the store's to report.
    client.on('error', () => {});
    try {
      if (client.status !== 'ready') await once(client, 'ready');
      const idem = createIdempotency<unknown>({
        store: createRedisStore({ client, keyPrefix: `otel-${process.pid}:` }),
        storeTimeoutMs: 1_000,
        onEvent: t.listener,
      });
      const request = { key: 'k-1', scope: ['t'], operation: 'POST /x' };
      await idem.execute(request, async () => 'recorded on a live Redis');
      expect(t.spans(SPAN.acquire).map((s) => s.attributes[ATTR.result])).toEqual(['miss']);

      // Stop the server (ours alone, by its process) and wait until it is gone.
      const exited = once(server as ChildProcess, 'exit');
      server?.kill('SIGKILL');
      await exited;
      await expect(
        idem.execute({ ...request, key: 'k-2' }, async () => 'never'),
      ).rejects.toMatchObject({
        code: 'STORE_UNAVAILABLE',
      });

      const failed = t.spans(SPAN.acquire).at(-1);
      expect(failed?.attributes).toMatchObject({
        [ATTR.result]: 'store_error',
        [ATTR.storeMethod]: 'acquire',
        [ATTR.operation]: 'POST /x',
      });
      expect(failed?.status.code).toBe(SpanStatusCode.ERROR);
      expect(failed?.events.map((e) => e.name)).toContain('exception');
      expect(
        await t.point(METRIC.results, {
          [ATTR.result]: 'store_error',
          [ATTR.storeMethod]: 'acquire',
        }),
      ).toBe(1);
      const latency = (await t.metrics()).get(
        METRIC.storeDuration,
      ) as HistogramMetricData['dataPoints'];
      const errors = latency.find(
        (p) =>
          p.attributes[ATTR.storeMethod] === 'acquire' &&
          p.attributes[ATTR.storeOutcome] === 'error',
      );
      expect(errors?.value.count).toBe(1);
    } finally {
      client.disconnect();
      await t.shutdown();
    }
  });
});
