/**
 * A Redis restarted with a large data set answers LOADING until it has read it back. With
 * ioredis's defaults a client that connected meanwhile waits a second or more (the loading
 * ETA) before checking again; recommendedRedisOptions() checks every 100 ms, so service
 * resumes as soon as Redis does.
 */
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { createRedisStore, recommendedRedisOptions } from '../src/index.js';
import {
  type RedisServer,
  redisBinariesAvailable,
  restartRedisServer,
  signalRedisServer,
  startRedisServer,
  stopRedisServer,
} from './redis-servers.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
// Throws (fails the file) when redis-server or redis-cli is missing: these tests never skip.
redisBinariesAvailable();

describe('a restarted Redis loading its data', () => {
  let server: RedisServer | undefined;
  const clients: Redis[] = [];
  afterAll(async () => {
    for (const c of clients) c.disconnect();
    if (server) await stopRedisServer(server);
  });

  it('the client is ready within a few hundred ms of Redis finishing to load', async () => {
    server = await startRedisServer([
      '--appendonly',
      'yes',
      '--appendfsync',
      'no',
      '--enable-debug-command',
      'yes',
    ]);
    const admin = new Redis({ host: '127.0.0.1', port: server.port, lazyConnect: true });
    clients.push(admin);
    await admin.connect();
    // Enough data that loading it back takes well over a second.
    await admin.call('DEBUG', 'POPULATE', '1500000', 'fill', '64');
    await admin.bgrewriteaof();
    for (let i = 0; i < 300; i++) {
      const info = await admin.info('persistence');
      if (/aof_rewrite_in_progress:0/.test(info) && /aof_rewrite_scheduled:0/.test(info)) break;
      await sleep(100);
    }
    admin.disconnect();

    const client = new Redis({
      host: '127.0.0.1',
      port: server.port,
      ...recommendedRedisOptions(),
      lazyConnect: true,
    });
    clients.push(client);
    client.on('error', () => undefined);
    await client.connect();
    const store = createRedisStore({
      client,
      keyPrefix: `idem-test:${randomBytes(4).toString('hex')}:`,
    });
    const call = async () => {
      try {
        await store.get('k');
        return true;
      } catch {
        return false;
      }
    };
    expect(await call()).toBe(true);

    await signalRedisServer(server, 'SIGKILL');
    const restarted = Date.now();
    // Resolves once Redis answers PING, i.e. once it has loaded the data back: 1.5 s idle,
    // but past the default 20 s wait in a loaded five-lane CI run (seen: 61 s in all), so
    // this restart may take 120 s. What is judged starts once it has loaded.
    server = await restartRedisServer(server, 120_000);
    const loadedMs = Date.now() - restarted;
    const loaded = Date.now();
    let backMs: number | undefined;
    while (Date.now() - loaded < 10_000) {
      if (await call()) {
        backMs = Date.now() - loaded;
        break;
      }
      await sleep(20);
    }
    console.log(`[store-redis] loading took ${loadedMs} ms; the store answered ${backMs} ms after`);
    expect(loadedMs, 'the data set did not take long enough to load').toBeGreaterThan(1_000);
    expect(backMs).toBeDefined();
    // PING is polled every 100 ms, the ready check every 100 ms: 400 ms leaves room for both.
    expect(backMs).toBeLessThan(400);
    // 1.5M keys (3M loaded in 4.9 s alone): populating, rewriting the AOF and loading it
    // back fit this budget in a loaded CI run; the assertions above are relative to the end
    // of loading.
  }, 240_000);
});
