import { createMemoryLiveStreams } from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';
import { afterEach, describe, expect, it } from 'vitest';
import { GENERATION_HEADER, PROBLEM_TYPES, REPLAYED_HEADER } from '../src/index.js';
import { sseApp, sseEvent } from './live/sse-app.js';
import { openStream } from './live/stream-client.js';
import { serveWeb, type WebServer } from './live/web-server.js';

const servers: WebServer[] = [];
afterEach(async () => {
  for (const server of servers.splice(0)) await server.close();
});

async function start(options: Parameters<typeof sseApp>[1] = {}) {
  const channel = createMemoryLiveStreams();
  const app = sseApp(createMemoryStore(), { liveStreams: { channel, stallMs: 400 }, ...options });
  const server = await serveWeb(app.handle);
  servers.push(server);
  return { ...app, url: server.url, channel };
}

const full = (fence: number, events: number, pad = 0) =>
  Array.from({ length: events }, (_, i) => sseEvent(fence, i + 1, pad)).join('');

describe('live streams on one process (in-process channel): attach', () => {
  it('a duplicate attaches mid-stream and gets the same bytes as the first caller; the handler runs once', async () => {
    const app = await start();
    const plan = { events: 8, intervalMs: 40 };
    const first = await openStream(app.url, 'a1', plan);
    await first.readUntil('"n":3');
    const second = await openStream(app.url, 'a1', plan);
    expect(second.response.status).toBe(200);
    expect(second.response.headers.get(REPLAYED_HEADER)).toBe('true');
    expect(second.response.headers.get(GENERATION_HEADER)).toBe('1');
    expect(first.response.headers.get(GENERATION_HEADER)).toBe('1');
    const [a, b] = await Promise.all([first.readAll(), second.readAll()]);
    expect(Buffer.from(b).equals(Buffer.from(a))).toBe(true);
    expect(new TextDecoder().decode(a)).toBe(full(1, 8));
    const replay = await openStream(app.url, 'a1', plan);
    expect(Buffer.from(await replay.readAll()).equals(Buffer.from(a))).toBe(true);
    expect(app.runs()).toBe(1);
    expect(app.channel.stats()).toEqual({ generations: 0, readers: 0, bytes: 0 });
  });

  it('keeps 422 for another body, and never lets another tenant attach (it runs its own)', async () => {
    const app = await start();
    const first = await openStream(app.url, 'a2', { events: 5, intervalMs: 40 });
    await first.readUntil('"n":1');
    const other = await openStream(app.url, 'a2', { events: 4, intervalMs: 40 });
    expect(other.response.status).toBe(422);
    const tenant = await openStream(
      app.url,
      'a2',
      { events: 5, intervalMs: 40 },
      { 'x-tenant': 't2' },
    );
    expect(tenant.response.headers.get(REPLAYED_HEADER)).toBeNull();
    await Promise.all([first.readAll(), tenant.readAll()]);
    expect(app.runs()).toBe(2);
  });

  it('keeps 409 for a response that is not a stream, and for a caller that opts out', async () => {
    const app = await start();
    const json = openStream(app.url, 'a3', { events: 0, intervalMs: 300, json: true });
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(
      (await openStream(app.url, 'a3', { events: 0, intervalMs: 300, json: true })).response.status,
    ).toBe(409);
    await (await json).readAll();
    const first = await openStream(app.url, 'a4', { events: 4, intervalMs: 50 });
    await first.readUntil('"n":1');
    const optOut = await openStream(
      app.url,
      'a4',
      { events: 4, intervalMs: 50 },
      { 'idempotent-attach': 'false' },
    );
    expect(optOut.response.status).toBe(409);
    await first.readAll();
    expect(app.runs()).toBe(2);
  });

  it('ends an attached body with an error (never a clean end) when the first execution fails, and the key is free again', async () => {
    const app = await start();
    const plan = { events: 6, intervalMs: 40, failAfter: 3 };
    const first = await openStream(app.url, 'a5', plan);
    await first.readUntil('"n":1');
    const attached = await openStream(app.url, 'a5', plan);
    expect(attached.response.status).toBe(200);
    await expect(attached.readAll()).rejects.toThrow();
    await expect(first.readAll()).rejects.toThrow();
    expect(attached.text()).toBe(full(1, 3));
    const again = await openStream(app.url, 'a5', { events: 2, intervalMs: 10 });
    expect(again.response.headers.get(REPLAYED_HEADER)).toBeNull();
    await again.readAll();
    expect(app.runs()).toBe(2);
  });
});

describe('live streams on one process: Last-Event-ID', () => {
  it('resumes a live stream and a replay after the event named, with exactly the missing bytes', async () => {
    const app = await start();
    const plan = { events: 7, intervalMs: 40 };
    const first = await openStream(app.url, 'r1', plan);
    await first.readUntil('"n":3');
    const resumed = await openStream(app.url, 'r1', plan, { 'last-event-id': '2' });
    const all = new TextDecoder().decode(await first.readAll());
    const tail = new TextDecoder().decode(await resumed.readAll());
    expect(all).toBe(full(1, 7));
    expect(tail).toBe(all.slice(full(1, 2).length));
    const replayed = await openStream(app.url, 'r1', plan, { 'last-event-id': '5' });
    expect(replayed.response.headers.get(GENERATION_HEADER)).toBe('1');
    expect(new TextDecoder().decode(await replayed.readAll())).toBe(all.slice(full(1, 5).length));
    expect(app.runs()).toBe(1);
  });

  it('answers 412 for an id no event carries, and for another generation, running nothing', async () => {
    const app = await start();
    const plan = { events: 3, intervalMs: 10 };
    await (await openStream(app.url, 'r2', plan)).readAll();
    const unknown = await openStream(app.url, 'r2', plan, { 'last-event-id': '99' });
    expect(unknown.response.status).toBe(412);
    await unknown.readAll();
    expect(JSON.parse(unknown.text()).type).toBe(PROBLEM_TYPES.unknownEventId);
    const other = await openStream(app.url, 'r2', plan, {
      'last-event-id': '1',
      [GENERATION_HEADER]: '7',
    });
    expect(other.response.status).toBe(412);
    const fresh = await openStream(app.url, 'r3', plan, {
      'last-event-id': '1',
      [GENERATION_HEADER]: '1',
    });
    expect(fresh.response.status).toBe(412);
    expect(app.runs()).toBe(1);
  });
});
