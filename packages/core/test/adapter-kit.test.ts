import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import {
  blocksAcquire,
  checkDuration,
  checkOutcome,
  checkStoreString,
  checkTimerMs,
  durationText,
  forcedReleaseOwner,
  guardStoreCall,
  InvalidInputError,
  LeaseLostError,
  NOT_OWNER,
  OutcomeTooLargeError,
  ownerWriteResult,
  readClock,
  type StoredRecord,
  StoreFullError,
  StoreUnavailableError,
  sameBytes,
  toStoreError,
} from '../src/index.js';

const rules = {
  service: 'Thing',
  isFull: (error: unknown, operation: string) =>
    operation === 'acquire' && String(error).includes('full'),
  isUnsent: (error: unknown) => String(error).includes('offline'),
  hint: () => ' (hint)',
};

describe('adapter kit: typed store errors', () => {
  it('wraps a service error with its cause, names the service and the operation', () => {
    const cause = new Error('connection reset');
    const error = toStoreError(rules, 'complete', cause);
    expect(error).toBeInstanceOf(StoreUnavailableError);
    expect(error.message).toBe('Thing complete failed: connection reset (hint)');
    expect(error.cause).toBe(cause);
    expect((error as StoreUnavailableError).unsent).toBe(false);
  });

  it('marks a refusal before sending as unsent, a full store as STORE_FULL (acquire only)', () => {
    expect((toStoreError(rules, 'get', new Error('offline')) as StoreUnavailableError).unsent).toBe(
      true,
    );
    const full = toStoreError(rules, 'acquire', new Error('disk full'));
    expect(full).toBeInstanceOf(StoreFullError);
    expect(full.cause).toBeInstanceOf(Error);
    expect(toStoreError(rules, 'complete', new Error('disk full'))).toBeInstanceOf(
      StoreUnavailableError,
    );
  });

  it("passes idem's own errors through unchanged", () => {
    const own = new LeaseLostError();
    expect(toStoreError(rules, 'extend', own)).toBe(own);
  });

  it('guardStoreCall types a synchronous throw and a rejection alike', async () => {
    await expect(
      guardStoreCall(rules, 'get', () => {
        throw new Error('sync');
      }),
    ).rejects.toMatchObject({
      code: 'STORE_UNAVAILABLE',
      message: 'Thing get failed: sync (hint)',
    });
    await expect(
      guardStoreCall(rules, 'get', () => Promise.reject(new Error('async'))),
    ).rejects.toBeInstanceOf(StoreUnavailableError);
    await expect(guardStoreCall(rules, 'get', async () => 7)).resolves.toBe(7);
  });

  it('guardStoreCall with a time limit fails a silent call, and its late failure stays handled', async () => {
    let fail: (error: Error) => void = () => {};
    const silent = new Promise<never>((_, reject) => {
      fail = reject;
    });
    const started = Date.now();
    await expect(guardStoreCall(rules, 'acquire', () => silent, { timeoutMs: 30 })).rejects.toThrow(
      'Thing acquire timed out after 30 ms',
    );
    expect(Date.now() - started).toBeLessThan(5_000);
    fail(new Error('late')); // settles nothing; vitest would report an unhandled rejection
    await new Promise((resolve) => setTimeout(resolve, 10));
  });
});

describe('adapter kit: input checks', () => {
  it('durations: finite, non-negative, at most MAX_SAFE_INTEGER unless told', () => {
    expect(checkDuration('leaseMs', 0)).toBe(0);
    expect(durationText('leaseMs', 1.2)).toBe('2');
    for (const bad of [-1, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 53, '5', undefined]) {
      expect(() => checkDuration('leaseMs', bad)).toThrow(InvalidInputError);
    }
    expect(checkDuration('leaseMs', 2 ** 60, Number.MAX_VALUE)).toBe(2 ** 60);
    expect(() => checkTimerMs('timeoutMs', 2 ** 31)).toThrow(InvalidInputError);
    expect(checkTimerMs('timeoutMs', 2 ** 31 - 1)).toBe(2 ** 31 - 1);
  });

  it('outcomes: a Uint8Array from any realm, refused past the limit before anything is written', () => {
    const foreign = runInNewContext('new Uint8Array([1, 2, 3])') as Uint8Array;
    expect(checkOutcome(foreign)).toBe(foreign);
    expect(checkOutcome(Buffer.from('ab'), 2)).toHaveLength(2);
    expect(() => checkOutcome('text')).toThrow(InvalidInputError);
    expect(() => checkOutcome(new Uint16Array(2))).toThrow(InvalidInputError);
    expect(() => checkOutcome(new Uint8Array(3), 2)).toThrow(OutcomeTooLargeError);
  });

  it('strings: well-formed, bounded, NUL and extra rules on request', () => {
    expect(checkStoreString('key', 'abc', { maxLength: 3 })).toBe('abc');
    expect(() => checkStoreString('key', 'abcd', { maxLength: 3 })).toThrow(/at most 3/);
    expect(() => checkStoreString('key', '')).toThrow(/non-empty/);
    expect(checkStoreString('fp', '', { allowEmpty: true })).toBe('');
    expect(() => checkStoreString('key', 'a\uD800')).toThrow(/well-formed/);
    expect(checkStoreString('key', 'a\uD800', { wellFormed: false })).toBe('a\uD800');
    expect(() => checkStoreString('key', 'a\0', { allowNul: false })).toThrow(/NUL/);
    const noBrace = { test: (v: string) => !v.includes('{'), says: 'without {' };
    expect(() => checkStoreString('key', 'a{', { extra: noBrace })).toThrow(/without \{/);
    expect(() => checkStoreString('key', 5)).toThrow(InvalidInputError);
  });

  it('clocks: a reading that is not a finite number is refused', () => {
    expect(readClock({ now: () => 5 })).toBe(5);
    expect(() => readClock({ now: () => Number.NaN })).toThrow(InvalidInputError);
  });
});

describe('adapter kit: answers', () => {
  it('owner writes', () => {
    expect(ownerWriteResult(false)).toEqual({ ok: false, reason: 'not_owner' });
    expect(ownerWriteResult(false, 9)).toBe(NOT_OWNER);
    expect(ownerWriteResult(true)).toEqual({ ok: true });
    expect(ownerWriteResult(true, 9)).toEqual({ ok: true, leaseUntil: 9 });
  });

  it('what blocks an acquire: a live lease or a completed record within retention', () => {
    const record = (over: Partial<StoredRecord>): StoredRecord => ({
      status: 'in_progress',
      fingerprint: 'f',
      owner: 'o',
      fence: 1,
      leaseUntil: 100,
      expiresAt: 200,
      ...over,
    });
    expect(blocksAcquire(record({}), 99)).toBe(true);
    expect(blocksAcquire(record({}), 100)).toBe(false);
    expect(blocksAcquire(record({ status: 'completed' }), 150)).toBe(true);
    expect(blocksAcquire(record({ status: 'completed' }), 200)).toBe(false);
    expect(blocksAcquire(record({ status: 'released' }), 50)).toBe(false);
  });

  it('bytes compare by value; forced-release owners are fresh', () => {
    expect(sameBytes(new Uint8Array([1, 2]), Buffer.from([1, 2]))).toBe(true);
    expect(sameBytes(new Uint8Array([1, 2]), new Uint8Array([1, 3]))).toBe(false);
    expect(sameBytes(new Uint8Array([1]), new Uint8Array([1, 0]))).toBe(false);
    expect(forcedReleaseOwner()).not.toBe(forcedReleaseOwner());
  });
});
