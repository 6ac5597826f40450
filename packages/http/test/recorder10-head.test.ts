import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect as connectHttp2, createServer as createHttp2Server } from 'node:http2';
import { connect } from 'node:net';
import { listening, type RunningApp } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createIdempotencyHandler } from '../src/index.js';
import { recordServerResponse, sendDecisionResponse } from '../src/node.js';

// The head a replay sends is the head the first client got, read as bytes off a raw socket:
// values with characters past U+007F (Node sends a head as UTF-8 with a string it flushes it
// with, as Latin-1 otherwise), and a name given twice in a `writeHead` object.

const RUNS = Number(process.env.IDEM_PROPERTY_RUNS) || (process.env.CI ? 30 : 60);
const RECORDED = ['content-disposition', 'content-type', 'link', 'vary', 'x-a', 'x-name'];

type App = (res: ServerResponse) => void;

let app: App = (res) => res.end();
let serial = 0;
const idem = createIdempotencyHandler({
  store: createMemoryStore(),
  scope: 'global',
  recordedHeaders: RECORDED,
  onWarning: () => {},
});

async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const key = req.headers['idempotency-key'] as string;
  const decision = await idem.begin({
    native: {} as Request,
    method: 'POST',
    url: '/',
    header: (name) => (name === 'idempotency-key' ? key : undefined),
    readBody: async () => ({ kind: 'none' }),
  });
  if (decision.action === 'respond') return sendDecisionResponse(res, decision);
  if (decision.action !== 'execute') throw new Error(decision.action);
  recordServerResponse(res, decision.recorder);
  try {
    app(res);
  } catch {
    // A head Node refuses: no case here (the client sees no response).
    res.destroy();
  }
}

// Both servers (HTTP/1.1, HTTP/2) on loopback, for the whole file.
const servers: RunningApp[] = [];
let port = 0;
let h2url = '';
beforeAll(async () => {
  const h1 = createServer((req, res) => void handle(req, res)).listen(0, '127.0.0.1');
  const h2 = createHttp2Server(
    (req, res) => void handle(req as unknown as IncomingMessage, res as unknown as ServerResponse),
  ).listen(0, '127.0.0.1');
  servers.push(await listening(h1), await listening(h2 as unknown as Server));
  port = Number(new URL((servers[0] as RunningApp).url).port);
  h2url = (servers[1] as RunningApp).url;
});
afterAll(() => Promise.all(servers.map((server) => server.close())));

/** The raw bytes of one response (the connection closes after it), or undefined for none. */
function exchange(key: string): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    const parts: Buffer[] = [];
    const timer = setTimeout(() => socket.destroy(), 10_000);
    socket.on('data', (part: Buffer) => parts.push(part));
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(timer);
      const all = Buffer.concat(parts);
      resolve(all.includes('\r\n\r\n') ? all : undefined);
    });
    socket.write(
      `POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nIdempotency-Key: ${key}\r\nContent-Length: 0\r\n\r\n`,
    );
  });
}

/**
 * The recorded headers of a response as its client reads them off the wire: each value's
 * bytes (one character a byte), stripped of spaces and tabs at both ends as an HTTP parser
 * does, a repeated name's values joined with `, ` in order (as Node's client and a
 * `Headers` do), by lowercase name, sorted.
 */
function receivedHead(raw: Buffer): [string, string][] {
  const lines = raw.subarray(0, raw.indexOf('\r\n\r\n')).toString('latin1').split('\r\n');
  const byName = new Map<string, string[]>();
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    const name = line.slice(0, colon).toLowerCase();
    if (!RECORDED.includes(name)) continue;
    const value = line.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, '');
    byName.set(name, [...(byName.get(name) ?? []), value]);
  }
  return [...byName]
    .map(([name, values]): [string, string] => [name, values.join(', ').trim()])
    .sort((a, b) => (a[0] < b[0] ? -1 : 1));
}

/** The first response's head as received, and the replay's. */
async function firstAndReplay(
  run: App,
): Promise<
  { first: [string, string][]; replay: [string, string][]; replayed: boolean } | undefined
> {
  app = run;
  const key = `k-${++serial}`;
  const first = await exchange(key);
  if (first === undefined) return undefined;
  app = () => {
    throw new Error('the handler ran again');
  };
  const replay = await exchange(key);
  if (replay === undefined) throw new Error('no replay');
  return {
    first: receivedHead(first),
    replay: receivedHead(replay),
    replayed: /\r\nidempotent-replayed: true\r\n/i.test(replay.toString('latin1')),
  };
}

const CAFE = 'caf\u00e9';

/** `x-name: café` set, then `then`. */
function named(then: (res: ServerResponse) => unknown): App {
  return (res) => {
    res.setHeader('x-name', CAFE);
    then(res);
  };
}

describe('a replay sends the head the first client got (HTTP/1.1, raw bytes)', () => {
  const cases: [string, App][] = [
    ['setHeader, end(string)', named((res) => res.end('text'))],
    ["end(string, 'utf8')", named((res) => res.end('t\u00ebxt', 'utf8'))],
    ['end(Buffer)', named((res) => res.end(Buffer.from('text')))],
    ['end()', named((res) => res.end())],
    [
      'write then end',
      named((res) => {
        res.write('a');
        res.end('b');
      }),
    ],
    [
      'flushHeaders',
      named((res) => {
        res.flushHeaders();
        res.end('text');
      }),
    ],
    [
      'writeHead, flushHeaders',
      (res) => {
        res.writeHead(200, {
          'Content-Disposition': 'attachment; filename="\u00ff.txt"',
          'x-name': ['a\u00e9', '\u00c0b'],
        });
        res.flushHeaders();
        res.write('a');
        res.end('b');
      },
    ],
    [
      'writeHead object, a name in two cases',
      (res) => res.writeHead(200, { 'X-A': '1', 'x-a': '2', link: '<a>' }).end('text'),
    ],
    [
      'writeHead object, a name in three cases, flushHeaders',
      (res) => {
        const head: Record<string, string | string[]> = { Vary: 'a', vary: ['b', 'c'], VARY: 'd' };
        res.writeHead(200, head);
        res.flushHeaders();
        res.end(Buffer.from('x'));
      },
    ],
    [
      'setHeader, then a writeHead object with a name in two cases (Node keeps the last)',
      (res) => {
        res.setHeader('link', '<z>');
        res.writeHead(200, { 'X-A': '1', 'x-a': '2' }).end('text');
      },
    ],
    [
      'writeHead array, a name in two cases',
      (res) => res.writeHead(200, ['X-A', '1', 'x-a', CAFE]).end('text'),
    ],
  ];

  for (const [name, run] of cases)
    it(name, async () => {
      const seen = await firstAndReplay(run);
      expect(seen).toBeDefined();
      const { first, replay, replayed } = seen as NonNullable<typeof seen>;
      expect(replayed).toBe(true);
      expect(first.length).toBeGreaterThan(0);
      expect(replay).toEqual(first);
    });

  it('a flushed head carries a value past U+007F as Latin-1 bytes, as every other head does', async () => {
    const seen = await firstAndReplay(
      named((res) => {
        res.flushHeaders();
        res.end('text');
      }),
    );
    // The byte 0xE9, not the UTF-8 0xC3 0xA9.
    expect(seen?.first).toEqual([['x-name', CAFE]]);
    expect(seen?.replay).toEqual([['x-name', CAFE]]);
  });

  it('a writeHead object with a name in two cases and no setHeader: the client got both values, so does the replay', async () => {
    const seen = await firstAndReplay((res) =>
      res.writeHead(200, { 'X-A': '1', 'x-a': '2' }).end(),
    );
    expect(seen?.first).toEqual([['x-a', '1, 2']]);
    expect(seen?.replay).toEqual([['x-a', '1, 2']]);
  });

  // Random heads: names in varied case (repeated), values with characters past U+007F,
  // given with setHeader, a writeHead object or array, sent with a string or a Buffer body,
  // none, a write first, or flushHeaders.
  const NAMES = ['x-a', 'X-A', 'X-a', 'vary', 'Vary', 'link', 'x-name', 'X-Name', 'content-type'];
  const text = fc
    .array(fc.constantFrom('a', 'b', ' ', ',', '\u00e9', '\u00ff', '\u0080', '='), {
      minLength: 1,
      maxLength: 4,
    })
    .map((chars) => chars.join(''));
  const value = fc.oneof(text, fc.array(text, { minLength: 1, maxLength: 2 }));
  const pairs = fc.array(fc.tuple(fc.constantFrom(...NAMES), value), { maxLength: 4 });
  const spec = fc.record({
    set: pairs,
    given: fc.oneof(
      fc.constant(undefined),
      pairs.map((list) => ({ object: Object.fromEntries(list) })),
      pairs.map((list) => ({
        array: list
          .flatMap(([n, v]) => (Array.isArray(v) ? v.map((one) => [n, one]) : [[n, v]]))
          .flat(),
      })),
    ),
    body: fc.constantFrom('string', 'utf8', 'buffer', 'none', 'write', 'flush'),
  });
  type Spec = typeof spec extends fc.Arbitrary<infer T> ? T : never;

  function runSpec(given: Spec): App {
    return (res) => {
      for (const [n, v] of given.set) res.setHeader(n, v);
      if (given.given !== undefined)
        res.writeHead(
          200,
          'object' in given.given ? structuredClone(given.given.object) : [...given.given.array],
        );
      switch (given.body) {
        case 'string':
          return void res.end('t\u00e9xt');
        case 'utf8':
          return void res.end('text', 'utf8');
        case 'buffer':
          return void res.end(Buffer.from('text'));
        case 'none':
          return void res.end();
        case 'write':
          res.write('a');
          return void res.end('b');
        case 'flush':
          res.flushHeaders();
          return void res.end('text');
      }
    };
  }

  it('property: the replay head equals the first head as received', async () => {
    let compared = 0;
    await fc.assert(
      fc.asyncProperty(spec, async (given) => {
        const seen = await firstAndReplay(runSpec(given));
        if (seen === undefined) return;
        compared++;
        expect(seen.replayed).toBe(true);
        expect(seen.replay).toEqual(seen.first);
      }),
      { numRuns: RUNS },
    );
    expect(compared).toBeGreaterThan(RUNS / 2);
  });
});

describe('a replay sends the head the first client got (HTTP/2)', () => {
  /** The recorded headers the client got (each value's bytes, one character a byte). */
  async function get(key: string): Promise<[string, string][]> {
    const session = connectHttp2(h2url);
    try {
      const stream = session.request({ ':method': 'POST', ':path': '/', 'idempotency-key': key });
      stream.end();
      const [headers] = (await once(stream, 'response')) as [Record<string, unknown>];
      stream.resume();
      if (!stream.closed) await once(stream, 'close');
      return Object.entries(headers)
        .filter(([name]) => RECORDED.includes(name))
        .map(([name, v]): [string, string] => [name, Array.isArray(v) ? v.join(', ') : String(v)])
        .sort((a, b) => (a[0] < b[0] ? -1 : 1));
    } finally {
      session.close();
    }
  }

  const cases: [string, App][] = [
    ['a value past U+007F, string body', named((res) => res.end('t\u00e9xt'))],
    [
      'a writeHead object with a name in two cases (node:http2 keeps the last)',
      (res) => res.writeHead(200, { 'X-A': '1', 'x-a': CAFE, Vary: 'a', vary: 'b' }).end('x'),
    ],
    [
      'a writeHead array with a name given twice',
      (res) => res.writeHead(200, ['vary', ['a'], 'Vary', ['b', '\u00ff']]).end('x'),
    ],
  ];
  for (const [name, run] of cases)
    it(name, async () => {
      app = run;
      const key = `h2-${++serial}`;
      const first = await get(key);
      app = () => {
        throw new Error('the handler ran again');
      };
      const replay = await get(key);
      expect(first.length).toBeGreaterThan(0);
      expect(replay).toEqual(first);
    });
});
