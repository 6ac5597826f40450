import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Exchange, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// `res.sendFile` (the `send` module) and everything built on `on-finished` watch the socket,
// not `res`: when the client leaves they stop the file stream and never end the response. The
// route must still run once: the file is read to its end, recorded, and the retry replays it.

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// Larger than the socket buffers on loopback, so the client leaves while the file streams.
const file = randomBytes(3 * 1024 * 1024);
const dir = mkdtempSync(join(tmpdir(), 'idem-send-file-'));
const path = join(dir, 'receipt.bin');
const runs = new Map<string, number>();
let server: Server;
let url = '';

beforeAll(async () => {
  writeFileSync(path, file);
  const app = express();
  app.use(
    idempotency({
      store: createMemoryStore(),
      scope: () => ({ principal: 'tenant-a' }),
      // Short, so a key abandoned by an unended response would be taken over within the test.
      leaseMs: 1_000,
      onWarning: () => {},
    }),
  );
  app.post('/receipt', (_req, res) => {
    runs.set('receipt', (runs.get('receipt') ?? 0) + 1);
    res.sendFile(path);
  });
  app.post('/late-receipt', async (_req, res) => {
    runs.set('late-receipt', (runs.get('late-receipt') ?? 0) + 1);
    await sleep(150);
    res.sendFile(path);
  });
  server = app.listen(0, '127.0.0.1');
  await once(server, 'listening');
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  rmSync(dir, { recursive: true, force: true });
});

/** Retries as a client would: while the first execution runs, 409; then the replay. */
async function retry(route: string, key: string): Promise<Exchange> {
  let exchange = await send(url, route, { key });
  for (let i = 0; exchange.status === 409 && i < 200; i++) {
    await sleep(50);
    exchange = await send(url, route, { key });
  }
  return exchange;
}

describe('@idem/express with res.sendFile when the client leaves', () => {
  it('reads the file to its end while the client is gone: recorded once, the retry replays it', async () => {
    const left = await send(url, '/receipt', { key: 'file-mid', leaveAfterBytes: 64 * 1024 });
    expect(left.complete).toBe(false);
    const again = await retry('/receipt', 'file-mid');
    expect(again.status).toBe(200);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(again.body.equals(file)).toBe(true);
    expect(runs.get('receipt')).toBe(1);
  });

  it('sends a file the route starts after the client left: recorded once, the retry replays it', async () => {
    await expect(send(url, '/late-receipt', { key: 'file-late', timeoutMs: 50 })).rejects.toThrow(
      /timed out/,
    );
    const again = await retry('/late-receipt', 'file-late');
    expect(again.status).toBe(200);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(again.body.equals(file)).toBe(true);
    expect(runs.get('late-receipt')).toBe(1);
  });
});
