import type { IncomingMessage, Server } from 'node:http';
import { request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { BodyAlreadyReadError } from '@idem/http';
import { createMemoryStore } from '@idem/store-memory';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// A middleware before idem that reads the request stream itself (a raw-body reader, a
// signature check) and leaves no `req.body`: idem can no longer see the bytes. It must never
// take the body as empty (another body under the key would be replayed this one's outcome):
// it fingerprints the bytes kept as `req.rawBody`, or refuses with BodyAlreadyReadError (500,
// nothing run, no key taken). Real Express 5 server on loopback.

type Keep = 'nothing' | 'buffer' | 'string';

const store = createMemoryStore();
let runs = 0;
const errors: unknown[] = [];
let server: Server;
let port = 0;

/** Reads the whole body before idem, keeping what the `x-keep` header says. */
function rawReader(req: express.Request, _res: express.Response, next: express.NextFunction) {
  const keep = req.headers['x-keep'] as Keep | undefined;
  if (keep === undefined) return next();
  const parts: Buffer[] = [];
  req.on('data', (chunk: Buffer) => parts.push(chunk));
  req.on('end', () => {
    const bytes = Buffer.concat(parts);
    if (keep === 'buffer') (req as unknown as { rawBody: Buffer }).rawBody = bytes;
    if (keep === 'string') (req as unknown as { rawBody: string }).rawBody = bytes.toString();
    next();
  });
}

beforeAll(async () => {
  const app = express();
  app.use(rawReader);
  app.use(idempotency({ store, scope: 'global', onWarning: () => {} }));
  app.post('/pay', (req, res) => {
    runs++;
    const raw = (req as unknown as { rawBody?: Buffer | string }).rawBody;
    res.status(201).json({ run: runs, raw: raw === undefined ? null : String(raw) });
  });
  app.use(
    (error: Error, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
      errors.push(error);
      res.status(500).json({ name: error.name, message: error.message });
    },
  );
  server = app.listen(0, '127.0.0.1');
  await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  port = (server.address() as AddressInfo).port;
});

afterAll(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

let counter = 0;
const freshKey = () => `read-before-${process.pid}-${++counter}`;

interface Answer {
  status: number;
  body: string;
}

/** POSTs `body` (chunked when `chunked`, else with its Content-Length). */
function post(key: string, body: string, keep?: Keep, chunked = false): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      'idempotency-key': key,
      ...(keep ? { 'x-keep': keep } : {}),
      ...(chunked
        ? { 'transfer-encoding': 'chunked' }
        : { 'content-length': String(Buffer.byteLength(body)) }),
    };
    const req = httpRequest(
      { host: '127.0.0.1', port, method: 'POST', path: '/pay', headers, agent: false },
      (res: IncomingMessage) => {
        const parts: Buffer[] = [];
        res.on('data', (chunk: Buffer) => parts.push(chunk));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, body: Buffer.concat(parts).toString() }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

describe('a body read before the middleware, no req.body', () => {
  it('nothing kept: 500 BodyAlreadyReadError naming the fix, nothing run, no key taken', async () => {
    const key = freshKey();
    const before = runs;
    const refused = await post(key, '{"amt":1}', 'nothing');
    expect(refused.status).toBe(500);
    const problem = JSON.parse(refused.body) as { name: string; message: string };
    expect(problem.name).toBe('BodyAlreadyReadError');
    expect(problem.message).toMatch(/before the idempotency middleware/);
    expect(problem.message).toMatch(/req\.rawBody/);
    expect(errors.at(-1)).toBeInstanceOf(BodyAlreadyReadError);
    expect(runs).toBe(before);
    // A different body under the same key, refused again: never a replay.
    expect((await post(key, '{"amt":999}', 'nothing')).status).toBe(500);
    expect(runs).toBe(before);
    // The key was never taken: the same key, read by idem itself, runs once and is recorded.
    const first = await post(key, '{"amt":1}');
    expect(first.status).toBe(201);
    expect(runs).toBe(before + 1);
    expect(await post(key, '{"amt":1}')).toEqual(first);
    expect((await post(key, '{"amt":999}')).status).toBe(422);
    expect(runs).toBe(before + 1);
  });

  it('nothing kept, chunked: refused as well', async () => {
    const before = runs;
    const refused = await post(freshKey(), '{"amt":2}', 'nothing', true);
    expect(refused.status).toBe(500);
    expect(JSON.parse(refused.body).name).toBe('BodyAlreadyReadError');
    expect(runs).toBe(before);
  });

  it('an empty chunked body read before: no bytes were there, it is fingerprinted as none', async () => {
    const key = freshKey();
    const first = await post(key, '', 'nothing', true);
    expect(first.status).toBe(201);
    expect(await post(key, '', 'nothing', true)).toEqual(first);
  });

  for (const keep of ['buffer', 'string'] as const) {
    it(`bytes kept as req.rawBody (${keep}): fingerprinted by them, replayed, another body 422`, async () => {
      const key = freshKey();
      const before = runs;
      const first = await post(key, '{"amt":1, "to":"x"}', keep);
      expect(first.status).toBe(201);
      expect(JSON.parse(first.body).raw).toBe('{"amt":1, "to":"x"}');
      // The same JSON, spaced otherwise and read by idem itself: the same fingerprint.
      expect(await post(key, '{"to":"x","amt":1}')).toEqual(first);
      expect(await post(key, '{"amt":1,"to":"x"}', keep)).toEqual(first);
      expect((await post(key, '{"amt":999,"to":"x"}', keep)).status).toBe(422);
      expect(runs).toBe(before + 1);
    });
  }
});

describe('the middleware twice on one request (app-wide and on the route)', () => {
  it('the second sees the bytes the first read and put back: run once, replayed, another body 422', async () => {
    let count = 0;
    const app = express();
    app.use(idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }));
    app.post(
      '/twice',
      idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }),
      express.json(),
      (req, res) => {
        count++;
        res.status(201).json({ count, body: req.body });
      },
    );
    const twice = app.listen(0, '127.0.0.1');
    await new Promise<void>((resolve) => twice.once('listening', () => resolve()));
    const at = (twice.address() as AddressInfo).port;
    try {
      const send = async (body: string) => {
        const response = await fetch(`http://127.0.0.1:${at}/twice`, {
          method: 'POST',
          body,
          headers: { 'idempotency-key': 'twice-1', 'content-type': 'application/json' },
        });
        return { status: response.status, body: await response.text() };
      };
      const first = await send('{"a":1}');
      expect(first.status).toBe(201);
      expect(JSON.parse(first.body)).toEqual({ count: 1, body: { a: 1 } });
      expect(await send('{"a":1}')).toEqual(first);
      expect((await send('{"a":2}')).status).toBe(422);
      expect(count).toBe(1);
    } finally {
      await new Promise<void>((resolve) => twice.close(() => resolve()));
    }
  });
});
