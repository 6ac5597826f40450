import { request as httpRequest } from 'node:http';
import {
  type ClientHttp2Session,
  connect as http2Connect,
  constants as http2Constants,
  type IncomingHttpHeaders,
} from 'node:http2';
import { Readable } from 'node:stream';
import { createMemoryStore } from '@idem/store-memory';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// Keyed requests over HTTP/2 (h2c: Fastify's `http2: true`, node:http2's compat
// Http2ServerRequest/Http2ServerResponse), end to end with a real node:http2 client.

interface H2Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

const apps: FastifyInstance[] = [];
const sessions: ClientHttp2Session[] = [];
afterEach(() => {
  for (const session of sessions.splice(0)) session.destroy();
});
afterAll(() => Promise.all(apps.map((app) => app.close())));

function deferred<T = void>() {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

async function listen(app: FastifyInstance): Promise<number> {
  apps.push(app);
  await app.listen({ port: 0, host: '127.0.0.1' });
  return (app.server.address() as { port: number }).port;
}

function session(port: number): ClientHttp2Session {
  const client = http2Connect(`http://127.0.0.1:${port}`);
  client.on('error', () => {});
  sessions.push(client);
  return client;
}

/** A POST on `client`, answered whole. */
function post(
  client: ClientHttp2Session,
  path: string,
  key: string,
  body: string,
  headers: Record<string, string> = {},
): Promise<H2Answer> {
  return new Promise((resolve, reject) => {
    const stream = client.request({
      ':method': 'POST',
      ':path': path,
      'content-type': 'application/json',
      'idempotency-key': key,
      ...headers,
    });
    let answer: IncomingHttpHeaders = {};
    const parts: Buffer[] = [];
    stream.on('response', (h) => {
      answer = h;
    });
    stream.on('data', (chunk: Buffer) => parts.push(chunk));
    stream.on('end', () =>
      resolve({
        status: Number(answer[':status']),
        headers: answer,
        body: Buffer.concat(parts).toString(),
      }),
    );
    stream.on('error', reject);
    stream.end(body);
  });
}

/** The same POST over HTTP/1.1. */
function post1(port: number, path: string, key: string, body: string): Promise<H2Answer> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        host: '127.0.0.1',
        port,
        path,
        method: 'POST',
        agent: false,
        headers: { 'content-type': 'application/json', 'idempotency-key': key },
      },
      (res) => {
        const parts: Buffer[] = [];
        res.on('data', (chunk: Buffer) => parts.push(chunk));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers as IncomingHttpHeaders,
            body: Buffer.concat(parts).toString(),
          }),
        );
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** The response's headers as a client reads them, less the per-transfer ones. */
function replayable(headers: IncomingHttpHeaders): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(headers))
    if (!name.startsWith(':') && name !== 'date' && name !== 'content-length') out[name] = value;
  return out;
}

const RECORDED = ['content-type', 'x-charge-id', 'etag', 'cache-control'];

/** An HTTP/2 instance typed as the HTTP/1.1 one: the routes and the plugin are the same. */
const h2App = () => Fastify({ http2: true }) as unknown as FastifyInstance;

function chargesApp(store: ReturnType<typeof createMemoryStore>, http2: boolean) {
  const app = http2 ? h2App() : Fastify();
  let runs = 0;
  /** The next run tells `entered` it runs, then waits for `release`. */
  const gates: { entered: () => void; release: Promise<void> }[] = [];
  void app.register(idempotency, {
    store,
    scope: 'global',
    recordedHeaders: RECORDED,
    onWarning: () => {},
  });
  app.post('/charges', async (request, reply) => {
    const run = ++runs;
    const gate = gates.shift();
    if (gate) {
      gate.entered();
      await gate.release;
    }
    reply
      .code(201)
      .header('X-Charge-Id', `ch_${run}`)
      .header('ETag', `"${run}"`)
      .header('Cache-Control', 'no-store')
      .header('X-Not-Recorded', 'yes');
    return { run, amount: (request.body as { amount: number }).amount };
  });
  app.post('/stream', async (_request, reply) => {
    ++runs;
    reply.header('content-type', 'text/plain');
    return reply.send(Readable.from(['one,', 'two,', 'three'], { objectMode: false }));
  });
  return { app, runs: () => runs, gates };
}

describe('HTTP/2 (h2c) through Fastify', () => {
  it('the first execution gets its 201 and body; a retry replays it; another body is 422', async () => {
    const { app, runs } = chargesApp(createMemoryStore(), true);
    const port = await listen(app);
    const client = session(port);
    const first = await post(client, '/charges', 'k1', '{"amount":5}');
    expect(first.status).toBe(201);
    expect(JSON.parse(first.body)).toEqual({ run: 1, amount: 5 });
    expect(first.headers['idempotent-replayed']).toBeUndefined();
    const retry = await post(client, '/charges', 'k1', '{"amount":5}');
    expect(retry.status).toBe(201);
    expect(retry.body).toBe(first.body);
    expect(retry.headers['idempotent-replayed']).toBe('true');
    // Another stream of another connection replays as well.
    const again = await post(session(port), '/charges', 'k1', '{"amount":5}');
    expect(again.headers['idempotent-replayed']).toBe('true');
    const other = await post(client, '/charges', 'k1', '{"amount":6}');
    expect(other.status).toBe(422);
    expect(runs()).toBe(1);
  });

  it('headers are recorded as sent (lower-case, no pseudo-header) and replayed over HTTP/2 and HTTP/1.1', async () => {
    const store = createMemoryStore();
    const h2 = chargesApp(store, true);
    const h1 = chargesApp(store, false);
    const client = session(await listen(h2.app));
    const port1 = await listen(h1.app);

    const first = await post(client, '/charges', 'k-h', '{"amount":1}');
    expect(first.status).toBe(201);
    const sent = replayable(first.headers);
    expect(sent).toMatchObject({
      'x-charge-id': 'ch_1',
      etag: '"1"',
      'cache-control': 'no-store',
      'x-not-recorded': 'yes',
    });
    const recorded = Object.fromEntries(
      Object.entries(sent).filter(([name]) => RECORDED.includes(name)),
    );
    const overH2 = await post(client, '/charges', 'k-h', '{"amount":1}');
    expect(overH2.status).toBe(201);
    expect(replayable(overH2.headers)).toEqual({ ...recorded, 'idempotent-replayed': 'true' });
    expect(overH2.body).toBe(first.body);
    // Recorded over HTTP/2, replayed over HTTP/1.1: the same head, no pseudo-header in it.
    const overH1 = await post1(port1, '/charges', 'k-h', '{"amount":1}');
    expect(overH1.status).toBe(201);
    expect(overH1.body).toBe(first.body);
    const h1Head = replayable(overH1.headers);
    delete h1Head.connection;
    delete h1Head['keep-alive'];
    expect(h1Head).toEqual({ ...recorded, 'idempotent-replayed': 'true' });
    expect(Object.keys(overH1.headers).some((name) => name.startsWith(':'))).toBe(false);

    // Recorded over HTTP/1.1 (Connection, Keep-Alive, Transfer-Encoding and Date go out
    // with it), replayed over HTTP/2, which refuses connection-specific headers: none is
    // recorded, so the replay goes out whole.
    const firstH1 = await post1(port1, '/stream', 'k-s', '{}');
    expect(firstH1.status).toBe(200);
    expect(firstH1.headers['transfer-encoding']).toBe('chunked');
    const replayH2 = await post(client, '/stream', 'k-s', '{}');
    expect(replayH2.status).toBe(200);
    expect(replayH2.body).toBe('one,two,three');
    expect(replayH2.headers['idempotent-replayed']).toBe('true');
    expect(replayH2.headers['content-type']).toBe('text/plain');
    expect(h1.runs() + h2.runs()).toBe(2);
  });

  it('a concurrent duplicate is 409 while the first runs; the first then gets its 201', async () => {
    const { app, runs, gates } = chargesApp(createMemoryStore(), true);
    const client = session(await listen(app));
    const gate = deferred();
    const entered = deferred();
    gates.push({ entered: entered.resolve, release: gate.promise });
    const first = post(client, '/charges', 'k-c', '{"amount":2}');
    // The first holds the key once its handler runs.
    await entered.promise;
    const duplicate = await post(client, '/charges', 'k-c', '{"amount":2}');
    expect(duplicate.status).toBe(409);
    gate.resolve();
    const answered = await first;
    expect(answered.status).toBe(201);
    expect(JSON.parse(answered.body)).toEqual({ run: 1, amount: 2 });
    const retry = await post(client, '/charges', 'k-c', '{"amount":2}');
    expect(retry.headers['idempotent-replayed']).toBe('true');
    expect(retry.body).toBe(answered.body);
    expect(runs()).toBe(1);
  });

  it('a streamed body of several chunks replays whole; streams of one session stay apart', async () => {
    const { app, runs } = chargesApp(createMemoryStore(), true);
    const client = session(await listen(app));
    const answers = await Promise.all(
      ['a', 'b', 'c', 'd'].map((key) => post(client, '/stream', `k-${key}`, '{}')),
    );
    for (const answer of answers) {
      expect(answer.status).toBe(200);
      expect(answer.body).toBe('one,two,three');
    }
    const replays = await Promise.all(
      ['a', 'b', 'c', 'd'].map((key) => post(client, '/stream', `k-${key}`, '{}')),
    );
    for (const replay of replays) {
      expect(replay.body).toBe('one,two,three');
      expect(replay.headers['idempotent-replayed']).toBe('true');
    }
    expect(runs()).toBe(4);
  });

  it('a client that resets its stream mid-response: the body is still recorded, a retry replays it', async () => {
    const app = h2App();
    await app.register(idempotency, { store: createMemoryStore(), scope: 'global' });
    let runs = 0;
    const firstChunkOut = deferred();
    const streamReset = deferred();
    const recorded = deferred<{ closed: boolean }>();
    let wroteAfterReset = false;
    app.post('/feed', async (request, reply) => {
      runs++;
      const stream = (request.raw as unknown as { stream: NodeJS.EventEmitter }).stream;
      stream.once('close', () => streamReset.resolve());
      // The app learns of the end only once the outcome is stored ('close' held back).
      reply.raw.once('close', () => recorded.resolve({ closed: true }));
      const body = new Readable({ read() {} });
      body.push('part-1;');
      void (async () => {
        await streamReset.promise;
        wroteAfterReset = !reply.raw.destroyed;
        body.push('part-2;');
        body.push('part-3');
        body.push(null);
      })();
      reply.header('content-type', 'text/plain');
      return reply.send(body);
    });
    const client = session(await listen(app));
    const stream = client.request({
      ':method': 'POST',
      ':path': '/feed',
      'content-type': 'application/json',
      'idempotency-key': 'k-gone',
    });
    stream.on('error', () => {});
    stream.once('data', () => firstChunkOut.resolve());
    stream.end('{}');
    await firstChunkOut.promise;
    stream.close(http2Constants.NGHTTP2_CANCEL);
    await streamReset.promise;
    await recorded.promise;
    expect(wroteAfterReset).toBe(true);
    const retry = await post(client, '/feed', 'k-gone', '{}');
    expect(retry.status).toBe(200);
    expect(retry.headers['idempotent-replayed']).toBe('true');
    expect(retry.body).toBe('part-1;part-2;part-3');
    expect(runs).toBe(1);
  });
});
