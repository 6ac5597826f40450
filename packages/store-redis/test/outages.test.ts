import { randomBytes } from 'node:crypto';
import { createIdempotency, StoreFullError, StoreUnavailableError } from '@idem/core';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createRedisStore, recommendedRedisOptions } from '../src/index.js';
import {
  type RedisServer,
  redisBinariesAvailable,
  startRedisServer,
  stopRedisServer,
} from './redis-servers.js';
import { connectPort, deletePrefix, randomPrefix, standalone } from './targets.js';

const input = () => ({
  key: randomBytes(8).toString('hex'),
  fingerprint: 'fp',
  owner: randomBytes(8).toString('hex'),
  leaseMs: 30_000,
  retentionMs: 60_000,
});

async function unavailable(promise: Promise<unknown>): Promise<StoreUnavailableError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(StoreUnavailableError);
  expect((error as StoreUnavailableError).code).toBe('STORE_UNAVAILABLE');
  expect((error as Error).cause).toBeInstanceOf(Error);
  return error as StoreUnavailableError;
}

// Throws (fails the file) when redis-server or redis-cli is missing: these tests never skip.
redisBinariesAvailable();

describe('outages on throwaway servers', () => {
  const servers: RedisServer[] = [];
  const clients: Redis[] = [];
  /** A client with the recommended options, connected. */
  const connect = async (port: number) => {
    const client = await connectPort(port);
    clients.push(client);
    return client;
  };

  afterAll(async () => {
    for (const client of clients) client.disconnect();
    await Promise.all(servers.map(stopRedisServer));
  });

  it('READONLY from a replica (as after a failover) is STORE_UNAVAILABLE with the cause', async () => {
    // A replica of a primary that does not answer: reads work, writes are refused.
    const replica = await startRedisServer(['--replicaof', '127.0.0.1', '1']);
    servers.push(replica);
    const client = await connect(replica.port);
    const store = createRedisStore({ client });
    let reconnected = 0;
    client.on('ready', () => reconnected++);
    const error = await unavailable(store.acquire(input()));
    expect(String((error.cause as Error).message)).toMatch(/READONLY/);
    // The recommended options replace a connection that answered READONLY (a demoted
    // primary; behind Sentinel or a DNS name the new connection reaches the new primary).
    await vi.waitUntil(() => reconnected > 0 && client.status === 'ready', { timeout: 5_000 });
    // A read-only script still answers there.
    expect(await store.get('absent')).toBeUndefined();
  });

  it('a server that dies mid-flight turns every call into STORE_UNAVAILABLE, never a wrong answer', async () => {
    const server = await startRedisServer();
    servers.push(server);
    const client = await connect(server.port);
    const store = createRedisStore({ client });
    const idem = createIdempotency({ store, heartbeatMs: false, storeTimeoutMs: 2_000 });
    const first = await idem.execute({ key: 'k' }, async () => 'v');
    expect(first.replayed).toBe(false);
    await stopRedisServer(server);
    await unavailable(store.acquire(input()));
    await unavailable(store.get('k'));
    await unavailable(idem.execute({ key: 'k' }, async () => 'again'));
  });

  it('reloads scripts after SCRIPT FLUSH (NOSCRIPT) without surfacing an error', async () => {
    const server = await startRedisServer();
    servers.push(server);
    const client = await connect(server.port);
    const store = createRedisStore({ client });
    const a = input();
    expect((await store.acquire(a)).kind).toBe('acquired');
    await (await connect(server.port)).script('FLUSH');
    const b = input();
    expect((await store.acquire(b)).kind).toBe('acquired');
    expect(
      await store.complete({
        key: b.key,
        owner: b.owner,
        outcome: new Uint8Array([1]),
        retentionMs: 1_000,
      }),
    ).toEqual({
      ok: true,
    });
  });
});

describe('a full Redis (maxmemory with noeviction)', () => {
  let server: RedisServer;
  let client: Redis;
  afterAll(async () => {
    client?.disconnect();
    if (server) await stopRedisServer(server);
  });

  it('refuses new records with STORE_FULL but still renews, completes and releases the executions already running', async () => {
    server = await startRedisServer(['--maxmemory', '2mb', '--maxmemory-policy', 'noeviction']);
    client = await connectPort(server.port);
    const store = createRedisStore({ client });
    const running = [input(), input()];
    for (const one of running) expect((await store.acquire(one)).kind).toBe('acquired');
    // Other traffic fills Redis until it refuses a write.
    let full: unknown;
    for (let i = 0; i < 20_000 && !full; i++) {
      const other = input();
      await store
        .acquire(other)
        .then(() =>
          store.complete({ ...other, outcome: new Uint8Array(1_000), retentionMs: 600_000 }),
        )
        .catch((error: unknown) => {
          full = error;
        });
    }
    expect(full).toBeInstanceOf(Error);
    // A new record: refused, typed as a full store (503), nothing written.
    const fresh = input();
    const refused = await store.acquire(fresh).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(StoreFullError);
    expect((refused as StoreFullError).code).toBe('STORE_FULL');
    expect(String(((refused as Error).cause as Error).message)).toMatch(/^OOM/);
    expect(await store.get(fresh.key)).toBeUndefined();
    // The executions already running are not cut short by a full Redis: a refused heartbeat
    // or completion would let their leases lapse, and their retries run them again once
    // room appears.
    const [a, b] = running as [ReturnType<typeof input>, ReturnType<typeof input>];
    expect(await store.extend({ ...a, leaseMs: 30_000, retentionMs: 600_000 })).toMatchObject({
      ok: true,
    });
    const outcome = new Uint8Array(4_096).fill(7);
    expect(await store.complete({ ...a, outcome, retentionMs: 600_000 })).toEqual({ ok: true });
    expect(await store.release({ ...b, retentionMs: 600_000 })).toEqual({ ok: true });
    const replay = await store.acquire({ ...a, owner: 'retry' });
    expect(replay.kind).toBe('found');
    if (replay.kind === 'found') expect(replay.record.outcome).toEqual(outcome);
  });
});

describe('client without a connection', () => {
  it('fails fast with STORE_UNAVAILABLE with the recommended options (offline queue off)', async () => {
    const client = new Redis({
      host: '127.0.0.1',
      port: 1,
      ...recommendedRedisOptions(),
      lazyConnect: true,
    });
    const store = createRedisStore({ client });
    const refused = await unavailable(store.acquire(input()));
    // Refused by the client before it was sent: nothing to give back.
    expect(refused.unsent).toBe(true);
    client.disconnect();
  });
});

describe('options', () => {
  let client: Redis;
  beforeAll(async () => {
    client = (await standalone.connect()) as Redis;
  });
  afterAll(() => client?.disconnect());

  it('rejects braces in keyPrefix and storage keys, and bad limits', async () => {
    expect(() => createRedisStore({ client, keyPrefix: 'a{b}:' })).toThrow(/keyPrefix/);
    expect(() => createRedisStore({ client, maxOutcomeBytes: 0 })).toThrow(/maxOutcomeBytes/);
    expect(() => createRedisStore({ client, fenceMemoryMs: -1 })).toThrow(/fenceMemoryMs/);
    const store = createRedisStore({ client, keyPrefix: randomPrefix() });
    await expect(store.acquire({ ...input(), key: 'a}b' })).rejects.toThrow(/storage key/);
  });

  it('defaults: key layout, 16 MiB outcome limit, server clock', () => {
    const store = createRedisStore({ client });
    expect(store.capabilities).toEqual({ clock: 'server', maxOutcomeBytes: 16 * 1024 * 1024 });
    expect(store.redisKey('abc')).toBe('idem:{abc}');
    expect(store.fenceKey('abc')).toBe('idem:{abc}:fence');
  });

  it('cleans up after itself', async () => {
    const prefix = randomPrefix();
    const store = createRedisStore({ client, keyPrefix: prefix });
    await store.acquire(input());
    expect(await deletePrefix(client, prefix)).toBe(2); // the record and its fence memory
  });
});
