import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRedisLiveStreams, createRedisStore } from '../src/index.js';
import { REDIS_URL } from './targets.js';

const prefix = `idem-live-unit:${randomBytes(6).toString('hex')}:`;
let client: Redis;
let blockingClient: Redis;
let raw: Redis;

async function connect(): Promise<Redis> {
  const redis = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await redis.connect();
    return redis;
  } catch (error) {
    redis.disconnect();
    throw new Error(
      `The Redis live-stream tests need Redis at ${REDIS_URL} (${String(error)}): start one (bash scripts/bootstrap.sh --services) or set REDIS_URL`,
    );
  }
}

beforeAll(async () => {
  [client, blockingClient, raw] = await Promise.all([connect(), connect(), connect()]);
});
afterAll(async () => {
  const keys = await raw.keys(`${prefix}*`);
  if (keys.length > 0) await raw.del(...keys);
  for (const redis of [client, blockingClient, raw]) redis.disconnect();
});

const channel = () =>
  createRedisLiveStreams({
    client,
    blockingClient,
    store: createRedisStore({ client, keyPrefix: 'idem-live-unit-store:' }),
    keyPrefix: prefix,
    blockMs: 2_000,
    endGraceMs: 300,
  });
const bytes = (text: string) => new TextEncoder().encode(text);

describe('createRedisLiveStreams', () => {
  it('keeps generations apart by fence: a reader of one never reads an entry of another', async () => {
    const live = channel();
    const lease = new AbortController();
    const one = live.publish({ storageKey: 'k1', fence: 1, leaseMs: 5_000, signal: lease.signal });
    const two = live.publish({ storageKey: 'k1', fence: 2, leaseMs: 5_000, signal: lease.signal });
    one.append({ kind: 'head', status: 200, headers: [['content-type', 'text/event-stream']] });
    two.append({ kind: 'head', status: 200, headers: [] });
    one.append({ kind: 'chunk', offset: 0, bytes: bytes('gen one') });
    two.append({ kind: 'chunk', offset: 0, bytes: bytes('gen two') });
    await one.end(true);
    const reader = live.open({ storageKey: 'k1', fence: 1 });
    const read = await reader.next({ waitMs: 0, maxEntries: 10 });
    reader.close();
    expect(read).toEqual({
      status: 'entries',
      entries: [
        { kind: 'head', status: 200, headers: [['content-type', 'text/event-stream']] },
        { kind: 'chunk', offset: 0, bytes: bytes('gen one') },
        { kind: 'end', ok: true },
      ],
    });
    await two.end(false);
  });

  it('wakes a reader that starts waiting while another one blocks (CLIENT UNBLOCK), not after the block', async () => {
    const live = channel();
    const lease = new AbortController();
    const quiet = live.publish({
      storageKey: 'quiet',
      fence: 1,
      leaseMs: 5_000,
      signal: lease.signal,
    });
    quiet.append({ kind: 'head', status: 200, headers: [] });
    const busy = live.publish({
      storageKey: 'busy',
      fence: 1,
      leaseMs: 5_000,
      signal: lease.signal,
    });
    busy.append({ kind: 'head', status: 200, headers: [] });
    const quietReader = live.open({ storageKey: 'quiet', fence: 1 });
    await quietReader.next({ waitMs: 0, maxEntries: 10 });
    // Blocks the shared XREAD round for up to 2 s on the quiet stream.
    const quietWait = quietReader.next({ waitMs: 3_000, maxEntries: 10 });
    await new Promise((resolve) => setTimeout(resolve, 100));
    const busyReader = live.open({ storageKey: 'busy', fence: 1 });
    await busyReader.next({ waitMs: 0, maxEntries: 10 });
    const waitStarted = performance.now();
    const busyWait = busyReader.next({ waitMs: 1_500, maxEntries: 10 });
    await new Promise((resolve) => setTimeout(resolve, 100));
    busy.append({ kind: 'chunk', offset: 0, bytes: bytes('x') });
    expect((await busyWait).status).toBe('entries');
    // Woken by the entry, not by the end of its own 1.5 s wait (which would read it too):
    // without the unblock it could only wake when the 2 s round on the quiet stream ended.
    expect(performance.now() - waitStarted).toBeLessThan(1_400);
    await Promise.all([quiet.end(true), busy.end(true)]);
    expect((await quietWait).status).toBe('entries');
    quietReader.close();
    busyReader.close();
  });

  it('expires with the lease once the executor stops renewing, and deletes an ended stream after its grace', async () => {
    const live = channel();
    const lease = new AbortController();
    const lost = live.publish({ storageKey: 'gone', fence: 1, leaseMs: 300, signal: lease.signal });
    lost.append({ kind: 'head', status: 200, headers: [] });
    await new Promise((resolve) => setTimeout(resolve, 50));
    lease.abort();
    const reader = live.open({ storageKey: 'gone', fence: 1 });
    expect((await reader.next({ waitMs: 0, maxEntries: 10 })).status).toBe('entries');
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect((await reader.next({ waitMs: 0, maxEntries: 10 })).status).toBe('missing');
    reader.close();

    const ended = live.publish({
      storageKey: 'ended',
      fence: 1,
      leaseMs: 5_000,
      signal: new AbortController().signal,
    });
    ended.append({ kind: 'head', status: 200, headers: [] });
    await ended.end(true);
    expect(await raw.exists(`${prefix}idem-live-unit-store:{ended}:1`)).toBe(1);
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(await raw.exists(`${prefix}idem-live-unit-store:{ended}:1`)).toBe(0);
  });

  it('a lost lease ends the generation for its readers at once (end, not ok), not a lease later', async () => {
    const live = channel();
    const lease = new AbortController();
    const lost = live.publish({
      storageKey: 'lost',
      fence: 1,
      leaseMs: 20_000,
      signal: lease.signal,
    });
    lost.append({ kind: 'head', status: 200, headers: [] });
    lost.append({ kind: 'chunk', offset: 0, bytes: bytes('partial') });
    const reader = live.open({ storageKey: 'lost', fence: 1 });
    // The entries go out one transaction at a time: read until both are there.
    const seen: string[] = [];
    for (let i = 0; i < 20 && seen.length < 2; i++) {
      const first = await reader.next({ waitMs: 200, maxEntries: 10 });
      if (first.status === 'entries') seen.push(...first.entries.map((entry) => entry.kind));
    }
    expect(seen).toEqual(['head', 'chunk']);
    lease.abort();
    const read = await reader.next({ waitMs: 1_500, maxEntries: 10 });
    reader.close();
    expect(read).toEqual({ status: 'entries', entries: [{ kind: 'end', ok: false }] });
    // Then deleted after the grace, like an ended stream.
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(await raw.exists(`${prefix}idem-live-unit-store:{lost}:1`)).toBe(0);
  });

  it('never leaves a stream key without a TTL: an entry after the stream expired does not recreate it', async () => {
    const live = channel();
    const lease = new AbortController();
    const publisher = live.publish({
      storageKey: 'ttl',
      fence: 1,
      leaseMs: 20_000,
      signal: lease.signal,
    });
    publisher.append({ kind: 'head', status: 200, headers: [] });
    publisher.append({ kind: 'chunk', offset: 0, bytes: bytes('a') });
    const key = `${prefix}idem-live-unit-store:{ttl}:1`;
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(await raw.pttl(key)).toBeGreaterThan(0);
    // The stream expired (a Redis blip kept the renewals out for a lease), the executor goes on.
    await raw.del(key);
    publisher.append({ kind: 'chunk', offset: 1, bytes: bytes('b') });
    await new Promise((resolve) => setTimeout(resolve, 100));
    const ttl = await raw.pttl(key);
    // -2: no key; -1 would be a key that lives forever if the executor now crashed.
    expect(ttl === -2 || ttl > 0).toBe(true);
    lease.abort();
  });
});
