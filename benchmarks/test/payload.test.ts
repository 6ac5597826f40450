import { describe, expect, it } from 'vitest';
import { checkReplayed, RESULT_BYTES, resultFor } from '../src/payload.js';

describe('payload', () => {
  it('makes a result whose JSON is RESULT_BYTES characters for any key that leaves room', () => {
    for (const key of ['k', 'r0c64-done-255', 'with "quotes" and \\', 'ключ-✓', 'x'.repeat(300)]) {
      expect(JSON.stringify(resultFor(key)).length).toBe(
        Math.max(RESULT_BYTES, JSON.stringify({ key, data: '' }).length),
      );
    }
  });

  it('accepts the recorded result and refuses another key, shorter or missing data', () => {
    const key = 'r1c1-done-7';
    expect(() => checkReplayed(key, resultFor(key), 'x')).not.toThrow();
    expect(() => checkReplayed(key, resultFor('r1c1-done-8'), 'x')).toThrow(/did not return/);
    expect(() => checkReplayed(key, { key, data: 'x' }, 'x')).toThrow(/did not return/);
    expect(() => checkReplayed(key, { key }, 'x')).toThrow(/did not return/);
    expect(() => checkReplayed(key, undefined, 'x')).toThrow(/did not return/);
  });
});
