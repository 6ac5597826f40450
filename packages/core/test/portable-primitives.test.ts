import { Buffer } from 'node:buffer';
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createDigestParts, type EncodedPart, textWriters } from '../src/encoding.js';
import { portableSha256Hex } from '../src/sha256.js';
import { countUtf8 } from '../src/utf8.js';

// What core uses where the runtime has no node:crypto or Buffer, against Node's own.
const nodeSha256 = (data: Uint8Array) => createHash('sha256').update(data).digest('hex');
const runs = process.env.CI ? 300 : 1_000;

describe('portable SHA-256', () => {
  it('gives the FIPS 180-4 digests of the standard messages', () => {
    const ascii = (text: string) => new TextEncoder().encode(text);
    expect(portableSha256Hex(ascii(''))).toBe(
      'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
    );
    expect(portableSha256Hex(ascii('abc'))).toBe(
      'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad',
    );
    expect(
      portableSha256Hex(ascii('abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq')),
    ).toBe('248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1');
  });

  it('equals node:crypto at every length around the block and padding boundaries', () => {
    for (let length = 0; length <= 200; length++) {
      const data = Uint8Array.from({ length }, (_, i) => (i * 131 + length) & 0xff);
      expect(portableSha256Hex(data), `length ${length}`).toBe(nodeSha256(data));
    }
  });

  it('equals node:crypto on random bytes, views into larger buffers included', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 5_000 }), fc.nat(16), (bytes, skip) => {
        const view = bytes.subarray(Math.min(skip, bytes.length));
        expect(portableSha256Hex(view)).toBe(nodeSha256(view));
      }),
      { numRuns: runs },
    );
  });
});

describe('portable UTF-8', () => {
  // Lone surrogates included: both encoders write U+FFFD for them.
  const text = fc.string({ unit: 'binary', maxLength: 300 });

  it('counts the bytes Buffer.byteLength counts', () => {
    fc.assert(
      fc.property(text, (value) => {
        expect(countUtf8(value)).toBe(Buffer.byteLength(value, 'utf8'));
      }),
      { numRuns: runs },
    );
  });

  it('encodes parts to the same digest with TextEncoder as with Buffer', () => {
    const viaBuffer = createDigestParts(
      textWriters.buffer as NonNullable<typeof textWriters.buffer>,
      nodeSha256,
    );
    const viaWeb = createDigestParts(textWriters.web, nodeSha256);
    const part = fc.tuple(text, fc.oneof(text, fc.uint8Array({ maxLength: 100 })));
    fc.assert(
      fc.property(text, fc.array(part, { maxLength: 6 }), (domain, parts) => {
        const list = parts as EncodedPart[];
        expect(viaWeb(domain, list)).toBe(viaBuffer(domain, list));
      }),
      { numRuns: runs },
    );
    // Past the scratch buffer and past the estimate (a part over 4,096 characters is counted).
    const long: EncodedPart[] = [
      ['a', 'é😀'.repeat(30_000)],
      ['b', 'x'.repeat(70_000)],
    ];
    expect(viaWeb('d', long)).toBe(viaBuffer('d', long));
  });
});
