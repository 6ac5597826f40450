/**
 * `waitForReplicas` on a Cluster whose slot moved to another primary (a resharding, or a
 * failover that ioredis has not yet noticed): the pipeline that carries the script and its
 * `WAIT` must follow the `MOVED` answer like every other command, or every acquisition and
 * completion of that slot is refused until something else refreshes the slot map, and a
 * completion that is never recorded ends in a second execution once its lease passes.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { Cluster } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRedisStore, recommendedRedisClusterOptions } from '../src/index.js';
import {
  type RedisServer,
  redisBinariesAvailable,
  startCluster,
  stopRedisServer,
} from './redis-servers.js';
import { rawRecord, TEST_CLIENT_BOUNDS } from './targets.js';

const run = promisify(execFile);
const WAIT = { replicas: 1, timeoutMs: 200 };

async function cli(server: RedisServer, ...args: string[]): Promise<string> {
  const { stdout } = await run('redis-cli', ['-p', String(server.port), ...args]);
  return stdout.trim();
}

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

  /** Moves the slot of `redisKey`, with its keys, to the next primary (a resharding step). */
  async function moveSlot(redisKey: string): Promise<void> {
    const slot = String(await client.cluster('KEYSLOT', redisKey));
    const ids = await Promise.all(servers.map((s) => cli(s, 'cluster', 'myid')));
    const holds = await Promise.all(
      servers.map(async (s) => {
        const line = (await cli(s, 'cluster', 'nodes'))
          .split('\n')
          .find((l) => l.includes('myself'));
        return line!
          .split(' ')
          .slice(8)
          .some((range) => {
            const [from, to] = range.split('-').map(Number);
            return Number(slot) >= from! && Number(slot) <= (to ?? from)!;
          });
      }),
    );
    const from = holds.indexOf(true);
    const to = (from + 1) % servers.length;
    const [source, target] = [servers[from]!, servers[to]!];
    await cli(target, 'cluster', 'setslot', slot, 'importing', ids[from]!);
    await cli(source, 'cluster', 'setslot', slot, 'migrating', ids[to]!);
    const keys = (await cli(source, 'cluster', 'getkeysinslot', slot, '100'))
      .split('\n')
      .filter(Boolean);
    if (keys.length > 0) {
      const port = String(target.port);
      await cli(source, 'migrate', '127.0.0.1', port, '', '0', '5000', 'KEYS', ...keys);
    }
    for (const server of servers) await cli(server, 'cluster', 'setslot', slot, 'node', ids[to]!);
  }

  it('an acquisition and a completion follow the slot to its new primary', async () => {
    const prefix = `idem-moved:${Date.now()}:`;
    const waited = createRedisStore({ client, keyPrefix: prefix, waitForReplicas: WAIT });
    const plain = createRedisStore({ client, keyPrefix: prefix });
    const input = { fingerprint: 'fp', owner: 'me', leaseMs: 30_000, retentionMs: 60_000 };

    // The Cluster has no replicas: a write that arrives is "unconfirmed" (and an unconfirmed
    // acquisition released again); one that never arrives fails with MOVED.
    await moveSlot(waited.redisKey('a'));
    await expect(waited.acquire({ ...input, key: 'a' })).rejects.toThrow(/acknowledged by 0 of 1/);
    expect(await rawRecord(client, waited.redisKey('a'))).toMatchObject({
      status: 'released',
      fence: 1,
    });

    // Acquired without waiting, then the slot moves (with the record) under the completion.
    expect(await plain.acquire({ ...input, key: 'c' })).toMatchObject({ kind: 'acquired' });
    await moveSlot(waited.redisKey('c'));
    const complete = { key: 'c', owner: 'me', outcome: new Uint8Array([1]), retentionMs: 60_000 };
    await expect(waited.complete(complete)).rejects.toThrow(/acknowledged by 0 of 1/);
    expect(await rawRecord(client, waited.redisKey('c'))).toMatchObject({
      status: 'completed',
      owner: 'me',
    });
  });
});
