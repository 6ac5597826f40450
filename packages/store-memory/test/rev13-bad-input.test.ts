/**
 * rev13 adversarial review: bad options to createMemoryStore must be InvalidInputError, never
 * a TypeError.
 */
import { InvalidInputError } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { createMemoryStore } from '../src/index.js';

describe('rev13: createMemoryStore options', () => {
  // FIXED (was FINDING LOW; createMemoryStore checks its options with checkObject): createMemoryStore(null) throws a TypeError ("Cannot read properties of null
  // (reading 'clock')"): the default `{}` applies to undefined only. createMemoryStore(5) and
  // createMemoryStore('x') are taken as `{}`, silently. Every other bad option is an
  // InvalidInputError. Fix: checkObject on the options (undefined still means defaults).
  it('options that are not an object are refused with InvalidInputError', () => {
    for (const options of [null, 5, 'x', true]) {
      expect(() => createMemoryStore(options as never), String(options)).toThrow(InvalidInputError);
    }
    const store = createMemoryStore(undefined);
    expect(store.size).toBe(0);
    void store.close();
  });
});
