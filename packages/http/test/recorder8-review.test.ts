import {
  createServer as createH1Server,
  request as h1Request,
  type ServerResponse,
} from 'node:http';
import { createServer as createH2Server, type IncomingHttpHeaders } from 'node:http2';
import { connect as netConnect, type Socket } from 'node:net';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { createMemoryLiveStreams } from '@idem/core';
import { spyStore } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { afterEach, describe, expect, it } from 'vitest';
import {
  type Answer,
  type App,
  closeAll,
  closers,
  deferred,
  h1LeaveAfterFirst,
  h2,
  h2ResetAfter,
  listenLoopback,
  type RecordingOptions,
  recordedHandler,
  session,
} from './support/h2c.js';

// Adversarial review of wt/recorder8: the Node recorder under node:http2's compat response
// (and the write path shared with HTTP/1.1), with real servers and clients on loopback.

afterEach(closeAll);

interface Harness {
  h1: number;
  h2: number;
  runs: () => number;
  completed: ReturnType<typeof spyStore>['completed'];
  faults: ReturnType<typeof spyStore>['faults'];
  h2Sockets: Socket[];
  /** Called when an HTTP/1.1 connection closes (a listener from before any hold). */
  onH1Close: (() => void)[];
}

/** One idem handler (one store) behind an HTTP/1.1 and an HTTP/2 server running `app`. */
async function harness(app: App, options: RecordingOptions = {}): Promise<Harness> {
  const spied = spyStore(createMemoryStore());
  const { handle, runs } = recordedHandler(app, { store: spied.store, ...options });
  const h1 = createH1Server((req, res) => void handle(req, res));
  const h2 = createH2Server((req, res) => void handle(req as never, res as never));
  const h2Sockets: Socket[] = [];
  const onH1Close: (() => void)[] = [];
  h1.on('connection', (socket: Socket) => {
    socket.on('close', () => {
      for (const listener of onH1Close) listener();
    });
  });
  return {
    h1: await listenLoopback(h1),
    h2: await listenLoopback(h2, h2Sockets),
    runs,
    completed: spied.completed,
    faults: spied.faults,
    h2Sockets,
    onH1Close,
  };
}

/** A request over HTTP/1.1 (its own connection). */
function h1(
  port: number,
  key: string,
  body: string | Buffer | undefined,
  extra: Record<string, string> = {},
  path = '/',
): Promise<Answer> {
  return new Promise((resolve) => {
    const req = h1Request(
      {
        host: '127.0.0.1',
        port,
        path,
        method: 'POST',
        agent: false,
        headers: { 'idempotency-key': key, ...extra },
      },
      (res) => {
        const parts: Buffer[] = [];
        res.on('data', (chunk: Buffer) => parts.push(chunk));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers as IncomingHttpHeaders,
            body: Buffer.concat(parts),
            complete: res.complete,
          }),
        );
        res.on('error', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers as IncomingHttpHeaders,
            body: Buffer.concat(parts),
            complete: false,
          }),
        );
      },
    );
    req.on('error', () =>
      resolve({ status: 0, headers: {}, body: Buffer.alloc(0), complete: false }),
    );
    req.end(body);
  });
}

/** The recordable head a client got: no pseudo-header, no per-transfer field. */
function head(headers: IncomingHttpHeaders): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(headers))
    if (
      !name.startsWith(':') &&
      ![
        'date',
        'content-length',
        'connection',
        'keep-alive',
        'transfer-encoding',
        'idempotent-replayed',
      ].includes(name)
    )
      out[name] = value;
  return out;
}

const BINARY = Buffer.from(Array.from({ length: 256 * 64 }, (_, i) => (i * 7) & 0xff));

/** An app answering 201, recorded headers, a binary body in several writes. */
const binaryApp: App = (_req, res) => {
  res.setHeader('content-type', 'application/octet-stream');
  res.setHeader('etag', '"b"');
  res.setHeader('cache-control', 'no-store');
  res.statusCode = 201;
  res.write(BINARY.subarray(0, 1000));
  res.write(BINARY.subarray(1000, 9000));
  res.end(BINARY.subarray(9000));
};

describe('exactly-once and isolation across HTTP/1.1 and HTTP/2', () => {
  it('recorded over HTTP/2, replayed over both: status, head and body bytes as the first client got them', async () => {
    const h = await harness(binaryApp);
    const client = session(h.h2);
    const first = await h2(client, 'k', 'x');
    expect(first.complete).toBe(true);
    expect(first.status).toBe(201);
    expect(first.body.equals(BINARY)).toBe(true);
    for (const replay of [await h2(client, 'k', 'x'), await h1(h.h1, 'k', 'x')]) {
      expect(replay.status).toBe(201);
      expect(replay.headers['idempotent-replayed']).toBe('true');
      expect(head(replay.headers)).toEqual(head(first.headers));
      expect(replay.body.equals(first.body)).toBe(true);
    }
    expect(h.runs()).toBe(1);
  });

  it('recorded over HTTP/1.1, replayed over HTTP/2: the same', async () => {
    const h = await harness(binaryApp);
    const first = await h1(h.h1, 'k', 'x');
    expect(first.status).toBe(201);
    expect(first.body.equals(BINARY)).toBe(true);
    const replay = await h2(session(h.h2), 'k', 'x');
    expect(replay.status).toBe(201);
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(head(replay.headers)).toEqual(head(first.headers));
    expect(replay.body.equals(first.body)).toBe(true);
    expect(h.runs()).toBe(1);
  });

  it('an HTTP/2 body without Content-Length: another body under the key is 422, the same replays, over both protocols', async () => {
    const h = await harness((_req, res) => res.end('ok'));
    const client = session(h.h2);
    expect((await h2(client, 'k', '{"a":1}')).status).toBe(200);
    expect((await h2(client, 'k', '{"a":2}')).status).toBe(422);
    expect((await h1(h.h1, 'k', '{"a":2}')).status).toBe(422);
    // HTTP/1.1 with a Content-Length, the same bytes: replayed.
    const same = await h1(h.h1, 'k', '{"a":1}');
    expect(same.headers['idempotent-replayed']).toBe('true');
    // HTTP/2 with a Content-Length, the same bytes: replayed too.
    const withLength = await h2(client, 'k', '{"a":1}', { 'content-length': '7' });
    expect(withLength.headers['idempotent-replayed']).toBe('true');
    // No body at all (END_STREAM on the headers) is another request.
    expect((await h2(client, 'k', undefined)).status).toBe(422);
    expect(h.runs()).toBe(1);
  });

  it('a POST without a body: HTTP/2 (empty DATA frame, or END_STREAM headers) and HTTP/1.1 fingerprint alike', async () => {
    const h = await harness((_req, res) => res.end('ok'));
    const client = session(h.h2);
    expect((await h1(h.h1, 'k', undefined)).status).toBe(200);
    const endStream = await h2(client, 'k', undefined);
    expect(endStream.headers['idempotent-replayed']).toBe('true');
    // node:http2's client sends an empty DATA frame with END_STREAM for `end('')`.
    const emptyData = await h2(client, 'k', '');
    expect(emptyData.status).toBe(200);
    expect(emptyData.headers['idempotent-replayed']).toBe('true');
    expect(h.runs()).toBe(1);
  });

  it('concurrent duplicates over HTTP/2 (one session) and HTTP/1.1 are 409 while the first runs', async () => {
    const gate = deferred();
    const entered = deferred();
    const h = await harness(async (_req, res) => {
      entered.resolve();
      await gate.promise;
      res.end('done');
    });
    const client = session(h.h2);
    const first = h2(client, 'k', 'b');
    await entered.promise;
    const dups = await Promise.all([
      h2(client, 'k', 'b'),
      h2(client, 'k', 'b'),
      h1(h.h1, 'k', 'b'),
      h2(session(h.h2), 'k', 'b'),
    ]);
    for (const dup of dups) expect(dup.status).toBe(409);
    gate.resolve();
    expect((await first).body.toString()).toBe('done');
    expect((await h2(client, 'k', 'b')).body.toString()).toBe('done');
    expect(h.runs()).toBe(1);
  });
});

describe('a client that resets its HTTP/2 stream mid-response', () => {
  it('an app that goes on writing: the whole body is recorded and replayed, never a truncated one', async () => {
    const resetSeen = deferred();
    const closeSeen = deferred();
    const h = await harness(async (req, res) => {
      res.setHeader('content-type', 'text/plain');
      res.write('part-1;');
      (req as unknown as { stream: NodeJS.EventEmitter }).stream.once('close', () =>
        resetSeen.resolve(),
      );
      res.once('close', () => closeSeen.resolve());
      await resetSeen.promise;
      res.write('part-2;');
      res.end('part-3');
    });
    const client = session(h.h2);
    const first = h2ResetAfter(client, 'k');
    expect((await first.got).toString()).toBe('part-1;');
    await closeSeen.promise;
    const retry = await h2(client, 'k', 'b');
    expect(retry.headers['idempotent-replayed']).toBe('true');
    expect(retry.body.toString()).toBe('part-1;part-2;part-3');
    expect(h.runs()).toBe(1);
  });

  for (const event of ['aborted', 'close'] as const) {
    it(`HTTP/1.1 baseline: an app that ends the response from the request's '${event}' is not recorded (a retry runs again)`, async () => {
      const ended = deferred();
      const h = await harness((req, res) => {
        res.setHeader('content-type', 'text/plain');
        res.write('part-1;');
        req.once(event, () => {
          res.end('cut');
          ended.resolve();
        });
        if (h?.runs() === 2) res.end('whole');
      });
      await h1LeaveAfterFirst(h.h1, 'k');
      await ended.promise;
      const retry = await h1(h.h1, 'k', 'b', { 'content-length': '1' });
      expect(retry.headers['idempotent-replayed']).toBeUndefined();
      expect(h.runs()).toBe(2);
    });

    // FIXED (was FINDING HIGH; 'aborted' only, 'close' held): over HTTP/2 a stream reset emits the
    // request's 'aborted' before any 'close'/'finish' reaches the response, and the recorder
    // does not see the client leave there (`requestClosed` returns at once because
    // `res.socket`, the session's proxy, is set; `onEnd` asks `currentSocket()?.destroyed`,
    // the live session socket): an app that ends the response from `req.on('aborted')`
    // (SSE, long polls) has its cut body ("part-1;cut") recorded as the outcome, and every
    // retry replays that truncated body as if it were complete.
    it(`HTTP/2: an app that ends the response from the request's '${event}' after a stream reset is not recorded as complete`, async () => {
      const ended = deferred();
      let h: Harness | undefined;
      h = await harness((req, res) => {
        res.setHeader('content-type', 'text/plain');
        if (h?.runs() === 2) {
          res.end('part-1;whole');
          return;
        }
        res.write('part-1;');
        req.once(event, () => {
          res.end('cut');
          ended.resolve();
        });
      });
      const client = session(h.h2);
      await h2ResetAfter(client, 'k').got;
      await ended.promise;
      const retry = await h2(client, 'k', 'b');
      // The truncated "part-1;cut" must never come back as the replayed outcome.
      expect(retry.body.toString()).toBe('part-1;whole');
      expect(retry.headers['idempotent-replayed']).toBeUndefined();
      expect(h.runs()).toBe(2);
    });
  }
});

describe('many streams on one session', () => {
  it('one stream reset among 20: the others get and record their own whole body, the reset one records its whole body', async () => {
    const resetSeen = deferred();
    const h = await harness(async (req, res) => {
      const key = String(req.headers['idempotency-key']);
      res.setHeader('content-type', 'text/plain');
      res.write(`${key}:1;`);
      if (key === 'k-reset') {
        (req as unknown as { stream: NodeJS.EventEmitter }).stream.once('close', () =>
          resetSeen.resolve(),
        );
        await resetSeen.promise;
      } else await new Promise((resolve) => setImmediate(resolve));
      res.write(`${key}:2;`);
      res.end(`${key}:3`.repeat(100));
    });
    const client = session(h.h2);
    const keys = Array.from({ length: 20 }, (_, i) => `k-${i}`);
    const reset = h2ResetAfter(client, 'k-reset');
    const answers = await Promise.all(keys.map((key) => h2(client, key, 'b')));
    await reset.got;
    await resetSeen.promise;
    answers.forEach((answer, i) => {
      expect(answer.complete).toBe(true);
      expect(answer.body.toString()).toBe(`k-${i}:1;k-${i}:2;${`k-${i}:3`.repeat(100)}`);
    });
    const replays = await Promise.all([...keys, 'k-reset'].map((key) => h2(client, key, 'b')));
    replays.forEach((replay, i) => {
      const key = i < keys.length ? `k-${i}` : 'k-reset';
      expect(replay.headers['idempotent-replayed']).toBe('true');
      expect(replay.body.toString()).toBe(`${key}:1;${key}:2;${`${key}:3`.repeat(100)}`);
    });
    expect(h.runs()).toBe(21);
  });
});

describe('the session goes away mid-response', () => {
  it('session destroyed mid-response, the app finishes: recorded whole, a retry on a new session replays it', async () => {
    const gone = deferred();
    const closes: number[] = [];
    const h = await harness(async (req, res) => {
      res.write('a;');
      res.once('close', () => closes.push(1));
      (req as unknown as { stream: NodeJS.EventEmitter }).stream.once('close', () =>
        gone.resolve(),
      );
      await gone.promise;
      res.write('b;');
      res.end('c');
    });
    const client = session(h.h2);
    const got = deferred();
    const stream = client.request({ ':method': 'POST', ':path': '/', 'idempotency-key': 'k' });
    stream.on('error', () => {});
    stream.once('data', () => got.resolve());
    stream.end('b');
    await got.promise;
    client.destroy();
    await gone.promise;
    const retry = await h2(session(h.h2), 'k', 'b');
    expect(retry.headers['idempotent-replayed']).toBe('true');
    expect(retry.body.toString()).toBe('a;b;c');
    expect(h.runs()).toBe(1);
    expect(closes).toEqual([1]);
  });

  it('a graceful GOAWAY from the client (session.close) mid-response: the open stream still gets its whole body', async () => {
    const go = deferred();
    const h = await harness(async (_req, res) => {
      res.write('a;');
      await go.promise;
      res.end('b');
    });
    const client = session(h.h2);
    const got = deferred();
    const parts: Buffer[] = [];
    const done = deferred();
    const stream = client.request({ ':method': 'POST', ':path': '/', 'idempotency-key': 'k' });
    stream.on('data', (chunk: Buffer) => {
      parts.push(chunk);
      got.resolve();
    });
    stream.on('end', () => done.resolve());
    stream.end('b');
    await got.promise;
    client.close();
    go.resolve();
    await done.promise;
    expect(Buffer.concat(parts).toString()).toBe('a;b');
    const retry = await h2(session(h.h2), 'k', 'b');
    expect(retry.body.toString()).toBe('a;b');
    expect(retry.headers['idempotent-replayed']).toBe('true');
  });

  it('server-side session destroy (GOAWAY + close) mid-response with an app that never ends: the key is freed in bounded time (maxHoldMs), a retry runs', async () => {
    const started = deferred();
    let hang = true;
    const h = await harness(
      (_req, res) => {
        res.write('a;');
        started.resolve();
        if (!hang) res.end('b');
      },
      { leaseMs: 300, maxHoldMs: 900 },
    );
    const client = session(h.h2);
    const stream = client.request({ ':method': 'POST', ':path': '/', 'idempotency-key': 'k' });
    stream.on('error', () => {});
    stream.end('b');
    await started.promise;
    // The server's side of the connection goes away (its session's socket destroyed).
    for (const socket of h.h2Sockets) socket.destroy();
    hang = false;
    const begun = Date.now();
    let retry: Answer | undefined;
    for (let i = 0; i < 100 && Date.now() - begun < 10_000; i++) {
      retry = await h2(session(h.h2), 'k', 'b');
      if (retry.status !== 409) break;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(retry?.status).toBe(200);
    expect(retry?.body.toString()).toBe('a;b');
    expect(retry?.headers['idempotent-replayed']).toBeUndefined();
    expect(Date.now() - begun).toBeLessThan(5_000);
    expect(h.runs()).toBe(2);
  });
});

type Log = (entry: string) => void;
type Scenario = (res: ServerResponse, log: Log) => void;

function codeOf(error: unknown): string {
  return error ? String((error as { code?: unknown }).code ?? (error as Error).message) : 'ok';
}

/**
 * Runs `scenario` once on `protocol`, bare or recorded: what the app saw (callbacks, errors,
 * events, counted) and what the client got, once the response closed and things settled.
 */
async function observe(protocol: 1 | 2, recorded: boolean, scenario: Scenario) {
  const entries: string[] = [];
  const closed = deferred();
  const app: App = (_req, res) => {
    res.on('error', (error) => entries.push(`error:${codeOf(error)}`));
    res.on('finish', () => entries.push('finish'));
    res.on('close', () => {
      entries.push('close');
      closed.resolve();
    });
    scenario(res, (entry) => entries.push(entry));
  };
  let port: number;
  if (recorded) {
    const h = await harness(app);
    port = protocol === 1 ? h.h1 : h.h2;
  } else {
    const server =
      protocol === 1
        ? createH1Server((req, res) => void app(req, res))
        : createH2Server((req, res) => void app(req as never, res as never));
    port = await listenLoopback(server);
  }
  const answer = protocol === 1 ? await h1(port, 'k', 'b') : await h2(session(port), 'k', 'b');
  await closed.promise;
  // Let every nextTick / immediate callback land.
  for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
  await new Promise((resolve) => setTimeout(resolve, 50));
  return { entries: entries.sort(), body: answer.body.toString(), complete: answer.complete };
}

const scenarios: Record<string, Scenario> = {
  'end twice (both with callbacks)': (res, log) => {
    res.end('a', () => log('end1'));
    res.end('b', (() => log('end2')) as never);
  },
  'end(cb) then write(chunk, cb)': (res, log) => {
    res.end('a', () => log('end1'));
    res.write('x', (error) => log(`write:${codeOf(error)}`));
  },
  'write after the response finished': (res, log) => {
    res.once('finish', () =>
      setImmediate(() => res.write('x', (error) => log(`write:${codeOf(error)}`))),
    );
    res.end('a', () => log('end1'));
  },
  'end after the response finished, with a callback': (res, log) => {
    res.once('finish', () =>
      setImmediate(() => res.end((error?: Error | null) => log(`end2:${codeOf(error)}`))),
    );
    res.end('a', () => log('end1'));
  },
  'write(cb) x3 then end(cb)': (res, log) => {
    res.write('a', () => log('w1'));
    res.write('b', () => log('w2'));
    res.write('c', () => log('w3'));
    res.end(() => log('end1'));
  },
  'end(chunk, encoding, cb)': (res, log) => {
    res.end('616263', 'hex', () => log('end1'));
  },
  'end() from the end callback': (res, log) => {
    res.end('a', () => {
      log('end1');
      res.end((error?: Error | null) => log(`end2:${codeOf(error)}`));
    });
  },
};

describe('the write path after the held end: as Node without the recorder', () => {
  for (const protocol of [1, 2] as const)
    for (const [name, scenario] of Object.entries(scenarios))
      it(`HTTP/${protocol === 1 ? '1.1' : '2'}: ${name}`, async () => {
        const bare = await observe(protocol, false, scenario);
        const recorded = await observe(protocol, true, scenario);
        expect(recorded).toEqual(bare);
      });
});

describe('HTTP/1.1 and HTTP/2 after the write-path change', () => {
  it('HTTP/1.1 pipelined keyed requests: each answered in order with its own body, each replayed', async () => {
    const h = await harness(async (req, res) => {
      const key = String(req.headers['idempotency-key']);
      // The first answers last: the ones after it wait for their socket.
      await new Promise((resolve) => setTimeout(resolve, key === 'p0' ? 30 : 0));
      res.setHeader('content-type', 'text/plain');
      res.write(`${key}-a;`);
      res.end(`${key}-b`);
    });
    const socket = netConnect(h.h1, '127.0.0.1');
    closers.push(() => {
      socket.destroy();
    });
    const raw = ['p0', 'p1', 'p2']
      .map(
        (key) =>
          `POST / HTTP/1.1\r\nHost: x\r\nIdempotency-Key: ${key}\r\nContent-Length: 1\r\n\r\nb`,
      )
      .join('');
    let text = '';
    const all = deferred();
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString('latin1');
      if ((text.match(/p2-b/g) ?? []).length === 1) all.resolve();
    });
    socket.write(raw);
    await all.promise;
    // The responses go out in the requests' order, the first (the slowest) included.
    const order = [...text.matchAll(/(p\d)-a;/g)].map((m) => m[1]);
    expect(order).toEqual(['p0', 'p1', 'p2']);
    for (const key of ['p0', 'p1', 'p2']) {
      const replay = await h1(h.h1, key, 'b');
      expect(replay.headers['idempotent-replayed']).toBe('true');
      expect(replay.body.toString()).toBe(`${key}-a;${key}-b`);
    }
    expect(h.runs()).toBe(3);
  });

  it('HTTP/1.1 client gone mid-response: the app is not told, its whole body is recorded and replayed', async () => {
    const gone = deferred();
    const closes: string[] = [];
    const h = await harness(async (_req, res) => {
      res.on('close', () => closes.push('close'));
      res.write('a;');
      await gone.promise;
      closes.push(`destroyed:${res.destroyed}`);
      res.write('b;');
      res.end('c', () => closes.push('end-cb'));
    });
    h.onH1Close.push(() => gone.resolve());
    await h1LeaveAfterFirst(h.h1, 'k');
    await gone.promise;
    const retry = await h1(h.h1, 'k', 'b');
    expect(retry.headers['idempotent-replayed']).toBe('true');
    expect(retry.body.toString()).toBe('a;b;c');
    expect(h.runs()).toBe(1);
    expect(closes.slice(0, 1)).toEqual(['destroyed:false']);
    expect(closes.filter((entry) => entry === 'close')).toHaveLength(1);
  });

  for (const protocol of [1, 2] as const)
    it(`HTTP/${protocol === 1 ? '1.1' : '2'}: a 6 MiB body streamed with backpressure to a slow reader arrives whole and replays whole`, async () => {
      const size = 6 * 1024 * 1024;
      const source = Buffer.alloc(size);
      for (let i = 0; i < size; i += 4) source.writeUInt32LE(i, i);
      let falseWrites = 0;
      const h = await harness(async (_req, res) => {
        res.setHeader('content-type', 'application/octet-stream');
        for (let offset = 0; offset < size; offset += 64 * 1024) {
          if (!res.write(source.subarray(offset, offset + 64 * 1024))) {
            falseWrites++;
            await new Promise((resolve) => res.once('drain', resolve));
          }
        }
        res.end();
      });
      const slow = (stream: NodeJS.ReadableStream) =>
        new Promise<Buffer>((resolve) => {
          const parts: Buffer[] = [];
          stream.on('data', (chunk: Buffer) => {
            parts.push(chunk);
            // A slow reader: pause a moment every 16 chunks.
            if (parts.length % 16 === 0) {
              stream.pause();
              setTimeout(() => stream.resume(), 2);
            }
          });
          stream.on('end', () => resolve(Buffer.concat(parts)));
        });
      let first: Buffer;
      if (protocol === 1) {
        first = await new Promise<Buffer>((resolve) => {
          const req = h1Request(
            {
              host: '127.0.0.1',
              port: h.h1,
              method: 'POST',
              agent: false,
              headers: { 'idempotency-key': 'k', 'content-length': '1' },
            },
            (res) => void slow(res).then(resolve),
          );
          req.end('b');
        });
      } else {
        const stream = session(h.h2).request({
          ':method': 'POST',
          ':path': '/',
          'idempotency-key': 'k',
        });
        stream.end('b');
        first = await slow(stream);
      }
      expect(first.equals(source)).toBe(true);
      expect(falseWrites).toBeGreaterThan(0);
      const replay = protocol === 1 ? await h1(h.h1, 'k', 'b') : await h2(session(h.h2), 'k', 'b');
      expect(replay.headers['idempotent-replayed']).toBe('true');
      expect(replay.body.equals(source)).toBe(true);
      expect(h.runs()).toBe(1);
    });
});

describe('bounded memory over one HTTP/2 session', () => {
  it('2,000 keyed requests on one session: responses are collected, the session socket gains no listener and no replaced emit', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const refs: WeakRef<object>[] = [];
    const h = await harness((req, res) => {
      refs.push(new WeakRef(res), new WeakRef(req));
      res.setHeader('content-type', 'text/plain');
      res.write('x'.repeat(100));
      res.end(String(req.headers['idempotency-key']));
    });
    const client = session(h.h2);
    // Warm up, then look at the session's socket on the server.
    for (let i = 0; i < 20; i++) await h2(client, `w-${i}`, 'b');
    expect(h.h2Sockets).toHaveLength(1);
    const socket = h.h2Sockets[0] as Socket;
    const events = ['close', 'error', 'end', 'data', 'drain', 'timeout'];
    const before = Object.fromEntries(events.map((e) => [e, socket.listenerCount(e)]));
    gc();
    const heapBefore = process.memoryUsage().heapUsed;
    for (let batch = 0; batch < 20; batch++)
      await Promise.all(
        Array.from({ length: 100 }, (_, i) => h2(client, `k-${batch}-${i}`, 'b')).map((p) =>
          p.then((answer) => expect(answer.status).toBe(200)),
        ),
      );
    // A replay of each tenth, on the same session.
    for (let i = 0; i < 20; i++) {
      const replay = await h2(client, `k-${i}-7`, 'b');
      expect(replay.body.toString()).toBe(`${'x'.repeat(100)}k-${i}-7`);
      expect(replay.headers['idempotent-replayed']).toBe('true');
    }
    expect(h.runs()).toBe(2020);
    expect(Object.hasOwn(socket, 'emit')).toBe(false);
    const after = Object.fromEntries(events.map((e) => [e, socket.listenerCount(e)]));
    expect(after).toEqual(before);
    for (let i = 0; i < 5; i++) {
      await new Promise((resolve) => setImmediate(resolve));
      gc();
    }
    const alive = refs.filter((ref) => ref.deref() !== undefined).length;
    // Every response and request but the last few (the session's latest streams) is gone.
    expect(alive).toBeLessThan(50);
    const growth = process.memoryUsage().heapUsed - heapBefore;
    // 2,000 stored outcomes of ~110 bytes plus their records: well under 16 MiB.
    expect(growth).toBeLessThan(16 * 1024 * 1024);
  }, 60_000);
});

/** An app that reads the request body itself (after the peek) and answers its length and sum. */
const echoApp: App = (req, res) => {
  const parts: Buffer[] = [];
  req.on('data', (chunk: Buffer) => parts.push(chunk));
  req.on('end', () => {
    const body = Buffer.concat(parts);
    let sum = 0;
    for (const byte of body) sum = (sum + byte) % 65521;
    res.setHeader('content-type', 'text/plain');
    res.end(`${body.length}:${sum}`);
  });
};

function sumOf(body: Buffer): string {
  let sum = 0;
  for (const byte of body) sum = (sum + byte) % 65521;
  return `${body.length}:${sum}`;
}

describe('HTTP/2 request bodies without Content-Length (peek and fingerprint)', () => {
  it('a 3 MiB body (past the flow-control window) is peeked whole, the app reads it whole after, a 1-byte change is 422', async () => {
    const h = await harness(echoApp, { maxBodyBytes: 8 * 1024 * 1024 });
    const body = Buffer.from(Array.from({ length: 3 * 1024 * 1024 }, (_, i) => (i * 13) & 0xff));
    const client = session(h.h2);
    const first = await h2(client, 'k', body);
    expect(first.status).toBe(200);
    expect(first.body.toString()).toBe(sumOf(body));
    const replay = await h2(client, 'k', body);
    expect(replay.headers['idempotent-replayed']).toBe('true');
    const changed = Buffer.from(body);
    changed.writeUInt8(changed.readUInt8(changed.length - 1) ^ 1, changed.length - 1);
    expect((await h2(client, 'k', changed)).status).toBe(422);
    expect(h.runs()).toBe(1);
  });

  it('a body sent in slow DATA frames: the peek waits for its end (no hang, no early fingerprint)', async () => {
    const h = await harness(echoApp);
    const client = session(h.h2);
    const send = async (key: string, parts: string[]) => {
      const stream = client.request({ ':method': 'POST', ':path': '/', 'idempotency-key': key });
      const chunks: Buffer[] = [];
      let status = 0;
      stream.on('response', (headers) => {
        status = Number(headers[':status']);
      });
      stream.on('data', (chunk: Buffer) => chunks.push(chunk));
      const done = new Promise<void>((resolve) => stream.on('end', resolve));
      for (const part of parts) {
        stream.write(part);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      stream.end();
      await done;
      return { status, body: Buffer.concat(chunks).toString() };
    };
    const first = await send('k', ['{"a"', ':1', ',"b":2}']);
    expect(first).toEqual({ status: 200, body: sumOf(Buffer.from('{"a":1,"b":2}')) });
    // Same bytes as one frame: a replay. The first frames only, then other bytes: 422.
    expect((await h2(client, 'k', '{"a":1,"b":2}')).headers['idempotent-replayed']).toBe('true');
    expect((await send('k', ['{"a"', ':1', ',"b":3}'])).status).toBe(422);
    expect(h.runs()).toBe(1);
  });

  it('a body past the limit without Content-Length: 413 over HTTP/2, the session stays usable', async () => {
    const h = await harness(echoApp, { maxBodyBytes: 1024 });
    const client = session(h.h2);
    const big = await h2(client, 'k', Buffer.alloc(64 * 1024, 1));
    expect(big.status).toBe(413);
    const small = await h2(client, 'k2', 'x');
    expect(small.status).toBe(200);
    expect(small.body.toString()).toBe(sumOf(Buffer.from('x')));
    expect(h.runs()).toBe(1);
  });
});

describe('HTTP/2 with the held end waiting on the store', () => {
  it('a reset while the end waits for a slow store write: the end callback once, the whole body stored and replayed', async () => {
    const endCalls: string[] = [];
    const closeSeen = deferred();
    const endCalled = deferred();
    const h = await harness((_req, res) => {
      res.on('close', () => closeSeen.resolve());
      res.write('a;');
      res.end('b', (error?: Error | null) => {
        endCalls.push(codeOf(error));
        endCalled.resolve();
      });
    });
    h.faults.completeDelayMs = 300;
    const client = session(h.h2);
    const first = h2ResetAfter(client, 'k');
    expect((await first.got).toString()).toBe('a;');
    await closeSeen.promise;
    await endCalled.promise;
    h.faults.completeDelayMs = 0;
    // Let any second callback show.
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(endCalls).toHaveLength(1);
    const retry = await h2(client, 'k', 'b');
    expect(retry.headers['idempotent-replayed']).toBe('true');
    expect(retry.body.toString()).toBe('a;b');
    expect(h.runs()).toBe(1);
  });

  it('the store write fails: the HTTP/2 stream is reset (never a clean end), other streams intact; once the store is back a retry gets the whole body', async () => {
    const h = await harness(
      (req, res) => {
        res.write('a;');
        res.end(String(req.headers['idempotency-key']));
      },
      { completionWaitMs: 200 },
    );
    const client = session(h.h2);
    h.faults.failComplete = true;
    const failed = await h2(client, 'k', 'b');
    expect(failed.complete).toBe(false);
    h.faults.failComplete = false;
    const other = await h2(client, 'k2', 'b');
    expect(other.complete).toBe(true);
    expect(other.body.toString()).toBe('a;k2');
    // The failed write goes on in the background: the retry is 409 until it lands, then a
    // replay of the whole body (or a new run, if it never landed), never a cut one.
    let retry = await h2(client, 'k', 'b');
    for (let i = 0; i < 100 && retry.status === 409; i++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      retry = await h2(client, 'k', 'b');
    }
    expect(retry.complete).toBe(true);
    expect(retry.status).toBe(200);
    expect(retry.body.toString()).toBe('a;k');
  });
});

describe('what the app sees of its response once the client left, HTTP/1.1 and HTTP/2 alike', () => {
  it('destroyed, writable, writableEnded, socket: as over HTTP/1.1 (the client not shown gone), and the rest of the body is recorded', async () => {
    const views: Record<string, unknown>[] = [];
    const gone = deferred();
    const done = deferred();
    const h = await harness(async (req, res) => {
      res.write('a;');
      if (req.httpVersionMajor === 2)
        (req as unknown as { stream: NodeJS.EventEmitter }).stream.once('close', () =>
          gone.resolve(),
        );
      await gone.promise;
      await new Promise((resolve) => setTimeout(resolve, 20));
      views.push({
        destroyed: res.destroyed,
        writable: res.writable,
        writableEnded: res.writableEnded,
        socketNull: res.socket === null,
        headersSent: res.headersSent,
      });
      res.write('b;');
      res.write('c;');
      // The held 'close' comes once the outcome is stored.
      res.once('close', () => done.resolve());
      res.end('d');
    });
    h.onH1Close.push(() => gone.resolve());
    // HTTP/1.1: the client goes after the first chunk.
    await h1LeaveAfterFirst(h.h1, 'k1');
    await done.promise;
    const h1View = views[0];
    // HTTP/2: the stream is reset after the first chunk.
    const g2 = deferred();
    const d2 = deferred();
    Object.assign(gone, g2);
    Object.assign(done, d2);
    const client = session(h.h2);
    await h2ResetAfter(client, 'k2').got;
    await d2.promise;
    expect(views[1]).toEqual(h1View);
    for (const key of ['k1', 'k2']) {
      const retry = await h2(client, key, 'b');
      expect(retry.headers['idempotent-replayed']).toBe('true');
      expect(retry.body.toString()).toBe('a;b;c;d');
    }
  });
});

describe('HTTP/2 with live streams (a duplicate attaches to the response in flight)', () => {
  it('the first client resets mid-stream: the attached duplicate (HTTP/2 and HTTP/1.1) gets every byte, the replay equals it', async () => {
    const gone = deferred();
    const events = Array.from({ length: 6 }, (_, i) => `id: ${i + 1}\ndata: {"n":${i + 1}}\n\n`);
    const attachedIn = deferred();
    const h = await harness(
      async (req, res) => {
        res.setHeader('content-type', 'text/event-stream');
        (req as unknown as { stream?: NodeJS.EventEmitter }).stream?.once('close', () =>
          gone.resolve(),
        );
        for (const [i, event] of events.entries()) {
          res.write(event);
          if (i === 1) {
            await attachedIn.promise;
            await gone.promise;
          }
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
        res.end();
      },
      { liveStreams: { channel: createMemoryLiveStreams() } },
    );
    const first = h2ResetAfter(session(h.h2), 'k', 2);
    // Wait until both events are out before the duplicates come.
    const firstTwo = await Promise.race([
      first.got,
      new Promise<Buffer>((resolve) => setTimeout(() => resolve(Buffer.alloc(0)), 5_000)),
    ]);
    expect(firstTwo.toString()).toBe(events.slice(0, 2).join(''));
    const attached = [h2(session(h.h2), 'k', 'b'), h1(h.h1, 'k', 'b')];
    // The duplicates are in (attached) before the app goes on.
    await new Promise((resolve) => setTimeout(resolve, 100));
    attachedIn.resolve();
    const answers = await Promise.all(attached);
    for (const answer of answers) {
      expect(answer.status).toBe(200);
      expect(answer.complete).toBe(true);
      expect(answer.body.toString()).toBe(events.join(''));
    }
    const replay = await h2(session(h.h2), 'k', 'b');
    expect(replay.body.toString()).toBe(events.join(''));
    expect(h.runs()).toBe(1);
  });
});

describe('resets on one HTTP/2 session leave nothing behind', () => {
  it('200 streams reset mid-response on one session: each recorded whole, the session socket untouched, later streams fine', async () => {
    const h = await harness(async (req, res) => {
      const closed = new Promise((resolve) =>
        (req as unknown as { stream: NodeJS.EventEmitter }).stream.once('close', resolve),
      );
      res.write('a;');
      if (req.headers['idempotency-key'] !== 'fresh') await closed;
      res.end(String(req.headers['idempotency-key']));
    });
    const client = session(h.h2);
    await h2ResetAfter(client, 'warm').got;
    const socket = h.h2Sockets[0] as Socket;
    const events = ['close', 'error', 'end', 'data', 'drain', 'timeout'];
    const before = Object.fromEntries(events.map((e) => [e, socket.listenerCount(e)]));
    for (let batch = 0; batch < 10; batch++)
      await Promise.all(
        Array.from({ length: 20 }, (_, i) => h2ResetAfter(client, `r-${batch}-${i}`).closed),
      );
    // Every reset one is recorded whole (the app ended after the reset).
    for (let attempt = 0; attempt < 100 && h.completed.length < 201; attempt++)
      await new Promise((resolve) => setTimeout(resolve, 20));
    expect(h.completed.length).toBe(201);
    expect(Object.hasOwn(socket, 'emit')).toBe(false);
    expect(Object.fromEntries(events.map((e) => [e, socket.listenerCount(e)]))).toEqual(before);
    const replay = await h2(client, 'r-9-19', 'b');
    expect(replay.body.toString()).toBe('a;r-9-19');
    expect(replay.headers['idempotent-replayed']).toBe('true');
    const fresh = await h2(client, 'fresh', 'b');
    expect(fresh.body.toString()).toBe('a;fresh');
  });
});

describe('the client gone, then stream.pipeline into the response', () => {
  for (const protocol of [1, 2] as const) {
    // FIXED (was FINDING MEDIUM; Node 24 only, HTTP/1.1 only; also on main, not from this branch): after
    // the client left, `stream.pipeline(source, res)` rejects with "Premature close" on Node
    // 24 (Node 20 and 22 run it to its end) although `res` reads as on Node 20 (destroyed,
    // closed, writable, writableEnded, socket null); the pipeline destroys `res`, the key is
    // released, and the retry runs the handler a second time. The recorder's doc promises a
    // `stream.pipeline` reads its source to the end and the retry replays.
    it(`HTTP/${protocol === 1 ? '1.1' : '2'}: the pipeline runs to its end (no premature close), the whole body is recorded and replayed`, async () => {
      const gone = deferred();
      const outcome: string[] = [];
      const h = await harness(async (req, res) => {
        res.write('a;');
        if (h.runs() > 1) {
          res.end('again');
          return;
        }
        (req as unknown as { stream?: NodeJS.EventEmitter }).stream?.once('close', () =>
          gone.resolve(),
        );
        await gone.promise;
        const { pipeline } = await import('node:stream/promises');
        const { Readable } = await import('node:stream');
        await pipeline(Readable.from(['b;', 'c;', 'd']), res).then(
          () => outcome.push('ok'),
          (error: Error) => outcome.push(error.message),
        );
      });
      if (protocol === 1) {
        h.onH1Close.push(() => gone.resolve());
        await h1LeaveAfterFirst(h.h1, 'k');
      } else await h2ResetAfter(session(h.h2), 'k').got;
      await gone.promise;
      for (let i = 0; i < 100 && outcome.length === 0; i++)
        await new Promise((resolve) => setTimeout(resolve, 20));
      const retry = protocol === 1 ? await h1(h.h1, 'k', 'b') : await h2(session(h.h2), 'k', 'b');
      expect(outcome).toEqual(['ok']);
      expect(retry.headers['idempotent-replayed']).toBe('true');
      expect(retry.body.toString()).toBe('a;b;c;d');
      expect(h.runs()).toBe(1);
    });
  }
});
