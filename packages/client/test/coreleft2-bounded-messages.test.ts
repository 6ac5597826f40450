// coreleft2: a refused string option was quoted in full in the error message (a 10 MB string
// ended up in it). It is now quoted by core's quotedInput: the first 64 characters and the
// length.
import { describe, expect, it } from 'vitest';
import { createIdempotentFetch } from '../src/index.js';

const HUGE = 10_000_000;
const neverCalled = async (): Promise<Response> => {
  throw new Error('no request is sent while the options are checked');
};

function refusal(options: unknown): Error {
  try {
    createIdempotentFetch(options as never);
  } catch (error) {
    return error as Error;
  }
  throw new Error('expected a refusal');
}

describe('client: refused string options are quoted bounded', () => {
  const cases: [string, Record<string, unknown>, RegExp][] = [
    [
      'fetch',
      { fetch: 'f'.repeat(HUGE) },
      /^fetch must be a function, got "f{64}"… \(10000000 chars\)$/,
    ],
    [
      'key',
      { fetch: neverCalled, key: 'k'.repeat(HUGE) },
      /^key must be 'random', 'content' or a function, got "k{64}"… \(10000000 chars\)$/,
    ],
    [
      'keyFormat',
      { fetch: neverCalled, keyFormat: 'b'.repeat(HUGE) },
      /^keyFormat must be 'sf-string' or 'bare', got "b{64}"… \(10000000 chars\)$/,
    ],
    [
      'headerName',
      { fetch: neverCalled, headerName: 'h '.repeat(HUGE / 2) },
      /^headerName must be an HTTP token .*, got "(h ){32}"… \(10000000 chars\)$/,
    ],
  ];
  it.each(cases)('%s', (_name, options, message) => {
    const error = refusal(options);
    expect(error).toBeInstanceOf(RangeError);
    expect(error.message).toMatch(message);
    expect(error.message.length).toBeLessThan(400);
  });

  it('a short refused string is still quoted in full', () => {
    expect(refusal({ fetch: neverCalled, keyFormat: 'quoted' }).message).toBe(
      "keyFormat must be 'sf-string' or 'bare', got \"quoted\"",
    );
  });
});
