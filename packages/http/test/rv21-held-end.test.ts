// rv21 (adversarial review of 4d4461b..642f445): the trailer section read at the app's end is put
// back before the held end goes out (node:http and node:http2). Attacks: trailers added at every
// turn of the event loop while the end is held and after it is released; the status and
// headers changed after the app's end (HTTP/2 makes its head only with the held end). Real
// servers on loopback; the first client must get what every replay gets.
import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  type Http2ServerRequest,
  type Http2ServerResponse,
  connect as http2Connect,
  createServer as http2CreateServer,
} from 'node:http2';
import type { AddressInfo } from 'node:net';
import type { IdempotencyStore } from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';
import { afterEach, describe, expect, it } from 'vitest';
import { createIdempotencyHandler } from '../src/index.js';
import { recordServerResponse, sendDecisionResponse } from '../src/node.js';
import { described } from './support/recorded-server.js';

/** A memory store whose `complete` lands `delayMs` late (the end is held meanwhile). */
function slowStore(delayMs: number): IdempotencyStore {
  const inner = createMemoryStore();
  const store: IdempotencyStore = Object.create(inner);
  store.complete = async (input) => {
    await new Promise((resolve) => setTimeout(resolve, delayMs));
    return inner.complete(input);
  };
  return store;
}

type H2App = (req: Http2ServerRequest, res: Http2ServerResponse) => void;

interface H2Answer {
  status: number;
  headers: Record<string, unknown>;
  body: string;
  trailers: Record<string, unknown>;
}

const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  await Promise.all(closers.splice(0).map((close) => close()));
});

/** An HTTP/2 server whose responses go through `recordServerResponse`; `ask` POSTs a key. */
async function h2Serve(app: H2App, store: IdempotencyStore) {
  const idem = createIdempotencyHandler<IncomingMessage>({
    store,
    scope: 'global',
    onWarning: () => {},
  });
  let runs = 0;
  const server = http2CreateServer(async (req, res) => {
    const decision = await idem.begin(described(req as unknown as IncomingMessage));
    if (decision.action === 'respond')
      return sendDecisionResponse(res as unknown as ServerResponse, decision);
    if (decision.action !== 'execute') throw new Error(decision.action);
    recordServerResponse(res as unknown as ServerResponse, decision.recorder);
    runs++;
    app(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const client = http2Connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  client.on('error', () => {});
  closers.push(async () => {
    client.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  const ask = (key: string) =>
    new Promise<H2Answer>((resolve, reject) => {
      const stream = client.request({ ':method': 'POST', ':path': '/', 'idempotency-key': key });
      const timer = setTimeout(() => stream.destroy(new Error('no end within 5 s')), 5_000);
      const answer: H2Answer = { status: 0, headers: {}, body: '', trailers: {} };
      stream.setEncoding('utf8');
      stream.on('response', (headers) => {
        answer.status = Number(headers[':status']);
        for (const [name, value] of Object.entries(headers))
          if (!name.startsWith(':') && name !== 'date') answer.headers[name] = value;
      });
      stream.on('data', (chunk: string) => {
        answer.body += chunk;
      });
      stream.on('trailers', (fields) => {
        answer.trailers = Object.fromEntries(Object.entries(fields));
      });
      stream.on('error', reject);
      stream.on('end', () => {
        clearTimeout(timer);
        resolve(answer);
      });
      stream.end();
    });
  return { ask, runs: () => runs };
}

/**
 * The first answer and the replay agree on all but the replay marker (and framing: the
 * `Trailer` declaration, which a replay states for the trailers it holds, `Content-Length`,
 * never recorded).
 */
function expectSameAnswer(first: H2Answer, replay: H2Answer): void {
  expect(replay.headers['idempotent-replayed']).toBe('true');
  const framing = ['idempotent-replayed', 'trailer', 'content-length'];
  const without = (headers: Record<string, unknown>) =>
    Object.fromEntries(Object.entries(headers).filter(([name]) => !framing.includes(name)));
  const replayHeaders = without(replay.headers);
  const firstHeaders = without(first.headers);
  expect({ ...first, headers: firstHeaders }).toEqual({ ...replay, headers: replayHeaders });
}

describe('rv21 node:http2: what the app changes after its end, while the end is held', () => {
  it('a trailer added at every turn of the loop after the end (held, then released) reaches neither client', async () => {
    const { ask, runs } = await h2Serve((_req, res) => {
      res.setHeader('Trailer', 'x-a, x-late');
      res.setHeader('content-type', 'text/plain');
      res.write('abc');
      res.addTrailers({ 'x-a': '1' });
      res.end();
      // Until the stream closes (bounded): every turn, during the hold and right after it.
      let turns = 0;
      const again = () => {
        if (res.stream.closed || res.stream.destroyed || turns++ > 2_000) return;
        try {
          res.addTrailers({ 'x-late': `late-${turns}` });
        } catch {
          return;
        }
        setImmediate(again);
      };
      setImmediate(again);
    }, slowStore(30));
    const first = await ask('"rv21-h2-trailers"');
    const replay = await ask('"rv21-h2-trailers"');
    expect(first.trailers).toEqual({ 'x-a': '1' });
    expectSameAnswer(first, replay);
    expect(runs()).toBe(1);
  });

  // FINDING (MEDIUM): over node:http2 the head goes out with the held end, and Node makes it
  // from the status and headers as they are then: a status or header the app set after its
  // `end` (a late error path: `headersSent` still reads false) reached the first client (a
  // 500 with the 200's body) and was never recorded: every replay answered the 200. Fixed:
  // the head goes out as the recorder took it (at the app's first write or end).
  it('a status set after the end (an error handler that thinks nothing was sent) does not reach the first client alone', async () => {
    const { ask, runs } = await h2Serve((_req, res) => {
      res.setHeader('content-type', 'application/json');
      res.end('{"ok":true}');
      // What a framework's late error path does: look whether the head went out, and if not,
      // answer the error instead.
      setImmediate(() => {
        if (res.headersSent) return;
        try {
          res.statusCode = 500;
          res.setHeader('content-type', 'text/plain');
          res.setHeader('x-late', 'yes');
        } catch {}
      });
    }, slowStore(30));
    const first = await ask('"rv21-h2-status"');
    const replay = await ask('"rv21-h2-status"');
    expect(first.status).toBe(200);
    expect(first.body).toBe('{"ok":true}');
    expectSameAnswer(first, replay);
    expect(runs()).toBe(1);
  });

  it('a header changed between a held write and the end is not sent alone either', async () => {
    const { ask, runs } = await h2Serve((_req, res) => {
      res.statusCode = 201;
      res.setHeader('content-type', 'text/plain');
      res.setHeader('content-length', '6');
      res.write('abc');
      // Without idem the head went out with that write: these change nothing.
      try {
        res.statusCode = 202;
        res.setHeader('x-between', '1');
        res.removeHeader('content-type');
      } catch {}
      setTimeout(() => res.end('def'), 10);
    }, slowStore(30));
    const first = await ask('"rv21-h2-between"');
    const replay = await ask('"rv21-h2-between"');
    expect([first.status, first.body, first.headers['content-type']]).toEqual([
      201,
      'abcdef',
      'text/plain',
    ]);
    expect(first.headers['x-between']).toBeUndefined();
    expectSameAnswer(first, replay);
    expect(runs()).toBe(1);
  });
});
