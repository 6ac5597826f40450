// coreleft2: a refused string option of createOtelListener is quoted by core's quotedInput
// (the first 64 characters and the length), as every idem package quotes one.
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
    expect(error?.message).toMatch(/got "(t|y){64}"… \(10000000 chars\)$/);
    expect(error?.message.length).toBeLessThan(300);
  }
  // Short ones as before, in full (they were cut at 40).
  let short: Error | undefined;
  try {
    createOtelListener({ tracer: 'x'.repeat(50) } as never);
  } catch (thrown) {
    short = thrown as Error;
  }
  expect(short?.message).toMatch(new RegExp(`got "${'x'.repeat(50)}"$`));
});
