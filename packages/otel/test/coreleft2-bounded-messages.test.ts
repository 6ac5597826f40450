// coreleft2: a refused string option of createOtelListener is quoted by core's quotedInput
// (its first 40 characters, otel's bound before, and now its length), as every idem package
// quotes one.
import { expect, it } from 'vitest';
import { createOtelListener } from '../src/index.js';

it('a huge string where a tracer or a flag was expected: a short message naming its length', () => {
  for (const options of [{ tracer: 't'.repeat(10_000_000) }, { spans: 'y'.repeat(10_000_000) }]) {
    let error: Error | undefined;
    try {
      createOtelListener(options as never);
    } catch (thrown) {
      error = thrown as Error;
    }
    expect(error).toBeInstanceOf(RangeError);
    expect(error?.message).toMatch(/got "(t|y){40}"… \(10000000 chars\)$/);
    expect(error?.message.length).toBeLessThan(300);
  }
  // A string of at most 40 characters in full, as before.
  let short: Error | undefined;
  try {
    createOtelListener({ tracer: 'x'.repeat(40) } as never);
  } catch (thrown) {
    short = thrown as Error;
  }
  expect(short?.message).toMatch(new RegExp(`got "${'x'.repeat(40)}"$`));
});
