/**
 * rev13fix adversarial review of the lane fix (a1e7ae9): lanes whose connection ended or
 * failed are replaced at the next round. Attack that HELD: the XREAD connections of one
 * primary are killed again and again (a flapping path) while readers wait on two primaries;
 * the connections this process holds to that primary stay bounded (at most 4 lanes plus the
 * Cluster's own), nothing piles up, and afterwards a reader there is woken by its entry at
 * once. A Cluster of its own; never the shared services.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { Cluster } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createRedisLiveStreams,
  createRedisStore,
  recommendedRedisClusterOptions,
} from '../src/index.js';
import {
  type RedisServer,
  redisBinariesAvailable,
  startCluster,
  stopRedisServer,
} from './redis-servers.js';

const run = promisify(execFile);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function cli(port: number, ...args: string[]): Promise<string> {
  return (await run('redis-cli', ['-p', String(port), ...args])).stdout.trim();
}

describe.skipIf(!redisBinariesAvailable())('rev13fix: lanes of a flapping primary', () => {
  let servers: RedisServer[] = [];
  let client: Cluster;
  let blocking: Cluster;
  beforeAll(async () => {
    servers = await startCluster(3);
    const make = () =>
      new Cluster(
        servers.map((s) => ({ host: '127.0.0.1', port: s.port })),
        {
          ...recommendedRedisClusterOptions({ commandTimeoutMs: 2_000, maxReconnectDelayMs: 200 }),
          lazyConnect: true,
        },
      );
    client = make();
    blocking = make();
    client.on('error', () => {});
    blocking.on('error', () => {});
    await client.connect();
    await blocking.connect();
  }, 60_000);
  afterAll(async () => {
    client?.disconnect();
    blocking?.disconnect();
    for (const s of servers) await stopRedisServer(s);
  });

  it('killing the lanes of one primary 15 times leaves its connections bounded and wakes working', {
    timeout: 30_000,
  }, async () => {
    const store = createRedisStore({ client, keyPrefix: 'r13fxf:' });
    const prefix = 'r13fxf:live:';
    const live = createRedisLiveStreams({
      client,
      blockingClient: blocking,
      store,
      keyPrefix: prefix,
      blockMs: 300,
      endGraceMs: 500,
    });
    const slotMap = (blocking as unknown as { slots: string[][] }).slots;
    const picked: { key: string; node: string }[] = [];
    for (let i = 0; i < 60 && picked.length < 6; i++) {
      const key = `k${i}`;
      const slot = Number(
        await cli(
          servers[0]?.port as number,
          'cluster',
          'keyslot',
          `${prefix}${store.redisKey(key)}:1`,
        ),
      );
      picked.push({ key, node: slotMap[slot]?.[0] as string });
    }
    const target = picked[0]?.node as string;
    const portOf = (node: string) => Number(node.split(':')[1]);
    const controller = new AbortController();
    const publishers = picked.map(({ key }) =>
      live.publish({ storageKey: key, fence: 1, leaseMs: 20_000, signal: controller.signal }),
    );
    for (const publisher of publishers)
      publisher.append({ kind: 'head', status: 200, headers: [] });
    await sleep(200);
    // Readers that keep waiting on every stream throughout.
    let keeping = true;
    const keepers = picked.map(async ({ key }) => {
      const reader = live.open({ storageKey: key, fence: 1 });
      while (keeping) await reader.next({ waitMs: 400, maxEntries: 100 });
      reader.close();
    });
    const ours = async (port: number) =>
      (await cli(port, 'client', 'list', 'type', 'normal'))
        .split('\n')
        .filter((line) => line.length > 0 && !/ cmd=client\|list /.test(line)).length;
    await sleep(400);
    const before = await ours(portOf(target));
    let killed = 0;
    let most = 0;
    for (let round = 0; round < 15; round++) {
      for (const line of (await cli(portOf(target), 'client', 'list', 'type', 'normal')).split(
        '\n',
      )) {
        if (!/ cmd=xread /.test(line)) continue;
        const id = /id=(\d+)/.exec(line)?.[1];
        if (id) killed += Number(await cli(portOf(target), 'client', 'kill', 'id', id));
      }
      await sleep(150 + (round % 3) * 100);
      most = Math.max(most, await ours(portOf(target)));
    }
    await sleep(800);
    const after = await ours(portOf(target));
    // A reader on the flapped primary is woken by its entry.
    const first = picked[0] as { key: string };
    const reader = live.open({ storageKey: first.key, fence: 1 });
    await reader.next({ waitMs: 0, maxEntries: 100 });
    const waiting = reader.next({ waitMs: 5_000, maxEntries: 100 });
    await sleep(150);
    const sentAt = performance.now();
    publishers[0]?.append({ kind: 'chunk', offset: 0, bytes: new Uint8Array([1]) });
    const got = await waiting;
    const ms = performance.now() - sentAt;
    reader.close();
    keeping = false;
    await Promise.all(keepers);
    controller.abort();
    console.log(
      `[rev13fix lane flap] killed=${killed} connections to the primary before=${before} most=${most} after=${after} wake=${Math.round(ms)} ms`,
    );
    expect(killed).toBeGreaterThan(5);
    // 2 Cluster node connections (client, blocking) + at most 4 lanes.
    expect(most).toBeLessThanOrEqual(6);
    expect(after).toBeLessThanOrEqual(6);
    expect(got.status).toBe('entries');
    expect(ms).toBeLessThan(1_000);
  });
});
