import { createRequire } from 'node:module';
import { type GotReply, listening, postGot } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import express from 'express';
import { afterAll, describe, expect, it } from 'vitest';
import { type ExpressIdempotencyOptions, idempotency } from '../src/index.js';

// fprev23: adversarial review of @idem/http's request fingerprint (request-fingerprint.ts,
// json-text.ts, request-body.ts, `fingerprint.defaultCharset`) as merged in ba78d18f and
// c304bb7a, through real Express 5 apps on loopback: idem first, then the parsers Express
// ships (body-parser 2: `express.text()`, `express.json()`, content-type 2 + iconv-lite).
// A finding shows the route seeing two different bodies (the second under a fresh key) where
// one key replayed the first one's outcome to the second. Attacks that held are `it`;
// findings say FINDING with a severity (HIGH/MEDIUM fixed: `it`; LOW kept `it.fails`).

const closers: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const close of closers.splice(0)) await close();
});

/** idem (global scope), then `parser`, then a route answering 201 `{ got: req.body }`. */
async function appWith(
  parser: express.RequestHandler,
  fingerprint?: ExpressIdempotencyOptions['fingerprint'],
) {
  const app = express();
  app.use(
    idempotency({
      store: createMemoryStore(),
      scope: 'global',
      onWarning: () => {},
      ...(fingerprint ? { fingerprint } : {}),
    }),
  );
  app.use(parser);
  let runs = 0;
  app.post('/x', (req, res) => {
    runs++;
    res.status(201).json({ got: req.body ?? null });
  });
  const running = await listening(app.listen(0, '127.0.0.1'));
  closers.push(running.close);
  const post = (key: string, body: Buffer | string, contentType: string): Promise<GotReply> =>
    postGot(running.url, '/x', key, Buffer.from(body), contentType);
  return { post, runs: () => runs };
}

const textForAll = () => express.text({ type: () => true });
const cafe = Buffer.from('caf\u00e9', 'utf8'); // é as C3 A9

describe('charset lists: a comma in a quoted charset', () => {
  // FINDING HIGH (isolation; fixed): a charset named twice was fingerprinted as the names
  // joined with `,`, and so was one quoted name holding a comma: `charset="iso-8859-1,5"` and
  // `charset=iso-8859-1; charset=5` were one request. iconv-lite reads the first as
  // ISO-8859-15 (it drops what is not a letter or digit: `iso885915`), body-parser (content-type
  // 2: the first of a repeated parameter) the second as ISO-8859-1: the byte A4 is `€` to one
  // and `¤` to the other, and the second was replayed the first one's outcome. 26 more names
  // split so (`"utf-16,le"`, `"latin1,0"`, `"koi8r,u"`, `"mac,greek"`, ...).
  it('`charset="iso-8859-1,5"` then `charset=iso-8859-1; charset=5`, the same bytes: 422, not a replay', async () => {
    const app = await appWith(textForAll());
    const body = Buffer.from([0x70, 0xa4]);
    const quoted = 'text/plain; charset="iso-8859-1,5"';
    const twice = 'text/plain; charset=iso-8859-1; charset=5';
    expect(await app.post('k-list', body, quoted)).toEqual({
      status: 201,
      replayed: false,
      got: 'p\u20ac',
    });
    // The route, under a key of its own, sees the second otherwise.
    expect((await app.post('k-list-fresh', body, twice)).got).toBe('p\u00a4');
    const second = await app.post('k-list', body, twice);
    // Observed before the fix: 201, replayed, got 'p€'.
    expect([second.status, second.replayed]).toEqual([422, false]);
    expect(app.runs()).toBe(2);
  });
});

describe('whitespace that is not OWS: U+00A0 (the byte A0) around the media type and its parameters', () => {
  // FINDING HIGH (isolation; fixed): a parameter list that did not parse was fingerprinted as
  // sent but trimmed by String#trim, which takes U+00A0: `text/plain;\u00a0charset=latin1`
  // (for content-type 2 a parameter named `\u00a0charset`: no charset, UTF-8) fingerprinted as
  // `text/plain;charset=latin1` (Latin-1). The route reads C3 A9 as `café` and as `cafÃ©`;
  // under one key the second was replayed the first one's outcome.
  it('`text/plain;\\u00a0charset=latin1` then `text/plain;charset=latin1`: 422, not a replay', async () => {
    const app = await appWith(textForAll());
    const first = await app.post('k-nbsp-param', cafe, 'text/plain;\u00a0charset=latin1');
    expect(first).toEqual({ status: 201, replayed: false, got: 'caf\u00e9' });
    expect((await app.post('k-nbsp-param-fresh', cafe, 'text/plain;charset=latin1')).got).toBe(
      'caf\u00c3\u00a9',
    );
    const second = await app.post('k-nbsp-param', cafe, 'text/plain;charset=latin1');
    // Observed before the fix: 201, replayed, got 'café'.
    expect([second.status, second.replayed]).toEqual([422, false]);
  });

  // FINDING HIGH (isolation; fixed): the media type was trimmed by String#trim (and a JSON type
  // matched with `\s`), so `application/json\u00a0` was fingerprinted as `application/json`.
  // type-is (body-parser, Koa) finds no media type in it: express.json() leaves it unparsed,
  // the route sees no body. A client whose first try's type had the stray byte got the route's
  // answer to no body, and its corrected retry of the same key, which the route would have
  // read, was replayed that answer: the order was never placed.
  it('`application/json\\u00a0` (not parsed: no body) then `application/json`, the same JSON: 422, not a replay', async () => {
    const app = await appWith(express.json());
    const order = '{"amount":5}';
    expect(await app.post('k-nbsp-type', order, 'application/json\u00a0')).toEqual({
      status: 201,
      replayed: false,
      got: null,
    });
    expect((await app.post('k-nbsp-type-fresh', order, 'application/json')).got).toEqual({
      amount: 5,
    });
    const second = await app.post('k-nbsp-type', order, 'application/json');
    // Observed before the fix: 201, replayed, got null.
    expect([second.status, second.replayed]).toEqual([422, false]);
    // Leading, and text types: the same.
    expect((await app.post('k-nbsp-lead', order, '\u00a0application/json')).got).toBeNull();
    expect((await app.post('k-nbsp-lead', order, 'application/json')).status).toBe(422);
  });

  it('held: OWS (SP, HTAB) around the type and the parameters is nothing: one request, read alike', async () => {
    const app = await appWith(textForAll());
    const first = await app.post('k-ows', cafe, 'text/plain ;\tcharset = latin1 ');
    expect(first.got).toBe('caf\u00c3\u00a9');
    for (const same of ['text/plain;charset=latin1', 'TEXT/PLAIN; Charset="LATIN1"']) {
      const retry = await app.post('k-ows', cafe, same);
      expect([retry.status, retry.replayed, retry.got]).toEqual([201, true, 'caf\u00c3\u00a9']);
    }
  });
});

describe('what held: JSON as express.json() reads it', () => {
  it('held: a UTF-8 BOM before JSON is stripped by body-parser (iconv-lite) as by idem (TextDecoder): one request', async () => {
    const app = await appWith(express.json());
    const plain = Buffer.from('{"a":1}');
    const bom = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), plain]);
    expect((await app.post('k-bom-fresh', bom, 'application/json')).got).toEqual({ a: 1 });
    expect((await app.post('k-bom', plain, 'application/json')).status).toBe(201);
    const retry = await app.post('k-bom', bom, 'application/json');
    expect([retry.status, retry.replayed]).toEqual([201, true]);
  });

  it('held: `\\u0061` and `a`, spacing and member order read alike; a repeated member, a number past 2^53, a lone-surrogate escape apart', async () => {
    const app = await appWith(express.json());
    expect((await app.post('k-esc', '{"a":"b","c":1}', 'application/json')).status).toBe(201);
    for (const same of ['{"\\u0061":"\\u0062","c":1}', '{ "c" : 1.0 , "a" : "b" }']) {
      const retry = await app.post('k-esc', same, 'application/json');
      expect([retry.status, retry.replayed]).toEqual([201, true]);
    }
    for (const [index, [first, other]] of [
      ['{"a":2}', '{"a":1,"a":2}'],
      ['{"a":2}', '{"a":1,"\\u0061":2}'],
      ['{"n":12345678901234567890}', '{"n":12345678901234567891}'],
      ['{"s":"\\ufffd"}', '{"s":"\\ud800"}'],
      ['{"s":"\\udc00"}', '{"s":"\\ud800"}'],
      ['{"a":1}', '{"a":1,"__proto__":{"admin":true}}'],
    ].entries()) {
      const key = `k-apart-${index}`;
      expect((await app.post(key, first as string, 'application/json')).status).toBe(201);
      expect({
        other,
        status: (await app.post(key, other as string, 'application/json')).status,
      }).toEqual({ other, status: 422 });
    }
  });

  it('held: a bigint-aware parser after idem sees 12345678901234567890 and …891 apart, and so does the fingerprint', async () => {
    // A route reading integers past 2^53 exactly (the text parser, then its own JSON reading).
    const app = await appWith(express.text({ type: 'application/json' }));
    const big = (text: unknown) => /"n":(\d+)/.exec(String(text))?.[1];
    const first = await app.post('k-big', '{"n":12345678901234567890}', 'application/json');
    expect(big(first.got)).toBe('12345678901234567890');
    const second = await app.post('k-big', '{"n":12345678901234567891}', 'application/json');
    expect(second.status).toBe(422);
  });
});

describe('charset spellings body-parser reads alike (needless 422s)', () => {
  // FINDING LOW (kept; a 422, never a replay): iconv-lite reads `latin1`, `iso-8859-1`,
  // `ISO_8859-1`, `l1` and `cp819` with one table, and `utf_8`, `UTF 8`, `unicode-1-1-utf-8` as
  // UTF-8; idem keeps each spelling (lowercased) as it is, so a retry that changes it gets 422.
  // Correct would be a replay. Not fixed: which names are one charset depends on the decoder
  // after idem, which idem cannot see (WHATWG TextDecoder: `ascii` and `latin1` are
  // windows-1252, which iconv-lite reads otherwise at 0x80-0x9F; `utf_8` throws), and a merge
  // wrong for the app's decoder is a replay of one body to another (HIGH). Workaround: a
  // client sends one spelling for all tries of a key (packages/http README).
  it.fails('LOW: `charset=latin1` then `charset=iso-8859-1` (one table to iconv-lite): replayed', async () => {
    const app = await appWith(textForAll());
    const first = await app.post('k-alias', cafe, 'text/plain; charset=latin1');
    const again = await app.post('k-alias-fresh', cafe, 'text/plain; charset=iso-8859-1');
    expect(again.got).toBe(first.got);
    const retry = await app.post('k-alias', cafe, 'text/plain; charset=iso-8859-1');
    expect([retry.status, retry.replayed]).toEqual([201, true]);
  });

  // FINDING LOW (kept; a 422, never a replay): a charset named twice, the same both times, is
  // fingerprinted as the list `latin1,latin1`, another request than `latin1` alone, which every
  // parser reads alike (the first or the last of the two). Not fixed: nobody sends it, and a
  // change would move the fingerprints of the requests that do; the list of differing names it
  // keeps is what tells a first-wins parser (content-type 2) from a last-wins one (1.x) apart.
  it.fails('LOW: `charset=latin1; charset=latin1` then `charset=latin1`: replayed', async () => {
    const app = await appWith(textForAll());
    expect(
      (await app.post('k-twice', cafe, 'text/plain; charset=latin1; charset=latin1')).got,
    ).toBe('caf\u00c3\u00a9');
    const retry = await app.post('k-twice', cafe, 'text/plain; charset=latin1');
    expect([retry.status, retry.replayed]).toEqual([201, true]);
  });

  it('held: `charset="utf-8"`, `UTF8`, `utf-8` twice, an empty charset and none are one request (UTF-8 to body-parser)', async () => {
    const app = await appWith(textForAll());
    expect((await app.post('k-utf8', cafe, 'text/plain')).got).toBe('caf\u00e9');
    for (const same of [
      'text/plain; charset="utf-8"',
      'text/plain; charset=UTF8',
      'text/plain; charset=utf-8; charset=UTF-8',
      'text/plain; charset=""',
    ]) {
      const retry = await app.post('k-utf8', cafe, same);
      expect({ same, status: retry.status, replayed: retry.replayed }).toEqual({
        same,
        status: 201,
        replayed: true,
      });
    }
  });
});

describe('every name iconv-lite knows', () => {
  // iconv-lite as body-parser loads it.
  const load = createRequire(import.meta.url);
  const bodyParser = createRequire(load.resolve('express'))
    .resolve('body-parser')
    .replace(/index\.js$/, '');
  const iconv = createRequire(`${bodyParser}lib/read.js`)('iconv-lite') as {
    encodings: Record<string, unknown>;
    getCodec(name: string): unknown;
    decode(bytes: Buffer, name: string): string;
  };
  iconv.getCodec('utf8'); // loads the tables
  const names = Object.keys(iconv.encodings).filter((name) => !name.startsWith('_'));
  const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
  const table = new Map<string, string>();
  for (const name of names) {
    try {
      table.set(name, iconv.decode(all, name));
    } catch {}
  }

  it('held (after the fix): for every name n = a + b that iconv-lite reads otherwise than a, `charset="a,b"` and `charset=a; charset=b` are two requests', async () => {
    const splits: [string, string][] = [];
    for (const [name, decoded] of table)
      for (let k = 1; k < name.length; k++) {
        const a = name.slice(0, k);
        const alone = table.get(a);
        if (alone !== undefined && alone !== decoded) splits.push([a, name.slice(k)]);
      }
    expect(splits.length).toBeGreaterThanOrEqual(20);
    const app = await appWith(textForAll());
    const body = Buffer.from([0x41, 0xa4, 0xe9]);
    let answered = 0;
    for (const [a, b] of splits) {
      const key = `k-split-${a}-${b}`;
      const first = await app.post(key, body, `text/plain; charset="${a},${b}"`);
      if (first.status !== 201) continue;
      answered++;
      const second = await app.post(key, body, `text/plain; charset=${a}; charset=${b}`);
      expect({ a, b, replayed: second.replayed }).toEqual({ a, b, replayed: false });
    }
    expect(answered).toBe(splits.length);
  });

  it('held: a JSON body stays canonical JSON only under names that read ASCII as UTF-8 does, and no quoted name with commas is a list of such names that iconv-lite reads otherwise', () => {
    // The ASCII-compatible names idem lists (request-fingerprint.ts), as iconv-lite reads them.
    const listed = [
      'utf-8',
      'us-ascii',
      'ascii',
      'iso-8859-1',
      'iso8859-2',
      'iso_8859-15',
      'latin1',
    ];
    listed.push('latin-1', 'l1', 'cp819', 'ibm819', 'windows-1250', 'windows-1258', 'cp1252');
    const ascii = all.subarray(0, 128).toString('latin1');
    for (const name of listed)
      expect({ name, ascii: iconv.decode(all, name).slice(0, 128) }).toEqual({ name, ascii });
    // What iconv-lite keeps of each such name (letters and digits, lowercased): a quoted
    // `charset="a,b"` whose parts are all listed is, to iconv-lite, the name a+b.
    const pieces = ['utf8', 'usascii', 'ascii', 'latin1', 'l1', 'cp819', 'ibm819'];
    for (let n = 0; n < 100; n++) pieces.push(`iso8859${n}`);
    for (let n = 0; n < 10; n++) pieces.push(`windows125${n}`, `cp125${n}`);
    const madeOfPieces = (name: string): boolean => {
      const can = [true];
      for (let end = 1; end <= name.length; end++)
        can[end] = pieces.some(
          (p) => end >= p.length && can[end - p.length] === true && name.endsWith(p, end),
        );
      return can[name.length] === true;
    };
    expect([madeOfPieces('iso885915'), madeOfPieces('l1latin1'), madeOfPieces('utf16')]).toEqual([
      true,
      true,
      false,
    ]);
    const unsafe = [...table].filter(
      ([name, decoded]) => decoded.slice(0, 128) !== ascii && madeOfPieces(name),
    );
    expect(unsafe.map(([name]) => name)).toEqual([]);
  });
});
