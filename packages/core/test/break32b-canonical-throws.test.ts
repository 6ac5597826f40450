// break32b: a value whose own code throws while canonical JSON reads it (a `toJSON`, a getter,
// a Proxy's trap, a revoked Proxy) is refused with a typed NotCanonicalError (`not_json`, the
// path to it, what it threw as `cause`), as every other value canonical JSON cannot carry.
// Before the fix the value's own error escaped untyped from canonicalJson, fingerprint(),
// deriveKey() and execute() (a scope), where every bad input must be a clear typed error.
import { describe, expect, it } from 'vitest';
import {
  canonicalJson,
  createIdempotency,
  deriveKey,
  fingerprint,
  isIdemError,
  NotCanonicalError,
} from '../src/index.js';
import { FakeStore } from './support/fake-store.js';

const boom = new Error('boom');
const throwingToJson = {
  toJSON: () => {
    throw boom;
  },
};
const throwingGetter = Object.defineProperty({}, 'x', {
  enumerable: true,
  get: () => {
    throw boom;
  },
});
const trapped = new Proxy(
  {},
  {
    ownKeys: () => {
      throw boom;
    },
  },
);
const protoTrap = new Proxy(
  {},
  {
    getPrototypeOf: () => {
      throw boom;
    },
  },
);
const revoked = (() => {
  const r = Proxy.revocable([], {});
  r.revoke();
  return r.proxy;
})();
const arrayGet = new Proxy([1, 2], {
  get: (t, k) => {
    if (k === '1') throw boom;
    return Reflect.get(t, k);
  },
});

const cases: [string, unknown, string][] = [
  ['a toJSON that throws', { a: [throwingToJson] }, '/a/0'],
  ['a getter that throws', { outer: throwingGetter }, '/outer/x'],
  ['a Proxy whose ownKeys throws', { p: trapped }, '/p'],
  ['a Proxy whose getPrototypeOf throws', [protoTrap], '/0'],
  ['a revoked Proxy at the root', revoked, ''],
  ['a revoked Proxy inside', { r: revoked }, '/r'],
  ['an array Proxy whose get throws', arrayGet, ''],
];

describe('break32b: canonical JSON of a value that throws while read', () => {
  for (const [name, value, path] of cases) {
    it(`${name}: NotCanonicalError at ${path || '(root)'}, cause attached`, () => {
      let thrown: unknown;
      try {
        canonicalJson(value);
      } catch (error) {
        thrown = error;
      }
      expect(thrown).toBeInstanceOf(NotCanonicalError);
      expect(thrown).toMatchObject({ code: 'NOT_CANONICAL', reason: 'not_json' });
      expect((thrown as NotCanonicalError).path).toBe(path);
      expect((thrown as Error).cause === boom || (thrown as Error).cause instanceof TypeError).toBe(
        true,
      );
    });
  }

  it('fingerprint(), deriveKey() and execute() with such a scope throw the typed error, nothing acquired', async () => {
    expect(() =>
      fingerprint({ method: 'POST', route: '/x', body: { a: throwingToJson } as never }),
    ).toThrow(NotCanonicalError);
    expect(() => deriveKey([throwingGetter])).toThrow(NotCanonicalError);
    const store = new FakeStore();
    const idem = createIdempotency({ store });
    let runs = 0;
    const failure = await idem
      .execute({ key: 'k', scope: { tenant: throwingToJson } as never }, async () => ++runs)
      .catch((error: unknown) => error);
    expect(isIdemError(failure)).toBe(true);
    expect(failure).toMatchObject({ code: 'NOT_CANONICAL', path: '/tenant' });
    expect(runs).toBe(0);
  });
});
