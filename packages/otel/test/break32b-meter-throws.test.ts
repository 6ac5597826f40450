// break32b: a `meter` whose instruments cannot be made (its create* throws: an SDK in a bad
// state) does not fail createOtelListener: like the global provider's, its instruments are
// asked for again at the next event, and once made they are brought to the acquisitions held
// (`idem.leases.in_flight` balanced). Before the fix the meter's error escaped raw from
// createOtelListener (a server failing at startup over its metrics).
import { createIdempotency } from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';
import type { Meter } from '@opentelemetry/api';
import { describe, expect, it } from 'vitest';
import { createOtelListener } from '../src/index.js';

describe('break32b: a meter that throws while making its instruments', () => {
  it('the listener is created, executes answer, metrics start once the meter works', async () => {
    let broken = true;
    const inFlight: number[] = [];
    const results: string[] = [];
    const make =
      <T>(instrument: T) =>
      () => {
        if (broken) throw new Error('meter not ready');
        return instrument;
      };
    const meter = {
      createCounter: make({
        add: (_n: number, a: Record<string, unknown>) => results.push(String(a['idem.result'])),
      }),
      createHistogram: make({ record: () => {} }),
      createUpDownCounter: make({ add: (n: number) => inFlight.push(n) }),
    } as unknown as Meter;
    const listener = createOtelListener({ meter, spans: false });
    const idem = createIdempotency({ store: createMemoryStore(), onEvent: listener });
    let release!: () => void;
    const held = idem.execute(
      { key: 'held', operation: 'op' },
      () =>
        new Promise<number>((resolve) => {
          release = () => resolve(1);
        }),
    );
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(await idem.execute({ key: 'a', operation: 'op' }, async () => 1)).toEqual({
      value: 1,
      replayed: false,
    });
    broken = false;
    expect(await idem.execute({ key: 'a', operation: 'op' }, async () => 2)).toEqual({
      value: 1,
      replayed: true,
    });
    release();
    expect(await held).toEqual({ value: 1, replayed: false });
    expect(results).toContain('hit');
    // The acquisition held across the recovery was counted in, then out: balanced.
    expect(inFlight.reduce((sum, n) => sum + n, 0)).toBe(0);
    expect(inFlight.length).toBeGreaterThan(0);
  });
});
