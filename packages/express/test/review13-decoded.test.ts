import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { keepRawBody, type ParsedBodyApp, startParsedBodyApp } from './support/parsed-body-app.js';

// review13: attacks on bcbc55c (a parsed body holding U+FFFD is refused unless req.rawBody
// is a Buffer). Other lossy decoders than UTF-8 (express.text with a UTF-16 charset, qs's
// invalid percent-escapes), and valid bodies that legitimately hold U+FFFD. idem mounted
// after Express's parsers (as NestJS always runs them). Real Express on loopback.

let app: ParsedBodyApp;
beforeAll(async () => {
  app = await startParsedBodyApp(
    (withParsers) => {
      withParsers.use('/kept', express.json({ verify: keepRawBody }));
      withParsers.use('/text', express.text());
      withParsers.use('/json', express.json());
      withParsers.use('/form', express.urlencoded({ extended: true }));
      withParsers.use('/simple', express.urlencoded({ extended: false }));
      withParsers.use('/keptform', express.urlencoded({ extended: true, verify: keepRawBody }));
      withParsers.use('/formtext', express.text({ type: 'application/x-www-form-urlencoded' }));
    },
    ['/kept', '/text', '/json', '/form', '/simple', '/keptform', '/formtext'],
  );
});
afterAll(() => app.close());

let counter = 0;
const freshKey = () => `review13-${process.pid}-${++counter}`;

const UTF16 = 'text/plain; charset=utf-16le';
const FORM = 'application/x-www-form-urlencoded';

describe('review13: lossy decoders other than UTF-8 before the middleware', () => {
  // FINDING (MEDIUM, isolation; fixed: a parsed body whose Content-Type names a charset other
  // than UTF-8 is refused as decoded): the U+FFFD check only caught UTF-8's lossy decoding.
  // express.text() decodes by the request's charset through iconv-lite; as UTF-16LE it drops
  // an odd trailing byte ([61 00 62] and [61 00 63] both give "a"), with no U+FFFD anywhere:
  // the second body under the key is replayed the first's outcome instead of 422.
  // Fix: in bodyFromParsed, take a parsed string as the body only when the request's charset
  // is absent or UTF-8 (or ASCII/latin1, which are lossless); else refuse it like U+FFFD text
  // (or fall back to a req.rawBody Buffer).
  it('express.text() as UTF-16LE, an odd trailing byte: two bodies are never replayed one for the other', async () => {
    const key = freshKey();
    const before = app.runs;
    const first = await app.post('/text', key, Buffer.from([0x61, 0x00, 0x62]), UTF16);
    const other = await app.post('/text', key, Buffer.from([0x61, 0x00, 0x63]), UTF16);
    expect(other.replayed).toBe(false);
    expect([first.status, other.status]).toEqual([500, 500]);
    expect(JSON.parse(other.body).message).toMatch(/decoded as utf-16le/);
    expect(app.runs).toBe(before);
  });

  // FINDING (MEDIUM, isolation; fixed: refused, as a non-UTF-8 charset and as a lone
  // surrogate): UTF-16 decoding keeps a lone surrogate as it is (no U+FFFD),
  // and bodyFromParsed encodes the string with TextEncoder, which writes every lone surrogate
  // as EF BF BD: [00 D8 61 00] and [01 D8 61 00] ("\ud800a", "\ud801a") give the same bytes.
  // Fix: refuse a parsed string that is not well-formed (`!parsed.isWellFormed()`), as U+FFFD.
  it('express.text() as UTF-16LE, lone surrogates: two bodies are never replayed one for the other', async () => {
    const key = freshKey();
    const first = await app.post('/text', key, Buffer.from([0x00, 0xd8, 0x61, 0x00]), UTF16);
    expect(first.replayed).toBe(false);
    const other = await app.post('/text', key, Buffer.from([0x01, 0xd8, 0x61, 0x00]), UTF16);
    expect(other.replayed).toBe(false);
  });

  // Was FINDING (LOW, isolation, same class as the known JSON.parse gap) fixed: qs
  // (express.urlencoded, extended or not) leaves an invalid percent-escape as it is, so
  // `a=%FF` and `a=%25FF` both parse to { a: '%FF' } (no U+FFFD): the second was replayed the
  // first's outcome. A parsed form (Content-Type application/x-www-form-urlencoded) whose names
  // or values hold a '%' at any depth is now refused as decoded (500, nothing run, no key
  // taken) unless req.rawBody is a Buffer: any '%', not only '%' and two hex digits, since
  // `%ZZ` and `%25ZZ` (and `%` and `%25`) decode alike too. Since formfix every object parsed
  // from a Content-Type that is not JSON is refused so (qs drops pairs without any '%' too:
  // see formrev-qs.test.ts); the bytes are fingerprinted when req.rawBody is a Buffer.
  it('express.urlencoded(), an invalid percent-escape: two bodies are never replayed one for the other', async () => {
    const key = freshKey();
    const before = app.runs;
    const first = await app.post('/form', key, Buffer.from('a=%FF'), FORM);
    expect(first.status).toBe(500);
    const other = await app.post('/form', key, Buffer.from('a=%25FF'), FORM);
    expect(other.replayed).toBe(false);
    expect(other.status).toBe(500);
    const problem = JSON.parse(other.body);
    expect(problem.name).toBe('BodyAlreadyReadError');
    expect(problem.message).toMatch(/parsed into names and values/);
    expect(problem.message).toMatch(/mount the middleware before the body parser/);
    expect(problem.message).toMatch(/req\.rawBody \(a Buffer/);
    expect(app.runs).toBe(before);
  });

  // Pairs qs decodes alike (checked against qs: the second spells the first's text with %25),
  // as names and values, nested (extended) or flat: every one is refused, never replayed.
  const pairs: [string, string, string][] = [
    ['/form', 'a=%FF', 'a=%25FF'],
    ['/simple', 'a=%FF', 'a=%25FF'],
    ['/form', 'a=%ZZ', 'a=%25ZZ'],
    ['/simple', 'a=%ZZ', 'a=%25ZZ'],
    ['/form', 'a=%', 'a=%25'],
    ['/form', 'a=%FF+', 'a=%25FF%20'],
    ['/form', 'a=%C3%28', 'a=%25C3%2528'],
    ['/form', '%ZZ=1', '%25ZZ=1'],
    ['/simple', '%ZZ=1', '%25ZZ=1'],
    ['/form', 'a[b][%ZZ]=1', 'a[b][%25ZZ]=1'],
    ['/form', 'a[b][c]=%ZZ', 'a[b][c]=%25ZZ'],
    ['/form', 'a[]=x&a[]=%ZZ', 'a[]=x&a[]=%25ZZ'],
    ['/form', 'a=1&b[0][c]=%', 'a=1&b[0][c]=%25'],
  ];
  for (const [path, one, two] of pairs) {
    it(`express.urlencoded() at ${path}: ${one} and ${two} are both refused, nothing run`, async () => {
      const key = freshKey();
      const before = app.runs;
      const first = await app.post(path, key, Buffer.from(one), FORM);
      const other = await app.post(path, key, Buffer.from(two), FORM);
      expect([first.status, other.status]).toEqual([500, 500]);
      expect(other.replayed).toBe(false);
      expect(JSON.parse(first.body).message).toMatch(/parsed into names and values/);
      expect(app.runs).toBe(before);
    });
  }

  // Was held: a parsed form without a decoded '%' was fingerprinted as parsed. formfix: every
  // parsed form is refused (qs drops pairs with no '%' involved, see formrev-qs.test.ts);
  // kept as req.rawBody, its bytes are fingerprinted: the same text spelled otherwise (%20
  // for +) is another body then (422), as with the middleware before the parser.
  it('formfix: express.urlencoded(), forms with escapes but no decoded %: refused (500); with the bytes kept, run, replayed, another body 422', async () => {
    for (const path of ['/form', '/simple']) {
      const key = freshKey();
      const before = app.runs;
      const first = await app.post(path, key, Buffer.from('to=J%C3%A9r%C3%B4me+D&amount=10'), FORM);
      expect(first.status).toBe(500);
      expect(JSON.parse(first.body).message).toMatch(/parsed into names and values/);
      expect(app.runs).toBe(before);
    }
    const key = freshKey();
    const body = Buffer.from('to=J%C3%A9r%C3%B4me+D&amount=10');
    expect((await app.post('/keptform', key, body, FORM)).status).toBe(201);
    expect((await app.post('/keptform', key, body, FORM)).replayed).toBe(true);
    const spelt = Buffer.from('to=J%C3%A9r%C3%B4me%20D&amount=10');
    expect((await app.post('/keptform', key, spelt, FORM)).status).toBe(422);
    const other = Buffer.from('to=J%C3%A9r%C3%B4me+D&amount=11');
    expect((await app.post('/keptform', key, other, FORM)).status).toBe(422);
  });

  it('held: a % in JSON is not a form escape: express.json() bodies holding % run and are told apart', async () => {
    const key = freshKey();
    const json = 'application/json';
    expect((await app.post('/json', key, Buffer.from('{"a":"%FF","b%":1}'), json)).status).toBe(
      201,
    );
    expect((await app.post('/json', key, Buffer.from('{"a":"%FF","b%":1}'), json)).replayed).toBe(
      true,
    );
    expect((await app.post('/json', key, Buffer.from('{"a":"%25FF","b%":1}'), json)).status).toBe(
      422,
    );
  });

  it('held: a form left whole as text (express.text() for the form type) keeps its escapes: told apart', async () => {
    const key = freshKey();
    expect((await app.post('/formtext', key, Buffer.from('a=%FF'), FORM)).status).toBe(201);
    expect((await app.post('/formtext', key, Buffer.from('a=%FF'), FORM)).replayed).toBe(true);
    expect((await app.post('/formtext', key, Buffer.from('a=%25FF'), FORM)).status).toBe(422);
  });

  it('held: express.urlencoded() keeping the bytes as req.rawBody (verify): a=%FF runs, replays, a=%25FF is 422', async () => {
    const key = freshKey();
    const before = app.runs;
    expect((await app.post('/keptform', key, Buffer.from('a=%FF'), FORM)).status).toBe(201);
    expect((await app.post('/keptform', key, Buffer.from('a=%FF'), FORM)).replayed).toBe(true);
    const other = await app.post('/keptform', key, Buffer.from('a=%25FF'), FORM);
    expect(other.replayed).toBe(false);
    expect(other.status).toBe(422);
    expect(app.runs).toBe(before + 1);
  });

  it('formfix: express.urlencoded() extended false, valid escapes (a=%C3%A9 vs a=%C3%A8): refused, never replayed', async () => {
    const key = freshKey();
    const form = FORM;
    expect((await app.post('/simple', key, Buffer.from('a=%C3%A9'), form)).status).toBe(500);
    const other = await app.post('/simple', key, Buffer.from('a=%C3%A8'), form);
    expect(other.status).toBe(500);
    expect(other.replayed).toBe(false);
  });

  it('held: express.urlencoded(), an escape decoding to invalid UTF-8 (a=%C3%28 vs a=%C3%29) is never replayed', async () => {
    // qs's decodeURIComponent fails and leaves the text as it is, with its '%': refused.
    const key = freshKey();
    const form = FORM;
    await app.post('/form', key, Buffer.from('a=%C3%28'), form);
    const other = await app.post('/form', key, Buffer.from('a=%C3%29'), form);
    expect(other.replayed).toBe(false);
  });

  it('held: express.json(), lone surrogates as JSON escapes ("\\ud800" vs "\\ud801") are told apart', async () => {
    const key = freshKey();
    const json = 'application/json';
    expect((await app.post('/json', key, Buffer.from('{"a":"\\ud800"}'), json)).status).toBe(201);
    const other = await app.post('/json', key, Buffer.from('{"a":"\\ud801"}'), json);
    expect(other.replayed).toBe(false);
    expect(other.status).toBe(422);
  });
});

describe('review13: valid bodies holding U+FFFD after the parser', () => {
  // FINDING (MEDIUM, availability, kept as a deliberate trade-off): a VALID body that holds
  // U+FFFD itself (the escape "\ufffd", or its valid UTF-8 bytes EF BF BD, e.g. user text
  // already mangled upstream) is refused with 500 when parsed before the middleware: after
  // the parser nothing tells it from an invalid body that decoded to the same text, and
  // taking it would replay one body's outcome for another's. NestJS always parses before its
  // interceptor: such requests need its `rawBody: true` (the bytes are then fingerprinted,
  // next test), which the message names, as the READMEs do.
  it('express.json(), {"note":"\\ufffd"} (valid JSON, ASCII bytes): refused with a message naming the fix, nothing run', async () => {
    const key = freshKey();
    const before = app.runs;
    const body = Buffer.from('{"note":"\\ufffd"}');
    const first = await app.post('/json', key, body, 'application/json');
    expect(first.status).toBe(500);
    expect(JSON.parse(first.body).message).toMatch(/rawBody: true/);
    expect(app.runs).toBe(before);
  });

  it('express.text(), valid UTF-8 text holding U+FFFD (EF BF BD): refused, nothing run', async () => {
    const key = freshKey();
    const before = app.runs;
    const first = await app.post('/text', key, Buffer.from('a\uFFFDb'), 'text/plain');
    expect(first.status).toBe(500);
    expect(JSON.parse(first.body).name).toBe('BodyAlreadyReadError');
    expect(app.runs).toBe(before);
  });

  it('held: the bytes kept as req.rawBody (a Buffer): a valid U+FFFD body runs, replays, another gets 422', async () => {
    const key = freshKey();
    const json = 'application/json';
    const first = await app.post('/kept', key, Buffer.from('{"note":"\\ufffd"}'), json);
    expect(first.status).toBe(201);
    expect((await app.post('/kept', key, Buffer.from('{"note":"\\ufffd"}'), json)).replayed).toBe(
      true,
    );
    // The same JSON value written with the raw character: the bytes are JSON, parsed to the
    // same value: one request (as when mounted before the parser).
    const raw = await app.post('/kept', key, Buffer.from('{"note":"\uFFFD"}'), json);
    expect(raw.status === 422 || raw.replayed).toBe(true);
    expect((await app.post('/kept', key, Buffer.from('{"note":"x\\ufffd"}'), json)).status).toBe(
      422,
    );
  });
});
