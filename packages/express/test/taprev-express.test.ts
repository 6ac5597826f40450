import { randomUUID } from 'node:crypto';
import { Agent, IncomingMessage } from 'node:http';
import { brotliCompressSync, constants, deflateSync, gzipSync } from 'node:zlib';
import type { IdempotencyStore } from '@idem/core';
import { listening, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getIdempotency, idempotency } from '../src/index.js';

// taprev: attacks on the tap (the body of a keyed request kept as it comes off the connection,
// fingerprinted in place of what a parser before idem kept or made of it) through real Express
// parsers on loopback: framing (chunked, Content-Length, keep-alive), encodings, charsets,
// empty and oversized bodies, and that ordinary requests keep their fingerprints.

interface Reply {
  status: number;
  replayed: boolean;
  body: string;
}

let url = '';
let firstUrl = '';
let close: () => Promise<void> = async () => {};
let runs = 0;
let store: IdempotencyStore = createMemoryStore();
const fingerprints = new Map<string, string>();
const uncaught: unknown[] = [];
const onUncaught = (error: unknown) => uncaught.push(error);

/** One keyed POST: to the idem-first app under `/first`, else to the parsers-first one. */
async function raw(
  path: string,
  key: string,
  body: Buffer,
  headers: Record<string, string>,
  opts: { chunked?: boolean; agent?: Agent } = {},
): Promise<Reply> {
  const first = path.startsWith('/first');
  const exchange = await send(first ? firstUrl : url, path.replace(/^\/(first|after)/, ''), {
    key,
    body,
    headers,
    tenant: null,
    ...opts,
  });
  return {
    status: exchange.status,
    replayed: exchange.headers['idempotent-replayed'] !== undefined,
    body: exchange.body.toString(),
  };
}

beforeAll(async () => {
  process.on('uncaughtException', onUncaught);
  process.on('unhandledRejection', onUncaught);
  store = createMemoryStore();
  const route = (req: express.Request, res: express.Response) => {
    runs++;
    const context = getIdempotency(res);
    if (context) fingerprints.set(req.get('idempotency-key') ?? '', context.storageKey);
    res.status(201).json({ run: runs, body: req.body ?? null });
  };
  const onError = (
    error: Error,
    _req: express.Request,
    res: express.Response,
    _next: express.NextFunction,
  ) => {
    const status = (error as { status?: number }).status ?? 500;
    res.status(status).json({ name: error.name, message: error.message.slice(0, 500) });
  };
  // Two apps on one store, one path: idem first (it reads the bytes itself: the reference
  // fingerprints), and the parsers first.
  const first = express();
  first.use(idempotency({ store, scope: 'global', onWarning: () => {} }));
  first.use(express.text({ limit: '64mb' }));
  first.use(express.json());
  first.use(express.urlencoded({ extended: true }));
  first.post('/x', route);
  first.use(onError);
  const after = express();
  after.use(express.text({ limit: '64mb' }));
  after.use(express.json());
  after.use(
    express.urlencoded({
      extended: true,
      verify: (req, _res, buf) => {
        (req as unknown as { rawBody: Buffer }).rawBody = buf;
      },
    }),
  );
  after.use(idempotency({ store, scope: 'global', required: false, onWarning: () => {} }));
  after.post('/x', route);
  after.post('/probe', (req, res) => {
    const tap = (req as unknown as Record<symbol, unknown>)[Symbol.for('idem.requestBodyTap')];
    res.status(201).json({
      tapped: tap !== undefined,
      // Put back at the end of the body, as the prototype's.
      ownPush: Object.hasOwn(req, 'push'),
      push: req.push === IncomingMessage.prototype.push,
      // Nothing kept once idem read the body.
      kept: (tap as { parts?: unknown[] } | undefined)?.parts?.length ?? 0,
    });
  });
  after.use(onError);
  const [one, two] = await Promise.all([
    listening(first.listen(0, '127.0.0.1')),
    listening(after.listen(0, '127.0.0.1')),
  ]);
  firstUrl = one.url;
  url = two.url;
  close = async () => {
    await Promise.all([one.close(), two.close()]);
  };
});
afterAll(async () => {
  await close();
  process.off('uncaughtException', onUncaught);
  process.off('unhandledRejection', onUncaught);
});

const TEXT = { 'content-type': 'text/plain' };
const JSON_TYPE = { 'content-type': 'application/json' };
const FORM = { 'content-type': 'application/x-www-form-urlencoded' };
const BOM = Buffer.from([0xef, 0xbb, 0xbf]);

/** The stored fingerprint of the record `key` made (its first request ran). */
async function storedFingerprint(key: string): Promise<string> {
  const storageKey = fingerprints.get(key);
  expect(storageKey).toBeDefined();
  const record = await store.get(storageKey as string);
  expect(record?.fingerprint).toMatch(/\S/);
  return record?.fingerprint as string;
}

/**
 * Under one fresh key: `one` runs (201), `one` again is replayed, `two` is told apart (422,
 * never replayed); one run in all.
 */
async function expectTold(
  [one, two]: readonly [Buffer, Buffer],
  headers: Record<string, string>,
  chunked = false,
) {
  const key = randomUUID();
  const before = runs;
  const seen: [number, boolean][] = [];
  for (const body of [one, one, two]) {
    const reply = await raw('/after/x', key, body, headers, { chunked });
    seen.push([reply.status, reply.replayed]);
  }
  expect(seen).toEqual([
    [201, false],
    [201, true],
    [422, false],
  ]);
  expect(runs - before).toBe(1);
}

describe('taprev express: ordinary requests keep their fingerprints (mount order does not matter)', () => {
  for (const [name, body, headers] of [
    ['JSON', Buffer.from('{"b":2,"a":[1,"x"]}'), JSON_TYPE],
    ['text', Buffer.from('pay 10 \u00e9'), TEXT],
    ['a form kept as req.rawBody', Buffer.from('to=alice&amount=1'), FORM],
  ] as const) {
    for (const chunked of [false, true]) {
      it(`${name}${chunked ? ', chunked' : ''}: parser first and idem first store one fingerprint`, async () => {
        const keyFirst = randomUUID();
        const keyAfter = randomUUID();
        expect((await raw('/first/x', keyFirst, body, headers, { chunked })).status).toBe(201);
        expect((await raw('/after/x', keyAfter, body, headers, { chunked })).status).toBe(201);
        expect(await storedFingerprint(keyAfter)).toBe(await storedFingerprint(keyFirst));
      });
    }
  }
});

describe('taprev express: framing', () => {
  it('text sent chunked, then with a Content-Length, under one key: replayed (the same bytes)', async () => {
    const key = randomUUID();
    const body = Buffer.concat([BOM, Buffer.from('pay 10')]);
    expect((await raw('/after/x', key, body, TEXT, { chunked: true })).status).toBe(201);
    // With a Content-Length, the stripped BOM is refused before the tap is looked at.
    const counted = await raw('/after/x', key, body, TEXT);
    expect([counted.status, counted.replayed]).toEqual([500, false]);
    const plain = Buffer.from('pay 10 \u00e9');
    const other = randomUUID();
    expect((await raw('/after/x', other, plain, TEXT, { chunked: true })).status).toBe(201);
    const again = await raw('/after/x', other, plain, TEXT);
    expect([again.status, again.replayed]).toEqual([201, true]);
  });

  it('keep-alive: two keyed bodies on one connection are each their own bytes', async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      for (let i = 0; i < 3; i++) {
        const key = randomUUID();
        const before = runs;
        const one = Buffer.concat([BOM, Buffer.from(`pay ${i}`)]);
        const two = Buffer.from(`pay ${i}`);
        expect((await raw('/after/x', key, one, TEXT, { chunked: true, agent })).status).toBe(201);
        const other = await raw('/after/x', key, two, TEXT, { chunked: true, agent });
        expect([other.status, other.replayed]).toEqual([422, false]);
        expect(runs).toBe(before + 1);
      }
    } finally {
      agent.destroy();
    }
  });

  it('a chunked body with no byte is none: replayed for Content-Length: 0 under the same key', async () => {
    const key = randomUUID();
    expect((await raw('/after/x', key, Buffer.alloc(0), TEXT, { chunked: true })).status).toBe(201);
    const again = await raw('/after/x', key, Buffer.alloc(0), TEXT);
    expect([again.status, again.replayed]).toEqual([201, true]);
    // A body that is not empty is another request.
    const other = await raw('/after/x', key, Buffer.from('x'), TEXT, { chunked: true });
    expect([other.status, other.replayed]).toEqual([422, false]);
  });

  it('held: a chunked form that parses to {} ("=1") is still not a body-less one', async () => {
    const key = randomUUID();
    expect((await raw('/first/x', key, Buffer.alloc(0), FORM, { chunked: true })).status).toBe(201);
    const other = await raw('/first/x', key, Buffer.from('=1'), FORM, { chunked: true });
    expect([other.status, other.replayed]).toEqual([422, false]);
  });
});

describe('taprev express: encodings the parser inflates', () => {
  const encoders = [
    ['gzip', gzipSync],
    ['deflate', deflateSync],
    ['br', brotliCompressSync],
  ] as const;
  for (const [name, encode] of encoders) {
    it(`${name}: a leading BOM and none are told apart; the same text at another level replays`, async () => {
      const headers = { ...TEXT, 'content-encoding': name };
      await expectTold(
        [encode(Buffer.concat([BOM, Buffer.from('pay 10')])), encode(Buffer.from('pay 10'))],
        headers,
      );
      const key = randomUUID();
      const text = Buffer.from('pay 20');
      expect((await raw('/after/x', key, encode(text), headers, { chunked: true })).status).toBe(
        201,
      );
      const relevel =
        name === 'br'
          ? brotliCompressSync(text, { params: { [constants.BROTLI_PARAM_QUALITY]: 1 } })
          : encode(text, { level: 1 });
      const again = await raw('/after/x', key, relevel, headers);
      expect([again.status, again.replayed]).toEqual([201, true]);
    });
  }

  it('gzip JSON after express.json(): a repeated member name and the name once are told apart', async () => {
    const headers = { ...JSON_TYPE, 'content-encoding': 'gzip' };
    await expectTold(
      [
        gzipSync(Buffer.from('{"to":"alice","to":"mallory"}')),
        gzipSync(Buffer.from('{"to":"mallory"}')),
      ],
      headers,
    );
    // The same JSON spelled otherwise is still one request.
    const key = randomUUID();
    expect(
      (await raw('/after/x', key, gzipSync(Buffer.from('{"a":1,"b":2}')), headers)).status,
    ).toBe(201);
    const again = await raw('/after/x', key, gzipSync(Buffer.from('{ "b":2, "a":1 }')), headers);
    expect([again.status, again.replayed]).toEqual([201, true]);
  });

  it('gzip: the inflated bytes are the fingerprint idem first takes of the plain body', async () => {
    const text = Buffer.from('pay 30');
    const keyFirst = randomUUID();
    const keyAfter = randomUUID();
    expect((await raw('/first/x', keyFirst, text, TEXT)).status).toBe(201);
    const zipped = { ...TEXT, 'content-encoding': 'gzip' };
    expect((await raw('/after/x', keyAfter, gzipSync(text), zipped)).status).toBe(201);
    expect(await storedFingerprint(keyAfter)).toBe(await storedFingerprint(keyFirst));
  });

  it('a 9 KB gzip of 8 MB (the parser takes 64 MB) is 413 within 2 s of CPU, nothing run', async () => {
    const before = runs;
    const bomb = gzipSync(Buffer.alloc(8 * 1024 * 1024, 0x61));
    const cpu = process.cpuUsage();
    const r = await raw('/after/x', randomUUID(), bomb, { ...TEXT, 'content-encoding': 'gzip' });
    const spent = process.cpuUsage(cpu);
    expect(r.status).toBe(413);
    expect((spent.user + spent.system) / 1_000).toBeLessThan(2_000);
    expect(runs).toBe(before);
  });

  it('chunked text past maxBodyBytes (the parser takes 64 MB) is 413, nothing run', async () => {
    const before = runs;
    const r = await raw('/after/x', randomUUID(), Buffer.alloc(1_100_000, 0x61), TEXT, {
      chunked: true,
    });
    expect(r.status).toBe(413);
    expect(runs).toBe(before);
  });
});

describe('taprev express: what the tap leaves behind', () => {
  it('a keyed body: its push is put back at its end, nothing kept once idem read it', async () => {
    const key = randomUUID();
    const r = await raw('/after/probe', key, Buffer.from('pay 1'), TEXT, { chunked: true });
    expect(JSON.parse(r.body)).toEqual({ tapped: true, ownPush: true, push: true, kept: 0 });
  });

  it('a request without a key is never tapped', async () => {
    const exchange = await send(url, '/probe', {
      body: Buffer.from('pay 1'),
      headers: TEXT,
      tenant: null,
    });
    expect(JSON.parse(exchange.body.toString())).toEqual({
      tapped: false,
      ownPush: false,
      push: true,
      kept: 0,
    });
  });
});

describe('taprev express: what the checks refuse stays refused (the tap adds no acceptance)', () => {
  it('held: text under charset=iso-8859-1 is refused, chunked or not', async () => {
    const type = { 'content-type': 'text/plain; charset=iso-8859-1' };
    for (const chunked of [false, true]) {
      const r = await raw('/after/x', randomUUID(), Buffer.from([0x63, 0xe9]), type, { chunked });
      expect(r.status).toBe(500);
      expect(JSON.parse(r.body).name).toBe('BodyAlreadyReadError');
    }
  });

  it('held: text with invalid UTF-8 (U+FFFD after the parser) is refused, chunked too', async () => {
    const r = await raw('/after/x', randomUUID(), Buffer.from([0xff, 0x61]), TEXT, {
      chunked: true,
    });
    expect(r.status).toBe(500);
  });

  it('held: no uncaught exception or unhandled rejection in this file', () => {
    expect(uncaught).toEqual([]);
  });
});
