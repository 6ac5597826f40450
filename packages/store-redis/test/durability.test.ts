/**
 * What survives a restart, on servers this test starts with each persistence setting, and
 * what describeRedisDurability says about them.
 */
import { randomBytes } from 'node:crypto';
import { createIdempotency, deriveStorageKey, StoreFullError } from '@idem/core';
import type { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { createRedisStore, describeRedisDurability } from '../src/index.js';
import {
  type RedisServer,
  redisBinariesAvailable,
  restartRedisServer,
  signalRedisServer,
  startRedisServer,
  stopRedisServer,
} from './redis-servers.js';
import { cluster, connectPort, skipTarget } from './targets.js';

const servers: RedisServer[] = [];
const clients: Redis[] = [];
afterAll(async () => {
  for (const client of clients) client.disconnect();
  await Promise.all(servers.map(stopRedisServer));
});

async function serverWith(args: string[]): Promise<{ server: RedisServer; client: Redis }> {
  const server = await startRedisServer(args);
  servers.push(server);
  const client = await connect(server.port);
  return { server, client };
}

async function connect(port: number): Promise<Redis> {
  const client = await connectPort(port);
  clients.push(client);
  return client;
}

// Throws (fails the file) when redis-server or redis-cli is missing: these tests never skip.
redisBinariesAvailable();

describe('describeRedisDurability', () => {
  it('warns about a Redis that keeps nothing on disk', async () => {
    const { client, server } = await serverWith([]);
    expect(await describeRedisDurability(client)).toEqual({
      aof: false,
      fsync: 'everysec',
      rdb: false,
      loses: 'every record',
      warning: expect.stringMatching(/keeps nothing on disk/),
      node: `127.0.0.1:${server.port}`,
      maxmemory: 0,
      evictionPolicy: 'noeviction',
    });
  });

  it('warns about a Redis that evicts keys under memory pressure, even with AOF always', async () => {
    // Every idem key carries an expiry, so volatile-* policies evict them as readily as
    // allkeys-*: a completed record or a live lease goes, and the retry executes again.
    const durable = ['--appendonly', 'yes', '--appendfsync', 'always', '--maxmemory', '100mb'];
    for (const policy of ['allkeys-lru', 'volatile-lru', 'volatile-ttl', 'allkeys-random']) {
      const described = await describeRedisDurability(
        (await serverWith([...durable, '--maxmemory-policy', policy])).client,
      );
      expect(described).toMatchObject({
        aof: true,
        fsync: 'always',
        maxmemory: 100 * 1024 * 1024,
        evictionPolicy: policy,
        warning: expect.stringMatching(new RegExp(`evict.*${policy}.*noeviction`, 's')),
      });
    }
    // noeviction refuses writes when full (a 503) instead; no maxmemory never evicts.
    for (const args of [
      [...durable, '--maxmemory-policy', 'noeviction'],
      ['--appendonly', 'yes', '--maxmemory', '0', '--maxmemory-policy', 'allkeys-lru'],
    ]) {
      const described = await describeRedisDurability((await serverWith(args)).client);
      expect(described.warning).toBeUndefined();
    }
    // Where CONFIG is not allowed (managed services), INFO memory tells.
    const info = await describeRedisDurability(
      (
        await serverWith([
          ...durable,
          '--maxmemory-policy',
          'volatile-lru',
          '--rename-command',
          'CONFIG',
          '',
        ])
      ).client,
    );
    expect(info).toMatchObject({
      maxmemory: 100 * 1024 * 1024,
      evictionPolicy: 'volatile-lru',
      warning: expect.stringMatching(/evict/),
    });
  });

  it('warns about RDB snapshots alone and about appendfsync no; not about everysec or always', async () => {
    const rdb = await describeRedisDurability((await serverWith(['--save', '60 1'])).client);
    expect(rdb).toMatchObject({
      aof: false,
      rdb: '60 1',
      warning: expect.stringMatching(/only RDB/),
    });
    const no = await describeRedisDurability(
      (await serverWith(['--appendonly', 'yes', '--appendfsync', 'no'])).client,
    );
    expect(no).toMatchObject({
      aof: true,
      fsync: 'no',
      warning: expect.stringMatching(/appendfsync no/),
    });
    for (const fsync of ['everysec', 'always'] as const) {
      const described = await describeRedisDurability(
        (await serverWith(['--appendonly', 'yes', '--appendfsync', fsync])).client,
      );
      expect(described).toMatchObject({ aof: true, fsync, rdb: false });
      expect(described.warning).toBeUndefined();
    }
  });

  it('falls back to INFO persistence where CONFIG is not allowed', async () => {
    const off = await describeRedisDurability(
      (await serverWith(['--rename-command', 'CONFIG', ''])).client,
    );
    expect(off).toMatchObject({ aof: false, fsync: 'unknown', rdb: 'unknown' });
    expect(off.warning).toMatch(/without AOF/);
    const on = await describeRedisDurability(
      (await serverWith(['--rename-command', 'CONFIG', '', '--appendonly', 'yes'])).client,
    );
    expect(on).toMatchObject({ aof: true, fsync: 'unknown' });
    expect(on.warning).toMatch(/could not be read/);
  });
});

describe('what eviction does to idempotency records', () => {
  /** One completed charge, then other tenants' traffic until it is evicted or Redis is full. */
  async function victimAfterPressure(policy: string) {
    const { client } = await serverWith(['--maxmemory', '2mb', '--maxmemory-policy', policy]);
    const idem = createIdempotency<string>({
      store: createRedisStore({ client }),
      heartbeatMs: false,
    });
    let charges = 0;
    const charge = async () => {
      charges++;
      return 'charged';
    };
    await idem.execute({ key: 'charge-1', scope: 'tenant-a' }, charge);
    const victim = createRedisStore({ client }).redisKey(deriveStorageKey('tenant-a', 'charge-1'));
    let refused = 0;
    for (let i = 0; i < 4_000 && (await client.exists(victim)) === 1 && refused < 10; i++) {
      await idem
        .execute({ key: `k${i}`, scope: 'tenant-b' }, async () => 'x'.repeat(1_000))
        .catch((error: unknown) => {
          // A new record on a full Redis (completions of running executions still land).
          expect(error).toBeInstanceOf(StoreFullError);
          refused++;
        });
    }
    const retry = await idem.execute({ key: 'charge-1', scope: 'tenant-a' }, charge);
    return { charges, retry, refused };
  }

  it('under allkeys-lru a completed charge is evicted and its retry charges again; noeviction refuses new records instead', async () => {
    const evicting = await victimAfterPressure('allkeys-lru');
    expect(evicting.charges).toBe(2);
    expect(evicting.retry.replayed).toBe(false);
    const refusing = await victimAfterPressure('noeviction');
    expect(refusing.refused).toBeGreaterThan(0);
    expect(refusing.charges).toBe(1);
    expect(refusing.retry).toEqual({ value: 'charged', replayed: true });
  });
});

describe.skipIf(skipTarget(cluster))('describeRedisDurability on a Cluster', () => {
  it('reads every primary and describes the weakest', async () => {
    const client = await cluster.connect();
    try {
      const described = await describeRedisDurability(client);
      // The test Cluster runs without persistence.
      expect(described).toMatchObject({ aof: false, rdb: false, warning: expect.any(String) });
    } finally {
      client.disconnect();
    }
  });
});

describe('what a kill -9 and restart keeps', () => {
  for (const [name, args, kept] of [
    ['AOF with appendfsync always', ['--appendonly', 'yes', '--appendfsync', 'always'], true],
    ['no persistence', [], false],
  ] as const) {
    it(`${name}: ${kept ? 'every acknowledged completion' : 'nothing'}`, async () => {
      const { server, client } = await serverWith([...args]);
      const store = createRedisStore({ client, keyPrefix: 'idem-test:' });
      const keys = Array.from({ length: 50 }, () => randomBytes(8).toString('hex'));
      for (const key of keys) {
        await store.acquire({
          key,
          owner: 'o',
          fingerprint: 'fp',
          leaseMs: 30_000,
          retentionMs: 600_000,
        });
        expect(
          await store.complete({
            key,
            owner: 'o',
            outcome: new Uint8Array([1]),
            retentionMs: 600_000,
          }),
        ).toEqual({ ok: true });
      }
      await signalRedisServer(server, 'SIGKILL');
      servers.splice(servers.indexOf(server), 1, await restartRedisServer(server));
      const after = createRedisStore({
        client: await connect(server.port),
        keyPrefix: 'idem-test:',
      });
      let found = 0;
      for (const key of keys) if ((await after.get(key))?.status === 'completed') found++;
      expect(found).toBe(kept ? keys.length : 0);
    });
  }
});
