import { canonicalJson } from '@idem/core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { bodyFromParsed } from '../src/index.js';

const RUNS = Number(process.env.IDEM_PROPERTY_RUNS) || (process.env.CI ? 100 : 300);

// bodyFromParsed hands a parser's plain result to the fingerprint as it is, without the
// second parse of its JSON text it used to make: the canonical JSON (and so the fingerprint)
// must be exactly that of the value read back from the text, for every value.
function readBack(value: unknown): string {
  return canonicalJson(JSON.parse(JSON.stringify(value)));
}

function canonicalOf(value: unknown): string {
  const body = bodyFromParsed(value, 'application/json', 1_048_576);
  if (body.kind !== 'json') throw new Error(`not json: ${body.kind}`);
  return canonicalJson(body.value);
}

class Money {
  constructor(readonly cents: number) {}
}

describe('bodyFromParsed', () => {
  it('gives the canonical JSON of the value read back from its text, for any JSON value', () => {
    fc.assert(
      // Objects and arrays: a parsed string is its bytes, and null is no body.
      fc.property(
        fc.oneof(
          fc.array(fc.jsonValue({ maxDepth: 5 })),
          fc.dictionary(fc.string(), fc.jsonValue({ maxDepth: 5 })),
        ),
        (value) => {
          expect(canonicalOf(value)).toBe(readBack(value));
        },
      ),
      { numRuns: RUNS },
    );
  });

  it('reads back what JSON text changes: toJSON, undefined, functions, holes, -0, classes', () => {
    const at = new Date(0);
    const values: unknown[] = [
      { at },
      { a: undefined, b: 1 },
      { f: () => 1, s: Symbol('s'), n: 2 },
      [undefined, () => 1, 3],
      // biome-ignore lint/suspicious/noSparseArray: a hole is what is tested
      [1, , 3],
      { zero: -0, list: [-0] },
      { money: new Money(5) },
      { map: new Map([['a', 1]]) },
      { toJSON: () => ({ replaced: true }) },
      { nested: { deeper: { toJSON: () => 'x' } } },
      Object.assign(Object.create({ inherited: 1 }), { own: 2 }),
      JSON.parse('{"__proto__": {"x": 1}, "y": 2}'),
      { big: 1e21, small: 5e-324, text: 'é\ud800' },
    ];
    for (const value of values) expect(canonicalOf(value)).toBe(readBack(value));
  });

  it('still refuses a body past the limit, ASCII or not', () => {
    expect(() => bodyFromParsed({ a: 'x'.repeat(20) }, 'application/json', 20)).toThrow(
      /larger than 20 bytes/,
    );
    expect(() => bodyFromParsed({ a: 'é'.repeat(8) }, 'application/json', 20)).toThrow(
      /larger than 20 bytes/,
    );
    expect(bodyFromParsed({ a: 'x'.repeat(12) }, 'application/json', 20).kind).toBe('json');
  });
});
