// coreleft2: a refused table name is quoted by core's quotedInput (it was cut at 80 characters
// by a slice of its own, with no length): the bound is kept, the length now said.
import { InvalidInputError } from '@idem/core';
import { expect, it } from 'vitest';
import { parseTableName } from '../src/table-name.js';

it('a huge refused table name: its first 80 characters and its length', () => {
  let error: Error | undefined;
  try {
    parseTableName('T'.repeat(10_000_000));
  } catch (thrown) {
    error = thrown as Error;
  }
  expect(error).toBeInstanceOf(InvalidInputError);
  expect(error?.message).toMatch(/; got "T{80}"… \(10000000 chars\)$/);
  expect(error?.message.length).toBeLessThan(400);
});
