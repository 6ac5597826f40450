import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createDigestParts, type EncodedPart, textWriters } from '../src/encoding.js';
import { portableSha256Hex } from '../src/sha256.js';
import { countUtf8 } from '../src/utf8.js';

// Adversarial inputs for the portable path (TextEncoder + pure-JS SHA-256) against Node's
// (Buffer + node:crypto): a key written by one runtime must be found by every other.
const nodeSha256 = (data: Uint8Array) => createHash('sha256').update(data).digest('hex');
const runs = process.env.CI ? 100 : 2_000;
const viaNode = createDigestParts(
  textWriters.buffer as NonNullable<typeof textWriters.buffer>,
  nodeSha256,
);
const viaPortable = createDigestParts(textWriters.web, portableSha256Hex);

/** Strings made of the awkward units: lone and paired surrogates, U+FFFD, 1–3 byte units. */
const unit = fc.constantFrom(
  'a',
  '\u007f',
  '\u0080',
  '\u07ff',
  '\u0800',
  '\ufffd',
  '\uffff',
  '\ud800',
  '\udbff',
  '\udc00',
  '\udfff',
  '\ud83d\ude00',
  '\udbff\udfff',
  '\u0000',
);
const awkward = (minLength: number, maxLength: number) =>
  fc.array(unit, { minLength, maxLength }).map((units) => units.join(''));

describe('portable derivation on adversarial strings', () => {
  it('gives the same digest for strings around the estimate boundary (4,096 units)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 4_080, max: 4_110 }),
        awkward(0, 8),
        awkward(0, 8),
        (length, head, tail) => {
          // A lone surrogate or astral pair straddling the 4,096th unit.
          const value = (head + 'é'.repeat(length) + tail).slice(0, length + head.length);
          const parts: EncodedPart[] = [[tail, value]];
          expect(countUtf8(value)).toBe(Buffer.byteLength(value, 'utf8'));
          expect(viaPortable(head, parts)).toBe(viaNode(head, parts));
        },
      ),
      { numRuns: process.env.CI ? 30 : 300 },
    );
  });

  it('gives the same digest for short lists of awkward strings and bytes', () => {
    const value = fc.oneof(awkward(0, 40), fc.string({ unit: 'binary' }), fc.uint8Array());
    fc.assert(
      fc.property(
        awkward(0, 10),
        fc.array(fc.tuple(awkward(0, 10), value), { maxLength: 8 }),
        (d, p) => {
          expect(viaPortable(d, p)).toBe(viaNode(d, p));
        },
      ),
      { numRuns: runs },
    );
  });

  it('gives the same digest for parts past the scratch buffer (> 65,536 bytes), then small ones', () => {
    fc.assert(
      fc.property(fc.integer({ min: 21_000, max: 70_000 }), awkward(1, 6), (repeat, piece) => {
        const big = piece.repeat(Math.ceil(repeat / piece.length));
        const parts: EncodedPart[] = [
          ['big', big],
          ['bytes', new Uint8Array(repeat).fill(0xff)],
        ];
        expect(viaPortable('d', parts)).toBe(viaNode('d', parts));
        // The scratch buffer after a huge call: a small one is still right.
        expect(viaPortable('d', [['s', piece]])).toBe(viaNode('d', [['s', piece]]));
      }),
      { numRuns: process.env.CI ? 5 : 40 },
    );
  });

  it('gives the same digest for the empty encoding and empty parts', () => {
    expect(viaPortable('', [])).toBe(viaNode('', []));
    expect(viaPortable('', [['', '']])).toBe(viaNode('', [['', '']]));
    expect(viaPortable('', [['', new Uint8Array(0)]])).toBe(viaNode('', [['', new Uint8Array(0)]]));
  });
});

describe('portable SHA-256 on long inputs', () => {
  it('equals node:crypto at lengths around 2^16 and past it', () => {
    for (const length of [65_535, 65_536, 65_537, 65_536 + 55, 65_536 + 56, 1_000_003]) {
      const data = Uint8Array.from({ length }, (_, i) => (i * 2_654_435_761) >>> 24);
      expect(portableSha256Hex(data), `length ${length}`).toBe(nodeSha256(data));
    }
  });
});
