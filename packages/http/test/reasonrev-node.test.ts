import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect as connectHttp2, createServer as createHttp2Server } from 'node:http2';
import { connect } from 'node:net';
import {
  createMemoryLiveStreams,
  decodeOutcome,
  encodeOutcome,
  type IdempotencyStore,
  type JsonValue,
} from '@idem/core';
import { listening, type RunningApp } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { createRedisStore } from '@idem/store-redis';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createIdempotencyHandler } from '../src/index.js';
import { recordServerResponse, sendDecisionResponse } from '../src/node.js';

// Adversarial review of the replayed reason phrase (wt/reasonrev): every first response and
// its replay read as raw bytes off an HTTP/1.1 socket (or an HTTP/2 session).

type Meta = Record<string, JsonValue | undefined>;
type App = (res: ServerResponse, req: IncomingMessage) => void;

let app: App = (res) => res.end();
let runs = 0;
let serial = 0;
let onRespond: () => void = () => {};
/** Applied to the metadata of the next outcome a store completes (a record written by hand). */
let tamper: ((meta: Meta) => void) | undefined;
const warnings: string[] = [];

/** `store` whose `complete` lets `tamper` rewrite the stored metadata, as bytes in the store. */
function tampering(store: IdempotencyStore): IdempotencyStore {
  const complete = store.complete.bind(store);
  return Object.assign(Object.create(store) as IdempotencyStore, {
    complete: (input: Parameters<IdempotencyStore['complete']>[0]) => {
      if (!tamper) return complete(input);
      const outcome = decodeOutcome(input.outcome);
      const meta = { ...outcome.meta } as Meta;
      tamper(meta);
      tamper = undefined;
      return complete({ ...input, outcome: encodeOutcome({ meta, body: outcome.body }) });
    },
  });
}

const redis = new Redis({
  host: '127.0.0.1',
  port: 6379,
  lazyConnect: true,
  maxRetriesPerRequest: 1,
});
const settings = {
  scope: 'global' as const,
  recordedHeaders: ['content-type', 'x-a'],
  onWarning: (message: string) => void warnings.push(message),
};
const memory = createIdempotencyHandler({
  ...settings,
  store: tampering(createMemoryStore()),
  maxOutcomeBytes: 64 * 1024,
  liveStreams: { channel: createMemoryLiveStreams() },
});
const small = createIdempotencyHandler({
  ...settings,
  store: createMemoryStore(),
  maxOutcomeBytes: 1500,
});
const onRedis = createIdempotencyHandler({
  ...settings,
  store: tampering(
    createRedisStore({ client: redis, keyPrefix: `reasonrev-${process.pid}-${Date.now()}:` }),
  ),
});

const everything = createIdempotencyHandler({
  ...settings,
  store: createMemoryStore(),
  isFinal: () => true,
});

function handlerFor(key: string) {
  if (key.startsWith('all-')) return everything;
  if (key.startsWith('redis-')) return onRedis;
  if (key.startsWith('small-')) return small;
  return memory;
}

async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const key = req.headers['idempotency-key'] as string;
  const headers = req.headers;
  const decision = await handlerFor(key).begin({
    native: {} as Request,
    method: 'POST',
    url: '/',
    header: (name) => {
      const value = headers[name.toLowerCase()];
      return Array.isArray(value) ? value.join(', ') : value;
    },
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
    // As an app's error handler does: a 500 with Node's phrase, if Node still takes a head.
    if (!res.headersSent) {
      res.statusCode = 500;
      res.statusMessage = 'Internal Server Error';
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
afterAll(async () => {
  await Promise.all(servers.map((server) => server.close()));
  redis.disconnect();
});

/** The raw bytes of one response (the connection closes after it). */
function exchange(key: string, extra = ''): Promise<Buffer> {
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
      `POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nIdempotency-Key: ${key}\r\n${extra}Content-Length: 0\r\n\r\n`,
    );
  });
}

/** The final status line as bytes (after any 1xx), without its CRLF. */
function statusLine(raw: Buffer): Buffer {
  let at = 0;
  while (
    raw
      .subarray(at, at + 13)
      .toString('latin1')
      .match(/^HTTP\/1\.1 1\d\d /)
  )
    at = raw.indexOf('\r\n\r\n', at) + 4;
  return raw.subarray(at, raw.indexOf('\r\n', at));
}

const line = (text: string) => Buffer.from(text, 'latin1');
const isReplay = (raw: Buffer) => /\r\nidempotent-replayed: true\r\n/i.test(raw.toString('latin1'));

async function firstAndReplay(
  run: App,
  prefix = 'r',
): Promise<{ first: Buffer; replay: Buffer; key: string }> {
  app = run;
  const key = `${prefix}-${++serial}`;
  const before = runs;
  const first = await exchange(key);
  app = () => {
    throw new Error('the handler ran again');
  };
  const replay = await exchange(key);
  expect(runs - before).toBe(1);
  return { first, replay, key };
}

/** The first response's status line is `expected`, and the replay's is the same bytes. */
async function sameLine(run: App, expected: string, prefix = 'r'): Promise<void> {
  const { first, replay } = await firstAndReplay(run, prefix);
  expect(statusLine(first).toString('latin1')).toBe(expected);
  expect(statusLine(first).equals(line(expected))).toBe(true);
  expect(isReplay(replay)).toBe(true);
  expect(statusLine(replay).toString('latin1')).toBe(statusLine(first).toString('latin1'));
  expect(statusLine(replay).equals(statusLine(first))).toBe(true);
}

describe('reasonrev: byte-exact status lines over HTTP/1.1', () => {
  it('Latin-1 phrases (é, ÿ) given to writeHead, the body ended as a string: same bytes', async () => {
    await sameLine((res) => {
      res.writeHead(201, 'Cr\u00e9\u00e9 \u00ff');
      res.end('x');
    }, 'HTTP/1.1 201 Cr\u00e9\u00e9 \u00ff');
  });

  it('a Latin-1 statusMessage with an implicit head made by write() of a string', async () => {
    await sameLine((res) => {
      res.statusMessage = '\u00ff\u00e9';
      res.write('a');
      res.end('b');
    }, 'HTTP/1.1 200 \u00ff\u00e9');
  });

  it('tabs and leading/trailing spaces are kept as they are', async () => {
    await sameLine((res) => {
      res.writeHead(202, ' \tspaced out\t ');
      res.end('x');
    }, 'HTTP/1.1 202  \tspaced out\t ');
  });

  it('exactly 1,024 characters (Latin-1): replayed whole', async () => {
    const phrase = `${'\u00e9'.repeat(1000)}${'x'.repeat(24)}`;
    await sameLine((res) => {
      res.writeHead(200, phrase);
      res.end('x');
    }, `HTTP/1.1 200 ${phrase}`);
  });

  it('1,025 characters: the first client gets them, a replay the usual phrase (as documented)', async () => {
    const phrase = 'y'.repeat(1025);
    const { first, replay } = await firstAndReplay((res) => {
      res.writeHead(200, phrase);
      res.end('x');
    });
    expect(statusLine(first).toString('latin1')).toBe(`HTTP/1.1 200 ${phrase}`);
    expect(isReplay(replay)).toBe(true);
    expect(statusLine(replay).toString('latin1')).toBe('HTTP/1.1 200 OK');
  });

  it('the usual phrase in another case ("created") is not the usual one: replayed as is', async () => {
    await sameLine((res) => {
      res.writeHead(201, 'created');
      res.end('x');
    }, 'HTTP/1.1 201 created');
  });

  it('statusMessage set before writeHead(status) without a phrase: that phrase', async () => {
    await sameLine((res) => {
      res.statusMessage = 'Set before';
      res.writeHead(201, { 'x-a': '1' });
      res.end('x');
    }, 'HTTP/1.1 201 Set before');
  });

  it('writeHead(status, phrase) wins over an earlier statusMessage', async () => {
    await sameLine((res) => {
      res.statusMessage = 'Set before';
      res.writeHead(201, 'Given');
      res.end('x');
    }, 'HTTP/1.1 201 Given');
  });

  it('statusMessage set after writeHead (too late for Node): the usual phrase, both times', async () => {
    await sameLine((res) => {
      res.writeHead(201);
      res.statusMessage = 'Too late';
      res.end('x');
    }, 'HTTP/1.1 201 Created');
  });

  it("statusMessage 'Made', then statusCode 404 then 200: Node sends '200 Made', so does the replay", async () => {
    await sameLine((res) => {
      res.statusMessage = 'Made';
      res.statusCode = 404;
      res.statusCode = 200;
      res.end('x');
    }, 'HTTP/1.1 200 Made');
  });

  it("statusMessage 'OK' with statusCode 201: the other code's usual phrase is recorded", async () => {
    await sameLine((res) => {
      res.statusMessage = 'OK';
      res.statusCode = 201;
      res.end('x');
    }, 'HTTP/1.1 201 OK');
  });

  it('a 204 and a 304 (no body, 304 recorded by a policy that keeps all) with their own phrase', async () => {
    await sameLine((res) => {
      res.writeHead(204, 'Nothing \u00e0 dire');
      res.end();
    }, 'HTTP/1.1 204 Nothing \u00e0 dire');
    await sameLine(
      (res) => {
        res.statusCode = 304;
        res.statusMessage = 'Pas chang\u00e9';
        res.end();
      },
      'HTTP/1.1 304 Pas chang\u00e9',
      'all',
    );
  });

  it('a recorded 404 and 503 with their own phrase (a policy that keeps all)', async () => {
    await sameLine(
      (res) => {
        res.writeHead(404, 'No such payout', { 'content-type': 'text/plain' });
        res.end('none');
      },
      'HTTP/1.1 404 No such payout',
      'all',
    );
    await sameLine(
      (res) => {
        res.statusCode = 503;
        res.statusMessage = 'Later';
        res.end();
      },
      'HTTP/1.1 503 Later',
      'all',
    );
  });

  it('early hints (103) before a head with its own phrase: the final status line replays', async () => {
    const { first, replay } = await firstAndReplay((res) => {
      res.writeEarlyHints({ link: '</a.css>; rel=preload' });
      res.writeHead(201, 'After hints');
      res.end('x');
    });
    expect(first.toString('latin1')).toMatch(/^HTTP\/1\.1 103 /);
    expect(statusLine(first).toString('latin1')).toBe('HTTP/1.1 201 After hints');
    expect(statusLine(replay).equals(statusLine(first))).toBe(true);
  });

  it('an unknown status code with no phrase (Node sends "unknown"): the same', async () => {
    await sameLine((res) => {
      res.statusCode = 299;
      res.end('x');
    }, 'HTTP/1.1 299 unknown');
  });

  it('flushHeaders with an ASCII phrase and a Latin-1 header value: same bytes', async () => {
    await sameLine((res) => {
      res.writeHead(201, 'Flushed', { 'x-a': 'caf\u00e9' });
      res.flushHeaders();
      res.end('x');
    }, 'HTTP/1.1 201 Flushed');
  });

  // FINDING (MEDIUM, fixed: a phrase past U+007F makes the head go out as Latin-1 too): `flushHeaders` sends the head with `_send('')`, which Node writes as
  // UTF-8. The recorder makes Node send the head as Latin-1 (`sendsHeadAsLatin1`) only when a
  // header value is past U+007F, never for the reason phrase: with an ASCII-only head and a
  // Latin-1 phrase the first client gets `Ã©` (0xC3 0xA9), every replay `é` (0xE9). The
  // README promises "replayed ... as the same Latin-1 bytes". Fix: count the phrase in
  // `pastAscii` (or test `res._header` in the `_send` wrapper).
  it('FINDING MEDIUM (fixed): a Latin-1 phrase with flushHeaders (ASCII head): same bytes', async () => {
    const { first, replay } = await firstAndReplay((res) => {
      res.writeHead(201, 'Cr\u00e9\u00e9');
      res.flushHeaders();
      res.end('x');
    });
    // The replay: Latin-1 (0xE9), as documented.
    expect(isReplay(replay)).toBe(true);
    expect(statusLine(replay).equals(line('HTTP/1.1 201 Cr\u00e9\u00e9'))).toBe(true);
    // The first client: the same bytes (it got 0xC3 0xA9, 'Ã©' read as Latin-1, before).
    expect(statusLine(first).equals(statusLine(replay))).toBe(true);
  });

  // FINDING (LOW, documented): `writeHead(201, '')` is a phrase Node takes and sends as an
  // empty reason (`HTTP/1.1 201 \r\n`), but an empty phrase is not recorded: the replay sends
  // `201 Created` (the http README's "Status line" lists it with phrases past 1,024
  // characters: replaying it would take `writeHead(status, '')` on every adapter, as
  // `statusMessage = ''` is the usual phrase to Node).
  it("documented: writeHead(201, '') (an empty phrase) is replayed as the usual phrase", async () => {
    const { first, replay } = await firstAndReplay((res) => {
      res.writeHead(201, '');
      res.end('x');
    });
    expect(statusLine(first).toString('latin1')).toBe('HTTP/1.1 201 ');
    expect(isReplay(replay)).toBe(true);
    expect(statusLine(replay).toString('latin1')).toBe('HTTP/1.1 201 Created');
  });
});

describe('reasonrev: phrases Node refuses', () => {
  for (const [name, phrase] of [
    ['CR/LF', 'Made\r\nX-Injected: 1'],
    ['NUL', 'Made\u0000'],
    ['a character past U+00FF', 'Made \u0101'],
  ] as const) {
    it(`${name} in writeHead: nothing recorded, the key released, no broken line`, async () => {
      app = (res) => {
        res.writeHead(201, phrase);
        res.end('never');
      };
      const key = `bad-${++serial}`;
      const before = runs;
      const first = await exchange(key);
      expect(first.toString('latin1')).toMatch(/^HTTP\/1\.1 500 Internal Server Error\r\n/);
      expect(first.toString('latin1')).not.toMatch(/x-injected/i);
      app = (res) => res.end('second');
      const retry = await exchange(key);
      expect(runs - before).toBe(2);
      expect(isReplay(retry)).toBe(false);
      expect(statusLine(retry).toString('latin1')).toBe('HTTP/1.1 200 OK');
    });

    it(`${name} as statusMessage with an implicit head: nothing recorded, the key released`, async () => {
      app = (res) => {
        res.statusCode = 201;
        res.statusMessage = phrase;
        res.end('never');
      };
      const key = `bad-${++serial}`;
      const before = runs;
      const first = await exchange(key);
      expect(first.toString('latin1')).toMatch(/^HTTP\/1\.1 500 Internal Server Error\r\n/);
      app = (res) => res.end('second');
      const retry = await exchange(key);
      expect(runs - before).toBe(2);
      expect(isReplay(retry)).toBe(false);
      expect(retry.toString('latin1')).toMatch(/\r\n\r\nsecond$/);
    });
  }
});

describe('reasonrev: a stored reason that HTTP cannot carry', () => {
  const invalid: [string, JsonValue][] = [
    ['CR/LF', 'Made\r\nX-Injected: 1'],
    ['LF', 'a\nX-Injected: 1'],
    ['NUL', 'a\u0000'],
    ['past U+00FF', '\u0101'],
    ['empty', ''],
    ['1,025 characters', 'z'.repeat(1025)],
    ['a number', 201],
    ['null', null],
    ['an object', { toString: 'x' }],
    ['an array', ['Made']],
  ];
  for (const prefix of ['mem', 'redis']) {
    for (const [name, reason] of invalid) {
      it(`${prefix}: ${name}: a 500 outcome-unreadable problem, no header injected`, async () => {
        app = (res) => {
          tamper = (meta) => {
            meta.reason = reason;
          };
          res.writeHead(201, 'Made');
          res.end('x');
        };
        const key = `${prefix === 'redis' ? 'redis' : 'tam'}-${++serial}`;
        const before = runs;
        const first = await exchange(key);
        expect(statusLine(first).toString('latin1')).toBe('HTTP/1.1 201 Made');
        app = () => {
          throw new Error('the handler ran again');
        };
        const replay = await exchange(key);
        const text = replay.toString('latin1');
        expect(text).toMatch(/^HTTP\/1\.1 500 Internal Server Error\r\n/);
        expect(text).toMatch(/outcome-unreadable/);
        expect(text).not.toMatch(/\r\nx-injected/i);
        expect(runs - before).toBe(1);
      });
    }

    it(`${prefix}: an outcome stored before this change (no reason) replays with the usual phrase`, async () => {
      const { first, replay } = await firstAndReplay(
        (res) => {
          tamper = (meta) => {
            delete meta.reason;
          };
          res.writeHead(201, 'Made');
          res.end('x');
        },
        prefix === 'redis' ? 'redis' : 'tam',
      );
      expect(statusLine(first).toString('latin1')).toBe('HTTP/1.1 201 Made');
      expect(statusLine(replay).toString('latin1')).toBe('HTTP/1.1 201 Created');
      expect(replay.toString('latin1')).toMatch(/\r\n\r\nx$/);
    });

    it(`${prefix}: Latin-1, tabs and spaces survive the store`, async () => {
      await sameLine(
        (res) => {
          res.writeHead(200, ' \u00e9\t\u00ff\u0080 ');
          res.end('x');
        },
        'HTTP/1.1 200  \u00e9\t\u00ff\u0080 ',
        prefix === 'redis' ? 'redis' : 'tam',
      );
    });
  }
});

describe('reasonrev: the outcome size limit', () => {
  it('a 1,024-character Latin-1 phrase counts in maxOutcomeBytes (1,500): not recorded, a 500 problem, never run again', async () => {
    const phrase = '\u00ff'.repeat(1024);
    warnings.length = 0;
    const { first, replay } = await firstAndReplay((res) => {
      res.writeHead(200, phrase);
      res.end('x');
    }, 'small');
    expect(statusLine(first).toString('latin1')).toBe(`HTTP/1.1 200 ${phrase}`);
    expect(replay.toString('latin1')).toMatch(/^HTTP\/1\.1 500 /);
    expect(replay.toString('latin1')).toMatch(/outcome-not-recorded/);
    expect(warnings.join('\n')).toMatch(/maxOutcomeBytes/);
  });

  it('the same phrase in ASCII fits (1,024 bytes of JSON less): replayed', async () => {
    const phrase = 'a'.repeat(1024);
    await sameLine(
      (res) => {
        res.writeHead(200, phrase);
        res.end('x');
      },
      `HTTP/1.1 200 ${phrase}`,
      'small',
    );
  });
});

/** One HTTP/2 exchange: status, headers and body. */
async function h2post(
  key: string,
): Promise<{ status: number; headers: Record<string, unknown>; body: string }> {
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
    return {
      status: Number(headers[':status']),
      headers,
      body: Buffer.concat(parts).toString(),
    };
  } finally {
    clearTimeout(timer);
    session.close();
  }
}

describe('reasonrev: HTTP/2', () => {
  // node:http2 warns once a process for a status message: this test runs before any app
  // here sets one over HTTP/2, so a warning from the replay would show.
  it('an outcome recorded over HTTP/1.1 with a phrase, replayed over HTTP/2: no warning, no crash', async () => {
    const seen: string[] = [];
    const onWarning = (warning: Error) => void seen.push(warning.message);
    process.on('warning', onWarning);
    try {
      app = (res) => {
        res.writeHead(201, 'Made \u00e9', { 'content-type': 'text/plain' });
        res.end('x');
      };
      const key = `r-${++serial}`;
      const first = await exchange(key);
      expect(statusLine(first).toString('latin1')).toBe('HTTP/1.1 201 Made \u00e9');
      app = () => {
        throw new Error('the handler ran again');
      };
      const replay = await h2post(key);
      expect(replay.status).toBe(201);
      expect(replay.headers['idempotent-replayed']).toBe('true');
      expect(replay.body).toBe('x');
      // And over HTTP/1.1 again, after the HTTP/2 replay.
      expect(statusLine(await exchange(key)).toString('latin1')).toBe('HTTP/1.1 201 Made \u00e9');
      await new Promise((resolve) => setImmediate(resolve));
      expect(seen.filter((message) => /status ?message/i.test(message))).toEqual([]);
    } finally {
      process.off('warning', onWarning);
    }
  });

  it('an app that sets a phrase over HTTP/2: none recorded, an HTTP/1.1 replay has the usual one', async () => {
    app = (res) => {
      res.writeHead(201, 'Made', { 'content-type': 'text/plain' });
      res.end('x');
    };
    const key = `r-${++serial}`;
    const before = runs;
    const first = await h2post(key);
    expect(first.status).toBe(201);
    app = () => {
      throw new Error('the handler ran again');
    };
    const replay = await exchange(key);
    expect(isReplay(replay)).toBe(true);
    expect(statusLine(replay).toString('latin1')).toBe('HTTP/1.1 201 Created');
    expect((await h2post(key)).status).toBe(201);
    expect(runs - before).toBe(1);
  });
});

/**
 * A published SSE stream with its own phrase: flushed head, one event, the end once a
 * duplicate attached. Answers the first client's, the attached client's and a replay's bytes.
 */
async function liveRun(
  head: (res: ServerResponse) => void,
): Promise<{ first: Buffer; attached: Buffer; replay: Buffer; key: string }> {
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
    res.write('id: 1\ndata: 1\n\n');
    flushedNow();
    const bound = setTimeout(attachedNow, 5_000);
    void attachedSeen.then(() => {
      clearTimeout(bound);
      setTimeout(() => res.end('id: 2\ndata: 2\n\n'), 100);
    });
  };
  const key = `live-${++serial}`;
  const before = runs;
  const firstDone = exchange(key);
  await flushed;
  onRespond = () => attachedNow();
  const attached = await exchange(key);
  onRespond = () => {};
  const first = await firstDone;
  app = () => {
    throw new Error('the handler ran again');
  };
  const replay = await exchange(key);
  expect(runs - before).toBe(1);
  return { first, attached, replay, key };
}

describe('reasonrev: a published live stream (text/event-stream)', () => {
  const sse = (res: ServerResponse) =>
    res.writeHead(200, 'Streaming \u00e9', {
      'content-type': 'text/event-stream',
      'x-a': '\u00e9',
    });

  it('the first client and a replay after the end get its phrase; an attached reader the usual one (as documented)', async () => {
    const { first, attached, replay } = await liveRun(sse);
    expect(statusLine(first).toString('latin1')).toBe('HTTP/1.1 200 Streaming \u00e9');
    expect(statusLine(attached).toString('latin1')).toBe('HTTP/1.1 200 OK');
    expect(isReplay(replay)).toBe(true);
    expect(statusLine(replay).equals(statusLine(first))).toBe(true);
    expect(replay.toString('latin1')).toMatch(/id: 1\ndata: 1\n\n[\s\S]*id: 2\ndata: 2\n\n/);
  });

  // FINDING (LOW, fixed: the resumed replay carries the reason): a replay of a completed event stream resumed with `Last-Event-ID` (or
  // naming its generation) is rebuilt by `replayDecision` in live-answers.ts as
  // `{ status, headers, chunks }`: the recorded `reason` is dropped, so it gets `200 OK`
  // while a plain replay of the same key gets `200 Streaming é`. The README's exception is
  // only for a client attached to a live stream. Fix: carry `reason: prepared.reason`.
  it('FINDING LOW (fixed): a replay of a completed stream resumed after Last-Event-ID keeps its phrase', async () => {
    const { first, key } = await liveRun(sse);
    // With the generation named: a resume after an event without one is refused (412) once
    // the store's fences are past 1, as they are for every key after the first here.
    const generation = /\r\nidempotent-generation: (\d+)\r\n/i.exec(first.toString('latin1'))?.[1];
    const resumed = await exchange(
      key,
      `Last-Event-ID: 1\r\nIdempotent-Generation: ${generation}\r\n`,
    );
    expect(isReplay(resumed)).toBe(true);
    expect(resumed.toString('latin1')).toMatch(/\r\n\r\n[\s\S]*id: 2\ndata: 2\n\n/);
    expect(resumed.toString('latin1')).not.toMatch(/id: 1\n/);
    expect(statusLine(resumed).toString('latin1')).toBe(statusLine(first).toString('latin1'));
  });

  it('FINDING LOW (fixed): the same, resumed by naming its generation only', async () => {
    const { first, key } = await liveRun(sse);
    const generation = /\r\nidempotent-generation: (\d+)\r\n/i.exec(first.toString('latin1'))?.[1];
    expect(generation).toBeDefined();
    const resumed = await exchange(key, `Idempotent-Generation: ${generation}\r\n`);
    expect(isReplay(resumed)).toBe(true);
    expect(statusLine(resumed).toString('latin1')).toBe(statusLine(first).toString('latin1'));
  });
});

describe('reasonrev: cost on the first execution', () => {
  /** Counts reads of `res.statusMessage` (Node's own reads included). */
  function counted(res: ServerResponse): { reads: () => number } {
    let value = res.statusMessage;
    let reads = 0;
    Object.defineProperty(res, 'statusMessage', {
      configurable: true,
      enumerable: true,
      get: () => {
        reads++;
        return value;
      },
      set: (next: string) => {
        value = next;
      },
    });
    return { reads: () => reads };
  }

  const body = (res: ServerResponse, at: number[], count: () => number) => {
    res.statusCode = 201;
    res.statusMessage = 'Made';
    res.write('a');
    at.push(count());
    for (let i = 0; i < 200; i++) res.write('b');
    res.end('c');
    at.push(count());
  };

  it('reads statusMessage once more than Node does, and never per chunk', async () => {
    // Without idem: Node's own reads.
    const plainAt: number[] = [];
    const plain = createServer((_req, res) => {
      const { reads } = counted(res);
      body(res, plainAt, reads);
    }).listen(0, '127.0.0.1');
    const running = await listening(plain as Server);
    await fetch(`${running.url}/`).then((r) => r.text());
    await running.close();

    const idemAt: number[] = [];
    const { first } = await firstAndReplay((res) => {
      const { reads } = counted(res);
      body(res, idemAt, reads);
    });
    expect(statusLine(first).toString('latin1')).toBe('HTTP/1.1 201 Made');
    expect(idemAt[1]).toBe(idemAt[0]);
    expect(plainAt[1]).toBe(plainAt[0]);
    expect((idemAt[1] as number) - (plainAt[1] as number)).toBeLessThanOrEqual(1);
  });
});
