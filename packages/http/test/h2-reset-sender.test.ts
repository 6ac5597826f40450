/**
 * The Node senders (`sendWebResponse`, `sendDecisionResponse`) over h2c when the client reset
 * its stream: node:http2's compat response then reads `writableFinished` true, has neither
 * `destroyed` nor `closed`, answers every `write` false and emits no 'drain' or 'close' any
 * more. A sender must still stop: its promise settles and the body it reads is cancelled (an
 * attached live reader frees its place at once). Before, both waited for a 'drain' that never
 * came, and the body was never cancelled. HTTP/1.1 rows alike, for comparison.
 */
import {
  createServer,
  request as h1Request,
  type IncomingMessage,
  type ServerResponse,
} from 'node:http';
import { constants, createServer as createH2cServer } from 'node:http2';
import { createMemoryStore } from '@idem/store-memory';
import { afterEach, describe, expect, it } from 'vitest';
import { createIdempotencyHandler } from '../src/index.js';
import { recordServerResponse, sendDecisionResponse, sendWebResponse } from '../src/node.js';
import {
  closeAll,
  deferred,
  h1LeaveAfterFirst,
  keyedPost,
  listenLoopback,
  session,
} from './support/h2c.js';
import { described } from './support/recorded-server.js';
import { h1Post } from './support/settlerev.js';

afterEach(closeAll);

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const bounded = <T>(promise: Promise<T>, ms = 10_000) =>
  Promise.race([promise, sleep(ms).then(() => 'hung' as const)]);
const encoder = new TextEncoder();

/** Waits until the response's client is gone (its 'close', or over HTTP/2 its stream closed). */
async function clientGone(res: ServerResponse): Promise<void> {
  const stream = (res as ServerResponse & { stream?: { closed: boolean } }).stream;
  for (let i = 0; i < 300; i++) {
    if (stream ? stream.closed : res.destroyed) return;
    await sleep(10);
  }
}

/**
 * A keyed POST whose client leaves (resets its stream, over HTTP/2) once `when` settles, or
 * once the first chunk came.
 */
async function leave(port: number, h2: boolean, key: string, when?: Promise<unknown>) {
  if (!h2 && !when) return h1LeaveAfterFirst(port, key);
  if (!h2) {
    const req = h1Request(keyedPost(port, key));
    req.on('error', () => {});
    req.end('b');
    await when;
    req.destroy();
    return;
  }
  const stream = session(port).request({ ':method': 'POST', ':path': '/', 'idempotency-key': key });
  stream.on('error', () => {});
  stream.end('b');
  await (when ?? new Promise<void>((resolve) => stream.once('data', () => resolve())));
  stream.close(constants.NGHTTP2_CANCEL);
}

describe.each([false, true])('senders after the client left (h2c %s)', (h2) => {
  const listen = (handle: (req: IncomingMessage, res: ServerResponse) => unknown) =>
    listenLoopback(h2 ? createH2cServer(handle as never) : createServer(handle));

  it('sendWebResponse: a body that goes on is cancelled and the send settles', async () => {
    const sent = deferred<string>();
    let cancelled = false;
    const port = await listen((req, res) => {
      req.resume();
      let n = 0;
      const body = new ReadableStream<Uint8Array>({
        async pull(controller) {
          if (n > 0) await sleep(20);
          controller.enqueue(encoder.encode(`data: ${++n}\n\n`));
          if (n === 1_000) controller.close();
        },
        cancel() {
          cancelled = true;
        },
      });
      sendWebResponse(res, new Response(body)).then(
        () => sent.resolve('settled'),
        () => sent.resolve('rejected'),
      );
    });
    await leave(port, h2, 'w1');
    // Long before the body's end (1,000 parts 20 ms apart, 20 s and more): the send stops
    // when the client is gone.
    expect(await bounded(sent.promise, 5_000)).toBe('settled');
    expect(cancelled).toBe(true);
  });

  it('sendDecisionResponse: a replay of several chunks begun after the client left settles', async () => {
    const idem = createIdempotencyHandler<IncomingMessage>({
      store: createMemoryStore(),
      scope: 'global',
      onWarning: () => {},
    });
    const sent = deferred<string>();
    const replaying = deferred();
    let runs = 0;
    const port = await listen(async (req, res) => {
      const decision = await idem.begin(described(req));
      if (decision.action === 'respond') {
        replaying.resolve();
        // The replay begins once its client is gone.
        await clientGone(res);
        const sending = sendDecisionResponse(res, decision);
        sent.resolve(await bounded(sending.then(() => 'settled')));
        return;
      }
      if (decision.action !== 'execute') return res.end();
      runs++;
      recordServerResponse(res, decision.recorder);
      res.setHeader('content-type', 'text/plain');
      // Chunks of 40 KiB, over the 16 KiB a new HTTP/2 stream takes before its window.
      for (let i = 0; i < 4; i++) {
        res.write(Buffer.alloc(40 * 1024, 97 + i));
        await sleep(5);
      }
      res.end();
    });
    if (h2) {
      const client = session(port);
      const first = client.request({ ':method': 'POST', ':path': '/', 'idempotency-key': 'r1' });
      first.resume();
      first.end('b');
      await new Promise((resolve) => first.on('close', resolve));
    } else await h1Post(port, 'r1');
    expect(runs).toBe(1);
    await leave(port, h2, 'r1', replaying.promise);
    expect(await bounded(sent.promise)).toBe('settled');
    expect(runs).toBe(1);
  });
});
