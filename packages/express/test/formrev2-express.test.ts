import { randomUUID } from 'node:crypto';
import { request } from 'node:http';
import { gzipSync } from 'node:zlib';
import { listening } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// formrev2: attacks on cf3d9b3/dd8c060 (kept bytes first; parsed non-JSON objects refused;
// parsed text whose UTF-8 length differs from Content-Length refused) through real Express
// parsers on loopback, idem after the parser.

interface Reply {
  status: number;
  replayed: boolean;
  body: string;
}

let url = '';
let close: () => Promise<void> = async () => {};
let runs = 0;
const uncaught: unknown[] = [];
const onUncaught = (error: unknown) => uncaught.push(error);

/**
 * One request on a fresh connection. `body: undefined` sends none; `chunked` sends it with
 * Transfer-Encoding: chunked (no Content-Length), else with a Content-Length.
 */
function raw(
  path: string,
  key: string,
  body: Buffer | undefined,
  headers: Record<string, string>,
  opts: { chunked?: boolean; method?: string } = {},
): Promise<Reply> {
  const all: Record<string, string> = { 'idempotency-key': key, ...headers };
  if (body !== undefined) {
    if (opts.chunked) all['transfer-encoding'] = 'chunked';
    else all['content-length'] = String(body.length);
  }
  return new Promise((resolve, reject) => {
    const req = request(
      new URL(path, url),
      { method: opts.method ?? 'POST', headers: all, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            replayed: res.headers['idempotent-replayed'] !== undefined,
            body: Buffer.concat(chunks).toString(),
          }),
        );
      },
    );
    req.setTimeout(5000, () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    if (body !== undefined && body.length > 0) req.write(body);
    req.end();
  });
}

beforeAll(async () => {
  process.on('uncaughtException', onUncaught);
  process.on('unhandledRejection', onUncaught);
  const app = express();
  app.use('/text', express.text());
  app.use('/text16', express.text({ defaultCharset: 'utf-16le' }));
  app.use('/form', express.urlencoded({ extended: true }));
  app.use('/anytype', express.urlencoded({ extended: true, type: '*/*' }));
  app.use('/json', express.json({ type: ['application/json', 'application/*+json'] }));
  app.use(
    '/partial',
    express.urlencoded({
      extended: true,
      // A verify that keeps only a prefix (a signature check over a header-sized window).
      verify: (req, _res, buf) => {
        (req as unknown as { rawBody: Buffer }).rawBody = Buffer.from(buf.subarray(0, 8));
      },
    }),
  );
  app.use('/cycle', (req, _res, next) => {
    // A custom parser that builds a value with a cycle (a parent link).
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const node: Record<string, unknown> = { text: Buffer.concat(chunks).toString() };
      node.self = { parent: node };
      req.body = node;
      next();
    });
  });
  app.use('/throwing', (req, _res, next) => {
    req.resume();
    req.on('end', () => {
      req.body = {
        get amount(): number {
          throw new RangeError('getter exploded');
        },
      };
      next();
    });
  });
  app.use('/dag', (req, _res, next) => {
    req.resume();
    req.on('end', () => {
      // What a YAML parser makes of aliases (js-yaml 4 `load` of an 874-byte document
      // `l0: &l0 [x, x]`, `l1: &l1 [*l0, *l0]`, ... gives 2^40 leaves in 2 ms): shared
      // subtrees, no cycle. 2^23 leaves here, so the test ends in seconds.
      let node: unknown = 'x';
      for (let i = 0; i < 23; i++) node = [node, node];
      req.body = node;
      next();
    });
  });
  app.use('/proxy', (req, _res, next) => {
    req.resume();
    req.on('end', () => {
      req.body = new Proxy(
        {},
        {
          ownKeys() {
            throw new Error('ownKeys trap');
          },
          getPrototypeOf() {
            throw new Error('getPrototypeOf trap');
          },
        },
      );
      next();
    });
  });
  app.use('/bigint', (req, _res, next) => {
    req.resume();
    req.on('end', () => {
      req.body = { amount: 10n };
      next();
    });
  });
  // The control of the charset test: the same parser, no idem (registered before it).
  app.post(
    '/json-plain',
    express.json({ type: ['application/json', 'application/*+json'] }),
    (req, res) => {
      res.status(201).json({ body: req.body ?? null });
    },
  );
  app.use(idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }));
  const route = (req: express.Request, res: express.Response) => {
    runs++;
    res.status(201).json({ run: runs, body: req.body ?? null });
  };
  app.all(
    [
      '/text',
      '/text16',
      '/form',
      '/anytype',
      '/json',
      '/partial',
      '/cycle',
      '/throwing',
      '/bigint',
      '/dag',
      '/proxy',
    ],
    route,
  );
  app.use(
    (error: Error, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
      const status = (error as { status?: number }).status ?? 500;
      res.status(status).json({ name: error.name, message: error.message });
    },
  );
  const running = await listening(app.listen(0, '127.0.0.1'));
  url = running.url;
  close = running.close;
});
afterAll(async () => {
  await close();
  process.off('uncaughtException', onUncaught);
  process.off('unhandledRejection', onUncaught);
});

const TEXT = { 'content-type': 'text/plain' };
const FORM = { 'content-type': 'application/x-www-form-urlencoded' };
const BOM = Buffer.from([0xef, 0xbb, 0xbf]);

/** The first body runs (201); the other body under the same key must be 422, never replayed. */
async function expectTold(
  path: string,
  one: Buffer,
  two: Buffer,
  headers: Record<string, string>,
  opts: { chunked?: boolean } = {},
) {
  const key = randomUUID();
  const before = runs;
  const first = await raw(path, key, one, headers, opts);
  expect(first.status).toBe(201);
  const other = await raw(path, key, two, headers, opts);
  expect(other.replayed).toBe(false);
  expect(other.status).toBe(422);
  expect(runs).toBe(before + 1);
}

describe('formrev2 express: the length check is skipped where the bytes are not counted', () => {
  it('held: with a Content-Length, a BOM express.text strips is refused', async () => {
    const key = randomUUID();
    const r = await raw('/text', key, Buffer.concat([BOM, Buffer.from('pay 10')]), TEXT);
    expect(r.status).toBe(500);
    expect(JSON.parse(r.body).name).toBe('BodyAlreadyReadError');
  });

  // Was FINDING (LOW), fixed (the bytes as sent are tapped before the parser and fingerprinted
  // in place of the text it kept, see tapRequestBodies): checkTextLength returns early when there is no Content-Length, so under
  // Transfer-Encoding: chunked express.text's stripped BOM goes unseen: "\uFEFFpay 10" and
  // "pay 10" fingerprint alike and the second is replayed the first's outcome (201,
  // Idempotent-Replayed) instead of 422. The app sees the same text, so the harm is the
  // broken contract (different bytes -> 422) rather than a wrong answer; the same rule that
  // refuses it with a Content-Length should hold here. Fix: without a countable length
  // (chunked, Content-Encoding), refuse a parsed text whose parser may strip a BOM or decode
  // with a charset (i.e. require req.rawBody), or count the bytes off the socket.
  it('chunked: a leading BOM and none are told apart (or refused)', async () => {
    await expectTold(
      '/text',
      Buffer.concat([BOM, Buffer.from('pay 10')]),
      Buffer.from('pay 10'),
      TEXT,
      {
        chunked: true,
      },
    );
  });

  // Was FINDING (LOW), fixed (the tapped bytes, inflated as the parser does): the same with Content-Encoding: gzip (the check is skipped for any
  // encoding but identity; express.text inflates by default).
  it('gzip: a leading BOM and none are told apart (or refused)', async () => {
    await expectTold(
      '/text',
      gzipSync(Buffer.concat([BOM, Buffer.from('pay 10')])),
      gzipSync(Buffer.from('pay 10')),
      { ...TEXT, 'content-encoding': 'gzip' },
    );
  });

  // Was FINDING (LOW), fixed (the tapped bytes): express.text({ defaultCharset: 'utf-16le' }) with a Content-Type naming
  // no charset: checkCharset sees none, and chunked skips the length check. UTF-16LE drops an
  // odd trailing byte, so "abX" and "abY" decode alike and the second is replayed.
  it('chunked utf-16le default charset: an odd trailing byte is not lost', async () => {
    await expectTold('/text16', Buffer.from('abX'), Buffer.from('abY'), TEXT, { chunked: true });
  });

  // Was FINDING (LOW), fixed (the tapped bytes, once the length guard passed): the length guard is meant to catch another charset's decoding, but
  // UTF-16LE maps two ASCII bytes to one CJK character that is three bytes in UTF-8: "abX"
  // (Content-Length 3) decodes to "\u6261" (X dropped), 3 bytes as UTF-8, so the guard
  // passes and "abY" is replayed "abX"'s outcome. Fix: the length guard cannot prove a
  // faithful decoding; refuse a parsed non-ASCII string under a non-JSON type unless its
  // bytes are kept (req.rawBody), or at least refuse text holding characters a UTF-16
  // decoding of ASCII makes (the check cannot know express.text's defaultCharset).
  it('utf-16le default charset with a Content-Length: an odd byte is not lost', async () => {
    await expectTold('/text16', Buffer.from('abX'), Buffer.from('abY'), TEXT);
  });
});

describe('formrev2 express: a charset idem reads differently from body-parser', () => {
  // checkCharset takes the first `charset=` the regex finds, even inside a quoted parameter
  // value; body-parser 2 (content-type 2) parses parameters and takes the real one. So
  // `; foo="; charset=utf-8"; charset=utf-16le` is UTF-8 to idem and UTF-16LE to the parser.
  const SNEAKY = '; foo="; charset=utf-8"; charset=utf-16le';
  const utf16 = (text: string, tail: number) =>
    Buffer.concat([Buffer.from(text, 'utf16le'), Buffer.from([tail])]);

  it('held: a plain charset=utf-16le is refused', async () => {
    const r = await raw('/json', randomUUID(), utf16('{"amount":1}', 0x78), {
      'content-type': 'application/json; charset=utf-16le',
    });
    expect(r.status).toBe(500);
    expect(JSON.parse(r.body).name).toBe('BodyAlreadyReadError');
  });

  it('setup: without idem, body-parser decodes the sneaky type as UTF-16LE (the app sees the JSON)', async () => {
    const r = await raw('/json-plain', randomUUID(), Buffer.from('{"amount":1}', 'utf16le'), {
      'content-type': `application/json${SNEAKY}`,
    });
    expect(r.status).toBe(201);
    expect(JSON.parse(r.body).body).toEqual({ amount: 1 });
  });

  // FIXED (was FINDING LOW; rev10b: Content-Type parameters read per RFC 9110): charsetOf's
  // regex matched `charset=` inside a quoted parameter value, so checkCharset passed a body
  // express.json decodes as UTF-16LE; JSON skips the length guard, and UTF-16LE drops an odd
  // trailing byte: two different bodies (…0x78 / …0x79) parsed alike and the second was
  // replayed instead of 422. idem now reads the real charset, UTF-16LE, and refuses both
  // bodies as it refuses a plain charset=utf-16le: nothing runs, nothing is replayed.
  it('a charset hidden behind a quoted parameter: both bodies refused, never one replayed for the other', async () => {
    const type = { 'content-type': `application/json${SNEAKY}` };
    const key = randomUUID();
    const before = runs;
    for (const body of [utf16('{"amount":1}', 0x78), utf16('{"amount":1}', 0x79)]) {
      const r = await raw('/json', key, body, type);
      expect(r.status).toBe(500);
      expect(r.replayed).toBe(false);
      expect(JSON.parse(r.body).name).toBe('BodyAlreadyReadError');
    }
    expect(runs).toBe(before);
  });
});

describe('formrev2 express: body-less requests and a parser {}', () => {
  it('held: Content-Length: 0 form is taken (201) and replayed to itself', async () => {
    const key = randomUUID();
    const first = await raw('/form', key, Buffer.alloc(0), FORM);
    expect(first.status).toBe(201);
    const again = await raw('/form', key, Buffer.alloc(0), FORM);
    expect(again.status).toBe(201);
    expect(again.replayed).toBe(true);
  });

  it('held: a body-less form and a real form that parses to {} are never one request', async () => {
    const key = randomUUID();
    const first = await raw('/form', key, Buffer.alloc(0), FORM);
    expect(first.status).toBe(201);
    // "=1" parses to {} through qs: refused (500), never replayed the body-less answer.
    const other = await raw('/form', key, Buffer.from('=1'), FORM);
    expect(other.replayed).toBe(false);
    expect(other.status).toBe(500);
  });

  // Was FINDING (LOW, false refusal), fixed (a body that ended without a byte is none): a chunked request with zero body bytes declares a body
  // (Transfer-Encoding), so the parser's {} for it is refused as a lossy parsed form (500),
  // while the same empty body with Content-Length: 0 is taken. Fix: no safe rule on the
  // value alone (qs also gives {} for "=1", which must not become "none"); document that an
  // empty chunked form after a parser needs the bytes kept (verify -> req.rawBody, which
  // then runs) or idem mounted before the parser, and say so in the 500's message.
  it('chunked empty form is taken, not refused', async () => {
    const r = await raw('/form', randomUUID(), Buffer.alloc(0), FORM, { chunked: true });
    expect(r.status).toBe(201);
  });

  it('held: GET and DELETE without a body run', async () => {
    for (const method of ['GET', 'DELETE']) {
      const r = await raw('/json', randomUUID(), undefined, {}, { method });
      expect(r.status).toBe(201);
    }
  });

  it('held: DELETE with Content-Length: 0 and a JSON type runs', async () => {
    const r = await raw(
      '/json',
      randomUUID(),
      Buffer.alloc(0),
      {
        'content-type': 'application/json',
      },
      { method: 'DELETE' },
    );
    expect(r.status).toBe(201);
  });
});

describe('formrev2 express: JSON-ish types are still JSON', () => {
  for (const type of [
    'application/json; charset=utf-8',
    'application/json;charset="UTF-8"',
    'application/merge-patch+json',
    'application/vnd.x+json',
    'APPLICATION/JSON',
  ]) {
    it(`held: ${type} runs, replays its own body and 422s another`, async () => {
      const key = randomUUID();
      const h = { 'content-type': type };
      const first = await raw('/json', key, Buffer.from('{"a":1,"b":2}'), h);
      expect(first.status).toBe(201);
      const same = await raw('/json', key, Buffer.from('{ "b":2, "a":1 }'), h);
      expect(same.status).toBe(201);
      expect(same.replayed).toBe(true);
      const other = await raw('/json', key, Buffer.from('{"a":1,"b":3}'), h);
      expect(other.status).toBe(422);
    });
  }

  it('held: chunked JSON works without rawBody', async () => {
    await expectTold(
      '/json',
      Buffer.from('{"a":1}'),
      Buffer.from('{"a":2}'),
      {
        'content-type': 'application/json',
      },
      { chunked: true },
    );
  });
});

describe('formrev2 express: a form parser told to parse every type', () => {
  it('held: under a form or text type the parsed object is refused (500)', async () => {
    const r = await raw('/anytype', randomUUID(), Buffer.from('amount=10&=1'), TEXT);
    expect(r.status).toBe(500);
    expect(JSON.parse(r.body).name).toBe('BodyAlreadyReadError');
  });

  // Was FINDING (LOW), fixed (tappedUnlessJson: an object made of a JSON-typed body that does
  // not start with { or [, which no JSON parser made, is fingerprinted by the tapped bytes;
  // the usual JSON body is not looked at twice). The refusal is "decided by what was parsed" only for non-JSON types: a
  // client that labels a form body application/json, sent to express.urlencoded({ type:
  // '*/*' }) mounted before idem, has qs's object taken as a JSON value, so qs's losses come
  // back: "amount=10&=1" and "amount=10&=9999" both parse to { amount: '10' } and the
  // second is replayed. (The app sees the same object, so the harm is the broken 422
  // contract.) Fix: idem cannot tell a JSON parser's object from a form parser's by the
  // value; document that a parser with a catch-all `type` needs the bytes kept (verify ->
  // req.rawBody), and consider refusing a parsed object under a JSON type when the body-parser
  // that made it is not a JSON parser (not knowable) — realistically: document the gap.
  it('a form labelled application/json through a */* form parser: told apart', async () => {
    await expectTold('/anytype', Buffer.from('amount=10&=1'), Buffer.from('amount=10&=9999'), {
      'content-type': 'application/json',
    });
  });
});

describe('formrev2 express: kept bytes that are not the body', () => {
  // Was FINDING (MEDIUM), fixed: kept bytes that are not as many as the Content-Length says (no Content-Encoding) are refused (BodyAlreadyReadError, nothing run): req.rawBody was trusted as the whole body whenever it is a Buffer and
  // the stream ended. A verify that keeps only part of the body (a prefix, a signature
  // window) makes two forms that differ after byte 8 one request: the second is replayed
  // the first's outcome although the app parsed a different amount. The Content-Length (for
  // an uncompressed body) says how many bytes were sent. Fix: when the request has a
  // Content-Length and no Content-Encoding, refuse (BodyAlreadyReadError) a rawBody whose
  // length differs from it.
  it('a partial rawBody is not taken as the body', async () => {
    const before = runs;
    const key = randomUUID();
    for (const body of ['to=alice&amount=1', 'to=alice&amount=9999']) {
      const r = await raw('/partial', key, Buffer.from(body), FORM);
      expect(r.status).toBe(500);
      expect(JSON.parse(r.body).message).toMatch(/kept as req\.rawBody are 8 where \d+ were sent/);
    }
    expect(runs).toBe(before);
  });
});

describe('formrev2 express: values a custom parser makes', () => {
  it('held: a cycle gives a clear 500, nothing run', async () => {
    const before = runs;
    const r = await raw('/cycle', randomUUID(), Buffer.from('{"a":1}'), {
      'content-type': 'application/json',
    });
    expect(r.status).toBe(500);
    const problem = JSON.parse(r.body);
    expect(problem.name).toBe('BodyAlreadyReadError');
    expect(problem.message).toMatch(/no JSON text/);
    expect(runs).toBe(before);
  });

  it('held: a BigInt gives a clear 500, nothing run', async () => {
    const before = runs;
    const r = await raw('/bigint', randomUUID(), Buffer.from('{"a":1}'), {
      'content-type': 'application/json',
    });
    expect(r.status).toBe(500);
    expect(JSON.parse(r.body).name).toBe('BodyAlreadyReadError');
    expect(runs).toBe(before);
  });

  it('held: a getter that throws gives a 500, nothing run, no crash', async () => {
    const before = runs;
    const r = await raw('/throwing', randomUUID(), Buffer.from('{"a":1}'), {
      'content-type': 'application/json',
    });
    expect(r.status).toBe(500);
    expect(runs).toBe(before);
  });

  // Was FINDING (MEDIUM, availability), fixed: jsonTextOf counts the values first and stops at the length limit (each writes at least one character): jsonTextOf called JSON.stringify on the parsed value
  // before any bound, so a value with shared subtrees (a YAML parser's aliases, for a service
  // that takes JSON or YAML through one parser under application/json) is written out in
  // full: time doubles with every alias level (2^21 leaves ~1.5 s, 2^24 ~23 s measured on
  // bodyFromParsed directly; 40 levels, an 874-byte body, block the event loop for minutes
  // until V8's string limit throws and the bounded walk then answers 413). Non-JSON types
  // are refused before the walk; JSON-labelled ones are not. Fix: never call an unbounded
  // JSON.stringify on a parsed value: use the iterative writer (which stops at maxLength)
  // first, or bound a pre-walk by node count (≈ limit) before JSON.stringify.
  //
  // Judged by the CPU this process spent on the request, not by the wall clock: the finding is
  // work done on the event loop (the write-out of 2^23 leaves is seconds of CPU), and the
  // server runs in this process. On CI's two cores at a load of 25 the answer came after 592 ms
  // of wall time for about a tenth of that in CPU; a wall bound measured the machine. Lateness
  // of the loop cannot be discounted instead: the regression makes the loop late itself.
  it('a value with shared subtrees (2^23 leaves) is 413 after under 500 ms of CPU, nothing run', async () => {
    const before = runs;
    const cpu = process.cpuUsage();
    const started = performance.now();
    const r = await raw('/dag', randomUUID(), Buffer.from('{"a":1}'), {
      'content-type': 'application/json',
    });
    const spent = process.cpuUsage(cpu);
    const cpuMs = (spent.user + spent.system) / 1_000;
    console.log('formrev2 dag', { wallMs: Math.round(performance.now() - started), cpuMs });
    expect(runs).toBe(before);
    expect(r.status).toBe(413);
    expect(cpuMs).toBeLessThan(500);
    expect(runs).toBe(before);
  });

  it('held: a Proxy whose traps throw gives a 500, nothing run, no crash', async () => {
    const before = runs;
    const r = await raw('/proxy', randomUUID(), Buffer.from('{"a":1}'), {
      'content-type': 'application/json',
    });
    expect(r.status).toBe(500);
    expect(runs).toBe(before);
  });

  it('held: no uncaught exception or unhandled rejection in this file', () => {
    expect(uncaught).toEqual([]);
  });
});
