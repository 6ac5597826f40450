/**
 * A published (live) stream interrupted while the recorder reads it ahead of its first
 * client: the Web path's live read-ahead (`startLiveAhead` in record-response.ts, after the
 * first turn's `readAhead`) and the Node path's (`startAhead` in node-response.ts, the app's
 * writes taken into the capture). Interruptions: the first client leaves (a reader attached
 * or attaching after), the server cuts the first response's transport, an attached reader
 * leaves, the handler's body breaks (or the app destroys its response), the body breaks
 * before the live read-ahead began, the client leaves before the handler answered, and the
 * lease is lost under a silent body whose client left. Real node:http and h2c servers on
 * loopback, memory store, in-process channel. Each checks: runs (once per outcome; a retry
 * after a failed execution runs again), the key completed or released (never left in
 * progress), every client (first, attached, retry) ends cleanly or broken within a bound,
 * the channel holds nothing after, and no unhandled rejection or exception. Last, in a
 * process of its own (live/readahead-abort-child.ts): the app stops its body in the very tick
 * its first client leaves, a reader attached over the same connection; over h2c that reset
 * the attached stream inside node:http2's handling of the client's RST_STREAM, where Node 20
 * loops forever (see `sendWebResponse`).
 */
import {
  createServer,
  request as h1Request,
  type IncomingMessage,
  type ServerResponse,
} from 'node:http';
import { type ClientHttp2Session, constants, createServer as createH2cServer } from 'node:http2';
import { fileURLToPath } from 'node:url';
import { createMemoryLiveStreams, type IdempotencyStore } from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type HttpIdempotencyOptions, withIdempotency } from '../src/index.js';
import { webNodeHandler } from './live/web-server.js';
import { closeAll, listenLoopback, recordedHandler, session } from './support/h2c.js';
import { inChild } from './support/in-child.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const encoder = new TextEncoder();
const event = (n: number | string) => `data: ${n}\n\n`;
const WHOLE = event(1) + event(2) + event(3);

/**
 * `promise`, or 'hung' after `ms`: no wait of these tests is unbounded. 10 s: a guard against a
 * hang that CI's load (a loop held up for seconds) does not trip, below the 15 s `stallMs` an
 * attached reader would otherwise be held for.
 */
function bounded<T>(promise: Promise<T>, ms = 10_000): Promise<T | 'hung'> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    promise,
    new Promise<'hung'>((resolve) => {
      timer = setTimeout(() => resolve('hung'), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Polls `check` every 10 ms until it answers true, at most `ms`; answers the last check. */
async function until(check: () => boolean | Promise<boolean>, ms = 10_000): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await check()) return true;
    if (Date.now() > deadline) return false;
    await sleep(10);
  }
}

/** One execution of the handler, as the test drives it. */
interface Exec {
  write(text: string): void;
  end(): void;
  /** The body breaks (Web path) or the app destroys its response (Node path). */
  fail(): void;
  /** Web path: the reason the body was cancelled with, once it was. */
  cancelled?: unknown;
  /** Node path: the app heard its response's 'close'. */
  closed?: boolean;
}

/** How a client saw its answer. */
interface Seen {
  status: number;
  replayed: boolean;
  body: string;
  end: 'ended' | 'broken';
}

interface Client {
  /** The first event came. */
  first: Promise<void>;
  done: Promise<Seen>;
  /** The client goes away (destroys its request, or resets its stream). */
  leave(): void;
}

const problems: unknown[] = [];
const onProblem = (error: unknown) => problems.push(error);
beforeAll(() => {
  process.on('unhandledRejection', onProblem);
  process.on('uncaughtException', onProblem);
});
afterAll(() => {
  process.off('unhandledRejection', onProblem);
  process.off('uncaughtException', onProblem);
});
afterEach(closeAll);

/** A memory store that notes the storage keys acquired, to inspect their records. */
function spiedStore() {
  const store = createMemoryStore();
  const keys = new Set<string>();
  const spied = new Proxy(store, {
    get(target, name) {
      const value = Reflect.get(target, name, target) as unknown;
      if (name === 'acquire')
        return async (input: Parameters<IdempotencyStore['acquire']>[0]) => {
          keys.add(input.key);
          return target.acquire(input);
        };
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
  // A record in progress whose lease passed is free to a retry (it takes the key over).
  const states = () =>
    Promise.all(
      [...keys].map(async (key) => {
        const record = await store.admin.inspect(key);
        if (record === undefined) return 'none';
        const lapsed = record.status === 'in_progress' && record.leaseUntil <= record.now;
        return lapsed ? 'lapsed' : record.status;
      }),
    );
  return { store: spied as IdempotencyStore, states };
}

type Protocol = 'h1' | 'h2c';
type Path = 'web' | 'node';
type Options = Partial<HttpIdempotencyOptions<IncomingMessage>>;

/**
 * The app of these tests behind idem, on a real server: each execution sends `data: 1` at
 * once and then what the test writes. Request headers: `x-quick` ends it after `data: 1`,
 * `x-gate` makes it wait for `openGate()` before it answers, `x-break` breaks it right after
 * `data: 1` (before the live read-ahead began on the Web path).
 */
async function setUp(path: Path, protocol: Protocol, key: string, options: Options = {}) {
  const { store, states } = spiedStore();
  const channel = createMemoryLiveStreams();
  const execs: Exec[] = [];
  /** The server side of every request, in arrival order (to cut one's transport). */
  const exchanges: { req: IncomingMessage; res: ServerResponse }[] = [];
  let openGate = () => {};
  const gate = new Promise<void>((resolve) => {
    openGate = resolve;
  });
  const idemOptions = {
    store,
    scope: 'global' as const,
    onWarning: () => {},
    liveStreams: { channel },
    ...options,
  };
  let runs = () => 0;
  let handle: (req: IncomingMessage, res: ServerResponse) => unknown;
  if (path === 'web') {
    let count = 0;
    runs = () => count;
    const app = withIdempotency(
      async (request) => {
        count++;
        if (request.headers.get('x-gate')) await gate;
        const exec = {} as Exec;
        execs.push(exec);
        const body = new ReadableStream<Uint8Array>({
          start(controller) {
            exec.write = (text) => controller.enqueue(encoder.encode(text));
            exec.end = () => controller.close();
            exec.fail = () => controller.error(new Error('model broke'));
            controller.enqueue(encoder.encode(event(1)));
            if (request.headers.get('x-quick')) controller.close();
            if (request.headers.get('x-break')) controller.error(new Error('broke at once'));
          },
          cancel(reason) {
            exec.cancelled = reason ?? 'cancelled';
          },
        });
        return new Response(body, { headers: { 'content-type': 'text/event-stream' } });
      },
      idemOptions as HttpIdempotencyOptions<Request>,
    );
    handle = webNodeHandler(app);
  } else {
    const recorded = recordedHandler(
      async (req, res) => {
        if (req.headers['x-gate']) await gate;
        const exec = {} as Exec;
        execs.push(exec);
        res.on('close', () => {
          exec.closed = true;
        });
        res.on('error', () => {});
        exec.write = (text) => res.write(text);
        exec.end = () => res.end();
        exec.fail = () => res.destroy(new Error('model broke'));
        res.setHeader('content-type', 'text/event-stream');
        res.write(event(1));
        if (req.headers['x-quick']) res.end();
        if (req.headers['x-break']) res.destroy(new Error('broke at once'));
      },
      { ...idemOptions, store } as Options,
    );
    runs = recorded.runs;
    handle = recorded.handle;
  }
  const serve = (req: IncomingMessage, res: ServerResponse) => {
    exchanges.push({ req, res });
    return handle(req, res);
  };
  const port = await listenLoopback(
    protocol === 'h1' ? createServer(serve) : createH2cServer(serve as never),
  );
  const client = protocol === 'h2c' ? session(port) : undefined;
  const open = (extra: Record<string, string> = {}) =>
    client ? openH2(client, key, extra) : openH1(port, key, extra);
  return {
    open,
    runs: () => runs(),
    states,
    channel,
    openGate: () => openGate(),
    /** The test's handle of execution `i`, once it began (bounded). */
    async exec(i: number): Promise<Exec> {
      expect(await until(() => execs.length > i)).toBe(true);
      return execs[i] as Exec;
    },
    /** The server cuts request `i`'s transport (a server timeout, a proxy gone). */
    cut(i: number) {
      const { req } = exchanges[i] as { req: IncomingMessage };
      const stream = (req as IncomingMessage & { stream?: { close(code: number): void } }).stream;
      if (stream) stream.close(constants.NGHTTP2_INTERNAL_ERROR);
      else req.socket.destroy();
    },
    /** Waits (bounded) until no record is in progress; answers each record's status. */
    async settled(): Promise<string[]> {
      let last: string[] = [];
      await until(async () => {
        last = await states();
        return last.length > 0 && !last.includes('in_progress');
      });
      return last;
    },
    /** Waits (bounded) until the channel holds nothing; answers its stats. */
    async idle() {
      await until(() => {
        const { generations, readers, bytes } = channel.stats();
        return generations === 0 && readers === 0 && bytes === 0;
      });
      return channel.stats();
    },
  };
}

function openH1(port: number, key: string, extra: Record<string, string>): Client {
  let first = () => {};
  const firstCame = new Promise<void>((resolve) => {
    first = resolve;
  });
  let req: ReturnType<typeof h1Request> | undefined;
  const done = new Promise<Seen>((resolve) => {
    let status = 0;
    let replayed = false;
    const parts: Buffer[] = [];
    const seen = (end: Seen['end']) =>
      resolve({ status, replayed, body: Buffer.concat(parts).toString(), end });
    req = h1Request({
      host: '127.0.0.1',
      port,
      method: 'POST',
      path: '/stream',
      agent: false,
      headers: { 'idempotency-key': key, 'content-type': 'application/json', ...extra },
    });
    req.on('error', () => seen('broken'));
    req.on('close', () => seen('broken'));
    req.on('response', (res) => {
      status = res.statusCode ?? 0;
      replayed = res.headers['idempotent-replayed'] === 'true';
      res.on('data', (chunk: Buffer) => {
        parts.push(chunk);
        if (Buffer.concat(parts).toString().includes(event(1))) first();
      });
      res.on('end', () => seen(res.complete ? 'ended' : 'broken'));
      res.on('error', () => seen('broken'));
      res.on('aborted', () => seen('broken'));
      res.on('close', () => seen('broken'));
    });
    req.end('{}');
  });
  return { first: firstCame, done, leave: () => req?.destroy() };
}

function openH2(client: ClientHttp2Session, key: string, extra: Record<string, string>): Client {
  let first = () => {};
  const firstCame = new Promise<void>((resolve) => {
    first = resolve;
  });
  const stream = client.request({
    ':method': 'POST',
    ':path': '/stream',
    'idempotency-key': key,
    'content-type': 'application/json',
    ...extra,
  });
  const done = new Promise<Seen>((resolve) => {
    let status = 0;
    let replayed = false;
    const parts: Buffer[] = [];
    let ended = false;
    const seen = (end: Seen['end']) =>
      resolve({ status, replayed, body: Buffer.concat(parts).toString(), end });
    stream.on('response', (headers) => {
      status = Number(headers[':status']);
      replayed = headers['idempotent-replayed'] === 'true';
    });
    stream.on('data', (chunk: Buffer) => {
      parts.push(chunk);
      if (Buffer.concat(parts).toString().includes(event(1))) first();
    });
    stream.on('end', () => {
      ended = true;
    });
    stream.on('error', () => seen('broken'));
    stream.on('close', () =>
      seen(ended && (stream.rstCode ?? 0) === constants.NGHTTP2_NO_ERROR ? 'ended' : 'broken'),
    );
    stream.end('{}');
  });
  return {
    first: firstCame,
    done,
    leave: () => stream.close(constants.NGHTTP2_CANCEL),
  };
}

type Bed = Awaited<ReturnType<typeof setUp>>;
const ok = (body: string, replayed: boolean): Seen => ({
  status: 200,
  replayed,
  body,
  end: 'ended',
});

/** A retry with the key once it settled: the replay of `body`, or (undefined) a new execution. */
async function retried(bed: Bed, body: string | undefined): Promise<void> {
  const before = bed.runs();
  const retry = await bounded(bed.open({ 'x-quick': '1' }).done);
  if (body === undefined) {
    expect(retry).toEqual(ok(event(1), false));
    expect(bed.runs()).toBe(before + 1);
    expect(await bed.settled()).toEqual(['completed']);
  } else {
    expect(retry).toEqual(ok(body, true));
    expect(bed.runs()).toBe(before);
  }
}

/** The first client and a reader attached to its stream, both past the first event. */
async function firstAndAttached(bed: Bed) {
  const first = bed.open();
  expect(await bounded(first.first)).not.toBe('hung');
  const exec = await bed.exec(0);
  const attached = bed.open();
  expect(await bounded(attached.first)).not.toBe('hung');
  // Attached live (it arrived while the first streams), never a second execution.
  expect(bed.channel.stats().readers).toBe(1);
  return { first, exec, attached };
}

/** Released: a failed execution's record is a tombstone, or gone (or `lapsed`, when allowed). */
const released = (states: string[], lapsed = false) =>
  expect(
    states.length === 1 &&
      ['released', 'none', ...(lapsed ? ['lapsed'] : [])].includes(states[0] as string),
  ).toBe(true);

/** The rest of the body (`data: 2`, `data: 3`) and its end. */
async function goesOn(exec: Exec): Promise<void> {
  exec.write(event(2));
  await sleep(20);
  exec.write(event(3));
  exec.end();
}

/** Recorded once, the body read to its end (never cancelled), the channel empty; a retry replays it. */
async function recordedOnce(bed: Bed, exec: Exec): Promise<void> {
  expect(await bed.settled()).toEqual(['completed']);
  expect(exec.cancelled).toBeUndefined();
  expect(await bed.idle()).toEqual({ generations: 0, readers: 0, bytes: 0 });
  await retried(bed, WHOLE);
  expect(bed.runs()).toBe(1);
}

/**
 * Released at once (never left to its lease; `lapsed`: its lease has passed already, the
 * record is free to a retry), the channel empty; a retry runs again.
 */
async function releasedAndRunsAgain(bed: Bed, lapsed = false): Promise<void> {
  released(await bed.settled(), lapsed);
  expect(await bed.idle()).toEqual({ generations: 0, readers: 0, bytes: 0 });
  await retried(bed, undefined);
  expect(bed.runs()).toBe(2);
}

const protocols: Protocol[] = ['h1', 'h2c'];
const paths: Path[] = ['web', 'node'];
const beds = paths.flatMap((path) => protocols.map((protocol) => ({ path, protocol })));

describe.each(beds)(
  'a live read-ahead interrupted ($path path, $protocol)',
  ({ path, protocol }) => {
    let n = 0;
    const key = () => `ra-${path}-${protocol}-${++n}-${process.pid}`;
    let problemsBefore = 0;
    beforeAll(() => {
      problemsBefore = problems.length;
    });
    afterEach(() => {
      expect(problems.slice(problemsBefore)).toEqual([]);
    });

    it('the first client leaves, a reader attached: read to its end, recorded once, the reader gets it whole', async () => {
      const bed = await setUp(path, protocol, key());
      const { first, exec, attached } = await firstAndAttached(bed);
      first.leave();
      expect((await bounded(first.done)) as Seen).toMatchObject({ end: 'broken' });
      await sleep(30);
      await goesOn(exec);
      expect(await bounded(attached.done)).toEqual(ok(WHOLE, true));
      await recordedOnce(bed, exec);
    });

    it('the first client leaves before anyone attached: a retry attaches and gets it whole', async () => {
      const bed = await setUp(path, protocol, key());
      const first = bed.open();
      expect(await bounded(first.first)).not.toBe('hung');
      const exec = await bed.exec(0);
      first.leave();
      await sleep(30);
      exec.write(event(2));
      const attached = bed.open();
      expect(await bounded(attached.first)).not.toBe('hung');
      exec.write(event(3));
      exec.end();
      expect(await bounded(attached.done)).toEqual(ok(WHOLE, true));
      await recordedOnce(bed, exec);
    });

    it('the server cuts the first response mid-stream, a reader attached: as a client that left, recorded once', async () => {
      const bed = await setUp(path, protocol, key());
      const { first, exec, attached } = await firstAndAttached(bed);
      bed.cut(0);
      expect((await bounded(first.done)) as Seen).toMatchObject({ end: 'broken' });
      await sleep(30);
      await goesOn(exec);
      expect(await bounded(attached.done)).toEqual(ok(WHOLE, true));
      await recordedOnce(bed, exec);
    });

    it('an attached reader leaves: its place is freed at once, the first goes on and is recorded', async () => {
      const bed = await setUp(path, protocol, key());
      const { first, exec, attached } = await firstAndAttached(bed);
      attached.leave();
      expect((await bounded(attached.done)) as Seen).toMatchObject({ end: 'broken' });
      expect(await until(() => bed.channel.stats().readers === 0)).toBe(true);
      await goesOn(exec);
      expect(await bounded(first.done)).toEqual(ok(WHOLE, false));
      await recordedOnce(bed, exec);
    });

    it('the body breaks mid-stream (the app destroys its response), a reader attached: both broken, released, a retry runs again', async () => {
      const bed = await setUp(path, protocol, key());
      const { first, exec, attached } = await firstAndAttached(bed);
      exec.write(event(2));
      await sleep(20);
      exec.fail();
      const [a, b] = await Promise.all([bounded(first.done), bounded(attached.done)]);
      expect(a).toMatchObject({ status: 200, end: 'broken' });
      expect(b).toMatchObject({ status: 200, replayed: true, end: 'broken' });
      // Never a clean end of a body that broke, never a byte past what was produced.
      expect(WHOLE.startsWith((a as Seen).body) && WHOLE.startsWith((b as Seen).body)).toBe(true);
      await releasedAndRunsAgain(bed);
    });

    it('the first client leaves, then the body breaks: the reader sees it broken, released, a retry runs again', async () => {
      const bed = await setUp(path, protocol, key());
      const { first, exec, attached } = await firstAndAttached(bed);
      first.leave();
      await bounded(first.done);
      await sleep(30);
      exec.write(event(2));
      await sleep(20);
      exec.fail();
      expect(await bounded(attached.done)).toMatchObject({ replayed: true, end: 'broken' });
      await releasedAndRunsAgain(bed);
    });

    it('the body breaks right after its first chunk (before the live read-ahead): released, a retry runs again', async () => {
      const bed = await setUp(path, protocol, key());
      const first = await bounded(bed.open({ 'x-break': '1' }).done);
      expect(first).toMatchObject({ end: 'broken' });
      await releasedAndRunsAgain(bed);
    });

    it('the client leaves before the handler answered: the body is read ahead to its end and recorded', async () => {
      const bed = await setUp(path, protocol, key());
      const first = bed.open({ 'x-gate': '1' });
      expect(await until(() => bed.runs() === 1)).toBe(true);
      first.leave();
      await bounded(first.done);
      await sleep(50);
      bed.openGate();
      const exec = await bed.exec(0);
      await goesOn(exec);
      await recordedOnce(bed, exec);
    });

    it('the first client leaves and the body goes silent past maxHoldMs: stopped, the reader ends broken, released', async () => {
      const bed = await setUp(path, protocol, key(), { leaseMs: 400, maxHoldMs: 800 });
      const { first, exec, attached } = await firstAndAttached(bed);
      first.leave();
      await bounded(first.done);
      // Within maxHoldMs and a lease, never held until stallMs (15 s) or the hold's default (1 h).
      expect(await bounded(attached.done)).toMatchObject({ replayed: true, end: 'broken' });
      if (path === 'web') {
        // Nothing reads a silent body forever: cancelled, and the key released.
        expect(await until(() => exec.cancelled !== undefined)).toBe(true);
        return releasedAndRunsAgain(bed);
      }
      // The app gets its held 'close' (it cannot be cancelled); the key is released, or its
      // lease has lapsed (the record stays in progress until the app ends or destroys), so
      // a retry takes it over either way.
      expect(await until(() => exec.closed === true)).toBe(true);
      await releasedAndRunsAgain(bed, true);
    });
  },
);

const child = fileURLToPath(new URL('./live/readahead-abort-child.ts', import.meta.url));

describe('a live read-ahead stopped by the app as its first client leaves, in the same tick (a process of its own)', () => {
  // HTTP/1.1 first: a bed that spins the process leaves no line for those after it.
  const order = ['web:h1', 'node:h1', 'web:h2c', 'node:h2c'];
  let ran: Awaited<ReturnType<typeof inChild>>;
  beforeAll(async () => {
    ran = await inChild(child, order);
  }, 90_000);

  it.each(order)(
    '%s: the attached reader (same connection) ends broken, the key is released, the server goes on',
    (bed) => {
      expect(ran.lines.get(bed), ran.output).toEqual({
        reader: `200 replayed=true ${JSON.stringify(event(1))} broken`,
        retry: `200 replayed=false ${JSON.stringify(event(1))} ended`,
        runs: 2,
        problems: [],
      });
    },
  );
});
