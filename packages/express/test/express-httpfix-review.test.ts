import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// Adversarial review (wt/httpfix-review) of the recordServerResponse fixes, with Express 5.

const runs = new Map<string, number>();
const file = join(tmpdir(), `idem-review-${process.pid}.txt`);
let server: Server;
let url = '';
const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  writeFileSync(file, 'x'.repeat(300_000));
  const app = express();
  app.use(
    idempotency({
      store: createMemoryStore(),
      scope: () => ({ principal: 'a' }),
      onWarning: () => {},
    }),
  );
  app.use((req, _res, next) => {
    runs.set(req.path, (runs.get(req.path) ?? 0) + 1);
    next();
  });
  app.post('/json', async (_req, res) => {
    await wait(80);
    res.status(201).json({ ok: 1 });
  });
  app.post('/send', (_req, res) => {
    res.send(Buffer.from('buffer body'));
  });
  app.post('/redirect', (_req, res) => res.redirect(303, '/elsewhere'));
  app.post('/file', (_req, res) => res.sendFile(file));
  app.post('/write-undefined', (_req, res) => {
    res.type('text/plain');
    res.write(undefined as unknown as string); // Node: ERR_INVALID_ARG_TYPE, before any head
    res.end('never');
  });
  server = app.listen(0, '127.0.0.1');
  await once(server, 'listening');
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

const post = (path: string, key: string) =>
  `POST ${path} HTTP/1.1\r\nHost: x\r\nidempotency-key: ${key}\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}`;

describe('@idem/express httpfix review', () => {
  it('a route whose res.write throws (invalid chunk): the client gets the 500, the key is not held', async () => {
    const first = await send(url, '/write-undefined', {
      key: 'wu',
      body: {},
      timeoutMs: 1_500,
    }).catch((error: Error) => ({ status: -1, message: error.message }));
    const retry = await send(url, '/write-undefined', {
      key: 'wu',
      body: {},
      timeoutMs: 1_500,
    }).catch((error: Error) => ({ status: -1, message: error.message }));
    // Without idem (and before 72c75ef) Express's error handler answers 500: headersSent is false.
    expect([first.status, retry.status]).toEqual([500, 500]);
  });

  it('pipelined json, send, redirect, sendFile on one socket (client stays): delivered, recorded once, replayed', async () => {
    const socket = connect(Number(new URL(url).port), '127.0.0.1');
    await once(socket, 'connect');
    let bytes = 0;
    let data = '';
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => {
      bytes += d.length;
      data += d;
    });
    socket.write(
      post('/json', 'pj') + post('/send', 'ps') + post('/redirect', 'pr') + post('/file', 'pf'),
    );
    const deadline = Date.now() + 3_000;
    while (bytes < 300_000 && Date.now() < deadline) await wait(10);
    socket.destroy();
    expect(data.match(/HTTP\/1.1 \d+/g)).toEqual([
      'HTTP/1.1 201',
      'HTTP/1.1 200',
      'HTTP/1.1 303',
      'HTTP/1.1 200',
    ]);
    for (const [path, key, status] of [
      ['/json', 'pj', 201],
      ['/send', 'ps', 200],
      ['/file', 'pf', 200],
    ] as const) {
      const retry = await send(url, path, { key, body: {} });
      expect(retry.status).toBe(status);
      expect(retry.headers['idempotent-replayed']).toBe('true');
      if (path === '/file') expect(retry.body.length).toBe(300_000);
    }
    expect(['/json', '/send', '/file'].map((p) => runs.get(p))).toEqual([1, 1, 1]);
  });
});
