// consumers33: the RabbitMQ reconnect backoff (reconnectPlan) drew its jitter anew at every
// wait, so once at reconnectMaxDelayMs a later wait could be up to a fifth shorter than the one
// before it. Now each consumer draws its jitter once: the waits never decrease, stay within
// 80 %..100 % of their value and never pass the cap.
import { afterEach, expect, it, vi } from 'vitest';
import { reconnectPlan } from '../src/amqp-reconnect.js';

afterEach(() => {
  vi.restoreAllMocks();
});

it('the waits never decrease, whatever Math.random draws, and stay within their bounds', () => {
  for (const draws of [
    [0.999, 0],
    [0, 0.999],
    [0.5, 0.1, 0.9, 0.3],
  ]) {
    let i = 0;
    vi.spyOn(Math, 'random').mockImplementation(() => draws[i++ % draws.length] as number);
    const plan = reconnectPlan({ reconnectDelayMs: 100, reconnectMaxDelayMs: 1_000 });
    const waits = Array.from({ length: 12 }, (_, attempt) => plan.wait(attempt));
    for (let attempt = 0; attempt < waits.length; attempt++) {
      const nominal = Math.min(100 * 2 ** attempt, 1_000);
      const wait = waits[attempt] as number;
      expect(wait).toBeGreaterThanOrEqual(0.8 * nominal);
      expect(wait).toBeLessThanOrEqual(nominal);
      if (attempt > 0)
        expect([attempt, wait >= (waits[attempt - 1] as number)]).toEqual([attempt, true]);
    }
    vi.restoreAllMocks();
  }
});

it('two consumers still draw apart (the jitter is not the same for all)', () => {
  const draws = [0.1, 0.9];
  let i = 0;
  vi.spyOn(Math, 'random').mockImplementation(() => draws[i++ % 2] as number);
  const one = reconnectPlan({});
  const two = reconnectPlan({});
  expect(one.wait(10)).not.toBe(two.wait(10));
  expect(one.wait(10)).toBeLessThanOrEqual(30_000);
  expect(two.wait(10)).toBeLessThanOrEqual(30_000);
});
