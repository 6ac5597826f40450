import type { TestProject } from 'vitest/node';
import {
  type RedisServer,
  redisBinariesAvailable,
  startCluster,
  stopRedisServer,
} from './redis-servers.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** Seed nodes of the test Cluster, or `null` with `clusterSkipReason` when none could be started. */
    clusterPorts: number[] | null;
    clusterSkipReason: string;
  }
}

/** Starts one 3-primary Redis Cluster for the whole run and tears it down afterwards. */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  if (!redisBinariesAvailable()) {
    project.provide('clusterPorts', null);
    project.provide(
      'clusterSkipReason',
      'redis-server / redis-cli not found on PATH: the Redis Cluster tests are SKIPPED. ' +
        'Install them (apt-get install redis-server) to run them.',
    );
    return async () => {};
  }
  const started = performance.now();
  const servers: RedisServer[] = await startCluster(3);
  console.log(
    `[store-redis] Redis Cluster up on ${servers.map((s) => s.port).join(', ')} in ${Math.round(performance.now() - started)} ms`,
  );
  project.provide(
    'clusterPorts',
    servers.map((s) => s.port),
  );
  project.provide('clusterSkipReason', '');
  return async () => {
    await Promise.all(servers.map(stopRedisServer));
  };
}
