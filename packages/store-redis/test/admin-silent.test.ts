/**
 * The admin surface against a Redis that falls silent (SIGSTOP of a redis-server this test
 * owns), with the recommended client options: every admin call ends within the command
 * timeout with a typed `StoreUnavailableError` (never hangs, never an untyped error), and
 * works again after SIGCONT.
 */
import { randomBytes } from 'node:crypto';
import { StoreUnavailableError } from '@idem/core';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRedisStore, type RedisStore, recommendedRedisOptions } from '../src/index.js';
import {
  type RedisServer,
  redisBinariesAvailable,
  signalRedisServer,
  startRedisServer,
  stopRedisServer,
} from './redis-servers.js';

const COMMAND_TIMEOUT = 1_000;
const SLACK = 1_500;

describe.skipIf(!redisBinariesAvailable())('admin on a silent Redis (SIGSTOP)', () => {
  let server: RedisServer;
  let client: Redis;
  let store: RedisStore;
  beforeAll(async () => {
    server = await startRedisServer();
    client = new Redis({
      host: '127.0.0.1',
      port: server.port,
      ...recommendedRedisOptions({ commandTimeoutMs: COMMAND_TIMEOUT }),
      lazyConnect: true,
    });
    client.on('error', () => {}); // the socket timeouts of the silence are expected
    await client.connect();
    store = createRedisStore({
      client,
      keyPrefix: `adm-silent:${randomBytes(4).toString('hex')}:`,
    });
  });
  afterAll(async () => {
    client?.disconnect();
    if (server) {
      await signalRedisServer(server, 'SIGCONT');
      await stopRedisServer(server);
    }
  });

  it('inspect, forceRelease and delete end bounded and typed; the fence still grows after SIGCONT', async () => {
    const acquired = await store.acquire({
      key: 'k',
      fingerprint: 'fp',
      owner: 'executor',
      leaseMs: 60_000,
      retentionMs: 60_000,
    });
    expect(acquired).toMatchObject({ kind: 'acquired', fence: 1 });
    await signalRedisServer(server, 'SIGSTOP');
    for (const call of [
      () => store.admin.inspect('k'),
      () => store.admin.forceRelease('k'),
      () => store.admin.delete('k'),
    ]) {
      const started = performance.now();
      const error = await call().then(
        () => undefined,
        (e: unknown) => e,
      );
      const took = performance.now() - started;
      expect(error).toBeInstanceOf(StoreUnavailableError);
      expect(took).toBeLessThan(COMMAND_TIMEOUT + SLACK);
    }
    await signalRedisServer(server, 'SIGCONT');
    // A forced release sent during the silence may have been applied after all: either way
    // the old executor can no longer complete once the release is done, and fences grow.
    let released = await store.admin.forceRelease('k').catch(() => undefined);
    for (let i = 0; !released && i < 20; i++) {
      await new Promise((resolve) => setTimeout(resolve, 200));
      released = await store.admin.forceRelease('k').catch(() => undefined);
    }
    const inspected = await store.admin.inspect('k');
    expect(inspected?.status === 'released' || inspected === undefined).toBe(true);
    const complete = await store.complete({
      key: 'k',
      owner: 'executor',
      outcome: new Uint8Array([1]),
      retentionMs: 60_000,
    });
    expect(complete).toMatchObject({ ok: false });
    const again = await store.acquire({
      key: 'k',
      fingerprint: 'fp',
      owner: 'next',
      leaseMs: 60_000,
      retentionMs: 60_000,
    });
    expect(again.kind).toBe('acquired');
    expect((again as { fence: number }).fence).toBeGreaterThan(1);
  });
});
