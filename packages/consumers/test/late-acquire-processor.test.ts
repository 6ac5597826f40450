// consumers-late: an acquisition the store answers after the message's `maxHoldMs` give-back
// (late, but within `storeTimeoutMs`) must never start the handler: the message is already
// back at the broker. The key is given back (owner-checked release), so the redelivery runs
// at once instead of waiting out the lease. On the processor every broker helper shares,
// Redis store underneath.
import { setTimeout as sleep } from 'node:timers/promises';
import { everythingFinal, type IdempotencyStore } from '@idem/core';
import { createRedisStore } from '@idem/store-redis';
import { describe, expect, it } from 'vitest';
import { type ConsumerOptions, messageProcessor } from '../src/index.js';
import { redisBed, uniqueName } from './brokers.js';
import { lateAcquires, until } from './late-store.js';
import { within } from './silent-proxy.js';

interface Msg {
  id: string;
  body: string;
}

const { redis, prefix } = redisBed('idem-late-acquire');
const redisStore = (): IdempotencyStore => createRedisStore({ client: redis, keyPrefix: prefix });

function processor(store: IdempotencyStore, options: Partial<ConsumerOptions<Msg, unknown>>) {
  const runs: string[] = [];
  const scope = uniqueName('q');
  const p = messageProcessor<Msg, unknown>(
    {
      store,
      retryDelayMs: 50,
      handler: async (m) => {
        runs.push(m.body);
        return m.body;
      },
      ...options,
    },
    {
      defaultKey: (m) => m.id,
      body: (m) => new TextEncoder().encode(m.body),
      defaultScope: () => ['late', scope],
    },
  );
  return { p, runs };
}

describe('consumers-late: an acquisition answered after the maxHoldMs give-back', () => {
  it('never starts the handler; the key is released, so the redelivery runs it at once', async () => {
    const { store, log } = lateAcquires(redisStore(), 500, (n) => n === 1);
    const { p, runs } = processor(store, { maxHoldMs: 150 });
    const message = { id: uniqueName('k'), body: 'b' };
    const first = await p.process(message);
    expect(first).toMatchObject({ action: 'retry', status: 'failed' });
    expect((first as { error: { code?: string } }).error.code).toBe('LEASE_LOST');
    // The message went back once the late answer came and its key was released
    // (owner-checked: still the owner), so its redelivery cannot find the key held.
    expect(log.lateAnswers).toBe(1);
    expect(log.releases).toEqual([{ ok: true }]);
    await sleep(50);
    expect(runs).toEqual([]);
    // The redelivery: the key is free, not held for a lease (30 s): it runs now, once.
    expect(await p.process(message)).toMatchObject({ action: 'ack', status: 'processed' });
    expect(runs).toEqual(['b']);
    expect(await p.process(message)).toMatchObject({ action: 'ack', status: 'replayed' });
    expect(runs).toEqual(['b']);
  });

  it('the store outage wait: a retry sent before the hold and answered after it never starts the handler', async () => {
    // The store refuses (an outage) for 100 ms, so the message waits in the consumer and
    // tries again every 50 ms; the first try after the outage is answered 800 ms later, past
    // the 500 ms hold.
    let outageUntil = 0;
    let lateOne = 0;
    const { store, log } = lateAcquires(
      redisStore(),
      800,
      (n) => n === lateOne,
      (n) => {
        if (outageUntil === 0) outageUntil = performance.now() + 100;
        if (performance.now() < outageUntil) return true;
        if (lateOne === 0) lateOne = n;
        return false;
      },
    );
    const { p, runs } = processor(store, { maxHoldMs: 500, storeTimeoutMs: 2_000 });
    const message = { id: uniqueName('k'), body: 'outage' };
    const first = await p.process(message);
    expect(first).toMatchObject({ action: 'retry', status: 'failed' });
    expect(log.acquires).toBeGreaterThan(1);
    expect(log.lateAnswers).toBe(1);
    // The refused tries are given back too, in case they landed (not the owner: nothing).
    expect(log.releases.filter((r) => r.ok)).toEqual([{ ok: true }]);
    await sleep(50);
    expect(runs).toEqual([]);
    expect(await p.process(message)).toMatchObject({ action: 'ack', status: 'processed' });
    expect(runs).toEqual(['outage']);
  });

  const slowly = async <R>(value: R) => {
    await sleep(300);
    return value;
  };
  for (const [what, slow] of [
    ['key', { key: (m: Msg) => slowly(m.id) }],
    ['payload', { payload: (m: Msg) => slowly(m.body) }],
  ] as const) {
    it(`an async ${what} function that answers after the hold: no acquisition, no handler`, async () => {
      const { store, log } = lateAcquires(redisStore(), 0, () => false);
      const { p, runs } = processor(store, { maxHoldMs: 100, ...slow });
      const message = { id: uniqueName('k'), body: `slow ${what}` };
      expect(await p.process(message)).toMatchObject({ action: 'retry', status: 'failed' });
      await sleep(400);
      expect(runs).toEqual([]);
      // Nothing was taken: no key left held behind the message that went back.
      expect(log.acquires).toBe(0);
    });
  }

  it('idle() settles once the late acquisition is answered and released, not before', async () => {
    const { store, log } = lateAcquires(redisStore(), 400, (n) => n === 1);
    const { p, runs } = processor(store, { maxHoldMs: 100 });
    const message = { id: uniqueName('k'), body: 'idle' };
    const processing = p.process(message);
    expect(await until(() => log.acquires === 1)).toBe(true);
    // idle() is asked while the acquisition is unanswered (the message not yet back).
    const idle = p.idle();
    expect(log.lateAnswers).toBe(0);
    await idle;
    expect(log.lateAnswers).toBe(1);
    expect(log.releases).toEqual([{ ok: true }]);
    expect(runs).toEqual([]);
    expect(await processing).toMatchObject({ action: 'retry', status: 'failed' });
  });

  it('everythingFinal: the refusal is no outcome of the handler, never recorded: the key is released and the redelivery runs', async () => {
    const { store, log } = lateAcquires(redisStore(), 400, (n) => n === 1);
    const { p, runs } = processor(store, { maxHoldMs: 100, isFinal: everythingFinal });
    const message = { id: uniqueName('k'), body: 'kept?' };
    expect(await p.process(message)).toMatchObject({ action: 'retry', status: 'failed' });
    await p.idle();
    expect(log.releases).toEqual([{ ok: true }]);
    expect(runs).toEqual([]);
    expect(await p.process(message)).toMatchObject({ action: 'ack', status: 'processed' });
    expect(runs).toEqual(['kept?']);
  });

  it('a key function that never settles: the message is given back and idle() does not wait for it (nothing was sent to the store)', async () => {
    const { store, log } = lateAcquires(redisStore(), 0, () => false);
    const { p, runs } = processor(store, { maxHoldMs: 100, key: () => new Promise(() => {}) });
    expect(await p.process({ id: uniqueName('k'), body: 'never' })).toMatchObject({
      action: 'retry',
      status: 'failed',
    });
    expect(await within(p.idle(), 2_000)).not.toBe('timeout');
    expect([runs, log.acquires]).toEqual([[], 0]);
  });

  it('close(): an acquisition answered afterwards is released and given back (HANDLER_NOT_STARTED), its handler never started', async () => {
    const { store, log } = lateAcquires(redisStore(), 300, (n) => n === 1);
    const { p, runs } = processor(store, {});
    const message = { id: uniqueName('k'), body: 'closed' };
    const processing = p.process(message);
    expect(await until(() => log.acquires === 1)).toBe(true);
    p.close();
    const disposition = await processing;
    expect(disposition).toMatchObject({ action: 'retry', status: 'failed' });
    expect((disposition as { error: { code?: string } }).error.code).toBe('HANDLER_NOT_STARTED');
    expect(log.releases).toEqual([{ ok: true }]);
    expect(runs).toEqual([]);
    // Closed for good: nothing more is acquired.
    expect(await p.process(message)).toMatchObject({ action: 'retry', status: 'failed' });
    expect(log.acquires).toBe(1);
  });

  it('isolation: closing one processor refuses nothing of another on the same store', async () => {
    const shared = redisStore();
    const a = processor(shared, {});
    const b = processor(shared, {});
    a.p.close();
    const message = { id: uniqueName('k'), body: 'b runs' };
    expect(await b.p.process(message)).toMatchObject({ action: 'ack', status: 'processed' });
    expect(await a.p.process(message)).toMatchObject({ action: 'retry', status: 'failed' });
    expect([a.runs, b.runs]).toEqual([[], ['b runs']]);
  });

  it('many at once, duplicates among them: every late acquisition released, then each key runs once', async () => {
    const { store, log } = lateAcquires(redisStore(), 300, (n) => n <= 6);
    const { p, runs } = processor(store, { maxHoldMs: 100 });
    const ids = [0, 1, 2, 3, 4].map(() => uniqueName('k'));
    // Six deliveries, the first key twice (a publisher's duplicate): all given back.
    const deliveries = [...ids, ids[0] as string].map((id) => ({ id, body: id }));
    const first = await Promise.all(deliveries.map((m) => p.process(m)));
    expect(first.map((d) => d.action)).toEqual(Array(6).fill('retry'));
    expect(log.lateAnswers).toBe(6);
    // Five keys acquired (the duplicate found its key held), five released by their owner.
    expect(log.releases.filter((r) => r.ok)).toHaveLength(5);
    expect(runs).toEqual([]);
    // The redeliveries, one after the other: each key free, run once; the duplicate replays.
    const again: string[] = [];
    for (const m of deliveries) again.push((await p.process(m)).status);
    expect(again).toEqual([...Array(5).fill('processed'), 'replayed']);
    expect([...runs].sort()).toEqual([...ids].sort());
  });
});
