import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gzipSync } from 'node:zlib';
import { finalOnceStarted, type ResponsePolicy } from '@idem/http';
import { createMemoryStore } from '@idem/store-memory';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// The middleware mounted BEFORE the app's body parsers must leave the app exactly what those
// parsers (or their absence) would give it: it reads the body for the fingerprint only.

type Parsers = 'json' | 'text' | 'urlencoded' | 'raw' | 'none' | 'json-strict-limit';

function mountParsers(app: express.Express, parsers: Parsers): void {
  if (parsers === 'json') app.use(express.json());
  if (parsers === 'json-strict-limit') app.use(express.json({ limit: '10b' }));
  if (parsers === 'text') app.use(express.text());
  if (parsers === 'urlencoded') app.use(express.urlencoded());
  if (parsers === 'raw') app.use(express.raw());
}

/** What the route saw of the request body, as JSON both apps can be compared on. */
async function seen(req: express.Request): Promise<unknown> {
  const body: unknown = req.body;
  if (Buffer.isBuffer(body)) return { buffer: body.toString('base64') };
  if (body !== undefined) return { parsed: body };
  // No parser ran: the app reads the stream itself.
  const parts: Buffer[] = [];
  for await (const part of req) parts.push(part as Buffer);
  return { unparsed: Buffer.concat(parts).toString('base64') };
}

let runs = 0;

function createApp(
  parsers: Parsers,
  withIdempotency: boolean,
  isFinal?: ResponsePolicy,
): express.Express {
  const app = express();
  if (withIdempotency) {
    app.use(
      idempotency({
        store: createMemoryStore(),
        ...(isFinal ? { isFinal } : {}),
        scope: (req) => ({ principal: req.get('x-tenant') ?? 'tenant-a' }),
        onWarning: () => {},
      }),
    );
  }
  mountParsers(app, parsers);
  app.post('/charges', async (req, res) => {
    runs++;
    res.status(201).json({ seen: await seen(req) });
  });
  app.use(
    (
      error: { status?: number; type?: string },
      _req: express.Request,
      res: express.Response,
      _next: express.NextFunction,
    ) => {
      res.status(error.status ?? 500).json({ error: error.type ?? 'unknown' });
    },
  );
  return app;
}

const servers: Server[] = [];
async function listen(app: express.Express): Promise<string> {
  const server = app.listen(0, '127.0.0.1');
  servers.push(server);
  await new Promise<void>((resolve) => server.once('listening', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

function inParts(body: Buffer): ReadableStream<Uint8Array> {
  const third = Math.ceil(body.length / 3);
  let offset = 0;
  return new ReadableStream({
    async pull(controller) {
      if (offset >= body.length) return controller.close();
      if (offset > 0) await new Promise((resolve) => setTimeout(resolve, 20));
      controller.enqueue(body.subarray(offset, offset + third));
      offset += third;
    },
  });
}

interface Case {
  name: string;
  parsers: Parsers;
  headers: Record<string, string>;
  body: Buffer;
  /** Sent chunked, in three parts with pauses between them. */
  chunked?: boolean;
}

const json = { 'content-type': 'application/json' };
const big = Buffer.from('{"amount":12345678901234567890,"id":"x"}');
const cases: Case[] = [
  { name: 'JSON with an integer beyond 2^53', parsers: 'json', headers: json, body: big },
  { name: 'malformed JSON', parsers: 'json', headers: json, body: Buffer.from('{"amount":') },
  { name: 'JSON over the parser limit', parsers: 'json-strict-limit', headers: json, body: big },
  {
    name: 'gzipped JSON',
    parsers: 'json',
    headers: { ...json, 'content-encoding': 'gzip' },
    body: gzipSync('{"a":1}'),
  },
  {
    name: 'JSON larger than a stream buffer',
    parsers: 'json',
    headers: json,
    body: Buffer.from(JSON.stringify({ items: Array.from({ length: 12_000 }, (_, i) => i) })),
  },
  {
    name: 'text',
    parsers: 'text',
    headers: { 'content-type': 'text/plain' },
    body: Buffer.from('hello'),
  },
  {
    name: 'a form',
    parsers: 'urlencoded',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: Buffer.from('a=1&b=two'),
  },
  {
    name: 'raw bytes',
    parsers: 'raw',
    headers: { 'content-type': 'application/octet-stream' },
    body: Buffer.from([0, 255, 1, 254]),
  },
  { name: 'JSON without any parser', parsers: 'none', headers: json, body: big },
  { name: 'chunked JSON in parts', parsers: 'json', headers: json, body: big, chunked: true },
  { name: 'chunked, without any parser', parsers: 'none', headers: json, body: big, chunked: true },
  {
    name: 'an empty chunked body',
    parsers: 'json',
    headers: json,
    body: Buffer.alloc(0),
    chunked: true,
  },
  {
    name: 'JSON to a text-only parser',
    parsers: 'text',
    headers: json,
    body: Buffer.from('{"a":1}'),
  },
];

describe('@idem/express mounted before the body parsers', () => {
  const urls = new Map<string, { plain: string; guarded: string }>();
  beforeAll(async () => {
    for (const parsers of new Set(cases.map((c) => c.parsers))) {
      urls.set(parsers, {
        plain: await listen(createApp(parsers, false)),
        guarded: await listen(createApp(parsers, true)),
      });
    }
  });
  afterAll(async () => {
    await Promise.all(
      servers.map((server) => new Promise((resolve) => server.close(() => resolve(undefined)))),
    );
  });

  const post = async (url: string, c: Case, key?: string) => {
    const response = await fetch(`${url}/charges`, {
      method: 'POST',
      headers: { ...c.headers, ...(key ? { 'idempotency-key': key } : {}) },
      body: c.chunked ? inParts(c.body) : c.body,
      duplex: 'half',
    } as RequestInit);
    return { status: response.status, body: await response.json() };
  };

  it.each(cases)('hands the route what its parsers give it: $name', async (c) => {
    const { plain, guarded } = urls.get(c.parsers)!;
    const expected = await post(plain, c);
    const before = runs;
    const got = await post(guarded, c, `k-${cases.indexOf(c)}`);
    expect(got).toEqual(expected);
    // A retry replays a success and never runs the route again.
    const retry = await post(guarded, c, `k-${cases.indexOf(c)}`);
    expect(retry).toEqual(expected);
    expect(runs - before).toBe(expected.status === 201 ? 1 : 0);
  });

  it.each([
    ['finalOn2xx', undefined],
    ['finalOnceStarted', finalOnceStarted],
  ] as const)(
    'records nothing for the 400 of malformed JSON (%s): the key then serves the corrected request',
    async (_name, isFinal) => {
      const guarded = await listen(createApp('json', true, isFinal));
      const bad: Case = { name: 'bad', parsers: 'json', headers: json, body: Buffer.from('{"a":') };
      const good: Case = { ...bad, body: Buffer.from('{"a":1}') };
      expect((await post(guarded, bad, 'fix-me')).status).toBe(400);
      expect(await post(guarded, good, 'fix-me')).toEqual({
        status: 201,
        body: { seen: { parsed: { a: 1 } } },
      });
    },
  );

  it('answers 413 to a chunked body past maxBodyBytes and runs nothing', async () => {
    const app = express();
    app.use(
      idempotency({
        store: createMemoryStore(),
        scope: (req) => ({ principal: req.get('x-tenant') ?? 'tenant-a' }),
        maxBodyBytes: 1000,
        onWarning: () => {},
      }),
    );
    app.use(express.json());
    let ran = 0;
    app.post('/charges', (_req, res) => {
      ran++;
      res.status(201).json({ ran });
    });
    const url = await listen(app);
    const c: Case = { name: 'big', parsers: 'json', headers: json, body: big, chunked: true };
    const body = Buffer.from(JSON.stringify({ pad: 'x'.repeat(5000) }));
    const tooBig = await post(url, { ...c, body }, 'too-big');
    expect(tooBig).toMatchObject({ status: 413, body: { status: 413 } });
    // The connection and the key are still usable.
    expect((await post(url, c, 'too-big')).status).toBe(201);
    expect(ran).toBe(1);
  });
});
