/**
 * rev12c (adversarial review of 94a3db0/9ce9ee9): `Last-Event-ID` read back by UTF-8.
 * Real loopback servers (node:http, node:http2) in front of the Web handler; requests sent
 * with node:http / node:http2 so that the header bytes are exactly the ones given.
 * Findings are `it.fails` (they state the correct behaviour); attacks that held are `it`.
 */
import { randomBytes } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { createServer as createHttp2Server, connect as http2Connect } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { createMemoryLiveStreams, type IdempotencyStore, type LiveStreams } from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';
import { createRedisLiveStreams, createRedisStore } from '@idem/store-redis';
import { Redis } from 'ioredis';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { withIdempotency } from '../src/index.js';
import { lastEventIdOf, UNREADABLE_EVENT_ID } from '../src/sse-resume.js';
import { serveWeb, type WebServer } from './live/web-server.js';

const byteString = (bytes: Uint8Array | number[]) => Buffer.from(bytes).toString('latin1');
const utf8Header = (id: string) => byteString(Buffer.from(id, 'utf8'));
/** What a client before 94a3db0 sent for an id in U+0000..U+00FF: one Latin-1 byte a character. */
const latin1Header = (id: string) => byteString(Buffer.from(id, 'latin1'));
const encoder = new TextEncoder();

interface App {
  server: WebServer;
  runs: () => number;
  handle: (request: Request) => Promise<Response>;
}

/** A store and its live-stream channel (by default: memory, one process). */
type Live = { store: IdempotencyStore; channel: LiveStreams };

function makeHandle(events: Uint8Array[], intervalMs: number, maxReaders?: number, live?: Live) {
  let runs = 0;
  const handle = withIdempotency(
    async () => {
      runs++;
      let n = 0;
      const body = new ReadableStream<Uint8Array>({
        async pull(controller) {
          if (n > 0) await new Promise((resolve) => setTimeout(resolve, intervalMs));
          controller.enqueue(events[n++] as Uint8Array);
          if (n === events.length) controller.close();
        },
      });
      return new Response(body, { headers: { 'content-type': 'text/event-stream' } });
    },
    {
      store: live?.store ?? createMemoryStore(),
      scope: 'global',
      onWarning: () => {},
      liveStreams: {
        channel: live?.channel ?? createMemoryLiveStreams(),
        anchorWaitMs: 2_000,
        ...(maxReaders ? { maxReaders } : {}),
      },
    },
  );
  return { handle, runs: () => runs };
}

async function start(
  events: string[],
  intervalMs = 1,
  maxReaders?: number,
  live?: Live,
): Promise<App> {
  const made = makeHandle(
    events.map((e) => encoder.encode(e)),
    intervalMs,
    maxReaders,
    live,
  );
  const server = await serveWeb(made.handle);
  const app = { server, runs: made.runs, handle: made.handle };
  apps.push(app);
  return app;
}

const apps: App[] = [];
afterEach(async () => {
  for (const app of apps.splice(0)) await app.server.close();
});

function post(
  url: string,
  key: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(`${url}/s`, {
      method: 'POST',
      headers: { 'idempotency-key': key, 'content-type': 'application/json', ...headers },
    });
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }),
      );
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(Buffer.from('{}'));
  });
}

/** The title of a 412 problem answer. */
const titleOf = (answer: { status: number; body: string }) =>
  answer.status === 412 ? (JSON.parse(answer.body) as { title?: string }).title : undefined;
const MARKED = { 'idempotent-last-event-id-encoding': 'utf-8' };

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const tag = randomBytes(6).toString('hex');
const redisClients: Redis[] = [];
afterAll(async () => {
  const raw = redisClients[0];
  if (raw) {
    const keys = await raw.keys(`stream21-${tag}*`);
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

/** A Redis store and its live-stream channel: one stream entry per chunk the handler makes. */
async function redisLive(): Promise<Live> {
  const client = await connect();
  const blockingClient = await connect();
  const store = createRedisStore({ client, keyPrefix: `stream21-${tag}:` });
  const channel = createRedisLiveStreams({
    client,
    blockingClient,
    store,
    keyPrefix: `stream21-${tag}-live:`,
  });
  return { store, channel };
}

/** Starts a first call and resolves once its body holds `until` (the call still running). */
function firstCallThrough(url: string, key: string, until: string) {
  return new Promise<{ done: Promise<string> }>((resolve, reject) => {
    const req = httpRequest(`${url}/s`, {
      method: 'POST',
      headers: { 'idempotency-key': key, 'content-type': 'application/json' },
    });
    req.on('response', (res) => {
      let text = '';
      let seen = false;
      const done = new Promise<string>((resolveDone) => {
        res.on('end', () => resolveDone(text));
      });
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

const sse = (ids: string[]) => ids.map((id, i) => `id: ${id}\ndata: ${i}\n\n`);

describe('rev12c @idem/http: Last-Event-ID decoding attacks', () => {
  // FIXED (was FINDING LOW; an unmarked value whose Latin-1 reading names an event too is
  // refused with 412, and @idem/client marks its UTF-8 ids with
  // Idempotent-Last-Event-ID-Encoding: utf-8): version skew. A client before 94a3db0 sends the id 'Ã©' as its Latin-1 bytes C3 A9 — which are also the UTF-8 bytes of 'é'. The new server reads 'é' and, when the stream has an event 'é', answers 200 with the rest after THAT event: the old client splices it after its own 'Ã©' event (skipping by its own offsets): a corrupted stream, where the changeset and README promise "a mixed pair answers 412". Fix: when the value is not ASCII and its Latin-1 reading also names an event of the stream (and differs from the UTF-8 reading), answer 412 (ambiguous) — or have the new client mark the encoding (e.g. an `Idempotent-Last-Event-ID-Encoding: utf-8` header) and read the value by Latin-1 without it.
  it('an old client resuming after "Ã©" (Latin-1 bytes C3 A9) gets 412, not the rest after the event "é"', async () => {
    const events = sse(['é', 'mid', 'Ã©', 'end']);
    const app = await start(events);
    const { url } = app.server;
    expect((await post(url, 'skew')).body).toBe(events.join(''));
    const resumed = await post(url, 'skew', {
      'last-event-id': latin1Header('Ã©'),
      'idempotent-generation': '1',
    });
    // Correct: either the rest after 'Ã©' (events[3]) or 412; never the rest after 'é'.
    expect(resumed.status === 412 || resumed.body === (events[3] as string)).toBe(true);
  });

  // The new client marks its UTF-8 (Idempotent-Last-Event-ID-Encoding: utf-8): the same bytes
  // unmarked are the old client's "Ã©" above, and are refused on this stream.
  it('held: the new client’s UTF-8 of "Ã©" and of "é" name their own events (no collision)', async () => {
    const events = sse(['é', 'mid', 'Ã©', 'end']);
    const app = await start(events);
    const { url } = app.server;
    expect((await post(url, 'nc')).body).toBe(events.join(''));
    const a = await post(url, 'nc', {
      'last-event-id': utf8Header('Ã©'),
      'idempotent-generation': '1',
      'idempotent-last-event-id-encoding': 'utf-8',
    });
    const b = await post(url, 'nc', {
      'last-event-id': utf8Header('é'),
      'idempotent-generation': '1',
      'idempotent-last-event-id-encoding': 'utf-8',
    });
    expect([a.status, a.body]).toEqual([200, events[3]]);
    expect([b.status, b.body]).toEqual([200, events.slice(1).join('')]);
    expect(app.runs()).toBe(1);
  });

  it('held: lastEventIdOf round-trips every well-formed id and never yields the sentinel for one', () => {
    const ids = [
      '\u0001ctl',
      'tab\tin',
      '\u007f',
      '\ufeff',
      '\ufeff\ufeff',
      'Ã©',
      'Â',
      '\u{10ffff}',
      '\uffff',
      'x'.repeat(8_000),
      'é'.repeat(4_000),
    ];
    for (const id of ids) expect(lastEventIdOf(utf8Header(id))).toBe(id);
    // A lone surrogate cannot be sent: the client's TextEncoder sends U+FFFD for it.
    expect(lastEventIdOf(utf8Header('\ud800x'))).toBe('\ufffdx');
    // CESU-8 / encoded surrogates, overlong NUL, 5-byte forms: unreadable.
    for (const bytes of [
      [0xed, 0xa0, 0x80, 0xed, 0xb0, 0x80],
      [0xc0, 0x80],
      [0xf8, 0x88, 0x80, 0x80, 0x80],
      [0xf4, 0x90, 0x80, 0x80],
    ])
      expect(lastEventIdOf(byteString(bytes))).toBe(UNREADABLE_EVENT_ID);
  });

  it('held: a 15 KB non-ASCII Last-Event-ID (invalid at its last byte) is answered 412 quickly, nothing run', async () => {
    const events = sse(['a', 'b']);
    const app = await start(events);
    const { url } = app.server;
    await post(url, 'long');
    const value = utf8Header('é'.repeat(7_000)) + byteString([0xc3]);
    const started = performance.now();
    const answer = await post(url, 'long', {
      'last-event-id': value,
      'idempotent-generation': '1',
    });
    expect(answer.status).toBe(412);
    expect(performance.now() - started).toBeLessThan(500);
    expect(app.runs()).toBe(1);
  });

  it('held: an id the stream sent as raw invalid bytes, twice with different bytes (both read as U+FFFD-1), resumes after the FIRST on both sides', async () => {
    const events = [
      Buffer.from([...Buffer.from('id: '), 0xff, ...Buffer.from('-1\ndata: 0\n\n')]),
      Buffer.from('id: m\ndata: 1\n\n'),
      Buffer.from([...Buffer.from('id: '), 0xfe, ...Buffer.from('-1\ndata: 2\n\n')]),
      Buffer.from('id: e\ndata: 3\n\n'),
    ];
    const made = makeHandle(
      events.map((b) => new Uint8Array(b)),
      1,
    );
    const server = await serveWeb(made.handle);
    apps.push({ server, runs: made.runs, handle: made.handle });
    await post(server.url, 'fffd');
    const resumed = await post(server.url, 'fffd', {
      'last-event-id': utf8Header('\ufffd-1'),
      'idempotent-generation': '1',
    });
    expect(resumed.status).toBe(200);
    expect(resumed.body.endsWith('id: e\ndata: 3\n\n')).toBe(true);
    expect(resumed.body.startsWith('id: m\n')).toBe(true);
    expect(made.runs()).toBe(1);
  });

  it('held: unreadable resumes on a LIVE stream do not use up its attached-reader slots (maxReaders 2)', async () => {
    const events = sse(['1', '2', '3', '4', '5', '6']);
    const app = await start(events, 150, 2);
    const { url } = app.server;
    const first = post(url, 'slots');
    await new Promise((resolve) => setTimeout(resolve, 100));
    for (let i = 0; i < 6; i++) {
      const bad = await post(url, 'slots', {
        'last-event-id': byteString([0xe9]),
        'idempotent-generation': '1',
      });
      expect(bad.status).toBe(412);
    }
    // Slots free: a readable resume still attaches to the live stream.
    const good = await post(url, 'slots', {
      'last-event-id': '1',
      'idempotent-generation': '1',
    });
    expect([good.status, good.body]).toEqual([200, events.slice(1).join('')]);
    expect((await first).body).toBe(events.join(''));
    expect(app.runs()).toBe(1);
  });

  it('held: over HTTP/2 (node:http2 header values are byte strings too) a UTF-8 id resumes, raw Latin-1 gets 412', async () => {
    const events = sse(['事件-1', 'é-2', 'end']);
    const made = makeHandle(
      events.map((e) => encoder.encode(e)),
      1,
    );
    const server = createHttp2Server(async (req, res) => {
      const chunks: Buffer[] = [];
      for await (const chunk of req) chunks.push(chunk as Buffer);
      const headers = new Headers();
      for (const [name, value] of Object.entries(req.headers))
        if (typeof value === 'string' && !name.startsWith(':')) headers.set(name, value);
      const response = await made.handle(
        new Request(`http://127.0.0.1${req.url}`, {
          method: req.method,
          headers,
          body: Buffer.concat(chunks),
        }),
      );
      const head: Record<string, string> = {};
      response.headers.forEach((value, name) => {
        head[name] = value;
      });
      res.writeHead(response.status, head);
      res.end(Buffer.from(await response.arrayBuffer()));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const session = http2Connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    const h2post = (headers: Record<string, string>) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const stream = session.request({
          ':method': 'POST',
          ':path': '/s',
          'idempotency-key': 'h2',
          'content-type': 'application/json',
          ...headers,
        });
        let status = 0;
        const chunks: Buffer[] = [];
        stream.on('response', (h) => {
          status = Number(h[':status']);
        });
        stream.on('data', (c: Buffer) => chunks.push(c));
        stream.on('end', () => resolve({ status, body: Buffer.concat(chunks).toString('utf8') }));
        stream.on('error', reject);
        stream.end(Buffer.from('{}'));
      });
    try {
      expect((await h2post({})).body).toBe(events.join(''));
      const a = await h2post({
        'last-event-id': utf8Header('事件-1'),
        'idempotent-generation': '1',
      });
      expect([a.status, a.body]).toEqual([200, events.slice(1).join('')]);
      const b = await h2post({
        'last-event-id': utf8Header('é-2'),
        'idempotent-generation': '1',
      });
      expect([b.status, b.body]).toEqual([200, events[2]]);
      const c = await h2post({
        'last-event-id': latin1Header('é-2'),
        'idempotent-generation': '1',
      });
      expect(c.status).toBe(412);
      expect(made.runs()).toBe(1);
    } finally {
      session.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});

// stream21: attacks on the two readings of a Last-Event-ID value (UTF-8; Latin-1, as clients
// before UTF-8 ids sent it) and on the marker Idempotent-Last-Event-ID-Encoding: utf-8 with which
// @idem/client names its reading. A resume is never answered from the wrong event.
describe('stream21: Last-Event-ID read as UTF-8 and as Latin-1', () => {
  for (const channel of ['memory', 'redis'] as const)
    it(`LIVE (${channel} channel): an unmarked value whose Latin-1 reading ("Ã©") was published AFTER its UTF-8 reading ("é") gets 412, not the rest after "é"; marked, it resumes after "é"`, async () => {
      // On Redis each chunk is an entry of its own: the event "é" is found in the first, and
      // the entries published after it are read for "Ã©" too.
      const events = sse(['é', 'mid', 'Ã©', 'x', 'y', 'z']);
      const app = await start(
        events,
        250,
        undefined,
        channel === 'redis' ? await redisLive() : undefined,
      );
      const first = await firstCallThrough(
        app.server.url,
        `live-amb-${channel}`,
        'id: Ã©\ndata: 2\n\n',
      );
      // The old client's resume after "Ã©": its Latin-1 bytes C3 A9, no marker.
      const old = await post(app.server.url, `live-amb-${channel}`, {
        'last-event-id': latin1Header('Ã©'),
        'idempotent-generation': '1',
      });
      expect([old.status, titleOf(old)]).toEqual([412, 'Ambiguous Last-Event-ID']);
      // The new client after "é" (same bytes, marked): attached, the rest after "é".
      const marked = await post(app.server.url, `live-amb-${channel}`, {
        'last-event-id': utf8Header('é'),
        'idempotent-generation': '1',
        ...MARKED,
      });
      expect([marked.status, marked.body]).toEqual([200, events.slice(1).join('')]);
      expect(await first.done).toBe(events.join(''));
      expect(app.runs()).toBe(1);
    });

  it('LIVE: the Latin-1 reading published BEFORE the UTF-8 one (not published yet when the resume comes): 412, never the rest after the UTF-8 one once it comes', async () => {
    const events = sse(['Ã©', 'mid', 'é', 'x']);
    const app = await start(events, 300);
    const first = await firstCallThrough(app.server.url, 'live-before', 'id: Ã©\ndata: 0\n\n');
    const old = await post(app.server.url, 'live-before', {
      'last-event-id': latin1Header('Ã©'),
      'idempotent-generation': '1',
    });
    // Before: the resume waited for "é" (within anchorWaitMs) and answered the rest after it.
    expect([old.status, titleOf(old)]).toEqual([412, 'Ambiguous Last-Event-ID']);
    expect(await first.done).toBe(events.join(''));
    expect(app.runs()).toBe(1);
  });

  it('LIVE: an unmarked UTF-8 value whose Latin-1 reading names no event resumes after its event (EventSource-like clients), the end of the stream included', async () => {
    const events = sse(['é-1', 'mid', 'end']);
    const app = await start(events, 200);
    const first = await firstCallThrough(app.server.url, 'live-plain', 'id: mid\ndata: 1\n\n');
    const resumed = await post(app.server.url, 'live-plain', {
      'last-event-id': utf8Header('é-1'),
      'idempotent-generation': '1',
    });
    expect([resumed.status, resumed.body]).toEqual([200, events.slice(1).join('')]);
    expect(await first.done).toBe(events.join(''));
    expect(app.runs()).toBe(1);
  });

  it('LIVE: the check reads ahead to the end of a stream already ended in the channel, and the body still ends normally', async () => {
    // A short stream: by the resume every event (and the end) is published; the read-ahead
    // for the Latin-1 reading meets the end, which the body must still get.
    const events = sse(['é-1', 'a', 'b']);
    const app = await start(events, 1);
    await post(app.server.url, 'ended');
    const resumed = await post(app.server.url, 'ended', {
      'last-event-id': utf8Header('é-1'),
      'idempotent-generation': '1',
    });
    expect([resumed.status, resumed.body]).toEqual([200, events.slice(1).join('')]);
    expect(app.runs()).toBe(1);
  });

  it('REPLAY: the marker makes every reading exact; unmarked, only the pairs that collide are refused', async () => {
    const ids = ['é', 'Ã©', '\u0085-nel', 'Â\u0085-nel', 'ÿ', 'Ã¿', 'plain'];
    const events = sse(ids);
    const app = await start(events);
    expect((await post(app.server.url, 'rp')).body).toBe(events.join(''));
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i] as string;
      const marked = await post(app.server.url, 'rp', {
        'last-event-id': utf8Header(id),
        'idempotent-generation': '1',
        ...MARKED,
      });
      expect([id, marked.status, marked.body]).toEqual([id, 200, events.slice(i + 1).join('')]);
    }
    // Unmarked UTF-8 of 'é', '\u0085-nel', 'ÿ': their Latin-1 readings are ids of this stream.
    for (const id of ['é', '\u0085-nel', 'ÿ']) {
      const unmarked = await post(app.server.url, 'rp', {
        'last-event-id': utf8Header(id),
        'idempotent-generation': '1',
      });
      expect([id, unmarked.status, titleOf(unmarked)]).toEqual([
        id,
        412,
        'Ambiguous Last-Event-ID',
      ]);
    }
    // Unmarked UTF-8 of the others: no collision, exact.
    for (const id of ['Ã©', 'plain']) {
      const i = ids.indexOf(id);
      const unmarked = await post(app.server.url, 'rp', {
        'last-event-id': utf8Header(id),
        'idempotent-generation': '1',
      });
      expect([id, unmarked.status, unmarked.body]).toEqual([id, 200, events.slice(i + 1).join('')]);
    }
    expect(app.runs()).toBe(1);
  });

  it('REPLAY: the marker does not let bytes that are not UTF-8 through; its value is read case-insensitively and trimmed; any other value counts as none', async () => {
    const events = sse(['é', 'Ã©', 'end']);
    const app = await start(events);
    await post(app.server.url, 'mk');
    const notUtf8 = await post(app.server.url, 'mk', {
      'last-event-id': latin1Header('é'),
      'idempotent-generation': '1',
      ...MARKED,
    });
    expect([notUtf8.status, titleOf(notUtf8)]).toEqual([412, 'Unknown Last-Event-ID']);
    const spaced = await post(app.server.url, 'mk', {
      'last-event-id': utf8Header('é'),
      'idempotent-generation': '1',
      'idempotent-last-event-id-encoding': ' UTF-8\t',
    });
    expect([spaced.status, spaced.body]).toEqual([200, events.slice(1).join('')]);
    const other = await post(app.server.url, 'mk', {
      'last-event-id': utf8Header('é'),
      'idempotent-generation': '1',
      'idempotent-last-event-id-encoding': 'latin1',
    });
    expect([other.status, titleOf(other)]).toEqual([412, 'Ambiguous Last-Event-ID']);
    expect(app.runs()).toBe(1);
  });

  it('REPLAY: a stream recorded with repeated ids and an empty id (a reset) resumes after the first event of an id, both readings checked over the whole record', async () => {
    // Ids repeat; 'Ã©' comes only at the very end, past an `id:` reset.
    const events = sse(['é', 'é', '', 'mid', 'Ã©']);
    const app = await start(events);
    await post(app.server.url, 'dup');
    const marked = await post(app.server.url, 'dup', {
      'last-event-id': utf8Header('é'),
      'idempotent-generation': '1',
      ...MARKED,
    });
    expect([marked.status, marked.body]).toEqual([200, events.slice(1).join('')]);
    const unmarked = await post(app.server.url, 'dup', {
      'last-event-id': utf8Header('é'),
      'idempotent-generation': '1',
    });
    expect(unmarked.status).toBe(412);
    // An empty Last-Event-ID asks for the whole stream, marked or not.
    const whole = await post(app.server.url, 'dup', {
      'last-event-id': '',
      'idempotent-generation': '1',
      ...MARKED,
    });
    expect([whole.status, whole.body]).toEqual([200, events.join('')]);
    expect(app.runs()).toBe(1);
  });
});
