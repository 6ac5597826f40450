import {
  createServer as createH1Server,
  request as httpRequest,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type ServerResponse,
} from 'node:http';
import {
  type ClientHttp2Session,
  createServer as createH2Server,
  constants as http2Constants,
} from 'node:http2';
import type { AddressInfo, Socket } from 'node:net';
import { createMemoryStore } from '@idem/store-memory';
import { afterEach, describe, expect, it } from 'vitest';
import { createIdempotencyHandler } from '../src/index.js';
import {
  headerValue,
  nodeRequestBody,
  recordServerResponse,
  requestUrl,
  sendDecisionResponse,
} from '../src/node.js';
import {
  type App,
  closeAll,
  closers,
  deferred,
  session as h2Session,
  listenLoopback,
  type RecordingOptions,
  recordedHandler,
  untilSettled,
} from './support/h2c.js';

// Adversarial review of wt/harden9's recorder changes: ends made from 'close' listeners
// (HTTP/2 stream 'close', listeners held until the lease was lost), and HTTP/2 header values
// a client drops. Real servers on loopback, real node:http and node:http2 clients.

type Protocol = 'h1' | 'h2';
type Answer = { status: number; headers: IncomingHttpHeaders; body: string };

afterEach(closeAll);

type Options = Pick<RecordingOptions, 'leaseMs' | 'maxHoldMs' | 'recordedHeaders'>;

async function harness(protocol: Protocol, app: App, options: Options = {}) {
  const { handle, runs } = recordedHandler(app, options);
  const server =
    protocol === 'h2'
      ? createH2Server((req, res) => void handle(req as never, res as never))
      : createH1Server((req, res) => void handle(req, res));
  const port = await listenLoopback(server);
  let client: ClientHttp2Session | undefined;
  const session = () => {
    client ??= h2Session(port);
    return client;
  };
  /** A POST; `reset` makes the client leave once the first chunk of the answer came. */
  const post = (key: string, reset = false): Promise<Answer> =>
    new Promise((resolve, reject) => {
      const parts: Buffer[] = [];
      if (protocol === 'h2') {
        const stream = session().request({
          ':method': 'POST',
          ':path': '/',
          'idempotency-key': key,
        });
        let headers: IncomingHttpHeaders = {};
        stream.on('response', (got) => {
          headers = got as IncomingHttpHeaders;
        });
        stream.on('data', (chunk: Buffer) => {
          parts.push(chunk);
          if (reset) stream.close(http2Constants.NGHTTP2_CANCEL);
        });
        const done = () =>
          resolve({
            status: Number(headers[':status']),
            headers,
            body: Buffer.concat(parts).toString(),
          });
        stream.on('end', done);
        stream.on('close', done);
        stream.on('error', reset ? () => {} : reject);
        stream.end('b');
        return;
      }
      const req = httpRequest({
        host: '127.0.0.1',
        port,
        method: 'POST',
        path: '/',
        headers: { 'idempotency-key': key, 'content-length': '1' },
      });
      req.on('error', reset ? () => {} : reject);
      req.on('response', (res) => {
        res.on('data', (chunk: Buffer) => {
          parts.push(chunk);
          if (reset) {
            req.destroy();
            resolve({ status: res.statusCode ?? 0, headers: res.headers, body: 'reset' });
          }
        });
        res.on('error', () => {});
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(parts).toString(),
          }),
        );
      });
      req.end('b');
    });
  /** Posts until the key is no longer in flight (409). */
  const settled = (key: string) => untilSettled(() => post(key));
  return { post, settled, runs };
}

describe("review: an end made from the response's own 'close' once the lease was lost", () => {
  for (const protocol of ['h1', 'h2'] as const) {
    it(// FINDING (HIGH, exactly-once; fixed on this branch): the response's 'close' is held
    // while the client is gone and emitted (by `releaseClose`) when the lease is lost. An
    // app that ends the response from its own res 'close' listener (a cleanup "end if not
    // ended") ended a body cut short there, and it was recorded and replayed as the outcome
    // (the deferred socket/stream listeners of the same moment counted as a cut body since
    // harden9, res's did not).
    `${protocol}: res.once('close', end) after a reset is a cut body: not recorded, a retry runs again`, async () => {
      const h = await harness(
        protocol,
        (_req, res) => {
          res.write('part-1;');
          if (h.runs() === 2) {
            res.end('whole');
            return;
          }
          res.once('close', () => {
            if (!res.writableEnded) res.end('cut');
          });
        },
        { leaseMs: 300, maxHoldMs: 900 },
      );
      await h.post('k', true);
      const retry = await h.settled('k');
      expect(retry.headers['idempotent-replayed']).toBeUndefined();
      expect(retry.body).toBe('part-1;whole');
      expect(h.runs()).toBe(2);
    });
  }

  // OPEN FINDING (MEDIUM, exactly-once, a design question, not pinned by a test): the client
  // left, the lease was lost, the held 'close' went out; an app that stops its work on it and
  // ends a tick later (a pipeline callback, an async cleanup) may have that cut body recorded
  // and replayed as the outcome: the end is not made from a listener. Whether it is recorded
  // hangs on timing (the socket or HTTP/2 stream may be gone by then, and the late end fails),
  // so an `it.fails` here passed in some runs on Node 20 and 24 and could pin nothing. The Web
  // path (`recordResponse`) cancels such a body and releases the key; refusing every end after
  // a lost lease would also refuse a slow handler that finishes its real work late.

  it("h1: a socket 'close' listener added by the app, run when the lease is lost: not recorded", async () => {
    const h = await harness(
      'h1',
      (_req, res) => {
        res.write('part-1;');
        if (h.runs() === 2) {
          res.end('whole');
          return;
        }
        (res.socket as Socket).once('close', () => res.end('cut'));
      },
      { leaseMs: 300, maxHoldMs: 900 },
    );
    await h.post('k', true);
    const retry = await h.settled('k');
    expect(retry.headers['idempotent-replayed']).toBeUndefined();
    expect(retry.body).toBe('part-1;whole');
    expect(h.runs()).toBe(2);
  });
});

describe('review: a complete response whose stream closes afterwards is still recorded', () => {
  for (const protocol of ['h1', 'h2'] as const) {
    it(`${protocol}: ended normally, then listeners of every 'close' end again: replayed, run once`, async () => {
      const closed = deferred();
      const h = await harness(protocol, (req, res) => {
        const again = () => {
          res.end('late');
          closed.resolve();
        };
        req.once('close', again);
        res.once('close', again);
        if (protocol === 'h2')
          (req as unknown as { stream: NodeJS.EventEmitter }).stream.once('close', again);
        else (res.socket as Socket).once('close', again);
        res.write('a;');
        res.end('whole');
      });
      const first = await h.post('k');
      expect(first.body).toBe('a;whole');
      await closed.promise;
      const retry = await h.post('k');
      expect(retry.headers['idempotent-replayed']).toBe('true');
      expect(retry.body).toBe('a;whole');
      expect(h.runs()).toBe(1);
    });

    it(`${protocol}: the client leaves after the end was made (held for the record): recorded, replayed`, async () => {
      // The end is made once the first chunk went out; the client resets on that chunk, so
      // the reset comes while (or after) the end waits for the record.
      const h = await harness(protocol, (_req, res) => {
        res.write('a;');
        setImmediate(() => res.end('whole'));
      });
      await h.post('k', true);
      const retry = await h.settled('k');
      expect(retry.body).toBe('a;whole');
      expect(h.runs()).toBe(1);
    });

    it(`${protocol}: the client leaves, the app writes on and ends later (not from a listener): recorded whole`, async () => {
      const left = deferred();
      const h = await harness(protocol, (req, res) => {
        res.write('a;');
        req.once('close', () => left.resolve());
        void left.promise.then(() => setTimeout(() => res.end('b;whole'), 5));
      });
      await h.post('k', true);
      const retry = await h.settled('k');
      expect(retry.headers['idempotent-replayed']).toBe('true');
      expect(retry.body).toBe('a;b;whole');
      expect(h.runs()).toBe(1);
    });
  }
});

describe('review: HTTP/2 header values a client drops, and HTTP/1.1 unchanged', () => {
  const recordedHeaders = [
    'cache-control',
    'content-type',
    'x-del',
    'x-nbsp',
    'x-num',
    'x-empty',
    'x-append',
  ];
  const app: App = (_req, res) => {
    res.setHeader('content-type', ' text/plain');
    res.setHeader('cache-control', ['no-store', ' private']);
    res.setHeader('x-nbsp', '\u00a0g');
    res.setHeader('x-num', 5);
    res.setHeader('x-empty', ['', 'i']);
    (res as ServerResponse & { appendHeader?: (n: string, v: string) => void }).appendHeader?.(
      'x-append',
      'one',
    );
    (res as ServerResponse & { appendHeader?: (n: string, v: string) => void }).appendHeader?.(
      'x-append',
      'two ',
    );
    res.end('ok');
  };
  const head = (headers: IncomingHttpHeaders) => {
    const {
      date: _date,
      'idempotent-replayed': _replayed,
      connection: _connection,
      'keep-alive': _alive,
      'content-length': _length,
      'transfer-encoding': _encoding,
      ...rest
    } = headers;
    return rest;
  };
  for (const protocol of ['h1', 'h2'] as const) {
    it(`${protocol}: the replay's head equals the first client's (edge space, an array with one bad value, appendHeader, latin1)`, async () => {
      const h = await harness(protocol, app, { recordedHeaders });
      const first = await h.post('k');
      const replay = await h.post('k');
      expect(replay.headers['idempotent-replayed']).toBe('true');
      expect(replay.body).toBe('ok');
      if (protocol === 'h2') expect(first.headers['content-type']).toBeUndefined();
      else expect(first.headers['content-type']).toBe('text/plain');
      expect(head(replay.headers)).toEqual(head(first.headers));
      expect(h.runs()).toBe(1);
    });
  }

  it("h2: a value with a DEL (0x7f) the client drops as well: the replay's head still equals the first", async () => {
    // Not an edge: recorded, but the client drops it from the replay too (same client).
    const h = await harness(
      'h2',
      (_req, res) => {
        res.setHeader('x-del', 'h\x7f');
        res.end('ok');
      },
      { recordedHeaders },
    );
    const first = await h.post('k');
    const replay = await h.post('k');
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(first.headers['x-del']).toBeUndefined();
    expect(head(replay.headers)).toEqual(head(first.headers));
  });
});

describe('review: req.rawBody kept as text by a reader before idem (as Express apps do)', () => {
  async function rawTextServer() {
    const idem = createIdempotencyHandler<IncomingMessage>({
      store: createMemoryStore(),
      scope: 'global',
      onWarning: () => {},
    });
    let runs = 0;
    const errors: string[] = [];
    const server = createH1Server(async (req, res) => {
      const parts: Buffer[] = [];
      for await (const chunk of req) parts.push(chunk as Buffer);
      (req as IncomingMessage & { rawBody?: string }).rawBody = Buffer.concat(parts).toString();
      try {
        const decision = await idem.begin({
          native: req,
          method: req.method ?? 'GET',
          url: requestUrl(req.url ?? '/'),
          header: (name) => headerValue(req.headers, name),
          readBody: (limit) => nodeRequestBody(req, undefined, limit),
        });
        if (decision.action === 'respond') return sendDecisionResponse(res, decision);
        if (decision.action === 'pass') throw new Error('pass');
        runs++;
        recordServerResponse(res, decision.recorder);
        res.statusCode = 201;
        res.end(`run ${runs}`);
      } catch (error) {
        errors.push((error as Error).name);
        res.statusCode = 500;
        res.end();
      }
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    closers.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const port = (server.address() as AddressInfo).port;
    const post = (key: string, body: Buffer) =>
      new Promise<{ status: number; replayed: unknown }>((resolve, reject) => {
        const req = httpRequest({
          host: '127.0.0.1',
          port,
          method: 'POST',
          path: '/',
          headers: { 'idempotency-key': key, 'content-type': 'application/x-bin' },
        });
        req.on('error', reject);
        req.on('response', (res) => {
          res.resume();
          res.on('end', () =>
            resolve({ status: res.statusCode ?? 0, replayed: res.headers['idempotent-replayed'] }),
          );
        });
        req.end(body);
      });
    return { post, errors, runs: () => runs };
  }

  it(// FINDING (MEDIUM, isolation; fixed on this branch, pre-existing in @idem/http): text
  // decoded as UTF-8 maps every invalid sequence to U+FFFD, so two different bodies kept as
  // req.rawBody text fingerprinted alike and the second was replayed the first's outcome.
  'two different non-UTF-8 bodies: never replayed one for the other (refused); valid text still fingerprinted', async () => {
    const h = await rawTextServer();
    const first = await h.post('"k"', Buffer.from([0xf0, 0x90, 0x80, 0x41]));
    const other = await h.post('"k"', Buffer.from([0xf0, 0x90, 0x81, 0x41]));
    expect(other.replayed).toBeUndefined();
    expect([first.status, other.status]).toEqual([500, 500]);
    expect(h.errors).toEqual(['BodyAlreadyReadError', 'BodyAlreadyReadError']);
    expect((await h.post('"t"', Buffer.from('caf\u00e9'))).status).toBe(201);
    expect((await h.post('"t"', Buffer.from('caf\u00e9'))).replayed).toBe('true');
    expect((await h.post('"t"', Buffer.from('cafe'))).status).toBe(422);
    expect(h.runs()).toBe(1);
  });
});
