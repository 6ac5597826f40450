// rv21 (adversarial review of 4d4461b..642f445): @idem/hono drops the connection (node-server) or
// resets the HTTP/2 stream for a first execution whose whole body's outcome could not be
// stored, or whose body broke at once. Attacks: a client must never see a 2xx for an unstored
// outcome, the key must not be left to a second execution, a pipelined request on the same
// connection must keep exactly-once, a bodiless answer, and a runtime with no Node response
// (Bun, Deno: the Web `Response` is all it gets). Real servers on loopback.
import { createServer, type Server } from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import { type ServerType, serve } from '@hono/node-server';
import { Hono } from 'hono';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';
import { flakyStore, post as rawPost, type Seen } from './unstored-support.js';

const post = (base: string, path: string, key: string) => rawPost(base, path, key, true);

const runs: Record<string, number> = {};
const count = (name: string) => {
  runs[name] = (runs[name] ?? 0) + 1;
  return runs[name];
};
const { store, down } = flakyStore();
const guard = idempotency({ store, scope: 'global', completionWaitMs: 200, onWarning: () => {} });
const app = new Hono();
app.use(guard);
app.post('/json', (c) => {
  count('json');
  return c.json({ ok: true }, 201);
});
app.post('/empty', (c) => {
  count('empty');
  return c.body(null, 204);
});
app.post('/slow', async (c) => {
  const n = count('slow');
  await new Promise((resolve) => setTimeout(resolve, 150));
  return c.json({ slow: n }, 201);
});

let server: ServerType;
let base = '';
/** A Bun- or Deno-like server: it hands `app.fetch` a Web Request (no Node env) and sends the Response. */
let webServer: Server;
let webBase = '';
beforeAll(async () => {
  base = await new Promise<string>((resolve) => {
    server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, (info) =>
      resolve(`http://127.0.0.1:${info.port}`),
    );
  });
  webServer = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const headers = new Headers();
    for (const [name, value] of Object.entries(req.headers))
      if (typeof value === 'string') headers.set(name, value);
    const response = await app.fetch(
      new Request(`http://127.0.0.1${req.url}`, {
        method: req.method,
        headers,
        ...(chunks.length > 0 ? { body: Buffer.concat(chunks) } : {}),
      }),
    );
    // As a runtime that sends the head as soon as it has the Response, the body as it is
    // read (a streamed body: no length to wait for).
    res.writeHead(response.status, Object.fromEntries(response.headers));
    res.flushHeaders();
    if (!response.body) return res.end();
    const reader = response.body.getReader();
    try {
      for (;;) {
        const read = await reader.read();
        if (read.done) break;
        res.write(read.value);
      }
      res.end();
    } catch {
      res.destroy();
    }
  });
  await new Promise<void>((resolve) => webServer.listen(0, '127.0.0.1', resolve));
  webBase = `http://127.0.0.1:${(webServer.address() as AddressInfo).port}`;
});
afterAll(async () => {
  down.complete = false;
  await guard.drain(5_000);
  await new Promise<void>((resolve) => server.close(() => resolve()));
  webServer.closeAllConnections();
  await new Promise<void>((resolve) => webServer.close(() => resolve()));
});

/** Retries `key` until it is no longer 409 (bounded: 40 tries, 100 ms apart). */
async function settled(url: string, path: string, key: string): Promise<Seen> {
  let seen = await post(url, path, key);
  for (let i = 0; i < 40 && seen.status === 409; i++) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    seen = await post(url, path, key);
  }
  return seen;
}

describe('rv21 @idem/hono: an unstored first execution', () => {
  it('node-server: a bodiless 204 whose outcome could not be stored is a 503, never the 204; then the replay', async () => {
    down.complete = true;
    let first: Seen;
    try {
      first = await post(base, '/empty', 'rv21-empty');
    } finally {
      down.complete = false;
    }
    expect(first.status === undefined || first.status >= 500).toBe(true);
    const retry = await settled(base, '/empty', 'rv21-empty');
    expect([retry.status, retry.replayed]).toEqual([204, 'true']);
    expect(runs.empty).toBe(1);
  });

  it('node-server: a pipelined keyed request behind a dropped one runs once; its retry is the replay', async () => {
    // Two requests on one connection, sent together: the first one's outcome is not stored
    // (its connection is dropped), the second is in flight on the same connection.
    const { port } = new URL(base);
    const body = '{"a":1}';
    const head = (key: string, path: string) =>
      `POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nIdempotency-Key: ${key}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
    down.complete = true;
    const raw = await new Promise<string>((resolve) => {
      const socket = connect(Number(port), '127.0.0.1');
      let text = '';
      socket.setEncoding('latin1');
      socket.on('data', (chunk: string) => {
        text += chunk;
      });
      socket.on('error', () => {});
      socket.on('close', () => resolve(text));
      socket.write(head('rv21-pipe-a', '/json') + head('rv21-pipe-b', '/slow'));
      setTimeout(() => socket.destroy(), 3_000).unref();
    });
    down.complete = false;
    // No 2xx reached the client for the unstored first one.
    expect(raw.startsWith('HTTP/1.1 2')).toBe(false);
    const a = await settled(base, '/json', 'rv21-pipe-a');
    const b = await settled(base, '/slow', 'rv21-pipe-b');
    expect(a.status).toBe(201);
    expect(b.status).toBe(201);
    // Whatever ran, ran once: a retry of either is the replay (or the first run of one that
    // never started), never a second run.
    const again = await post(base, '/slow', 'rv21-pipe-b');
    expect([again.status, again.replayed, again.body]).toEqual([201, 'true', b.body]);
    expect(runs.slow).toBe(1);
  });

  // Was FINDING (MEDIUM), fixed: with no Node response to drop (Bun, Deno, a worker:
  // `app.fetch` given a Web Request), a whole body whose outcome could not be stored answered
  // the handler's 2xx head, its body failing after it; a client that trusts the status took an
  // unstored outcome for a success. It now gets the store's 503 with Retry-After instead.
  it("a runtime with no Node response: an unstored whole body is the store's 503 (Retry-After), never a 2xx", async () => {
    down.complete = true;
    let first: Seen;
    try {
      first = await post(webBase, '/json', 'rv21-web');
    } finally {
      down.complete = false;
    }
    expect(first.status).toBe(503);
    expect(first.retryAfter).toBe('1');
  });

  it('a runtime with no Node response: the unstored answer is never a complete 2xx, and the retry replays', async () => {
    down.complete = true;
    let first: Seen;
    try {
      first = await post(webBase, '/json', 'rv21-web-2');
    } finally {
      down.complete = false;
    }
    expect(first.status).not.toBeUndefined();
    expect(first.complete === true && (first.status ?? 0) < 300).toBe(false);
    const retry = await settled(webBase, '/json', 'rv21-web-2');
    expect([retry.status, retry.replayed, retry.body]).toEqual([201, 'true', '{"ok":true}']);
  });
});
