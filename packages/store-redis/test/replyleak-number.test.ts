/**
 * A malformed integer reply is reported by its kind and size, never its bytes: a bulk string
 * where a number was due may hold a record's outcome (a caller's data), and the error's
 * message reaches logs and spans (@idem/otel records it).
 */
import { StoreUnavailableError } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { describeReply, integer } from '../src/redis-reply.js';

describe('replyleak: a malformed number reply', () => {
  it('a bulk string: StoreUnavailableError naming its size, not its bytes', () => {
    const secret = Buffer.from('{"card":"4242424242424242"}');
    let error: unknown;
    try {
      integer(secret);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(StoreUnavailableError);
    const message = (error as Error).message;
    expect(message).toContain(`a bulk string of ${secret.length} bytes`);
    expect(message).not.toContain('4242');
  });

  it('an array of bulk strings: its length only', () => {
    expect(() => integer([Buffer.from('secret-a'), Buffer.from('secret-b')])).toThrow(
      /malformed number: an array of 2 replies$/,
    );
  });

  it('a number that is not a safe integer, null, nothing: as it is', () => {
    expect(() => integer(2 ** 53)).toThrow(`malformed number: ${2 ** 53}`);
    expect(() => integer(1.5)).toThrow('malformed number: 1.5');
    expect(() => integer(null)).toThrow('malformed number: null');
    expect(() => integer(undefined)).toThrow('malformed number: undefined');
    expect(integer(7)).toBe(7);
  });
});

describe('replyleak: describeReply (also the acquire reply origin that is not a bulk string)', () => {
  it('an array of bulk strings is never joined into the message', () => {
    const text = describeReply([Buffer.from('tenant-secret'), Buffer.from('x')]);
    expect(text).toBe('an array of 2 replies');
  });
});
