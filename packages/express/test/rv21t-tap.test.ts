import { randomUUID } from 'node:crypto';
import { connect } from 'node:net';
import { gzipSync } from 'node:zlib';
import type { IdempotencyStore } from '@idem/core';
import { releaseTap } from '@idem/http/node';
import { listening, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { timedOnCpu } from '../../../scripts/loop-lateness.js';
import { idempotency } from '../src/index.js';

// rv21t: adversarial review of the request-body tap (`tapRequestBodies`) through real Express
// servers on loopback: which request the tapped chunks belong to (pipelined keep-alive,
// Expect: 100-continue, aborted uploads), what a parser that transforms can still hide, how
// apps with other options in one process see each other's taps, and what the tap keeps or
// spends (a 1 GiB-inflating body, bodies nobody reads).

const TAP = Symbol.for('idem.requestBodyTap');
const REGISTRY = Symbol.for('idem.requestBodyTap.registry');

interface Reply {
  status: number;
  replayed: boolean;
  body: string;
}

let store: IdempotencyStore = createMemoryStore();
let runs = 0;
const urls: Record<string, string> = {};
const closers: Array<() => Promise<void>> = [];
const uncaught: unknown[] = [];
const onUncaught = (error: unknown) => uncaught.push(error);

async function post(
  app: string,
  path: string,
  key: string | null,
  body: Buffer,
  headers: Record<string, string>,
  opts: { chunked?: boolean } = {},
): Promise<Reply> {
  const exchange = await send(urls[app] as string, path, {
    key,
    body,
    headers,
    tenant: null,
    timeoutMs: 10_000,
    ...opts,
  });
  return {
    status: exchange.status,
    replayed: exchange.headers['idempotent-replayed'] !== undefined,
    body: exchange.body.toString(),
  };
}

/** What a keyed request's tap holds when the route looks (no idem read it). */
function tapState(req: express.Request): { tapped: boolean; kept: number } {
  const tap = (req as unknown as Record<symbol, { parts?: Buffer[] } | undefined>)[TAP];
  let kept = 0;
  for (const part of tap?.parts ?? []) kept += part.length;
  return { tapped: tap !== undefined, kept };
}

const onError = (
  error: Error,
  _req: express.Request,
  res: express.Response,
  _next: express.NextFunction,
) => {
  const status = (error as { status?: number }).status ?? 500;
  res.status(status).json({ name: error.name, message: error.message.slice(0, 300) });
};

const route = (req: express.Request, res: express.Response) => {
  runs++;
  res.status(201).json({ run: runs, body: req.body ?? null });
};

async function serve(name: string, app: express.Express) {
  app.use(onError);
  const running = await listening(app.listen(0, '127.0.0.1'));
  urls[name] = running.url;
  closers.push(running.close);
}

beforeAll(async () => {
  process.on('uncaughtException', onUncaught);
  process.on('unhandledRejection', onUncaught);
  store = createMemoryStore();

  // The usual app: parsers first, then idem.
  const main = express();
  main.use(express.text({ limit: '64mb' }));
  main.use(express.json());
  main.use(idempotency({ store, scope: 'global', required: false, onWarning: () => {} }));
  main.post('/x', route);
  await serve('main', main);

  // A form parser told to parse every type (what the tap is there for), idem after it.
  const form = express();
  form.use(express.urlencoded({ extended: true, type: '*/*' }));
  form.use(idempotency({ store, scope: 'global', onWarning: () => {} }));
  form.post('/x', route);
  await serve('form', form);

  // Another app in the process: its own header, methods and a small limit.
  const small = express();
  small.use(express.text({ limit: '64mb' }));
  small.use(
    idempotency({
      store,
      scope: 'global',
      headerName: 'X-Small-Key',
      methods: ['PUT'],
      maxBodyBytes: 16,
      required: false,
      onWarning: () => {},
    }),
  );
  small.put('/x', route);
  small.post('/x', route);
  await serve('small', small);

  // A middleware that peeks at the first chunk and puts it back (`unshift`), then the text
  // parser, then idem.
  const peeker = express();
  peeker.use((req, _res, next) => {
    if (
      req.headers['transfer-encoding'] === undefined &&
      req.headers['content-length'] === undefined
    )
      return next();
    req.once('readable', () => {
      const chunk = req.read() as Buffer | null;
      if (chunk !== null) req.unshift(chunk);
      next();
    });
  });
  peeker.use(express.text());
  peeker.use(idempotency({ store, scope: 'global', onWarning: () => {} }));
  peeker.post('/x', route);
  await serve('peeker', peeker);

  // The main app's header and methods, a 16-byte limit.
  const tiny = express();
  tiny.use(express.text({ limit: '64mb' }));
  tiny.use(idempotency({ store, scope: 'global', maxBodyBytes: 16, onWarning: () => {} }));
  tiny.post('/x', route);
  await serve('tiny', tiny);

  // A reader that keeps the bytes as sent (no inflating) as req.rawBody, then idem.
  const rawKeeper = express();
  rawKeeper.use((req, _res, next) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const bytes = Buffer.concat(chunks);
      (req as unknown as { rawBody: Buffer }).rawBody = bytes;
      req.body = bytes;
      next();
    });
  });
  rawKeeper.use(
    idempotency({ store, scope: 'global', maxBodyBytes: 2 * 1_048_576, onWarning: () => {} }),
  );
  rawKeeper.post('/x', route);
  await serve('rawKeeper', rawKeeper);

  // No idem at all: a route that streams the body away, and one that never reads it.
  const plain = express();
  // Streams the body away (after `releaseTap` when told to), then says what the tap kept.
  const streamAway = (release: boolean) => (req: express.Request, res: express.Response) => {
    if (release) releaseTap(req);
    let seen = 0;
    req.on('data', (chunk: Buffer) => {
      seen += chunk.length;
    });
    req.on('end', () => res.status(200).json({ seen, ...tapState(req) }));
  };
  plain.post('/stream', streamAway(false));
  plain.post('/stream-released', streamAway(true));
  plain.post('/unread', (req, res) => {
    setTimeout(() => res.status(200).json(tapState(req)), 300);
  });
  plain.post('/push', (req, res) => {
    res.status(200).json({ ownPush: Object.hasOwn(req, 'push'), ...tapState(req) });
  });
  await serve('plain', plain);
});

afterAll(async () => {
  await Promise.all(closers.map((close) => close()));
  process.off('uncaughtException', onUncaught);
  process.off('unhandledRejection', onUncaught);
});

const TEXT = { 'content-type': 'text/plain' };
const JSON_TYPE = { 'content-type': 'application/json' };

/** Raw HTTP/1.1 exchange on one connection: `write` it all, read `count` responses. */
function rawExchange(
  app: string,
  steps: Array<Buffer | { waitFor: string } | { destroy: true }>,
  count: number,
): Promise<Array<{ status: number; headers: string; body: string }>> {
  const { port } = new URL(urls[app] as string);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), '127.0.0.1');
    let received = Buffer.alloc(0);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`raw exchange timed out: ${received.toString().slice(0, 300)}`));
    }, 10_000);
    const responses: Array<{ status: number; headers: string; body: string }> = [];
    let waiting: { text: string; go: () => void } | undefined;
    const parse = () => {
      for (;;) {
        const text = received.toString('latin1');
        if (waiting && text.includes(waiting.text)) {
          const at = text.indexOf(waiting.text) + waiting.text.length;
          received = received.subarray(at);
          const go = waiting.go;
          waiting = undefined;
          go();
          continue;
        }
        const end = text.indexOf('\r\n\r\n');
        if (end < 0 || waiting) return;
        const head = text.slice(0, end);
        if (/^HTTP\/1\.1 100/.test(head)) {
          received = received.subarray(end + 4);
          continue;
        }
        const length = Number(/content-length: *(\d+)/i.exec(head)?.[1] ?? 0);
        if (received.length < end + 4 + length) return;
        responses.push({
          status: Number(head.slice(9, 12)),
          headers: head,
          body: received.subarray(end + 4, end + 4 + length).toString(),
        });
        received = received.subarray(end + 4 + length);
        if (responses.length === count) {
          clearTimeout(timer);
          socket.end();
          resolve(responses);
          return;
        }
      }
    };
    socket.on('data', (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      parse();
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(timer);
      if (responses.length < count) resolve(responses);
    });
    const run = (i: number) => {
      const step = steps[i];
      if (step === undefined) return;
      if (Buffer.isBuffer(step)) {
        socket.write(step);
        run(i + 1);
      } else if ('waitFor' in step) {
        waiting = { text: step.waitFor, go: () => run(i + 1) };
        parse();
      } else {
        setTimeout(() => socket.destroy(), 50);
      }
    };
    socket.on('connect', () => run(0));
  });
}

function request(key: string, body: string, extra = ''): Buffer {
  return Buffer.from(
    `POST /x HTTP/1.1\r\nHost: a\r\nIdempotency-Key: ${key}\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${extra}\r\n${body}`,
  );
}

function chunkedRequest(key: string, parts: string[]): Buffer {
  const chunks = parts.map((p) => `${Buffer.byteLength(p).toString(16)}\r\n${p}\r\n`).join('');
  return Buffer.from(
    `POST /x HTTP/1.1\r\nHost: a\r\nIdempotency-Key: ${key}\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n${chunks}0\r\n\r\n`,
  );
}

describe('rv21t express: which request the tapped chunks belong to', () => {
  it('pipelined keep-alive: three keyed bodies in one write are each fingerprinted as their own', async () => {
    const keys = [randomUUID(), randomUUID(), randomUUID()];
    const bodies = ['\ufeffalpha', 'beta-longer-body', '\ufeffgamma'];
    const before = runs;
    const replies = await rawExchange(
      'main',
      [
        Buffer.concat([
          chunkedRequest(keys[0] as string, [bodies[0] as string]),
          request(keys[1] as string, bodies[1] as string),
          chunkedRequest(keys[2] as string, ['\ufeffga', 'mma']),
        ]),
      ],
      3,
    );
    expect(replies.map((r) => r.status)).toEqual([201, 201, 201]);
    expect(runs - before).toBe(3);
    // Each key's retry with its own body replays; with a neighbour's body it is 422.
    for (let i = 0; i < 3; i++) {
      const own = await post(
        'main',
        '/x',
        keys[i] as string,
        Buffer.from(bodies[i] as string),
        TEXT,
        {
          chunked: true,
        },
      );
      expect([own.status, own.replayed]).toEqual([201, true]);
      const other = await post(
        'main',
        '/x',
        keys[i] as string,
        Buffer.from(bodies[(i + 1) % 3] as string),
        TEXT,
        { chunked: true },
      );
      expect(other.status).toBe(422);
    }
    expect(runs - before).toBe(3);
  });

  it('Expect: 100-continue: the body sent after the interim answer is tapped; a BOM tells it apart', async () => {
    const key = randomUUID();
    const before = runs;
    const body = '\ufeffpay 10';
    const head = Buffer.from(
      `POST /x HTTP/1.1\r\nHost: a\r\nIdempotency-Key: ${key}\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n`,
    );
    const chunk = Buffer.from(`${Buffer.byteLength(body).toString(16)}\r\n${body}\r\n0\r\n\r\n`);
    const [reply] = await rawExchange(
      'main',
      [head, { waitFor: '100 Continue\r\n\r\n' }, chunk],
      1,
    );
    expect(reply?.status).toBe(201);
    const same = await post('main', '/x', key, Buffer.from(body), TEXT, { chunked: true });
    expect([same.status, same.replayed]).toEqual([201, true]);
    // The text parser strips the BOM: the same text without it is another body.
    const stripped = await post('main', '/x', key, Buffer.from('pay 10'), TEXT, { chunked: true });
    expect(stripped.status).toBe(422);
    expect(runs - before).toBe(1);
  });

  it('an aborted upload runs nothing; the whole body after it runs once, then replays', async () => {
    const key = randomUUID();
    const before = runs;
    const full = 'x'.repeat(100);
    const head = Buffer.from(
      `POST /x HTTP/1.1\r\nHost: a\r\nIdempotency-Key: ${key}\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n${'x'.repeat(50)}`,
    );
    const replies = await rawExchange('main', [head, { destroy: true }], 1);
    expect(replies).toEqual([]);
    expect(runs - before).toBe(0);
    const first = await post('main', '/x', key, Buffer.from(full), TEXT);
    expect([first.status, first.replayed]).toEqual([201, false]);
    const again = await post('main', '/x', key, Buffer.from(full), TEXT, { chunked: true });
    expect([again.status, again.replayed]).toEqual([201, true]);
    expect(runs - before).toBe(1);
  });

  it('a peek that puts the first chunk back (unshift): each byte tapped once, a BOM told apart', async () => {
    const key = randomUUID();
    const before = runs;
    const body = Buffer.from('\ufeffpay 10 to alice');
    const first = await post('peeker', '/x', key, body, TEXT, { chunked: true });
    expect([first.status, first.replayed]).toEqual([201, false]);
    const again = await post('peeker', '/x', key, body, TEXT, { chunked: true });
    expect([again.status, again.replayed]).toEqual([201, true]);
    const stripped = await post('peeker', '/x', key, Buffer.from('pay 10 to alice'), TEXT, {
      chunked: true,
    });
    expect(stripped.status).toBe(422);
    expect(runs - before).toBe(1);
  });

  it('the same JSON sent gzip, then plain, then chunked: one request (replayed)', async () => {
    const key = randomUUID();
    const before = runs;
    const body = Buffer.from('{"to":"alice","amount":10}');
    const zipped = await post('main', '/x', key, gzipSync(body), {
      ...JSON_TYPE,
      'content-encoding': 'gzip',
    });
    expect([zipped.status, zipped.replayed]).toEqual([201, false]);
    const plainReply = await post('main', '/x', key, body, JSON_TYPE);
    expect([plainReply.status, plainReply.replayed]).toEqual([201, true]);
    const chunked = await post('main', '/x', key, body, JSON_TYPE, { chunked: true });
    expect([chunked.status, chunked.replayed]).toEqual([201, true]);
    expect(runs - before).toBe(1);
  });
});

describe('rv21t express: a parser that transforms', () => {
  // FINDING (MEDIUM): `tappedUnlessJson` trusts the parser's object for a body labelled JSON
  // whose bytes start with `{` or `[`, without checking that a JSON parser made it. A form
  // parser told to parse every type (`express.urlencoded({ type: '*\/*' })`, the case the tap
  // was added for) makes `{"a":1}&=2` and `{"a":1}&=9` (the empty-named pair dropped) one
  // object: two different bodies under one key are one request, the second replayed.
  it('a form parser under every type: `{`-led bodies labelled JSON that differ are 422', async () => {
    const key = randomUUID();
    const before = runs;
    const one = await post('form', '/x', key, Buffer.from('{"a":1}&=2'), JSON_TYPE);
    expect([one.status, one.replayed]).toEqual([201, false]);
    const same = await post('form', '/x', key, Buffer.from('{"a":1}&=2'), JSON_TYPE);
    expect([same.status, same.replayed]).toEqual([201, true]);
    const other = await post('form', '/x', key, Buffer.from('{"a":1}&=9'), JSON_TYPE);
    expect([other.status, other.replayed]).toEqual([422, false]);
    expect(runs - before).toBe(1);
  });

  // Fixed with the finding above (the bytes, when tapped, for a JSON object too): what
  // express.json()'s value loses no longer makes two bodies one request over HTTP/1.
  for (const [name, one, two] of [
    ['a repeated member name', '{"a":1,"a":2}', '{"a":2}'],
    ['an integer past 2^53', '{"n":9007199254740993}', '{"n":9007199254740992}'],
  ] as const) {
    it(`express.json() before idem: ${name} is told apart (422), the same bytes replay`, async () => {
      const key = randomUUID();
      const before = runs;
      const first = await post('main', '/x', key, Buffer.from(one), JSON_TYPE);
      expect([first.status, first.replayed]).toEqual([201, false]);
      const same = await post('main', '/x', key, Buffer.from(one), JSON_TYPE, { chunked: true });
      expect([same.status, same.replayed]).toEqual([201, true]);
      const other = await post('main', '/x', key, Buffer.from(two), JSON_TYPE);
      expect([other.status, other.replayed]).toEqual([422, false]);
      expect(runs - before).toBe(1);
    });
  }

  it('express.json() before idem: the same JSON spaced or ordered otherwise is one request', async () => {
    const key = randomUUID();
    const before = runs;
    const first = await post('main', '/x', key, Buffer.from('{"a":1,"b":[1,2]}'), JSON_TYPE);
    expect([first.status, first.replayed]).toEqual([201, false]);
    const spaced = await post('main', '/x', key, Buffer.from(' { "b" : [1, 2], "a" : 1 }\n'), {
      ...JSON_TYPE,
    });
    expect([spaced.status, spaced.replayed]).toEqual([201, true]);
    expect(runs - before).toBe(1);
  });
});

describe('rv21t express: apps with other options in one process', () => {
  it("the small app's 16-byte limit: 413 there, while the main app takes 100 bytes under its key", async () => {
    const body = Buffer.from('y'.repeat(100));
    const big = await post('main', '/x', randomUUID(), body, TEXT, { chunked: true });
    expect(big.status).toBe(201);
    const keyed = await send(urls.small as string, '/x', {
      method: 'PUT',
      key: null,
      body,
      headers: { ...TEXT, 'x-small-key': randomUUID() },
      tenant: null,
      chunked: true,
    });
    expect(keyed.status).toBe(413);
    // A POST (not a method of the small app) with its header: not idem's, runs.
    const notOurs = await post(
      'small',
      '/x',
      null,
      body,
      { ...TEXT, 'x-small-key': 'k' },
      {
        chunked: true,
      },
    );
    expect(notOurs.status).toBe(201);
    // Its header on the main app, over its limit: the main app takes the POST unkeyed.
    const other = await post('main', '/x', null, body, { ...TEXT, 'x-small-key': 'k' });
    expect(other.status).toBe(201);
  });

  it('the same header and methods at 16 bytes and at the default: each app keeps its own limit', async () => {
    const body = Buffer.from('w'.repeat(100));
    for (const chunked of [false, true]) {
      expect((await post('tiny', '/x', randomUUID(), body, TEXT, { chunked })).status).toBe(413);
      expect((await post('main', '/x', randomUUID(), body, TEXT, { chunked })).status).toBe(201);
    }
    const small = Buffer.from('0123456789');
    const key = randomUUID();
    expect((await post('tiny', '/x', key, small, TEXT, { chunked: true })).status).toBe(201);
    const again = await post('tiny', '/x', key, small, TEXT);
    expect([again.status, again.replayed]).toEqual([201, true]);
  });

  // Was FINDING (LOW), fixed: every distinct maxBodyBytes added a rule for good, each read for
  // every request with a body in the process: apps made with ever other limits (one for each
  // tenant, or made for each request) grew the registry and the cost of every request without
  // bound. One rule a header and set of methods now, at the largest limit.
  it('apps made with 200 different limits and one header and methods add at most one rule', () => {
    const registry = () =>
      (globalThis as Record<symbol, { rules: Map<string, unknown> }>)[REGISTRY];
    const before = registry()?.rules.size ?? 0;
    for (let i = 0; i < 200; i++)
      idempotency({ store, scope: 'global', maxBodyBytes: 1_000 + i, onWarning: () => {} });
    expect(registry()?.rules.size).toBeLessThanOrEqual(before + 1);
  });

  it('an app made again and again with one set of options adds one rule, not one per app', () => {
    const registry = (globalThis as Record<symbol, { rules: Map<string, unknown> }>)[REGISTRY];
    const before = registry?.rules.size ?? 0;
    for (let i = 0; i < 200; i++)
      idempotency({
        store,
        scope: 'global',
        headerName: 'X-Rv21-Again',
        maxBodyBytes: 12_345,
        onWarning: () => {},
      });
    const after = (globalThis as Record<symbol, { rules: Map<string, unknown> }>)[REGISTRY]?.rules
      .size;
    expect(after).toBe(before + 1);
  });
});

describe('rv21t express: a reader that keeps the bytes as sent (no inflating)', () => {
  // Was FINDING (LOW), fixed (kept bytes equal to the bytes as sent under an encoding are
  // taken as they are, not inflated): the tap inflated a body labelled gzip for every reader,
  // and took one whose bytes do not inflate as sent: for a reader that keeps the bytes as sent
  // without inflating (its own `req.rawBody`), `hello` labelled gzip and gzip(`hello`)
  // labelled gzip were one request, though the app got different bytes (idem first
  // fingerprints them apart). The parsers refuse the first (400), so only a non-inflating
  // reader meets it.
  it('`hello` labelled gzip, then gzip(`hello`), under one key: 422', async () => {
    const key = randomUUID();
    const before = runs;
    const headers = { 'content-type': 'application/octet-stream', 'content-encoding': 'gzip' };
    const first = await post('rawKeeper', '/x', key, Buffer.from('hello'), headers);
    expect([first.status, first.replayed]).toEqual([201, false]);
    const other = await post('rawKeeper', '/x', key, gzipSync('hello'), headers);
    expect([other.status, other.replayed]).toEqual([422, false]);
    expect(runs - before).toBe(1);
  });
});

describe('rv21t express: time and memory', () => {
  // Was: 413 (the tap inflated the bytes as sent, bounded, before it compared them with what
  // the reader kept). edgerev22: bytes kept as sent are compared first, so a reader that does
  // not inflate keeps its 1 MB as the body (it never saw a GiB): taken, run once, nothing
  // inflated at all. A reader that inflates is refused past the limit as before, with only
  // maxBodyBytes + 1 inflated (http/test/edgerev22-review.test.ts).
  it('a 1 GiB-inflating gzip kept as sent (2 MiB limit) by a reader that does not inflate: taken as kept, with well under a second of CPU', async () => {
    const member = gzipSync(Buffer.alloc(64 * 1_048_576));
    // 16 gzip members of 64 MiB of zeros each: 1 GiB inflated, about 1 MB as sent.
    const bomb = Buffer.concat(Array.from({ length: 16 }, () => member));
    expect(bomb.length).toBeLessThan(2 * 1_048_576);
    const before = runs;
    const { result, cpuMs } = await timedOnCpu(() =>
      post('rawKeeper', '/x', randomUUID(), bomb, {
        'content-type': 'application/octet-stream',
        'content-encoding': 'gzip',
      }),
    );
    expect([result.status, result.replayed]).toEqual([201, false]);
    expect(runs - before).toBe(1);
    // Inflating the whole GiB takes seconds; nothing is inflated.
    expect(cpuMs).toBeLessThan(1_000);
  });

  // FINDING (LOW): a keyed request to a route no idem middleware reads keeps its whole body
  // (up to the largest maxBodyBytes of any idem app in the process) referenced from the
  // request for as long as the request lives, even when the route streamed the bytes away:
  // an upload route that holds each request open multiplies memory by the body size. Left
  // open (documented in the @idem/http README, with the workaround below): at the request's
  // start nothing tells which route, if any, will read it, and releasing later on what the
  // app shows breaks the tap where it is needed: an `app.all('/api/*', auth)` route is
  // dispatched (req.route set, no idem in it) while the body arrives for an app-level idem
  // after the parsers; an idem behind a wrapper (`unless(idem)`) or in a mounted sub-app is
  // not in the router's stacks; a NestJS interceptor reads the tap from inside the route's
  // handler. Each would fingerprint what the parser kept instead of the bytes (a BOM, a
  // prefix, a form's dropped pairs) on a guess. (edgefix, looked at again: the stream does not
  // tell either. A parser before idem reads the body as this route does, by 'data' events
  // (raw-body; multer pipes it into busboy), and what it kept, the one thing the tapped bytes
  // are used with, is not there yet when the body ends: a parser sets it after an await
  // (co-body under Koa, an async Fastify parser), and this route's own 'end' listener, where
  // the bytes are to be gone, runs before any check the tap could make after the end.)
  const UPLOAD = Buffer.alloc(900 * 1024, 0x61);
  /** A keyed 900 KiB upload to a route of the app without idem: what its route saw and the tap kept. */
  const upload = async (path: string) => {
    const reply = await send(urls.plain as string, path, {
      key: randomUUID(),
      body: UPLOAD,
      headers: TEXT,
      tenant: null,
    });
    return JSON.parse(reply.body.toString()) as { seen: number; tapped: boolean; kept: number };
  };

  it.fails('a keyed upload a route without idem streamed away is not kept by the tap', async () => {
    const seen = await upload('/stream');
    expect(seen.seen).toBe(UPLOAD.length);
    expect(seen.kept).toBe(0);
  });

  it('the workaround: a route that streams a keyed upload away calls releaseTap(req) first, nothing is kept', async () => {
    expect(await upload('/stream-released')).toEqual({
      seen: UPLOAD.length,
      tapped: true,
      kept: 0,
    });
  });

  it('a keyed body nobody reads: the tap keeps no more than the socket gave before backpressure', async () => {
    const body = Buffer.alloc(1_000_000, 0x62);
    const reply = await send(urls.plain as string, '/unread', {
      key: randomUUID(),
      body,
      headers: TEXT,
      tenant: null,
      timeoutMs: 10_000,
    });
    const state = JSON.parse(reply.body.toString()) as { tapped: boolean; kept: number };
    expect(state.tapped).toBe(true);
    expect(state.kept).toBeLessThanOrEqual(256 * 1024);
  });
});

describe('rv21t express: what the tap leaves alone', () => {
  it('an unkeyed request, and a keyed GET: never tapped, push untouched', async () => {
    const unkeyed = await post('plain', '/push', null, Buffer.from('abc'), TEXT);
    expect(JSON.parse(unkeyed.body)).toEqual({ ownPush: false, tapped: false, kept: 0 });
    const keyedNoBody = await send(urls.plain as string, '/push', {
      method: 'POST',
      key: randomUUID(),
      tenant: null,
    });
    expect(JSON.parse(keyedNoBody.body.toString())).toEqual({
      ownPush: false,
      tapped: false,
      kept: 0,
    });
  });

  it('held: no uncaught exception or unhandled rejection in this file', () => {
    expect(uncaught).toEqual([]);
  });
});
