/**
 * rev13fix adversarial review of the lane fix (a1e7ae9): a lane whose connection failed is
 * closed and replaced "at the next round". The next round starts only once every other lane
 * of the round has ended its XREAD BLOCK: while readers wait on another primary too, a reader
 * of the failed lane's node is not woken by its entry until the others' block runs out.
 * A Cluster of its own (kills lane connections with CLIENT KILL); never the shared services.
 */
import { describe, expect, it } from 'vitest';
import { killXreadConnections, laneChannel, primaryOf, useLaneCluster } from './cluster-lanes.js';
import { primeReader } from './live-readers.js';
import { redisBinariesAvailable } from './redis-servers.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
// Throws (fails the file) when redis-server or redis-cli is missing: these tests never skip.
redisBinariesAvailable();

describe('rev13fix: a failed lane while another primary blocks', () => {
  const cluster = useLaneCluster({ commandTimeoutMs: 8_000, maxReconnectDelayMs: 200 });

  // FIXED (was FINDING LOW; fixed in src/xread-waker.ts: a lane that failed ends the round's
  // other XREADs, as -MOVED does, so the next round replaces it at once): on a Cluster, when one lane's XREAD fails (its connection was killed or
  // dropped), the waker marks the round failed but waits for every other lane of the round to
  // end its XREAD BLOCK (up to `blockMs`) before the next round replaces the lane. A reader on
  // the failed lane's node is woken by its entry only then: up to `blockMs` (here 5 s, valid
  // up to 2^31-1) late instead of ~20 ms, each time a lane drops while another primary has
  // readers. Reproduce: readers on two primaries, blockMs 5000, CLIENT KILL the XREAD
  // connection on one primary, append to its stream 100 ms later: woken after ~4.8 s. The
  // -MOVED path already ends the round's other XREADs (`unblockLanes`) for this reason.
  // Suggested fix: end the round early (unblockLanes) when a lane fails, as for -MOVED.
  it('a reader on a primary whose lane was killed is woken by its next entry though another primary blocks', {
    timeout: 30_000,
  }, async () => {
    const { store, prefix, live } = laneChannel(cluster, 'r13fxl', 5_000);
    // Two storage keys whose streams live on two different primaries.
    const nodeOf = (storageKey: string) =>
      primaryOf(cluster, `${prefix}${store.redisKey(storageKey)}:1`);
    const picked: { key: string; node: string }[] = [];
    for (let i = 0; i < 40 && picked.length < 2; i++) {
      const key = `k${i}`;
      const node = await nodeOf(key);
      if (!picked.some((p) => p.node === node)) picked.push({ key, node });
    }
    expect(picked.length).toBe(2);
    const [a, b] = picked as [{ key: string; node: string }, { key: string; node: string }];
    const controller = new AbortController();
    const publisherA = live.publish({
      storageKey: a.key,
      fence: 1,
      leaseMs: 20_000,
      signal: controller.signal,
    });
    const publisherB = live.publish({
      storageKey: b.key,
      fence: 1,
      leaseMs: 20_000,
      signal: controller.signal,
    });
    publisherA.append({ kind: 'head', status: 200, headers: [] });
    publisherB.append({ kind: 'head', status: 200, headers: [] });
    const readerA = live.open({ storageKey: a.key, fence: 1 });
    const readerB = live.open({ storageKey: b.key, fence: 1 });
    for (const reader of [readerA, readerB])
      expect((await primeReader(reader)).status).toBe('entries');
    // B's reader keeps waiting (nothing comes on B): its lane blocks for blockMs.
    const waitingB = readerB.next({ waitMs: 10_000, maxEntries: 10 });
    const waitingA = readerA.next({ waitMs: 10_000, maxEntries: 10 });
    await sleep(300);
    // Kill the XREAD connection of A's primary (the lane), as a blip or proxy restart would.
    const portA = Number(a.node.split(':')[1]);
    const killed = await killXreadConnections(portA);
    expect(killed).toBeGreaterThan(0);
    await sleep(100);
    const sentAt = performance.now();
    publisherA.append({ kind: 'chunk', offset: 0, bytes: new Uint8Array([1, 2, 3]) });
    const got = await waitingA;
    const ms = performance.now() - sentAt;
    console.log(`[rev13fix lane round] woken after ${Math.round(ms)} ms (blockMs 5000)`);
    controller.abort();
    await waitingB;
    readerA.close();
    readerB.close();
    expect(got.status).toBe('entries');
    expect(ms).toBeLessThan(1_500);
  });
});
