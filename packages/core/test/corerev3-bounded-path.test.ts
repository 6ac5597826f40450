// corerev3: a NotCanonicalError's message showed the whole path of the refused value, made of
// the value's keys (anyone's: a 1 MB key). The message now shows its first 256 characters and
// its length; `path` keeps it whole.
import { expect, it } from 'vitest';
import { canonicalJson, NotCanonicalError } from '../src/index.js';
import { thrown } from './support/settle.js';

it('a refused value under a huge key: the message is bounded, path is whole', () => {
  const key = 'k'.repeat(1_000_000);
  const error = thrown(() => canonicalJson({ body: { [key]: 1n } })) as NotCanonicalError;
  expect(error).toBeInstanceOf(NotCanonicalError);
  expect(error.path).toBe(`/body/${key}`);
  expect(error.message).toMatch(/^BigInt is not JSON .* at \/body\/k{250}… \(1000006 chars\)$/);
  expect(error.message.length).toBeLessThan(400);
});

it('a short path is shown whole, as before', () => {
  const error = thrown(() => canonicalJson({ a: [1, Number.NaN] })) as NotCanonicalError;
  expect(error.message).toMatch(/ at \/a\/1$/);
});
