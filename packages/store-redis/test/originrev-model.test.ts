/**
 * originrev (adversarial review of the origin guarantee): the Redis store against the model
 * of the contract's "Origin" rules (store-conformance/test/originrev-model.ts) on the
 * standalone server, by Redis's own clock: takeovers, retries after releases (format 2),
 * redeliveries, stale owners, concurrent acquires checked against every serial order,
 * forced releases, deletes, records Redis expired, and the origin `get()` reads back; and
 * the engine-level property (store-conformance/test/originrev-engine.ts): one originId a key
 * under failures, crashes, stalls and lost or redelivered calls.
 * Bounded: 40 sequences of at most 12 steps (400 ms leases), 12 engine scenarios (250 ms).
 */
import { randomBytes } from 'node:crypto';
import { describeServerOrigin } from '../../store-conformance/test/originrev-server.js';
import { createRedisStore } from '../src/index.js';
import { standaloneSession } from './mutaudit-helpers.js';

const session = standaloneSession();
describeServerOrigin(
  'Redis (standalone)',
  () => createRedisStore({ client: session.client, keyPrefix: session.prefix() }),
  () => randomBytes(16).toString('hex'),
);
