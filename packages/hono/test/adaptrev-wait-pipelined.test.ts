// A bounded wait (`wait`) on @hono/node-server, HTTP/1.1: a duplicate pipelined behind the
// first execution on the same keep-alive connection. Its response is queued behind the
// first's (no socket yet), and Node never closes a queued response when the connection
// closes: only its request is destroyed. The wait stopped only at its bound, polling the
// store for a client long gone; it stops when the connection closes now (adaptrev). Nothing
// runs twice and the key is not released by it. Listeners: one request's worth, never one
// more on the shared connection per request.
import { Agent, request as httpRequest } from 'node:http';
import { connect, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { type ServerType, serve } from '@hono/node-server';
import { spyStore } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { Hono } from 'hono';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

const spied = spyStore(createMemoryStore());
let server: ServerType;
let port = 0;
let runs = 0;
const releases: Array<() => void> = [];
const sockets: Socket[] = [];

beforeAll(async () => {
  const app = new Hono();
  app.use(
    idempotency({ store: spied.store, scope: 'global', wait: { timeoutMs: 4_000, pollMs: 20 } }),
  );
  app.post('/slow', async (c) => {
    runs++;
    await new Promise<void>((resolve) => releases.push(resolve));
    return c.json({ done: true }, 201);
  });
  app.post('/fast', (c) => {
    runs++;
    return c.json({ done: true }, 201);
  });
  port = await new Promise<number>((resolve) => {
    server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, (info) =>
      resolve(info.port),
    );
  });
  server.on('connection', (socket: Socket) => sockets.push(socket));
});

afterAll(async () => {
  for (const release of releases) release();
  (server as { closeAllConnections?: () => void }).closeAllConnections?.();
  await new Promise((resolve) => server.close(resolve));
});

const keyed = (path: string, key: string) =>
  `POST ${path} HTTP/1.1\r\nHost: x\r\nIdempotency-Key: ${key}\r\n` +
  'Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}';

const polls = () => spied.calls.acquire + spied.calls.get;

/** A keyed POST on its own connection: status and whether it was a replay. */
function post(key: string): Promise<{ status: number; replayed: boolean }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        host: '127.0.0.1',
        port,
        method: 'POST',
        path: '/slow',
        headers: {
          'idempotency-key': key,
          'content-type': 'application/json',
          connection: 'close',
        },
      },
      (res) => {
        res.resume();
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            replayed: res.headers['idempotent-replayed'] === 'true',
          }),
        );
      },
    );
    req.on('error', reject);
    req.end('{}');
  });
}

/**
 * A connection with a keyed first execution of `/slow` and its duplicate pipelined behind it,
 * once the first runs (the bytes that come back are kept in `parts`).
 */
async function pipelinedPair(key: string): Promise<{ socket: Socket; parts: Buffer[] }> {
  const ran = runs;
  const socket = connect(port, '127.0.0.1');
  socket.on('error', () => {});
  const parts: Buffer[] = [];
  socket.on('data', (part: Buffer) => parts.push(part));
  socket.write(keyed('/slow', key) + keyed('/slow', key));
  for (let i = 0; i < 100 && runs === ran; i++) await sleep(10);
  expect(runs).toBe(ran + 1);
  return { socket, parts };
}

describe('@idem/hono on @hono/node-server: a pipelined duplicate whose client leaves', () => {
  // framing2: also a client that half-closes (a FIN, no reset). Node's server (its default
  // `httpAllowHalfOpen: false`) then ends the connection and its pending requests: the queued
  // answer can never be written, and the wait stops (the request closes on a closed
  // connection). The FIN case passed before framing2 too (Node 20.20, 24.22): a guard.
  it.each([
    ['closes', (socket: Socket) => socket.destroy()],
    ['half-closes (FIN)', (socket: Socket) => socket.end()],
  ])(
    'stops waiting when the connection %s; the first still runs once and is replayed',
    async (_, leave) => {
      const key = `adaptrev-pipelined-${Math.random()}`;
      const ran = runs;
      // The first execution and its duplicate, pipelined on one connection.
      const { socket } = await pipelinedPair(key);
      const waiting = polls();
      await sleep(120);
      // The duplicate was waiting (polling the store).
      expect(polls() - waiting).toBeGreaterThanOrEqual(2);
      const closed = new Promise((resolve) => socket.once('close', resolve));
      leave(socket);
      await closed;
      // A poll in flight at the cut lands; then none may follow.
      await sleep(60);
      const atCut = polls();
      await sleep(500);
      expect(polls()).toBe(atCut);
      // The first execution ends and is recorded: the key is neither released nor run again.
      releases.shift()?.();
      await sleep(50);
      expect(await post(key)).toEqual({ status: 201, replayed: true });
      expect(runs).toBe(ran + 1);
    },
  );

  // framing2: a server that keeps half-open connections (`httpAllowHalfOpen`) answers a client
  // that sent its requests and then its FIN, as an HTTP/1.0-style client waits for them: the
  // duplicate's wait goes on to the first's end, and both answers come before the close.
  it('a half-closed client of a half-open server gets the first answer and the replay', async () => {
    const key = `framing2-half-open-${Math.random()}`;
    const ran = runs;
    const nodeServer = server as unknown as { httpAllowHalfOpen: boolean };
    nodeServer.httpAllowHalfOpen = true;
    try {
      const { socket, parts } = await pipelinedPair(key);
      const closed = new Promise((resolve) => socket.once('close', resolve));
      socket.end();
      const waiting = polls();
      for (let i = 0; i < 100 && polls() - waiting < 2; i++) await sleep(10);
      // Still waiting after the FIN.
      expect(polls() - waiting).toBeGreaterThanOrEqual(2);
      releases.shift()?.();
      await closed;
      const text = Buffer.concat(parts).toString('latin1');
      const heads = text.match(/HTTP\/1\.1 \d{3} /g);
      expect(heads).toEqual(['HTTP/1.1 201 ', 'HTTP/1.1 201 ']);
      const second = text.slice(text.lastIndexOf('HTTP/1.1 201 '));
      expect(second).toMatch(/\r\nidempotent-replayed: true\r\n/i);
      expect(second.endsWith('{"done":true}')).toBe(true);
      expect(runs).toBe(ran + 1);
    } finally {
      nodeServer.httpAllowHalfOpen = false;
    }
  });

  it('adds no listener to the connection per request (1,000 keyed requests on one keep-alive connection)', async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const before = sockets.length;
    const counts: Record<string, number>[] = [];
    for (let i = 0; i < 1_000; i++) {
      await new Promise<void>((resolve, reject) => {
        const req = httpRequest(
          {
            host: '127.0.0.1',
            port,
            method: 'POST',
            path: '/fast',
            agent,
            headers: {
              'idempotency-key': `adaptrev-many-${i % 10}`,
              'content-type': 'application/json',
            },
          },
          (res) => {
            res.resume();
            res.on('end', resolve);
          },
        );
        req.on('error', reject);
        req.end('{}');
      });
      if (i === 9 || i === 999) {
        const socket = sockets[before] as Socket;
        counts.push(
          Object.fromEntries(
            socket.eventNames().map((name) => [String(name), socket.listenerCount(name)]),
          ),
        );
      }
    }
    agent.destroy();
    // One connection for all of them, with as many listeners after 1,000 as after 10.
    expect(sockets.length).toBe(before + 1);
    expect(counts[1]).toEqual(counts[0]);
  });
});
