import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createMemoryStore } from '@idem/store-memory';
import express from 'express';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// rev11: rev10b reads Content-Type parameters per RFC 9110 (content-type.ts) and refuses a
// body whose parameter list does not parse. The `content-type` package behind body-parser
// takes spaces around '=' (`charset = utf-8`); rev10's regex (`;\s*charset\s*=\s*`) did too.

const servers: Server[] = [];
afterAll(() =>
  Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve)))),
);

async function start(order: 'parser-first' | 'idem-first') {
  let runs = 0;
  const app = express();
  const idem = idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} });
  if (order === 'parser-first') app.use(express.json(), idem);
  else app.use(idem, express.json());
  app.post('/orders', (req, res) => {
    runs++;
    res.status(201).json({ got: req.body });
  });
  const server = app.listen(0, '127.0.0.1');
  servers.push(server);
  await new Promise((resolve) => server.once('listening', resolve));
  return { port: (server.address() as AddressInfo).port, runs: () => runs };
}

async function post(port: number, key: string, contentType: string) {
  const response = await fetch(`http://127.0.0.1:${port}/orders`, {
    method: 'POST',
    headers: { 'idempotency-key': key, 'content-type': contentType },
    body: '{"a":1}',
    signal: AbortSignal.timeout(5_000),
  });
  return { status: response.status, text: await response.text() };
}

describe('rev11 express: Content-Type parameter spellings body-parser takes', () => {
  it('setup: express.json() alone takes `charset = utf-8`', async () => {
    const app = express();
    app.post('/orders', express.json(), (req, res) => {
      res.status(201).json({ got: req.body });
    });
    const server = app.listen(0, '127.0.0.1');
    servers.push(server);
    await new Promise((resolve) => server.once('listening', resolve));
    const port = (server.address() as AddressInfo).port;
    const answer = await post(port, 'setup', 'application/json; charset = utf-8');
    expect(answer.status).toBe(201);
  });

  it('idem first: `charset = utf-8` is taken', async () => {
    const { port } = await start('idem-first');
    const answer = await post(port, 'rev11-cs-1', 'application/json; charset = utf-8');
    expect([answer.status, answer.text]).toEqual([201, '{"got":{"a":1}}']);
  });

  // FIXED (was FINDING LOW): with express.json() before idem, a UTF-8 JSON request whose Content-Type has spaces around '=' (`charset = utf-8`, taken by body-parser and by rev10's charset regex) now gets a 500 (BodyAlreadyReadError "parameters that do not parse"): a client-chosen spelling turns into a server error
  it('parser first: `charset = utf-8` is taken', async () => {
    const { port } = await start('parser-first');
    const answer = await post(port, 'rev11-cs-2', 'application/json; charset = utf-8');
    expect([answer.status, answer.text]).toEqual([201, '{"got":{"a":1}}']);
  });
});
