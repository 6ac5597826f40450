/**
 * rev13 adversarial review: the live-stream waker on a Redis Cluster of its own blocks on
 * per-node "lane" connections (`duplicate()` of the Cluster's node connection). A node
 * connection of an ioredis Cluster is built with `retryStrategy: null`: a duplicate that
 * loses its connection (a network blip, a proxy restart, CLIENT KILL, a primary restarted)
 * never reconnects. The question: are readers still woken by their entries afterwards?
 */
import { describe, expect, it } from 'vitest';
import { killXreadConnections, laneChannel, useLaneCluster } from './cluster-lanes.js';
import { primeReader } from './live-readers.js';
import { redisBinariesAvailable } from './redis-servers.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
// Throws (fails the file) when redis-server or redis-cli is missing: these tests never skip.
redisBinariesAvailable();

describe('rev13: live-stream lanes on a Cluster after a dropped connection', () => {
  const cluster = useLaneCluster({ commandTimeoutMs: 1_000, maxReconnectDelayMs: 200 });

  // FIXED (was FINDING MEDIUM, bounded time / recovery; fixed in src/xread-waker.ts: a lane
  // whose connection ended or failed is closed and replaced by a fresh duplicate of the node's
  // current connection at the next round; an answer from Redis keeps it): on a Cluster the waker's lane connections are
  // `duplicate()`s of ioredis's node connections, which ioredis builds with
  // `retryStrategy: null`. When a lane's connection drops (here CLIENT KILL of the blocked
  // XREAD connections; a network blip, a proxy or a primary restart do the same) the lane
  // ends for good, and the waker keeps it: every later round on that node fails at once
  // ("Connection is closed"), is retried every 200 ms on the same dead lanes, and is never
  // replaced while any reader keeps waiting on that node (lanes are only closed when nobody
  // waits). Readers there are no longer woken by their entries, only by their own wait
  // running out (attach waits `blockMs`, up to a whole wait of latency per step), for as long
  // as the node is waited on: the ~20 ms wake-up the README promises never comes back by
  // itself. Fix: drop a lane whose connection has ended (status 'end' or a failed round) and
  // duplicate the node's current connection for the next round.
  it('a reader waiting on a node whose lane connections were killed is woken by its next entry, not by its wait running out', {
    timeout: 30_000,
  }, async () => {
    const { servers } = cluster;
    const { live } = laneChannel(cluster, 'r13lanes', 1_000);
    const controller = new AbortController();
    const generation = { storageKey: 'k1', fence: 1 };
    const publisher = live.publish({ ...generation, leaseMs: 20_000, signal: controller.signal });
    publisher.append({ kind: 'head', status: 200, headers: [] });
    const reader = live.open(generation);
    expect((await primeReader(reader)).status).toBe('entries');
    const body = new Uint8Array(64).fill(120);
    const wakeAfter = async (offset: number, before: () => Promise<void>) => {
      const waiting = reader.next({ waitMs: 6_000, maxEntries: 10 });
      await sleep(150);
      await before();
      const sentAt = performance.now();
      publisher.append({
        kind: 'chunk',
        offset,
        bytes: body.subarray(offset, offset + 8),
        body: body.subarray(0, offset + 8),
      });
      const got = await waiting;
      return { status: got.status, ms: performance.now() - sentAt };
    };
    // Another reader of the same stream keeps waiting throughout, its waits overlapping, as
    // a long attached response does: the node is never without a waiter.
    const keeperReader = live.open(generation);
    let keeping = true;
    const keeper = (async () => {
      while (keeping) await keeperReader.next({ waitMs: 700, maxEntries: 10 });
    })();
    // Baseline: woken by the entry.
    const healthy = await wakeAfter(0, async () => {});
    // Kill the blocked XREAD connections of every primary (the lanes), then give the waker
    // time to notice and go again.
    const killLanes = async () => {
      let killed = 0;
      for (const s of servers) killed += await killXreadConnections(s.port);
      expect(killed).toBeGreaterThan(0);
      await sleep(800);
    };
    const afterKill = await wakeAfter(8, killLanes);
    // And later still (nothing else happened): service should have come back by itself.
    await sleep(500);
    const later = await wakeAfter(16, async () => {});
    console.log(
      `[rev13 lanes] healthy=${JSON.stringify(healthy)} afterKill=${JSON.stringify(afterKill)} later=${JSON.stringify(later)}`,
    );
    keeping = false;
    await keeper;
    keeperReader.close();
    reader.close();
    controller.abort();
    expect(healthy.ms).toBeLessThan(1_000);
    expect(afterKill.status).toBe('entries');
    expect(afterKill.ms).toBeLessThan(2_000);
    expect(later.ms).toBeLessThan(1_000);
  });
});
