/**
 * rev13fix adversarial review of the chunk joining (621d666): an entry is now written from a
 * view of the recorder's whole capture (`Buffer.from(body.buffer, ...)`), not a copy of the
 * chunk. ioredis keeps a command's arguments until its answer (to resend it after a
 * reconnect): while Redis is silent, each XADD in flight pins its response's whole capture
 * buffer, after the response ended and everything else let go of it. A redis-server of its
 * own on a free port, SIGSTOPped (never the shared 6379).
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRedisLiveStreams, createRedisStore } from '../src/index.js';
import {
  type RedisServer,
  redisBinariesAvailable,
  signalRedisServer,
  startRedisServer,
  stopRedisServer,
} from './redis-servers.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe.skipIf(!redisBinariesAvailable())(
  'rev13fix: capture views held by XADDs in flight',
  () => {
    let server: RedisServer;
    let client: Redis;
    let blocking: Redis;
    beforeAll(async () => {
      server = await startRedisServer();
      // As the README's live-stream example builds them: plain clients.
      client = new Redis({ host: '127.0.0.1', port: server.port, lazyConnect: true });
      blocking = new Redis({ host: '127.0.0.1', port: server.port, lazyConnect: true });
      client.on('error', () => {});
      blocking.on('error', () => {});
      await client.connect();
      await blocking.connect();
    }, 30_000);
    afterAll(async () => {
      if (server) await signalRedisServer(server, 'SIGCONT');
      client?.disconnect();
      blocking?.disconnect();
      if (server) await stopRedisServer(server);
    });

    // FIXED (was FINDING LOW, bounded memory; fixed in src/redis-live-streams.ts: an entry's
    // bytes are copied from the capture when it is sent, so only they wait for the answer):
    // a live-stream entry is written from a view of the
    // recorder's capture, and ioredis holds the XADD's arguments until Redis answers. When Redis
    // falls silent (paused, blackholed) every stream's write in flight pins that response's whole
    // capture buffer (up to the outcome cap, its spare capacity included) for as long as Redis
    // stays silent with the README's plain clients, long after the response ended and the
    // recorder, the publisher and the store let go: here 20 streams of 1 KiB chunks pin 20 x
    // 4 MiB = 80 MiB. Before 621d666 each entry was a copy of its chunk (1 KiB each pinned).
    // Reproduce: 20 publishers, SIGSTOP, one 1 KiB chunk each whose `body` lives in a 4 MiB
    // capture, end them, drop every reference, gc: the captures are still alive. Suggested
    // fix: copy the joined bytes when the entry is sent (one copy of what goes out, as before
    // the fix, still one entry per write), so only those bytes wait for the answer.
    it('a capture is freed once its response ended, while Redis is silent', {
      timeout: 30_000,
    }, async () => {
      const store = createRedisStore({ client, keyPrefix: 'r13fxpin:' });
      const live = createRedisLiveStreams({
        client,
        blockingClient: blocking,
        store,
        keyPrefix: 'r13fxpin:live:',
        commandTimeoutMs: 300,
        endGraceMs: 500,
      });
      const controller = new AbortController();
      const streams = 20;
      const refs: WeakRef<ArrayBuffer>[] = [];
      const publishers = Array.from({ length: streams }, (_, i) =>
        live.publish({ storageKey: `k${i}`, fence: 1, leaseMs: 20_000, signal: controller.signal }),
      );
      for (const publisher of publishers)
        publisher.append({ kind: 'head', status: 200, headers: [] });
      // Heads answered: the streams exist and no write is in flight.
      for (
        let i = 0;
        i < 100 && (await client.exists(`r13fxpin:live:${store.redisKey('k0')}:1`)) === 0;
        i++
      )
        await sleep(10);
      await sleep(50);
      await signalRedisServer(server, 'SIGSTOP');
      (() => {
        for (const publisher of publishers) {
          // A capture as @idem/http keeps one: 4 MiB of capacity, 1 KiB written so far.
          const capture = new Uint8Array(4 * 1024 * 1024);
          capture.fill(97, 0, 1024);
          refs.push(new WeakRef(capture.buffer));
          const body = capture.subarray(0, 1024);
          publisher.append({ kind: 'chunk', offset: 0, bytes: body, body });
        }
      })();
      // The responses end; the gate gives the writes up after commandTimeoutMs.
      await Promise.all(publishers.map((publisher) => publisher.end(false)));
      controller.abort();
      publishers.length = 0;
      await sleep(50);
      for (let i = 0; i < 5; i++) {
        gc();
        await sleep(20);
      }
      const alive = refs.filter((ref) => ref.deref() !== undefined).length;
      console.log(
        `[rev13fix view pin] captures alive while Redis is silent: ${alive} of ${streams} (4 MiB each)`,
      );
      await signalRedisServer(server, 'SIGCONT');
      expect(alive).toBe(0);
    });
  },
);
