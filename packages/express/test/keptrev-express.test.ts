import { randomUUID } from 'node:crypto';
import { connect } from 'node:net';
import { gzipSync } from 'node:zlib';
import { listening } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { timedOnCpu } from '../../../scripts/loop-lateness.js';
import { idempotency } from '../src/index.js';

// keptrev: attacks on 5958365 (keptBytesBody: kept req.rawBody checked against the
// Content-Length of an uncompressed body) through real Express parsers (body-parser 2 with
// `verify`) on loopback, idem after the parser. Requests are written on a raw socket so the
// framing headers (Content-Length, Content-Encoding, Transfer-Encoding) are exactly as given.

interface Reply {
  status: number;
  replayed: boolean;
  body: string;
}

let port = 0;
let close: () => Promise<void> = async () => {};
let runs = 0;
const uncaught: unknown[] = [];
const onUncaught = (error: unknown) => uncaught.push(error);

/** The chunked body of a response, decoded. */
function unchunk(data: Buffer): Buffer {
  const parts: Buffer[] = [];
  let at = 0;
  for (;;) {
    const eol = data.indexOf('\r\n', at);
    if (eol < 0) break;
    const size = Number.parseInt(data.subarray(at, eol).toString(), 16);
    if (!(size > 0)) break;
    parts.push(data.subarray(eol + 2, eol + 2 + size));
    at = eol + 2 + size + 2;
  }
  return Buffer.concat(parts);
}

/**
 * One request on a fresh socket, head lines as given (the request line and `Connection:
 * close` are added), then `body` as it is (already chunked when the head says so).
 */
function send(
  path: string,
  lines: string[],
  body: Buffer = Buffer.alloc(0),
  method = 'POST',
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    socket.setTimeout(5000, () => socket.destroy(new Error('timed out')));
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', reject);
    socket.on('close', () => {
      const all = Buffer.concat(chunks);
      const split = all.indexOf('\r\n\r\n');
      const head = all.subarray(0, split < 0 ? all.length : split).toString('latin1');
      const rest = split < 0 ? Buffer.alloc(0) : all.subarray(split + 4);
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0);
      const chunked = /\r\ntransfer-encoding: chunked/i.test(head);
      resolve({
        status,
        replayed: /\r\nidempotent-replayed:/i.test(head),
        body: (chunked ? unchunk(rest) : rest).toString(),
      });
    });
    socket.write(
      Buffer.concat([
        Buffer.from(
          `${method} ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n${lines.map((l) => `${l}\r\n`).join('')}\r\n`,
          'latin1',
        ),
        body,
      ]),
    );
  });
}

/** `body` as one chunk of a chunked body. */
const chunk = (body: Buffer) =>
  Buffer.concat([
    Buffer.from(`${body.length.toString(16)}\r\n`),
    body,
    Buffer.from('\r\n0\r\n\r\n'),
  ]);

/**
 * A `verify` that keeps the whole body as req.rawBody, or, when the request says `x-kept`,
 * something else in its place: its first 8 bytes (a signature window), a copy as a plain
 * Uint8Array, a view of the whole pool ArrayBuffer, the ArrayBuffer, the text, a Proxy.
 */
function keeper(req: express.Request, _res: unknown, buf: Buffer): void {
  const how = req.headers['x-kept'];
  let kept: unknown = buf;
  if (how === 'prefix') kept = Buffer.from(buf.subarray(0, 8));
  else if (how === 'uint8') kept = new Uint8Array(buf);
  else if (how === 'pool') kept = new Uint8Array(buf.buffer);
  else if (how === 'arraybuffer')
    kept = buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.length);
  else if (how === 'string') kept = buf.toString();
  else if (how === 'proxy') kept = new Proxy(buf, {});
  else if (how === 'lying') {
    // A Uint8Array that says it holds as many bytes as were sent, but holds 8.
    const sent = buf.length;
    kept = new (class extends Uint8Array {
      override get length() {
        return sent;
      }
    })(buf.subarray(0, 8));
  }
  (req as unknown as { rawBody: unknown }).rawBody = kept;
}

beforeAll(async () => {
  process.on('uncaughtException', onUncaught);
  process.on('unhandledRejection', onUncaught);
  const app = express();
  app.use('/form', express.urlencoded({ extended: true, verify: keeper }));
  app.use('/json', express.json({ verify: keeper }));
  app.use('/text', express.text({ verify: keeper }));
  app.use('/plaintext', express.text());
  app.use('/big', express.raw({ type: '*/*', limit: '64mb', verify: keeper }));
  app.use(
    idempotency({
      store: createMemoryStore(),
      scope: 'global',
      maxBodyBytes: 1_048_576,
      onWarning: () => {},
    }),
  );
  app.all(['/form', '/json', '/text', '/plaintext', '/big'], (req, res) => {
    runs++;
    res
      .status(201)
      .json({ run: runs, body: Buffer.isBuffer(req.body) ? null : (req.body ?? null) });
  });
  app.use(
    (error: Error, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
      const status = (error as { status?: number }).status ?? 500;
      res.status(status).json({ name: error.name, message: error.message.slice(0, 2000) });
    },
  );
  const running = await listening(app.listen(0, '127.0.0.1'));
  port = Number(new URL(running.url).port);
  close = running.close;
});
afterAll(async () => {
  await close();
  process.off('uncaughtException', onUncaught);
  process.off('unhandledRejection', onUncaught);
});

const FORM = 'Content-Type: application/x-www-form-urlencoded';
const ONE = Buffer.from('to=alice&amount=1');
const OTHER = Buffer.from('to=alice&amount=9999');
const BOM = Buffer.from([0xef, 0xbb, 0xbf]);
const key = () => `Idempotency-Key: ${randomUUID()}`;
const length = (body: Buffer) => `Content-Length: ${body.length}`;

/** The first body runs (201); the other under the same key must be 422, never replayed. */
async function expectTold(path: string, one: [string[], Buffer], two: [string[], Buffer]) {
  const k = key();
  const before = runs;
  const first = await send(path, [k, ...one[0]], one[1]);
  expect(first.status).toBe(201);
  const other = await send(path, [k, ...two[0]], two[1]);
  expect([other.status, other.replayed]).toEqual([422, false]);
  expect(runs).toBe(before + 1);
}

/** Refused (a 4xx/5xx, never replayed), nothing run. */
async function expectRefused(path: string, lines: string[], body: Buffer) {
  const before = runs;
  const r = await send(path, [key(), ...lines], body);
  expect(r.status).toBeGreaterThanOrEqual(400);
  expect(r.replayed).toBe(false);
  expect(runs).toBe(before);
  return r;
}

describe('keptrev express: Content-Encoding variants with a prefix kept', () => {
  const prefix = 'x-kept: prefix';

  for (const encoding of ['identity', 'IDENTITY', 'Identity']) {
    it(`held: Content-Encoding: ${encoding}, a prefix kept is refused (BodyAlreadyReadError)`, async () => {
      const r = await expectRefused(
        '/form',
        [FORM, prefix, length(ONE), `Content-Encoding: ${encoding}`],
        ONE,
      );
      expect(r.status).toBe(500);
      expect(JSON.parse(r.body).message).toMatch(/kept as req\.rawBody are 8 where 17 were sent/);
    });
  }

  it('held: Content-Encoding: "identity, gzip" and two identity headers are refused by body-parser (415), nothing run', async () => {
    for (const lines of [
      ['Content-Encoding: identity, gzip'],
      ['Content-Encoding: identity', 'Content-Encoding: identity'],
    ]) {
      const r = await expectRefused('/form', [FORM, prefix, length(ONE), ...lines], ONE);
      expect(r.status).toBe(415);
    }
  });

  // FINDING (LOW, fixed: an empty Content-Encoding is identity): an empty Content-Encoding header switches the check off while the body
  // is not compressed at all. body-parser reads `'' || 'identity'` as identity (no inflation,
  // raw-body even enforces the Content-Length), but declaredLength takes any encoding that
  // is not literally `identity` as "compressed, not measured". So with the very
  // prefix-keeping `verify` the fix was made for, "to=alice&amount=1" and
  // "to=alice&amount=9999" under one key with `Content-Encoding:` (empty) are one request:
  // the second is replayed the first's 201 instead of 422 (and with a Content-Length of 17
  // vs 20, which a correct check refuses both). Fix: treat an empty (or whitespace-only)
  // Content-Encoding as identity in declaredLength, as body-parser, inflation and co-body do;
  // better, measure unless the encoding is one a parser inflates.
  it('Content-Encoding: (empty), a prefix kept: refused or told apart (422)', async () => {
    // Refused now, as without the header: both 500, nothing run, nothing replayed.
    for (const body of [ONE, OTHER]) {
      const r = await expectRefused(
        '/form',
        [FORM, prefix, length(body), 'Content-Encoding:'],
        body,
      );
      expect(r.status).toBe(500);
    }
  });

  // FINDING (LOW, fixed as above): the same empty Content-Encoding switches off checkTextLength for
  // express.text without verify (the formrev2 BOM guard): "\uFEFFpay 10" and "pay 10" with
  // a Content-Length are one request again (replayed instead of 422), though body-parser
  // read them as identity and the Content-Length counts them.
  it('Content-Encoding: (empty), express.text strips a BOM: refused or told apart', async () => {
    const bommed = Buffer.concat([BOM, Buffer.from('pay 10')]);
    const plain = Buffer.from('pay 10');
    const TEXT = 'Content-Type: text/plain';
    // The stripped BOM is seen again: that body is refused (nothing run, the key stays free),
    // the plain one then runs under the same key, and the BOM body is refused again, never
    // replayed the plain one's answer.
    const k = key();
    const before = runs;
    const lines = (body: Buffer) => [k, TEXT, length(body), 'Content-Encoding:'];
    expect((await send('/plaintext', lines(bommed), bommed)).status).toBe(500);
    expect((await send('/plaintext', lines(plain), plain)).status).toBe(201);
    const again = await send('/plaintext', lines(bommed), bommed);
    expect([again.status, again.replayed]).toEqual([500, false]);
    expect(runs).toBe(before + 1);
  });

  // Was documented as left open (http README, formrev2), fixed: a compressed body's kept bytes
  // are not measured, so a prefix of the inflated bytes was taken; the bytes as sent, tapped
  // before the parser and inflated, are fingerprinted in their place now.
  it('(documented gap) gzip: a prefix of the inflated bytes kept: refused or told apart', async () => {
    const one = gzipSync(ONE);
    const two = gzipSync(OTHER);
    await expectTold(
      '/form',
      [[FORM, prefix, length(one), 'Content-Encoding: gzip'], one],
      [[FORM, prefix, length(two), 'Content-Encoding: gzip'], two],
    );
  });

  it('held: gzip with the whole inflated body kept: runs, replays the same text, 422s another', async () => {
    const k = key();
    const before = runs;
    const one = gzipSync(ONE);
    const a = await send('/form', [k, FORM, length(one), 'Content-Encoding: gzip'], one);
    expect(a.status).toBe(201);
    expect(JSON.parse(a.body).body).toEqual({ to: 'alice', amount: '1' });
    // The same body, compressed at another level, is the same request.
    const again = gzipSync(ONE, { level: 1 });
    const b = await send('/form', [k, FORM, length(again), 'Content-Encoding: gzip'], again);
    expect([b.status, b.replayed]).toEqual([201, true]);
    const two = gzipSync(OTHER);
    const c = await send('/form', [k, FORM, length(two), 'Content-Encoding: gzip'], two);
    expect([c.status, c.replayed]).toEqual([422, false]);
    expect(runs).toBe(before + 1);
  });
});

describe('keptrev express: Content-Length variants', () => {
  it('held: leading zeros (017) are 17: a prefix kept is refused, the whole body runs', async () => {
    const r = await expectRefused('/form', [FORM, 'x-kept: prefix', 'Content-Length: 017'], ONE);
    expect(JSON.parse(r.body).message).toMatch(/are 8 where 17 were sent/);
    await expectTold(
      '/form',
      [[FORM, 'Content-Length: 017'], ONE],
      [[FORM, 'Content-Length: 0020'], OTHER],
    );
  });

  for (const value of [
    '+17',
    '0x11',
    '-17',
    '17.0',
    '1_7',
    '17 17',
    '1e1',
    '99999999999999999999999',
  ]) {
    it(`held: Content-Length: ${value} is refused by Node's parser or idem, nothing run`, async () => {
      await expectRefused('/form', [FORM, 'x-kept: prefix', `Content-Length: ${value}`], ONE);
    });
  }

  it('held: two Content-Length headers (17 and 17, 17 and 8) are refused, nothing run', async () => {
    await expectRefused(
      '/form',
      [FORM, 'x-kept: prefix', 'Content-Length: 17', 'Content-Length: 17'],
      ONE,
    );
    await expectRefused('/form', [FORM, 'Content-Length: 8', 'Content-Length: 17'], ONE);
  });

  it('held: Content-Length with Transfer-Encoding: chunked is refused (400), nothing run', async () => {
    await expectRefused(
      '/form',
      [FORM, 'x-kept: prefix', 'Content-Length: 8', 'Transfer-Encoding: chunked'],
      chunk(ONE),
    );
  });

  it('held: a Content-Length past maxBodyBytes (kept whole by the parser) is 413', async () => {
    const body = Buffer.alloc(2_000_000, 0x61);
    const r = await expectRefused(
      '/big',
      ['Content-Type: application/octet-stream', length(body)],
      body,
    );
    expect(r.status).toBe(413);
  });

  // Was documented as left open, fixed: chunked kept bytes are not measured; the tapped bytes
  // are fingerprinted in their place.
  it('(documented gap) chunked: a prefix kept: refused or told apart', async () => {
    await expectTold(
      '/form',
      [[FORM, 'x-kept: prefix', 'Transfer-Encoding: chunked'], chunk(ONE)],
      [[FORM, 'x-kept: prefix', 'Transfer-Encoding: chunked'], chunk(OTHER)],
    );
  });
});

describe('keptrev express: what is kept', () => {
  it('held: a plain Uint8Array copy is the body: runs, 422s another', async () => {
    await expectTold(
      '/form',
      [[FORM, 'x-kept: uint8', length(ONE)], ONE],
      [[FORM, 'x-kept: uint8', length(OTHER)], OTHER],
    );
  });

  it('held: a Uint8Array over the whole pool ArrayBuffer is refused (its length is not the body)', async () => {
    const r = await expectRefused('/form', [FORM, 'x-kept: pool', length(ONE)], ONE);
    expect(r.status).toBe(500);
    expect(JSON.parse(r.body).name).toBe('BodyAlreadyReadError');
  });

  it('held: an ArrayBuffer or a string kept: a parsed form without bytes is refused (500)', async () => {
    for (const how of ['arraybuffer', 'string']) {
      const r = await expectRefused('/form', [FORM, `x-kept: ${how}`, length(ONE)], ONE);
      expect(r.status).toBe(500);
      expect(JSON.parse(r.body).name).toBe('BodyAlreadyReadError');
    }
  });

  it('held: a string kept with JSON: the parsed value is fingerprinted (runs, 422s another)', async () => {
    const J = 'Content-Type: application/json';
    const a = Buffer.from('{"amount":1}');
    const b = Buffer.from('{"amount":2}');
    await expectTold(
      '/json',
      [[J, 'x-kept: string', length(a)], a],
      [[J, 'x-kept: string', length(b)], b],
    );
  });

  it('held: a Proxy of the Buffer kept: a 5xx problem, nothing run, no crash', async () => {
    const r = await expectRefused('/form', [FORM, 'x-kept: proxy', length(ONE)], ONE);
    expect(r.status).toBeGreaterThanOrEqual(500);
    expect(r.body.length).toBeLessThan(2000);
  });

  // The app's own subclass lies about `length` (the check reads `length`): the fingerprint
  // still tells the two bodies apart (the lie reaches it too).
  it('held: a Uint8Array subclass whose length getter lies: told apart (422)', async () => {
    const k = key();
    const a = await send('/form', [k, FORM, 'x-kept: lying', length(ONE)], ONE);
    const b = await send('/form', [k, FORM, 'x-kept: lying', length(OTHER)], OTHER);
    expect(a.status).toBe(201);
    expect([b.status, b.replayed]).toEqual([422, false]);
  });
});

describe('keptrev express: exactly once around a refusal', () => {
  it('held: a refused request runs nothing and keeps no key: the correct retry runs once', async () => {
    const k = key();
    const before = runs;
    const refused = await send('/form', [k, FORM, 'x-kept: prefix', length(ONE)], ONE);
    expect(refused.status).toBe(500);
    expect(runs).toBe(before);
    // Refused again (not a 409 "in progress"): nothing was left behind under the key.
    const again = await send('/form', [k, FORM, 'x-kept: prefix', length(ONE)], ONE);
    expect(again.status).toBe(500);
    const retry = await send('/form', [k, FORM, length(ONE)], ONE);
    expect([retry.status, retry.replayed]).toEqual([201, false]);
    const replay = await send('/form', [k, FORM, length(ONE)], ONE);
    expect([replay.status, replay.replayed]).toEqual([201, true]);
    const other = await send('/form', [k, FORM, length(OTHER)], OTHER);
    expect([other.status, other.replayed]).toEqual([422, false]);
    expect(runs).toBe(before + 1);
  });
});

/**
 * Runs `exchange` (client and server both in this process) and expects it within `boundMs`
 * of the event loop thread's own time: its wall time less the time that thread waited for a
 * core (see timedOnCpu), and the CPU the process spent. On CI's two cores at a load of 25 and
 * more the gzip case took 2.5 s of wall time for about 0.1 s of work, the rest waiting for a
 * core. Work on the body that grows with its size (a copy, a decode or a digest of all 8 MB,
 * or worse) and a wait (a timer, a read of a body already consumed) both still count in full.
 */
async function withinBound<T>(boundMs: number, exchange: () => Promise<T>): Promise<T> {
  const { result, wallMs, waitedMs, cpuMs } = await timedOnCpu(exchange);
  console.log('keptrev bound', { wallMs, waitedMs, cpuMs });
  expect(cpuMs).toBeLessThan(boundMs);
  expect(wallMs - waitedMs).toBeLessThan(boundMs);
  return result;
}

describe('keptrev express: bounds', () => {
  it('held: 5 MB kept under chunked is 413 within 2 s, nothing run', async () => {
    const r = await withinBound(2_000, () =>
      expectRefused(
        '/big',
        ['Content-Type: application/octet-stream', 'Transfer-Encoding: chunked'],
        chunk(Buffer.alloc(5 * 1024 * 1024, 0x61)),
      ),
    );
    expect(r.status).toBe(413);
    expect(r.body.length).toBeLessThan(2000);
  });

  it('held: a 5 KB gzip of 8 MB (kept inflated) is 413 within 2 s, nothing run', async () => {
    const bomb = gzipSync(Buffer.alloc(8 * 1024 * 1024));
    const r = await withinBound(2_000, () =>
      expectRefused(
        '/big',
        ['Content-Type: application/octet-stream', 'Content-Encoding: gzip', length(bomb)],
        bomb,
      ),
    );
    expect(r.status).toBe(413);
  });

  it('held: refusal messages stay short (no body in them)', async () => {
    const big = Buffer.alloc(200_000, 0x61);
    const body = Buffer.concat([Buffer.from('a='), big]);
    const r = await expectRefused(
      '/big',
      ['Content-Type: application/octet-stream', 'x-kept: prefix', length(body)],
      body,
    );
    expect(r.status).toBe(500);
    expect(r.body.length).toBeLessThan(1000);
  });

  it('held: no uncaught exception or unhandled rejection in this file', () => {
    expect(uncaught).toEqual([]);
  });
});
