import { type ClientHttp2Session, createServer as createH2Server } from 'node:http2';
import type { Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import {
  type App,
  closeAll,
  deferred,
  listenLoopback,
  post,
  type RecordingOptions,
  recordedHandler,
  resetAfterFirst,
  type StreamOf,
  session,
  untilSettled,
} from './support/h2c.js';

// Over HTTP/2 an app may listen on the request's stream itself (`req.stream`, `res.stream`)
// to learn of a reset. Those listeners are not held (the app learns of the reset at once, as
// from the request's 'close' over HTTP/1.1, which node:http2 emits from the stream's 'close'
// just before them): an end made from them, as from the request's 'close', is a body cut
// short, never recorded. And a listener whose 'close' was held until the lease was lost
// (through `res.socket`) ends a cut body as well when it runs.

afterEach(closeAll);

async function harness(app: App, options: Pick<RecordingOptions, 'leaseMs' | 'maxHoldMs'> = {}) {
  const { handle, runs } = recordedHandler(app, options);
  const server = createH2Server((req, res) => void handle(req as never, res as never));
  return { port: await listenLoopback(server), runs };
}

/** Posts until the key is no longer in flight (409). */
function settled(client: ClientHttp2Session, key: string) {
  return untilSettled(() => post(client, key));
}

describe("HTTP/2: the app's own listeners of the stream's 'close' (req.stream, res.stream)", () => {
  for (const which of ['req.stream', 'res.stream'] as const) {
    it(`an end made from ${which} 'close' after a reset is a body cut short: never recorded, a retry runs again`, async () => {
      const ended = deferred();
      const h = await harness((req, res) => {
        res.write('part-1;');
        if (h.runs() === 2) {
          res.end('whole');
          return;
        }
        const stream = (which === 'req.stream' ? req : res) as unknown as StreamOf;
        stream.stream.once('close', () => {
          res.end('cut');
          ended.resolve();
        });
      });
      const client = session(h.port);
      await resetAfterFirst(client, 'k');
      await ended.promise;
      const retry = await settled(client, 'k');
      expect(retry.headers['idempotent-replayed']).toBeUndefined();
      expect(retry.body).toBe('part-1;whole');
      expect(h.runs()).toBe(2);
    });
  }

  it("a stream that closes after the end (no reset): the 'close' listener's late end changes nothing, the outcome replays", async () => {
    const closed = deferred();
    const h = await harness((req, res) => {
      (req as unknown as StreamOf).stream.once('close', () => {
        res.end('late');
        closed.resolve();
      });
      res.end('whole');
    });
    const client = session(h.port);
    expect((await post(client, 'k')).body).toBe('whole');
    await closed.promise;
    const retry = await post(client, 'k');
    expect(retry.headers['idempotent-replayed']).toBe('true');
    expect(retry.body).toBe('whole');
    expect(h.runs()).toBe(1);
  });

  it('a listener held through res.socket until the lease was lost: an end made from it is not recorded (a cut body)', async () => {
    const h = await harness(
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
    const client = session(h.port);
    await resetAfterFirst(client, 'k');
    const retry = await settled(client, 'k');
    expect(retry.headers['idempotent-replayed']).toBeUndefined();
    expect(retry.body).toBe('part-1;whole');
    expect(h.runs()).toBe(2);
  });

  it("work aborted on req.stream 'close' and ended later: recorded as ended, as work aborted on the request's 'close' over HTTP/1.1", async () => {
    // The stream's 'close' comes after the request's 'close' and 'aborted' (node:http2 emits
    // those from its own stream listeners): an app learns of the reset from either, at once,
    // as over HTTP/1.1, and what it ends with afterwards is its outcome on both.
    const order: string[] = [];
    const h = await harness(async (req, res) => {
      const controller = new AbortController();
      const aborted = new Promise((resolve) =>
        controller.signal.addEventListener('abort', resolve),
      );
      (req as unknown as StreamOf).stream.once('close', () => {
        order.push('stream-close');
        controller.abort();
      });
      req.once('aborted', () => order.push('req-aborted'));
      req.once('close', () => order.push('req-close'));
      res.write('part-1;');
      await aborted;
      await new Promise((resolve) => setTimeout(resolve, 10));
      res.end('aborted');
    });
    const client = session(h.port);
    await resetAfterFirst(client, 'k');
    const retry = await settled(client, 'k');
    expect(order).toEqual(['req-aborted', 'req-close', 'stream-close']);
    expect(retry.headers['idempotent-replayed']).toBe('true');
    expect(retry.body).toBe('part-1;aborted');
    expect(h.runs()).toBe(1);
  });
});
