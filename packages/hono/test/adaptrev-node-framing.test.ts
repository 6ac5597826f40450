// @idem/hono on @hono/node-server: upstream code that puts a framing header on the Node
// response itself (`c.env.outgoing.setHeader`, as a bridged Node middleware does) before the
// middleware answers. node-server wrote its head over it: a streamed replay went out with
// that Content-Length beside a body of another length (the connection's next response read
// from inside it), a whole one with both its own Content-Length and that Transfer-Encoding, a
// 204 with a Content-Length. Read off a raw socket with a request pipelined behind the replay:
// the replay is framed by its own body and the next response is read whole (adaptrev, as
// @idem/http's Node senders do). Over HTTP/2 no Transfer-Encoding goes out at all.
import { createServer as createH2Server, connect as h2Connect } from 'node:http2';
import { type ServerType, serve } from '@hono/node-server';
import { rawExchange, rawFraming } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { type Context, Hono } from 'hono';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency, stream } from '../src/index.js';

const CHUNKS = ['alpha-', 'beta-', 'gamma-', 'delta'];
const servers: ServerType[] = [];
let h1Port = 0;
let h2Port = 0;
let runs = 0;

function makeApp(): Hono {
  const app = new Hono();
  app.use(async (c, next) => {
    const outgoing = (c.env as { outgoing: { setHeader(name: string, value: string): void } })
      .outgoing;
    const framing = c.req.header('x-framing');
    if (framing === 'cl') outgoing.setHeader('Content-Length', '3');
    if (framing === 'te') outgoing.setHeader('Transfer-Encoding', 'chunked');
    await next();
  });
  app.use(idempotency({ store: createMemoryStore(), scope: 'global' }));
  app.post('/whole', (c) => {
    runs++;
    return c.json({ whole: CHUNKS.join('') }, 201);
  });
  app.post('/stream', (c: Context) => {
    runs++;
    return stream(c, async (s) => {
      for (const chunk of CHUNKS) {
        await s.write(chunk);
        await s.sleep(5);
      }
    });
  });
  app.post('/empty', (c) => {
    runs++;
    return c.body(null, 204);
  });
  app.get('/ping', (c) => c.text('pong'));
  return app;
}

function listen(h2: boolean): Promise<number> {
  return new Promise((resolve) => {
    servers.push(
      serve(
        {
          fetch: makeApp().fetch,
          port: 0,
          hostname: '127.0.0.1',
          ...(h2 ? { createServer: createH2Server } : {}),
        },
        (info) => resolve(info.port),
      ),
    );
  });
}

beforeAll(async () => {
  h1Port = await listen(false);
  h2Port = await listen(true);
});
afterAll(async () => {
  await Promise.all(
    servers.map(
      (server) =>
        new Promise((resolve) => {
          (server as { closeAllConnections?: () => void }).closeAllConnections?.();
          server.close(resolve);
        }),
    ),
  );
});

/** A keyed POST with a GET pipelined behind it on one connection: all the bytes that came. */
const pipelined = (path: string, key: string, framing: string) =>
  rawExchange(
    `http://127.0.0.1:${h1Port}`,
    `POST ${path} HTTP/1.1\r\nHost: x\r\nIdempotency-Key: ${key}\r\nX-Framing: ${framing}\r\n` +
      'Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}' +
      'GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
    2_000,
  );

/** The first response of `raw` as a strict client frames it, and the bytes after it. */
function split(raw: Buffer): { head: string; body: string; framing: string; next: string } {
  const text = raw.toString('latin1');
  const at = text.indexOf('\r\n\r\n');
  const head = text.slice(0, at).toLowerCase();
  const rest = text.slice(at + 4);
  const length = /\r\ncontent-length: *(\d+)/.exec(head);
  const chunked = /\r\ntransfer-encoding: *chunked/.test(head);
  if (head.startsWith('http/1.1 204'))
    return { head, body: '', framing: length || chunked ? 'framed-204' : 'none', next: rest };
  if (length && chunked) return { head, body: '', framing: 'both', next: '' };
  if (chunked) {
    const end = rest.indexOf('\r\n0\r\n\r\n') + 7;
    const framed = rawFraming(
      Buffer.from(`HTTP/1.1 200 OK\r\n${head}\r\n\r\n${rest.slice(0, end)}`, 'latin1'),
    );
    return { head, body: framed.body, framing: 'chunked', next: rest.slice(end) };
  }
  if (length) {
    const n = Number(length[1]);
    return { head, body: rest.slice(0, n), framing: 'content-length', next: rest.slice(n) };
  }
  return { head, body: rest, framing: 'close', next: '' };
}

describe('@idem/hono on @hono/node-server: a replay is framed by its own body (HTTP/1.1)', () => {
  for (const [path, expected, framing] of [
    ['/stream', CHUNKS.join(''), 'chunked'],
    ['/whole', JSON.stringify({ whole: CHUNKS.join('') }), 'content-length'],
    ['/empty', '', 'none'],
  ] as const) {
    it.each(['cl', 'te'])(`${path}: Node response framing %s`, async (set) => {
      const key = `adaptrev-hono-framing-${path}-${set}-${Math.random()}`;
      const before = runs;
      expect(split(await pipelined(path, key, 'none'))).toMatchObject({ body: expected, framing });
      const replay = split(await pipelined(path, key, set));
      expect(replay.head).toContain('\r\nidempotent-replayed: true');
      expect(replay).toMatchObject({ body: expected, framing });
      // The pipelined request's answer follows, whole: the connection was not desynchronised.
      expect(replay.next).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
      expect(replay.next.endsWith('\r\n\r\npong')).toBe(true);
      expect(runs).toBe(before + 1);
    });
  }
});

describe('@idem/hono on @hono/node-server: a replay over HTTP/2 carries no Transfer-Encoding', () => {
  function post(path: string, key: string, framing: string) {
    return new Promise<{ status: number; body: string; replayed: boolean; hung: boolean }>(
      (resolve) => {
        const session = h2Connect(`http://127.0.0.1:${h2Port}`);
        session.on('error', () => {});
        const h2 = session.request({
          ':method': 'POST',
          ':path': path,
          'idempotency-key': key,
          'content-type': 'application/json',
          'x-framing': framing,
        });
        const answer = { status: 0, body: '', replayed: false, hung: false };
        const timer = setTimeout(() => {
          answer.hung = true;
          h2.close();
        }, 2_000);
        h2.on('response', (head) => {
          answer.status = Number(head[':status']);
          answer.replayed = head['idempotent-replayed'] === 'true';
        });
        h2.setEncoding('utf8');
        h2.on('data', (part: string) => {
          answer.body += part;
        });
        h2.on('error', () => {});
        h2.on('close', () => {
          clearTimeout(timer);
          session.close();
          resolve(answer);
        });
        h2.end('{}');
      },
    );
  }

  it.each(['/stream', '/whole'])(
    '%s with a Transfer-Encoding on the Node response',
    async (path) => {
      const key = `adaptrev-hono-h2-${path}-${Math.random()}`;
      const first = await post(path, key, 'none');
      expect(first.status).toBeGreaterThanOrEqual(200);
      expect(await post(path, key, 'te')).toEqual({ ...first, replayed: true });
    },
  );
});
