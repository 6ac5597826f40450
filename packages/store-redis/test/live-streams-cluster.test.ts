/**
 * The Redis live-stream channel on the test Redis Cluster (3 primaries): a generation's
 * stream key hashes to its record's slot, and readers attach and are woken, also while
 * generations of several slots are read at once.
 */
import { Cluster } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRedisLiveStreams, createRedisStore } from '../src/index.js';
import { type Client, cluster, clusterPorts, deletePrefix, randomPrefix } from './targets.js';

const prefix = randomPrefix();
let client: Client;
let blockingClient: Client;
beforeAll(async () => {
  [client, blockingClient] = await Promise.all([cluster.connect(), cluster.connect()]);
}, 30_000);
afterAll(async () => {
  if (client) await deletePrefix(client, prefix);
  client?.disconnect();
  blockingClient?.disconnect();
});

async function setup(keys: string[]) {
  const store = createRedisStore({ client, keyPrefix: prefix });
  const live = createRedisLiveStreams({
    client,
    blockingClient,
    store,
    keyPrefix: `${prefix}live:`,
    blockMs: 2_000,
    endGraceMs: 500,
  });
  const publishers = keys.map((storageKey) => {
    const publisher = live.publish({
      storageKey,
      fence: 1,
      leaseMs: 10_000,
      signal: new AbortController().signal,
    });
    publisher.append({ kind: 'head', status: 200, headers: [] });
    return publisher;
  });
  const readers = keys.map((storageKey) => live.open({ storageKey, fence: 1 }));
  for (const reader of readers) {
    let read = await reader.next({ waitMs: 0, maxEntries: 10 });
    for (let i = 0; i < 50 && read.status !== 'entries'; i++)
      read = await reader.next({ waitMs: 0, maxEntries: 10 });
    expect(read.status).toBe('entries');
  }
  return { store, publishers, readers };
}

/** Every reader waits (waitMs 1.8 s, one XREAD loop for all); then each stream gets an entry. */
async function wakeAll({ publishers, readers }: Awaited<ReturnType<typeof setup>>) {
  const waits = readers.map(async (reader) => {
    const read = await reader.next({ waitMs: 1_800, maxEntries: 10 });
    return { read, at: performance.now() };
  });
  await new Promise((resolve) => setTimeout(resolve, 100));
  const sentAt = performance.now();
  for (const [i, publisher] of publishers.entries())
    publisher.append({ kind: 'chunk', offset: 0, bytes: new Uint8Array([i]) });
  const results = await Promise.all(waits);
  results.forEach(({ read }, i) => {
    expect(read.status).toBe('entries');
    if (read.status !== 'entries') return;
    expect([...(read.entries[0] as { bytes: Uint8Array }).bytes]).toEqual([i]);
  });
  for (const reader of readers) reader.close();
  await Promise.all(publishers.map((publisher) => publisher.end(true)));
  return results.map(({ at }) => Math.round(at - sentAt));
}

describe.skipIf(!clusterPorts)('createRedisLiveStreams on a Redis Cluster', () => {
  it('puts each stream in its record slot; a reader attaches and is woken by the next entry', async () => {
    expect(client).toBeInstanceOf(Cluster);
    const store = createRedisStore({ client, keyPrefix: prefix });
    // Storage keys spread over the three primaries' slots.
    const slots = new Set<number>();
    for (const key of ['alpha', 'bravo', 'charlie', 'delta', 'echo', 'foxtrot']) {
      const recordSlot = (await client.cluster('KEYSLOT', store.redisKey(key))) as number;
      const streamSlot = (await client.cluster(
        'KEYSLOT',
        `${prefix}live:${store.redisKey(key)}:1`,
      )) as number;
      expect(streamSlot).toBe(recordSlot);
      slots.add(recordSlot);
    }
    expect(slots.size).toBeGreaterThan(1);
    for (const key of ['alpha', 'bravo']) {
      const latencies = await wakeAll(await setup([key]));
      console.log(`cluster wake latency, one stream (${key}): ${latencies[0]} ms`);
      // Woken by the entry, not by the end of its 1.8 s wait.
      expect(latencies[0]).toBeLessThan(1_000);
    }
  }, 30_000);

  // One XREAD naming streams of several slots is a CROSSSLOT error on a Cluster (readers then
  // waited out blockMs); the waker reads each slot's streams with its own XREAD, on a
  // connection to that slot's primary.
  it('readers of streams in several slots at once are woken by their entries', async () => {
    const latencies = await wakeAll(await setup(['alpha', 'bravo', 'charlie', 'delta']));
    console.log(`cluster wake latencies, four streams: ${latencies.join(', ')} ms`);
    for (const latency of latencies) expect(latency).toBeLessThan(1_000);
  }, 30_000);
});
