import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createMemoryStore } from '@idem/store-memory';
import express from 'express';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// express.json() mounted BEFORE the middleware: only the parsed value reaches it. With the
// bytes kept as req.rawBody (a verify hook), bodies JSON.parse cannot tell apart are two
// requests, as when the middleware reads the body itself; without them they are one.

const servers: Server[] = [];
afterAll(() => Promise.all(servers.map((s) => new Promise((r) => s.close(r)))));

async function start(keepRaw: boolean) {
  let runs = 0;
  const app = express();
  app.use(
    express.json(
      keepRaw
        ? {
            verify: (req, _res, buf) => {
              (req as { rawBody?: Buffer }).rawBody = buf;
            },
          }
        : {},
    ),
  );
  app.use(
    idempotency({
      store: createMemoryStore(),
      scope: () => ({ principal: 'tenant-a' }),
      onWarning: () => {},
    }),
  );
  app.post('/transfers', (_req, res) => {
    res.json({ runs: ++runs });
  });
  const server = app.listen(0, '127.0.0.1');
  servers.push(server);
  await new Promise((r) => server.once('listening', r));
  const { port } = server.address() as AddressInfo;
  const send = (body: string) =>
    fetch(`http://127.0.0.1:${port}/transfers`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'idempotency-key': 'k1' },
      body,
    });
  return { send, runs: () => runs };
}

const PAIRS = [
  ['integers past 2^53', '{"amount":9007199254740993}', '{"amount":9007199254740992}'],
  ['repeated member names', '{"to":"alice","to":"mallory"}', '{"to":"mallory"}'],
] as const;

describe('express.json() before the middleware, bytes kept as req.rawBody', () => {
  for (const [name, first, second] of PAIRS) {
    it(`${name}: a key reused with the other body is 422; the same bytes replay`, async () => {
      const app = await start(true);
      expect((await app.send(first)).status).toBe(200);
      expect((await app.send(second)).status).toBe(422);
      const again = await app.send(first);
      expect(again.status).toBe(200);
      expect(again.headers.get('idempotent-replayed')).toBe('true');
      expect(app.runs()).toBe(1);
    });
  }
});

describe('express.json() before the middleware, no bytes kept (the documented limit)', () => {
  it('the two bodies parse to one value and replay as one request', async () => {
    const [, first, second] = PAIRS[1];
    const app = await start(false);
    expect((await app.send(first)).status).toBe(200);
    const other = await app.send(second);
    expect(other.status).toBe(200);
    expect(other.headers.get('idempotent-replayed')).toBe('true');
    expect(app.runs()).toBe(1);
  });
});
