import type { IncomingMessage, Server } from 'node:http';
import { request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { BodyAlreadyReadError } from '@idem/http';
import { createMemoryStore } from '@idem/store-memory';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// idem mounted after a parser that decodes the body as UTF-8 (express.text(), express.json()):
// every invalid byte sequence becomes U+FFFD, so two different bodies decode to one string.
// Fingerprinting that string replayed one body's outcome for the other. Such a body is
// refused (BodyAlreadyReadError, 500, nothing run, no key taken) unless a reader kept its
// bytes as `req.rawBody` (a Buffer), which are then fingerprinted. Real Express on loopback.

const store = createMemoryStore();
let runs = 0;
const errors: unknown[] = [];
let server: Server;
let port = 0;

beforeAll(async () => {
  const app = express();
  // `/kept` keeps the bytes as req.rawBody (as NestJS's rawBody option does), `/text` and
  // `/json` keep nothing.
  const keep = (req: IncomingMessage, _res: unknown, buf: Buffer) => {
    (req as unknown as { rawBody: Buffer }).rawBody = Buffer.from(buf);
  };
  app.use('/kept', express.text({ verify: keep }));
  app.use('/text', express.text());
  app.use('/json', express.json());
  app.use(idempotency({ store, scope: 'global', onWarning: () => {} }));
  app.post(['/kept', '/text', '/json'], (_req, res) => {
    runs++;
    res.status(201).json({ run: runs });
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
const freshKey = () => `decoded-${process.pid}-${++counter}`;

function post(
  path: string,
  key: string,
  body: Buffer,
  type: string,
): Promise<{ status: number; body: string; replayed: boolean }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        host: '127.0.0.1',
        port,
        method: 'POST',
        path,
        agent: false,
        headers: {
          'content-type': type,
          'idempotency-key': key,
          'content-length': String(body.length),
        },
      },
      (res: IncomingMessage) => {
        const parts: Buffer[] = [];
        res.on('data', (chunk: Buffer) => parts.push(chunk));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            body: Buffer.concat(parts).toString(),
            replayed: res.headers['idempotent-replayed'] === 'true',
          }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

const invalid = (byte: number) => Buffer.from([0x61, byte, 0x62]);
const jsonWith = (byte: number) =>
  Buffer.concat([Buffer.from('{"to":"'), Buffer.from([byte]), Buffer.from('"}')]);

describe('a body decoded as UTF-8 before the middleware', () => {
  it('express.text(), invalid UTF-8: refused with BodyAlreadyReadError, nothing run, no key taken', async () => {
    const key = freshKey();
    const before = runs;
    const first = await post('/text', key, invalid(0xff), 'text/plain');
    const other = await post('/text', key, invalid(0xfe), 'text/plain');
    expect([first.status, other.status]).toEqual([500, 500]);
    expect(other.replayed).toBe(false);
    expect(JSON.parse(first.body).name).toBe('BodyAlreadyReadError');
    expect(JSON.parse(first.body).message).toMatch(/U\+FFFD/);
    expect(errors.at(-1)).toBeInstanceOf(BodyAlreadyReadError);
    expect(runs).toBe(before);
    // No key was taken: valid text under the same key runs once, then replays.
    const valid = await post('/text', key, Buffer.from('aéb'), 'text/plain');
    expect(valid.status).toBe(201);
    expect((await post('/text', key, Buffer.from('aéb'), 'text/plain')).replayed).toBe(true);
    expect(runs).toBe(before + 1);
  });

  it('express.json(), invalid UTF-8 in a string: refused, never replayed one for the other', async () => {
    const key = freshKey();
    const before = runs;
    const first = await post('/json', key, jsonWith(0xff), 'application/json');
    const other = await post('/json', key, jsonWith(0xfe), 'application/json');
    expect([first.status, other.status]).toEqual([500, 500]);
    expect(JSON.parse(other.body).name).toBe('BodyAlreadyReadError');
    expect(runs).toBe(before);
  });

  it('the bytes kept as req.rawBody (a Buffer): fingerprinted, the same bytes replay, others get 422', async () => {
    const key = freshKey();
    const before = runs;
    const first = await post('/kept', key, invalid(0xff), 'text/plain');
    expect(first.status).toBe(201);
    const again = await post('/kept', key, invalid(0xff), 'text/plain');
    expect(again.replayed).toBe(true);
    expect(again.body).toBe(first.body);
    expect((await post('/kept', key, invalid(0xfe), 'text/plain')).status).toBe(422);
    expect(runs).toBe(before + 1);
  });
});
