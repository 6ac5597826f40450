// corerev3: attribute names that are not distinct were all listed whole in the message, and a
// non-key attribute name may be 64 KiB long: each is now quoted up to 64 characters.
import { InvalidInputError } from '@idem/core';
import { expect, it } from 'vitest';
import { createItemSchema } from '../src/record-item.js';

it('repeated long attribute names: the message quotes the start of each, with its length', () => {
  const long = 'a'.repeat(60_000);
  let error: Error | undefined;
  try {
    createItemSchema({ partitionKey: 'pk', keyPrefix: '' }, { status: long, fingerprint: long });
  } catch (thrown) {
    error = thrown as Error;
  }
  expect(error).toBeInstanceOf(InvalidInputError);
  expect(error?.message).toMatch(
    /^Attribute names must be distinct: "pk", "a{64}"… \(60000 chars\)/,
  );
  expect(error?.message.length).toBeLessThan(1_000);
});
