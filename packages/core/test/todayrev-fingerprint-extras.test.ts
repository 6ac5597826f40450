// FINDING (todayrev, low, fixed): `fingerprint` took any object as `extras` and hashed its own
// enumerable members: a `Map`, a Fetch `Headers` or a `URLSearchParams` passed from JavaScript
// has none, so every request's extras were the same (a tenant header that should tell two
// requests apart did not: a different request under a used key replayed instead of MISMATCH).
// Now INVALID_INPUT, as a route of the wrong type; plain, null-prototype and frozen objects
// and arrays are taken as before.
import { describe, expect, it } from 'vitest';
import { fingerprint, InvalidInputError } from '../src/index.js';

describe('todayrev: fingerprint extras must be named parts', () => {
  it.each<[string, unknown]>([
    ['a Map', new Map([['tenant', 'a']])],
    ['a Headers', new Headers({ 'x-tenant': 'a' })],
    ['a URLSearchParams', new URLSearchParams('tenant=a')],
    ['a Date', new Date(0)],
  ])('%s is refused (it has no own members: every request alike)', (_name, extras) => {
    expect(() => fingerprint({ route: '/r', extras } as never)).toThrow(InvalidInputError);
  });

  it('plain, null-prototype, frozen objects and arrays are taken, and tell requests apart', () => {
    const bare = Object.assign(Object.create(null), { tenant: 'a' }) as Record<string, string>;
    const digests = [
      fingerprint({ route: '/r', extras: { tenant: 'b' } }),
      fingerprint({ route: '/r', extras: bare }),
      fingerprint({ route: '/r', extras: Object.freeze({ tenant: 'c' }) }),
      fingerprint({ route: '/r', extras: ['d'] as never }),
      fingerprint({ route: '', extras: {} }),
    ];
    expect(new Set(digests).size).toBe(digests.length);
    expect(fingerprint({ route: '/r', extras: { tenant: 'a' } })).toBe(digests[1]);
  });
});
