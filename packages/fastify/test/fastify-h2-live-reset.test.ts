/**
 * @idem/fastify over HTTP/2 cleartext (Fastify's `http2: true`) when a client resets its stream
 * mid-body, with real node:http2 clients on loopback; HTTP/1.1 rows alike, for comparison. The
 * plugin sends attached live streams and replays of several chunks with Fastify's
 * `reply.send(Response)`, not with @idem/http's `sendWebResponse` (whose two HTTP/2 bugs,
 * see packages/http/test/h2-reset-sender.test.ts, are checked here for this path):
 * - an attached reader whose client resets frees its place in the channel at once (not after
 *   `stallMs`), the first execution goes on and completes, one run;
 * - a replay of several chunks whose client resets mid-body, or before it begins, settles (its
 *   Node response closes), leaves the key completed and the session's other streams alone.
 * Last, in a process of its own (live/h2-break-child.ts): the app stops its body in the very
 * tick its first client leaves, a reader attached over the same connection. Fastify reset the
 * attached stream at once, inside node:http2's handling of the client's RST_STREAM, where Node
 * 20 loops forever (nodejs/node#52952), and with NO_ERROR, which the client took for a whole
 * body (also when the body broke later). The plugin now resets it itself, on the next turn,
 * with the error (`destroyBroken` of @idem/http/node).
 */
import { request as h1Request } from 'node:http';
import { type ClientHttp2Session, connect, constants } from 'node:http2';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { createMemoryLiveStreams, type IdempotencyStore } from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { inChild } from '../../http/test/support/in-child.js';
import { idempotency } from '../src/index.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** `promise`, or 'hung' after `ms`: no wait of these tests is unbounded. */
function bounded<T>(promise: Promise<T>, ms = 3_000): Promise<T | 'hung'> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    promise,
    new Promise<'hung'>((resolve) => {
      timer = setTimeout(() => resolve('hung'), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Polls `check` every 10 ms until it answers true, at most `ms`; answers the last check. */
async function until(check: () => boolean, ms = 3_000): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (check()) return true;
    if (Date.now() > deadline) return false;
    await sleep(10);
  }
}

const closers: (() => unknown)[] = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await bounded(Promise.resolve(close()));
});

const LIVE_EVENTS = 40;
const liveWhole = Array.from({ length: LIVE_EVENTS }, (_, i) => `data: ${i + 1}\n\n`).join('');
/** Four chunks of 40 KiB: over the 64 KiB an HTTP/2 stream takes before its window. */
const BIG = 4 * 40 * 1024;

interface Bed {
  channel: ReturnType<typeof createMemoryLiveStreams>;
  /** Executions of the routes. */
  runs(): number;
  /** Requests whose Node response closed (Fastify runs `onResponse` on its 'finish' only). */
  responses(): number;
  /** Holds the store's answers to a next `acquire` until the promise settles. */
  holdNextAcquire(until: Promise<unknown>): Promise<void>;
  open(path: string, key: string, resetAfter?: number): Opened;
}

interface Opened {
  /** The first chunk came. */
  first: Promise<void>;
  /** `status replayed=… bytes=N ended|broken` once the client's stream closed. */
  done: Promise<string>;
  leave(): void;
}

async function bed(h2: boolean): Promise<Bed> {
  const channel = createMemoryLiveStreams();
  const memory = createMemoryStore();
  let hold: { until: Promise<unknown>; reached: () => void } | undefined;
  // The memory store, with a next `acquire` held (the replay then begins after its client left).
  const store: IdempotencyStore = Object.create(memory, {
    acquire: {
      value: async (input: Parameters<IdempotencyStore['acquire']>[0]) => {
        const answer = await memory.acquire(input);
        const held = hold;
        hold = undefined;
        if (held) {
          held.reached();
          await held.until;
        }
        return answer;
      },
    },
  });
  const app: FastifyInstance = h2
    ? (Fastify({ http2: true }) as unknown as FastifyInstance)
    : Fastify({ forceCloseConnections: true });
  await app.register(idempotency, {
    store,
    scope: 'global',
    onWarning: () => {},
    // Far past these tests' bounds: a reader freed, it was freed as its client left.
    liveStreams: { channel, stallMs: 20_000 },
  });
  let runs = 0;
  let responses = 0;
  app.addHook('onRequest', (_request, reply, done) => {
    reply.raw.once('close', () => responses++);
    done();
  });
  app.post('/live', async (_request, reply) => {
    runs++;
    async function* events() {
      for (let n = 1; n <= LIVE_EVENTS; n++) {
        yield `data: ${n}\n\n`;
        await sleep(25);
      }
    }
    return reply.type('text/event-stream').send(Readable.from(events()));
  });
  app.post('/big', async (_request, reply) => {
    runs++;
    async function* chunks() {
      for (let i = 0; i < 4; i++) {
        yield Buffer.alloc(40 * 1024, 97 + i);
        await sleep(5);
      }
    }
    return reply.type('text/plain').send(Readable.from(chunks()));
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
  closers.push(() => app.close());
  const port = (app.server.address() as { port: number }).port;
  let client: ClientHttp2Session | undefined;
  if (h2) {
    client = connect(`http://127.0.0.1:${port}`);
    client.on('error', () => {});
    closers.push(() => client?.destroy());
  }

  function open(path: string, key: string, resetAfter?: number): Opened {
    let first = () => {};
    const firstCame = new Promise<void>((resolve) => {
      first = resolve;
    });
    const headers = { 'idempotency-key': key, 'content-type': 'application/json' };
    if (client) {
      const stream = client.request({ ':method': 'POST', ':path': path, ...headers });
      let status = 0;
      let replayed = false;
      let bytes = 0;
      let chunks = 0;
      let ended = false;
      const leave = () => stream.close(constants.NGHTTP2_CANCEL);
      const done = new Promise<string>((resolve) => {
        stream.on('response', (h) => {
          status = Number(h[':status']);
          replayed = h['idempotent-replayed'] === 'true';
        });
        stream.on('data', (chunk: Buffer) => {
          bytes += chunk.length;
          first();
          if (resetAfter !== undefined && ++chunks === resetAfter) leave();
        });
        stream.on('end', () => {
          ended = true;
        });
        stream.on('error', () => {});
        stream.on('close', () =>
          resolve(
            `${status} replayed=${replayed} bytes=${bytes} ${ended && stream.rstCode === 0 ? 'ended' : 'broken'}`,
          ),
        );
      });
      stream.end('{}');
      return { first: firstCame, done, leave };
    }
    let req: ReturnType<typeof h1Request> | undefined;
    const done = new Promise<string>((resolve) => {
      req = h1Request({ host: '127.0.0.1', port, method: 'POST', path, agent: false, headers });
      req.on('error', () => resolve('broken'));
      req.on('response', (res) => {
        let bytes = 0;
        let chunks = 0;
        const replayed = res.headers['idempotent-replayed'] === 'true';
        const seen = (end: string) =>
          resolve(`${res.statusCode} replayed=${replayed} bytes=${bytes} ${end}`);
        res.on('data', (chunk: Buffer) => {
          bytes += chunk.length;
          first();
          if (resetAfter !== undefined && ++chunks === resetAfter) req?.destroy();
        });
        res.on('end', () => seen(res.complete ? 'ended' : 'broken'));
        res.on('error', () => seen('broken'));
        res.on('close', () => seen('broken'));
      });
      req.end('{}');
    });
    return { first: firstCame, done, leave: () => req?.destroy() };
  }

  return {
    channel,
    runs: () => runs,
    responses: () => responses,
    holdNextAcquire(until) {
      return new Promise<void>((reached) => {
        hold = { until, reached };
      });
    },
    open,
  };
}

describe.each([
  ['h1', false],
  ['h2c', true],
])('a client that resets mid-body (%s)', (_name, h2) => {
  it('an attached live reader frees its place at once; the first execution completes, one run', async () => {
    const b = await bed(h2);
    const first = b.open('/live', 'l1');
    expect(await bounded(first.first)).toBeUndefined();
    const reader = b.open('/live', 'l1', 2);
    expect(await bounded(reader.done)).toMatch(/^200 replayed=true bytes=\d+ broken$/);
    // Within a fraction of the first execution's 1 s, and far from stallMs (20 s).
    expect(await until(() => b.channel.stats().readers === 0, 500)).toBe(true);
    expect(await bounded(first.done)).toBe(`200 replayed=false bytes=${liveWhole.length} ended`);
    expect(await bounded(b.open('/live', 'l1').done)).toBe(
      `200 replayed=true bytes=${liveWhole.length} ended`,
    );
    expect(b.runs()).toBe(1);
    // first, reader, replay: each request's lifecycle ended.
    await until(() => b.responses() === 3);
    expect(b.responses()).toBe(3);
    expect(await until(() => b.channel.stats().generations === 0)).toBe(true);
  });

  it('a replay of several chunks settles; the key stays completed, one run', async () => {
    const b = await bed(h2);
    expect(await bounded(b.open('/big', 'b1').done)).toBe(`200 replayed=false bytes=${BIG} ended`);
    const cut = await bounded(b.open('/big', 'b1', 1).done);
    expect(cut).toMatch(/^200 replayed=true bytes=\d+ broken$/);
    expect(Number(/bytes=(\d+)/.exec(cut as string)?.[1])).toBeLessThan(BIG);
    expect(await until(() => b.responses() === 2, 1_000)).toBe(true);
    // The replay whole, after (the same session, over HTTP/2).
    expect(await bounded(b.open('/big', 'b1').done)).toBe(`200 replayed=true bytes=${BIG} ended`);
    expect(b.runs()).toBe(1);
    expect(await until(() => b.responses() === 3)).toBe(true);
  });

  it('a replay of several chunks begun after its client left settles', async () => {
    const b = await bed(h2);
    expect(await bounded(b.open('/big', 'b2').done)).toBe(`200 replayed=false bytes=${BIG} ended`);
    let leftNow = () => {};
    const left = new Promise<void>((resolve) => {
      leftNow = resolve;
    });
    const reached = b.holdNextAcquire(left);
    const cut = b.open('/big', 'b2');
    expect(await bounded(reached)).toBeUndefined();
    cut.leave();
    expect(await bounded(cut.done)).toMatch(/^(200 replayed=true bytes=\d+ )?broken$|^0 /);
    await sleep(20);
    leftNow();
    expect(await until(() => b.responses() === 2, 1_000)).toBe(true);
    expect(await bounded(b.open('/big', 'b2').done)).toBe(`200 replayed=true bytes=${BIG} ended`);
    expect(b.runs()).toBe(1);
  });
});

const child = fileURLToPath(new URL('./live/h2-break-child.ts', import.meta.url));

describe('a live stream the app stops as its first client leaves, a reader attached on the same connection (a process of its own)', () => {
  // HTTP/1.1 first, and the beds where the body breaks 100 ms later before those where it
  // breaks in the same tick: a bed that spins the process leaves no line for those after it.
  const order = ['node:h1', 'web:h1', 'node:h2c:late', 'web:h2c:late', 'node:h2c', 'web:h2c'];
  let ran: Awaited<ReturnType<typeof inChild>>;
  beforeAll(async () => {
    ran = await inChild(child, order);
  }, 90_000);

  it.each(order)(
    '%s: the attached reader ends broken (not whole), the key is released, the server goes on',
    (name) => {
      expect(ran.lines.get(name), ran.output).toEqual({
        reader: `200 replayed=true ${JSON.stringify('data: 1\n\n')} broken`,
        retry: `200 replayed=false ${JSON.stringify('data: 1\n\n')} ended`,
        runs: 2,
        stats: { generations: 0, readers: 0, bytes: 0 },
        problems: [],
      });
    },
  );
});
