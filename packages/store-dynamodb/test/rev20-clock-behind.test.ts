/**
 * rev20: an executor whose wall clock steps back (or runs behind) on a store that decides
 * expiry by the client clock. Its renewals ask for leases that end earlier than the one
 * stored; the store refuses to move a lease back and answers `ok` with the stored one
 * (README "Guarantees"), and core counts its lease estimate on its own monotonic clock from
 * the send. So the executor keeps a live `signal` while the lease stored in DynamoDB runs
 * out in real time, and a process with a correct clock takes the key over beside it: (a),
 * one execution while a lease is live, holds only with synchronised clocks. Pinned as it
 * is; README "Clock" says so.
 */
import { type Clock, createIdempotency } from '@idem/core';
import { expect, it } from 'vitest';
import { createDynamoDbStore } from '../src/index.js';
import { layouts } from './dynamodb-env.js';
import { setup, tables } from './store-fixture.js';

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

it('a clock stepped back on the executor: the lease passes at the store while its signal stays live', async () => {
  const layout = layouts[0]!;
  let behind = 0;
  const steppedClock: Clock = { now: () => Date.now() - behind };
  const a = setup(layout);
  const storeA = createDynamoDbStore({
    client: a.client,
    tableName: tables[layout.id],
    keyPrefix: a.prefix,
    clock: steppedClock,
  });
  const engineA = createIdempotency({ store: storeA, leaseMs: 3_000, heartbeatMs: 300 });
  const engineB = createIdempotency({ store: a.store, leaseMs: 3_000, heartbeatMs: 300 });
  const request = { key: 'rev20-clock', scope: 'global' };

  let signalA: AbortSignal | undefined;
  let mayEnd!: () => void;
  const ends = new Promise<void>((resolve) => (mayEnd = resolve));
  const first = engineA
    .execute(request, async ({ signal }) => {
      signalA = signal;
      await ends;
      return 'a';
    })
    .catch((error: unknown) => error);
  const until = Date.now() + 5_000;
  while (signalA === undefined && Date.now() < until) await sleep(10);
  // The host's wall clock steps back by a minute (NTP correcting a clock that ran ahead).
  behind = 60_000;
  // Two leases later, by real time: every renewal A sent meanwhile answered ok. (3 s leases:
  // A's own estimate outlives a renewal answered 2.7 s late under CI's load.)
  await sleep(6_400);
  const aliveBeforeB = signalA?.aborted === false;
  const second = await engineB.execute(request, async ({ fence }) => fence);
  mayEnd();
  await first;
  // What happens: B took the key over (fence 2) while A still held a live signal.
  expect(second.value).toBe(2);
  expect(aliveBeforeB).toBe(true);
}, 30_000);
