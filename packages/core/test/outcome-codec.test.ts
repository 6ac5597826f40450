import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decodeOutcome, encodeOutcome, OutcomeCorruptError } from '../src/index.js';

describe('outcome codec', () => {
  it('property: every body and metadata round-trips exactly', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 2048 }),
        fc.dictionary(fc.string(), fc.jsonValue()),
        (body, meta) => {
          const decoded = decodeOutcome(encodeOutcome({ meta, body }));
          expect(Buffer.from(decoded.body).equals(Buffer.from(body))).toBe(true);
          expect(decoded.meta).toEqual(JSON.parse(JSON.stringify(meta)));
        },
      ),
      { numRuns: 300 },
    );
  });

  it('decodes from a view at an offset and returns a copy of the body', () => {
    const encoded = encodeOutcome({ meta: { s: 1 }, body: new Uint8Array([1, 2, 3]) });
    const padded = new Uint8Array(encoded.length + 7);
    padded.set(encoded, 7);
    const decoded = decodeOutcome(padded.subarray(7));
    expect([...decoded.body]).toEqual([1, 2, 3]);
    decoded.body[0] = 99;
    expect(padded[padded.length - 3]).toBe(1);
  });

  it('refuses unknown, truncated or non-JSON bytes with a typed error', () => {
    const encoded = encodeOutcome({ meta: { a: 'b' }, body: new Uint8Array([1]) });
    expect(() => decodeOutcome(new Uint8Array([1, 2, 3]))).toThrow(OutcomeCorruptError);
    expect(() => decodeOutcome(encoded.subarray(0, 10))).toThrow(/truncated/);
    const broken = encoded.slice();
    broken[8] = 0x7b; // '{' then garbage
    broken[9] = 0x7b;
    expect(() => decodeOutcome(broken)).toThrow(/not valid JSON/);
  });
});
