import { describe, expect, it } from 'vitest';
import { formatIdempotencyKey, parseIdempotencyKey } from '../src/index.js';

describe('parseIdempotencyKey', () => {
  it.each([
    ['"abc"', 'abc'],
    ['abc', 'abc'],
    ['  "abc"  ', 'abc'],
    ['"a\\"b"', 'a"b'],
    ['"a\\\\b"', 'a\\b'],
    ['"abc";p=1', 'abc'],
    ['"abc";p=1;q;r="x y"', 'abc'],
    ['"a, b"', 'a, b'],
    ['8e03978e-40d5-43e8-bc93-6894a57f9324', '8e03978e-40d5-43e8-bc93-6894a57f9324'],
  ])('accepts %s', (field, key) => {
    expect(parseIdempotencyKey(field)).toEqual({ ok: true, key });
  });

  it.each([
    ['', /empty/],
    ['""', /empty/],
    ['"abc', /closing quote/],
    ['"a\\x"', /escapes/],
    ['"ab"c', /after the quoted/],
    ['"a", "b"', /after the quoted/],
    ['"a";x=1, "b"', /after the quoted/],
    ['"a";, "b"', /after the quoted/],
    ['"a";!!', /after the quoted/],
    ['a"b', /bare/],
    ['a\\b', /bare/],
    ['one, two', /commas/],
    ['"caf\u00e9"', /printable ASCII/],
    ['caf\u00e9', /printable ASCII/],
    ['x'.repeat(256), /at most 255/],
  ])('refuses %s', (field, reason) => {
    const parsed = parseIdempotencyKey(field);
    expect(parsed.ok).toBe(false);
    if (!parsed.ok) expect(parsed.reason).toMatch(reason);
  });

  it('formats a key that parses back to itself', () => {
    for (const key of ['abc', 'a"b\\c', ' spaced ']) {
      expect(parseIdempotencyKey(formatIdempotencyKey(key))).toEqual({ ok: true, key });
    }
  });
});
