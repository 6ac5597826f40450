import { once } from 'node:events';
import { request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createMemoryStore } from '@idem/store-memory';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getIdempotency, idempotency } from '../src/index.js';

// Review of the Node read-ahead (a published stream is not paced by its first client): past
// the outcome cap the route must be paced by the first client again, so a paused first
// client cannot make the server buffer an unbounded body.

const CAP = 256 * 1024;
const CHUNK = 16 * 1024;
const MAX_CHUNKS = 4096; // 64 MiB: far past the cap and loopback buffers
let server: Server;
let url = '';
let routeDone: (seen: { refusedAt: number | undefined }) => void = () => {};
const base = createMemoryStore({ maxOutcomeBytes: CAP });
let lastKey = '';
const store = Object.assign(Object.create(base), {
  acquire: (input: Parameters<typeof base.acquire>[0]) => {
    lastKey = input.key;
    return base.acquire(input);
  },
}) as typeof base;
let lostDone: (seen: { aborted: boolean; refused: boolean }) => void = () => {};

beforeAll(async () => {
  const app = express();
  app.use(
    idempotency({
      store,
      scope: 'global',
      leaseMs: 600,
      maxOutcomeBytes: CAP,
      onWarning: () => {},
    }),
  );
  app.post('/flood', (_req, res) => {
    res.status(200).type('text/event-stream');
    const event = `data: ${'z'.repeat(CHUNK - 8)}\n\n`;
    let refusedAt: number | undefined;
    for (let n = 0; n < MAX_CHUNKS; n++) {
      if (!res.write(event)) {
        refusedAt = (n + 1) * event.length;
        break;
      }
    }
    res.end();
    routeDone({ refusedAt });
  });
  app.post('/lose', async (_req, res) => {
    res.status(200).type('text/event-stream');
    const event = `data: ${'w'.repeat(CHUNK - 8)}\n\n`;
    // Under the cap: read ahead of the paused first client.
    for (let n = 0; n < 8; n++) res.write(event);
    const signal = getIdempotency(res)?.signal as AbortSignal;
    const aborting = once(signal, 'abort');
    await base.admin.forceRelease(lastKey);
    // The next heartbeat finds the lease lost (bounded by the lease).
    await Promise.race([aborting, new Promise((resolve) => setTimeout(resolve, 3_000))]);
    let refused = false;
    for (let n = 0; n < MAX_CHUNKS && !refused; n++) refused = !res.write(event);
    res.end();
    lostDone({ aborted: signal.aborted, refused });
  });
  server = app.listen(0, '127.0.0.1');
  await once(server, 'listening');
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

function pausedFirstClient(path: string, key: string) {
  const req = request(`${url}${path}`, {
    method: 'POST',
    agent: false,
    headers: { 'idempotency-key': key, accept: 'text/event-stream' },
  });
  req.on('response', (res) => res.pause());
  req.on('error', () => {});
  req.end();
  return req;
}

describe('Express read-ahead, reviewed', () => {
  it('past the outcome cap a paused first client paces the route again (a write answers false)', async () => {
    const done = new Promise<{ refusedAt: number | undefined }>((resolve) => {
      routeDone = resolve;
    });
    const req = pausedFirstClient('/flood', `flood-${Date.now()}`);
    const seen = await done;
    req.destroy();
    expect(seen.refusedAt).toBeDefined();
    expect(seen.refusedAt as number).toBeLessThan(CAP + 32 * 1024 * 1024);
  });

  it('once the lease is lost a paused first client paces the route again', async () => {
    const done = new Promise<{ aborted: boolean; refused: boolean }>((resolve) => {
      lostDone = resolve;
    });
    const req = pausedFirstClient('/lose', `lose-${Date.now()}`);
    const seen = await done;
    req.destroy();
    expect(seen).toEqual({ aborted: true, refused: true });
  });
});
