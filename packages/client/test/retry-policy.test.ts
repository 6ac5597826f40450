import { describe, expect, it } from 'vitest';
import {
  formatKeyHeader,
  isRetryableStatus,
  parseKeyHeader,
  parseRetryAfter,
} from '../src/index.js';
import { backoffDelay } from '../src/retry-policy.js';

describe('isRetryableStatus', () => {
  it('retries 408, 425, 429 and 5xx, and nothing else (409 only when in progress)', () => {
    const retried = [];
    for (let status = 100; status < 600; status++)
      if (isRetryableStatus(status)) retried.push(status);
    expect(retried.filter((s) => s < 500)).toEqual([408, 425, 429]);
    expect(retried.filter((s) => s >= 500)).toHaveLength(100);
  });
});

describe('parseRetryAfter', () => {
  const now = Date.UTC(2026, 10, 28, 4, 0, 0);

  it('reads delay-seconds', () => {
    expect(parseRetryAfter('1', now)).toBe(1_000);
    expect(parseRetryAfter(' 120 ', now)).toBe(120_000);
    expect(parseRetryAfter('0', now)).toBe(0);
  });

  it('reads an HTTP date relative to now, and a past date as 0', () => {
    expect(parseRetryAfter('Sat, 28 Nov 2026 04:00:05 GMT', now)).toBe(5_000);
    expect(parseRetryAfter('Sat, 28 Nov 2026 03:59:00 GMT', now)).toBe(0);
  });

  it('ignores absent and malformed values', () => {
    expect(parseRetryAfter(null, now)).toBeUndefined();
    expect(parseRetryAfter('', now)).toBeUndefined();
    expect(parseRetryAfter('-1', now)).toBeUndefined();
    expect(parseRetryAfter('1.5', now)).toBeUndefined();
    expect(parseRetryAfter('soon', now)).toBeUndefined();
    expect(parseRetryAfter('+5', now)).toBeUndefined();
    expect(parseRetryAfter('5s', now)).toBeUndefined();
    expect(parseRetryAfter('5, 7', now)).toBeUndefined();
  });

  it('refuses text that is no HTTP date, though Date.parse would take it', () => {
    expect(parseRetryAfter('tomorrow 5', now)).toBeUndefined();
    expect(parseRetryAfter('a 2027', now)).toBeUndefined();
    expect(parseRetryAfter('Nov 28 2026', now)).toBeUndefined();
    expect(parseRetryAfter('Sat, 28 Nov 2026 04:00:05 PST', now)).toBeUndefined();
    expect(parseRetryAfter('Sat, 31 Nov 2026 04:00:05 GMT', now)).toBeUndefined();
  });

  it('reads the obsolete RFC 850 and asctime date forms as GMT', () => {
    expect(parseRetryAfter('Saturday, 28-Nov-26 04:00:07 GMT', now)).toBe(7_000);
    expect(parseRetryAfter('Sat Nov 28 04:00:09 2026', now)).toBe(9_000);
    expect(parseRetryAfter('Sat Nov  8 04:00:09 2026', now)).toBe(0);
  });

  it('keeps a huge value finite', () => {
    const wait = parseRetryAfter('9'.repeat(400), now);
    expect(Number.isSafeInteger(wait)).toBe(true);
  });
});

describe('backoffDelay (full jitter)', () => {
  const settings = (r: number) => ({ initialDelayMs: 100, maxDelayMs: 1_000, random: () => r });

  it('draws between 0 and a ceiling that doubles per retry', () => {
    expect([1, 2, 3, 4].map((retry) => backoffDelay(retry, settings(0.999_999)))).toEqual([
      99, 199, 399, 799,
    ]);
    expect(backoffDelay(3, settings(0))).toBe(0);
    expect(backoffDelay(3, settings(0.5))).toBe(200);
  });

  it('caps the ceiling at maxDelayMs', () => {
    expect(backoffDelay(5, settings(0.999_999))).toBe(999);
    expect(backoffDelay(60, settings(0.999_999))).toBe(999);
  });
});

describe('key header', () => {
  it('writes a Structured Field String with escapes and reads it back', () => {
    expect(formatKeyHeader('abc', 'sf-string')).toBe('"abc"');
    expect(formatKeyHeader('a"b\\c', 'sf-string')).toBe('"a\\"b\\\\c"');
    expect(parseKeyHeader(formatKeyHeader('a"b\\c', 'sf-string'))).toBe('a"b\\c');
    expect(formatKeyHeader('abc', 'bare')).toBe('abc');
    expect(parseKeyHeader('abc')).toBe('abc');
  });
});
