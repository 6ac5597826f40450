/**
 * A live stream whose hash slot moves to another primary (a resharding step) while a reader
 * waits on it in a blocking `XREAD` round. Redis 7 answers the blocked `XREAD` with -MOVED
 * once the slot is handed over; the waker must take the new owner from that answer and block
 * there in the next round (its blocking Cluster never sees the producer's MOVED), or the
 * reader only learns of each new chunk when its own wait runs out. The readers here wait
 * 60 s per `next`: a reader that is not woken fails the test by its timeout, not by a clock.
 */

import type { LiveEntry, LiveReader } from '@idem/core';
import { Cluster } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createRedisLiveStreams,
  createRedisStore,
  recommendedRedisClusterOptions,
} from '../src/index.js';
import {
  cli,
  moveSlot,
  type RedisServer,
  redisBinariesAvailable,
  startCluster,
  stopRedisServer,
} from './redis-servers.js';
import { TEST_CLIENT_BOUNDS } from './targets.js';

const WAIT_MS = 60_000;
const BLOCK_MS = 500;
const CHUNKS = 8;

/** Connections of `server` whose last command was an XREAD (the waker's lanes). */
async function xreadConnections(server: RedisServer): Promise<number> {
  const list = await cli(server, 'client', 'list');
  return list.split('\n').filter((line) => / cmd=xread( |$)/.test(line)).length;
}

/** Waits (bounded) until `server` has a client blocked in XREAD. */
async function blockedOn(server: RedisServer): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const list = await cli(server, 'client', 'list');
    if (list.split('\n').some((line) => / flags=b /.test(line) && / cmd=xread( |$)/.test(line)))
      return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error(`no XREAD blocked on port ${server.port}`);
}

/** Reads until the end entry, each `next` waiting up to WAIT_MS; returns every entry. */
async function readAll(reader: LiveReader): Promise<LiveEntry[]> {
  const entries: LiveEntry[] = [];
  for (let i = 0; i < 100; i++) {
    const read = await reader.next({ waitMs: WAIT_MS, maxEntries: 100 });
    if (read.status === 'missing') break;
    if (read.status === 'entries') entries.push(...read.entries);
    if (entries.at(-1)?.kind === 'end') break;
  }
  return entries;
}

const chunk = (i: number) => new Uint8Array([i, 255 - i, 0, i]);

/**
 * `entries` with contiguous chunks joined: chunks appended while a write is in flight go out
 * as one entry (rev13), so only the bytes, their order and the head and end are compared.
 */
function joined(entries: LiveEntry[]): LiveEntry[] {
  const out: LiveEntry[] = [];
  for (const entry of entries) {
    const last = out.at(-1);
    if (
      entry.kind === 'chunk' &&
      last?.kind === 'chunk' &&
      last.offset + last.bytes.length === entry.offset
    ) {
      out[out.length - 1] = {
        kind: 'chunk',
        offset: last.offset,
        bytes: new Uint8Array([...last.bytes, ...entry.bytes]),
      };
    } else
      out.push(entry.kind === 'chunk' ? { ...entry, bytes: new Uint8Array(entry.bytes) } : entry);
  }
  return out;
}

describe.skipIf(!redisBinariesAvailable())('live streams when their slot moves', () => {
  let servers: RedisServer[] = [];
  let client: Cluster;
  let blockingClient: Cluster;

  beforeAll(async () => {
    // A Cluster of its own: the test moves slots around.
    servers = await startCluster(3);
    const connect = async () => {
      const cluster = new Cluster(
        servers.map((s) => ({ host: '127.0.0.1', port: s.port })),
        { ...recommendedRedisClusterOptions(TEST_CLIENT_BOUNDS), lazyConnect: true },
      );
      cluster.on('error', () => {});
      await cluster.connect();
      return cluster;
    };
    [client, blockingClient] = await Promise.all([connect(), connect()]);
  });
  afterAll(async () => {
    client?.disconnect();
    blockingClient?.disconnect();
    await Promise.all(servers.map(stopRedisServer));
  });

  function setup(storageKey: string) {
    const store = createRedisStore({ client, keyPrefix: `idem-live-move:${storageKey}:` });
    const live = createRedisLiveStreams({
      client,
      blockingClient,
      store,
      keyPrefix: 'idem-live-move:',
      blockMs: BLOCK_MS,
      endGraceMs: 5_000,
    });
    const publisher = live.publish({
      storageKey,
      fence: 1,
      leaseMs: 30_000,
      signal: new AbortController().signal,
    });
    publisher.append({ kind: 'head', status: 200, headers: [] });
    publisher.append({ kind: 'chunk', offset: 0, bytes: chunk(0) });
    const streamKey = `idem-live-move:${store.redisKey(storageKey)}:1`;
    return { live, store, publisher, streamKey, reader: live.open({ storageKey, fence: 1 }) };
  }

  const expected = (count: number): LiveEntry[] => [
    { kind: 'head', status: 200, headers: [] },
    ...Array.from({ length: count }, (_, i) => ({
      kind: 'chunk' as const,
      offset: i * 4,
      bytes: chunk(i),
    })),
    { kind: 'end', ok: true },
  ];

  it('a reader blocked on the moved slot gets every later chunk, in order, and the end', async () => {
    const { live, store, publisher, streamKey, reader } = setup('moved-mid-round');
    const slots = (client as unknown as { slots: string[][] }).slots;
    const ownerOf = async (key: string) => {
      const slot = Number(await client.cluster('KEYSLOT', key));
      return servers.findIndex((s) => slots[slot]?.[0]?.endsWith(`:${s.port}`));
    };
    const from = await ownerOf(streamKey);
    // Another reader of the same channel waits all along on a stream of the primary the slot
    // moves to: the waker's loop never pauses, so lanes to the old primary close only if the
    // waker closes them itself.
    let other = '';
    for (let i = 0; i < 100 && other === ''; i++)
      if ((await ownerOf(`idem-live-move:${store.redisKey(`o${i}`)}:1`)) === (from + 1) % 3)
        other = `o${i}`;
    const otherPublisher = live.publish({
      storageKey: other,
      fence: 1,
      leaseMs: 30_000,
      signal: new AbortController().signal,
    });
    otherPublisher.append({ kind: 'head', status: 200, headers: [] });
    const otherReader = live.open({ storageKey: other, fence: 1 });
    expect((await otherReader.next({ waitMs: 5_000, maxEntries: 10 })).status).toBe('entries');
    const stopOther = new AbortController();
    const otherWait = otherReader.next({
      waitMs: WAIT_MS,
      maxEntries: 10,
      signal: stopOther.signal,
    });
    // The reader has what is there and waits in a blocking round on the slot's primary.
    const first = await reader.next({ waitMs: 0, maxEntries: 100 });
    expect(first.status).toBe('entries');
    const rest = readAll(reader);
    await blockedOn(servers[from] as RedisServer);

    const { source, target } = await moveSlot(servers, streamKey);
    // The producer goes on through the store's client, which follows MOVED.
    for (let i = 1; i < CHUNKS; i++) {
      publisher.append({ kind: 'chunk', offset: i * 4, bytes: chunk(i) });
      await new Promise((resolve) => setTimeout(resolve, 20));
      if (i === CHUNKS / 2) {
        // Mid-stream, the waker blocks on the new owner and holds no lane on the old one.
        await blockedOn(target);
        // The old primary sees the lane's socket close a moment after the waker closed it (on
        // a loaded machine, after the new round is already blocked): bounded at 3 s.
        let onSource = await xreadConnections(source);
        for (let tries = 0; onSource > 0 && tries < 60; tries++) {
          await new Promise((resolve) => setTimeout(resolve, 50));
          onSource = await xreadConnections(source);
        }
        expect(onSource).toBe(0);
        expect(await xreadConnections(target)).toBeLessThanOrEqual(4);
      }
    }
    await publisher.end(true);
    const entries = [...(first.status === 'entries' ? first.entries : []), ...(await rest)];
    expect(joined(entries)).toEqual(joined(expected(CHUNKS)));
    reader.close();
    stopOther.abort();
    expect((await otherWait).status).toBe('idle');
    otherReader.close();
    await otherPublisher.end(true);
  }, 20_000);

  it('a stream that ends while its slot is migrating reaches the reader whole', async () => {
    const { publisher, streamKey, reader } = setup('ended-mid-migration');
    const first = await reader.next({ waitMs: 0, maxEntries: 100 });
    expect(first.status).toBe('entries');
    const rest = readAll(reader);
    await new Promise((resolve) => setTimeout(resolve, 50));
    await moveSlot(servers, streamKey, async () => {
      // The stream is on the target already, the slot not handed over: writes follow -ASK.
      for (let i = 1; i < CHUNKS; i++)
        publisher.append({ kind: 'chunk', offset: i * 4, bytes: chunk(i) });
      await publisher.end(true);
      expect(Number(await client.pttl(streamKey))).toBeGreaterThan(0);
    });
    const entries = [...(first.status === 'entries' ? first.entries : []), ...(await rest)];
    expect(joined(entries)).toEqual(joined(expected(CHUNKS)));
    reader.close();
  }, 20_000);
});
