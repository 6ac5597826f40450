import { createHash } from 'node:crypto';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createPairDigest, textWriters } from '../src/encoding.js';
import { deriveStorageKey } from '../src/keys.js';
import { portableSha256Hex } from '../src/sha256.js';

// Adversarial review of wt/core9: the portable SHA-256 answers one flat string (a store may
// keep a storage key as the engine made it).

const nodeSha256 = (data: Uint8Array) => createHash('sha256').update(data).digest('hex');

function collector(): () => void {
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
}

describe('core9 review: the flat portable SHA-256', () => {
  it('spells every nibble of every word, high bits included, as node:crypto does', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 300 }), (bytes) => {
        const hex = portableSha256Hex(bytes);
        expect(hex).toMatch(/^[0-9a-f]{64}$/);
        expect(hex).toBe(nodeSha256(bytes));
      }),
      { numRuns: 500 },
    );
  });

  it('derives the same storage keys as node:crypto for scopes and keys with lone surrogates and astral characters', () => {
    const portable = createPairDigest(
      textWriters.web,
      portableSha256Hex,
      'idem/storage-key/v1',
      'scope',
      'key',
    );
    fc.assert(
      fc.property(
        fc.string({ unit: 'binary', minLength: 1, maxLength: 40 }),
        fc.string({ unit: 'binary', maxLength: 20 }),
        (key, tenant) => {
          const scope = [tenant, 1];
          let expected: string;
          try {
            expected = deriveStorageKey(scope, key);
          } catch {
            return; // a key core refuses (e.g. malformed), refused on both paths alike
          }
          expect(portable(JSON.stringify(scope), key)).toBe(expected);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('keeps 20 000 digests in a few MB (one flat string each, not a tree of pieces)', () => {
    const gc = collector();
    gc();
    gc();
    const before = process.memoryUsage().heapUsed;
    const kept: string[] = [];
    const data = new Uint8Array(8);
    const view = new DataView(data.buffer);
    for (let i = 0; i < 20_000; i++) {
      view.setUint32(0, i);
      kept.push(portableSha256Hex(data));
    }
    gc();
    gc();
    const grown = process.memoryUsage().heapUsed - before;
    expect(new Set(kept).size).toBe(20_000);
    expect(grown).toBeLessThan(3.5 * 1024 * 1024);
  });
});
