// A bounded wait (`wait`) for an in-flight execution of the same key, on @hono/node-server
// over real loopback servers (HTTP/1.1 and h2c): when the waiting client leaves, the wait
// stops at once (the store sees no more polls for it) instead of polling on to its bound,
// also when the client left before the middleware ran (adapt-left H26).
import { request as httpRequest } from 'node:http';
import { constants, createServer as createH2Server, connect as h2Connect } from 'node:http2';
import { setTimeout as sleep } from 'node:timers/promises';
import { type ServerType, serve } from '@hono/node-server';
import { spyStore } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { type Context, Hono } from 'hono';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

const spied = spyStore(createMemoryStore());
const servers: ServerType[] = [];
let h1Port = 0;
let h2Port = 0;
const releases: Array<() => void> = [];
let runs = 0;

function makeApp(): Hono {
  const app = new Hono();
  // Upstream work before the idempotency layer (an auth lookup): the client may leave meanwhile.
  app.use('/late/*', async (_c, next) => {
    await sleep(250);
    await next();
  });
  app.use(
    idempotency({ store: spied.store, scope: 'global', wait: { timeoutMs: 4_000, pollMs: 20 } }),
  );
  const slow = async (c: Context) => {
    runs++;
    await new Promise<void>((resolve) => releases.push(resolve));
    return c.json({ done: true }, 201);
  };
  app.post('/slow', slow);
  app.post('/late/slow', slow);
  return app;
}

async function listen(h2: boolean): Promise<number> {
  const app = makeApp();
  return new Promise((resolve) => {
    const server = serve(
      {
        fetch: app.fetch,
        port: 0,
        hostname: '127.0.0.1',
        ...(h2 ? { createServer: createH2Server } : {}),
      },
      (info) => resolve(info.port),
    );
    servers.push(server);
  });
}

beforeAll(async () => {
  h1Port = await listen(false);
  h2Port = await listen(true);
});

afterAll(async () => {
  for (const release of releases) release();
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

const headers = (key: string) => ({ 'idempotency-key': key, 'content-type': 'application/json' });

/** A keyed POST over HTTP/1.1; `cutAfterMs` destroys the client's connection then. */
function post1(key: string, path: string, cutAfterMs?: number): Promise<number | 'cut'> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        host: '127.0.0.1',
        port: h1Port,
        method: 'POST',
        path,
        headers: { ...headers(key), connection: 'close' },
      },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.on('error', (error) => (cutAfterMs !== undefined ? resolve('cut') : reject(error)));
    // No body: a client that leaves mid-body fails the body read before any wait.
    req.end();
    if (cutAfterMs !== undefined) setTimeout(() => req.destroy(), cutAfterMs);
  });
}

/** A keyed POST over h2c; `cutAfterMs` resets the stream (CANCEL) then. */
function post2(key: string, path: string, cutAfterMs?: number): Promise<number | 'cut'> {
  return new Promise((resolve, reject) => {
    const session = h2Connect(`http://127.0.0.1:${h2Port}`);
    session.on('error', () => {});
    const stream = session.request({ ':method': 'POST', ':path': path, ...headers(key) });
    let status = 0;
    stream.on('response', (head) => {
      status = Number(head[':status']);
    });
    stream.resume();
    stream.on('close', () => {
      session.close();
      if (cutAfterMs !== undefined) resolve('cut');
      else if (status) resolve(status);
      else reject(new Error('no response'));
    });
    stream.end();
    if (cutAfterMs !== undefined)
      setTimeout(() => stream.close(constants.NGHTTP2_CANCEL), cutAfterMs);
  });
}

const polls = () => spied.calls.acquire + spied.calls.get;

async function firstRunning(before: number): Promise<void> {
  for (let i = 0; i < 100 && runs === before; i++) await sleep(10);
  expect(runs).toBe(before + 1);
}

describe('@idem/hono on @hono/node-server: a bounded wait whose client leaves', () => {
  for (const [protocol, post] of [
    ['HTTP/1.1', post1],
    ['h2c', post2],
  ] as const) {
    it(`${protocol}: stops polling the store as soon as the waiting client disconnects`, async () => {
      const key = `h26-${protocol}-${Math.random()}`;
      const ran = runs;
      const first = post(key, '/slow');
      await firstRunning(ran);
      const before = polls();
      expect(await post(key, '/slow', 150)).toBe('cut');
      // It was waiting (polling) until the cut.
      expect(polls() - before).toBeGreaterThanOrEqual(2);
      // A poll in flight at the cut lands; then none may follow.
      await sleep(60);
      const atCut = polls();
      await sleep(400);
      expect(polls()).toBe(atCut);
      releases.shift()?.();
      expect(await first).toBe(201);
      expect(runs).toBe(ran + 1);
    });

    it(`${protocol}: no wait for a client that left while upstream middleware still worked`, async () => {
      const key = `h26-late-${protocol}-${Math.random()}`;
      const ran = runs;
      const first = post(key, '/late/slow');
      await firstRunning(ran);
      // Cut while the upstream middleware works (250 ms): on @hono/node-server the Web
      // request's signal is made after the client left then, and is never aborted.
      expect(await post(key, '/late/slow', 100)).toBe('cut');
      await sleep(250);
      const atStart = polls();
      await sleep(400);
      expect(polls()).toBe(atStart);
      releases.shift()?.();
      expect(await first).toBe(201);
      expect(runs).toBe(ran + 1);
    });
  }
});
