/**
 * review13: bodyFromParsed / nodeRequestBody after bcbc55c (a parsed body holding U+FFFD is
 * refused unless req.rawBody is a Buffer). Real Node requests on loopback for nodeRequestBody.
 */
import { createServer, request as httpRequest, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { canonicalJson, type JsonValue } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { BodyAlreadyReadError, bodyFromParsed } from '../src/index.js';
import { nodeRequestBody } from '../src/node.js';

const LIMIT = 1_048_576;

function bytesOf(parsed: unknown, type: string | undefined): string {
  const body = bodyFromParsed(parsed, type, LIMIT);
  if (body.kind === 'bytes') return Buffer.from(body.bytes).toString('hex');
  if (body.kind === 'json') return canonicalJson(body.value as JsonValue);
  return 'none';
}

/** Runs `inspect` on a real IncomingMessage (its body read whole first when `drain`). */
async function onRequest<T>(
  body: Buffer,
  drain: boolean,
  inspect: (req: IncomingMessage) => Promise<T>,
): Promise<T> {
  let result: Promise<T> | undefined;
  const server = createServer((req, res) => {
    const done = () => {
      result = inspect(req);
      result.then(
        () => res.end('ok'),
        () => res.end('error'),
      );
    };
    if (!drain) return done();
    const parts: Buffer[] = [];
    req.on('data', (chunk: Buffer) => parts.push(chunk));
    req.on('end', () => {
      (req as IncomingMessage & { drained?: Buffer }).drained = Buffer.concat(parts);
      done();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve, reject) => {
    const req = httpRequest(
      {
        host: '127.0.0.1',
        port,
        method: 'POST',
        agent: false,
        headers: { 'content-type': 'text/plain', 'content-length': String(body.length) },
      },
      (res) => {
        res.resume();
        res.on('end', resolve);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return (result as Promise<T>).then(
    (value) => value,
    (error: unknown) => {
      throw error;
    },
  );
}

describe('review13: bodyFromParsed', () => {
  // FINDING (MEDIUM, isolation; fixed): a parsed string holding a lone surrogate (what a
  // UTF-16 charset decode gives for an unpaired code unit; express.text() with
  // charset=utf-16le) was encoded with TextEncoder, which writes every lone surrogate as
  // U+FFFD's bytes: "\ud800" and "\udbff" became the same body. Such a string is now refused
  // as a decoded body (BodyAlreadyReadError), as text holding U+FFFD.
  it('two parsed strings with different lone surrogates are never one body: both refused', () => {
    for (const text of ['a\ud800', 'a\udbff', '\udc00'])
      expect(() => bodyFromParsed(text, 'text/plain', LIMIT)).toThrow(/lone surrogate/);
    // A pair (an astral character) is no lone surrogate.
    expect(bytesOf('a\ud83d\ude00', 'text/plain')).toBeDefined();
  });

  it('a parsed body whose Content-Type names a charset other than UTF-8 is refused; UTF-8 or none is taken', () => {
    for (const type of [
      'text/plain; charset=utf-16le',
      'text/plain;charset="UTF-16"',
      'application/json; charset=iso-8859-1',
    ])
      expect(() => bodyFromParsed('a', type, LIMIT)).toThrow(/decoded as/);
    expect(() => bodyFromParsed({ a: 1 }, 'application/json; charset=utf-16', LIMIT)).toThrow(
      BodyAlreadyReadError,
    );
    for (const type of ['text/plain', 'text/plain; charset=utf-8', 'text/plain; Charset=UTF8'])
      expect(bodyFromParsed('a', type, LIMIT).kind).not.toBe('none');
    // Bytes a parser left as bytes (express.raw()) were not decoded: taken whatever the charset.
    expect(
      bodyFromParsed(new Uint8Array([1, 2]), 'application/octet-stream; charset=utf-16', LIMIT)
        .kind,
    ).not.toBe('none');
  });

  it('held: lone surrogates in a parsed JSON value are told apart (canonical JSON escapes them)', () => {
    expect(bytesOf({ a: '\ud800' }, 'application/json')).not.toBe(
      bytesOf({ a: '\udbff' }, 'application/json'),
    );
    expect(bytesOf({ '\ud800': 1 }, 'application/json')).not.toBe(
      bytesOf({ '\udbff': 1 }, 'application/json'),
    );
  });

  it('held: U+FFFD anywhere in a parsed value (string, member name, nested, behind toJSON) is refused', () => {
    const refused = (value: unknown) =>
      expect(() => bodyFromParsed(value, 'application/json', LIMIT)).toThrow(BodyAlreadyReadError);
    refused('\uFFFD');
    refused({ a: '\uFFFD' });
    refused({ '\uFFFD': 1 });
    refused([[[{ deep: ['x\uFFFDy'] }]]]);
    refused({ toJSON: () => ({ a: '\uFFFD' }) });
  });

  it('held: bytes (Buffer, Uint8Array) holding EF BF BD are taken as bytes, not refused', () => {
    const bytes = Buffer.from('a\uFFFDb');
    expect(bodyFromParsed(bytes, 'text/plain', LIMIT)).toMatchObject({ kind: 'bytes' });
    expect(bodyFromParsed(new Uint8Array(bytes), 'text/plain', LIMIT)).toMatchObject({
      kind: 'bytes',
    });
  });
});

describe('review13: nodeRequestBody, U+FFFD text with req.rawBody', () => {
  it('held: a rawBody string holding U+FFFD is not trusted: refused', async () => {
    const sent = Buffer.from([0x61, 0xff, 0x62]);
    await expect(
      onRequest(sent, true, async (req) => {
        (req as IncomingMessage & { rawBody?: unknown }).rawBody = 'a\uFFFDb';
        return nodeRequestBody(req, 'a\uFFFDb', LIMIT);
      }),
    ).rejects.toBeInstanceOf(BodyAlreadyReadError);
  });

  it('held: a rawBody Buffer set before the body was read whole is not trusted: refused', async () => {
    const sent = Buffer.from([0x61, 0xff, 0x62]);
    await expect(
      onRequest(sent, false, async (req) => {
        (req as IncomingMessage & { rawBody?: unknown }).rawBody = Buffer.from('stale');
        return nodeRequestBody(req, 'a\uFFFDb', LIMIT);
      }),
    ).rejects.toBeInstanceOf(BodyAlreadyReadError);
  });

  it('held: the kept bytes tell two invalid bodies apart', async () => {
    const bodyOf = (sent: Buffer) =>
      onRequest(sent, true, async (req) => {
        const kept = (req as IncomingMessage & { drained?: Buffer }).drained as Buffer;
        (req as IncomingMessage & { rawBody?: unknown }).rawBody = kept;
        const body = await nodeRequestBody(req, kept.toString('utf8'), LIMIT);
        return body.kind === 'bytes' ? Buffer.from(body.bytes).toString('hex') : body.kind;
      });
    const a = await bodyOf(Buffer.from([0x61, 0xff, 0x62]));
    const b = await bodyOf(Buffer.from([0x61, 0xfe, 0x62]));
    expect(a).toBe('61ff62');
    expect(b).toBe('61fe62');
  });
});

describe('bodyFromParsed: a parsed form holding a % (the invalid percent-escape finding)', () => {
  const FORM = 'application/x-www-form-urlencoded';
  const refused =
    (parsed: unknown, type = FORM) =>
    () =>
      bodyFromParsed(parsed, type, LIMIT);

  it("a '%' in a value or a name, at any depth, is refused as decoded", () => {
    for (const parsed of [
      { a: '%FF' },
      { a: '%' },
      { a: 'x%ZZ' },
      { '%ZZ': '1' },
      { a: { b: { '%': '1' } } },
      { a: ['x', '%ZZ'] },
      { a: [{ b: 'ok' }, { c: '50%' }] },
      { a: 'é%' },
    ])
      expect(refused(parsed), JSON.stringify(parsed)).toThrow(/parsed into names and values/);
    // The media type is matched without regard to case or parameters.
    expect(refused({ a: '%' }, 'Application/X-WWW-Form-URLEncoded; charset=utf-8')).toThrow(
      BodyAlreadyReadError,
    );
    expect(refused({ a: '%' }, `  ${FORM}`)).toThrow(BodyAlreadyReadError);
  });

  // formfix: an object parsed from any Content-Type that is not JSON is refused, '%' or not
  // (qs drops pairs without one too), whatever the type (a parser told to parse every type).
  it('formfix: a form without any %, an object under any other non-JSON type: refused; JSON and text taken', () => {
    expect(refused({ a: 'x y', b: ['1', { c: 'é' }] })).toThrow(/parsed into names and values/);
    expect(refused({})).toThrow(BodyAlreadyReadError);
    for (const type of [
      'text/plain',
      undefined,
      'application/x-www-form-urlencodedx',
      'multipart/form-data; boundary=x',
    ])
      expect(refused({ a: '%FF' }, type as string), String(type)).toThrow(
        /parsed into names and values/,
      );
    expect(bytesOf({ a: '%FF' }, 'application/json')).toBe('{"a":"%FF"}');
    expect(bytesOf({ a: '%FF' }, 'application/merge-patch+json; charset=utf-8')).toBe(
      '{"a":"%FF"}',
    );
    // A string is the text as sent, escapes and all: a=%FF and a=%25FF stay two bodies.
    expect(bytesOf('a=%FF', FORM)).toBe(Buffer.from('a=%FF').toString('hex'));
    expect(bytesOf('a=%25FF', FORM)).toBe(Buffer.from('a=%25FF').toString('hex'));
    expect(bytesOf(Buffer.from('a=%FF'), FORM)).toBe(Buffer.from('a=%FF').toString('hex'));
  });

  it('held: refused, then the bytes kept as req.rawBody (a Buffer) are fingerprinted', async () => {
    const bodyOf = (sent: Buffer, parsed: unknown) =>
      onRequest(sent, true, async (req) => {
        req.headers['content-type'] = FORM;
        (req as IncomingMessage & { rawBody?: unknown }).rawBody = (
          req as IncomingMessage & { drained?: Buffer }
        ).drained;
        const body = await nodeRequestBody(req, parsed, LIMIT);
        return body.kind === 'bytes' ? Buffer.from(body.bytes).toString() : body.kind;
      });
    expect(await bodyOf(Buffer.from('a=%FF'), { a: '%FF' })).toBe('a=%FF');
    expect(await bodyOf(Buffer.from('a=%25FF'), { a: '%FF' })).toBe('a=%25FF');
  });
});
