import { randomUUID } from 'node:crypto';
import { createMemoryStore } from '@idem/store-memory';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RawResponse, rawExchange, rawResponse } from './raw-http.js';

/**
 * An app for {@link describeUpstreamFraming} and {@link describeHeadReplay}, listening on
 * loopback. Before the idempotency middleware, something (a middleware, a hook) sets the
 * request's `X-Framing` value, when there is one, as the `Transfer-Encoding` of the Node
 * response. Routes: `POST /stream` answers 200 `text/plain` `alpha-beta-gamma` in several
 * writes (a streamed outcome), `POST /whole` 200 `text/plain` `whole-body` at once, and
 * `GET /ping` (HEAD too) 200 `text/plain` `pong`, which is never keyed. For
 * {@link describeHeadReplay}: the middleware takes `framingAppOptions(true)`, and `GET /doc` (HEAD too, as the framework answers one) answers 200
 * `text/plain` `document-body`. Each handler but `/ping`'s counts its runs.
 */
export interface FramingApp {
  /** Base URL, `http://127.0.0.1:port`. */
  url: string;
  /** Handler runs so far, all routes together. */
  runs(): number;
  close(): unknown;
}

/**
 * The middleware options of a {@link FramingApp}: a memory store and no warnings printed;
 * for {@link describeHeadReplay} (`head`), GET and HEAD keyed too, no key required
 * (`GET /ping` passes) and one operation for every route (a GET and a HEAD of `/doc` share
 * their keys), else one key space (`scope: 'global'`).
 */
export function framingAppOptions(head = false) {
  const common = { store: createMemoryStore(), onWarning: () => {} };
  if (!head) return { ...common, scope: 'global' as const };
  return {
    ...common,
    methods: ['POST', 'GET', 'HEAD'],
    required: false,
    scope: () => ({ principal: 'head', operation: 'doc' }),
  };
}

const STREAMED = 'alpha-beta-gamma';
const WHOLE = 'whole-body';
const DOCUMENT = 'document-body';
const PING = 'GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n';

/** A raw request with the `Idempotency-Key` (a POST carries `{}`), and `extra` header lines. */
function keyed(method: string, path: string, key: string, extra = '', version = '1.1'): string {
  const body = method === 'POST' ? '{}' : '';
  const framing = body ? `Content-Type: application/json\r\nContent-Length: 2\r\n` : '';
  return `${method} ${path} HTTP/${version}\r\nHost: x\r\nIdempotency-Key: ${key}\r\n${extra}${framing}\r\n${body}`;
}

/**
 * `request`, with `GET /ping` pipelined behind it on the same connection: the first response,
 * read by its own framing (`bodiless` for a HEAD), and what came after it.
 */
async function pipelined(url: string, request: string, bodiless = false): Promise<RawResponse> {
  return rawResponse(await rawExchange(url, request + PING), bodiless);
}

/** The pipelined `GET /ping` came whole right after the response before it. */
function expectPong(rest: string): void {
  expect(rest).toMatch(/^HTTP\/1\.1 200 /);
  const pong = rawResponse(Buffer.from(rest, 'latin1'));
  expect([pong.body, pong.complete, pong.rest]).toEqual(['pong', true, '']);
}

/**
 * Registers tests that a replay is framed by its own body when upstream code put a
 * `Transfer-Encoding` that is not Node's own `chunked` (`gzip`, `gzip, chunked`) on the Node
 * response: the coding is removed, and the replay is framed by a `Content-Length` or chunked,
 * so the response of a request pipelined behind it on the kept-alive connection comes right
 * after it (Node framed it by nothing once the header was removed, ended it with the
 * connection under a `Connection: keep-alive` head, and the pipelined request was lost). To
 * an HTTP/1.0 client, a replay ended by the connection's close says `Connection: close`.
 */
export function describeUpstreamFraming(name: string, start: () => Promise<FramingApp>): void {
  describe(`${name}: a replay under an upstream Transfer-Encoding other than chunked`, () => {
    let app: FramingApp;
    beforeAll(async () => {
      app = await start();
    });
    afterAll(() => app.close());

    const cases = [
      ['/stream', STREAMED, 'gzip'],
      ['/stream', STREAMED, 'gzip, chunked'],
      ['/whole', WHOLE, 'gzip'],
      ['/whole', WHOLE, 'gzip, chunked'],
    ] as const;
    for (const [path, body, coding] of cases) {
      it(`${path} (Transfer-Encoding: ${coding}): framed, and the pipelined request answered`, async () => {
        const key = `framing-${randomUUID()}`;
        const before = app.runs();
        const first = await pipelined(app.url, keyed('POST', path, key));
        expect([first.body, first.complete]).toEqual([body, true]);
        expectPong(first.rest);
        const replay = await pipelined(
          app.url,
          keyed('POST', path, key, `X-Framing: ${coding}\r\n`),
        );
        expect(replay.head).toMatch(/^http\/1\.1 200 /);
        expect(replay.head).toContain('\r\nidempotent-replayed: true');
        expect(replay.head).not.toMatch(/\r\ntransfer-encoding: *[^\r]*gzip/);
        expect(['content-length', 'chunked']).toContain(replay.framing);
        expect([replay.body, replay.complete]).toEqual([body, true]);
        expectPong(replay.rest);
        expect(app.runs()).toBe(before + 1);
      });
    }

    it('/stream to an HTTP/1.0 client: framed by its length, or said to end with the connection', async () => {
      const key = `framing-${randomUUID()}`;
      await pipelined(app.url, keyed('POST', '/stream', key));
      const raw = await rawExchange(
        app.url,
        keyed('POST', '/stream', key, 'X-Framing: gzip\r\n', '1.0'),
      );
      const replay = rawResponse(raw);
      expect(replay.head).toContain('\r\nidempotent-replayed: true');
      expect(replay.framing).not.toBe('chunked');
      if (replay.framing === 'close') expect(replay.head).toMatch(/\r\nconnection: close(\r|$)/);
      expect([replay.body, replay.complete, replay.rest]).toEqual([STREAMED, true, '']);
    });

    // An HTTP/1.0 client cannot read chunked framing (RFC 9112 6.1): a `Transfer-Encoding:
    // chunked` set upstream is removed from the middleware's answers to one too (framrev3).
    for (const [label, path, body] of [
      ['a streamed replay', '/stream', STREAMED],
      ['a whole replay', '/whole', WHOLE],
    ] as const) {
      it(`${label} to an HTTP/1.0 client under an upstream Transfer-Encoding: chunked is not chunked`, async () => {
        const key = `framing-${randomUUID()}`;
        await pipelined(app.url, keyed('POST', path, key));
        const replay = rawResponse(
          await rawExchange(app.url, keyed('POST', path, key, 'X-Framing: chunked\r\n', '1.0')),
        );
        expect(replay.head).toContain('\r\nidempotent-replayed: true');
        expect(replay.head).not.toMatch(/\r\ntransfer-encoding:/);
        if (replay.framing === 'close') expect(replay.head).toMatch(/\r\nconnection: close(\r|$)/);
        expect([replay.body, replay.complete, replay.rest]).toEqual([body, true, '']);
      });
    }

    it('a 422 problem to an HTTP/1.0 client under an upstream Transfer-Encoding: chunked is not chunked', async () => {
      const key = `framing-${randomUUID()}`;
      await pipelined(app.url, keyed('POST', '/whole', key));
      const other = keyed('POST', '/whole', key, 'X-Framing: chunked\r\n', '1.0').replace(
        'Content-Length: 2\r\n\r\n{}',
        'Content-Length: 7\r\n\r\n{"a":1}',
      );
      const problem = rawResponse(await rawExchange(app.url, other));
      expect(problem.head).toMatch(/^http\/1\.1 422 /);
      expect(problem.head).not.toMatch(/\r\ntransfer-encoding:/);
      expect(problem.complete).toBe(true);
      expect(JSON.parse(problem.body)).toMatchObject({ status: 422 });
      expect(problem.rest).toBe('');
    });
  });
}

/**
 * Registers tests that a HEAD request keyed by the middleware (`methods` with GET and HEAD)
 * is answered with no body bytes on the socket, first execution or replay, and that a request
 * pipelined behind it is read right after its head: a replay of a recorded HEAD, and a HEAD
 * retry under the key of a recorded GET of the same operation (the method is fingerprinted:
 * refused with a 422), with or without a `Transfer-Encoding` set upstream.
 */
export function describeHeadReplay(name: string, start: () => Promise<FramingApp>): void {
  describe(`${name}: a keyed HEAD request`, () => {
    let app: FramingApp;
    beforeAll(async () => {
      app = await start();
    });
    afterAll(() => app.close());

    /** A keyed HEAD with `GET /ping` pipelined behind it: its head, no body, then the pong. */
    async function head(key: string, extra = ''): Promise<string> {
      const answer = await pipelined(app.url, keyed('HEAD', '/doc', key, extra), true);
      expect(answer.head).toMatch(/^http\/1\.1 \d{3} /);
      expectPong(answer.rest);
      return answer.head;
    }

    for (const coding of ['none', 'chunked', 'gzip']) {
      const extra = coding === 'none' ? '' : `X-Framing: ${coding}\r\n`;
      it(`a HEAD replayed to a HEAD retry (upstream Transfer-Encoding: ${coding})`, async () => {
        const key = `head-${randomUUID()}`;
        const before = app.runs();
        const first = await head(key);
        expect(first).toMatch(/^http\/1\.1 200 /);
        const replay = await head(key, extra);
        expect(replay).toMatch(/^http\/1\.1 200 /);
        expect(replay).toContain('\r\nidempotent-replayed: true');
        expect(app.runs()).toBe(before + 1);
      });

      it(`a HEAD retry under the key of a recorded GET (upstream Transfer-Encoding: ${coding})`, async () => {
        const key = `head-get-${randomUUID()}`;
        const before = app.runs();
        const get = await pipelined(app.url, keyed('GET', '/doc', key));
        expect([get.body, get.complete]).toEqual([DOCUMENT, true]);
        expectPong(get.rest);
        expect(await head(key, extra)).toMatch(/^http\/1\.1 422 /);
        expect(app.runs()).toBe(before + 1);
      });
    }
  });
}
