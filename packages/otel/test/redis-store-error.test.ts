import { once } from 'node:events';
import { createIdempotency } from '@idem/core';
import { createRedisStore, recommendedRedisOptions } from '@idem/store-redis';
import { type PrivateRedis, startPrivateRedis } from '@idem/test-ledger';
import { SpanStatusCode } from '@opentelemetry/api';
import type { HistogramMetricData } from '@opentelemetry/sdk-metrics';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ATTR, METRIC, SPAN } from '../src/index.js';
import { telemetry } from './support/telemetry.js';

let redis: PrivateRedis | undefined;
let port = 0;

beforeAll(async () => {
  redis = await startPrivateRedis();
  port = redis.port;
});

afterAll(async () => {
  await redis?.stop();
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
      await redis?.stop();
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
