import { describe, expect, it } from 'vitest';
import { canonicalJson, MAX_CANONICAL_DEPTH, NotCanonicalError } from '../src/index.js';

/** `[[[...]]]` nested `depth` levels, built without recursion. */
function nestedArrays(depth: number): unknown {
  let value: unknown = 0;
  for (let i = 0; i < depth; i++) value = [value];
  return value;
}

function nestedObjects(depth: number): unknown {
  let value: unknown = 'leaf';
  for (let i = 0; i < depth; i++) value = { a: value };
  return value;
}

describe('canonicalJson depth bound', () => {
  it('refuses 100_000 levels of nesting with NotCanonicalError (too_deep), not a RangeError', () => {
    // The shape a hostile client sends: JSON.parse takes it, recursion would not.
    const parsed = JSON.parse(`${'['.repeat(100_000)}${']'.repeat(100_000)}`);
    for (const value of [parsed, nestedArrays(100_000), nestedObjects(100_000)]) {
      const error = (() => {
        try {
          canonicalJson(value);
        } catch (e) {
          return e;
        }
      })();
      expect(error).toBeInstanceOf(NotCanonicalError);
      expect(error).toMatchObject({ code: 'NOT_CANONICAL', reason: 'too_deep' });
    }
  });

  it('accepts exactly MAX_CANONICAL_DEPTH levels and refuses one more', () => {
    expect(MAX_CANONICAL_DEPTH).toBe(256);
    const ok = nestedArrays(MAX_CANONICAL_DEPTH);
    expect(canonicalJson(ok)).toBe(`${'['.repeat(256)}0${']'.repeat(256)}`);
    expect(canonicalJson(nestedObjects(MAX_CANONICAL_DEPTH))).toBe(
      `${'{"a":'.repeat(256)}"leaf"${'}'.repeat(256)}`,
    );
    expect(() => canonicalJson(nestedArrays(MAX_CANONICAL_DEPTH + 1))).toThrow(
      expect.objectContaining({ reason: 'too_deep' }),
    );
  });

  it('the too-deep path it shows is cut between characters, never inside a surrogate pair', () => {
    // Each segment '/😀' is three code units: a high surrogate at 1, 4, ... 199, so a cut at 200
    // code units would end on a high surrogate without its low half.
    let value: unknown = 'leaf';
    for (let i = 0; i < MAX_CANONICAL_DEPTH + 10; i++) value = { '\u{1F600}': value };
    let error: unknown;
    try {
      canonicalJson(value);
    } catch (e) {
      error = e;
    }
    expect(error).toMatchObject({ code: 'NOT_CANONICAL', reason: 'too_deep' });
    const path = (error as NotCanonicalError).path;
    expect(path.endsWith('...')).toBe(true);
    // No lone surrogate (a half of a pair without the other).
    expect(path).not.toMatch(
      /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/,
    );
    expect(path).toBe(`${'/\u{1F600}'.repeat(66)}/...`);
  });

  it('other refusals carry reason not_json', () => {
    expect(() => canonicalJson({ n: 1n })).toThrow(expect.objectContaining({ reason: 'not_json' }));
  });
});

describe('canonicalJson toJSON chains', () => {
  it('an endless chain of toJSON results is refused as too deep, not a stack overflow', () => {
    const endless = (): unknown => ({ toJSON: endless });
    expect(() => canonicalJson({ a: endless() })).toThrow(
      expect.objectContaining({ code: 'NOT_CANONICAL', reason: 'too_deep' }),
    );
  });
});
