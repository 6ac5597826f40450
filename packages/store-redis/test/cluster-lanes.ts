/**
 * The Redis Cluster of the live-stream lane tests (rev13 / rev13fix): three redis-servers of
 * the test file's own (never the shared services), and two ioredis Cluster clients on them,
 * `client` and `blocking` (the live channel's blockingClient, whose per-node "lanes" the
 * waker blocks on). Plus the redis-cli steps those tests take on the nodes.
 */
import { Cluster } from 'ioredis';
import { afterAll, beforeAll } from 'vitest';
import {
  createRedisLiveStreams,
  createRedisStore,
  type RecommendedRedisOptionsInput,
  recommendedRedisClusterOptions,
} from '../src/index.js';
import { cli, type RedisServer, startCluster, stopRedisServer } from './redis-servers.js';

/** The lane Cluster of a `describe`: read its fields inside a test (set before the tests). */
export interface LaneCluster {
  readonly servers: RedisServer[];
  readonly client: Cluster;
  readonly blocking: Cluster;
}

/**
 * Before the tests of the enclosing `describe`: a 3-primary Cluster of its own and two
 * Cluster clients on it, each `recommendedRedisClusterOptions(options)` with `lazyConnect`,
 * errors ignored, connected. After them: both disconnected, the servers stopped.
 */
export function useLaneCluster(options: RecommendedRedisOptionsInput): LaneCluster {
  let servers: RedisServer[] = [];
  let client: Cluster | undefined;
  let blocking: Cluster | undefined;
  beforeAll(async () => {
    servers = await startCluster(3);
    const make = () =>
      new Cluster(
        servers.map((s) => ({ host: '127.0.0.1', port: s.port })),
        { ...recommendedRedisClusterOptions(options), lazyConnect: true },
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
  const started = (cluster: Cluster | undefined): Cluster => {
    if (!cluster) throw new Error('The lane Cluster did not start');
    return cluster;
  };
  return {
    get servers() {
      return servers;
    },
    get client() {
      return started(client);
    },
    get blocking() {
      return started(blocking);
    },
  };
}

/**
 * A store under `<name>:` and its live channel under `<name>:live:` (`prefix`) on the lane
 * Cluster, its waker blocking `blockMs` at a time on `blocking`'s lanes; endGraceMs 500.
 */
export function laneChannel(cluster: LaneCluster, name: string, blockMs: number) {
  const { client, blocking } = cluster;
  const store = createRedisStore({ client, keyPrefix: `${name}:` });
  const prefix = `${name}:live:`;
  const live = createRedisLiveStreams({
    client,
    blockingClient: blocking,
    store,
    keyPrefix: prefix,
    blockMs,
    endGraceMs: 500,
  });
  return { store, prefix, live };
}

/** The primary (`host:port`, as in the `blocking` client's slot map) that holds `redisKey`. */
export async function primaryOf(cluster: LaneCluster, redisKey: string): Promise<string> {
  const slotMap = (cluster.blocking as unknown as { slots: string[][] }).slots;
  const slot = Number(await cli(cluster.servers[0] as RedisServer, 'cluster', 'keyslot', redisKey));
  return slotMap[slot]?.[0] as string;
}

/**
 * CLIENT KILLs the connections of the node on `port` that are blocked in XREAD (the lanes),
 * as a network blip or a proxy restart would end them; how many were killed.
 */
export async function killXreadConnections(port: number): Promise<number> {
  let killed = 0;
  for (const line of (await cli({ port }, 'client', 'list', 'type', 'normal')).split('\n')) {
    if (!/ cmd=xread /.test(line)) continue;
    const id = /id=(\d+)/.exec(line)?.[1];
    if (id) killed += Number(await cli({ port }, 'client', 'kill', 'id', id));
  }
  return killed;
}
