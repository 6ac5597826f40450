import {
  createServer,
  type IncomingHttpHeaders,
  type IncomingMessage,
  request,
  type Server,
  type ServerResponse,
} from 'node:http';
import {
  type ClientHttp2Session,
  type Http2Server,
  connect as http2Connect,
  createServer as http2CreateServer,
} from 'node:http2';
import { type AddressInfo, connect } from 'node:net';
import { OutcomeCorruptError, type StoredOutcome } from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';
import { afterEach, describe, expect, it } from 'vitest';
import { CaptureBuffer } from '../src/capture-buffer.js';
import {
  createIdempotencyHandler,
  type HttpIdempotencyOptions,
  OUTCOME_FORMAT,
  replayResponse,
} from '../src/index.js';
import {
  decisionTrailers,
  recordServerResponse,
  requestUrl,
  sendDecisionResponse,
  wholeDecisionResponse,
} from '../src/node.js';
import { respondWith } from '../src/prepared-response.js';
import { prepareReplay } from '../src/replay.js';
import { described } from './support/recorded-server.js';

// Trailers (`res.addTrailers`): the fields a response's `Trailer` header declares are recorded
// with its outcome (meta `trailers`, optional) and replayed after the body by the Node sender;
// a Web `Response` has no trailers, so the Web path replays without them.

function outcome(meta: Record<string, unknown>, body = 'abc'): StoredOutcome {
  return { meta: { format: OUTCOME_FORMAT, ...meta }, body: new TextEncoder().encode(body) };
}

describe('the outcome format: trailers', () => {
  it('a record with trailers replays them (prepared form), in order', () => {
    const prepared = prepareReplay(
      outcome({
        status: 200,
        headers: [['content-type', 'text/plain']],
        chunks: [1, 2],
        trailers: [
          ['x-checksum', 'sha-abc'],
          ['x-count', '3'],
        ],
      }),
    );
    expect(prepared.trailers).toEqual([
      ['x-checksum', 'sha-abc'],
      ['x-count', '3'],
    ]);
    expect(prepared.chunks.map((chunk) => chunk.length)).toEqual([1, 2]);
  });

  it('an old-format record (no trailers) replays exactly as before: no trailers key at all', () => {
    for (const chunks of [[], [3], [1, 2]]) {
      const prepared = prepareReplay(
        outcome({ status: 200, headers: [['etag', '"x"']], chunks }, chunks.length ? 'abc' : ''),
      );
      expect(Object.keys(prepared).sort()).toEqual(['chunks', 'headers', 'reason', 'status']);
      expect(prepared.headers).toEqual([
        ['etag', '"x"'],
        ['idempotent-replayed', 'true'],
      ]);
    }
  });

  it('fields it does not know are ignored (what a version before trailers does with them)', () => {
    const prepared = prepareReplay(
      outcome({ status: 201, headers: [], chunks: [3], trailers: [['x-a', '1']], later: { a: 1 } }),
    );
    expect(prepared.status).toBe(201);
    expect(prepared.trailers).toEqual([['x-a', '1']]);
  });

  it('a status without a body replays without trailers', () => {
    const prepared = prepareReplay(
      outcome({ status: 204, headers: [], chunks: [], trailers: [['x-a', '1']] }, ''),
    );
    expect(prepared.trailers).toBeUndefined();
  });

  it('trailers that are no recorded fields make the outcome corrupt', () => {
    for (const trailers of [
      'x-a: 1',
      [['X-A', '1']],
      [['x a', '1']],
      [['x-a', 'a\r\nb']],
      [['x-a', 1]],
      [['x-a']],
      ['x-a', '1'],
    ]) {
      expect(
        () => prepareReplay(outcome({ status: 200, headers: [], chunks: [3], trailers })),
        JSON.stringify(trailers),
      ).toThrow(OutcomeCorruptError);
    }
  });

  it('the Web replay has no trailers and names none', async () => {
    const response = replayResponse(
      outcome({ status: 200, headers: [], chunks: [3], trailers: [['x-a', '1']] }),
    );
    expect(response.headers.has('trailer')).toBe(false);
    expect(await response.text()).toBe('abc');
  });

  it('trailers count toward maxOutcomeBytes', () => {
    const meta = { format: OUTCOME_FORMAT, status: 200, headers: [], chunks: [] };
    const size = (extra: number) => 8 + JSON.stringify({ ...meta, chunks: [3] }).length + 3 + extra;
    const trailers: [string, string][] = [['x-checksum', 'v'.repeat(100)]];
    const trailerBytes = JSON.stringify({ trailers }).length - 1;
    // Room for the body and the trailers, to the byte.
    const fits = new CaptureBuffer(size(trailerBytes), meta);
    fits.append(new TextEncoder().encode('abc'));
    fits.trailers(trailers);
    expect(fits.overflowed).toBe(false);
    expect(fits.outcome().meta.trailers).toEqual(trailers);
    // One byte less: past the cap, nothing held.
    const over = new CaptureBuffer(size(trailerBytes) - 1, meta);
    over.append(new TextEncoder().encode('abc'));
    expect(over.overflowed).toBe(false);
    over.trailers(trailers);
    expect(over.overflowed).toBe(true);
    expect(over.held()).toBeUndefined();
  });
});

// --- on loopback ------------------------------------------------------------------------

const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  await Promise.all(closers.splice(0).map((close) => close()));
});

type App = (req: IncomingMessage, res: ServerResponse) => void;

/** A node:http server: replays through `sendDecisionResponse`, executions recorded. */
async function serve(app: App, options: Partial<HttpIdempotencyOptions<IncomingMessage>> = {}) {
  const warnings: string[] = [];
  let runs = 0;
  /** Replay writes the socket asked to wait after (the sender then waits for 'drain'). */
  let waits = 0;
  const idem = createIdempotencyHandler<IncomingMessage>({
    store: createMemoryStore(),
    scope: 'global',
    onWarning: (message) => warnings.push(message),
    ...options,
  });
  const server: Server = createServer(async (req, res) => {
    const decision = await idem.begin(described(req));
    if (decision.action === 'respond') {
      const write = res.write;
      res.write = function counted(this: ServerResponse, ...args: unknown[]) {
        const ok = (write as (...a: unknown[]) => boolean).apply(this, args);
        if (!ok) waits++;
        return ok;
      } as ServerResponse['write'];
      return sendDecisionResponse(res, decision);
    }
    if (decision.action !== 'execute') throw new Error(decision.action);
    recordServerResponse(res, decision.recorder);
    runs++;
    app(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  closers.push(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  return {
    port: (server.address() as AddressInfo).port,
    warnings,
    runs: () => runs,
    waits: () => waits,
  };
}

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
  trailers: NodeJS.Dict<string>;
}

/** A POST with `key` through node:http's client (read after `pauseMs`); 5 s bound. */
function post(port: number, key: string, method = 'POST', pauseMs = 0): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port, method, path: '/', headers: { 'idempotency-key': key } },
      (res) => {
        const parts: Buffer[] = [];
        if (pauseMs > 0) {
          res.pause();
          setTimeout(() => res.resume(), pauseMs);
        }
        res.on('data', (chunk: Buffer) => parts.push(chunk));
        res.on('end', () => {
          clearTimeout(timer);
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(parts).toString('latin1'),
            trailers: res.trailers,
          });
        });
      },
    );
    const timer = setTimeout(() => req.destroy(new Error('no answer within 5 s')), 5_000);
    req.on('error', reject);
    req.end();
  });
}

/** The whole raw answer to an HTTP/1.0 request (the server closes); 5 s bound. */
function raw10(port: number, key: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    const timer = setTimeout(() => socket.destroy(new Error('no answer within 5 s')), 5_000);
    let data = '';
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      data += chunk;
    });
    socket.on('error', reject);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(data);
    });
    socket.write(`POST / HTTP/1.0\r\nIdempotency-Key: ${key}\r\nContent-Length: 0\r\n\r\n`);
  });
}

const declaring: App = (_req, res) => {
  res.setHeader('Trailer', 'X-Checksum, X-Count');
  res.setHeader('content-type', 'text/plain');
  res.write('abc');
  res.addTrailers({ 'X-Checksum': 'sha-abc', 'X-Count': '3' });
  res.end();
};

describe('trailers on node:http', () => {
  it('declared trailers are recorded and replayed after the body', async () => {
    const { port, runs, warnings } = await serve(declaring);
    const first = await post(port, 'k1');
    const replay = await post(port, 'k1');
    expect(first.trailers).toEqual({ 'x-checksum': 'sha-abc', 'x-count': '3' });
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.body).toBe('abc');
    expect(replay.trailers).toEqual(first.trailers);
    expect(replay.headers.trailer).toBe('x-checksum, x-count');
    expect(replay.headers['transfer-encoding']).toBe('chunked');
    expect(replay.headers['content-length']).toBeUndefined();
    expect(runs()).toBe(1);
    expect(warnings).toEqual([]);
  });

  it('a streamed body of many chunks (coalesced, past 64 KiB) replays whole, trailers last', async () => {
    const piece = 'x'.repeat(1_000);
    const { port, runs } = await serve((_req, res) => {
      res.setHeader('Trailer', 'x-checksum');
      let i = 0;
      const next = () => {
        if (i < 150) {
          res.write(`${piece}${String(i++).padStart(3, '0')}`);
          setImmediate(next);
          return;
        }
        res.addTrailers([['X-Checksum', 'sha-stream']]);
        res.end();
      };
      next();
    });
    const first = await post(port, 'k2');
    const replay = await post(port, 'k2');
    expect(first.body.length).toBe(150 * 1_003);
    expect(replay.body).toBe(first.body);
    expect(replay.trailers).toEqual({ 'x-checksum': 'sha-stream' });
    expect(runs()).toBe(1);
  });

  it('a replay that waits for drain (a client slow to read) still ends with its trailers', async () => {
    const piece = Buffer.alloc(4_096, 'y');
    const { port, waits } = await serve((_req, res) => {
      res.setHeader('Trailer', 'x-checksum');
      for (let i = 0; i < 200; i++) res.write(piece);
      res.addTrailers({ 'x-checksum': 'sha-slow' });
      res.end();
    });
    await post(port, 'k9');
    const replay = await post(port, 'k9', 'POST', 300);
    expect(replay.body.length).toBe(200 * 4_096);
    expect(replay.trailers).toEqual({ 'x-checksum': 'sha-slow' });
    expect(waits()).toBeGreaterThan(0);
  });

  it('an empty body with trailers replays them', async () => {
    const { port } = await serve((_req, res) => {
      res.setHeader('Trailer', 'x-done');
      res.addTrailers({ 'x-done': 'yes' });
      res.end();
    });
    await post(port, 'k3');
    const replay = await post(port, 'k3');
    expect(replay.body).toBe('');
    expect(replay.trailers).toEqual({ 'x-done': 'yes' });
  });

  it('an undeclared trailer is not recorded: a warning names it, replays go without it', async () => {
    const { port, warnings } = await serve((_req, res) => {
      res.setHeader('Trailer', 'x-checksum');
      res.write('abc');
      res.addTrailers({ 'x-checksum': 'sha-abc', 'x-debug': 'd', 'Content-Type': 'text/x' });
      res.end();
    });
    const first = await post(port, 'k4');
    expect(first.trailers).toEqual({
      'x-checksum': 'sha-abc',
      'x-debug': 'd',
      'content-type': 'text/x',
    });
    const replay = await post(port, 'k4');
    expect(replay.trailers).toEqual({ 'x-checksum': 'sha-abc' });
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/Trailer field\(s\) x-debug, content-type of .* were not recorded/);
  });

  it('a response without a Trailer header records none of its trailers (and says so)', async () => {
    const { port, warnings } = await serve((_req, res) => {
      res.write('abc');
      res.addTrailers({ 'x-checksum': 'sha-abc' });
      res.end();
    });
    expect((await post(port, 'k5')).trailers).toEqual({ 'x-checksum': 'sha-abc' });
    const replay = await post(port, 'k5');
    expect(replay.body).toBe('abc');
    expect(replay.trailers).toEqual({});
    expect(replay.headers.trailer).toBeUndefined();
    expect(warnings[0]).toMatch(/x-checksum .* not recorded/);
  });

  it('an HTTP/1.0 client gets the replay without trailers (Node sends it none), body whole', async () => {
    const { port } = await serve(declaring);
    await post(port, 'k6');
    const answer = await raw10(port, 'k6');
    expect(answer).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(answer).toContain('idempotent-replayed: true');
    expect(answer).not.toMatch(/trailer|x-checksum|chunked/i);
    expect(answer.endsWith('\r\n\r\nabc')).toBe(true);
  });

  it('the sender: a HEAD request and an HTTP/1.0 client get no trailer section', async () => {
    // A HEAD is never recorded (not guarded): the sender is driven with a prepared replay.
    const server = createServer((_req, res) => {
      void sendDecisionResponse(
        res,
        respondWith(
          {
            status: 200,
            headers: [['content-type', 'text/plain']],
            chunks: [new TextEncoder().encode('ab'), new TextEncoder().encode('c')],
            trailers: [['x-a', '1']],
          },
          true,
        ),
      );
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    closers.push(
      () =>
        new Promise<void>((resolve) => {
          server.closeAllConnections();
          server.close(() => resolve());
        }),
    );
    const port = (server.address() as AddressInfo).port;
    const head = await post(port, 'h', 'HEAD');
    expect(head.status).toBe(200);
    expect(head.body).toBe('');
    expect(head.headers.trailer).toBeUndefined();
    expect(head.trailers).toEqual({});
    const get = await post(port, 'h', 'GET');
    expect(get.body).toBe('abc');
    expect(get.trailers).toEqual({ 'x-a': '1' });
    // Several chunks to an HTTP/1.0 client: no chunked framing, the end of the body is the close.
    const old = await raw10(port, 'h');
    expect(old).not.toMatch(/trailer|x-a|chunked/i);
    expect(old.endsWith('\r\n\r\nabc')).toBe(true);
  });

  it('trailers past maxOutcomeBytes: not recorded, a retry gets outcome-not-recorded', async () => {
    const { port, runs, warnings } = await serve(
      (_req, res) => {
        res.setHeader('Trailer', 'x-big');
        res.write('abc');
        res.addTrailers({ 'x-big': 'v'.repeat(2_000) });
        res.end();
      },
      { maxOutcomeBytes: 1_024 },
    );
    const first = await post(port, 'k8');
    expect(first.trailers['x-big']).toHaveLength(2_000);
    const retry = await post(port, 'k8');
    expect(retry.status).toBe(500);
    expect(retry.body).toContain('outcome-not-recorded');
    expect(runs()).toBe(1);
    expect(warnings.some((w) => /over maxOutcomeBytes/.test(w))).toBe(true);
  });

  it('the Node helpers for frameworks give the trailers of a replay', async () => {
    const idem = createIdempotencyHandler({ store: createMemoryStore(), scope: 'global' });
    const begin = () =>
      idem.begin({
        native: {} as Request,
        method: 'POST',
        url: 'http://localhost/',
        header: (name) => (name.toLowerCase() === 'idempotency-key' ? '"k"' : undefined),
        readBody: async () => ({ kind: 'none' }),
      });
    const first = await begin();
    if (first.action !== 'execute') throw new Error(first.action);
    const headers = new Headers({ trailer: 'x-a', 'content-type': 'text/plain' });
    first.recorder.start(200, headers);
    first.recorder.capture(new TextEncoder().encode('abc'));
    const [key] = Object.getOwnPropertySymbols(first.recorder).filter(
      (symbol) => symbol.description === '@idem/http.recorder.trailers',
    );
    (first.recorder as unknown as Record<symbol, (f: [string, string][]) => void>)[key as symbol]?.(
      [['X-A', '1']],
    );
    await first.recorder.finish();
    const replay = await begin();
    if (replay.action !== 'respond') throw new Error(replay.action);
    expect(decisionTrailers(replay)).toEqual([['x-a', '1']]);
    expect(wholeDecisionResponse(replay)?.trailers).toEqual([['x-a', '1']]);
    expect(replay.response.headers.has('trailer')).toBe(false);
  });
});

describe('trailers on node:http2 (compat response)', () => {
  it('recorded from addTrailers and replayed at the end of the stream', async () => {
    let runs = 0;
    const idem = createIdempotencyHandler({
      store: createMemoryStore(),
      scope: 'global',
      onWarning: () => {},
    });
    const server: Http2Server = http2CreateServer(async (req, res) => {
      const decision = await idem.begin({
        native: req as unknown as Request,
        method: req.method ?? 'GET',
        url: requestUrl(req.url ?? '/'),
        header: (name) => req.headers[name.toLowerCase()] as string | undefined,
        readBody: async () => ({ kind: 'none' }),
      });
      if (decision.action === 'respond') return sendDecisionResponse(res as never, decision);
      if (decision.action !== 'execute') throw new Error(decision.action);
      recordServerResponse(res as never, decision.recorder);
      runs++;
      res.setHeader('trailer', 'x-checksum');
      res.write('ab');
      res.addTrailers({ 'X-Checksum': 'sha-h2' });
      res.end('c');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const client: ClientHttp2Session = http2Connect(
      `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    );
    client.on('error', () => {});
    closers.push(async () => {
      client.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    });
    const exchange = () =>
      new Promise<{ headers: IncomingHttpHeaders; body: string; trailers: IncomingHttpHeaders }>(
        (resolve, reject) => {
          const stream = client.request({
            ':method': 'POST',
            ':path': '/',
            'idempotency-key': 'h',
          });
          const timer = setTimeout(() => stream.destroy(new Error('no answer within 5 s')), 5_000);
          let headers: IncomingHttpHeaders = {};
          let trailers: IncomingHttpHeaders = {};
          const parts: Buffer[] = [];
          stream.on('response', (h) => {
            headers = h;
          });
          stream.on('trailers', (t) => {
            trailers = t;
          });
          stream.on('data', (chunk: Buffer) => parts.push(chunk));
          stream.on('end', () => {
            clearTimeout(timer);
            resolve({ headers, body: Buffer.concat(parts).toString(), trailers });
          });
          stream.on('error', reject);
          stream.end();
        },
      );
    const first = await exchange();
    const replay = await exchange();
    expect(first.trailers['x-checksum']).toBe('sha-h2');
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.headers.trailer).toBe('x-checksum');
    expect(replay.body).toBe('abc');
    expect(replay.trailers['x-checksum']).toBe('sha-h2');
    expect(runs).toBe(1);
  });
});
