import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  canonicalJson,
  deriveStorageKey,
  digestParts,
  InvalidKeyError,
  validateKey,
} from '../src/index.js';
import { encodeTextOutcome } from '../src/outcome-codec.js';
import {
  encodeJsonValue,
  JSON_VALUE_META,
  jsonValueText,
  jsonValueTextOfLatin1,
} from '../src/serializer.js';

const head = encodeTextOutcome(JSON_VALUE_META.json, '');
const withBody = (body: Uint8Array) => {
  const bytes = new Uint8Array(head.length + body.length);
  bytes.set(head, 0);
  bytes.set(body, head.length);
  return bytes;
};
const latin1 = (bytes: Uint8Array) => String.fromCharCode(...bytes);
const startsWithBom = (body: Uint8Array) =>
  body[0] === 0xef && body[1] === 0xbb && body[2] === 0xbf;

describe('memory8 review: the JSON text of a recorded value, read without the outcome objects', () => {
  it('is what TextDecoder gives for any body bytes, invalid UTF-8 included (a BOM is left to it)', () => {
    const decoder = new TextDecoder();
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (body) => {
        const text = jsonValueText(withBody(body));
        if (startsWithBom(body)) expect(text).toBeUndefined();
        else expect(text).toBe(decoder.decode(body));
      }),
      { numRuns: 2_000 },
    );
  });

  it('reads the same text from the Latin-1 string where the body is ASCII, else leaves it', () => {
    const decoder = new TextDecoder();
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (body) => {
        const text = jsonValueTextOfLatin1(latin1(withBody(body)));
        if (body.every((b) => b < 0x80)) expect(text).toBe(decoder.decode(body));
        else expect(text).toBeUndefined();
      }),
      { numRuns: 2_000 },
    );
  });

  it('leaves every other encoding to the general path: another metadata, a marker, a truncation', () => {
    const other = encodeTextOutcome(
      '{"kind":"value","value":{"encoding":"json","undefined":true}}',
      '',
    );
    expect(jsonValueText(other)).toBeUndefined();
    expect(jsonValueTextOfLatin1(latin1(other))).toBeUndefined();
    const marker = Uint8Array.from('IDN\x01too_large', (c) => c.charCodeAt(0));
    expect(jsonValueText(marker)).toBeUndefined();
    expect(jsonValueTextOfLatin1(latin1(marker))).toBeUndefined();
    expect(jsonValueText(head.subarray(0, head.length - 1))).toBeUndefined();
    expect(jsonValueTextOfLatin1(latin1(head.subarray(0, head.length - 1)))).toBeUndefined();
    // What the engine records for a value reads back as its JSON.
    const value = { a: 'é', b: [1, null, 'x'] };
    expect(jsonValueText(encodeJsonValue(value))).toBe(JSON.stringify(value));
  });
});

describe('memory8 review: key checks without a regular expression, digests with kept views', () => {
  it('accepts exactly 1..255 printable ASCII characters', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 300 }), (key) => {
        const valid = key.length >= 1 && key.length <= 255 && /^[\x20-\x7e]+$/.test(key);
        if (valid) expect(() => validateKey(key)).not.toThrow();
        else expect(() => validateKey(key)).toThrow(InvalidKeyError);
      }),
      { numRuns: 2_000 },
    );
  });

  it('derives the same storage keys as the general digest, whatever lengths came before', () => {
    // Keys of many lengths in turn: each length's view is made once and read again later.
    fc.assert(
      fc.property(
        fc.array(
          fc.tuple(fc.jsonValue({ maxDepth: 1 }), fc.string({ minLength: 1, maxLength: 255 })),
          {
            maxLength: 30,
          },
        ),
        (pairs) => {
          for (const [scope, raw] of pairs) {
            const key = raw.replace(/[^\x20-\x7e]/g, 'a');
            let scopeJson: string;
            try {
              scopeJson = canonicalJson(scope);
            } catch {
              continue; // not canonical JSON: refused by both alike
            }
            const expected = digestParts('idem/storage-key/v1', [
              ['scope', scopeJson],
              ['key', key],
            ]);
            expect(deriveStorageKey(scope, key)).toBe(expected);
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});
