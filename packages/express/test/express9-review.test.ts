import { once } from 'node:events';
import { request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createMemoryStore } from '@idem/store-memory';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// Adversarial review of wt/express9: the middleware hands `begin` the origin-form
// `originalUrl` as it is (no `http://localhost` prefix). Real Express 5 servers on loopback;
// node:http clients, which send a request target as it is given (a backslash, an absolute
// form, `*`).

interface Answer {
  status: number;
  body: string;
  replayed: string | undefined;
}

function send(port: number, path: string, key: string, body = '{}'): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        method: 'POST',
        path,
        agent: false,
        headers: { 'idempotency-key': key, 'content-type': 'application/json' },
      },
      (res) => {
        const parts: Buffer[] = [];
        res.on('data', (part: Buffer) => parts.push(part));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            body: Buffer.concat(parts).toString(),
            replayed: res.headers['idempotent-replayed'] as string | undefined,
          }),
        );
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

let runs = 0;
let server: Server;
let port = 0;
let serial = 0;
const nextKey = () => `key-${++serial}`;

beforeAll(async () => {
  const app = express();
  app.use(express.json());
  const idem = idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} });
  // An earlier middleware rewriting req.url must not change the key: originalUrl is read.
  app.use((req, _res, next) => {
    if (req.url.startsWith('/rewrite/')) req.url = req.url.slice('/rewrite'.length);
    next();
  });
  // Route-level: the operation is the matched route (`/:org/charges`), one for every org.
  app.post('/:org/charges', idem, (req, res) => {
    runs++;
    res.json({ org: req.params.org, run: runs });
  });
  const router = express.Router();
  router.post('/orders/:id', idem, (req, res) => {
    runs++;
    res.json({ id: req.params.id, base: req.baseUrl, run: runs });
  });
  app.use('/v1', router);
  app.use('/v2', router);
  app.post('/a/b', idem, (_req, res) => {
    runs++;
    res.json({ path: 'a/b', run: runs });
  });
  app.post('/b', idem, (_req, res) => {
    runs++;
    res.json({ path: 'b', run: runs });
  });
  // App-level for the rest: the operation is the path in its canonical spelling.
  app.use(idem, (req, res) => {
    runs++;
    res.status(404).json({ url: req.originalUrl, run: runs });
  });
  server = app.listen(0, '127.0.0.1');
  await once(server, 'listening');
  port = (server.address() as AddressInfo).port;
});

afterAll(() => new Promise<void>((done) => server.close(() => done())));

describe('express9 review: the origin-form target given to begin as it is', () => {
  // Finding (MEDIUM, fixed): `/\host/path` was passed as it is, and the URL parser reads a
  // relative `/\host/path` as scheme-relative (`//host/path`): the fingerprint's path was
  // `/path`, the host part gone. Two requests routed to `/:org/charges` with orgs `\acme` and
  // `\other` had one fingerprint: a retry of the key with the other org was replayed the first
  // org's outcome instead of getting 422 (before express9, `http://localhost/\acme/charges`
  // kept `//acme/charges`).
  it('a key reused with another org after a backslash is a mismatch, not a replay', async () => {
    const key = nextKey();
    const first = await send(port, '/\\acme/charges', key);
    expect(first.status).toBe(200);
    expect(JSON.parse(first.body).org).toBe('\\acme');
    const other = await send(port, '/\\other/charges', key);
    expect(other.status).toBe(422);
    const again = await send(port, '/\\acme/charges', key);
    expect(again.status).toBe(200);
    expect(again.replayed).toBe('true');
    expect(again.body).toBe(first.body);
  });

  it('the same key on two orgs without a backslash is a mismatch (control)', async () => {
    const key = nextKey();
    expect((await send(port, '/acme/charges', key)).status).toBe(200);
    expect((await send(port, '/other/charges', key)).status).toBe(422);
  });

  it('absolute-form targets: the path is what counts, the same route replays', async () => {
    const key = nextKey();
    const first = await send(port, `http://127.0.0.1:${port}/acme/charges`, key);
    expect(first.status).toBe(200);
    const again = await send(port, '/acme/charges', key);
    expect(again.replayed).toBe('true');
    expect(again.body).toBe(first.body);
    const other = await send(port, `http://127.0.0.1:${port}/other/charges`, key);
    expect(other.status).toBe(422);
  });

  it('dot segments: /x/../b and /b are one path to the fingerprint but other operations', async () => {
    const key = nextKey();
    const dotted = await send(port, '/x/../b', key);
    // Express does not resolve dot segments: the 404 fallback answered, with its own scope.
    expect(dotted.status).toBe(404);
    const plain = await send(port, '/b', key);
    expect(plain.status).toBe(200);
    expect(plain.replayed).toBeUndefined();
    expect(JSON.parse(plain.body).path).toBe('b');
  });

  it('`*` and a `//` target are answered, each its own operation', async () => {
    const star = await send(port, '*', nextKey());
    expect(star.status).toBe(404);
    const key = nextKey();
    const doubled = await send(port, '//acme/charges', key);
    const single = await send(port, '/acme/charges', key);
    expect(single.replayed).toBeUndefined();
    expect(single.status).toBe(200);
    expect(doubled.status === 404 || doubled.status === 200).toBe(true);
  });

  it('one router mounted twice: /v1 and /v2 are two operations, each replays its own', async () => {
    const key = nextKey();
    const v1 = await send(port, '/v1/orders/7', key);
    expect(JSON.parse(v1.body).base).toBe('/v1');
    const v2 = await send(port, '/v2/orders/7', key);
    // Another route (its base is part of it): not the /v1 outcome.
    expect(v2.replayed).toBeUndefined();
    expect(JSON.parse(v2.body).base).toBe('/v2');
    expect((await send(port, '/v1/orders/7', key)).body).toBe(v1.body);
    // The same route through another spelling: the raw path is in the fingerprint, 422.
    expect((await send(port, '/V1/orders/7/', key)).status).toBe(422);
  });

  it('a req.url rewritten by a later middleware does not change the key', async () => {
    const key = nextKey();
    const first = await send(port, '/rewrite/a/b', key);
    expect(JSON.parse(first.body).path).toBe('a/b');
    const again = await send(port, '/rewrite/a/b', key);
    expect(again.replayed).toBe('true');
    // The plain path is another request under this key (its original URL differs).
    const plain = await send(port, '/a/b', key);
    expect(plain.replayed).toBeUndefined();
  });

  it('a query with # and escapes: the same target replays, another query is a mismatch', async () => {
    const key = nextKey();
    const first = await send(port, "/acme/charges?x=1&y='%41#frag", key);
    expect(first.status).toBe(200);
    const again = await send(port, "/acme/charges?x=1&y='%41#frag", key);
    expect(again.replayed).toBe('true');
    const other = await send(port, '/acme/charges?x=2', key);
    expect(other.status).toBe(422);
  });
});
