import { vi } from 'vitest';

/** `Date.now()` stepped by `by(ms)` from then on (a wall clock stepped by NTP or an operator). */
export function stepDate(): { by: (ms: number) => void } {
  const orig = Date.now.bind(Date);
  let offset = 0;
  vi.spyOn(Date, 'now').mockImplementation(() => orig() + offset);
  return { by: (ms) => (offset += ms) };
}
