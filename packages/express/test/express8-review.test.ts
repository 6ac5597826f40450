import type { Server } from 'node:http';
import { type AddressInfo, connect, type Socket } from 'node:net';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { readyForOwnMethods } from '@idem/http/node';
import { createMemoryStore } from '@idem/store-memory';
import express from 'express';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// Adversarial review of wt/express8: `readyForOwnMethods` (delete and set again Express's own
// `req.res` / `res.req` on V8 < 13, else add and delete a symbol) and the `peekBody` fast path
// (a body buffered whole is read and put back in the same tick). Real Express 5 servers on
// loopback, raw sockets for what a fetch client cannot send (pipelining, Content-Length
// mismatches, 100-continue, chunk boundaries, a client that leaves mid-body).

// ---------------------------------------------------------------------------------------------
// Raw HTTP/1.1 client

interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

/** Parses every complete response in `data` (1xx interim ones included). */
function parseResponses(data: Buffer): { responses: RawResponse[]; rest: Buffer } {
  const responses: RawResponse[] = [];
  let offset = 0;
  for (;;) {
    const end = data.indexOf('\r\n\r\n', offset);
    if (end < 0) break;
    const headText = data.subarray(offset, end).toString('latin1');
    const [statusLine, ...lines] = headText.split('\r\n');
    const status = Number(statusLine?.split(' ')[1]);
    const headers: Record<string, string> = {};
    for (const line of lines) {
      const colon = line.indexOf(':');
      headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim();
    }
    let cursor = end + 4;
    let body: Buffer;
    if (status >= 100 && status < 200) {
      body = Buffer.alloc(0);
    } else if (headers['transfer-encoding'] === 'chunked') {
      const parts: Buffer[] = [];
      let done = false;
      for (;;) {
        const lineEnd = data.indexOf('\r\n', cursor);
        if (lineEnd < 0) break;
        const size = Number.parseInt(data.subarray(cursor, lineEnd).toString('latin1'), 16);
        if (size === 0) {
          const trailerEnd = data.indexOf('\r\n', lineEnd + 2);
          if (trailerEnd < 0) break;
          cursor = trailerEnd + 2;
          done = true;
          break;
        }
        if (data.length < lineEnd + 2 + size + 2) break;
        parts.push(data.subarray(lineEnd + 2, lineEnd + 2 + size));
        cursor = lineEnd + 2 + size + 2;
      }
      if (!done) break;
      body = Buffer.concat(parts);
    } else {
      const length = Number(headers['content-length'] ?? 0);
      if (data.length < cursor + length) break;
      body = data.subarray(cursor, cursor + length);
      cursor += length;
    }
    responses.push({ status, headers, body });
    offset = cursor;
  }
  return { responses, rest: data.subarray(offset) };
}

interface Exchange {
  socket: Socket;
  /** Final (non-1xx) responses so far. */
  finals(): RawResponse[];
  all(): RawResponse[];
  /** Resolves once `count` final responses came (or the socket closed: then with what came). */
  waitFinals(count: number): Promise<RawResponse[]>;
  /** Resolves once any response with this status came. */
  waitStatus(status: number): Promise<void>;
  closed: Promise<void>;
}

function open(port: number): Promise<Exchange> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let pending = Buffer.alloc(0);
    const parsed: RawResponse[] = [];
    const waiters: (() => void)[] = [];
    let closed = false;
    const closedPromise = new Promise<void>((done) =>
      socket.on('close', () => {
        closed = true;
        done();
        for (const w of waiters.splice(0)) w();
      }),
    );
    const all = () => parsed;
    const finals = () => all().filter((r) => r.status >= 200);
    socket.on('data', (chunk: Buffer) => {
      const { responses, rest } = parseResponses(Buffer.concat([pending, chunk]));
      parsed.push(...responses);
      pending = Buffer.from(rest);
      for (const w of waiters.splice(0)) w();
    });
    socket.on('error', () => {});
    const until = (test: () => boolean) =>
      new Promise<void>((done) => {
        const check = () => {
          if (test() || closed) done();
          else waiters.push(check);
        };
        check();
      });
    socket.once('connect', () =>
      resolve({
        socket,
        finals,
        all,
        waitFinals: async (count) => {
          await until(() => finals().length >= count);
          return finals();
        },
        waitStatus: (status) => until(() => all().some((r) => r.status === status)),
        closed: closedPromise,
      }),
    );
    socket.once('error', reject);
  });
}

/** Writes `parts` one write each, the next only after the server said it has seen the previous. */
async function writeParts(
  exchange: Exchange,
  parts: (string | Buffer)[],
  between?: () => Promise<void>,
): Promise<void> {
  for (let i = 0; i < parts.length; i++) {
    if (i > 0 && between) await between();
    await new Promise<void>((done) =>
      exchange.socket.write(parts[i] as string | Buffer, () => done()),
    );
  }
}

const head = (key: string, length: number | 'chunked', extra = '', path = '/echo') =>
  `POST ${path} HTTP/1.1\r\nHost: x\r\nIdempotency-Key: ${key}\r\nContent-Type: application/json\r\n${
    length === 'chunked' ? 'Transfer-Encoding: chunked' : `Content-Length: ${length}`
  }\r\n${extra}\r\n`;

const chunked = (...pieces: string[]) =>
  `${pieces.map((p) => `${Buffer.byteLength(p).toString(16)}\r\n${p}\r\n`).join('')}0\r\n\r\n`;

// ---------------------------------------------------------------------------------------------
// The app

interface Seen {
  body: string;
  resIsRes: boolean;
  reqIsReq: boolean;
  keys: string[];
}

let runs = 0;
const seen: Seen[] = [];
/** Resolves the next time the echo route starts (after reading its body). */
let routeStarted: (() => void) | undefined;
/** Called once a request reached the server (before any middleware). */
let onArrival: (() => void) | undefined;
let gate: Promise<void> | undefined;

function createApp(options: {
  maxBodyBytes?: number;
  before?: express.RequestHandler[];
  store?: ReturnType<typeof createMemoryStore>;
}): express.Express {
  const app = express();
  app.use((_req, _res, next) => {
    onArrival?.();
    next();
  });
  for (const handler of options.before ?? []) app.use(handler);
  app.use(
    idempotency({
      store: options.store ?? createMemoryStore(),
      onWarning: () => {},
      scope: 'global',
      ...(options.maxBodyBytes !== undefined ? { maxBodyBytes: options.maxBodyBytes } : {}),
    }),
  );
  app.post('/echo', async (req, res) => {
    runs++;
    let body: string;
    if (req.body !== undefined) {
      body = Buffer.isBuffer(req.body)
        ? `raw:${req.body.toString('utf8')}`
        : JSON.stringify(req.body);
    } else {
      const parts: Buffer[] = [];
      // A string when a middleware set the encoding.
      for await (const part of req) parts.push(Buffer.from(part as Buffer | string));
      body = Buffer.concat(parts).toString('utf8');
    }
    seen.push({
      body,
      resIsRes: req.res === res,
      reqIsReq: res.req === req,
      keys: Object.keys(req),
    });
    routeStarted?.();
    if (gate) await gate;
    res.status(201).json({ run: runs, body });
  });
  app.get('/plain', (_req, res) => {
    res.json({ plain: true });
  });
  app.use(
    (
      error: Error & { status?: number },
      _req: express.Request,
      res: express.Response,
      _next: express.NextFunction,
    ) => {
      res.status(error.status ?? 500).json({ error: error.message });
    },
  );
  return app;
}

const servers: Server[] = [];
async function listen(app: express.Express): Promise<number> {
  const server = app.listen(0, '127.0.0.1');
  servers.push(server);
  await new Promise<void>((resolve) => server.once('listening', resolve));
  return (server.address() as AddressInfo).port;
}

let port = 0;
beforeAll(async () => {
  port = await listen(createApp({ maxBodyBytes: 64 }));
});
afterEach(() => {
  routeStarted = undefined;
  onArrival = undefined;
  gate = undefined;
});
afterAll(async () => {
  for (const server of servers) {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});

let keys = 0;
const freshKey = () => `e8-${process.pid}-${++keys}`;

/** Waits until the server has taken the request in (an arrival seen), then one more macrotask. */
function nextArrival(): Promise<void> {
  return new Promise((resolve) => {
    onArrival = () => {
      onArrival = undefined;
      setImmediate(resolve);
    };
  });
}

async function sendOne(parts: (string | Buffer)[], at = port, split = false): Promise<RawResponse> {
  const exchange = await open(at);
  const arrived = split ? nextArrival() : undefined;
  await writeParts(exchange, parts, arrived ? () => arrived : undefined);
  const [response] = await exchange.waitFinals(1);
  exchange.socket.destroy();
  if (!response) throw new Error('no response');
  return response;
}

const json = (r: RawResponse) =>
  JSON.parse(r.body.toString('utf8')) as { run: number; body: string };

// ---------------------------------------------------------------------------------------------

/** Requests kept on purpose by a mutation check (IDEM_TEST_RETAIN=1) only. */
const retainedForCheck: object[] = [];

describe('readyForOwnMethods inside Express', () => {
  it('leaves req.res === res and res.req === req, and the same own keys, for the route', async () => {
    const body = '{"a":1}';
    seen.length = 0;
    const response = await sendOne([head(freshKey(), body.length) + body]);
    expect(response.status).toBe(201);
    expect(seen[0]).toMatchObject({ body, resIsRes: true, reqIsReq: true });
    // Only the place of `res` may differ from an app without the middleware.
    expect(seen[0]?.keys).toContain('res');
  });

  it('never throws with a middleware that made req.res a non-configurable getter first', async () => {
    const app = createApp({
      before: [
        (req, res, next) => {
          Object.defineProperty(req, 'res', {
            get: () => res,
            configurable: false,
            enumerable: false,
          });
          Object.defineProperty(res, 'req', { value: req, writable: false, configurable: false });
          next();
        },
      ],
    });
    const at = await listen(app);
    seen.length = 0;
    const body = '{"b":2}';
    const response = await sendOne([head(freshKey(), body.length) + body], at);
    expect(response.status).toBe(201);
    expect(seen[0]).toMatchObject({ body, resIsRes: true, reqIsReq: true });
  });

  it('survives a middleware that sets the prototype again after the middleware (both ways)', async () => {
    const app = express();
    const store = createMemoryStore();
    app.use(idempotency({ store, scope: 'global', onWarning: () => {} }));
    app.use((req, _res, next) => {
      const proto = Object.getPrototypeOf(req);
      Object.setPrototypeOf(req, Object.create(proto));
      next();
    });
    let ok = false;
    app.post('/echo', express.json(), (req, res) => {
      ok = req.res === res && res.req === req && typeof req.get === 'function';
      res.status(201).json(req.body);
    });
    const at = await listen(app);
    const key = freshKey();
    const body = '{"c":3}';
    const first = await sendOne([head(key, body.length) + body], at);
    const again = await sendOne([head(key, body.length) + body], at);
    expect(first.status).toBe(201);
    expect(ok).toBe(true);
    expect(again.body.equals(first.body)).toBe(true);
  });

  // FINDING LOW: on Node 20/22, a `res` accessor on the app's request prototype (an
  // instrumentation library, `Object.defineProperty(app.request, 'res', { get })`) is shadowed
  // by Express's own `req.res` until readyForOwnMethods deletes the own one: setting it again
  // then hits the getter-only accessor and throws (strict mode), so every keyed request gets a
  // 500 and `req.res` is the prototype's value from then on. Without the branch the app works.
  // (Node 24: readyForOwnMethods does nothing there; the app must work all the same.)
  it('keeps working when the app request prototype has a getter-only `res`', async () => {
    const app = createApp({});
    Object.defineProperty(app.request, 'res', {
      get() {
        return 'prototype value';
      },
      configurable: true,
    });
    const at = await listen(app);
    seen.length = 0;
    const body = '{"d":4}';
    const response = await sendOne([head(freshKey(), body.length) + body], at);
    expect(response.status).toBe(201);
    expect(seen[0]?.resIsRes).toBe(true);
  });
});

describe('readyForOwnMethods on objects it is handed directly', () => {
  it('plain objects without the named property: values and keys unchanged, no symbol left', () => {
    const plain: Record<string, unknown> = { a: 1, b: 2 };
    readyForOwnMethods(plain, 'res');
    readyForOwnMethods(plain);
    expect(Object.keys(plain)).toEqual(['a', 'b']);
    expect(Object.getOwnPropertySymbols(plain)).toEqual([]);
  });

  it('a Proxy with only get/set traps: the same value, no throw', () => {
    const target: Record<string, unknown> = { res: 1, other: 2 };
    const proxy = new Proxy(target, {});
    expect(() => readyForOwnMethods(proxy, 'res')).not.toThrow();
    expect(proxy.res).toBe(1);
    expect(Object.getOwnPropertySymbols(target)).toEqual([]);
  });

  // FINDING LOW: objects that refuse new properties (frozen, sealed, non-extensible, a Proxy that
  // refuses unknown keys) make readyForOwnMethods throw on Node 20/22; for a non-extensible one
  // with a configurable `res`, it has deleted `res` before it throws: the value is lost. (The
  // branch's recordServerResponse would throw on such a response anyway when it sets `emit`,
  // and Express's router cannot run on them, so this is the exported function's contract only.)
  it('never throws nor loses a value on objects that refuse new properties', () => {
    const frozen = Object.freeze({ res: 1 });
    const sealed = Object.seal({ res: 1 });
    const closed = Object.preventExtensions({ res: 1 } as Record<string, unknown>);
    const strict = new Proxy({ res: 1 } as Record<PropertyKey, unknown>, {
      set: (target, key, value) => {
        if (!(key in target)) throw new TypeError(`unknown property ${String(key)}`);
        target[key] = value;
        return true;
      },
    });
    const failures: string[] = [];
    for (const [name, object, existing] of [
      ['frozen', frozen, 'res'],
      ['sealed', sealed, 'res'],
      ['non-extensible', closed, 'res'],
      ['strict proxy', strict, undefined],
    ] as const) {
      try {
        readyForOwnMethods(object, existing);
      } catch {
        failures.push(`${name} threw`);
      }
      if ((object as { res?: unknown }).res !== 1) failures.push(`${name} lost res`);
    }
    expect(failures).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------

describe('peekBody fast path behind Express', () => {
  it('a body that came with its head: the route reads exactly it, the replay is byte-identical', async () => {
    const key = freshKey();
    const body = '{"sku":"A-1","qty":2}';
    const first = await sendOne([head(key, body.length) + body]);
    expect(first.status).toBe(201);
    expect(json(first).body).toBe(body);
    // The same body split differently (head alone, then the body in two writes, each sent once
    // the server took the request in) is the same request: replayed.
    const again = await sendOne(
      [head(key, body.length), body.slice(0, 5), body.slice(5)],
      port,
      true,
    );
    expect(again.status).toBe(201);
    expect(again.body.equals(first.body)).toBe(true);
    // A different body under the key: 422, whether buffered or not.
    const other = '{"sku":"A-1","qty":3}';
    expect((await sendOne([head(key, other.length) + other])).status).toBe(422);
    expect((await sendOne([head(key, other.length), other], port, true)).status).toBe(422);
  });

  it('more bytes than Content-Length declares: the pipelined request after them is not eaten', async () => {
    const key = freshKey();
    const exchange = await open(port);
    // Declares 7 bytes; what follows them is the next request, in the same packet.
    exchange.socket.write(
      `${head(key, 7)}{"x":1}GET /plain HTTP/1.1\r\nHost: x\r\n\r\n${head(freshKey(), 7)}{"y":2}`,
    );
    const responses = await exchange.waitFinals(3);
    exchange.socket.destroy();
    expect(responses.map((r) => r.status)).toEqual([201, 200, 201]);
    expect(json(responses[0] as RawResponse).body).toBe('{"x":1}');
    expect(JSON.parse((responses[1] as RawResponse).body.toString())).toEqual({ plain: true });
    expect(json(responses[2] as RawResponse).body).toBe('{"y":2}');
  });

  it('Content-Length: 0 is no body; the same key with a body afterwards is 422', async () => {
    const key = freshKey();
    const empty = await sendOne([head(key, 0)]);
    expect(empty.status).toBe(201);
    expect(json(empty).body).toBe('');
    expect((await sendOne([head(key, 0)])).body.equals(empty.body)).toBe(true);
    expect((await sendOne([`${head(key, 2)}{}`])).status).toBe(422);
  });

  it('chunked bodies: whole in one packet, split by other chunk boundaries and writes: one run', async () => {
    const key = freshKey();
    const body = '{"chunked":true,"n":12345}';
    const before = runs;
    const first = await sendOne([head(key, 'chunked') + chunked(body)]);
    expect(first.status).toBe(201);
    expect(json(first).body).toBe(body);
    const split = chunked(body.slice(0, 3), body.slice(3, 10), body.slice(10));
    const again = await sendOne(
      [head(key, 'chunked'), split.slice(0, 9), split.slice(9)],
      port,
      true,
    );
    expect(again.body.equals(first.body)).toBe(true);
    // The same bytes as Content-Length: the same request as well.
    const asLength = await sendOne([head(key, body.length) + body]);
    expect(asLength.body.equals(first.body)).toBe(true);
    expect(runs - before).toBe(1);
    // (JSON bodies are compared as JSON: another value, not other whitespace, is another body.)
    const other = body.replace('12345', '12346');
    expect((await sendOne([head(key, 'chunked') + chunked(other)])).status).toBe(422);
  });

  it('two POSTs pipelined in one write: each gets its own body; the same key pipelined replays', async () => {
    const a = '{"first":1}';
    const b = '{"second":22}';
    const key = freshKey();
    seen.length = 0;
    const exchange = await open(port);
    exchange.socket.write(
      head(freshKey(), a.length) +
        a +
        head(freshKey(), b.length) +
        b +
        head(key, a.length) +
        a +
        head(key, a.length) +
        a,
    );
    const responses = await exchange.waitFinals(4);
    exchange.socket.destroy();
    expect(responses.slice(0, 3).map((r) => r.status)).toEqual([201, 201, 201]);
    expect(responses.slice(0, 3).map((r) => json(r).body)).toEqual([a, b, a]);
    // Node runs pipelined requests concurrently (responses only go out in order): the
    // duplicate is 409 while the first runs, or its byte-identical replay. Never a second run.
    const fourth = responses[3] as RawResponse;
    if (fourth.status !== 409) {
      expect(fourth.body.equals((responses[2] as RawResponse).body)).toBe(true);
    }
    expect(seen.filter((s) => s.body === a).length).toBe(2);
  });

  it('Expect: 100-continue: the body sent after the 100 is read whole', async () => {
    const key = freshKey();
    const body = '{"continued":true}';
    const exchange = await open(port);
    exchange.socket.write(head(key, body.length, 'Expect: 100-continue\r\n'));
    await exchange.waitStatus(100);
    exchange.socket.write(body);
    const [response] = await exchange.waitFinals(1);
    exchange.socket.destroy();
    expect(response?.status).toBe(201);
    expect(json(response as RawResponse).body).toBe(body);
    const again = await sendOne([head(key, body.length) + body]);
    expect(again.body.equals((response as RawResponse).body)).toBe(true);
  });

  it('a body parser before the middleware (express.json, express.raw): 422 for another body, replay for the same', async () => {
    for (const parser of [express.json(), express.raw({ type: '*/*' })]) {
      const at = await listen(createApp({ before: [parser] }));
      const key = freshKey();
      const body = '{"parsed":1}';
      const first = await sendOne([head(key, body.length) + body], at);
      expect(first.status).toBe(201);
      const again = await sendOne([head(key, body.length), body], at, true);
      expect(again.body.equals(first.body)).toBe(true);
      expect((await sendOne([`${head(key, 12)}{"parsed":2}`], at)).status).toBe(422);
    }
  });

  it('a middleware that paused the request or set its encoding first: the route reads the same bytes, retries replay', async () => {
    for (const before of [
      ((req, _res, next) => {
        req.pause();
        next();
      }) as express.RequestHandler,
      ((req, _res, next) => {
        req.setEncoding('utf8');
        next();
      }) as express.RequestHandler,
    ]) {
      const at = await listen(createApp({ before: [before] }));
      const key = freshKey();
      const body = '{"note":"é ✓ multi-byte"}';
      const length = Buffer.byteLength(body);
      const first = await sendOne([head(key, length) + body], at);
      expect(first.status).toBe(201);
      expect(json(first).body).toBe(body);
      const raw = Buffer.from(head(key, length) + body);
      // Split inside the multi-byte character.
      const cut = raw.indexOf(Buffer.from('é')) + 1;
      const again = await sendOne([raw.subarray(0, cut), raw.subarray(cut)], at, true);
      expect(again.body.equals(first.body)).toBe(true);
      const other = '{"note":"é ✓ multi-bytf"}';
      expect((await sendOne([head(key, Buffer.byteLength(other)) + other], at)).status).toBe(422);
    }
  });

  // FINDING MEDIUM (pre-existing, not introduced by this branch: `readableEnded` answered an
  // empty body before it too): a middleware before idem that consumed the stream itself and
  // left `req.body` undefined (a raw-body reader keeping `req.rawBody`, a signature check)
  // makes every body under a key look empty: a different body under the same key is replayed
  // the first one's outcome instead of 422. A clear error (as the Hono middleware throws for a
  // body read outside Hono) would keep isolation.
  it('a stream consumed before the middleware without req.body: another body under the key is still 422', async () => {
    const at = await listen(
      createApp({
        before: [
          (req, _res, next) => {
            const parts: Buffer[] = [];
            req.on('data', (c: Buffer) => parts.push(c));
            req.on('end', () => {
              (req as unknown as { rawBody: Buffer }).rawBody = Buffer.concat(parts);
              next();
            });
          },
        ],
      }),
    );
    const key = freshKey();
    const first = await sendOne([`${head(key, 9)}{"amt":1}`], at);
    expect(first.status).toBe(201);
    const other = await sendOne([`${head(key, 11)}{"amt":999}`], at);
    expect(other.status).toBe(422);
  });

  it('bodies over maxBodyBytes (64): 413 by Content-Length or chunked in one packet; the next pipelined request is its own', async () => {
    const big = `{"pad":"${'x'.repeat(60)}"}`;
    const atLimit = `{"pad":"${'x'.repeat(54)}"}`;
    expect(Buffer.byteLength(atLimit)).toBe(64);
    expect((await sendOne([head(freshKey(), atLimit.length) + atLimit])).status).toBe(201);
    expect((await sendOne([head(freshKey(), big.length) + big])).status).toBe(413);
    const exchange = await open(port);
    const next = '{"after":1}';
    exchange.socket.write(
      head(freshKey(), 'chunked') + chunked(big) + head(freshKey(), next.length) + next,
    );
    const responses = await exchange.waitFinals(2);
    exchange.socket.destroy();
    expect(responses[0]?.status).toBe(413);
    // Either the connection was closed after the 413 or the next request was served as itself.
    if (responses[1]) {
      expect(responses[1].status).toBe(201);
      expect(json(responses[1]).body).toBe(next);
    }
    // Over the limit across packets as well.
    const split = chunked(big.slice(0, 40), big.slice(40));
    expect(
      (
        await sendOne(
          [head(freshKey(), 'chunked'), split.slice(0, 30), split.slice(30)],
          port,
          true,
        )
      ).status,
    ).toBe(413);
  });
});

describe('exactly once and isolation', () => {
  it('a concurrent duplicate with the body buffered is 409 while the first runs; then the replay', async () => {
    const key = freshKey();
    const body = '{"dup":1}';
    let release: () => void = () => {};
    gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const started = new Promise<void>((resolve) => {
      routeStarted = resolve;
    });
    const before = runs;
    const firstExchange = await open(port);
    firstExchange.socket.write(head(key, body.length) + body);
    await started;
    const dupes = await Promise.all(
      Array.from({ length: 5 }, () => sendOne([head(key, body.length) + body])),
    );
    expect(dupes.map((r) => r.status)).toEqual([409, 409, 409, 409, 409]);
    release();
    const [first] = await firstExchange.waitFinals(1);
    firstExchange.socket.destroy();
    gate = undefined;
    const replay = await sendOne([head(key, body.length) + body]);
    expect(replay.body.equals((first as RawResponse).body)).toBe(true);
    expect(runs - before).toBe(1);
  });

  it('a client gone mid-body holds no key: the retry with the whole body runs once', async () => {
    const key = freshKey();
    const body = '{"gone":"mid-body"}';
    const before = runs;
    const exchange = await open(port);
    const arrived = nextArrival();
    exchange.socket.write(head(key, body.length) + body.slice(0, 6));
    await arrived;
    exchange.socket.destroy();
    await exchange.closed;
    // The server sees the close on its own tick: the retry may come first and find the key
    // held (409) for that moment only.
    let retry = await sendOne([head(key, body.length) + body]);
    for (let i = 0; retry.status === 409 && i < 200; i++) {
      await new Promise((resolve) => setTimeout(resolve, 25));
      retry = await sendOne([head(key, body.length) + body]);
    }
    expect(retry.status).toBe(201);
    expect(json(retry).body).toBe(body);
    expect(runs - before).toBe(1);
  });

  it('a client gone right after a whole buffered body: the key ends replayable or free, never held', async () => {
    const key = freshKey();
    const body = '{"gone":"after-body"}';
    const exchange = await open(port);
    const started = new Promise<void>((resolve) => {
      routeStarted = resolve;
    });
    exchange.socket.write(head(key, body.length) + body);
    exchange.socket.destroy();
    await started;
    let retry = await sendOne([head(key, body.length) + body]);
    for (let i = 0; retry.status === 409 && i < 200; i++) {
      await new Promise((resolve) => setTimeout(resolve, 25));
      retry = await sendOne([head(key, body.length) + body]);
    }
    expect(retry.status).toBe(201);
    expect(json(retry).body).toBe(body);
  });
});

describe('bounded memory', () => {
  // Counted (WeakRefs): a request kept a request shows at a few hundred (ci34: 5,000 took 43 s
  // in a loaded CI lane). IDEM_EXPRESS_MEMORY_REQUESTS sizes it (500 by default; 5,000 by hand).
  it('keyed requests with buffered bodies retain none of their requests or responses', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const app = express();
    const refs: WeakRef<object>[] = [];
    app.use((req, res, next) => {
      // Mutation check only (IDEM_TEST_RETAIN=1): every request kept, as a leak would.
      if (process.env.IDEM_TEST_RETAIN === '1') retainedForCheck.push(req);
      if (refs.length % 50 === 0) refs.push(new WeakRef(req), new WeakRef(res));
      else refs.push(new WeakRef(req));
      next();
    });
    app.use(idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }));
    app.post('/m', express.json(), (req, res) => {
      res.status(201).json({ got: req.body });
    });
    const at = await listen(app);
    const exchange = await open(at);
    const total = Number(process.env.IDEM_EXPRESS_MEMORY_REQUESTS ?? 500);
    const batch = 100;
    for (let sent = 0; sent < total; sent += batch) {
      let packet = '';
      for (let i = 0; i < batch; i++) {
        const body = `{"n":${sent + i}}`;
        packet += head(freshKey(), body.length, '', '/m') + body;
      }
      exchange.socket.write(packet);
      await exchange.waitFinals(sent + batch);
    }
    const statuses = exchange.finals().map((r) => r.status);
    exchange.socket.destroy();
    await exchange.closed;
    expect(statuses.length).toBe(total);
    expect(statuses.every((s) => s === 201)).toBe(true);
    for (let i = 0; i < 10; i++) {
      gc();
      await new Promise((resolve) => setImmediate(resolve));
    }
    const alive = refs.filter((r) => r.deref() !== undefined).length;
    // The connection is gone: none of its requests may stay reachable.
    expect(alive).toBeLessThanOrEqual(2);
  }, 120_000);
});
