import { DEFAULT_RECORDED_HEADERS } from '@idem/http';
import { describe, expect, it } from 'vitest';
import { RECORDED_HEADERS } from '../src/index.js';

// The suite spells the recorded headers out (it is published on its own and @idem/http is only
// its peer, built after it), so this is what keeps the copy from drifting from @idem/http's.
describe('RECORDED_HEADERS', () => {
  it("is @idem/http's DEFAULT_RECORDED_HEADERS, name for name", () => {
    expect([...RECORDED_HEADERS].sort()).toEqual([...DEFAULT_RECORDED_HEADERS].sort());
    expect(new Set(RECORDED_HEADERS).size).toBe(RECORDED_HEADERS.length);
  });
});
