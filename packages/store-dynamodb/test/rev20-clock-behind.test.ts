/**
 * rev20: an executor whose wall clock steps back (or runs behind) on a store that decides
 * expiry by the client clock. Its renewals asked for leases that end earlier than the one
 * stored; the store refuses to move a lease back and answered `ok` with the stored one
 * (README "Guarantees"), and core counts its lease estimate on its own monotonic clock from
 * the send. So the executor kept a live `signal` while the lease stored in DynamoDB ran out in
 * real time, and a process with a correct clock took the key over beside it (pinned so until
 * lease21). Now a renewal that finds the clock behind where elapsed time since the lease's
 * last write puts it (a step back after the acquisition) counts from that reading: the stored
 * lease moves on in real time, the other process gets IN_PROGRESS. A clock already behind
 * when the lease was acquired is still beyond reach (README "Clock").
 */
import { type Clock, createIdempotency, InProgressError } from '@idem/core';
import { expect, it } from 'vitest';
import { createDynamoDbStore } from '../src/index.js';
import { layouts } from './dynamodb-env.js';
import { setup, tables } from './store-fixture.js';

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

it('a clock stepped back on the executor: its renewals still move the stored lease on, nobody takes the key over beside its live signal', async () => {
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
  let bRan = false;
  const second = await engineB
    .execute(request, async ({ fence }) => {
      bRan = true;
      return fence;
    })
    .catch((error: unknown) => error);
  mayEnd();
  const outcomeA = await first;
  // Before lease21: B took the key over (fence 2) while A still held a live signal.
  expect(aliveBeforeB).toBe(true);
  expect(second).toBeInstanceOf(InProgressError);
  expect(bRan).toBe(false);
  expect(outcomeA).toEqual({ value: 'a', replayed: false });
  const replay = await engineB.execute(request, async () => 'b');
  expect(replay).toEqual({ value: 'a', replayed: true });
}, 30_000);
