import { randomBytes } from 'node:crypto';
import {
  createServer,
  type IncomingHttpHeaders,
  type IncomingMessage,
  request,
  type Server,
  type ServerResponse,
} from 'node:http';
import { connect as http2Connect, createServer as http2CreateServer } from 'node:http2';
import { type AddressInfo, connect } from 'node:net';
import { OutcomeCorruptError, type StoredOutcome } from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';
import { createRedisStore } from '@idem/store-redis';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import {
  createIdempotencyHandler,
  type HttpIdempotencyOptions,
  OUTCOME_FORMAT,
} from '../src/index.js';
import { recordServerResponse, sendDecisionResponse } from '../src/node.js';
import { readyForOwnMethods } from '../src/own-methods.js';
import { respondWith } from '../src/prepared-response.js';
import { prepareReplay } from '../src/replay.js';
import { described } from './support/recorded-server.js';

// rev12e: adversarial review of trailers (recorded from `addTrailers`, meta 'trailers',
// replayed by the Node sender) and of `endedWhileHeld` on node:http / node:http2.

function outcome(meta: Record<string, unknown>, body = 'abc'): StoredOutcome {
  return { meta: { format: OUTCOME_FORMAT, ...meta }, body: new TextEncoder().encode(body) };
}

const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  await Promise.all(closers.splice(0).map((close) => close()));
});

async function listen(server: Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  closers.push(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  return (server.address() as AddressInfo).port;
}

type App = (req: IncomingMessage, res: ServerResponse) => void;

/** A node:http server with idem (replays through `sendDecisionResponse`), or without. */
async function serve(
  app: App,
  options: Partial<HttpIdempotencyOptions<IncomingMessage>> = {},
  { withIdem = true, endedWhileHeld = false } = {},
) {
  const warnings: string[] = [];
  let runs = 0;
  const idem = createIdempotencyHandler<IncomingMessage>({
    store: createMemoryStore(),
    scope: 'global',
    onWarning: (message) => warnings.push(message),
    ...options,
  });
  const server = createServer(async (req, res) => {
    if (withIdem) {
      const decision = await idem.begin(described(req));
      if (decision.action === 'respond') return sendDecisionResponse(res, decision);
      if (decision.action !== 'execute') throw new Error(decision.action);
      recordServerResponse(res, decision.recorder, { endedWhileHeld });
    } else {
      req.resume();
    }
    runs++;
    app(req, res);
  });
  const port = await listen(server);
  return { port, warnings, runs: () => runs };
}

/** A server that answers every request with `prepared` through the Node sender. */
async function sender(make: () => Parameters<typeof respondWith>[0]) {
  const server = createServer((_req, res) => {
    let prepared: Parameters<typeof respondWith>[0];
    try {
      prepared = make();
    } catch (error) {
      res.statusCode = 500;
      res.end(error instanceof OutcomeCorruptError ? 'corrupt' : 'error');
      return;
    }
    void sendDecisionResponse(res, respondWith(prepared, true));
  });
  return listen(server);
}

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  rawTrailers: string[];
  body: Buffer;
  trailers: NodeJS.Dict<string>;
}

/** A POST with `key` through node:http's client; 3 s bound. */
function post(port: number, key: string, method = 'POST'): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        method,
        path: '/',
        headers: { 'idempotency-key': key },
        agent: false,
      },
      (res) => {
        const parts: Buffer[] = [];
        res.on('data', (chunk: Buffer) => parts.push(chunk));
        res.on('end', () => {
          clearTimeout(timer);
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(parts),
            trailers: res.trailers,
            rawTrailers: res.rawTrailers,
          });
        });
        res.on('error', reject);
      },
    );
    const timer = setTimeout(() => req.destroy(new Error('no answer within 3 s')), 3_000);
    req.on('error', reject);
    req.end();
  });
}

/** Everything the server sends on one socket for `text`, until it closes or `ms` passed. */
function raw(port: number, text: string, ms = 1_500): Promise<Buffer> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    const parts: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      resolve(Buffer.concat(parts));
    }, ms);
    socket.on('data', (chunk: Buffer) => parts.push(chunk));
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(parts));
    });
    socket.write(text);
  });
}

interface Parsed {
  status: number;
  headers: [string, string][];
  body: string;
  trailers: [string, string][];
}

/**
 * A strict HTTP/1.x response parser (Content-Length, chunked with trailers, or to the close
 * for the last one): the responses of one socket, in order. Throws on bad framing.
 */
function parseResponses(data: Buffer, closesLast = false): Parsed[] {
  const text = data.toString('latin1');
  const out: Parsed[] = [];
  let at = 0;
  const line = () => {
    const end = text.indexOf('\r\n', at);
    if (end < 0) throw new Error(`no line end at ${at}: ${JSON.stringify(text.slice(at))}`);
    const value = text.slice(at, end);
    at = end + 2;
    return value;
  };
  const fields = () => {
    const list: [string, string][] = [];
    for (let l = line(); l !== ''; l = line()) {
      const colon = l.indexOf(':');
      if (colon <= 0 || /\s/.test(l[0] ?? '')) throw new Error(`bad field line ${l}`);
      list.push([l.slice(0, colon).toLowerCase(), l.slice(colon + 1).trim()]);
    }
    return list;
  };
  while (at < text.length) {
    const status = /^HTTP\/1\.[01] (\d{3})/.exec(line());
    if (!status) throw new Error(`bad status line at ${at}`);
    const headers = fields();
    const get = (name: string) => headers.find(([n]) => n === name)?.[1];
    let body = '';
    let trailers: [string, string][] = [];
    const code = Number(status[1]);
    if (code === 204 || code === 304) {
      // no body
    } else if (get('transfer-encoding') === 'chunked') {
      for (;;) {
        const size = Number.parseInt(line(), 16);
        if (!Number.isFinite(size)) throw new Error('bad chunk size');
        if (size === 0) break;
        body += text.slice(at, at + size);
        at += size;
        if (line() !== '') throw new Error('bad chunk end');
      }
      trailers = fields();
    } else if (get('content-length') !== undefined) {
      const length = Number(get('content-length'));
      body = text.slice(at, at + length);
      at += length;
    } else if (closesLast) {
      body = text.slice(at);
      at = text.length;
    } else throw new Error('no framing');
    out.push({ status: code, headers, body, trailers });
  }
  return out;
}

const declaring: App = (_req, res) => {
  res.setHeader('Trailer', 'X-Checksum');
  res.setHeader('content-type', 'text/plain');
  res.write('abc');
  res.addTrailers({ 'X-Checksum': 'sha-abc' });
  res.end();
};

describe('rev12e: crafted trailers from the store', () => {
  it('node:http2: a stored trailer HTTP/2 forbids (connection, keep-alive, transfer-encoding, upgrade, proxy-connection) neither crashes the process nor hangs the replay', async () => {
    // FIXED (was FINDING MEDIUM; readMeta refuses it, the trailer names kept in a Set, the warning bounded): readMeta checks a stored trailer only as a lowercase token with a
    // visible value. A record whose meta 'trailers' names a connection-specific field (a
    // corrupt or hostile store entry) passes, and the Node sender hands it to node:http2's
    // compat `addTrailers`; at the end of the stream `sendTrailers` throws
    // ERR_HTTP2_INVALID_CONNECTION_HEADERS from a 'wantTrailers' listener: an uncaught
    // exception (the process dies without a handler) and the client's stream never ends.
    // Fix: in readMeta refuse (OutcomeCorruptError) a trailer name of NEVER_RECORDED /
    // NEVER_TRAILERS (what the recorder never writes), and let the sender skip any trailer
    // node:http2 would refuse.
    const uncaught: unknown[] = [];
    const onUncaught = (error: unknown) => uncaught.push(error);
    process.on('uncaughtException', onUncaught);
    const names = ['connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'proxy-connection'];
    const server = http2CreateServer((req, res) => {
      const name = (req.headers['x-name'] as string) ?? 'connection';
      let prepared: Parameters<typeof respondWith>[0];
      try {
        prepared = prepareReplay(
          outcome({ status: 200, headers: [], chunks: [3], trailers: [[name, 'x']] }),
        );
      } catch {
        res.statusCode = 500;
        res.end('corrupt');
        return;
      }
      void sendDecisionResponse(res as never, respondWith(prepared, true));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const client = http2Connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    client.on('error', () => {});
    try {
      const results = await Promise.all(
        names.map(
          (name) =>
            new Promise<string>((resolve) => {
              const stream = client.request({ ':path': '/', 'x-name': name });
              let body = '';
              const timer = setTimeout(() => {
                stream.destroy();
                resolve(`${name}: no end within 1.5 s`);
              }, 1_500);
              stream.setEncoding('utf8');
              stream.on('data', (chunk: string) => {
                body += chunk;
              });
              stream.on('error', () => {});
              stream.on('end', () => {
                clearTimeout(timer);
                resolve(`${name}: ended ${body}`);
              });
            }),
        ),
      );
      for (const result of results) expect(result).toMatch(/: ended (abc|corrupt)$/);
      expect(uncaught).toEqual([]);
    } finally {
      client.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      process.off('uncaughtException', onUncaught);
    }
  });

  it('node:http: a stored trailer of a field never recorded (set-cookie, content-length, transfer-encoding, trailer, content-type) is never replayed', async () => {
    // FIXED (was FINDING LOW; readMeta refuses it, the trailer names kept in a Set, the warning bounded): the recorder never records these as trailers (NEVER_RECORDED,
    // NEVER_TRAILERS), but readMeta accepts them from the store and the Node sender sends
    // them: a corrupt or hostile record replays a `Set-Cookie` (or a framing field) as a
    // trailer, named in the replay's `Trailer` header (clients and proxies that merge
    // trailers into headers then apply it). Fix: readMeta refuses such a record as
    // OutcomeCorruptError (or prepareReplay drops those names), as the Fastify path already
    // does through `reply.trailer`.
    const names = ['set-cookie', 'content-length', 'transfer-encoding', 'trailer', 'content-type'];
    const port = await sender(() =>
      prepareReplay(
        outcome({
          status: 200,
          headers: [],
          chunks: [3],
          trailers: names.map((name) => [name, name === 'content-length' ? '99' : 'sid=evil']),
        }),
      ),
    );
    const answer = await post(port, 'k');
    const sent = Object.keys(answer.trailers);
    const declared = (answer.headers.trailer ?? '').toLowerCase();
    for (const name of names) {
      expect(sent, name).not.toContain(name);
      expect(declared, name).not.toContain(name);
    }
  });

  it('a stored record naming one trailer twice is corrupt, or replays both values', async () => {
    // FIXED (was FINDING LOW; readMeta refuses it, the trailer names kept in a Set, the warning bounded): the format says a recorded trailer name comes once, but readMeta takes
    // [['x-a','1'],['x-a','2']]: the replay declares `Trailer: x-a, x-a` and sends only the
    // last value (Object.fromEntries). Fix: refuse a repeated name in readMeta
    // (OutcomeCorruptError), as it is never recorded so.
    const port = await sender(() =>
      prepareReplay(
        outcome({
          status: 200,
          headers: [],
          chunks: [3],
          trailers: [
            ['x-a', '1'],
            ['x-a', '2'],
          ],
        }),
      ),
    );
    const answer = await post(port, 'k');
    if (answer.status === 500) expect(answer.body.toString()).toBe('corrupt');
    else {
      expect(answer.headers.trailer).toBe('x-a');
      expect(answer.rawTrailers).toEqual(['x-a', '1', 'x-a', '2']);
    }
  });

  it('stored trailers with NUL, DEL, a lone CR or LF, obs-fold, or names that are no lowercase token are corrupt; the sender answers 500, never injects', async () => {
    const bad: unknown[] = [
      [['x-a', 'a\u0000b']],
      [['x-a', 'a\u007fb']],
      [['x-a', 'a\rb']],
      [['x-a', 'a\nb']],
      [['x-a', 'a\r\n b']],
      [['x-a', 'a\r\nset-cookie: x=1']],
      [['x-a', 'caf\u0100']],
      [[':status', '200']],
      [['', 'x']],
      [['x-a ', '1']],
      [['x-a:', '1']],
      [['x\u00e9', '1']],
      [['X-A', '1']],
      [['x-a', '1', 'extra']],
      [['x-a', null]],
      { 'x-a': '1' },
      null,
      [null],
    ];
    for (const trailers of bad)
      expect(
        () => prepareReplay(outcome({ status: 200, headers: [], chunks: [3], trailers })),
        JSON.stringify(trailers),
      ).toThrow(OutcomeCorruptError);
    // Over the wire: the sender never sends the injected line.
    const port = await sender(() =>
      prepareReplay(
        outcome({
          status: 200,
          headers: [],
          chunks: [3],
          trailers: [['x-a', 'a\r\nset-cookie: x=1']],
        }),
      ),
    );
    const text = (
      await raw(port, 'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
    ).toString('latin1');
    expect(text).toMatch(/^HTTP\/1\.1 500/);
    expect(text).not.toMatch(/set-cookie/i);
  });

  it('a stored record with a Content-Length header and trailers: sendDecisionResponse never throws synchronously (and leaves no Trailer header that makes the fallback end throw too)', async () => {
    // FIXED (was FINDING LOW; readMeta refuses it, the trailer names kept in a Set, the warning bounded): readMeta trusts stored header names (content-length is never recorded),
    // and the sender names the trailers in a `Trailer` header: with a `Content-Length` Node
    // refuses the head (ERR_HTTP_TRAILER_INVALID), thrown synchronously out of
    // sendDecisionResponse (typed to return a Promise), with the `Trailer` header left set,
    // so an error handler's plain `res.end()` throws again. Fix: readMeta refuses stored
    // header names of NEVER_RECORDED (OutcomeCorruptError), or the sender drops the trailers
    // when the response cannot carry them (check `res.getHeader('content-length')`) and never
    // throws synchronously (reject the promise instead).
    const outcomes: string[] = [];
    const server = createServer((_req, res) => {
      let prepared: Parameters<typeof respondWith>[0];
      try {
        prepared = prepareReplay(
          outcome({
            status: 200,
            headers: [['content-length', '3']],
            chunks: [3],
            trailers: [['x-a', '1']],
          }),
        );
      } catch {
        outcomes.push('corrupt');
        res.statusCode = 500;
        res.end('corrupt');
        return;
      }
      try {
        sendDecisionResponse(res, respondWith(prepared, true)).then(
          () => outcomes.push('resolved'),
          () => outcomes.push('rejected'),
        );
      } catch {
        outcomes.push('sync throw');
        try {
          res.statusCode = 500;
          res.end('fallback');
        } catch {
          outcomes.push('fallback threw');
          res.destroy();
        }
      }
    });
    const port = await listen(server);
    const text = (
      await raw(port, 'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
    ).toString('latin1');
    expect(outcomes).not.toContain('sync throw');
    expect(outcomes).not.toContain('fallback threw');
    expect(text).toMatch(/^HTTP\/1\.1 (200|500)/);
  });

  it('an HTTP/1.0 client that sent TE: chunked gets the replay chunked with its trailers (Node frames it so)', async () => {
    const { port } = await serve(declaring);
    await post(port, 'te10');
    const [answer, ...rest] = parseResponses(
      await raw(
        port,
        'POST / HTTP/1.0\r\nTE: chunked\r\nIdempotency-Key: "te10"\r\nContent-Length: 0\r\n\r\n',
      ),
    );
    expect(rest).toEqual([]);
    expect(answer?.headers).toContainEqual(['transfer-encoding', 'chunked']);
    expect(answer?.headers).toContainEqual(['idempotent-replayed', 'true']);
    expect(answer?.body).toBe('abc');
    expect(answer?.trailers).toEqual([['x-checksum', 'sha-abc']]);
  });

  it('a record from before trailers replays as before: Content-Length framed, no Trailer header, and the next pipelined response parses', async () => {
    const port = await sender(() =>
      prepareReplay(
        outcome({ status: 200, headers: [['content-type', 'text/plain']], chunks: [3] }),
      ),
    );
    const data = await raw(
      port,
      'GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
    );
    const [first, second, ...rest] = parseResponses(data);
    expect(rest).toEqual([]);
    for (const answer of [first, second]) {
      expect(answer?.body).toBe('abc');
      expect(answer?.headers.find(([name]) => name === 'content-length')?.[1]).toBe('3');
      expect(answer?.headers.some(([name]) => name === 'trailer')).toBe(false);
      expect(answer?.trailers).toEqual([]);
    }
  });
});

describe('rev12e: recording trailers on node:http', () => {
  it('forbidden trailers declared in odd case with spaces (Set-Cookie, Content-Length, Transfer-Encoding, Trailer, Content-Type) are not recorded and are named in a warning; the declared others are', async () => {
    const { port, warnings, runs } = await serve((_req, res) => {
      res.setHeader(
        'Trailer',
        ' X-OK ,SET-COOKIE,, content-length , Transfer-Encoding,trailer,Content-Type, x ok',
      );
      res.write('abc');
      res.addTrailers([
        ['X-Ok', 'fine'],
        ['Set-Cookie', 'sid=1'],
        ['CONTENT-LENGTH', '99'],
        ['Transfer-Encoding', 'gzip'],
        ['Trailer', 'x-ok'],
        ['Content-Type', 'text/html'],
      ]);
      res.end();
    });
    // Read raw: node:http's client refuses a trailer section with Content-Length as a
    // response with both framings (the app's doing, the same without idem).
    const request =
      'POST / HTTP/1.1\r\nHost: x\r\nIdempotency-Key: "odd"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n';
    const [first] = parseResponses(await raw(port, request));
    expect(first?.trailers).toContainEqual(['set-cookie', 'sid=1']);
    const replay = await post(port, 'odd');
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.body.toString()).toBe('abc');
    expect(replay.headers.trailer).toBe('x-ok');
    expect(replay.trailers).toEqual({ 'x-ok': 'fine' });
    expect(runs()).toBe(1);
    const warning = warnings.find((w) => /Trailer field/.test(w)) ?? '';
    for (const name of [
      'set-cookie',
      'content-length',
      'transfer-encoding',
      'trailer',
      'content-type',
    ])
      expect(warning).toContain(name);
  });

  it('trailers declared in two Trailer lines of a flat writeHead array, one trailer named twice in addTrailers: every declared one recorded, the repeated values joined', async () => {
    const { port, runs } = await serve((_req, res) => {
      res.writeHead(200, ['Trailer', 'x-a', 'Content-Type', 'text/plain', 'Trailer', 'X-B']);
      res.write('abc');
      res.addTrailers([
        ['x-a', '1'],
        ['X-B', '2'],
        ['x-a', '3'],
      ]);
      res.end();
    });
    const first = await post(port, 'two-lines');
    expect(first.rawTrailers).toEqual(['x-a', '1', 'X-B', '2', 'x-a', '3']);
    const replay = await post(port, 'two-lines');
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.headers.trailer).toBe('x-a, x-b');
    expect(replay.trailers).toEqual({ 'x-a': '1, 3', 'x-b': '2' });
    expect(runs()).toBe(1);
  });

  it('a Latin-1 trailer value replays byte for byte as the first client got it', async () => {
    const value = 'caf\u00e9 \u00ff\tend';
    const { port } = await serve((_req, res) => {
      res.setHeader('Trailer', 'x-name');
      res.write('abc');
      res.addTrailers({ 'x-name': value });
      res.end();
    });
    const request =
      'POST / HTTP/1.1\r\nHost: x\r\nIdempotency-Key: "l1"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n';
    const [first] = parseResponses(await raw(port, request));
    const [replay] = parseResponses(await raw(port, request));
    expect(first?.trailers).toEqual([['x-name', value]]);
    expect(replay?.trailers).toEqual(first?.trailers);
    expect(replay?.headers).toContainEqual(['idempotent-replayed', 'true']);
  });

  it('300 declared trailers are recorded and replayed, in a bounded time', async () => {
    const names = Array.from({ length: 300 }, (_, i) => `x-t${i}`);
    const { port, runs } = await serve((_req, res) => {
      res.setHeader('Trailer', names.join(', '));
      res.write('abc');
      res.addTrailers(Object.fromEntries(names.map((name, i) => [name, `v${i}`])));
      res.end();
    });
    const started = Date.now();
    const first = await post(port, 'many');
    const replay = await post(port, 'many');
    expect(Date.now() - started).toBeLessThan(2_000);
    expect(Object.keys(first.trailers)).toHaveLength(300);
    expect(replay.trailers).toEqual(first.trailers);
    expect(runs()).toBe(1);
  });

  it("30,000 undeclared trailers: the app's end call stays fast (linear) and the warning naming them stays bounded", async () => {
    // FIXED (was FINDING LOW; readMeta refuses it, the trailer names kept in a Set, the warning bounded): pickRecordedTrailers keeps the names left out in an array and checks
    // each with `left.includes` (quadratic): 30,000 undeclared trailers (say, an app that
    // forwards an upstream's trailers without declaring them) block the event loop for
    // about 1.5 s inside the app's `end` (50,000: about 4.5 s), where Node alone takes a few
    // ms; and the warning lists every name (hundreds of KB). Fix: a Set for `left`, and name
    // only the first few in the warning ("and N more").
    const names = Array.from({ length: 30_000 }, (_, i) => `x-u${i}`);
    let endMs = -1;
    const { port, warnings } = await serve((_req, res) => {
      res.setHeader('Trailer', 'x-declared');
      res.write('abc');
      res.addTrailers(Object.fromEntries(names.map((name) => [name, 'v'])));
      // CPU time, not wall time: a loaded machine (CI) stretches the latter, never the former.
      const started = process.cpuUsage();
      res.end();
      const { user, system } = process.cpuUsage(started);
      endMs = (user + system) / 1_000;
    });
    await raw(
      port,
      'POST / HTTP/1.1\r\nHost: x\r\nIdempotency-Key: "undeclared"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n',
      4_000,
    );
    expect(endMs).toBeGreaterThanOrEqual(0);
    expect(endMs).toBeLessThan(300);
    const warning = warnings.find((w) => /Trailer field/.test(w)) ?? '';
    expect(warning).not.toBe('');
    expect(warning.length).toBeLessThan(16_384);
  });

  it('many small trailers past maxOutcomeBytes: nothing recorded, a retry gets outcome-not-recorded, the first client got them all', async () => {
    const names = Array.from({ length: 200 }, (_, i) => `x-t${i}`);
    const { port, runs } = await serve(
      (_req, res) => {
        res.setHeader('Trailer', names.join(', '));
        res.write('abc');
        res.addTrailers(Object.fromEntries(names.map((name) => [name, 'v'.repeat(20)])));
        res.end();
      },
      { maxOutcomeBytes: 2_048 },
    );
    const first = await post(port, 'cap');
    expect(Object.keys(first.trailers)).toHaveLength(200);
    const retry = await post(port, 'cap');
    expect(retry.status).toBe(500);
    expect(retry.body.toString()).toContain('outcome-not-recorded');
    expect(runs()).toBe(1);
  });

  it('a trailer the app adds after its end (while the end waits for the record) is not sent: the first client gets what it would without idem, as the replay does', async () => {
    // FIXED (was FINDING LOW; the trailer section read at the app's end is put back on `res`
    // before the held end goes out): the app's `end` is held until the outcome is stored; the trailers are
    // read for the record at the app's end, but Node reads `res._trailer` only when the
    // held end goes out. An `addTrailers` after `end` (a no-op without idem: the trailer
    // section was written) is sent to the first client, never recorded: the first client
    // and the replay differ. Fix: keep the trailer text read at the app's end and put it
    // back on `res` before the held end goes out (or make addTrailers a no-op once ended).
    for (const endedWhileHeld of [false, true]) {
      const { port } = await serve(
        (_req, res) => {
          res.setHeader('Trailer', 'x-a, x-late');
          res.write('abc');
          res.addTrailers({ 'x-a': '1' });
          res.end();
          res.addTrailers({ 'x-a': '1', 'x-late': 'late' });
        },
        {},
        { endedWhileHeld },
      );
      const key = `late-${endedWhileHeld}`;
      const first = await post(port, key);
      const replay = await post(port, key);
      expect(replay.headers['idempotent-replayed']).toBe('true');
      expect(first.trailers).toEqual({ 'x-a': '1' });
      expect(replay.trailers).toEqual(first.trailers);
    }
  });

  it('node:http2: a trailer added after the end (before the record is stored) is sent to neither client; the first one gets what is replayed', async () => {
    // node:http2 sends the trailers on 'wantTrailers', after the end: the app's late
    // `addTrailers` would reach the first client (never the record) unless the section read at
    // the app's end is put back before the held end goes out.
    const idem = createIdempotencyHandler<IncomingMessage>({
      store: createMemoryStore(),
      scope: 'global',
      onWarning: () => {},
    });
    let runs = 0;
    const server = http2CreateServer(async (req, res) => {
      const decision = await idem.begin(described(req as never));
      if (decision.action === 'respond') return sendDecisionResponse(res as never, decision);
      if (decision.action !== 'execute') throw new Error(decision.action);
      recordServerResponse(res as never, decision.recorder);
      runs++;
      res.setHeader('Trailer', 'x-a, x-late');
      res.write('abc');
      res.addTrailers({ 'x-a': '1' });
      res.end();
      res.addTrailers({ 'x-late': 'late' });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const client = http2Connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    client.on('error', () => {});
    const ask = () =>
      new Promise<{ body: string; trailers: Record<string, unknown>; replayed: unknown }>(
        (resolve, reject) => {
          const stream = client.request({
            ':method': 'POST',
            ':path': '/',
            'idempotency-key': '"h2-late"',
          });
          const timer = setTimeout(() => stream.destroy(new Error('no end within 3 s')), 3_000);
          let body = '';
          let trailers: Record<string, unknown> = {};
          let replayed: unknown;
          stream.setEncoding('utf8');
          stream.on('response', (headers) => {
            replayed = headers['idempotent-replayed'];
          });
          stream.on('data', (chunk: string) => {
            body += chunk;
          });
          stream.on('trailers', (fields) => {
            trailers = Object.fromEntries(Object.entries(fields));
          });
          stream.on('error', reject);
          stream.on('end', () => {
            clearTimeout(timer);
            resolve({ body, trailers, replayed });
          });
          stream.end();
        },
      );
    try {
      const first = await ask();
      const replay = await ask();
      expect(first).toEqual({ body: 'abc', trailers: { 'x-a': '1' }, replayed: undefined });
      expect(replay).toEqual({ body: 'abc', trailers: first.trailers, replayed: 'true' });
      expect(runs).toBe(1);
    } finally {
      client.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it('a 204 with trailers (Node refuses a Trailer header on it): none recorded, none replayed, the next pipelined response parses', async () => {
    // (A 304 is not recorded: its retry runs again; pipelined, it meets the key in progress.)
    for (const status of [204]) {
      const { port } = await serve((_req, res) => {
        res.statusCode = status;
        res.addTrailers({ 'x-a': '1' });
        res.end();
      });
      const request = (key: string, close = false) =>
        `POST / HTTP/1.1\r\nHost: x\r\nIdempotency-Key: "${key}"\r\nContent-Length: 0\r\n${close ? 'Connection: close\r\n' : ''}\r\n`;
      const answers = parseResponses(
        await raw(
          port,
          request(`s${status}`) + request(`s${status}`) + request(`t${status}`, true),
        ),
      );
      expect(answers.map((a) => a.status)).toEqual([status, status, status]);
      expect(answers[1]?.headers).toContainEqual(['idempotent-replayed', 'true']);
      for (const answer of answers) {
        expect(answer.trailers).toEqual([]);
        expect(answer.body).toBe('');
      }
      expect(answers[1]?.headers.some(([name]) => name === 'trailer')).toBe(false);
    }
  });

  it('pipelined on one keep-alive socket: a first execution with trailers, its replay and a second key, interleaved; every response parses, trailers where they belong', async () => {
    const { port, runs } = await serve(declaring, {}, { endedWhileHeld: true });
    const post1 = (key: string, method = 'POST', close = false) =>
      `${method} / HTTP/1.1\r\nHost: x\r\nIdempotency-Key: "${key}"\r\nContent-Length: 0\r\n${close ? 'Connection: close\r\n' : ''}\r\n`;
    const data = await raw(
      port,
      post1('p1') + post1('p1') + post1('p2') + post1('p1') + post1('p2', 'POST', true),
    );
    const answers = parseResponses(data);
    expect(answers).toHaveLength(5);
    for (const answer of answers) {
      expect(answer.status).toBe(200);
      expect(answer.body).toBe('abc');
      expect(answer.trailers).toEqual([['x-checksum', 'sha-abc']]);
    }
    expect(
      answers.map((a) => a.headers.some(([n, v]) => n === 'idempotent-replayed' && v === 'true')),
    ).toEqual([false, true, false, true, true]);
    expect(runs()).toBe(2);
  });

  it('an HTTP/1.0 keep-alive client: the replay has no trailers and is framed as without idem (Node closes after it), its body whole', async () => {
    const { port } = await serve(declaring);
    await post(port, 'k10');
    const req10 =
      'POST / HTTP/1.0\r\nConnection: keep-alive\r\nIdempotency-Key: "k10"\r\nContent-Length: 0\r\n\r\n';
    // Node frames a response to an HTTP/1.0 client without Content-Length by the close (it
    // adds none itself): one response, read strictly to the close, nothing left over.
    const answers = parseResponses(await raw(port, req10 + req10), true);
    expect(answers).toHaveLength(1);
    expect(answers[0]?.headers).toContainEqual(['connection', 'close']);
    expect(answers[0]?.headers.some(([name]) => name === 'transfer-encoding')).toBe(false);
    expect(answers[0]?.body).toBe('abc');
    expect(answers[0]?.trailers).toEqual([]);
    expect(answers[0]?.headers).toContainEqual(['idempotent-replayed', 'true']);
  });

  it('an HTTP/1.0 client of a route that sets a Trailer header: Node refuses the head in the app, as without idem; the app fallback passes through unrecorded (documented: the key is released), no error escapes', async () => {
    const app: App = (_req, res) => {
      res.setHeader('Trailer', 'x-a');
      try {
        res.write('abc');
        res.addTrailers({ 'x-a': '1' });
        res.end();
      } catch (error) {
        res.removeHeader('trailer');
        res.end(`fallback ${(error as { code?: string }).code}`);
      }
    };
    const req10 = 'POST / HTTP/1.0\r\nIdempotency-Key: "t10"\r\nContent-Length: 0\r\n\r\n';
    const plain = await serve(app, {}, { withIdem: false });
    const withIdem = await serve(app, {}, { endedWhileHeld: true });
    const [expected] = parseResponses(await raw(plain.port, req10), true);
    const [first] = parseResponses(await raw(withIdem.port, req10), true);
    const [again] = parseResponses(await raw(withIdem.port, req10), true);
    expect(expected?.body).toBe('fallback ERR_HTTP_TRAILER_INVALID');
    expect(first?.body).toBe(expected?.body);
    expect(again?.body).toBe(expected?.body);
    expect(withIdem.runs()).toBe(2);
  });
});

describe('rev12e: writeHead headers (the first value kept as a string)', () => {
  it('a flat array to writeHead (repeated Link, Set-Cookie pair): the first client gets every line, the replay the recorded Link joined and no Set-Cookie', async () => {
    const { port, runs } = await serve((_req, res) => {
      res.writeHead(201, [
        'Link',
        '<a>; rel=a',
        'Set-Cookie',
        's=1',
        'link',
        '<b>; rel=b',
        'Set-Cookie',
        't=2',
        'Content-Type',
        'text/plain',
      ]);
      res.end('abc');
    });
    const first = await post(port, 'wh1');
    expect(first.headers['set-cookie']).toEqual(['s=1', 't=2']);
    expect(first.headers.link).toBe('<a>; rel=a, <b>; rel=b');
    const replay = await post(port, 'wh1');
    expect(replay.status).toBe(201);
    expect(replay.headers.link).toBe('<a>; rel=a, <b>; rel=b');
    expect(replay.headers['content-type']).toBe('text/plain');
    expect(replay.headers['set-cookie']).toBeUndefined();
    expect(replay.body.toString()).toBe('abc');
    expect(runs()).toBe(1);
  });

  it('an object to writeHead over setHeader values (a one-item list, a string over an array, an array over a string): the replay has what Node sent', async () => {
    const { port } = await serve((_req, res) => {
      res.setHeader('vary', ['accept', 'origin']);
      res.setHeader('etag', '"old"');
      res.setHeader('Set-Cookie', ['a=1']);
      res.writeHead(200, <import('node:http').OutgoingHttpHeaders>(<unknown>{
        Vary: 'cookie',
        etag: ['"new"'],
        link: ['<x>; rel=x', '<y>; rel=y'],
        'Set-Cookie': ['b=2', 'c=3'],
        'content-type': 'text/plain',
      }));
      res.end('abc');
    });
    const first = await post(port, 'wh2');
    const replay = await post(port, 'wh2');
    expect(replay.headers['idempotent-replayed']).toBe('true');
    for (const name of ['vary', 'etag', 'link', 'content-type'])
      expect(replay.headers[name], name).toBe(first.headers[name]);
    expect(first.headers['set-cookie']).toBeDefined();
    expect(replay.headers['set-cookie']).toBeUndefined();
  });
});

describe('rev12e: trailers through Redis (127.0.0.1:6379)', () => {
  it('trailers (Latin-1, many) round-trip through the Redis store; trailers past the store limit: not recorded, the retry is told so, the first client got them', async () => {
    const client = new Redis('redis://127.0.0.1:6379', {
      lazyConnect: true,
      maxRetriesPerRequest: 1,
    });
    await client.connect();
    const prefix = `rev12e-trailers:${randomBytes(6).toString('hex')}:`;
    try {
      const names = Array.from({ length: 50 }, (_, i) => `x-t${i}`);
      const { port, runs } = await serve(
        (_req, res) => {
          res.setHeader('Trailer', names.join(', '));
          res.write('abc');
          res.addTrailers(Object.fromEntries(names.map((name, i) => [name, `caf\u00e9-${i}`])));
          res.end();
        },
        { store: createRedisStore({ client, keyPrefix: prefix }) },
      );
      const first = await post(port, 'redis-1');
      const replay = await post(port, 'redis-1');
      expect(replay.headers['idempotent-replayed']).toBe('true');
      // Recorded sorted by name (as a Headers iterates them), the values byte for byte.
      expect(replay.trailers).toEqual(first.trailers);
      expect(replay.trailers['x-t7']).toBe('caf\u00e9-7');
      expect(Object.keys(replay.trailers)).toHaveLength(50);
      expect(runs()).toBe(1);
      // The store's own limit (lower than maxOutcomeBytes) counts the trailers too.
      const small = await serve(
        (_req, res) => {
          res.setHeader('Trailer', 'x-big');
          res.write('abc');
          res.addTrailers({ 'x-big': 'v'.repeat(3_000) });
          res.end();
        },
        { store: createRedisStore({ client, keyPrefix: prefix, maxOutcomeBytes: 2_048 }) },
      );
      const big = await post(small.port, 'redis-2');
      expect(big.trailers['x-big']).toHaveLength(3_000);
      const retry = await post(small.port, 'redis-2');
      expect(retry.status).toBe(500);
      expect(retry.body.toString()).toContain('outcome-not-recorded');
      expect(small.runs()).toBe(1);
    } finally {
      const keys = await client.keys(`${prefix}*`);
      if (keys.length > 0) await client.del(...keys);
      client.disconnect();
    }
  });
});

describe("rev12e: readyForOwnMethods skips objects with Node's own prototypes", () => {
  it('a plain node:http request and response keep their keys in order and every value; an object with another prototype keeps its values and its existing key', async () => {
    let checked = false;
    const server = createServer((req, res) => {
      (res as unknown as Record<string, unknown>).extra = 1;
      const reqKeys = Reflect.ownKeys(req);
      const resKeys = Reflect.ownKeys(res);
      readyForOwnMethods(req, 'res');
      readyForOwnMethods(res, 'req');
      expect(Reflect.ownKeys(req)).toEqual(reqKeys);
      expect(Reflect.ownKeys(res)).toEqual(resKeys);
      const proto = Object.create(Object.getPrototypeOf(res));
      const other = Object.setPrototypeOf({ a: 1, req: 'r', b: 2 }, proto);
      readyForOwnMethods(other, 'req');
      expect({ ...other }).toEqual({ a: 1, req: 'r', b: 2 });
      expect(Object.getOwnPropertyDescriptor(other, 'req')).toEqual({
        value: 'r',
        writable: true,
        enumerable: true,
        configurable: true,
      });
      checked = true;
      res.end('ok');
    });
    const port = await listen(server);
    const text = (
      await raw(port, 'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
    ).toString('latin1');
    expect(text).toMatch(/^HTTP\/1\.1 200/);
    expect(checked).toBe(true);
  });
});
