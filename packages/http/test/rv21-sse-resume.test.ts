// rv21 (adversarial review of 4d4461b..642f445): a marked Last-Event-ID is read as UTF-8 only; an
// unmarked one past ASCII whose Latin-1 reading also names an event of the stream gets 412
// "Ambiguous Last-Event-ID", live (memory and Redis channels) and on replay. Attacks: the
// Latin-1 event more than one channel batch (64 entries) after the UTF-8 one; a marker sent
// twice or with parameters; a resume answered must be exactly the recorded rest, once; the
// handler never runs again. Real node:http servers on loopback, raw header bytes.
import { randomBytes } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { createMemoryLiveStreams, type IdempotencyStore, type LiveStreams } from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';
import { createRedisLiveStreams, createRedisStore } from '@idem/store-redis';
import { Redis } from 'ioredis';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { withIdempotency } from '../src/index.js';
import { serveWeb, type WebServer } from './live/web-server.js';

const utf8Header = (id: string) => Buffer.from(id, 'utf8').toString('latin1');
const encoder = new TextEncoder();
const event = (id: string, data: string) => `id: ${id}\ndata: ${data}\n\n`;

type Live = { store: IdempotencyStore; channel: LiveStreams };

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const tag = randomBytes(6).toString('hex');
const redisClients: Redis[] = [];
const servers: WebServer[] = [];
afterEach(async () => {
  for (const server of servers.splice(0)) await server.close();
});
afterAll(async () => {
  const raw = redisClients[0];
  if (raw) {
    const keys = await raw.keys(`rv21-${tag}*`);
    if (keys.length > 0) await raw.del(...keys);
  }
  for (const client of redisClients) client.disconnect();
});

async function connect(): Promise<Redis> {
  const redis = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 });
  redisClients.push(redis);
  await redis.connect().catch((error: unknown) => {
    throw new Error(`Redis at ${REDIS_URL} (set REDIS_URL): ${String(error)}`);
  });
  return redis;
}

async function live(channel: 'memory' | 'redis'): Promise<Live> {
  if (channel === 'memory')
    return { store: createMemoryStore(), channel: createMemoryLiveStreams() };
  const client = await connect();
  const blockingClient = await connect();
  const store = createRedisStore({ client, keyPrefix: `rv21-${tag}:` });
  return {
    store,
    channel: createRedisLiveStreams({
      client,
      blockingClient,
      store,
      keyPrefix: `rv21-${tag}-live:`,
    }),
  };
}

/**
 * An SSE handler behind @idem/http: `events` one chunk each, no wait between them, except
 * `pauseMs` before the last (the stream is live then, everything before it published).
 */
async function start(events: string[], pauseMs: number, { store, channel }: Live) {
  let runs = 0;
  const handle = withIdempotency(
    async () => {
      runs++;
      let n = 0;
      const body = new ReadableStream<Uint8Array>({
        async pull(controller) {
          if (n === events.length - 1) await new Promise((r) => setTimeout(r, pauseMs));
          controller.enqueue(encoder.encode(events[n++] as string));
          if (n === events.length) controller.close();
        },
      });
      return new Response(body, { headers: { 'content-type': 'text/event-stream' } });
    },
    { store, scope: 'global', onWarning: () => {}, liveStreams: { channel, anchorWaitMs: 2_000 } },
  );
  const server = await serveWeb(handle);
  servers.push(server);
  return { url: server.url, runs: () => runs };
}

function post(
  url: string,
  key: string,
  headers: Record<string, string | string[]> = {},
): Promise<{ status: number; body: string; title?: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(`${url}/s`, {
      method: 'POST',
      headers: { 'idempotency-key': key, 'content-type': 'application/json', ...headers },
    });
    req.setTimeout(10_000, () => req.destroy(new Error('no answer within 10 s')));
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        const status = res.statusCode ?? 0;
        resolve({
          status,
          body,
          ...(status === 412 ? { title: (JSON.parse(body) as { title: string }).title } : {}),
        });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(Buffer.from('{}'));
  });
}

/** Starts a first call; resolves once its body holds `until`, with the whole body to come. */
function firstCallThrough(url: string, key: string, until: string) {
  return new Promise<{ done: Promise<string> }>((resolve, reject) => {
    const req = httpRequest(`${url}/s`, {
      method: 'POST',
      headers: { 'idempotency-key': key, 'content-type': 'application/json' },
    });
    req.on('response', (res) => {
      let text = '';
      let seen = false;
      const done = new Promise<string>((resolveDone) => res.on('end', () => resolveDone(text)));
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        text += chunk;
        if (!seen && text.includes(until)) {
          seen = true;
          resolve({ done });
        }
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(Buffer.from('{}'));
  });
}

// 'é' first, 100 chunks, then 'Ã©' (whose Latin-1 bytes C3 A9 are the UTF-8 of 'é'), then a
// pause before the last event: the check must read past several channel batches (64 entries).
const fillers = Array.from({ length: 100 }, (_, n) => event(`f${n}`, `filler ${n}`));
const events = [event('é', 'utf8 one'), ...fillers, event('Ã©', 'latin1 one'), event('z', 'last')];
const restAfter = (index: number) => events.slice(index + 1).join('');

describe('rv21 @idem/http: Last-Event-ID readings on a live stream, past one channel batch', () => {
  for (const channel of ['memory', 'redis'] as const) {
    it(`${channel}: unmarked -> 412 Ambiguous; marked -> exactly the rest after "é"; once; a marker sent twice counts as none`, async () => {
      const app = await start(events, 600, await live(channel));
      const key = `rv21-live-${channel}`;
      const first = await firstCallThrough(app.url, key, 'latin1 one');
      const unmarked = await post(app.url, key, {
        'last-event-id': utf8Header('é'),
        'idempotent-generation': '1',
      });
      expect([unmarked.status, unmarked.title]).toEqual([412, 'Ambiguous Last-Event-ID']);
      // Repeated (joined as "utf-8, utf-8") or with a parameter: not the marker, so refused too.
      for (const marker of [['utf-8', 'utf-8'], 'utf-8; q=1'])
        expect(
          (
            await post(app.url, key, {
              'last-event-id': utf8Header('é'),
              'idempotent-generation': '1',
              'idempotent-last-event-id-encoding': marker,
            })
          ).status,
        ).toBe(412);
      const marked = await post(app.url, key, {
        'last-event-id': utf8Header('é'),
        'idempotent-generation': '1',
        'idempotent-last-event-id-encoding': 'UTF-8 ',
      });
      expect([marked.status, marked.body]).toEqual([200, restAfter(0)]);
      // The old client's own event, marked as what it is not: its bytes are not UTF-8 of it.
      const afterLatin1 = await post(app.url, key, {
        'last-event-id': utf8Header('Ã©'),
        'idempotent-generation': '1',
        'idempotent-last-event-id-encoding': 'utf-8',
      });
      expect([afterLatin1.status, afterLatin1.body]).toEqual([200, restAfter(101)]);
      expect(await first.done).toBe(events.join(''));
      // On replay: the same answers.
      const replayUnmarked = await post(app.url, key, { 'last-event-id': utf8Header('é') });
      expect([replayUnmarked.status, replayUnmarked.title]).toEqual([
        412,
        'Ambiguous Last-Event-ID',
      ]);
      const replayMarked = await post(app.url, key, {
        'last-event-id': utf8Header('é'),
        'idempotent-last-event-id-encoding': 'utf-8',
      });
      expect([replayMarked.status, replayMarked.body]).toEqual([200, restAfter(0)]);
      expect(app.runs()).toBe(1);
    });
  }

  it('an unmarked resume whose Latin-1 reading names an event not published yet is answered from its UTF-8 event, exactly', async () => {
    // The old client cannot have seen an event that was not published: the UTF-8 reading
    // stands, and the rest is the recorded rest (the Latin-1 event comes in it, once).
    const app = await start(
      [event('é', 'utf8 one'), ...fillers.slice(0, 3), event('Ã©', 'later')],
      600,
      await live('memory'),
    );
    const key = 'rv21-not-yet';
    const first = await firstCallThrough(app.url, key, 'filler 2');
    const resumed = await post(app.url, key, {
      'last-event-id': utf8Header('é'),
      'idempotent-generation': '1',
    });
    const whole = await first.done;
    expect(resumed.status).toBe(200);
    expect(whole.startsWith(event('é', 'utf8 one'))).toBe(true);
    expect(resumed.body).toBe(whole.slice(event('é', 'utf8 one').length));
    expect(app.runs()).toBe(1);
  });
});
