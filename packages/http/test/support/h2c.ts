import { request as h1Request, type IncomingMessage, type ServerResponse } from 'node:http';
import {
  type ClientHttp2Session,
  connect as http2Connect,
  constants as http2Constants,
  type IncomingHttpHeaders,
} from 'node:http2';
import type { AddressInfo, Server as NetServer, Socket } from 'node:net';
import { createMemoryStore } from '@idem/store-memory';
import { createIdempotencyHandler, type HttpIdempotencyOptions } from '../../src/index.js';
import {
  headerValue,
  nodeRequestBody,
  recordServerResponse,
  requestUrl,
  sendDecisionResponse,
} from '../../src/node.js';

// The scaffolding of the recorder's tests over real loopback servers: node:http and h2c
// (node:http2 without TLS) servers behind one idem handler, node:http2 client sessions, and
// the requests those tests make (a keyed POST, a POST whose stream the client resets).

/** An app under test: a `node:http` handler (node:http2's compat objects are passed as such). */
export type App = (req: IncomingMessage, res: ServerResponse) => unknown;

/** node:http2's compat request and response, seen with their stream. */
export type StreamOf = { stream: NodeJS.EventEmitter };

/** A promise and its resolver. */
export function deferred<T = void>() {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

/** What a test started and must stop: run by {@link closeAll}, the last pushed first. */
export const closers: (() => Promise<void> | void)[] = [];

/** Stops what the test started (`afterEach(closeAll)`). */
export async function closeAll(): Promise<void> {
  for (const close of closers.splice(0).reverse()) await close();
}

/** Options of {@link recordedHandler}; `store` defaults to a fresh memory store. */
export type RecordingOptions = Partial<HttpIdempotencyOptions<IncomingMessage>>;

/**
 * A `node:http`/`node:http2` request handler: one idem handler (`scope: 'global'`, warnings
 * ignored) whose 'execute' records the response and runs `app`, 'respond' replays, and
 * 'pass' (no key: no request of these tests) answers 500 `pass`. `runs()` counts executions.
 */
export function recordedHandler(app: App, options: RecordingOptions = {}) {
  const { store = createMemoryStore(), ...rest } = options;
  const idem = createIdempotencyHandler<IncomingMessage>({
    store,
    scope: 'global',
    onWarning: () => {},
    ...rest,
  });
  let runs = 0;
  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const decision = await idem.begin({
      native: req,
      method: req.method ?? 'GET',
      url: requestUrl(req.url ?? '/'),
      header: (name) => headerValue(req.headers, name),
      readBody: (limit) => nodeRequestBody(req, undefined, limit),
    });
    if (decision.action === 'pass') {
      res.statusCode = 500;
      res.end('pass');
      return;
    }
    if (decision.action === 'respond') return sendDecisionResponse(res, decision);
    runs++;
    recordServerResponse(res, decision.recorder);
    return app(req, res);
  };
  return { handle, runs: () => runs };
}

/**
 * Listens on a free loopback port; resolves to the port. Each connection accepted is pushed
 * to `sockets`; {@link closeAll} destroys them and closes the server.
 */
export async function listenLoopback(server: NetServer, sockets: Socket[] = []): Promise<number> {
  server.on('connection', (socket: Socket) => sockets.push(socket));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  closers.push(async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return (server.address() as AddressInfo).port;
}

/** An h2c client session to `port` (errors ignored), destroyed by {@link closeAll}. */
export function session(port: number): ClientHttp2Session {
  const client = http2Connect(`http://127.0.0.1:${port}`);
  client.on('error', () => {});
  closers.push(() => {
    client.destroy();
  });
  return client;
}

/** An answer as the client got it. */
export interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  /** The stream/response ended cleanly (not reset, not aborted). */
  complete: boolean;
}

/** An answer as the client got it, the body as text. */
export interface TextAnswer {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

function h2Exchange(
  client: ClientHttp2Session,
  key: string,
  body: string | Buffer | undefined,
  extra: Record<string, string>,
  path: string,
  rejectOnError: boolean,
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const stream = client.request(
      { ':method': 'POST', ':path': path, 'idempotency-key': key, ...extra },
      body === undefined ? { endStream: true } : {},
    );
    let headers: IncomingHttpHeaders = {};
    const parts: Buffer[] = [];
    stream.on('response', (h) => {
      headers = h;
    });
    stream.on('data', (chunk: Buffer) => parts.push(chunk));
    const answer = (complete: boolean): Answer => ({
      status: Number(headers[':status']),
      headers,
      body: Buffer.concat(parts),
      complete,
    });
    stream.on('end', () => resolve(answer(stream.rstCode === undefined || stream.rstCode === 0)));
    stream.on('error', rejectOnError ? reject : () => resolve(answer(false)));
    if (body !== undefined) stream.end(body);
  });
}

/**
 * A keyed POST over HTTP/2; `body` undefined sends the headers with END_STREAM. A stream
 * error resolves what came, `complete: false`.
 */
export function h2(
  client: ClientHttp2Session,
  key: string,
  body: string | Buffer | undefined,
  extra: Record<string, string> = {},
  path = '/',
): Promise<Answer> {
  return h2Exchange(client, key, body, extra, path, false);
}

/** A keyed POST over HTTP/2 with the body `b`, the answer as text; rejects on a stream error. */
export async function post(client: ClientHttp2Session, key: string): Promise<TextAnswer> {
  const { status, headers, body } = await h2Exchange(client, key, 'b', {}, '/', true);
  return { status, headers, body: body.toString() };
}

/** Sends again (every 20 ms, at most 150 times) while the key is in flight (409). */
export async function untilSettled<A extends { status: number }>(
  send: () => Promise<A>,
): Promise<A> {
  let answer = await send();
  for (let i = 0; answer.status === 409 && i < 150; i++) {
    await new Promise((resolve) => setTimeout(resolve, 20));
    answer = await send();
  }
  return answer;
}

/** Starts a keyed POST over HTTP/2 and resets its stream once `chunks` DATA frames came. */
export function h2ResetAfter(client: ClientHttp2Session, key: string, chunks = 1) {
  const got = deferred<Buffer>();
  const closed = deferred();
  const stream = client.request({ ':method': 'POST', ':path': '/', 'idempotency-key': key });
  stream.on('error', () => {});
  const parts: Buffer[] = [];
  stream.on('data', (chunk: Buffer) => {
    parts.push(chunk);
    if (parts.length === chunks) {
      stream.close(http2Constants.NGHTTP2_CANCEL);
      got.resolve(Buffer.concat(parts));
    }
  });
  stream.on('close', () => closed.resolve());
  stream.end('b');
  return { got: got.promise, closed: closed.promise };
}

/** Options of a keyed HTTP/1.1 POST of a one-byte body on its own connection to loopback. */
export function keyedPost(port: number, key: string) {
  return {
    host: '127.0.0.1',
    port,
    method: 'POST',
    agent: false,
    headers: { 'idempotency-key': key, 'content-length': '1' },
  };
}

/** A request whose stream the client resets once the first chunk came; resolves on its close. */
export function resetAfterFirst(client: ClientHttp2Session, key: string): Promise<void> {
  return h2ResetAfter(client, key).closed;
}

/**
 * A keyed POST over HTTP/1.1 (its own connection) whose client leaves once the first chunk
 * of the answer came: resolves when it has destroyed its request.
 */
export async function h1LeaveAfterFirst(port: number, key: string): Promise<void> {
  const firstOut = deferred();
  const req = h1Request(keyedPost(port, key));
  req.on('error', () => {});
  req.on('response', (res) => res.once('data', () => firstOut.resolve()));
  req.end('b');
  await firstOut.promise;
  req.destroy();
}
