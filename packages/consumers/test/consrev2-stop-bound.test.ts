// consrev2: stop(timeoutMs) resolves within `timeoutMs + storeTimeoutMs`. Past `timeoutMs` it
// waits only for the releases of keys granted to acquisitions still unanswered then; each was
// sent before, so the engine settles it within `storeTimeoutMs` and its release is sent at
// once. Before, it waited up to `2 x storeTimeoutMs + 1 s` (11 s by default, even for
// stop(0)), for the answer of a release to a store that answered the acquisition late and
// then went silent: a release that times out anyway. Here the acquisition is answered
// 2.5 s late and the release never: the release is sent before stop(0) resolves, and stop(0)
// resolves before the engine's time limit for that release (5 s from its send) could end,
// which the old bound waited for. Ordered by timers, not measured: a marker timer set when
// the release is sent, 1 s shorter than the engine's own, must not have fired yet.
import { setTimeout as sleep } from 'node:timers/promises';
import type { IdempotencyStore } from '@idem/core';
import { createRedisStore } from '@idem/store-redis';
import { expect, it } from 'vitest';
import type { IdempotentConsumer, MessageReport } from '../src/index.js';
import { amqpQueues, jetStreamBed, jetStreamBench, rabbitBench } from './brokers.js';
import { until } from './late-store.js';
import { within } from './silent-proxy.js';

const bed = jetStreamBed('consrev2-bound');
const queues = amqpQueues();
// Wide margins for a loaded machine: the late answer comes 2.5 s before the acquire's time
// limit, and stop() closes its processor 1.5 s before it would have to.
const STORE_TIMEOUT_MS = 5_000;
const LATE_MS = 2_500;
const MARKER_MS = STORE_TIMEOUT_MS - 1_000;

for (const [name, open] of [
  ['RabbitMQ', () => rabbitBench(queues, 'consrev2-bound')],
  ['NATS JetStream', () => jetStreamBench(bed.nc, bed.streams, 'consrev2b')],
] as const) {
  it(`${name}: stop(0) with an acquisition answered late and a release never answered: the release is sent before it resolves, within timeoutMs + storeTimeoutMs`, {
    timeout: 30_000,
  }, async () => {
    const bench = await open();
    let marker: ReturnType<typeof setTimeout> | undefined;
    try {
      let consumer: IdempotentConsumer | undefined;
      let stopping: Promise<void> | undefined;
      let stopped = false;
      const releases: string[] = [];
      let markerFired = false;
      const inner = createRedisStore({ client: bed.redis, keyPrefix: bed.prefix });
      const store = new Proxy(inner, {
        get(target, prop, receiver) {
          if (prop === 'acquire')
            return async (input: Parameters<IdempotencyStore['acquire']>[0]) => {
              // The acquisition is sent: the consumer is stopped now, with stop(0).
              stopping ??= consumer?.stop(0).then(() => {
                stopped = true;
              });
              const answer = await target.acquire(input);
              await sleep(LATE_MS);
              return answer;
            };
          if (prop === 'release')
            return () => {
              releases.push('sent');
              marker = setTimeout(() => {
                markerFired = true;
              }, MARKER_MS);
              return new Promise(() => {});
            };
          return Reflect.get(target, prop, receiver);
        },
      }) as IdempotencyStore;
      const runs: string[] = [];
      const seen: Array<[string, unknown]> = [];
      consumer = await bench.start(store, {
        storeTimeoutMs: STORE_TIMEOUT_MS,
        handler: async () => {
          runs.push('run');
          return 'run';
        },
        onMessage: (r: MessageReport<unknown>) =>
          seen.push([r.status, (r.error as { code?: unknown } | undefined)?.code]),
      });
      await bench.publish();
      expect(await until(() => stopping !== undefined, 10_000)).toBe(true);
      expect(await within(stopping as Promise<void>, 15_000)).not.toBe('timeout');
      // Sent before stop() resolved (the application may close the store's connection now)...
      expect(releases).toEqual(['sent']);
      // ...and stop() did not wait for the engine to give that release up (the old bound did).
      expect(markerFired).toBe(false);
      expect(stopped).toBe(true);
      // The engine then gives the release up: the message goes back, its handler never run.
      expect(await until(() => seen.length > 0, 10_000)).toBe(true);
      expect([seen, runs]).toEqual([[['failed', 'HANDLER_NOT_STARTED']], []]);
    } finally {
      clearTimeout(marker);
      await bench.close();
    }
  });
}
