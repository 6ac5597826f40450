/** A store on a fixture's client whose clock can be stepped (lease21, rv21). */
import type { Clock } from '@idem/core';
import { createDynamoDbStore } from '../src/index.js';
import { layouts } from './dynamodb-env.js';
import { setup, tables } from './store-fixture.js';

/**
 * A store of `base`'s client, table and key prefix (the first layout) whose clock reads
 * `Date.now()` until `step(ms)` moves it; a fresh fixture when none is given.
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
