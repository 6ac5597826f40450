/**
 * Adversarial review of wt/memory8, core side: key validation by loop against main's regular
 * expression, and the JSON text read from bytes / the Latin-1 string against TextDecoder on
 * structured invalid UTF-8. (The review also compared keys and storage-key digests with main's
 * build of the day; that needs a second build and is not part of the suite:
 * memory8-review.test.ts compares digests with the general digest.)
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { deriveStorageKey, isValidKey, validateKey } from '../src/index.js';
import { encodeTextOutcome } from '../src/outcome-codec.js';
import { JSON_VALUE_META, jsonValueText, jsonValueTextOfLatin1 } from '../src/serializer.js';

// biome-ignore lint/suspicious/noExplicitAny: main's build is loaded untyped
type Any = any;

/** Main's check, as its source has it. */
const PRINTABLE_ASCII = /^[\x20-\x7e]+$/;

const outcome = (e: () => unknown) => {
  try {
    return { ok: true, value: e() };
  } catch (error) {
    const err = error as Error;
    return { ok: false, name: err.constructor.name, message: err.message, code: (err as Any).code };
  }
};

const anyKey = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 300 }),
  fc.string({ unit: 'binary-ascii', maxLength: 300 }),
  fc.string({ minLength: 250, maxLength: 260 }),
  fc.string({
    unit: fc.integer({ min: 0x1e, max: 0x80 }).map((c) => String.fromCharCode(c)),
    maxLength: 20,
  }),
  fc.constantFrom(
    '',
    ' ',
    '~',
    '\x7f',
    '\x1f',
    '\u0120',
    '\uff20',
    'a\u2028',
    'a'.repeat(255),
    'a'.repeat(256),
  ),
);

describe('memory8 attack: keys accepted and refused exactly as before', () => {
  it('the loop agrees with main’s regular expression and main’s validateKey (message included)', () => {
    fc.assert(
      fc.property(anyKey, (key) => {
        const accepted = isValidKey(key);
        expect(accepted).toBe(key.length <= 255 && PRINTABLE_ASCII.test(key));
        const result = outcome(() => validateKey(key));
        expect(result.ok).toBe(accepted);
        if (!result.ok) expect(result.name).toBe('InvalidKeyError');
      }),
      { numRuns: 5_000 },
    );
  });

  it('every single UTF-16 unit: accepted iff 0x20..0x7E, as main', () => {
    for (let u = 0; u < 0x10000; u++) {
      const key = `a${String.fromCharCode(u)}b`;
      expect(isValidKey(key)).toBe(PRINTABLE_ASCII.test(key));
    }
  });

  it('non-string keys get the typed InvalidKeyError, from validateKey and deriveStorageKey', () => {
    for (const key of [
      undefined,
      null,
      1,
      1n,
      {},
      [],
      ['a'],
      new String('a'),
      Symbol('a'),
      { length: 1 },
    ]) {
      const expected = {
        ok: false,
        name: 'InvalidKeyError',
        message: 'The idempotency key must be a string',
      };
      expect(outcome(() => validateKey(key))).toMatchObject(expected);
      expect(outcome(() => deriveStorageKey(null, key as string))).toMatchObject(expected);
    }
  });
});

describe('memory8 attack: the JSON text read without TextDecoder agrees with it', () => {
  const head = encodeTextOutcome(JSON_VALUE_META.json, '');
  const withBody = (body: Uint8Array) => {
    const bytes = new Uint8Array(head.length + body.length);
    bytes.set(head, 0);
    bytes.set(body, head.length);
    return bytes;
  };
  // Structured pieces: every class of invalid sequence, valid ones, BOMs, ASCII.
  const piece = fc.oneof(
    fc.uint8Array({ maxLength: 4 }),
    fc
      .constantFrom(
        [0xef, 0xbb, 0xbf],
        [0xed, 0xa0, 0x80],
        [0xed, 0xbf, 0xbf],
        [0xf4, 0x90, 0x80, 0x80],
        [0xf5, 0x80],
        [0xc0, 0x80],
        [0xc1, 0xbf],
        [0xe0, 0x80, 0x80],
        [0xe0, 0x9f, 0xbf],
        [0xf0, 0x80, 0x80, 0x80],
        [0xf0, 0x8f, 0xbf, 0xbf],
        [0xf0, 0x9f, 0x98],
        [0xe2, 0x82],
        [0xc3],
        [0x80],
        [0xbf, 0xbf],
        [0xff, 0xfe],
        [0xf8, 0x88, 0x80, 0x80, 0x80],
        [0xc3, 0xa9],
        [0xf0, 0x9f, 0x98, 0x80],
        [0x22],
        [0x5c, 0x75, 0x64, 0x38, 0x30, 0x30],
      )
      .map((a) => Uint8Array.from(a)),
  );
  const body = fc.array(piece, { maxLength: 12 }).map((ps) => {
    const out = new Uint8Array(ps.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of ps) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  });
  const decoder = new TextDecoder();

  it('bytes path: TextDecoder’s text on structured invalid UTF-8 (a leading BOM left to it)', () => {
    fc.assert(
      fc.property(body, (b) => {
        const text = jsonValueText(withBody(b));
        if (b[0] === 0xef && b[1] === 0xbb && b[2] === 0xbf) expect(text).toBeUndefined();
        else expect(text).toBe(decoder.decode(b));
      }),
      { numRuns: 20_000 },
    );
  });

  it('bytes path over long bodies (native paths for long inputs) and offsets inside a larger buffer', () => {
    fc.assert(
      fc.property(body, fc.nat({ max: 3 }), fc.nat({ max: 40 }), (b, reps, pad) => {
        const long = new Uint8Array(b.length * (reps * 50 + 1) + 70);
        for (let i = 0; i < long.length - 70; i++) long[i] = b.length ? b[i % b.length]! : 0x61;
        for (let i = long.length - 70; i < long.length; i++) long[i] = 0x61;
        if (long[0] === 0xef) long[0] = 0x61;
        const enc = withBody(long);
        // The same bytes as a view at an offset of a larger buffer.
        const big = new Uint8Array(enc.length + pad * 2);
        big.set(enc, pad);
        const view = big.subarray(pad, pad + enc.length);
        const want = decoder.decode(long);
        expect(jsonValueText(enc)).toBe(want);
        expect(jsonValueText(view)).toBe(want);
      }),
      { numRuns: 2_000 },
    );
  });

  it('Latin-1 path: the cut only for all-ASCII encodings, TextDecoder’s text then', () => {
    fc.assert(
      fc.property(body, (b) => {
        const held = Buffer.from(withBody(b)).toString('latin1');
        const text = jsonValueTextOfLatin1(held);
        if (b.every((x) => x < 0x80)) expect(text).toBe(decoder.decode(b));
        else expect(text).toBeUndefined();
      }),
      { numRuns: 5_000 },
    );
  });
});
