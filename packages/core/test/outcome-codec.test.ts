import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decodeOutcome, encodeOutcome, jsonSerializer, OutcomeCorruptError } from '../src/index.js';
import {
  decodeOutcomeView,
  encodeOutcomeWith,
  giveBackReused,
  isReusedBuffer,
} from '../src/outcome-codec.js';
import { encodeJsonValue, JSON_VALUE_META } from '../src/serializer.js';

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

  it('returns a plain copy of the body also when given a Buffer (whose slice is a view)', () => {
    const stored = Buffer.from(encodeOutcome({ meta: {}, body: new Uint8Array([1, 2, 3]) }));
    const decoded = decodeOutcome(stored);
    decoded.body[0] = 99;
    expect(stored[stored.length - 3]).toBe(1);
    expect(Buffer.isBuffer(decoded.body)).toBe(false);
  });

  it('writes metadata with characters outside ASCII as UTF-8', () => {
    const meta = { name: 'Zoë 🚀', ключ: ['é', 1] };
    const encoded = encodeOutcome({ meta, body: new Uint8Array([7]) });
    const json = Buffer.from(JSON.stringify(meta), 'utf8');
    expect(Buffer.from(encoded.subarray(8, 8 + json.length)).equals(json)).toBe(true);
    expect(decodeOutcome(encoded)).toEqual({ meta, body: new Uint8Array([7]) });
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

  it("property: the engine's one-step JSON encoding is exactly the generic one, and decodes alike", () => {
    fc.assert(
      fc.property(fc.oneof(fc.jsonValue(), fc.constant(undefined)), (value) => {
        const { meta, body } = jsonSerializer.serialize(value);
        const generic = encodeOutcome({ meta: { kind: 'value', value: meta }, body });
        const direct = encodeJsonValue(value);
        expect(Buffer.from(direct).equals(Buffer.from(generic))).toBe(true);
        // The metadata of a recorded value stands for itself unparsed, with the same body.
        const known = decodeOutcomeView(direct, JSON_VALUE_META);
        const parsed = decodeOutcome(direct);
        expect(known.meta).toEqual(parsed.meta);
        expect(Buffer.from(known.body).equals(Buffer.from(parsed.body))).toBe(true);
      }),
      { numRuns: 300 },
    );
  });

  it('property: an encoding into the reused buffer is the same bytes, and one at a time', () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.jsonValue(), fc.constant(undefined), fc.string({ maxLength: 30_000 })),
        fc.uint8Array({ maxLength: 70_000 }),
        (value, body) => {
          const reused = encodeJsonValue(value, true);
          // While lent, another encoding gets bytes of its own.
          const other = encodeOutcomeWith({ meta: { n: 1 }, body }, true);
          if (isReusedBuffer(reused)) expect(isReusedBuffer(other)).toBe(false);
          expect(
            Buffer.from(other).equals(Buffer.from(encodeOutcome({ meta: { n: 1 }, body }))),
          ).toBe(true);
          expect(Buffer.from(reused).equals(Buffer.from(encodeJsonValue(value)))).toBe(true);
          giveBackReused(reused);
          giveBackReused(other);
          const again = encodeOutcomeWith({ meta: { n: 1 }, body }, true);
          expect(Buffer.from(again).equals(Buffer.from(other))).toBe(true);
          giveBackReused(again);
        },
      ),
      { numRuns: 200 },
    );
  });
});
