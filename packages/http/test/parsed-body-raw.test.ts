import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { BodyTooLargeError, bodyFromBytes, bodyFromParsed } from '../src/index.js';

// A framework that parsed the body hands over its value; with the bytes it was parsed from,
// bodyFromParsed fingerprints exactly as bodyFromBytes does when the adapter reads them.
const JSON_TYPE = 'application/json';
const bytes = (text: string) => new TextEncoder().encode(text);

describe('bodyFromParsed with the raw bytes', () => {
  for (const text of [
    '{"amount":9007199254740993}',
    '{"to":"alice","to":"mallory"}',
    '{"x":0.30000000000000001}',
    '[1e400]',
  ]) {
    it(`${text}: fingerprinted by its bytes, as bodyFromBytes does`, () => {
      const raw = bytes(text);
      expect(bodyFromParsed(JSON.parse(text), JSON_TYPE, 1_000, raw)).toEqual({
        kind: 'bytes',
        bytes: raw,
      });
      expect(bodyFromBytes(raw, JSON_TYPE)).toEqual({ kind: 'bytes', bytes: raw });
    });
  }

  it('plain JSON: the parsed value, as without the bytes', () => {
    const text = '{"b":[1,2],"a":"\\u00e9"}';
    expect(bodyFromParsed(JSON.parse(text), JSON_TYPE, 1_000, bytes(text))).toEqual(
      bodyFromParsed(JSON.parse(text), JSON_TYPE, 1_000),
    );
  });

  it('bytes that are not the JSON text (still compressed, not UTF-8): the parsed value', () => {
    const text = '{"amount":9007199254740993}';
    const value = JSON.parse(text);
    const gzipped = gzipSync(bytes(text));
    expect(bodyFromParsed(value, JSON_TYPE, 1_000, gzipped)).toEqual(
      bodyFromParsed(value, JSON_TYPE, 1_000),
    );
    // Ambiguous-looking text that is not JSON says nothing either.
    const notJson = bytes('{"a":1,"a":2');
    expect(bodyFromParsed({ a: 2 }, JSON_TYPE, 1_000, notJson).kind).toBe('json');
  });

  it('another media type: the bytes are not looked at', () => {
    const text = '{"a":1,"a":2}';
    expect(bodyFromParsed({ a: 2 }, 'text/plain', 1_000, bytes(text)).kind).toBe('json');
  });

  it('bytes past the limit: BodyTooLargeError', () => {
    const text = JSON.stringify({ pad: 'x'.repeat(100) });
    expect(() => bodyFromParsed(JSON.parse(text), JSON_TYPE, 50, bytes(text))).toThrow(
      BodyTooLargeError,
    );
  });
});
