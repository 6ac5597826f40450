// Express: a middleware that puts `Transfer-Encoding: chunked` on the response before the
// route. A replay of a 204 has no body to frame: it went out with that
// Transfer-Encoding (a server never sends one on a 204, RFC 9112 6.1) and Node closed the
// connection after it, so a request pipelined behind the replay on the same keep-alive
// connection was never answered. The replay is sent without it and the connection goes on
// (adaptrev, on @idem/http's `sendDecisionResponse`).
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { rawExchange } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

let server: Server;
let port = 0;
let runs = 0;

beforeAll(async () => {
  const app = express();
  app.use((req, res, next) => {
    if (req.headers['x-framing'] === 'te') res.setHeader('Transfer-Encoding', 'chunked');
    next();
  });
  app.use(idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }));
  app.post('/empty', (_req, res) => {
    runs++;
    res.status(204).end();
  });
  app.get('/ping', (_req, res) => {
    res.type('text/plain').send('pong');
  });
  server = app.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  port = (server.address() as AddressInfo).port;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

/** A keyed POST and a GET pipelined behind it on one connection: all the bytes that came. */
async function pipelined(path: string, key: string, framing: string): Promise<string> {
  const raw = await rawExchange(
    `http://127.0.0.1:${port}`,
    `POST ${path} HTTP/1.1\r\nHost: x\r\nIdempotency-Key: ${key}\r\nX-Framing: ${framing}\r\n` +
      'Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}' +
      'GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
    2_000,
  );
  return raw.toString('latin1');
}

describe('Express: a bodiless replay carries no Transfer-Encoding that middleware set', () => {
  it.each([['/empty', 204]])(
    '%s (%i) replayed, then the pipelined request answered',
    async (path, status) => {
      const key = `adaptrev-bodiless-${path}-${Math.random()}`;
      const before = runs;
      const first = await pipelined(path, key, 'none');
      expect(first).toMatch(new RegExp(`^HTTP/1\\.1 ${status} `));
      const raw = await pipelined(path, key, 'te');
      const at = raw.indexOf('\r\n\r\n');
      const head = raw.slice(0, at).toLowerCase();
      expect(head).toMatch(new RegExp(`^http/1\\.1 ${status} `));
      expect(head).toContain('\r\nidempotent-replayed: true');
      expect(head).not.toContain('transfer-encoding');
      expect(head).not.toContain('content-length');
      // No body after the head: the next bytes are the pipelined request's answer, whole.
      const next = raw.slice(at + 4);
      expect(next).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
      expect(next.endsWith('\r\n\r\npong')).toBe(true);
      expect(runs).toBe(before + 1);
    },
  );
});
