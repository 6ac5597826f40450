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

describe.skipIf(!clusterPorts)(
  'createRedisLiveStreams: readers in many slots of one primary',
  () => {
    // At most 4 connections a primary: before, its slots beyond 4 were read in turn, after the
    // others' XREAD BLOCK ended (blockMs, 2 s): their readers' 1.8 s waits ended empty.
    it('a primary with readers in more slots than its connections wakes each of them by its entry', async () => {
      const store = createRedisStore({ client, keyPrefix: prefix });
      const slotsOf = (client as Cluster & { slots: string[][] }).slots;
      // Six storage keys in six slots of one primary.
      const byNode = new Map<string, Map<number, string>>();
      let keys: string[] = [];
      for (let i = 0; i < 400 && keys.length < 6; i++) {
        const key = `many-${i}`;
        const slot = (await client.cluster('KEYSLOT', store.redisKey(key))) as number;
        const node = slotsOf[slot]?.[0] as string;
        const mine = byNode.get(node) ?? new Map<number, string>();
        byNode.set(node, mine);
        if (!mine.has(slot)) mine.set(slot, key);
        if (mine.size === 6) keys = [...mine.values()];
      }
      expect(keys).toHaveLength(6);
      const { publishers, readers } = await setup(keys);
      const waits = readers.map((reader) => reader.next({ waitMs: 1_800, maxEntries: 10 }));
      await new Promise((resolve) => setTimeout(resolve, 100));
      // Only the streams of the last slots (read last before) get an entry, one after the other.
      for (const i of [5, 4, 3]) {
        (publishers[i] as (typeof publishers)[number]).append({
          kind: 'chunk',
          offset: 0,
          bytes: new Uint8Array([i]),
        });
        const read = await waits[i];
        expect(read?.status).toBe('entries');
      }
      await Promise.all(waits);
      for (const reader of readers) reader.close();
      await Promise.all(publishers.map((publisher) => publisher.end(true)));
    }, 30_000);
  },
);
