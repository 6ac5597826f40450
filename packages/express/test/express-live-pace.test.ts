import { once } from 'node:events';
import { request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { livePace, spyStore } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// A published stream is not paced by its first client: a first client that stops reading (or
// whose connection died silently) holds neither the route nor an attached duplicate back. A
// response that is not published keeps Node's backpressure.

const CAP = 64 * 1024 * 1024;
const pace = livePace();
const spied = spyStore(createMemoryStore({ maxOutcomeBytes: CAP }), { completeDelayMs: 30 });
let server: Server;
let url = '';
/** What the unpublished route saw: whether a write answered false. */
let plainWriteRefused = false;
let plainEnded: () => void = () => {};

beforeAll(async () => {
  const app = express();
  app.use(
    idempotency({ store: spied.store, scope: 'global', maxOutcomeBytes: CAP, onWarning: () => {} }),
  );
  app.post('/pace', async (req, res) => {
    res.status(200).type('text/event-stream');
    for await (const event of pace.events(req.socket))
      if (!res.write(event)) await once(res, 'drain');
    res.end();
  });
  app.post('/plain', async (_req, res) => {
    res.status(200).type('text/plain');
    plainWriteRefused = false;
    const chunk = 'y'.repeat(16 * 1024);
    // Bounded: loopback buffers take a few MiB, far less than this.
    for (let n = 0; n < 4096 && !plainWriteRefused; n++) plainWriteRefused = !res.write(chunk);
    res.end();
    plainEnded();
  });
  server = app.listen(0, '127.0.0.1');
  await once(server, 'listening');
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

describe('Express: a published stream goes at the pace of its route, not of its first client', () => {
  it('a first client that stops reading: the attached reader gets every event as it is made, the end after the record; the first client then gets the same bytes', async () => {
    const before = spied.completed.length;
    const seen = await pace.run(url, '/pace', 'paused', () => spied.completed.length - before);
    expect(seen.firstClientStalled).toBe(true);
    expect(seen.attached).toBe(seen.produced);
    expect(seen.storedAtAttachedEnd).toBe(1);
    expect(seen.first).toBe(seen.produced);
  });

  it('a first client whose connection is silently dead holds nobody back', async () => {
    const before = spied.completed.length;
    const seen = await pace.run(url, '/pace', 'dead', () => spied.completed.length - before);
    expect(seen.firstClientStalled).toBe(true);
    expect(seen.attached).toBe(seen.produced);
    expect(seen.storedAtAttachedEnd).toBe(1);
  });

  it('a response that is not published keeps backpressure: a write to a client that stops reading answers false', async () => {
    const ended = new Promise<void>((resolve) => {
      plainEnded = resolve;
    });
    const req = request(`${url}/plain`, {
      method: 'POST',
      agent: false,
      headers: { 'idempotency-key': `plain-${Date.now()}` },
    });
    req.on('response', (res) => res.pause());
    req.on('error', () => {});
    req.end();
    await ended;
    req.destroy();
    expect(plainWriteRefused).toBe(true);
  });
});
