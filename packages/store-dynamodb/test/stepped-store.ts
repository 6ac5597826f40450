/** A store on a fixture's client whose clock can be stepped (lease21, rv21). */
import type { Clock } from '@idem/core';
import { vi } from 'vitest';
import { createDynamoDbStore } from '../src/index.js';
import { layouts } from './dynamodb-env.js';
import { setup, tables } from './store-fixture.js';

/**
 * A store of `base`'s client, table and key prefix (the first layout) whose clock reads
 * `Date.now()` until `step(ms)` moves it; a fresh fixture when none is given. The clock is an
 * injected one: the store takes it as given (README "Clock").
 */
export function steppedStore(base: ReturnType<typeof setup> = setup(layouts[0]!)) {
  let offset = 0;
  const clock: Clock = { now: () => Date.now() + offset };
  const store = createDynamoDbStore({
    client: base.client,
    tableName: tables[layouts[0]!.id],
    keyPrefix: base.prefix,
    clock,
  });
  return { ...base, store, step: (ms: number) => (offset += ms) };
}

/**
 * This process's system clock, stepped: from the call on `Date.now()` (which the default clock
 * reads) reads `step(ms)` off, as after NTP or an operator stepped it, while elapsed time
 * (`performance.now()`) goes on. `real()` reads the time unstepped; `restore()` undoes it.
 */
export function stepSystemClock() {
  const real = Date.now.bind(Date);
  let offset = 0;
  const spy = vi.spyOn(Date, 'now').mockImplementation(() => real() + offset);
  return { real, step: (ms: number) => (offset += ms), restore: () => spy.mockRestore() };
}
