/**
 * rev12: `Last-Event-ID` carries the event id as UTF-8 (as EventSource sends it). Node, and
 * Fetch `Headers`, give a header value as a byte string (one Latin-1 character a byte): the
 * server decodes it back by UTF-8, so that an id past Latin-1 names its event exactly. Bytes
 * that are not UTF-8 are an id no event carries: 412 at once, nothing run. Real loopback
 * server, requests sent with node:http (the header bytes exactly as given).
 */
import { request as httpRequest } from 'node:http';
import { createMemoryLiveStreams } from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';
import { afterEach, describe, expect, it } from 'vitest';
import { withIdempotency } from '../src/index.js';
import { lastEventIdOf, UNREADABLE_EVENT_ID } from '../src/sse-resume.js';
import { serveWeb, type WebServer } from './live/web-server.js';

/** A header value holding `bytes`, one Latin-1 character a byte (as Node reads it). */
const byteString = (bytes: Uint8Array | number[]) => Buffer.from(bytes).toString('latin1');
const utf8Header = (id: string) => byteString(Buffer.from(id, 'utf8'));

describe('lastEventIdOf: a Last-Event-ID header value read as UTF-8', () => {
  it('decodes UTF-8 bytes to the id, ASCII unchanged', () => {
    for (const id of ['', '42', 'a b', 'é-1', '事件-1', '😀', '\u0080', 'ÿ', '\ufeffbom', '\ufffd'])
      expect(lastEventIdOf(utf8Header(id))).toBe(id);
  });

  it('bytes that are not UTF-8 are an id no event carries', () => {
    const bad = [
      [0xe9, 0x2d, 0x31], // Latin-1 é-1, as a client sending raw bytes
      [0xc3], // cut sequence
      [0xc0, 0xaf], // overlong
      [0xed, 0xa0, 0x80], // a surrogate
      [0xff],
      [0x80],
    ];
    for (const bytes of bad) expect(lastEventIdOf(byteString(bytes))).toBe(UNREADABLE_EVENT_ID);
  });

  it('a value with characters past U+00FF was decoded already: taken as it is', () => {
    expect(lastEventIdOf('事件-1')).toBe('事件-1');
  });
});

const IDS = ['事件-1', 'é-2', '😀-3', '\u0080-4', 'ÿ-5', 'plain-6', '\ufffd-7'];
const events = IDS.map((id, i) => `id: ${id}\ndata: ${i}\n\n`);
const whole = events.join('');
const encoder = new TextEncoder();

interface App {
  server: WebServer;
  runs: () => number;
}

async function start(intervalMs: number, anchorWaitMs = 2_000): Promise<App> {
  let runs = 0;
  const handle = withIdempotency(
    async () => {
      runs++;
      let n = 0;
      const body = new ReadableStream<Uint8Array>({
        async pull(controller) {
          if (n > 0) await new Promise((resolve) => setTimeout(resolve, intervalMs));
          controller.enqueue(encoder.encode(events[n++] as string));
          if (n === events.length) controller.close();
        },
      });
      return new Response(body, { headers: { 'content-type': 'text/event-stream' } });
    },
    {
      store: createMemoryStore(),
      scope: 'global',
      onWarning: () => {},
      liveStreams: { channel: createMemoryLiveStreams(), anchorWaitMs },
    },
  );
  const server = await serveWeb(handle);
  return { server, runs: () => runs };
}

const apps: App[] = [];
afterEach(async () => {
  for (const app of apps.splice(0)) await app.server.close();
});

/** POST with node:http: header values go out as given, one byte a character. */
function post(
  url: string,
  key: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: string; type: string | undefined }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(`${url}/s`, {
      method: 'POST',
      headers: { 'idempotency-key': key, 'content-type': 'application/json', ...headers },
    });
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          body: Buffer.concat(chunks).toString('utf8'),
          type: res.headers['content-type'],
        }),
      );
      res.on('error', reject);
    });
    req.on('error', reject);
    // A Buffer: Node writes a string first chunk together with the head, in the chunk's
    // encoding (UTF-8), which would re-encode header bytes past 0x7F.
    req.end(Buffer.from('{}'));
  });
}

describe('rev12 @idem/http: Last-Event-ID as UTF-8 on a loopback server', () => {
  it('a replay resumes after each id (past Latin-1, in U+0080..U+00FF, astral, U+FFFD) exactly, one execution', async () => {
    const app = await start(1);
    apps.push(app);
    const { url } = app.server;
    expect((await post(url, 'r1')).body).toBe(whole);
    for (let i = 0; i < IDS.length; i++) {
      const resumed = await post(url, 'r1', {
        'last-event-id': utf8Header(IDS[i] as string),
        'idempotent-generation': '1',
      });
      expect([resumed.status, resumed.body]).toEqual([200, events.slice(i + 1).join('')]);
    }
    expect(app.runs()).toBe(1);
  });

  it('a live stream resumes after a CJK id exactly, one execution', async () => {
    const app = await start(60);
    apps.push(app);
    const { url } = app.server;
    const first = post(url, 'l1');
    await new Promise((resolve) => setTimeout(resolve, 100));
    const resumed = await post(url, 'l1', {
      'last-event-id': utf8Header('事件-1'),
      'idempotent-generation': '1',
    });
    expect(resumed.status).toBe(200);
    expect(resumed.body).toBe(events.slice(1).join(''));
    expect((await first).body).toBe(whole);
    expect(app.runs()).toBe(1);
  });

  it('bytes that are not UTF-8 (a raw Latin-1 é, a cut sequence): 412 at once, live and on replay, nothing run', async () => {
    const app = await start(60, 2_000);
    apps.push(app);
    const { url } = app.server;
    const first = post(url, 'b1');
    await new Promise((resolve) => setTimeout(resolve, 100));
    const bad = [byteString([0xe9, 0x2d, 0x32]), byteString([0xe4, 0xba])];
    for (const id of bad) {
      const started = performance.now();
      const answer = await post(url, 'b1', { 'last-event-id': id, 'idempotent-generation': '1' });
      expect(answer.status).toBe(412);
      expect(answer.type).toContain('application/problem+json');
      // Not the 2 s wait for an event to be published: no event carries such an id.
      expect(performance.now() - started).toBeLessThan(1_000);
    }
    expect((await first).body).toBe(whole);
    for (const id of bad) {
      const answer = await post(url, 'b1', { 'last-event-id': id, 'idempotent-generation': '1' });
      expect(answer.status).toBe(412);
      expect(answer.type).toContain('application/problem+json');
    }
    // On a free key too: nothing is run for a resume.
    const free = await post(url, 'b2', { 'last-event-id': bad[0] as string });
    expect(free.status).toBe(412);
    expect(app.runs()).toBe(1);
  });
});
