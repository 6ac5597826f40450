import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect as connectHttp2, createServer as createHttp2Server } from 'node:http2';
import { connect } from 'node:net';
import { createMemoryLiveStreams } from '@idem/core';
import { listening, type RunningApp } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createIdempotencyHandler } from '../src/index.js';
import { recordServerResponse, sendDecisionResponse } from '../src/node.js';

// Adversarial review of wt/recorder10 (the head a replay sends is the head the first client
// got): first response and replay compared as bytes off a raw HTTP/1.1 socket.

const RECORDED = ['content-disposition', 'content-type', 'link', 'vary', 'x-a', 'x-b', 'x-name'];
const CAFE = 'caf\u00e9';

type App = (res: ServerResponse, req: IncomingMessage) => void;

let app: App = (res) => res.end();
let runs = 0;
let serial = 0;
/** Called when a request got a `respond` decision (a replay, or an attached live stream). */
let onRespond: () => void = () => {};

const idem = createIdempotencyHandler({
  store: createMemoryStore(),
  scope: 'global',
  recordedHeaders: RECORDED,
  maxOutcomeBytes: 64 * 1024,
  liveStreams: { channel: createMemoryLiveStreams() },
  onWarning: () => {},
});

/** The head a policy kept (`isFinal`), read by the test after the response was sent. */
let kept: { headers: Headers } | undefined;
const idemKeeping = createIdempotencyHandler({
  store: createMemoryStore(),
  scope: 'global',
  recordedHeaders: RECORDED,
  isFinal: (response) => {
    kept = response as unknown as { headers: Headers };
    return response.status < 500;
  },
  onWarning: () => {},
});

async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const key = req.headers['idempotency-key'] as string;
  const decision = await (key.startsWith('pol-') ? idemKeeping : idem).begin({
    native: {} as Request,
    method: 'POST',
    url: '/',
    header: (name) => (name === 'idempotency-key' ? key : undefined),
    readBody: async () => ({ kind: 'none' }),
  });
  if (decision.action === 'respond') {
    onRespond();
    return sendDecisionResponse(res, decision);
  }
  if (decision.action !== 'execute') throw new Error(decision.action);
  runs++;
  recordServerResponse(res, decision.recorder);
  try {
    app(res, req);
  } catch (error) {
    // A head the recorder or Node refused: answered unrecorded, as an app's error handler does.
    if (!res.headersSent) {
      res.statusCode = 500;
      res.end(`refused: ${(error as Error).name}`);
    } else res.destroy();
  }
}

const servers: RunningApp[] = [];
let port = 0;
let h2url = '';
beforeAll(async () => {
  const h1 = createServer((req, res) => void handle(req, res)).listen(0, '127.0.0.1');
  const h2 = createHttp2Server(
    (req, res) => void handle(req as unknown as IncomingMessage, res as unknown as ServerResponse),
  ).listen(0, '127.0.0.1');
  servers.push(await listening(h1 as Server), await listening(h2 as unknown as Server));
  port = Number(new URL((servers[0] as RunningApp).url).port);
  h2url = (servers[1] as RunningApp).url;
});
afterAll(() => Promise.all(servers.map((server) => server.close())));

/** The raw bytes of one response (the connection closes after it), '' for none. */
function exchange(key: string): Promise<Buffer> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    const parts: Buffer[] = [];
    const timer = setTimeout(() => socket.destroy(), 15_000);
    socket.on('data', (part: Buffer) => parts.push(part));
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(parts));
    });
    socket.write(
      `POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nIdempotency-Key: ${key}\r\nContent-Length: 0\r\n\r\n`,
    );
  });
}

/** The final head of a raw response (after any 1xx): status line, recorded fields as bytes. */
function headOf(raw: Buffer): { status: string; fields: [string, string][] } {
  let text = raw.toString('latin1');
  while (/^HTTP\/1\.1 1\d\d /.test(text)) text = text.slice(text.indexOf('\r\n\r\n') + 4);
  const lines = text.slice(0, text.indexOf('\r\n\r\n')).split('\r\n');
  const byName = new Map<string, string[]>();
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    const name = line.slice(0, colon).toLowerCase();
    if (!RECORDED.includes(name)) continue;
    const value = line.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, '');
    byName.set(name, [...(byName.get(name) ?? []), value]);
  }
  const fields = [...byName]
    .map(([name, values]): [string, string] => [name, values.join(', ')])
    .sort((a, b) => (a[0] < b[0] ? -1 : 1));
  return { status: lines[0] ?? '', fields };
}

function isReplay(raw: Buffer): boolean {
  return /\r\nidempotent-replayed: true\r\n/i.test(raw.toString('latin1'));
}

/** The body of a raw response (chunked decoded), as bytes. */
function bodyOf(raw: Buffer): Buffer {
  let at = 0;
  const text = raw.toString('latin1');
  let head = text.slice(0, text.indexOf('\r\n\r\n'));
  while (/^HTTP\/1\.1 1\d\d /.test(head)) {
    at += head.length + 4;
    head = text.slice(at, text.indexOf('\r\n\r\n', at));
  }
  const rest = raw.subarray(at + head.length + 4);
  if (!/\r\ntransfer-encoding: chunked/i.test(head)) return rest;
  const parts: Buffer[] = [];
  let i = 0;
  for (let n = 0; n < 10_000; n++) {
    const eol = rest.indexOf('\r\n', i);
    if (eol < 0) break;
    const size = Number.parseInt(rest.subarray(i, eol).toString('latin1'), 16);
    if (!(size > 0)) break;
    parts.push(rest.subarray(eol + 2, eol + 2 + size));
    i = eol + 2 + size + 2;
  }
  return Buffer.concat(parts);
}

/** Runs `run` for a new key, then replays the key; the handler must not run again. */
async function firstAndReplay(run: App): Promise<{ first: Buffer; replay: Buffer }> {
  app = run;
  const key = `r-${++serial}`;
  const before = runs;
  const first = await exchange(key);
  app = () => {
    throw new Error('the handler ran again');
  };
  const replay = await exchange(key);
  expect(runs - before).toBe(1);
  return { first, replay };
}

describe('recorder10 review: heads over HTTP/1.1 that held', () => {
  it('a 204 whose head with a value past U+007F is flushed: same bytes on replay', async () => {
    const { first, replay } = await firstAndReplay((res) => {
      res.writeHead(204, { 'x-name': CAFE, 'X-A': '1', 'x-a': '\u00ff' });
      res.flushHeaders();
      res.end();
    });
    expect(isReplay(replay)).toBe(true);
    expect(headOf(first).fields).toEqual([
      ['x-a', '1, \u00ff'],
      ['x-name', CAFE],
    ]);
    expect(headOf(replay).fields).toEqual(headOf(first).fields);
  });

  it('early hints (103) before a flushed head with Latin-1 values: the final head replays', async () => {
    const { first, replay } = await firstAndReplay((res) => {
      res.writeEarlyHints({ link: '</a.css>; rel=preload' });
      res.setHeader('link', `</${CAFE}>`);
      res.flushHeaders();
      res.end('body');
    });
    expect(first.toString('latin1')).toMatch(/^HTTP\/1\.1 103 /);
    expect(headOf(first).fields).toEqual([['link', `</${CAFE}>`]]);
    expect(headOf(replay).fields).toEqual(headOf(first).fields);
    expect(bodyOf(replay).toString()).toBe('body');
  });

  it('setHeader then removeHeader, then a writeHead object with a name in two cases: Node keeps the last, so does the record', async () => {
    const { first, replay } = await firstAndReplay((res) => {
      res.setHeader('x-b', 'gone');
      res.removeHeader('x-b');
      res.writeHead(200, { 'X-A': '1', 'x-a': CAFE });
      res.end('x');
    });
    expect(headOf(first).fields).toEqual([['x-a', CAFE]]);
    expect(headOf(replay).fields).toEqual(headOf(first).fields);
  });

  it('writeHead(status, message, object with a name in two cases), flushed: both values, as Latin-1', async () => {
    const { first, replay } = await firstAndReplay((res) => {
      res.writeHead(201, 'Made', { 'X-A': CAFE, 'x-a': ['2', '\u00c0'] });
      res.flushHeaders();
      res.write('a');
      res.end('b');
    });
    expect(headOf(first).fields).toEqual([['x-a', `${CAFE}, 2, \u00c0`]]);
    expect(headOf(replay).fields).toEqual(headOf(first).fields);
    expect(bodyOf(replay).toString()).toBe('ab');
  });

  it('a header array with a name twice, then flushHeaders with a string write first (chunked)', async () => {
    const { first, replay } = await firstAndReplay((res) => {
      res.writeHead(200, [
        ['Vary', 'a'],
        ['vary', '\u00e9'],
        ['content-type', 'text/plain; charset=latin1'],
      ]);
      res.write('\u00e9t\u00e9');
      res.flushHeaders();
      res.end('!');
    });
    expect(headOf(replay).fields).toEqual(headOf(first).fields);
    expect(bodyOf(replay).equals(bodyOf(first))).toBe(true);
  });

  it('CR/LF in a writeHead object value: nothing half-written, the key released, a retry runs again', async () => {
    app = (res) => {
      res.writeHead(200, { 'x-a': 'a\r\nx-injected: 1' });
      res.end('never');
    };
    const key = `r-${++serial}`;
    const before = runs;
    const first = await exchange(key);
    expect(first.toString('latin1')).toMatch(/^HTTP\/1\.1 500 /);
    expect(first.toString('latin1')).not.toMatch(/x-injected/i);
    app = (res) => res.end('second');
    const retry = await exchange(key);
    expect(runs - before).toBe(2);
    expect(bodyOf(retry).toString()).toBe('second');
  });

  it('a head over the record cap (many Latin-1 values): streamed whole, not recorded, a retry gets a problem and never runs it again', async () => {
    const big = `${'\u00e9'.repeat(1000)}`;
    const { first, replay } = await firstAndReplay((res) => {
      for (let i = 0; i < 80; i++) res.appendHeader('x-b', `${i}${big}`);
      res.flushHeaders();
      res.end('body');
    });
    expect(first.toString('latin1')).toMatch(/^HTTP\/1\.1 200 /);
    expect(bodyOf(first).toString()).toBe('body');
    // The first client got the values as Latin-1 (one byte each).
    expect(first.includes(Buffer.from(`x-b: 0${big}`, 'latin1'))).toBe(true);
    expect(replay.toString('latin1')).toMatch(/^HTTP\/1\.1 500 /);
  });

  it('two responses in flight at once, one with a Latin-1 head, one ASCII: each replays its own head', async () => {
    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    let started = 0;
    app = (res, req) => {
      started++;
      const latin = String(req.headers['idempotency-key']).endsWith('-l');
      res.setHeader('x-name', latin ? CAFE : 'plain');
      res.flushHeaders();
      void gate.then(() => res.end(latin ? 'l' : 'p'));
    };
    const base = `r-${++serial}`;
    const both = Promise.all([exchange(`${base}-l`), exchange(`${base}-p`)]);
    for (let i = 0; i < 500 && started < 2; i++) await new Promise((r) => setTimeout(r, 20));
    release();
    const [l, p] = await both;
    app = () => {
      throw new Error('the handler ran again');
    };
    const [lr, pr] = await Promise.all([exchange(`${base}-l`), exchange(`${base}-p`)]);
    expect(headOf(l).fields).toEqual([['x-name', CAFE]]);
    expect(headOf(p).fields).toEqual([['x-name', 'plain']]);
    expect(headOf(lr).fields).toEqual(headOf(l).fields);
    expect(headOf(pr).fields).toEqual(headOf(p).fields);
    expect(bodyOf(lr).toString()).toBe('l');
    expect(bodyOf(pr).toString()).toBe('p');
  });
});

describe('recorder10 review: the status line', () => {
  // FINDING LOW (fixed): the reason phrase the first client got (`writeHead(200, 'Ça va')`,
  // or `res.statusMessage`) was not recorded: a replay sent Node's default (`OK`), so a
  // client reading `statusText` saw another response. Now recorded (when it is not the
  // status code's usual one, over HTTP/1.x) and replayed, as Latin-1 as Node sends it.
  it('FINDING LOW (fixed): a replay sends the reason phrase the first client got', async () => {
    const { first, replay } = await firstAndReplay((res) => {
      res.writeHead(200, '\u00c7a va', { 'x-name': 'plain' });
      res.end('x');
    });
    expect(isReplay(replay)).toBe(true);
    expect(headOf(first).status).toBe('HTTP/1.1 200 \u00c7a va');
    expect(headOf(replay).status).toBe(headOf(first).status);
  });

  it('a reason phrase set as statusMessage, the head made by end(): replayed', async () => {
    const { first, replay } = await firstAndReplay((res) => {
      res.statusCode = 201;
      res.statusMessage = 'Made here';
      res.end('x');
    });
    expect(isReplay(replay)).toBe(true);
    expect(headOf(first).status).toBe('HTTP/1.1 201 Made here');
    expect(headOf(replay).status).toBe(headOf(first).status);
  });

  it('the usual phrase, and none given: the replay has the usual one', async () => {
    for (const head of [
      (res: ServerResponse) => res.writeHead(202, 'Accepted'),
      (res: ServerResponse) => res.writeHead(202),
    ]) {
      const { first, replay } = await firstAndReplay((res) => {
        head(res);
        res.end('x');
      });
      expect(isReplay(replay)).toBe(true);
      expect(headOf(first).status).toBe('HTTP/1.1 202 Accepted');
      expect(headOf(replay).status).toBe('HTTP/1.1 202 Accepted');
    }
  });
});

/**
 * A published stream: its head flushed, one event, then (once a duplicate attached or
 * after a bound) the end. Answers the first client's bytes, the attached client's and a
 * replay's afterwards, each as `get` reads it (over HTTP/1.1 or HTTP/2).
 */
async function liveRun<T>(
  head: (res: ServerResponse) => void,
  get: (key: string) => Promise<T>,
): Promise<{ first: T; attached: T; replay: T }> {
  let attachedNow: () => void = () => {};
  const attachedSeen = new Promise<void>((resolve) => {
    attachedNow = resolve;
  });
  let flushedNow: () => void = () => {};
  const flushed = new Promise<void>((resolve) => {
    flushedNow = resolve;
  });
  app = (res) => {
    head(res);
    res.flushHeaders();
    res.write('data: 1\n\n');
    flushedNow();
    const bound = setTimeout(attachedNow, 5_000);
    void attachedSeen.then(() => {
      clearTimeout(bound);
      // Leave the attached reader time to get the head before the end.
      setTimeout(() => res.end('data: 2\n\n'), 100);
    });
  };
  const key = `live-${++serial}`;
  const before = runs;
  const firstDone = get(key);
  await flushed;
  onRespond = () => attachedNow();
  const attached = await get(key);
  onRespond = () => {};
  const first = await firstDone;
  app = () => {
    throw new Error('the handler ran again');
  };
  const replay = await get(key);
  expect(runs - before).toBe(1);
  return { first, attached, replay };
}

describe('recorder10 review: a published live stream (text/event-stream)', () => {
  it('a flushed Latin-1 head: the attached client and the replay get the bytes the first client got', async () => {
    const { first, attached, replay } = await liveRun((res) => {
      res.setHeader('content-type', 'text/event-stream');
      res.setHeader('x-name', CAFE);
    }, exchange);
    expect(headOf(first).fields).toEqual([
      ['content-type', 'text/event-stream'],
      ['x-name', CAFE],
    ]);
    expect(headOf(attached).fields).toEqual(headOf(first).fields);
    expect(headOf(replay).fields).toEqual(headOf(first).fields);
    expect(bodyOf(replay).toString()).toBe('data: 1\n\ndata: 2\n\n');
  });

  // FINDING MEDIUM (new in wt/recorder10): on a published stream the recorder calls
  // `res.setHeader(Idem-Generation)` after `start` read the head but before Node's own
  // `writeHead` ran. That setHeader creates Node's outgoing headers (`kOutHeaders`), so
  // Node merges the `writeHead` object through `setHeader` (a name given in two cases keeps
  // its last value) while `mergeExtra` decided with `keepsRepeats` *before* that (no
  // outgoing headers yet: keep both). The first client got `x-a: 2`; the attached reader
  // and every replay get `x-a: 1, 2`. Main replaced by name there and agreed with Node. Fix:
  // decide `keepsRepeats` as Node will see it, i.e. count the generation header the
  // recorder is about to set (a live type head: keep=false for objects, and for arrays on
  // Node 20), or set the generation header through the `writeHead` argument instead of
  // `setHeader`. Fixed: the recorder gives the generation header inside the `writeHead`
  // argument (a copy) instead.
  it('FINDING MEDIUM (fixed): a writeHead object with a name in two cases on a published stream replays what the first client got', async () => {
    const { first, attached, replay } = await liveRun((res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'X-A': '1', 'x-a': '2' });
    }, exchange);
    expect(headOf(first).fields).toContainEqual(['content-type', 'text/event-stream']);
    // The first client still gets the generation it may resume from.
    expect(first.toString('latin1')).toMatch(/\r\nidempotent-generation: \d+\r\n/i);
    expect(headOf(attached).fields).toEqual(headOf(first).fields);
    expect(headOf(replay).fields).toEqual(headOf(first).fields);
  });
});

describe('recorder10 fix: the generation header given to writeHead with the headers', () => {
  it('a message and an object, a nested header array, an object after setHeader: first, attached and replay agree, the first client gets the generation', async () => {
    const heads: ((res: ServerResponse) => void)[] = [
      (res) =>
        res.writeHead(200, 'Fine', { 'content-type': 'text/event-stream', 'X-A': '1', 'x-a': '2' }),
      (res) =>
        res.writeHead(200, [
          ['content-type', 'text/event-stream'],
          ['X-A', '1'],
          ['x-a', '2'],
        ] as unknown as string[]),
      (res) => {
        res.setHeader('x-b', 'b');
        res.writeHead(200, { 'content-type': 'text/event-stream', 'X-A': '1', 'x-a': '2' });
      },
    ];
    const expected = [
      ['x-a', '1, 2'],
      ['x-a', '1, 2'],
      ['x-a', '2'],
    ];
    for (const [i, head] of heads.entries()) {
      const { first, attached, replay } = await liveRun(head, exchange);
      expect(first.toString('latin1')).toMatch(/\r\nidempotent-generation: \d+\r\n/i);
      expect(headOf(first).fields).toContainEqual(expected[i]);
      expect(headOf(attached).fields).toEqual(headOf(first).fields);
      expect(headOf(replay).fields).toEqual(headOf(first).fields);
    }
  });
});

describe('recorder10 review: the head read for one response while another is read', () => {
  // FINDING LOW (a gap in wt/recorder10's fix; main sent every flushed Latin-1 head as UTF-8):
  // `pastAscii` is module state, reset by every
  // `nodeHeadSource`. A header value whose `toString` makes another recorded response's head
  // (a lazy value object that answers a second request first) resets it while the first head
  // is read: the first head's Latin-1 value is then missed, the `_send` wrapper is not set,
  // and `flushHeaders` sends `café` to the first client as UTF-8 (0xC3 0xA9) while the replay
  // sends 0xE9. Fix: keep the flag local (return it from `refused`/`checkedValue`, or save
  // and restore it around the `String(value)` calls; or decide Latin-1 from the head string
  // Node made, `res._header`, in the `_send` wrapper itself). Fixed: `nodeHeadSource` saves
  // the flag and puts it back around each head it reads.
  it('FINDING LOW (fixed): a value whose toString heads another response does not lose the Latin-1 of the first head', async () => {
    let other: ServerResponse | undefined;
    let arrivedOther: () => void = () => {};
    const otherHere = new Promise<void>((resolve) => {
      arrivedOther = resolve;
    });
    app = (res, req) => {
      if (String(req.headers['idempotency-key']).endsWith('-b')) {
        other = res;
        arrivedOther();
        return;
      }
      let done = false;
      const lazy = {
        toString() {
          if (!done && other) {
            done = true;
            other.writeHead(200, { 'x-name': 'plain' });
            other.end('b');
          }
          return 'lazy';
        },
      };
      void otherHere.then(() => {
        res.writeHead(200, { 'x-name': CAFE, 'x-b': lazy as unknown as string });
        res.flushHeaders();
        res.end('a');
      });
    };
    const base = `r-${++serial}`;
    const b = exchange(`${base}-b`);
    const a = exchange(`${base}-a`);
    const [first] = await Promise.all([a, b]);
    app = () => {
      throw new Error('the handler ran again');
    };
    const replay = await exchange(`${base}-a`);
    expect(isReplay(replay)).toBe(true);
    expect(headOf(replay).fields).toContainEqual(['x-name', CAFE]);
    expect(headOf(first).fields).toEqual(headOf(replay).fields);
  });
});

describe('recorder10 review: a writeHead object Node takes and the recorder refuses', () => {
  // FINDING LOW (pre-existing, main does the same): after a `setHeader`, Node's `writeHead`
  // skips an empty name in a header object (`if (k) this.setHeader(k, ...)`), so without idem
  // the response goes out. The recorder's `mergeExtra` refuses the name (not a token), falls
  // back to `headersOf`, whose `Headers.append('')` throws a TypeError out of `writeHead`: the
  // app's response becomes its error path (here a 500), only because idem is there. Fix:
  // skip an empty name where Node does (an object merged after `setHeader`). Fixed: skipped
  // there (objects and arrays, HTTP/1.1 only; HTTP/2 and a head without `setHeader` refuse it
  // in Node too).
  it('FINDING LOW (fixed): writeHead({ "": v, ... }) after setHeader goes out as without idem', async () => {
    app = (res) => {
      res.setHeader('x-name', 'n');
      res.writeHead(200, { '': 'ignored', 'x-a': '1' } as Record<string, string>);
      res.end('ok');
    };
    const first = await exchange(`r-${++serial}`);
    // Without idem: `200`, `x-a: 1`, `x-name: n`, body `ok`. With it: the app's 500.
    expect(first.toString('latin1')).toMatch(/^HTTP\/1\.1 200 /);
    expect(headOf(first).fields).toEqual([
      ['x-a', '1'],
      ['x-name', 'n'],
    ]);
  });
});

describe('recorder10 review: HTTP/2 heads', () => {
  /** One HTTP/2 exchange: the recorded fields the client got (sorted) and the body. */
  async function h2get(key: string): Promise<{ fields: [string, string][]; body: string }> {
    const session = connectHttp2(h2url);
    session.on('error', () => {});
    const timer = setTimeout(() => session.destroy(), 15_000);
    try {
      const stream = session.request({ ':method': 'POST', ':path': '/', 'idempotency-key': key });
      stream.end();
      const [headers] = (await once(stream, 'response')) as [Record<string, unknown>];
      const parts: Buffer[] = [];
      stream.on('data', (part: Buffer) => parts.push(part));
      if (!stream.closed) await once(stream, 'close');
      const fields = Object.entries(headers)
        .filter(([name]) => RECORDED.includes(name))
        .map(([name, v]): [string, string] => [name, Array.isArray(v) ? v.join(', ') : String(v)])
        .sort((a, b) => (a[0] < b[0] ? -1 : 1));
      return { fields, body: Buffer.concat(parts).toString() };
    } finally {
      clearTimeout(timer);
      session.close();
    }
  }

  it('a published stream whose writeHead object names x-a in two cases: first, attached and replay agree', async () => {
    const { first, attached, replay } = await liveRun(
      (res) => res.writeHead(200, { 'content-type': 'text/event-stream', 'X-A': '1', 'x-a': CAFE }),
      h2get,
    );
    expect(first.fields).toContainEqual(['x-a', CAFE]);
    expect(attached.fields).toEqual(first.fields);
    expect(replay.fields).toEqual(first.fields);
    expect(replay.body).toBe('data: 1\n\ndata: 2\n\n');
  });

  it('a policy that keeps the head reads, after writeHead, what the client got (setHeader, then an array and an object part)', async () => {
    const cases: ((res: ServerResponse) => void)[] = [
      (res) => {
        res.setHeader('vary', ['z']);
        res.setHeader('x-b', 'b');
        res.writeHead(200, ['vary', ['a'], 'Vary', ['b', 'c'], 'x-a', CAFE, 'X-A', 'two']);
        res.end('x');
      },
      (res) => {
        res.setHeader('link', '<l>');
        res.writeHead(200, { Vary: ['a', 'b'], vary: 'c', 'X-A': ' edge', 'x-a': 'in' });
        res.end('x');
      },
    ];
    for (const run of cases) {
      kept = undefined;
      app = run;
      const key = `pol-${++serial}`;
      const first = await h2get(key);
      expect(kept).toBeDefined();
      const read = [...(kept as unknown as { headers: Headers }).headers]
        .filter(([name]) => RECORDED.includes(name))
        .sort((a, b) => (a[0] < b[0] ? -1 : 1));
      expect(read).toEqual(first.fields);
      app = () => {
        throw new Error('the handler ran again');
      };
      expect((await h2get(key)).fields).toEqual(first.fields);
    }
  });
});

// Node 20 (not 22+) sets a writeHead array's fields one by one once `setHeader` made the
// outgoing headers, which the recorder's own Idem-Generation setHeader does on a published
// stream after `start` decided: see the MEDIUM finding above (pre-existing for arrays: main
// decided the same way). Fixed as the MEDIUM one: the generation header now goes into the
// `writeHead` argument, so Node merges it as the recorder read it (holds on every Node).
describe('recorder10 review: a published stream with a header array naming x-a twice', () => {
  // FINDING LOW on Node 20 (pre-existing, as main): first client `x-a: 2`, record `1, 2`.
  // Node 22 and later append: it holds there. Fix: as for the MEDIUM finding.
  it('FINDING LOW (Node 20, fixed): the replay of a published stream given a header array with a name twice', async () => {
    let flushedNow: () => void = () => {};
    const flushed = new Promise<void>((resolve) => {
      flushedNow = resolve;
    });
    app = (res) => {
      res.writeHead(200, ['content-type', 'text/event-stream', 'X-A', '1', 'x-a', '2']);
      res.write('data: 1\n\n');
      flushedNow();
      setTimeout(() => res.end('data: 2\n\n'), 50);
    };
    const key = `live-${++serial}`;
    const first = await exchange(key);
    await flushed;
    app = () => {
      throw new Error('the handler ran again');
    };
    const replay = await exchange(key);
    expect(isReplay(replay)).toBe(true);
    expect(headOf(first).fields).toContainEqual(['content-type', 'text/event-stream']);
    expect(headOf(replay).fields).toEqual(headOf(first).fields);
  });
});
