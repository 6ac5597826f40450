import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { canonicalJson, NotCanonicalError } from '../src/index.js';

describe('canonicalJson', () => {
  it('sorts object keys at every depth and writes no whitespace', () => {
    expect(canonicalJson({ b: 1, a: { d: [3, { z: 1, y: 2 }], c: null } })).toBe(
      '{"a":{"c":null,"d":[3,{"y":2,"z":1}]},"b":1}',
    );
  });

  it('sorts keys by UTF-16 code units, not locale', () => {
    expect(canonicalJson({ b: 1, B: 2, é: 3, '\u{1F600}': 4, '\uFFFF': 5 })).toBe(
      '{"B":2,"b":1,"é":3,"\u{1F600}":4,"\uFFFF":5}',
    );
  });

  it('writes numbers in one normal form', () => {
    expect(canonicalJson([1.0, -0, 0, 1e21, 1e-7, 0.1 + 0.2, 100])).toBe(
      '[1,0,0,1e+21,1e-7,0.30000000000000004,100]',
    );
  });

  it('escapes strings as JSON does, including lone surrogates', () => {
    expect(canonicalJson('a"b\\c\n\u0001\uD800')).toBe('"a\\"b\\\\c\\n\\u0001\\ud800"');
  });

  it('omits undefined object properties and uses toJSON', () => {
    expect(canonicalJson({ a: undefined, b: new Date(0) })).toBe(
      '{"b":"1970-01-01T00:00:00.000Z"}',
    );
  });

  it('accepts a shared (non-cyclic) reference twice', () => {
    const shared = { x: 1 };
    expect(canonicalJson([shared, shared])).toBe('[{"x":1},{"x":1}]');
  });

  const refused: [string, unknown, RegExp][] = [
    ['NaN', { a: Number.NaN }, /Non-finite number NaN at \/a/],
    ['Infinity', [Number.POSITIVE_INFINITY], /Non-finite.* at \/0/],
    ['a function', { f: () => 1 }, /function.* at \/f/],
    ['a symbol', { s: Symbol('x') }, /symbol.* at \/s/],
    ['a bigint', { n: 10n }, /BigInt.* at \/n/],
    ['undefined in an array', [1, undefined], /undefined.* at \/1/],
    ['undefined at the root', undefined, /undefined.* at \(root\)/],
    ['a Map', { m: new Map() }, /Map is not a plain JSON object at \/m/],
    ['a Set', { 'a/b': new Set() }, /Set.* at \/a~1b/],
    ['a typed array', new Uint8Array(2), /Uint8Array/],
    ['a class instance', { c: new (class Point {})() }, /Point/],
  ];
  for (const [name, value, message] of refused) {
    it(`refuses ${name} with a clear error and its path`, () => {
      expect(() => canonicalJson(value)).toThrow(NotCanonicalError);
      expect(() => canonicalJson(value)).toThrow(message);
    });
  }

  it('writes flat arrays and lone primitives like nested ones, holes refused', () => {
    expect(canonicalJson(['a', 1, -0, true, null])).toBe('["a",1,0,true,null]');
    expect(canonicalJson([['a'], 'b'])).toBe('[["a"],"b"]');
    expect(canonicalJson(-0)).toBe('0');
    // biome-ignore lint/suspicious/noSparseArray: a hole is what is tested
    expect(() => canonicalJson([1, , 3])).toThrow(/undefined.* at \/1/);
    expect(() => canonicalJson(['a', Number.NaN])).toThrow(/Non-finite.* at \/1/);
  });

  it('refuses cycles', () => {
    const a: Record<string, unknown> = {};
    a.self = { back: a };
    expect(() => canonicalJson(a)).toThrow(/Cycle detected at \/self\/back/);
  });

  it('property: keys in UTF-16 code unit order, for few and many keys in any UTF-16', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.dictionary(fc.string({ unit: 'binary', maxLength: 6 }), fc.integer(), {
            maxKeys: 16,
          }),
          fc.dictionary(fc.string({ unit: 'binary', maxLength: 6 }), fc.integer(), {
            minKeys: 17,
            maxKeys: 40,
          }),
        ),
        (record) => {
          const expected = Object.keys(record).sort();
          expect(canonicalJson(record)).toBe(
            `{${expected.map((k) => `${JSON.stringify(k)}:${record[k]}`).join(',')}}`,
          );
        },
      ),
      { numRuns: 500 },
    );
  });

  it('property: key order never matters and the output parses back to an equal value', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (value) => {
        const text = canonicalJson(value);
        const parsed = JSON.parse(text);
        expect(canonicalJson(parsed)).toBe(text);
        const shuffled = JSON.parse(JSON.stringify(value), function (this: unknown, _k, v) {
          if (v && typeof v === 'object' && !Array.isArray(v)) {
            return Object.fromEntries(Object.entries(v).reverse());
          }
          return v;
        });
        expect(canonicalJson(shuffled)).toBe(text);
      }),
      { numRuns: 500 },
    );
  });

  it('property: different values encode differently', () => {
    fc.assert(
      fc.property(fc.jsonValue(), fc.jsonValue(), (a, b) => {
        const same = canonicalJson(a) === canonicalJson(b);
        expect(same).toBe(
          canonicalJson(JSON.parse(JSON.stringify(a))) ===
            canonicalJson(JSON.parse(JSON.stringify(b))),
        );
        if (same) expect(JSON.parse(canonicalJson(a))).toEqual(JSON.parse(canonicalJson(b)));
      }),
      { numRuns: 500 },
    );
  });
});
