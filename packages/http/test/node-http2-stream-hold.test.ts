import { createServer as createH1Server, request as h1Request } from 'node:http';
import { createServer as createH2Server, type IncomingHttpHeaders } from 'node:http2';
import type { Socket } from 'node:net';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { spyStore } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { afterEach, describe, expect, it } from 'vitest';
import {
  type App,
  closeAll,
  deferred,
  h1LeaveAfterFirst,
  listenLoopback,
  post,
  type RecordingOptions,
  recordedHandler,
  resetAfterFirst,
  type StreamOf,
  session,
} from './support/h2c.js';

// The recorder over node:http2 when a client resets its stream: the client's leaving is read
// from the stream (never from the session's socket, shared by every stream), an end made from
// the stream's or the request's 'aborted' is a body cut short, and the stream's 'close' and
// 'error' are held back from listeners added through `res.socket` (on-finished: Koa,
// `res.sendFile`) until the outcome is stored, one stream at a time. And over HTTP/1.1, a
// `stream.pipeline` into a response whose client left runs to its end on every Node.

afterEach(closeAll);

async function harness(app: App, options: Pick<RecordingOptions, 'leaseMs' | 'maxHoldMs'> = {}) {
  const spied = spyStore(createMemoryStore());
  const { handle, runs } = recordedHandler(app, { store: spied.store, ...options });
  const h2 = createH2Server((req, res) => void handle(req as never, res as never));
  const h1 = createH1Server((req, res) => void handle(req, res));
  const sockets: Socket[] = [];
  // A listener from before any response is recorded on the connection (never held).
  const h1Left = deferred();
  h1.on('connection', (socket: Socket) => {
    socket.on('close', () => h1Left.resolve());
  });
  return {
    h2: await listenLoopback(h2, sockets),
    h1: await listenLoopback(h1, sockets),
    runs,
    sockets,
    h1Left: h1Left.promise,
  };
}

describe('HTTP/2: an end made as the client resets its stream', () => {
  it("an app that ends from the stream's own 'aborted': not recorded, a retry runs the handler again", async () => {
    const ended = deferred();
    let h: Awaited<ReturnType<typeof harness>> | undefined;
    h = await harness((req, res) => {
      res.write('part-1;');
      if (h?.runs() === 2) {
        res.end('whole');
        return;
      }
      (req as unknown as StreamOf).stream.once('aborted', () => {
        res.end('cut');
        ended.resolve();
      });
    });
    const client = session(h.h2);
    await resetAfterFirst(client, 'k');
    await ended.promise;
    const retry = await post(client, 'k');
    expect(retry.headers['idempotent-replayed']).toBeUndefined();
    expect(retry.body).toBe('part-1;whole');
    expect(h.runs()).toBe(2);
  });

  it("an app that ends after the 'aborted' (not from its listeners): the whole body is recorded and replayed", async () => {
    const abortedSeen = deferred();
    const h = await harness(async (req, res) => {
      res.write('part-1;');
      req.once('aborted', () => abortedSeen.resolve());
      await abortedSeen.promise;
      await new Promise((resolve) => setImmediate(resolve));
      res.end('part-2');
    });
    const client = session(h.h2);
    await resetAfterFirst(client, 'k');
    await abortedSeen.promise;
    let retry = await post(client, 'k');
    for (let i = 0; retry.status === 409 && i < 100; i++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      retry = await post(client, 'k');
    }
    expect(retry.headers['idempotent-replayed']).toBe('true');
    expect(retry.body).toBe('part-1;part-2');
    expect(h.runs()).toBe(1);
  });
});

describe("HTTP/2: the stream's 'close' held from listeners added through res.socket and req.socket", () => {
  it('one stream reset, one going on, on one session: each hold is its own, the session socket untouched', async () => {
    const order: string[] = [];
    const resetClosed = deferred();
    const goOn = deferred();
    const bothIn = { count: 0, all: deferred() };
    const h = await harness(async (req, res) => {
      const key = String(req.headers['idempotency-key']);
      // As on-finished does (Koa, res.sendFile): through the socket proxy.
      (res.socket as Socket).on('close', () => order.push(`${key}:socket-close`));
      req.socket.once('close', () => order.push(`${key}:req-socket-close`));
      res.write(`${key}:1;`);
      if (++bothIn.count === 2) bothIn.all.resolve();
      if (key === 'reset') {
        // A listener of the stream itself is not held: the app learns of the reset.
        (req as unknown as StreamOf).stream.once('close', () => {
          order.push('reset:stream-close');
          resetClosed.resolve();
        });
        await resetClosed.promise;
        await goOn.promise;
      }
      res.end(`${key}:2`);
      order.push(`${key}:ended`);
    });
    const client = session(h.h2);
    const reset = resetAfterFirst(client, 'reset');
    const other = post(client, 'other');
    await bothIn.all.promise;
    await reset;
    await resetClosed.promise;
    const sessionSocket = h.sockets[0] as Socket;
    expect(Object.hasOwn(sessionSocket, 'emit')).toBe(false);
    expect((await other).body).toBe('other:1;other:2');
    // The reset stream's app has not ended: its socket-proxy listener has heard nothing yet.
    expect(order).not.toContain('reset:socket-close');
    goOn.resolve();
    for (let i = 0; i < 100 && !order.includes('reset:socket-close'); i++)
      await new Promise((resolve) => setTimeout(resolve, 20));
    expect(order.filter((event) => event.startsWith('reset:'))).toEqual([
      'reset:stream-close',
      'reset:ended',
      'reset:socket-close',
      'reset:req-socket-close',
    ]);
    expect(order.filter((event) => event.startsWith('other:socket-close'))).toHaveLength(1);
    expect(order.filter((event) => event.startsWith('other:req-socket-close'))).toHaveLength(1);
    const retry = await post(client, 'reset');
    expect(retry.headers['idempotent-replayed']).toBe('true');
    expect(retry.body).toBe('reset:1;reset:2');
    expect(h.runs()).toBe(2);
  });

  it('an app that never ends: the held close reaches res.socket listeners when the hold ends (maxHoldMs), a retry runs again', async () => {
    const heard = deferred();
    const h = await harness(
      (_req, res) => {
        (res.socket as Socket).on('close', () => heard.resolve());
        res.write('part-1;');
        if (h.runs() === 2) res.end('whole');
      },
      { leaseMs: 300, maxHoldMs: 900 },
    );
    const client = session(h.h2);
    await resetAfterFirst(client, 'k');
    await heard.promise;
    let retry = await post(client, 'k');
    for (let i = 0; retry.status === 409 && i < 100; i++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      retry = await post(client, 'k');
    }
    expect(retry.body).toBe('part-1;whole');
    expect(h.runs()).toBe(2);
  });
});

describe('HTTP/1.1: stream.pipeline into the response, the client leaving while it runs', () => {
  it('the pipeline runs to its end (no premature close), the whole body is recorded and replayed', async () => {
    const outcome: string[] = [];
    const h = await harness(async (_req, res) => {
      if (h.runs() > 1) {
        res.end('again');
        return;
      }
      let sent = 0;
      const source = new Readable({
        read() {
          if (sent === 0) this.push('a;');
          else if (sent === 1) void h.h1Left.then(() => this.push('b;'));
          else if (sent === 2) this.push('c');
          else this.push(null);
          sent++;
        },
      });
      await pipeline(source, res).then(
        () => outcome.push('ok'),
        (error: Error) => outcome.push(error.message),
      );
    });
    await h1LeaveAfterFirst(h.h1, 'k');
    await h.h1Left;
    for (let i = 0; i < 100 && outcome.length === 0; i++)
      await new Promise((resolve) => setTimeout(resolve, 20));
    expect(outcome).toEqual(['ok']);
    const retry = await new Promise<{ headers: IncomingHttpHeaders; body: string }>((resolve) => {
      const again = h1Request(
        {
          host: '127.0.0.1',
          port: h.h1,
          method: 'POST',
          agent: false,
          headers: { 'idempotency-key': 'k', 'content-length': '1' },
        },
        (res) => {
          const parts: Buffer[] = [];
          res.on('data', (chunk: Buffer) => parts.push(chunk));
          res.on('end', () =>
            resolve({ headers: res.headers, body: Buffer.concat(parts).toString() }),
          );
        },
      );
      again.end('b');
    });
    expect(retry.headers['idempotent-replayed']).toBe('true');
    expect(retry.body).toBe('a;b;c');
    expect(h.runs()).toBe(1);
  });
});
