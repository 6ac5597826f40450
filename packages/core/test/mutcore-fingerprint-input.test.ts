// FINDING (mutcore, medium, fixed): `fingerprint` with a route (or any part the encoding does
// not take) that is not a string, a number or a framework's route object from JavaScript,
// wrote no bytes and an invalid length, so the digest was SHA-256 of nothing: every such
// request had the same fingerprint whatever its method and body, and a different request
// under a used key was replayed instead of answered MISMATCH. Now INVALID_INPUT.
import { describe, expect, it } from 'vitest';
import { fingerprint, InvalidInputError } from '../src/index.js';

const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

describe('mutcore: fingerprint refuses parts of the wrong type', () => {
  it.each<[string, Record<string, unknown>]>([
    ['a numeric route', { method: 'POST', route: 5, body: { amount: 1 } }],
    ['a route object', { method: 'POST', route: { path: '/charges' }, body: { amount: 1 } }],
    ['a numeric method', { method: 5 }],
    ['extras null', { extras: null }],
    ['exclude as a string', { body: { a: 1, b: 2 }, exclude: 'ab' }],
    ['exclude with a number', { body: { a: 1 }, exclude: [1] }],
  ])('%s', (_name, input) => {
    expect(() => fingerprint(input as never)).toThrow(InvalidInputError);
  });

  it('no two requests share the digest of nothing', () => {
    const digests = [
      fingerprint({ method: 'POST', route: '/charges', body: { amount: 1 } }),
      fingerprint({ method: 'POST', route: '/charges', body: { amount: 2 } }),
      fingerprint({}),
    ];
    expect(new Set(digests).size).toBe(3);
    for (const digest of digests) expect(digest).not.toBe(EMPTY_SHA256);
  });
});
