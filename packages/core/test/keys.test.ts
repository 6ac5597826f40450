import { describe, expect, it } from 'vitest';
import {
  batchItemKey,
  deriveKey,
  deriveStorageKey,
  fingerprint,
  generateKey,
  InvalidKeyError,
  isValidKey,
  validateKey,
} from '../src/index.js';

describe('validateKey', () => {
  it('accepts 1..255 printable ASCII characters, spaces included', () => {
    for (const key of ['a', ' ', '~', 'x'.repeat(255), 'order 42: "retry"!'])
      expect(isValidKey(key)).toBe(true);
  });
  const bad: [string, unknown, RegExp][] = [
    ['empty', '', /empty/],
    ['too long', 'x'.repeat(256), /256 characters long; at most 255/],
    ['non-ASCII', 'clé', /printable ASCII/],
    ['a control character', 'a\nb', /printable ASCII/],
    ['DEL', 'a\x7f', /printable ASCII/],
    ['not a string', 42, /must be a string/],
  ];
  for (const [name, key, message] of bad) {
    it(`refuses a key that is ${name}`, () => {
      expect(() => validateKey(key)).toThrow(InvalidKeyError);
      expect(() => validateKey(key)).toThrow(message);
      try {
        validateKey(key);
      } catch (error) {
        expect((error as InvalidKeyError).code).toBe('INVALID_KEY');
      }
    });
  }
});

describe('generateKey', () => {
  it('makes random UUID v4 keys by default', () => {
    const keys = new Set(Array.from({ length: 1000 }, () => generateKey()));
    expect(keys.size).toBe(1000);
    for (const key of keys)
      expect(key).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  });

  it('makes UUID v7 keys that carry the time and sort by it', () => {
    const t = Date.UTC(2026, 10, 28, 12, 0, 0);
    const a = generateKey({ version: 7, now: () => t });
    const b = generateKey({ version: 7, now: () => t + 1 });
    expect(a).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(Number.parseInt(a.replace(/-/g, '').slice(0, 12), 16)).toBe(t);
    expect(a < b).toBe(true);
  });
});

describe('deriveKey', () => {
  it('is deterministic and valid', () => {
    const key = deriveKey(['user-1', 'hello', 'gpt']);
    expect(key).toBe(deriveKey(['user-1', 'hello', 'gpt']));
    expect(key).toMatch(/^[0-9a-f]{64}$/);
  });

  it('tells apart parts that a naive join confuses', () => {
    expect(deriveKey(['a:b', 'c'])).not.toBe(deriveKey(['a', 'b:c']));
    expect(deriveKey(['ab', 'c'])).not.toBe(deriveKey(['a', 'bc']));
    expect(deriveKey({ user: 'u', prompt: 'p:m', model: 'x' })).not.toBe(
      deriveKey({ user: 'u', prompt: 'p', model: 'm:x' }),
    );
  });

  it('ignores object key order and takes a prefix', () => {
    expect(deriveKey({ a: 1, b: 2 })).toBe(deriveKey({ b: 2, a: 1 }));
    expect(deriveKey([1], { prefix: 'msg_' })).toMatch(/^msg_[0-9a-f]{64}$/);
  });
});

describe('batchItemKey', () => {
  it('gives each item a stable key of its own', () => {
    const keys = Array.from({ length: 50 }, (_, i) => batchItemKey('batch-1', i));
    expect(new Set(keys).size).toBe(50);
    expect(batchItemKey('batch-1', 3)).toBe(keys[3]);
    expect(batchItemKey('batch-2', 3)).not.toBe(keys[3]);
    expect(batchItemKey('batch-1', '3')).not.toBe(keys[3]);
  });

  it('refuses a bad batch id or index', () => {
    expect(() => batchItemKey('', 0)).toThrow(/batchId/);
    expect(() => batchItemKey('b', -1)).toThrow(/non-negative/);
    expect(() => batchItemKey('b', 1.5)).toThrow(/non-negative/);
  });
});

describe('deriveStorageKey', () => {
  it('separates scopes and bounds the length whatever the key', () => {
    const a = deriveStorageKey(['tenant-a', 'POST /charges'], 'k');
    const b = deriveStorageKey(['tenant-b', 'POST /charges'], 'k');
    expect(a).not.toBe(b);
    expect(deriveStorageKey(['tenant-a', 'POST /charges'], 'x'.repeat(255))).toHaveLength(64);
    expect(deriveStorageKey(['t:a', 'b'], 'k')).not.toBe(deriveStorageKey(['t', 'a:b'], 'k'));
  });

  it('validates the client key', () => {
    expect(() => deriveStorageKey('s', '')).toThrow(InvalidKeyError);
  });
});

describe('fingerprint', () => {
  const base = { method: 'POST', route: '/v1/messages', body: { prompt: 'hi', model: 'm', n: 1 } };

  it('does not depend on key order, number spelling or method case', () => {
    expect(fingerprint(base)).toBe(
      fingerprint({
        method: 'post',
        route: '/v1/messages',
        body: { n: 1.0, model: 'm', prompt: 'hi' },
      }),
    );
  });

  it('changes with every part that matters', () => {
    const fp = fingerprint(base);
    expect(fingerprint({ ...base, method: 'PATCH' })).not.toBe(fp);
    expect(fingerprint({ ...base, route: '/v1/other' })).not.toBe(fp);
    expect(fingerprint({ ...base, body: { ...base.body, n: 2 } })).not.toBe(fp);
    expect(fingerprint({ ...base, extras: { tenant: 't1' } })).not.toBe(fp);
  });

  it('cannot be confused by moving text between parts', () => {
    expect(fingerprint({ method: 'POST', route: '/a', extras: { x: 'b' } })).not.toBe(
      fingerprint({ method: 'POST', route: '/ab', extras: { x: '' } }),
    );
    expect(fingerprint({ route: 'a', body: new Uint8Array([1]) })).not.toBe(
      fingerprint({ route: 'a\u0001' }),
    );
  });

  it('leaves out excluded fields, top level and nested', () => {
    const a = fingerprint({
      body: { amount: 5, sentAt: 1, meta: { trace: 'x', keep: 1 } },
      exclude: ['sentAt', 'meta.trace'],
    });
    const b = fingerprint({
      body: { amount: 5, sentAt: 2, meta: { trace: 'y', keep: 1 } },
      exclude: ['sentAt', 'meta.trace'],
    });
    const c = fingerprint({
      body: { amount: 5, sentAt: 2, meta: { trace: 'y', keep: 2 } },
      exclude: ['sentAt', 'meta.trace'],
    });
    expect(a).toBe(b);
    expect(c).not.toBe(a);
  });

  it('an excluded path that names an inherited property (constructor, __proto__) changes nothing', () => {
    const body = { amount: 5 };
    for (const path of ['constructor.name', '__proto__.x', 'toString', 'amount.constructor']) {
      expect(fingerprint({ body, exclude: [path] })).toBe(fingerprint({ body }));
    }
    // An own __proto__ member (as JSON.parse makes it) is a member like any other.
    const parsed = (text: string) => JSON.parse(text) as { [key: string]: never };
    const withProto = parsed('{"__proto__":{"trace":1,"keep":1},"a":1}');
    const otherTrace = parsed('{"__proto__":{"trace":2,"keep":1},"a":1}');
    const otherKeep = parsed('{"__proto__":{"trace":1,"keep":2},"a":1}');
    const exclude = ['__proto__.trace'];
    expect(fingerprint({ body: withProto, exclude })).toBe(
      fingerprint({ body: otherTrace, exclude }),
    );
    expect(fingerprint({ body: withProto, exclude })).not.toBe(
      fingerprint({ body: otherKeep, exclude }),
    );
  });

  it('tells raw bytes from JSON text', () => {
    expect(fingerprint({ body: new TextEncoder().encode('"x"') })).not.toBe(
      fingerprint({ body: 'x' }),
    );
  });
});
