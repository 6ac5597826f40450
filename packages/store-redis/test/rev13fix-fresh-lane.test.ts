/**
 * rev13fix adversarial review of the lane fix (a1e7ae9), which opens fresh lanes more often:
 * can the first round of a fresh lane be ended early when a new reader starts waiting on
 * another slot? A Cluster of its own; never the shared services.
 */
import { describe, expect, it } from 'vitest';
import { laneChannel, useLaneCluster } from './cluster-lanes.js';
import { primeReader } from './live-readers.js';
import { redisBinariesAvailable } from './redis-servers.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
// Throws (fails the file) when redis-server or redis-cli is missing: these tests never skip.
redisBinariesAvailable();

describe('rev13fix: the first round of a fresh lane', () => {
  const cluster = useLaneCluster({ commandTimeoutMs: 8_000, maxReconnectDelayMs: 200 });

  // FIXED (was FINDING MEDIUM, bounded time of a wake-up; fixed in src/xread-waker.ts: a
  // lane forgets its id on a reconnect only, not on its first 'ready'): a lane is a lazy
  // connection, connected by the CLIENT ID its first round sends; its 'ready' handler then
  // cleared the id that call was fetching, so during the first round of every new lane the
  // waker had no id to CLIENT UNBLOCK it with. A reader that started waiting on another slot
  // meanwhile could not end the round: woken by its entry only when the fresh lane's block ran
  // out (here ~5 s of blockMs 5000; 1 s by default), and since a1e7ae9 a lane is fresh after
  // every drop. Reproduce: blockMs 5000, one reader waits (a fresh lane blocks), a reader of
  // another slot starts waiting 300 ms later, its entry is appended 100 ms after that.
  it('a reader that starts waiting during the first round of a fresh lane is woken by its entry', {
    timeout: 30_000,
  }, async () => {
    const { live } = laneChannel(cluster, 'r13fxn', 5_000);
    const controller = new AbortController();
    const a = { storageKey: 'first', fence: 1 };
    const b = { storageKey: 'second', fence: 1 };
    const publisherA = live.publish({ ...a, leaseMs: 20_000, signal: controller.signal });
    const publisherB = live.publish({ ...b, leaseMs: 20_000, signal: controller.signal });
    publisherA.append({ kind: 'head', status: 200, headers: [] });
    publisherB.append({ kind: 'head', status: 200, headers: [] });
    const readerA = live.open(a);
    const readerB = live.open(b);
    for (const reader of [readerA, readerB])
      expect((await primeReader(reader)).status).toBe('entries');
    // A waits alone: the round opens fresh lanes and blocks for blockMs.
    const waitingA = readerA.next({ waitMs: 10_000, maxEntries: 10 });
    await sleep(300);
    const waitingB = readerB.next({ waitMs: 10_000, maxEntries: 10 });
    await sleep(100);
    const sentAt = performance.now();
    publisherB.append({ kind: 'chunk', offset: 0, bytes: new Uint8Array([1, 2, 3]) });
    const got = await waitingB;
    const ms = performance.now() - sentAt;
    console.log(`[rev13fix fresh lane] woken after ${Math.round(ms)} ms (blockMs 5000)`);
    controller.abort();
    await waitingA;
    readerA.close();
    readerB.close();
    expect(got.status).toBe('entries');
    expect(ms).toBeLessThan(1_500);
  });
});
