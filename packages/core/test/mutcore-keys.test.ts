// Mutation audit (mutcore): keys and fingerprints. README: `deriveKey(parts)` gives a key (which `validateKey`
// accepts: 1..255 printable ASCII), `generateKey({ version: 7 })` a UUID v7.
import { describe, expect, it } from 'vitest';
import {
  deriveKey,
  fingerprint,
  generateKey,
  InvalidInputError,
  InvalidKeyError,
  isValidKey,
} from '../src/index.js';

describe('mutcore: deriveKey', () => {
  // Mutant: the prefixed key not validated (a key no request could carry).
  it('refuses a prefix that would make the key invalid', () => {
    expect(() => deriveKey(['a'], { prefix: 'tenant\n' })).toThrow(InvalidKeyError);
    expect(() => deriveKey(['a'], { prefix: 'é' })).toThrow(InvalidKeyError);
    // 64 hex characters after the prefix: 192 + 64 = 256 > 255.
    expect(() => deriveKey(['a'], { prefix: 'p'.repeat(192) })).toThrow(InvalidKeyError);
    expect(isValidKey(deriveKey(['a'], { prefix: 'p'.repeat(191) }))).toBe(true);
  });
});

describe('mutcore: generateKey', () => {
  // Mutant: the variant bits of a v7 UUID left random.
  it('v7 keys carry the RFC 9562 version and variant bits', () => {
    const v7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
    for (let i = 0; i < 64; i++) expect(generateKey({ version: 7 })).toMatch(v7);
  });
});

describe('mutcore: fingerprint', () => {
  // Mutant: `exclude` silently ignored on a raw body (the caller believes a field is left out).
  it('refuses exclude on a raw (bytes) body', () => {
    expect(() => fingerprint({ body: new Uint8Array([1, 2]), exclude: ['traceId'] })).toThrow(
      InvalidInputError,
    );
    // An empty list excludes nothing, and is fine.
    expect(fingerprint({ body: new Uint8Array([1, 2]), exclude: [] })).toBe(
      fingerprint({ body: new Uint8Array([1, 2]) }),
    );
  });

  // Mutant: an extra whose value is undefined (an absent header) encoded, or refused.
  it('an extra whose value is undefined counts as absent', () => {
    const extras = { 'x-tenant': 't1', 'x-absent': undefined } as unknown as Record<string, string>;
    expect(fingerprint({ method: 'POST', extras })).toBe(
      fingerprint({ method: 'POST', extras: { 'x-tenant': 't1' } }),
    );
  });
});
