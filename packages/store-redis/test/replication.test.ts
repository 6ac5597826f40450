/**
 * `waitForReplicas` on a primary/replica pair this test starts: a failover (the replica
 * promoted with REPLICAOF NO ONE) in the middle of load, with and without the option; a
 * retried completion confirmed only once the replica has it; Cluster routing of the WAIT.
 */
import { randomBytes } from 'node:crypto';
import { StoreUnavailableError } from '@idem/core';
import type { Redis } from 'ioredis';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { createRedisStore, type RedisStore, type RedisStoreOptions } from '../src/index.js';
import { startLostAnswerProxy } from './lost-answer-proxy.js';
import {
  type RedisServer,
  redisBinariesAvailable,
  signalRedisServer,
  startRedisServer,
  stopRedisServer,
} from './redis-servers.js';
import {
  cluster,
  connectPort,
  deletePrefix,
  randomPrefix,
  rawRecord,
  skipTarget,
  standalone,
  TEST_CLIENT_BOUNDS,
} from './targets.js';

const WAIT = { replicas: 1, timeoutMs: 200 };
/** For a test whose every WAIT must succeed: a replica on a loaded machine may lag past 200 ms. */
const ROOMY_WAIT = { replicas: 1, timeoutMs: 1_500 };
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const servers: RedisServer[] = [];
const clients: Redis[] = [];

afterAll(async () => {
  for (const client of clients) client.disconnect();
  for (const server of servers) await signalRedisServer(server, 'SIGCONT');
  await Promise.all(servers.map(stopRedisServer));
});

async function connect(port: number): Promise<Redis> {
  const client = await connectPort(port);
  clients.push(client);
  return client;
}

/** A primary and a replica of it, with the link up. */
async function pair(): Promise<{ primary: Redis; replica: Redis; replicaServer: RedisServer }> {
  // No 5 s delay before a full sync (Redis 7's diskless default), for the re-attached primary.
  const fast = ['--repl-diskless-sync-delay', '0'];
  const primaryServer = await startRedisServer(fast);
  const replicaServer = await startRedisServer([
    ...fast,
    '--replicaof',
    '127.0.0.1',
    String(primaryServer.port),
  ]);
  servers.push(primaryServer, replicaServer);
  const primary = await connect(primaryServer.port);
  const replica = await connect(replicaServer.port);
  await vi.waitUntil(
    async () =>
      (await replica.info('replication')).includes('master_link_status:up') &&
      /slave0:.*state=online/.test(await primary.info('replication')),
    { timeout: 20_000, interval: 100 },
  );
  return { primary, replica, replicaServer };
}

interface Acked {
  key: string;
  owner: string;
  outcome: Uint8Array;
}

/** One acquisition and completion; the completion when it was acknowledged. */
async function cycle(store: RedisStore): Promise<Acked | 'failed' | 'not_acquired'> {
  const key = randomBytes(12).toString('hex');
  const owner = randomBytes(8).toString('hex');
  const outcome = new Uint8Array(randomBytes(64));
  try {
    const acquired = await store.acquire({
      key,
      owner,
      fingerprint: 'fp',
      leaseMs: 30_000,
      retentionMs: 600_000,
    });
    if (acquired.kind !== 'acquired') return 'not_acquired';
    const done = await store.complete({ key, owner, outcome, retentionMs: 600_000 });
    return done.ok ? { key, owner, outcome } : 'failed';
  } catch (error) {
    expect(error).toBeInstanceOf(StoreUnavailableError);
    return 'failed';
  }
}

// Throws (fails the file) when redis-server or redis-cli is missing: these tests never skip.
redisBinariesAvailable();

describe('waitForReplicas: failover in the middle of load', () => {
  for (const waiting of [true, false]) {
    it(`${waiting ? 'with' : 'without'} the option: ${waiting ? 'no acknowledged completion is lost' : 'completions the old primary acknowledged after the promotion are lost'}`, async () => {
      const { primary, replica } = await pair();
      const prefix = randomPrefix();
      const options: Omit<RedisStoreOptions, 'client'> = waiting
        ? { keyPrefix: prefix, waitForReplicas: WAIT }
        : { keyPrefix: prefix };
      const oldStore = createRedisStore({ client: primary, ...options });
      const newStore = createRedisStore({ client: replica, ...options });
      let current = oldStore;
      const acked: Acked[] = [];
      let failed = 0;
      let stop = false;
      const worker = async () => {
        while (!stop) {
          const result = await cycle(current);
          if (result === 'failed') failed++;
          else if (result !== 'not_acquired') acked.push(result);
        }
      };
      const workers = Array.from({ length: 8 }, worker);
      // Load first: some completions acknowledged by the pair.
      await vi.waitUntil(() => acked.length >= 50, { timeout: 20_000, interval: 20 });
      // Failover: the replica becomes a primary while clients still write to the old one.
      await replica.replicaof('NO', 'ONE');
      const ackedAtPromotion = acked.length;
      // At least one completion reaches the old primary after the promotion.
      const late = await cycle(oldStore);
      await sleep(300);
      // Switch clients to the new primary; the old one becomes its replica (as Sentinel does).
      current = newStore;
      await primary.replicaof('127.0.0.1', String(replica.options.port));
      // Until the re-attached replica finished its full sync and acknowledges writes.
      await vi.waitUntil(
        async () => /slave0:.*state=online/.test(await replica.info('replication')),
        { timeout: 20_000, interval: 100 },
      );
      // Load on the new primary: more completions acknowledged there.
      const ackedAtSwitch = acked.length;
      await vi.waitUntil(() => acked.length >= ackedAtSwitch + 50, {
        timeout: 20_000,
        interval: 20,
      });
      stop = true;
      await Promise.all(workers);

      const lost: Acked[] = [];
      for (const entry of [...acked, ...(typeof late === 'object' ? [late] : [])]) {
        const record = await rawRecord(replica, newStore.redisKey(entry.key));
        const kept =
          record?.status === 'completed' &&
          record.owner === entry.owner &&
          Buffer.from(record.outcome ?? []).equals(Buffer.from(entry.outcome));
        if (!kept) lost.push(entry);
      }
      console.log(
        `[store-redis] failover ${waiting ? 'with' : 'without'} waitForReplicas: ` +
          `${acked.length} completions acknowledged (${ackedAtPromotion} before the promotion), ` +
          `${failed} calls failed, ${lost.length} acknowledged completions lost`,
      );
      expect(ackedAtPromotion).toBeGreaterThan(0);
      if (waiting) {
        // The old primary could no longer reach its replica: it acknowledged nothing.
        expect(late).toBe('failed');
        expect(lost).toEqual([]);
      } else {
        expect(typeof late).toBe('object');
        expect(lost.length).toBeGreaterThan(0);
      }
      await deletePrefix(replica, prefix);
    });
  }

  it('a completion retried after an unconfirmed WAIT is confirmed only once the replica has it', async () => {
    // Roomier than WAIT: on a loaded machine a healthy replica can take a few hundred ms.
    const { primary, replicaServer, replica } = await pair();
    const prefix = randomPrefix();
    const store = createRedisStore({
      client: primary,
      keyPrefix: prefix,
      waitForReplicas: ROOMY_WAIT,
    });
    const w = { key: 'k', owner: 'me', retentionMs: 600_000 };
    expect(await store.acquire({ ...w, fingerprint: 'fp', leaseMs: 30_000 })).toMatchObject({
      kind: 'acquired',
      fence: 1,
      origin: 'me',
    });
    await signalRedisServer(replicaServer, 'SIGSTOP');
    const outcome = new Uint8Array([1, 2, 3]);
    await expect(store.complete({ ...w, outcome })).rejects.toThrow(/acknowledged by 0 of 1/);
    // The retry on a fresh connection: WAIT there must still cover the completion, which
    // the stopped replica does not have. The redelivered script rewrites the status, which
    // moves this connection's WAIT offset past the completion. (Redis 7.0 also moves it on
    // any command a connection sends, so there this passes without the rewrite too; the
    // documented rule is "the writes this connection sent".)
    const retry = createRedisStore({
      client: await connect(primary.options.port!),
      keyPrefix: prefix,
      waitForReplicas: ROOMY_WAIT,
    });
    await expect(retry.complete({ ...w, outcome })).rejects.toThrow(/acknowledged by 0 of 1/);
    await signalRedisServer(replicaServer, 'SIGCONT');
    expect(await retry.complete({ ...w, outcome })).toEqual({ ok: true });
    expect(await rawRecord(replica, store.redisKey('k'))).toMatchObject({
      status: 'completed',
      owner: 'me',
    });
    // Other bytes are still not this completion.
    expect(await retry.complete({ ...w, outcome: new Uint8Array([9]) })).toEqual({
      ok: false,
      reason: 'not_owner',
    });
  });

  it('through lost answers and a script cache flush: the resent pipeline confirms the same call', async () => {
    const { primary, replica } = await pair();
    const proxy = await startLostAnswerProxy(primary.options.port!);
    const client = await connect(proxy.port);
    try {
      const prefix = randomPrefix();
      const store = createRedisStore({ client, keyPrefix: prefix, waitForReplicas: ROOMY_WAIT });
      const w = { key: 'k', owner: 'me', retentionMs: 600_000 };
      await primary.script('FLUSH');
      proxy.loseNextAnswer();
      expect(await store.acquire({ ...w, fingerprint: 'fp', leaseMs: 30_000 })).toMatchObject({
        kind: 'acquired',
        fence: 1,
        takeover: false,
        origin: 'me',
      });
      const outcome = new Uint8Array([4, 5, 6]);
      proxy.loseNextAnswer();
      expect(await store.complete({ ...w, outcome })).toEqual({ ok: true });
      expect(proxy.lost).toBe(2);
      const record = await rawRecord(replica, store.redisKey('k'));
      expect(record).toMatchObject({ status: 'completed', owner: 'me', fence: 1 });
      expect(Buffer.from(record!.outcome!)).toEqual(Buffer.from(outcome));
    } finally {
      client.disconnect();
      await proxy.close();
    }
  });

  it('rejects an option that cannot work: no replicas, no timeout, or a timeout past the client’s', async () => {
    const client = (await standalone.connect()) as Redis;
    for (const waitForReplicas of [
      { replicas: 0, timeoutMs: 100 },
      { replicas: 1, timeoutMs: 0 },
      { replicas: 1, timeoutMs: TEST_CLIENT_BOUNDS.commandTimeoutMs },
    ]) {
      expect(() => createRedisStore({ client, waitForReplicas })).toThrow(/waitForReplicas/);
    }
    client.disconnect();
  });
});

describe.skipIf(skipTarget(cluster))('waitForReplicas on a Cluster', () => {
  it('sends the WAIT to the node that holds the key: an unconfirmed acquisition is released again', async () => {
    const client = await cluster.connect();
    const prefix = randomPrefix();
    try {
      // The test Cluster has no replicas: every write is unconfirmed.
      const store = createRedisStore({ client, keyPrefix: prefix, waitForReplicas: WAIT });
      for (const key of ['a', 'b', 'c', 'd', 'e', 'f']) {
        await expect(
          store.acquire({
            key,
            owner: 'o',
            fingerprint: 'fp',
            leaseMs: 30_000,
            retentionMs: 60_000,
          }),
        ).rejects.toThrow(/acknowledged by 0 of 1/);
        expect(await rawRecord(client, store.redisKey(key))).toMatchObject({
          status: 'released',
          fence: 1,
        });
      }
    } finally {
      await deletePrefix(client, prefix);
      client.disconnect();
    }
  });
});
