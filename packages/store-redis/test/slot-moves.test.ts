/**
 * `waitForReplicas` on a Cluster whose slot moved to another primary (a resharding, or a
 * failover that ioredis has not yet noticed): the pipeline that carries the script and its
 * `WAIT` must follow the `MOVED` answer like every other command, or every acquisition and
 * completion of that slot is refused until something else refreshes the slot map, and a
 * completion that is never recorded ends in a second execution once its lease passes.
 */
import { Cluster } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRedisStore, recommendedRedisClusterOptions } from '../src/index.js';
import {
  moveSlot,
  type RedisServer,
  redisBinariesAvailable,
  startCluster,
  stopRedisServer,
} from './redis-servers.js';
import { rawRecord, TEST_CLIENT_BOUNDS } from './targets.js';

const WAIT = { replicas: 1, timeoutMs: 200 };

describe.skipIf(!redisBinariesAvailable())('waitForReplicas when a slot moved (MOVED)', () => {
  let servers: RedisServer[] = [];
  let client: Cluster;

  beforeAll(async () => {
    // A Cluster of its own: the test moves slots around.
    servers = await startCluster(3);
    client = new Cluster(
      servers.map((s) => ({ host: '127.0.0.1', port: s.port })),
      { ...recommendedRedisClusterOptions(TEST_CLIENT_BOUNDS), lazyConnect: true },
    );
    client.on('error', () => {});
    await client.connect();
  });
  afterAll(async () => {
    client?.disconnect();
    await Promise.all(servers.map(stopRedisServer));
  });

  it('an acquisition and a completion follow the slot to its new primary', async () => {
    const prefix = `idem-moved:${Date.now()}:`;
    const waited = createRedisStore({ client, keyPrefix: prefix, waitForReplicas: WAIT });
    const plain = createRedisStore({ client, keyPrefix: prefix });
    const input = { fingerprint: 'fp', owner: 'me', leaseMs: 30_000, retentionMs: 60_000 };

    // The Cluster has no replicas: a write that arrives is "unconfirmed" (and an unconfirmed
    // acquisition released again); one that never arrives fails with MOVED.
    await moveSlot(servers, waited.redisKey('a'));
    await expect(waited.acquire({ ...input, key: 'a' })).rejects.toThrow(/acknowledged by 0 of 1/);
    expect(await rawRecord(client, waited.redisKey('a'))).toMatchObject({
      status: 'released',
      fence: 1,
    });

    // Acquired without waiting, then the slot moves (with the record) under the completion.
    expect(await plain.acquire({ ...input, key: 'c' })).toMatchObject({ kind: 'acquired' });
    await moveSlot(servers, waited.redisKey('c'));
    const complete = { key: 'c', owner: 'me', outcome: new Uint8Array([1]), retentionMs: 60_000 };
    await expect(waited.complete(complete)).rejects.toThrow(/acknowledged by 0 of 1/);
    expect(await rawRecord(client, waited.redisKey('c'))).toMatchObject({
      status: 'completed',
      owner: 'me',
    });
  });
});
