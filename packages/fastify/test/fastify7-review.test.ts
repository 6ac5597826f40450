import { createHash } from 'node:crypto';
import { createServer, request as httpRequest, IncomingMessage } from 'node:http';
import { connect as http2Connect } from 'node:http2';
import { connect } from 'node:net';
import { PassThrough, Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { createMemoryStore } from '@idem/store-memory';
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';
import {
  closeTapApps,
  head,
  heldCopyBytes,
  rawExchange,
  rawPost,
  tapApp,
} from './fastify-tap-review-kit.js';

// Adversarial review of wt/fastify7 (502386a: the body copy wraps the Node request's push,
// a body nobody read is read at preHandler and put back). Findings are `it.fails` with a
// FINDING comment; the attacks that held are plain `it`, asserting the guarantee attacked.

afterAll(closeTapApps);

const sha = (bytes: Uint8Array | string) => createHash('sha256').update(bytes).digest('hex');

/** The body in HTTP/1.1 chunked framing, cut at the given sizes (the rest in one chunk). */
function chunked(body: Buffer, cuts: number[]): Buffer[] {
  const out: Buffer[] = [];
  let at = 0;
  for (const size of [...cuts, body.length]) {
    const part = body.subarray(at, Math.min(body.length, at + size));
    if (part.length === 0) continue;
    out.push(
      Buffer.concat([Buffer.from(`${part.length.toString(16)}\r\n`), part, Buffer.from('\r\n')]),
    );
    at += part.length;
    if (at >= body.length) break;
  }
  out.push(Buffer.from('0\r\n\r\n'));
  return out;
}

/** A whole request with a Content-Length, its body as bytes. */
function postBytes(
  path: string,
  headers: Record<string, string>,
  body: Buffer,
  close = true,
): Buffer {
  return Buffer.concat([Buffer.from(head(path, headers, body.length, close), 'latin1'), body]);
}

/** Steps for rawExchange: a chunked request whose chunks go out one by one, with pauses. */
function trickle(
  path: string,
  headers: Record<string, string>,
  body: Buffer,
  cuts: number[],
  pauseMs = 2,
  close = true,
): (Buffer | string | number)[] {
  const steps: (Buffer | string | number)[] = [head(path, headers, undefined, close)];
  for (const part of chunked(body, cuts)) steps.push(pauseMs, part);
  return steps;
}

/** A route that records the hash of what it was handed (a Buffer, a string, or request.raw). */
function recordingRoute(app: FastifyInstance, path: string, seen: string[], fromRaw = false) {
  let runs = 0;
  app.post(path, async (request: FastifyRequest) => {
    let bytes: Buffer;
    if (fromRaw) {
      const parts: Buffer[] = [];
      const source = (request.body as Readable | undefined) ?? request.raw;
      for await (const chunk of source) parts.push(Buffer.from(chunk as Buffer));
      bytes = Buffer.concat(parts);
    } else if (Buffer.isBuffer(request.body)) bytes = request.body;
    else if (typeof request.body === 'string') bytes = Buffer.from(request.body, 'latin1');
    else bytes = Buffer.from(JSON.stringify(request.body));
    seen.push(sha(bytes));
    return { runs: ++runs, size: bytes.length };
  });
  return () => runs;
}

function octetParser(app: FastifyInstance) {
  app.addContentTypeParser('application/octet-stream', { parseAs: 'buffer' }, (_r, body, done) =>
    done(null, body),
  );
}

/** A parser that leaves the body to the route, as @fastify/multipart does. */
function leaveToRoute(app: FastifyInstance, type = 'multipart/form-data') {
  app.addContentTypeParser(type, (_request, _payload, done) => done(null, undefined));
}

const bytesOf = (n: number, seed: number) => {
  const out = Buffer.alloc(n);
  for (let i = 0; i < n; i++) out[i] = (i * 31 + seed * 7 + (i >> 8)) & 0xff;
  return out;
};

/** A POST through node:http with the body written in `parts`, `pauseMs` apart (chunked). */
function slowPost(
  port: number,
  path: string,
  headers: Record<string, string>,
  parts: Buffer[],
  pauseMs: number,
): Promise<{ status: number; body: string; at: number; wrote: number }> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    let wrote = 0;
    let answered = false;
    const req = httpRequest(
      { host: '127.0.0.1', port, path, method: 'POST', headers, agent: false },
      (res) => {
        answered = true;
        const at = Date.now() - started;
        const got: Buffer[] = [];
        res.on('data', (c: Buffer) => got.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, body: Buffer.concat(got).toString(), at, wrote }),
        );
      },
    );
    req.on('error', (error) => {
      if (!answered) reject(error);
    });
    (async () => {
      for (const part of parts) {
        if (answered || req.destroyed) break;
        req.write(part);
        wrote += part.length;
        await sleep(pauseMs);
      }
      if (!answered && !req.destroyed) req.end();
    })().catch(() => {});
  });
}

describe('fastify7 review: exactly once, whatever the content type', () => {
  const cases: {
    name: string;
    type: string;
    first: Buffer;
    other: Buffer;
    setup: (app: FastifyInstance) => void;
    fromRaw?: boolean;
  }[] = [
    {
      name: 'JSON with a repeated member name',
      type: 'application/json',
      first: Buffer.from('{"to":"alice","to":"mallory","n":1}'),
      other: Buffer.from('{"to":"bob","to":"mallory","n":1}'),
      setup: () => {},
    },
    {
      name: 'form reordered',
      type: 'application/x-www-form-urlencoded',
      first: Buffer.from('a=1&b=2'),
      other: Buffer.from('b=2&a=1'),
      setup: (app) =>
        app.addContentTypeParser(
          'application/x-www-form-urlencoded',
          { parseAs: 'string' },
          (_r, body, done) => done(null, Object.fromEntries(new URLSearchParams(body as string))),
        ),
    },
    {
      name: 'octet-stream, one byte off, past the highWaterMark',
      type: 'application/octet-stream',
      first: bytesOf(70_000, 1),
      other: Buffer.concat([bytesOf(69_999, 1), Buffer.from([0])]),
      setup: octetParser,
    },
    {
      name: 'text with a trailing space',
      type: 'text/plain',
      first: Buffer.from('hello'),
      other: Buffer.from('hello '),
      setup: () => {},
    },
    {
      name: 'multipart left to the route (bytes past the highWaterMark)',
      type: 'multipart/form-data; boundary=b',
      first: Buffer.from(
        `--b\r\nContent-Disposition: form-data; name="f"; filename="a"\r\n\r\n${'x'.repeat(40_000)}\r\n--b--\r\n`,
      ),
      other: Buffer.from(
        `--b\r\nContent-Disposition: form-data; name="f"; filename="a"\r\n\r\n${'x'.repeat(39_999)}y\r\n--b--\r\n`,
      ),
      setup: (app) => leaveToRoute(app),
      fromRaw: true,
    },
  ];
  for (const c of cases) {
    it(`${c.name}: replays the same bytes however they are cut on the wire, 422 for the other; the route gets them exactly`, async () => {
      const seen: string[] = [];
      let runs = () => 0;
      const { port } = await tapApp((app) => {
        c.setup(app);
        runs = recordingRoute(app, '/r', seen, c.fromRaw);
      });
      const headers = { 'content-type': c.type, 'idempotency-key': 'k' };
      const [first] = await rawExchange(port, [postBytes('/r', headers, c.first)]);
      expect(first?.status).toBe(200);
      // The same bytes, chunked at awkward sizes (1 byte, odd sizes), slowly.
      const [again] = await rawExchange(
        port,
        trickle('/r', headers, c.first, [1, 1, 3, 7, 1, 4093]),
      );
      expect(again?.status).toBe(200);
      expect(again?.headers['idempotent-replayed']).toBe('true');
      const [other] = await rawExchange(port, trickle('/r', headers, c.other, [2, 16_383, 5]));
      expect(other?.status).toBe(422);
      expect(runs()).toBe(1);
      if (c.type !== 'application/json' && !c.type.startsWith('application/x-www'))
        expect(seen).toEqual([sha(c.first)]);
    });
  }
});

describe('fastify7 review: isolation on one socket and across requests', () => {
  it('keep-alive pipelining through the read-and-put-back path: each request gets its own bytes', async () => {
    const seen: string[] = [];
    let runs = () => 0;
    const { port } = await tapApp((app) => {
      leaveToRoute(app, 'application/x-upload');
      runs = recordingRoute(app, '/u', seen, true);
    });
    const A = bytesOf(20_000, 2);
    const B = bytesOf(20_000, 3);
    const h = (key: string) => ({ 'content-type': 'application/x-upload', 'idempotency-key': key });
    // All in one write: each body ends in the same TCP chunk as the next request's head.
    const responses = await rawExchange(port, [
      Buffer.concat([
        postBytes('/u', h('k1'), A, false),
        postBytes('/u', h('k1'), B, false),
        postBytes('/u', h('k2'), B, false),
        postBytes('/u', h('k1'), A, false),
        postBytes('/u', h('k2'), A, true),
      ]),
    ]);
    expect(responses.map((r) => r.status)).toEqual([200, 422, 200, 200, 422]);
    expect(responses[3]?.headers['idempotent-replayed']).toBe('true');
    expect(seen).toEqual([sha(A), sha(B)]);
    expect(runs()).toBe(2);
  });

  it('concurrent slow uploads under different keys, interleaved on the wire, never mix copies', async () => {
    const seen: string[] = [];
    const { port } = await tapApp((app) => {
      leaveToRoute(app, 'application/x-upload');
      recordingRoute(app, '/u', seen, true);
    });
    const bodies = Array.from({ length: 6 }, (_, i) => bytesOf(30_000 + i, 10 + i));
    const parts = (b: Buffer) => [
      b.subarray(0, 1),
      b.subarray(1, 9_000),
      b.subarray(9_000, 9_001),
      b.subarray(9_001),
    ];
    const h = (i: number) => ({
      'content-type': 'application/x-upload',
      'idempotency-key': `c${i}`,
    });
    const first = await Promise.all(bodies.map((b, i) => slowPost(port, '/u', h(i), parts(b), 3)));
    expect(first.map((r) => r.status)).toEqual(bodies.map(() => 200));
    // Each key with the other's body: 422; with its own: replay.
    const swapped = await Promise.all(
      bodies.map((_b, i) => slowPost(port, '/u', h(i), parts(bodies[(i + 1) % 6]!), 3)),
    );
    expect(swapped.map((r) => r.status)).toEqual(bodies.map(() => 422));
    const again = await Promise.all(bodies.map((b, i) => slowPost(port, '/u', h(i), parts(b), 3)));
    expect(again.map((r) => r.status)).toEqual(bodies.map(() => 200));
    expect(new Set(seen)).toEqual(new Set(bodies.map((b) => sha(b))));
    expect(seen).toHaveLength(6);
  });

  it('an upload aborted mid-body while the plugin reads it takes no key; the retry runs once with its whole body', async () => {
    const seen: string[] = [];
    let runs = () => 0;
    const { port } = await tapApp((app) => {
      leaveToRoute(app, 'application/x-upload');
      runs = recordingRoute(app, '/u', seen, true);
    });
    const body = bytesOf(50_000, 5);
    const h = { 'content-type': 'application/x-upload', 'idempotency-key': 'ab' };
    // Half the body, then the client goes away.
    await rawExchange(port, [head('/u', h, body.length), body.subarray(0, 25_000), 100], 300);
    const [retry] = await rawExchange(port, [postBytes('/u', h, body)]);
    expect(retry?.status).toBe(200);
    const [again] = await rawExchange(port, [postBytes('/u', h, body)]);
    expect(again?.headers['idempotent-replayed']).toBe('true');
    expect(runs()).toBe(1);
    expect(seen).toEqual([sha(body)]);
  });

  // FIXED (was FINDING MEDIUM, pre-existing): under Fastify's http2 option every keyed
  // request failed: the recorder's held end went out through Http2ServerResponse.end, whose
  // `this.write` of the last chunk the recorder took for a write after the end
  // (ERR_STREAM_WRITE_AFTER_END, the stream reset). More in fastify-http2.test.ts.
  it('HTTP/2 (h2c): a keyed POST gets its 200', async () => {
    const app = Fastify({ http2: true });
    await app.register(idempotency, {
      store: createMemoryStore(),
      scope: 'global',
      onWarning: () => {},
    });
    app.addContentTypeParser('application/octet-stream', { parseAs: 'buffer' }, (_r, body, done) =>
      done(null, body),
    );
    app.post('/r', async (request) => ({
      size: (request.body as Buffer | undefined)?.length ?? 0,
    }));
    await app.listen({ port: 0, host: '127.0.0.1' });
    const port = (app.server.address() as { port: number }).port;
    const session = http2Connect(`http://127.0.0.1:${port}`);
    try {
      const status = await new Promise<number>((resolve, reject) => {
        const stream = session.request({
          ':method': 'POST',
          ':path': '/r',
          'content-type': 'application/octet-stream',
          'content-length': '3',
          'idempotency-key': 'h2',
        });
        let code = 0;
        stream.on('response', (headers) => {
          code = Number(headers[':status']);
        });
        stream.on('data', () => {});
        stream.on('end', () => resolve(code));
        stream.on('error', reject);
        stream.end(Buffer.from('abc'));
      });
      expect(status).toBe(200);
    } finally {
      session.destroy();
      await app.close();
    }
  });
});

describe('fastify7 review: the route gets exactly the bytes sent', () => {
  type Sniff = (raw: IncomingMessage) => Promise<void> | void;
  const sniffs: [string, Sniff][] = [
    [
      "once('readable') + read(5) + unshift",
      (raw) =>
        new Promise<void>((resolve) =>
          raw.once('readable', () => {
            const head5 = raw.read(5) as Buffer | null;
            if (head5) raw.unshift(head5);
            resolve();
          }),
        ),
    ],
    [
      "once('data') + pause + unshift",
      (raw) =>
        new Promise<void>((resolve) =>
          raw.once('data', (chunk: Buffer) => {
            raw.pause();
            raw.unshift(chunk);
            resolve();
          }),
        ),
    ],
    [
      'pause() then resume() a tick later',
      async (raw) => {
        raw.pause();
        await sleep(5);
        raw.resume();
        raw.pause();
      },
    ],
    ["setEncoding('latin1')", (raw) => void raw.setEncoding('latin1')],
  ];
  for (const [name, sniff] of sniffs) {
    it(`an onRequest hook after the plugin that sniffs with ${name}: the parser gets every byte once; fingerprint by bytes`, async () => {
      const seen: string[] = [];
      let runs = () => 0;
      const { port } = await tapApp((app) => {
        app.addHook('onRequest', async (request) => {
          await sniff(request.raw);
        });
        // Reads the stream by hand, strings (latin1) or Buffers.
        app.addContentTypeParser('application/octet-stream', (_request, payload, done) => {
          const parts: Buffer[] = [];
          payload.on('data', (chunk: Buffer | string) =>
            parts.push(typeof chunk === 'string' ? Buffer.from(chunk, 'latin1') : chunk),
          );
          payload.on('end', () => done(null, Buffer.concat(parts)));
          payload.on('error', (error) => done(error, undefined));
          payload.resume();
        });
        runs = recordingRoute(app, '/r', seen);
      });
      const a = bytesOf(40_000, 9);
      const b = Buffer.from(a);
      b[0] = (b[0]! + 1) & 0xff;
      const h = { 'content-type': 'application/octet-stream', 'idempotency-key': 's' };
      const [first] = await rawExchange(port, trickle('/r', h, a, [1, 2, 3, 16_384, 7]));
      expect(first?.status).toBe(200);
      const [again] = await rawExchange(port, [postBytes('/r', h, a)]);
      expect(again?.headers['idempotent-replayed']).toBe('true');
      const [other] = await rawExchange(port, trickle('/r', h, b, [40_000]));
      expect(other?.status).toBe(422);
      expect(seen).toEqual([sha(a)]);
      expect(runs()).toBe(1);
    });
  }

  it('Expect: 100-continue: the body sent after the interim response is copied and replayed', async () => {
    const seen: string[] = [];
    let runs = () => 0;
    const { port } = await tapApp((app) => {
      octetParser(app);
      runs = recordingRoute(app, '/r', seen);
    });
    const send = (body: Buffer) =>
      new Promise<{ status: number; replayed: unknown }>((resolve, reject) => {
        const req = httpRequest({
          host: '127.0.0.1',
          port,
          path: '/r',
          method: 'POST',
          headers: {
            'content-type': 'application/octet-stream',
            'idempotency-key': 'e',
            'content-length': body.length,
            expect: '100-continue',
          },
        });
        req.on('continue', () => req.end(body));
        req.on('response', (res) => {
          res.resume();
          res.on('end', () =>
            resolve({ status: res.statusCode ?? 0, replayed: res.headers['idempotent-replayed'] }),
          );
        });
        req.on('error', reject);
      });
    const a = bytesOf(30_000, 4);
    expect((await send(a)).status).toBe(200);
    expect(await send(a)).toEqual({ status: 200, replayed: 'true' });
    expect((await send(bytesOf(30_000, 5))).status).toBe(422);
    expect(runs()).toBe(1);
    expect(seen).toEqual([sha(a)]);
  });

  it('a route that pipes request.raw (multipart style), body past the highWaterMark sent slowly: every byte once', async () => {
    const seen: string[] = [];
    const { port } = await tapApp((app) => {
      leaveToRoute(app, 'application/x-upload');
      app.post('/u', (request, reply) => {
        const parts: Buffer[] = [];
        const sink = new PassThrough();
        sink.on('data', (c: Buffer) => parts.push(c));
        sink.on('end', () => {
          const all = Buffer.concat(parts);
          seen.push(sha(all));
          reply.send({ size: all.length });
        });
        request.raw.pipe(sink);
      });
    });
    const body = bytesOf(150_000, 6);
    const cuts = [1, 16_383, 16_385, 3, 50_000];
    const r = await slowPost(
      port,
      '/u',
      { 'content-type': 'application/x-upload', 'idempotency-key': 'p' },
      cuts
        .reduce<Buffer[]>((acc, n) => {
          const at = acc.reduce((s, p) => s + p.length, 0);
          acc.push(body.subarray(at, at + n));
          return acc;
        }, [])
        .concat([body.subarray(cuts.reduce((s, n) => s + n, 0))]),
      5,
    );
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toEqual({ size: body.length });
    expect(seen).toEqual([sha(body)]);
  });

  // Found in review (HIGH; fixed in fastify8): a preParsing hook hands Fastify a stream that
  // pipes the request (a PassThrough, a decoder) and the parser hands that stream to the
  // route. At preHandler the pipe was reading and the body not all in, so the plugin fell
  // back to request.body, the stream object, and fingerprinted its JSON (internal state, the
  // first kilobytes buffered): the same upload cut otherwise on the wire was refused (422),
  // and an upload that differed past the buffered prefix replayed the first one's response.
  // Now the plugin waits for the rest as it is pushed (letting the request take it in past
  // its highWaterMark, up to maxBodyBytes, within bodyTimeoutMs) and fingerprints the bytes.
  describe('a preParsing stream that pipes an upload the parser hands to the route', () => {
    async function pipedApp() {
      let runs = 0;
      const { port } = await tapApp((app) => {
        app.addHook('preParsing', async (_request, _reply, payload) =>
          payload.pipe(new PassThrough()),
        );
        app.addContentTypeParser('application/x-upload', (_request, payload, done) =>
          done(null, payload),
        );
        app.post('/u', async (request) => {
          let size = 0;
          for await (const chunk of request.body as Readable) size += (chunk as Buffer).length;
          return { runs: ++runs, size };
        });
      });
      return { port, runs: () => runs };
    }
    const h = { 'content-type': 'application/x-upload', 'idempotency-key': 'pp' };
    const a = bytesOf(300_000, 1);

    // Was HIGH: another upload (its last byte changed) under the key replayed the first.
    it('an upload that differs in its last byte is 422', async () => {
      const { port, runs } = await pipedApp();
      expect(
        (await slowPost(port, '/u', h, [a.subarray(0, 100_000), a.subarray(100_000)], 50)).status,
      ).toBe(200);
      const tail = Buffer.from(a);
      tail[299_999] = (tail[299_999]! + 1) & 0xff;
      const other = await slowPost(
        port,
        '/u',
        h,
        [tail.subarray(0, 100_000), tail.subarray(100_000)],
        50,
      );
      expect(other.status).toBe(422);
      expect(runs()).toBe(1);
    });

    // Was MEDIUM: the same bytes, cut otherwise on the wire, were refused with 422.
    it('the same upload cut otherwise on the wire replays', async () => {
      const { port, runs } = await pipedApp();
      expect(
        (await slowPost(port, '/u', h, [a.subarray(0, 100_000), a.subarray(100_000)], 50)).status,
      ).toBe(200);
      const same = await slowPost(
        port,
        '/u',
        h,
        [a.subarray(0, 1), a.subarray(1, 5), a.subarray(5)],
        50,
      );
      expect(same.status).toBe(200);
      expect(runs()).toBe(1);
    });
  });

  // Found in review (HIGH, not a regression; fixed in fastify8): a body with neither
  // Content-Length nor Transfer-Encoding (HTTP/2, where Content-Length is optional;
  // app.inject with a stream payload) was never copied (the "has a body" check said no,
  // though Fastify parses it since it has a Content-Type), so the parsed value was
  // fingerprinted: an upload left to the route was "no body" and another upload under the
  // key replayed the first; JSON that JSON.parse makes alike was one request again. Now such
  // a body is copied unless it cannot have one (HTTP/1.x from Node's server, an HTTP/2
  // stream that ended with its headers).
  describe('a body with no Content-Length and no Transfer-Encoding (app.inject stream, HTTP/2)', () => {
    async function injectApp() {
      const app = Fastify();
      await app.register(idempotency, {
        store: createMemoryStore(),
        scope: 'global',
        onWarning: () => {},
      });
      leaveToRoute(app, 'application/x-upload');
      let runs = 0;
      app.post('/u', async (request) => {
        let size = 0;
        for await (const c of request.raw) size += (c as Buffer).length;
        return { runs: ++runs, size };
      });
      app.post('/j', async (request) => ({ runs: ++runs, body: request.body }));
      return { app, runs: () => runs };
    }
    const send = (app: FastifyInstance, url: string, type: string, parts: Buffer[]) =>
      app.inject({
        method: 'POST',
        url,
        headers: { 'content-type': type, 'idempotency-key': url },
        payload: Readable.from(parts),
      });

    it('control: the route gets every byte, the same bytes replay', async () => {
      const { app, runs } = await injectApp();
      try {
        const a = bytesOf(60_000, 8);
        const first = await send(app, '/u', 'application/x-upload', [
          a.subarray(0, 1),
          a.subarray(1),
        ]);
        expect(first.statusCode).toBe(200);
        const again = await send(app, '/u', 'application/x-upload', [
          a.subarray(0, 20_000),
          a.subarray(20_000),
        ]);
        expect(again.headers['idempotent-replayed']).toBe('true');
        expect(JSON.parse(again.body)).toEqual({ runs: 1, size: 60_000 });
        expect(runs()).toBe(1);
      } finally {
        await app.close();
      }
    });

    it('another upload left to the route under the key is 422', async () => {
      const { app, runs } = await injectApp();
      try {
        expect(
          (await send(app, '/u', 'application/x-upload', [bytesOf(60_000, 8)])).statusCode,
        ).toBe(200);
        expect(
          (await send(app, '/u', 'application/x-upload', [bytesOf(60_000, 9)])).statusCode,
        ).toBe(422);
        expect(runs()).toBe(1);
      } finally {
        await app.close();
      }
    });

    it('JSON integers past 2^53 that parse alike are 422', async () => {
      const { app } = await injectApp();
      try {
        const json = (s: string) => [Buffer.from(s)];
        expect(
          (await send(app, '/j', 'application/json', json('{"amount":9007199254740993}')))
            .statusCode,
        ).toBe(200);
        expect(
          (await send(app, '/j', 'application/json', json('{"amount":9007199254740992}')))
            .statusCode,
        ).toBe(422);
      } finally {
        await app.close();
      }
    });
  });
});

describe('fastify7 review: the copy and the chunks it holds', () => {
  // Found in review (fixed: every chunk is copied; it was a HIGH regression, main answers 422):
  // the copy kept, without copying, every
  // chunk that owns its memory (BodyTap.onPush), which is what Node's HTTP server hands out
  // for socket reads of body bytes. A reader that changes its chunks in place after use (a
  // parser that scrubs them with fill(0), a preParsing transform that decodes in place)
  // changes the copy before begin fingerprints it: two bodies that differ past the first
  // socket read look alike, and the other body under the key is replayed the first one's
  // response instead of 422.
  it('a parser that scrubs its chunks after reading them: another body under the key is 422', async () => {
    let runs = 0;
    const { port } = await tapApp((app) => {
      app.addContentTypeParser('application/octet-stream', (_r, payload, done) => {
        const parts: Buffer[] = [];
        payload.on('data', (chunk: Buffer) => {
          parts.push(Buffer.from(chunk));
          chunk.fill(0);
        });
        payload.on('end', () => done(null, Buffer.concat(parts)));
      });
      app.post('/r', async (request) => ({ runs: ++runs, size: (request.body as Buffer).length }));
    });
    const n = 300_000;
    const a = Buffer.alloc(n, 1);
    const b = Buffer.alloc(n, 1).fill(2, 10_000);
    const h = { 'content-type': 'application/octet-stream', 'idempotency-key': 'z' };
    const steps = (x: Buffer) => [
      Buffer.concat([Buffer.from(head('/r', h, n, true)), x.subarray(0, 10_000)]),
      20,
      x.subarray(10_000, 100_000),
      20,
      x.subarray(100_000, 200_000),
      20,
      x.subarray(200_000),
    ];
    expect((await rawExchange(port, steps(a)))[0]?.status).toBe(200);
    const [other] = await rawExchange(port, steps(b));
    expect(other?.status).toBe(422);
    expect(runs).toBe(1);
  });

  it('pipelined after an upload refused past maxBodyBytes (chunked, then declared): the next request gets its own bytes', async () => {
    const seen: string[] = [];
    let runs = () => 0;
    const { port } = await tapApp(
      (app) => {
        leaveToRoute(app, 'application/x-upload');
        runs = recordingRoute(app, '/u', seen, true);
      },
      { maxBodyBytes: 10_000 },
    );
    const h = (key: string) => ({ 'content-type': 'application/x-upload', 'idempotency-key': key });
    const big = bytesOf(30_000, 1);
    const small = bytesOf(5_000, 2);
    const responses = await rawExchange(port, [
      Buffer.concat([
        Buffer.from(head('/u', h('o1'), undefined), 'latin1'),
        ...chunked(big, [7_000, 7_000]),
        postBytes('/u', h('o1'), small, false),
        postBytes('/u', h('o2'), big, false),
        postBytes('/u', h('o2'), small, true),
      ]),
    ]);
    expect(responses.map((r) => r.status)).toEqual([413, 200, 413, 200]);
    expect(seen).toEqual([sha(small), sha(small)]);
    expect(runs()).toBe(2);
  });

  it('a GET with a body on a route whose methods include GET (Fastify does not parse it): read, put back, told apart', async () => {
    const seen: string[] = [];
    let runs = 0;
    const { port } = await tapApp((app) => {
      app.get('/g', { config: { idempotency: { methods: ['GET', 'POST'] } } }, async (request) => {
        const parts: Buffer[] = [];
        for await (const c of request.raw) parts.push(c as Buffer);
        seen.push(sha(Buffer.concat(parts)));
        return { runs: ++runs };
      });
    });
    const get = (body: Buffer) =>
      Buffer.concat([
        Buffer.from(
          head('/g', { 'idempotency-key': 'g' }, body.length, true).replace(/^POST/, 'GET'),
          'latin1',
        ),
        body,
      ]);
    const a = bytesOf(20_000, 3);
    expect((await rawExchange(port, [get(a)]))[0]?.status).toBe(200);
    expect((await rawExchange(port, [get(a)]))[0]?.headers['idempotent-replayed']).toBe('true');
    expect((await rawExchange(port, [get(bytesOf(20_000, 4))]))[0]?.status).toBe(422);
    expect(seen).toEqual([sha(a)]);
    expect(runs).toBe(1);
  });
});

describe('fastify7 review: bounded memory and time', () => {
  it('an upload left to the route past maxBodyBytes (no length) is refused with 413 before it ends, nothing held', async () => {
    const held: number[] = [];
    let runs = 0;
    const { port } = await tapApp(
      (app) => {
        leaveToRoute(app, 'application/x-upload');
        app.addHook('onResponse', async (request) => {
          held.push(heldCopyBytes(request));
        });
        app.post('/u', async () => ({ runs: ++runs }));
      },
      { maxBodyBytes: 10_000 },
    );
    const parts = Array.from({ length: 200 }, (_, i) => bytesOf(1_000, i));
    const r = await slowPost(
      port,
      '/u',
      { 'content-type': 'application/x-upload', 'idempotency-key': 'big' },
      parts,
      10,
    );
    expect(r.status).toBe(413);
    // 200 parts 10 ms apart: 2 s to send all; the answer comes after ~11 of them.
    expect(r.at).toBeLessThan(1_000);
    expect(r.wrote).toBeLessThan(100_000);
    await sleep(50);
    expect(held).toEqual([0]);
    expect(runs).toBe(0);
  });

  it('a declared length past maxBodyBytes on an upload left to the route: 413 at once, unread', async () => {
    const { port } = await tapApp(
      (app) => {
        leaveToRoute(app, 'application/x-upload');
        app.post('/u', async () => ({ ran: true }));
      },
      { maxBodyBytes: 10_000 },
    );
    const started = Date.now();
    const [r] = await rawExchange(
      port,
      [
        head(
          '/u',
          { 'content-type': 'application/x-upload', 'idempotency-key': 'd' },
          1_000_000,
          true,
        ),
        'x'.repeat(100),
      ],
      2_000,
    );
    expect(r?.status).toBe(413);
    expect(Date.now() - started).toBeLessThan(1_500);
  });

  it("a slow-loris upload the plugin reads at preHandler holds no key; Node's requestTimeout ends it", async () => {
    let runs = 0;
    const app = Fastify({
      requestTimeout: 800,
      serverFactory: (handler) =>
        createServer({ requestTimeout: 800, connectionsCheckingInterval: 100 }, handler),
    });
    await app.register(idempotency, {
      store: createMemoryStore(),
      scope: 'global',
      onWarning: () => {},
    });
    leaveToRoute(app, 'application/x-upload');
    const seen: string[] = [];
    app.post('/u', async (request) => {
      const parts: Buffer[] = [];
      for await (const c of request.raw) parts.push(c as Buffer);
      seen.push(sha(Buffer.concat(parts)));
      return { runs: ++runs };
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    try {
      const port = (app.server.address() as { port: number }).port;
      const h = { 'content-type': 'application/x-upload', 'idempotency-key': 'slow' };
      const body = bytesOf(1_000, 3);
      // One byte every 100 ms (the whole body would take 100 s), until the server closes.
      const socket = connect(port, '127.0.0.1');
      socket.on('error', () => {});
      const got: Buffer[] = [];
      socket.on('data', (c: Buffer) => got.push(c));
      let closedAt = 0;
      const started = Date.now();
      socket.on('close', () => {
        closedAt = Date.now() - started;
      });
      socket.write(head('/u', h, body.length));
      const loris = (async () => {
        for (let i = 0; i < 80 && !closedAt; i++) {
          socket.write(body.subarray(i, i + 1));
          await sleep(100);
        }
        socket.destroy();
      })();
      await sleep(300);
      // Meanwhile the same key, whole: it runs (the slow one holds no key).
      const [whole] = await rawExchange(port, [postBytes('/u', h, body)]);
      expect(whole?.status).toBe(200);
      await loris;
      // Ended by the server within requestTimeout (+ the check interval), with a 408.
      expect(closedAt).toBeGreaterThan(0);
      expect(closedAt).toBeLessThan(3_000);
      expect(Buffer.concat(got).toString('latin1')).toMatch(/^HTTP\/1\.1 408/);
      expect(runs).toBe(1);
      expect(seen).toEqual([sha(body)]);
    } finally {
      await app.close();
    }
  });

  // FINDING LOW, kept as it.fails: it cannot be fixed without giving up exactly-once. An
  // upload left to the route used to reach the route at once, so a route could bound a stalled
  // upload itself (an idle timer, as upload handlers do). Why not now: the key is checked and
  // taken (422 for a reused key with another body, 409 for a duplicate, the replay) on the
  // fingerprint of the whole body, so the route may only run once the body is whole; a route
  // that ran on part of it would run before the key is taken, and a duplicate or a reused key
  // would run it (and whatever it does with the bytes as they come) too. Taking the key before
  // the body is whole does not help either: the record's fingerprint would be unknown while
  // the route runs (a reused key with another body would get 409, then 422, not 422 first)
  // and every store would need a write of the fingerprint afterwards. Re-examined at
  // wt/nest21, wt/bodylimit and wt/fastfix. Workarounds, checked by the next test: the route's
  // `bodyTimeoutMs` (`config: { idempotency: { bodyTimeoutMs } }`) bounds the plugin's wait
  // for the body, from preHandler, with a 408 body-timeout problem and the connection closed
  // (it bounds the whole wait, not idleness: set it to the longest a whole upload may take);
  // for an idle bound, Fastify's `connectionTimeout` (server-wide) closes a connection that
  // sends nothing for that long, also while the plugin waits (no answer is sent). No key is
  // held meanwhile either way (see above).
  it.fails('a stalled upload left to the route reaches the route, which answers it with its own timeout', async () => {
    const { port } = await tapApp((app) => {
      leaveToRoute(app, 'application/x-upload');
      app.post('/u', (request, reply) => {
        let timer = setTimeout(() => reply.code(408).send({ stalled: true }), 300);
        request.raw.on('data', () => {
          clearTimeout(timer);
          timer = setTimeout(() => reply.code(408).send({ stalled: true }), 300);
        });
        request.raw.on('end', () => {
          clearTimeout(timer);
          reply.send({ ok: true });
        });
      });
    });
    const h = { 'content-type': 'application/x-upload', 'idempotency-key': 'stall' };
    const [r] = await rawExchange(port, [head('/u', h, 1_000), 'x'.repeat(100)], 1_500);
    expect(r?.status).toBe(408);
  });

  it("the workarounds for it: the route's bodyTimeoutMs (408 body-timeout, connection closed) or Fastify's connectionTimeout (connection closed); the route never runs, no key is held", async () => {
    let runs = 0;
    const route = (app: FastifyInstance, config = {}) => {
      leaveToRoute(app, 'application/x-upload');
      app.post('/u', { config }, (request, reply) => {
        runs++;
        const parts: Buffer[] = [];
        request.raw.on('data', (c: Buffer) => parts.push(c));
        request.raw.on('end', () => reply.send({ size: Buffer.concat(parts).length }));
      });
    };
    const h = { 'content-type': 'application/x-upload', 'idempotency-key': 'stall-around' };
    const stalled = [head('/u', h, 1_000), 'x'.repeat(100)];
    const whole = [head('/u', h, 1_000, true), 'x'.repeat(1_000)];
    const timed = await tapApp((app) => route(app, { idempotency: { bodyTimeoutMs: 300 } }));
    const idle = await tapApp((app) => route(app), { fastify: { connectionTimeout: 300 } });
    for (const [name, { port }] of [
      ['bodyTimeoutMs', timed],
      ['connectionTimeout', idle],
    ] as const) {
      const before = runs;
      const started = Date.now();
      const answers = await rawExchange(port, stalled, 5_000);
      const ms = Date.now() - started;
      expect({ name, status: answers[0]?.status, ran: runs - before }).toEqual({
        name,
        status: name === 'bodyTimeoutMs' ? 408 : undefined,
        ran: 0,
      });
      if (name === 'bodyTimeoutMs') expect(answers[0]?.headers.connection).toBe('close');
      // Closed by the server (rawExchange waits 5 s for that), well before Node's requestTimeout.
      expect(ms).toBeLessThan(5_000);
      // No key held: the whole upload with the same key runs.
      const [done] = await rawExchange(port, whole, 5_000);
      expect({ name, status: done?.status }).toEqual({ name, status: 200 });
    }
    expect(runs).toBe(2);
  });

  it('5,000 requests with bodies: no retained growth, every request collected, push never wrapped on a prototype', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const app = Fastify();
    await app.register(idempotency, {
      store: createMemoryStore(),
      scope: 'global',
      onWarning: () => {},
    });
    octetParser(app);
    leaveToRoute(app, 'application/x-upload');
    app.post('/r', async (request) => ({ size: (request.body as Buffer).length }));
    app.post('/u', async (request) => {
      let size = 0;
      for await (const c of request.raw) size += (c as Buffer).length;
      return { size };
    });
    const refs: WeakRef<object>[] = [];
    app.addHook('onRequest', async (request) => {
      if (refs.length < 50) refs.push(new WeakRef(request.raw));
    });
    const body = bytesOf(20_000, 1);
    const run = async (n: number) => {
      for (let i = 0; i < n; i++) {
        const url = i % 2 === 0 ? '/r' : '/u';
        const type = i % 2 === 0 ? 'application/octet-stream' : 'application/x-upload';
        const res = await app.inject({
          method: 'POST',
          url,
          headers: { 'content-type': type, 'idempotency-key': `m${i % 2}` },
          payload: body,
        });
        if (res.statusCode !== 200) throw new Error(`status ${res.statusCode}`);
      }
    };
    try {
      await run(200);
      gc();
      await sleep(10);
      gc();
      const before = process.memoryUsage().heapUsed;
      await run(5_000);
      await sleep(10);
      gc();
      await sleep(10);
      gc();
      const growth = process.memoryUsage().heapUsed - before;
      // 5,000 copies of 20 kB would be 100 MB.
      expect(growth).toBeLessThan(8_000_000);
      expect(refs.filter((r) => r.deref() !== undefined).length).toBeLessThanOrEqual(1);
      expect(Object.hasOwn(IncomingMessage.prototype, 'push')).toBe(false);
      expect(Object.hasOwn(Readable.prototype, 'push')).toBe(true);
    } finally {
      await app.close();
    }
  }, 120_000);

  it('no push wrapper for a route with idempotency off, a request without a key, or a GET; restored after begin', async () => {
    const wrapped: Record<string, boolean> = {};
    const { url } = await tapApp((app) => {
      app.addHook('onRequest', async (request) => {
        wrapped[
          `${request.method} ${request.url} ${request.headers['idempotency-key'] ?? '-'} onRequest`
        ] = Object.hasOwn(request.raw, 'push');
      });
      const check = async (request: FastifyRequest) => {
        const own = Object.hasOwn(request.raw, 'push');
        wrapped[
          `${request.method} ${request.url} ${request.headers['idempotency-key'] ?? '-'} handler`
        ] = own && request.raw.push !== Readable.prototype.push;
        return { ok: true };
      };
      app.post('/off', { config: { idempotency: false } }, check);
      app.post('/on', check);
      app.get('/on', check);
    });
    const post = (path: string, key?: string) =>
      fetch(`${url}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...(key ? { 'idempotency-key': key } : {}) },
        body: '{"a":1}',
      });
    await post('/off', 'k');
    await post('/on');
    await post('/on', 'k');
    await fetch(`${url}/on`, { headers: { 'idempotency-key': 'k' } });
    expect(wrapped).toEqual({
      'POST /off k onRequest': false,
      'POST /off k handler': false,
      'POST /on - onRequest': false,
      'POST /on k onRequest': true,
      'POST /on k handler': false,
      'GET /on k onRequest': false,
      'GET /on k handler': false,
    });
  });
});

describe('fastify7 review: bad input', () => {
  it('Content-Length longer than what is sent, then the client closes: no key taken, the retry runs', async () => {
    let runs = 0;
    const { port } = await tapApp((app) => {
      leaveToRoute(app, 'application/x-upload');
      octetParser(app);
      app.post('/r', async () => ({ runs: ++runs }));
    });
    for (const type of ['application/octet-stream', 'application/x-upload']) {
      const h = { 'content-type': type, 'idempotency-key': `short-${type}` };
      await rawExchange(port, [`${head('/r', h, 100, true)}only-this`, 100], 300);
      const [retry] = await rawExchange(port, [rawPost('/r', h, 'x'.repeat(100), true)]);
      expect(retry?.status).toBe(200);
    }
    expect(runs).toBe(2);
  });

  it('a body on a POST route with no parser for its type: Fastify 415 and nothing held', async () => {
    const held: number[] = [];
    const { url } = await tapApp((app) => {
      app.addHook('onResponse', async (request) => {
        held.push(heldCopyBytes(request));
      });
      app.post('/r', async () => ({ ran: true }));
    });
    const r = await fetch(`${url}/r`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-nothing', 'idempotency-key': 'n' },
      body: 'x'.repeat(50_000),
    });
    expect(r.status).toBe(415);
    await sleep(20);
    expect(held).toEqual([0]);
  });

  it('invalid JSON: Fastify 400, no key; then the valid body runs once and replays', async () => {
    let runs = 0;
    const { url } = await tapApp((app) => {
      app.post('/r', async () => ({ runs: ++runs }));
    });
    const send = (body: string) =>
      fetch(`${url}/r`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'idempotency-key': 'j' },
        body,
      });
    expect((await send('{"a":')).status).toBe(400);
    expect((await send('{"a":1}')).status).toBe(200);
    expect((await send('{"a":1}')).headers.get('idempotent-replayed')).toBe('true');
    expect(runs).toBe(1);
  });
});
