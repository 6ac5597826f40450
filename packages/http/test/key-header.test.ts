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

  // RFC 8941 3.1.2: parameters = *( ";" *SP param-key [ "=" param-value ] ), where a value
  // is any bare item and a key without a value is the boolean true.
  it.each([
    ['a byte sequence', '"k";p=:aGk=:'],
    ['a byte sequence without padding', '"k";p=:aGk:'],
    ['an empty byte sequence', '"k";p=::'],
    ['a bare key (boolean true)', '"k";p'],
    ['booleans', '"k";p=?0;q=?1'],
    ['integers', '"k";p=-12;q=123456789012345;r=0'],
    ['decimals', '"k";p=1.5;q=-123456789012.123'],
    ['tokens', `"k";p=tok/en:x;q=*star;r=A!#$%&'*+-.^_\`|~9`],
    ['strings with escapes', '"k";p="s \\"q\\\\";q=""'],
    ['spaces after the semicolon', '"k"; p=1;  q'],
    ['keys of every allowed character', '"k";*a0_-.*=1'],
    ['several forms at once', '"k";a=1;b="s";c=:AA==:;d=?1;e;f=x;g=2.25'],
  ])('accepts parameters: %s', (_name, field) => {
    expect(parseIdempotencyKey(field)).toEqual({ ok: true, key: 'k' });
  });

  it.each([
    ['a boolean other than ?0 or ?1', '"k";p=?2'],
    ['a lone ?', '"k";p=?'],
    ['an integer of 16 digits', '"k";p=1234567890123456'],
    ['a decimal with 4 fraction digits', '"k";p=1.1234'],
    ['a decimal with 13 integer digits', '"k";p=1234567890123.1'],
    ['a decimal without fraction digits', '"k";p=1.'],
    ['a number followed by letters', '"k";p=1x'],
    ['a token starting with a digit-like sign', '"k";p=-x'],
    ['an unterminated byte sequence', '"k";p=:aGk='],
    ['a byte sequence with a non-base64 character', '"k";p=:a$k:'],
    ['a byte sequence with padding inside', '"k";p=:a=bc:'],
    ['a byte sequence of impossible length', '"k";p=:abcde:'],
    ['an upper-case key', '"k";P=1'],
    ['a key starting with a digit', '"k";1p=1'],
    ['an empty value', '"k";p='],
    ['an unterminated string', '"k";p="abc'],
    ['a string with a bad escape', '"k";p="a\\n"'],
    ['a string with a non-ASCII character', '"k";p="caf\u00e9"'],
    ['a space before the semicolon', '"k" ;p=1'],
    ['a missing key', '"k";=1'],
    ['a date (RFC 9651, not RFC 8941)', '"k";p=@1659578233'],
    ['a second item joined by a comma', '"k";p=:aGk=:, "j"'],
  ])('refuses parameters: %s', (_name, field) => {
    const parsed = parseIdempotencyKey(field);
    expect(parsed.ok).toBe(false);
    if (!parsed.ok) expect(parsed.reason).toMatch(/after the quoted/);
  });

  it('formats a key that parses back to itself', () => {
    for (const key of ['abc', 'a"b\\c', ' spaced ']) {
      expect(parseIdempotencyKey(formatIdempotencyKey(key))).toEqual({ ok: true, key });
    }
  });
});
