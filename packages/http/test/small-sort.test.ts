import { describe, expect, it } from 'vitest';
import { byCodeUnits, sortInPlace } from '../src/small-sort.js';

// A fixed pseudo-random sequence, so a failure reproduces.
function random(seed: number): () => number {
  let state = seed;
  return () => {
    state = (state * 1_103_515_245 + 12_345) % 2 ** 31;
    return state / 2 ** 31;
  };
}

describe('sortInPlace', () => {
  it('orders as a stable Array.prototype.sort does, short lists and long ones', () => {
    const next = random(7);
    const alphabet = ['a', 'b', 'B', 'é', '\ud83d\ude00', '', 'ab', 'a\u0000'];
    for (let round = 0; round < 500; round++) {
      const length = Math.floor(next() * 24);
      const list = Array.from({ length }, (_, i) => ({
        name: alphabet[Math.floor(next() * alphabet.length)] as string,
        at: i,
      }));
      const compare = (a: { name: string }, b: { name: string }) => byCodeUnits(a.name, b.name);
      const expected = [...list].sort(compare);
      const sorted = sortInPlace(list, compare);
      expect(sorted).toBe(list);
      expect(sorted).toEqual(expected);
    }
  });

  it('orders strings by UTF-16 code units, as sort() without a compare function', () => {
    const names = [
      'query',
      'content-type',
      'header:x-a',
      'extra:b',
      'extra:a',
      '\ud83d\ude00',
      'ｚ',
    ];
    expect(sortInPlace([...names], byCodeUnits)).toEqual([...names].sort());
  });
});
