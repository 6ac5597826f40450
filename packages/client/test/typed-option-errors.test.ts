import { InvalidInputError, isIdemError } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { createIdempotentFetch } from '../src/index.js';

const neverCalled = async (): Promise<Response> => {
  throw new Error('no request is sent while the options are checked');
};

// Every refusal of createIdempotentFetch's options: typed (INVALID_INPUT, an IdemError) and
// still a RangeError, which is what it threw before the library had typed errors.
const bad: [string, unknown][] = [
  ['not an object', 'retry'],
  ['a negative duration', { fetch: neverCalled, attemptTimeoutMs: -1 }],
  ['a duration past the longest timer', { fetch: neverCalled, deadlineMs: 2 ** 31 }],
  ['a count below 1', { fetch: neverCalled, maxAttempts: 0 }],
  ['a fractional count', { fetch: neverCalled, maxAttempts: 1.5 }],
  ['an unknown key mode', { fetch: neverCalled, key: 'sequential' }],
  ['a hook that is not a function', { fetch: neverCalled, onAttempt: 42 }],
  ['a fetch that is not a function', { fetch: 'https://example.test' }],
];

describe('client options: typed refusals that stay RangeErrors', () => {
  it.each(bad)('%s', (_name, options) => {
    let thrown: unknown;
    try {
      createIdempotentFetch(options as never);
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(RangeError);
    expect(thrown).toBeInstanceOf(InvalidInputError);
    expect(isIdemError(thrown)).toBe(true);
    expect((thrown as InvalidInputError).code).toBe('INVALID_INPUT');
  });

  it('good options still make a fetch', () => {
    expect(typeof createIdempotentFetch({ fetch: neverCalled, maxAttempts: 3 })).toBe('function');
  });
});
