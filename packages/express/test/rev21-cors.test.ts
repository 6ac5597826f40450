import { once } from 'node:events';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// rev21 (hono rev10-cors, on Express): a CORS middleware mounted after idem does not run for a
// replay; the CORS fields the Node response had are recorded with the request Origin and
// replayed only to a retry from that same Origin.

let server: Server;
let base = '';
let runs = 0;

beforeAll(async () => {
  const app = express();
  app.use(idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }));
  // A CORS middleware as the cors package writes one for an allowed origin.
  app.use((req, res, next) => {
    const origin = req.headers.origin;
    if (origin === 'https://app.example' || origin === 'https://b.example') {
      res.setHeader('Access-Control-Allow-Origin', origin);
      res.setHeader('Access-Control-Allow-Credentials', 'true');
    }
    res.vary('Origin');
    next();
  });
  app.post('/charges', (_req, res) => {
    runs++;
    res.status(201).json({ id: 1 });
  });
  server = app.listen(0, '127.0.0.1');
  await once(server, 'listening');
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise((r) => server.close(r)));

async function post(key: string, origin: string | undefined) {
  const { status, headers } = await send(base, '/charges', {
    key,
    tenant: null,
    body: {},
    headers: origin ? { origin } : {},
  });
  return {
    status,
    replayed: headers['idempotent-replayed'] === 'true',
    allowOrigin: headers['access-control-allow-origin'],
    credentials: headers['access-control-allow-credentials'],
    vary: headers.vary,
  };
}

describe('rev21 express: CORS fields of a replay, the CORS middleware after idem', () => {
  it('replayed to the same Origin only', async () => {
    expect(await post('c1', 'https://app.example')).toMatchObject({
      status: 201,
      allowOrigin: 'https://app.example',
    });
    expect(await post('c1', 'https://app.example')).toMatchObject({
      status: 201,
      replayed: true,
      allowOrigin: 'https://app.example',
      credentials: 'true',
      vary: 'Origin',
    });
    for (const origin of ['https://b.example', 'https://evil.example', undefined])
      expect(await post('c1', origin), String(origin)).toMatchObject({
        status: 201,
        replayed: true,
        allowOrigin: undefined,
        credentials: undefined,
        vary: 'Origin',
      });
    expect(runs).toBe(1);
  });
});
