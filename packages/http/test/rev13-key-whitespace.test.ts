import { describe, expect, it } from 'vitest';
import { parseIdempotencyKey } from '../src/index.js';

// FIXED (was FINDING LOW, found through apps/llm-api/test/rev13-key-nbsp.test.ts): the field
// value was cut with String.prototype.trim, which drops Unicode white space too: a key sent
// with a NO-BREAK SPACE (byte 0xA0, read by Node as U+00A0) around it was taken as the key
// without it, instead of refused (keys are printable ASCII, never repaired). Only HTTP's
// optional white space (SP, HTAB) is dropped now, before the key and after the item.
describe('rev13: Idempotency-Key field white space', () => {
  it.each([
    ['abc\u00a0'],
    ['\u00a0abc'],
    ['"abc"\u00a0'],
    ['\u00a0"abc"'],
    ['"abc";p=1\u00a0'],
    ['abc\u2028'],
    ['\ufeffabc'],
    ['abc\u000b'],
    ['abc\u000c'],
    ['abc\n'],
    ['\r\nabc'],
  ])('refuses %j (not HTTP white space around the key)', (field) => {
    expect(parseIdempotencyKey(field).ok).toBe(false);
  });

  it.each([
    [' abc ', 'abc'],
    ['\tabc\t', 'abc'],
    [' \t "abc" \t ', 'abc'],
    ['"abc";p=1 \t', 'abc'],
    ['"a b"', 'a b'],
  ])('accepts %j as %j (SP and HTAB around the value are optional white space)', (field, key) => {
    expect(parseIdempotencyKey(field)).toEqual({ ok: true, key });
  });
});
