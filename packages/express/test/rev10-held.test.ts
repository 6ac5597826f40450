import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createMemoryStore } from '@idem/store-memory';
import express from 'express';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// rev10: attacks that broke another adapter (Hono: rev10-cors) and held on Express.

const servers: Server[] = [];
afterAll(() =>
  Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve)))),
);

describe('rev10 express (held)', () => {
  it('headers a middleware set before idem (CORS) are on the replay, the 422 and the 400', async () => {
    let runs = 0;
    const app = express();
    app.use((_req, res, next) => {
      res.setHeader('Access-Control-Allow-Origin', 'https://app.example');
      next();
    });
    app.use(idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }));
    app.post('/charges', (_req, res) => {
      runs++;
      res.status(201).json({ ok: true });
    });
    const server = app.listen(0, '127.0.0.1');
    servers.push(server);
    await new Promise((resolve) => server.once('listening', resolve));
    const port = (server.address() as AddressInfo).port;
    const post = async (key: string, body: string) => {
      const response = await fetch(`http://127.0.0.1:${port}/charges`, {
        method: 'POST',
        headers: { 'idempotency-key': key, 'content-type': 'application/json' },
        body,
        signal: AbortSignal.timeout(5_000),
      });
      await response.arrayBuffer();
      return [response.status, response.headers.get('access-control-allow-origin')];
    };
    const origin = 'https://app.example';
    expect(await post('cors', '{}')).toEqual([201, origin]);
    expect(await post('cors', '{}')).toEqual([201, origin]);
    expect(await post('cors', '{"a":1}')).toEqual([422, origin]);
    expect(await post('bad"key', '{}')).toEqual([400, origin]);
    expect(runs).toBe(1);
  });
});
