import { createIdempotency, InProgressError, MismatchError } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { decodeRaw, layouts } from './dynamodb-env.js';
import { acquireInput, HOUR, newKey, setup, sleep } from './store-fixture.js';

// Requests as the SDK sends them: counted per attempt, raced, and answered out of order.
describe.each(layouts)('DynamoDB requests: $name', (layout) => {
  it('round trips: first execution 2 plus heartbeats, replay 1, conflict 1, released failure 2', async () => {
    const t = setup(layout);
    const idem = createIdempotency<string>({ store: t.store, heartbeatMs: false });
    const scope = newKey();
    t.take();
    expect(await idem.execute({ key: 'first', scope }, async () => 'done')).toEqual({
      value: 'done',
      replayed: false,
    });
    expect(t.take()).toEqual(['acquire', 'complete']);
    expect(await idem.execute({ key: 'first', scope }, async () => 'again')).toEqual({
      value: 'done',
      replayed: true,
    });
    expect(t.take()).toEqual(['acquire']);

    const begun = await idem.begin({ key: 'busy', scope, fingerprint: 'a' });
    expect(t.take()).toEqual(['acquire']);
    await expect(idem.begin({ key: 'busy', scope, fingerprint: 'a' })).rejects.toBeInstanceOf(
      InProgressError,
    );
    expect(t.take()).toEqual(['acquire']);
    await expect(idem.begin({ key: 'busy', scope, fingerprint: 'b' })).rejects.toBeInstanceOf(
      MismatchError,
    );
    expect(t.take()).toEqual(['acquire']);
    if (begun.kind === 'acquired') await begun.execution.release();
    expect(t.take()).toEqual(['release']);

    await expect(
      idem.execute({ key: 'fails', scope }, async () => Promise.reject(new Error('boom'))),
    ).rejects.toThrow('boom');
    expect(t.take()).toEqual(['acquire', 'release']);

    // Heartbeats: lease 600 ms renewed every 150 ms while an 800 ms operation runs (at least 2 beats even on a loaded machine).
    const beating = createIdempotency<string>({ store: t.store, leaseMs: 600, heartbeatMs: 150 });
    await beating.execute({ key: 'slow', scope }, async () => {
      await sleep(800);
      return 'slow';
    });
    const ops = t.take();
    const done = ops.indexOf('complete');
    const beats = done - 1;
    expect(ops.slice(0, done + 1)).toEqual(['acquire', ...Array(beats).fill('extend'), 'complete']);
    expect(beats).toBeGreaterThanOrEqual(2);
    // Renewals go on while the final write is on its way: one heartbeat can start in that
    // window (seen on a loaded machine), none after the completion settled.
    expect(ops.slice(done + 1).filter((op) => op !== 'extend')).toEqual([]);
    expect(ops.length - done - 1).toBeLessThanOrEqual(1);
  });

  it('over many connections: one winner of 32, mutual exclusion and contiguous fences under contention', async () => {
    const t = setup(layout);
    const key = newKey();
    const inputs = Array.from({ length: 32 }, () => acquireInput(key));
    const results = await Promise.all(inputs.map((input) => t.store.acquire(input)));
    const winners = inputs.filter((_, i) => results[i]!.kind === 'acquired');
    expect(winners).toHaveLength(1);
    for (const r of results) if (r.kind === 'found') expect(r.record.owner).toBe(winners[0]!.owner);
    await t.store.release({ key, owner: winners[0]!.owner, retentionMs: HOUR });

    // 8 workers take the key in turn, each holding it briefly then releasing, until each was
    // granted it 3 times (at most 300 attempts each: how many grants a fixed number of rounds
    // gets depends on how fast a refused acquire answers, not on the store being right). The
    // holder is cleared before its release is sent, so a grant answered while it is set
    // overlaps a lease that nobody gave up.
    let holder: string | undefined;
    const fences: number[] = [];
    const overlaps: string[] = [];
    async function worker(): Promise<void> {
      let granted = 0;
      for (let attempt = 0; attempt < 300 && granted < 3; attempt++) {
        const input = acquireInput(key);
        const result = await t.store.acquire(input);
        if (result.kind !== 'acquired') {
          await sleep(1);
          continue;
        }
        granted++;
        if (holder !== undefined)
          overlaps.push(`${input.owner} granted fence ${result.fence} while ${holder} held`);
        holder = input.owner;
        fences.push(result.fence);
        await sleep(1);
        holder = undefined;
        expect(await t.store.release({ key, owner: input.owner, retentionMs: HOUR })).toEqual({
          ok: true,
        });
      }
    }
    await Promise.all(Array.from({ length: 8 }, worker));
    expect(overlaps).toEqual([]);
    expect(fences.length).toBeGreaterThan(8);
    expect([...fences].sort((a, b) => a - b)).toEqual(fences.map((_, i) => i + 2));
    expect(decodeRaw(layout, (await t.raw(key))!)).toMatchObject({
      status: 'released',
      fence: fences.length + 1,
    });
  });

  it('an SDK retry after a lost answer is the same call: one lease, one fence, the first outcome', async () => {
    const t = setup(layout);
    let dropNext = 0;
    // Lets the request reach DynamoDB, then loses the answer as a dropped connection would.
    t.client.middlewareStack.add(
      (next) => async (args) => {
        const output = await next(args);
        if (dropNext > 0) {
          dropNext--;
          throw Object.assign(new Error('socket hang up'), {
            name: 'TimeoutError',
            code: 'ECONNRESET',
          });
        }
        return output;
      },
      { step: 'deserialize', name: 'loseAnswer', priority: 'low' },
    );
    const key = newKey();
    const input = acquireInput(key);
    t.take();
    dropNext = 1;
    const result = await t.store.acquire(input);
    // The first attempt applied; the retry finds the caller's own lease and renews it.
    expect(t.take(), 'the SDK retried').toEqual(['acquire', 'acquire', 'extend']);
    expect(result).toMatchObject({ kind: 'acquired', fence: 1, takeover: false });
    const w = { key, owner: input.owner, retentionMs: HOUR };
    dropNext = 1;
    expect(await t.store.complete({ ...w, outcome: new Uint8Array([7]) })).toEqual({ ok: true });
    expect(t.take()).toEqual(['complete', 'complete']);
    // A later complete with other bytes is not a redelivery: refused, nothing overwritten.
    expect(await t.store.complete({ ...w, outcome: new Uint8Array([8]) })).toEqual({
      ok: false,
      reason: 'not_owner',
    });
    const record = decodeRaw(layout, (await t.raw(key))!);
    expect(record).toMatchObject({ status: 'completed', owner: input.owner, fence: 1 });
    expect(Buffer.from(record.outcome!)).toEqual(Buffer.from([7]));
  });
});
