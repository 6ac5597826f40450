import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GENERATION_HEADER, REPLAYED_HEADER } from '../src/index.js';
import { type ChildServer, startChildServer } from './live/child-servers.js';
import { sseEvent } from './live/sse-app.js';
import { openStream } from './live/stream-client.js';

const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = `idem-live-test:${randomBytes(6).toString('hex')}:`;
let redis: Redis;
let a: ChildServer;
let b: ChildServer;
let ta: ChildServer;
let tb: ChildServer;

const full = (fence: number, events: number) =>
  Array.from({ length: events }, (_, i) => sseEvent(fence, i + 1)).join('');
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const runs = async (...servers: ChildServer[]) => {
  let total = 0;
  for (const server of servers)
    total += ((await (await fetch(`${server.url}/runs`)).json()) as { runs: number }).runs;
  return total;
};

beforeAll(async () => {
  redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await redis.connect();
    await redis.ping();
  } catch (error) {
    redis.disconnect();
    throw new Error(
      `The Redis live-stream tests need a Redis at ${url} (${String(error)}): start one (bash scripts/bootstrap.sh --services) or set REDIS_URL`,
    );
  }
  [a, b] = await Promise.all([
    startChildServer({ IDEM_TEST_PREFIX: prefix }),
    startChildServer({ IDEM_TEST_PREFIX: prefix }),
  ]);
  // The same processes, under /t/: lease 1.5 s, no heartbeat.
  ta = { ...a, url: `${a.url}/t` };
  tb = { ...b, url: `${b.url}/t` };
  // Warm up (module loading, first compilation), so a cold start does not eat a short lease.
  for (const server of [a, b, ta, tb])
    await (
      await openStream(server.url, `warm-${server.url}`, { events: 2, intervalMs: 1 })
    ).readAll();
}, 60_000);

afterAll(async () => {
  await Promise.all([a, b].map((server) => server?.stop()));
  if (redis?.status === 'ready') {
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length > 0) await redis.del(...keys);
    await redis.quit();
  }
});

describe('live streams on Redis, two server processes', () => {
  it('a duplicate on the other process attaches and gets the same bytes; the model runs once', async () => {
    const plan = { events: 8, intervalMs: 50 };
    const first = await openStream(a.url, 'x1', plan);
    await first.readUntil('"n":2');
    const attached = await openStream(b.url, 'x1', plan);
    expect(attached.response.status).toBe(200);
    expect(attached.response.headers.get(REPLAYED_HEADER)).toBe('true');
    expect(attached.response.headers.get(GENERATION_HEADER)).toBe('1');
    const [one, two] = await Promise.all([first.readAll(), attached.readAll()]);
    expect(Buffer.from(two).equals(Buffer.from(one))).toBe(true);
    expect(new TextDecoder().decode(one)).toBe(full(1, 8));
    const replay = await openStream(b.url, 'x1', plan);
    expect(Buffer.from(await replay.readAll()).equals(Buffer.from(one))).toBe(true);
    expect(await runs(a, b)).toBe(1 + 2);
  });

  it('Last-Event-ID on the other process gives exactly the missing events, live and on replay', async () => {
    const plan = { events: 7, intervalMs: 50 };
    const first = await openStream(a.url, 'x2', plan);
    await first.readUntil('"n":3');
    const resumed = await openStream(b.url, 'x2', plan, { 'last-event-id': '3' });
    const all = new TextDecoder().decode(await first.readAll());
    expect(new TextDecoder().decode(await resumed.readAll())).toBe(all.slice(full(1, 3).length));
    const replayed = await openStream(a.url, 'x2', plan, { 'last-event-id': '6' });
    expect(new TextDecoder().decode(await replayed.readAll())).toBe(all.slice(full(1, 6).length));
    expect(await runs(a, b)).toBe(2 + 2);
  });

  it('keeps the stream only while it lives (lease 30 s): it expires with the lease, and is deleted after its end', async () => {
    const plan = { events: 10, intervalMs: 100 };
    const first = await openStream(a.url, 'x3', plan);
    await first.readUntil('"n":1');
    // Streams of earlier tests may still wait out their grace after the end (2 s here). The
    // first caller reads ahead of the publication (it is served from the capture), so the
    // stream's first XADD may land a moment after "n":1 reached it: look for up to 800 ms.
    const live: string[] = [];
    for (let i = 0; i < 16 && live.length === 0; i++) {
      if (i > 0) await sleep(50);
      for (const key of await redis.keys(`${prefix}live:*`))
        if ((await redis.pttl(key)) > 2_000) live.push(key);
    }
    expect(live.length).toBe(1);
    const ttl = await redis.pttl(live[0] as string);
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(30_000);
    await first.readAll();
    for (let i = 0; i < 40 && (await redis.exists(live[0] as string)) === 1; i++) await sleep(100);
    expect(await redis.exists(live[0] as string)).toBe(0);
  });

  it('a takeover on the other process starts a new generation: no reader splices two executions', async () => {
    const plan = { events: 10, intervalMs: 250, takeoverIntervalMs: 10 };
    const first = await openStream(ta.url, 'x4', plan);
    await first.readUntil('"n":1');
    const reader1 = await openStream(tb.url, 'x4', plan);
    expect(reader1.response.headers.get(GENERATION_HEADER)).toBe('1');
    const reading1 = reader1.readAll().then(
      () => 'ended',
      () => 'broken',
    );
    // The first execution renews nothing: its lease (1.5 s) passes while it streams (2.5 s).
    await sleep(1_700);
    const takeover = await openStream(tb.url, 'x4', plan);
    expect(takeover.response.headers.get(GENERATION_HEADER)).toBe('2');
    await takeover.readUntil('"n":1');
    const reader2 = await openStream(ta.url, 'x4', plan);
    // A resume that names no generation, after an id both generations carry: the client may
    // have seen generation 1, so nothing of generation 2 is spliced after its event (412).
    const blind = await openStream(ta.url, 'x4', plan, { 'last-event-id': '1' });
    expect(blind.response.status).toBe(412);
    const [second, attached2] = await Promise.all([takeover.readAll(), reader2.readAll()]);
    // On replay (the other process) too; naming the generation resumes it.
    const blindReplay = await openStream(tb.url, 'x4', plan, { 'last-event-id': '1' });
    expect(blindReplay.response.status).toBe(412);
    const named = await openStream(tb.url, 'x4', plan, {
      'last-event-id': '1',
      [GENERATION_HEADER]: '2',
    });
    expect(new TextDecoder().decode(await named.readAll())).toBe(
      full(2, 10).slice(sseEvent(2, 1).length),
    );
    await first.readAll().catch(() => {});
    expect(await reading1).toBe('broken');
    expect(reader1.text()).not.toContain('"gen":2');
    expect(full(1, 10).startsWith(reader1.text())).toBe(true);
    expect(reader2.response.headers.get(GENERATION_HEADER)).toBe('2');
    expect(Buffer.from(attached2).equals(Buffer.from(second))).toBe(true);
    expect(new TextDecoder().decode(second)).toBe(full(2, 10));
    expect(await runs(ta, tb)).toBe(2 + 2);
  });
});
