// RFC 9113 reset codes on @hono/node-server over h2c (node:http2's compatibility layer, a
// real node:http2 client on loopback). A response that cannot be completed (the first
// execution's body breaks mid-way; a duplicate attached to it live) ends with RST_STREAM
// INTERNAL_ERROR (0x2), never a clean end of stream (END_STREAM, or RST_STREAM NO_ERROR,
// which node:http2 clients read as a complete body): a cut body must never pass for a whole
// one. A client that cancels its stream leaves the session's other streams working. A
// complete answer given while the client still sends its body (413 past maxBodyBytes) ends
// whole, then RST_STREAM NO_ERROR asks the client to stop sending (RFC 9113 8.1) (adapt-left H31).
import { constants, createServer as createH2Server, connect as h2Connect } from 'node:http2';
import { setTimeout as sleep } from 'node:timers/promises';
import { type ServerType, serve } from '@hono/node-server';
import { createMemoryStore } from '@idem/store-memory';
import { Hono } from 'hono';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

let server: ServerType;
let port = 0;
let runs = 0;

beforeAll(async () => {
  const app = new Hono();
  app.use(
    idempotency({
      store: createMemoryStore(),
      scope: 'global',
      liveStreams: {},
      maxBodyBytes: 1024,
    }),
  );
  app.post('/breaks', (c) => {
    runs++;
    let step = 0;
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        await sleep(step === 0 ? 0 : 150);
        if (step++ < 2) controller.enqueue(new TextEncoder().encode(`{"n":${step}}\n`));
        else controller.error(new Error('upstream broke'));
      },
    });
    return c.body(body, 200, { 'content-type': 'application/x-ndjson' });
  });
  app.post('/ok', (c) => c.json({ ok: true }, 201));
  port = await new Promise<number>((resolve) => {
    server = serve(
      { fetch: app.fetch, port: 0, hostname: '127.0.0.1', createServer: createH2Server },
      (info) => resolve(info.port),
    );
  });
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

interface Seen {
  status?: number;
  body: string;
  /** The stream ended with END_STREAM (or RST NO_ERROR): a complete body as the client sees it. */
  ended: boolean;
  rst?: number;
}

function exchange(
  session: ReturnType<typeof h2Connect>,
  path: string,
  key: string,
  cancelAtFirstData = false,
  /** Written as the request body, which the client then never ends (no END_STREAM). */
  openBody?: Buffer,
): Promise<Seen> {
  return new Promise((resolve) => {
    const seen: Seen = { body: '', ended: false };
    const stream = session.request({
      ':method': 'POST',
      ':path': path,
      'idempotency-key': key,
      'content-type': 'application/octet-stream',
    });
    stream.on('response', (head) => {
      seen.status = Number(head[':status']);
    });
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => {
      seen.body += chunk;
      if (cancelAtFirstData) stream.close(constants.NGHTTP2_CANCEL);
    });
    stream.on('end', () => {
      seen.ended = true;
    });
    stream.on('error', () => {});
    stream.on('close', () => {
      seen.rst = stream.rstCode;
      resolve(seen);
    });
    if (openBody) stream.write(openBody);
    else stream.end();
  });
}

describe('@idem/hono over h2c: reset codes (RFC 9113)', () => {
  it('a body that breaks mid-way: first caller and attached duplicate get RST_STREAM INTERNAL_ERROR, no clean end', async () => {
    const session = h2Connect(`http://127.0.0.1:${port}`);
    session.on('error', () => {});
    try {
      const key = `h31-${Math.random()}`;
      const first = exchange(session, '/breaks', key);
      // The duplicate arrives while the first streams: it attaches (live) to the same body.
      await sleep(60);
      const attached = exchange(session, '/breaks', key);
      const [a, b] = await Promise.all([first, attached]);
      for (const seen of [a, b]) {
        expect(seen.status).toBe(200);
        expect(seen.body.startsWith('{"n":1}\n')).toBe(true);
        expect(seen.ended).toBe(false);
        expect(seen.rst).toBe(constants.NGHTTP2_INTERNAL_ERROR);
      }
      expect(runs).toBe(1);
      // The session still serves other streams.
      const next = await exchange(session, '/ok', `h31-ok-${Math.random()}`);
      expect([next.status, next.body, next.ended]).toEqual([201, '{"ok":true}', true]);
    } finally {
      session.destroy();
    }
  });

  it('a client that cancels its stream (CANCEL): the session goes on, the retry runs once more (not a success)', async () => {
    const session = h2Connect(`http://127.0.0.1:${port}`);
    session.on('error', () => {});
    try {
      const key = `h31-cancel-${Math.random()}`;
      const before = runs;
      const left = await exchange(session, '/breaks', key, true);
      expect(left.rst).toBe(constants.NGHTTP2_CANCEL);
      // The body broke after the client left: not recorded, the key released; a retry runs.
      await sleep(400);
      const again = await exchange(session, '/breaks', key);
      expect(again.status).toBe(200);
      expect(again.rst).toBe(constants.NGHTTP2_INTERNAL_ERROR);
      expect(runs).toBe(before + 2);
    } finally {
      session.destroy();
    }
  });

  it('413 while the client still sends its body: a whole answer, then RST_STREAM NO_ERROR (RFC 9113 8.1)', async () => {
    const session = h2Connect(`http://127.0.0.1:${port}`);
    session.on('error', () => {});
    try {
      // Past the limit, and the body is never ended by the client.
      const seen = await exchange(
        session,
        '/ok',
        `h31-413-${Math.random()}`,
        false,
        Buffer.alloc(4096),
      );
      expect(seen.status).toBe(413);
      expect(JSON.parse(seen.body).type).toBe('https://idem.dev/problems/body-too-large');
      expect(seen.ended).toBe(true);
      expect(seen.rst).toBe(constants.NGHTTP2_NO_ERROR);
    } finally {
      session.destroy();
    }
  });
});
