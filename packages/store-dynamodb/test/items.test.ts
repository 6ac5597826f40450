import { randomBytes } from 'node:crypto';
import { PutItemCommand } from '@aws-sdk/client-dynamodb';
import { encodeOutcome, InvalidInputError, ManualClock, OutcomeTooLargeError } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { decodeRaw, layouts } from './dynamodb-env.js';
import {
  acquireInput,
  expectSameBytes,
  HOUR,
  newKey,
  newOwner,
  setup,
  tables,
} from './store-fixture.js';

// What each call leaves in the table, read back with raw GetItem and decoded independently.
describe.each(layouts)('DynamoDB items: $name', (layout) => {
  const n = layout.names;

  it('acquire writes exactly the documented attributes, with TTL in epoch seconds', async () => {
    const clock = new ManualClock(Date.now());
    const t = setup(layout, { clock });
    const key = newKey();
    const input = acquireInput(key, { leaseMs: 30_000, retentionMs: HOUR });
    const result = await t.store.acquire(input);
    expect(result).toEqual({
      kind: 'acquired',
      fence: 1,
      leaseUntil: clock.now() + 30_000,
      takeover: false,
      origin: input.owner,
    });
    const item = await t.raw(key);
    expect(item).toBeDefined();
    const expiresAt = clock.now() + 30_000 + HOUR;
    expect(item).toEqual({
      ...layout.rawKey(t.prefix + key),
      [n.status]: { S: 'in_progress' },
      [n.fingerprint]: { S: 'fp' },
      [n.owner]: { S: input.owner },
      [n.origin]: { S: input.owner },
      [n.fence]: { N: '1' },
      [n.leaseUntil]: { N: String(clock.now() + 30_000) },
      [n.expiresAt]: { N: String(expiresAt) },
      [n.ttl]: { N: String(Math.ceil(expiresAt / 1000)) },
    });
    expect(t.store.itemKey(key)).toEqual(layout.rawKey(t.prefix + key));
  });

  it('non-owner complete, release and extend leave the item untouched (in progress and completed)', async () => {
    const t = setup(layout);
    const key = newKey();
    const input = acquireInput(key);
    await t.store.acquire(input);
    const intruder = { key, owner: newOwner(), retentionMs: HOUR };
    for (const status of ['in_progress', 'completed'] as const) {
      const before = await t.raw(key);
      expect(decodeRaw(layout, before!).status).toBe(status);
      t.take();
      expect(await t.store.complete({ ...intruder, outcome: new Uint8Array([1, 2, 3]) })).toEqual({
        ok: false,
        reason: 'not_owner',
      });
      expect(await t.store.release(intruder)).toEqual({ ok: false, reason: 'not_owner' });
      expect(await t.store.extend({ ...intruder, leaseMs: 10 * HOUR })).toEqual({
        ok: false,
        reason: 'not_owner',
      });
      // One conditional request each, and the raw item is byte for byte what it was.
      expect(t.take()).toEqual(['complete', 'release', 'extend']);
      expect(await t.raw(key)).toEqual(before);
      if (status === 'in_progress') {
        const outcome = new Uint8Array([0, 255, 10, 13]);
        expect(
          await t.store.complete({ key, owner: input.owner, outcome, retentionMs: HOUR }),
        ).toEqual({ ok: true });
        const item = await t.raw(key);
        expectSameBytes(item![n.outcome]!.B!, outcome);
        expect(item![n.outcomeEncoding]).toBeUndefined();
      }
    }
  });

  it('owner writes after retention passed are refused: expiry is decided by the clock, not TTL', async () => {
    const clock = new ManualClock(Date.now());
    const t = setup(layout, { clock });
    const key = newKey();
    const input = acquireInput(key, { leaseMs: 1_000, retentionMs: 1_000 });
    await t.store.acquire(input);
    clock.advance(2_000);
    const item = await t.raw(key);
    expect(item, 'the item is still in the table (TTL deletion is lazy)').toBeDefined();
    expect(await t.store.get(key)).toBeUndefined();
    const w = { key, owner: input.owner, retentionMs: HOUR };
    expect(await t.store.extend({ ...w, leaseMs: 1_000 })).toEqual({
      ok: false,
      reason: 'not_owner',
    });
    expect(await t.store.complete({ ...w, outcome: new Uint8Array([1]) })).toEqual({
      ok: false,
      reason: 'not_owner',
    });
    expect(await t.store.release(w)).toEqual({ ok: false, reason: 'not_owner' });
    expect(await t.raw(key)).toEqual(item);
    const again = await t.store.acquire(acquireInput(key));
    expect(again).toMatchObject({ kind: 'acquired', fence: 2, takeover: false });
  });

  it('every write keeps ttl = expiresAt in epoch seconds, rounded up, and the deadlines the contract gives', async () => {
    const clock = new ManualClock(Date.now() + 0.5);
    // Readings are whole ms, rounded down (edge33): the deadlines start from the floor.
    const at = () => Math.floor(clock.now());
    const t = setup(layout, { clock });
    const check = async (expected: { status: string; leaseUntil: number; expiresAt: number }) => {
      const item = (await t.raw(key))!;
      expect(decodeRaw(layout, item)).toMatchObject(expected);
      expect(item[n.ttl]).toEqual({ N: String(Math.ceil(expected.expiresAt / 1000)) });
    };
    const key = newKey();
    const input = acquireInput(key, { leaseMs: 10_000, retentionMs: 1_000 });
    const start = at();
    await t.store.acquire(input);
    await check({ status: 'in_progress', leaseUntil: start + 10_000, expiresAt: start + 11_000 });
    clock.advance(3_000);
    const w = { key, owner: input.owner, retentionMs: 2_000 };
    expect(await t.store.extend({ ...w, leaseMs: 10_000 })).toEqual({
      ok: true,
      leaseUntil: at() + 10_000,
    });
    await check({
      status: 'in_progress',
      leaseUntil: at() + 10_000,
      expiresAt: at() + 12_000,
    });
    clock.advance(1_000);
    expect(await t.store.release(w)).toEqual({ ok: true });
    await check({ status: 'released', leaseUntil: at(), expiresAt: at() + 2_000 });
    const second = acquireInput(key, { leaseMs: 10_000, retentionMs: 1_000 });
    await t.store.acquire(second);
    clock.advance(1_000);
    expect(
      await t.store.complete({
        ...w,
        owner: second.owner,
        outcome: new Uint8Array([1]),
        retentionMs: 5_000,
      }),
    ).toEqual({
      ok: true,
    });
    await check({
      status: 'completed',
      expiresAt: at() + 5_000,
      leaseUntil: at() - 1_000 + 10_000,
    });
  });

  it('an admin delete leaves an expired tombstone holding the fence, with its TTL kept and no outcome or origin', async () => {
    const clock = new ManualClock(Date.now());
    const t = setup(layout, { clock });
    const key = newKey();
    const input = acquireInput(key, { leaseMs: 30_000, retentionMs: HOUR });
    await t.store.acquire(input);
    const outcome = new Uint8Array(randomBytes(64));
    await t.store.complete({ key, owner: input.owner, outcome, retentionMs: HOUR });
    const before = await t.raw(key);
    expect(await t.store.admin.delete(key)).toEqual({ deleted: true });
    const after = await t.raw(key);
    expect(before![n.origin]).toEqual({ S: input.owner });
    const { [n.outcome]: _outcome, [n.origin]: _origin, ...kept } = before!;
    expect(after).toEqual({
      ...kept,
      [n.status]: { S: 'released' },
      [n.fingerprint]: { S: '' },
      [n.owner]: after![n.owner],
      [n.leaseUntil]: { N: String(clock.now()) },
      [n.expiresAt]: { N: String(clock.now()) },
    });
    expect(after![n.owner]?.S).not.toBe(input.owner);
    // TTL deletion (which forgets the fence) comes no earlier than the record's retention.
    expect(after![n.ttl]).toEqual(before![n.ttl]);
    expect(await t.store.get(key)).toBeUndefined();
    // The next acquisition begins a new logical request: its own origin.
    const next = acquireInput(key);
    expect(await t.store.acquire(next)).toMatchObject({
      kind: 'acquired',
      fence: 2,
      origin: next.owner,
    });
    // A key with no item: nothing to delete, and no tombstone created.
    const missing = newKey();
    expect(await t.store.admin.delete(missing)).toEqual({ deleted: false });
    expect(await t.raw(missing)).toBeUndefined();
  });

  it('large compressible outcomes are gzipped; get and acquire return the exact bytes', async () => {
    const t = setup(layout);
    const line = new TextEncoder().encode(
      '{"id":12345,"text":"the quick brown fox jumps over the lazy dog"},',
    );
    for (const size of [100, 8 * 1024, 2 * 1024 * 1024]) {
      const body = new Uint8Array(size);
      for (let i = 0; i < size; i += line.length)
        body.set(line.subarray(0, Math.min(line.length, size - i)), i);
      const outcome = encodeOutcome({ meta: { status: 200 }, body });
      const key = newKey();
      const input = acquireInput(key);
      await t.store.acquire(input);
      expect(
        await t.store.complete({ key, owner: input.owner, outcome, retentionMs: HOUR }),
      ).toEqual({ ok: true });
      const item = (await t.raw(key))!;
      const stored = item[n.outcome]!.B!;
      if (size < 4096) {
        expect(item[n.outcomeEncoding]).toBeUndefined();
        expectSameBytes(stored, outcome);
      } else {
        expect(item[n.outcomeEncoding]).toEqual({ S: 'gzip' });
        expect(stored.length).toBeLessThan(outcome.length / 5);
      }
      // Through the second channel (own gunzip) and through the adapter, byte for byte.
      expectSameBytes(decodeRaw(layout, item).outcome!, outcome);
      expectSameBytes((await t.store.get(key))!.outcome!, outcome);
      const found = await t.store.acquire(acquireInput(key));
      expect(found.kind).toBe('found');
      if (found.kind === 'found') expectSameBytes(found.record.outcome!, outcome);
    }
  });

  it('an outcome that does not fit is refused with OutcomeTooLargeError before any request; the budget is exact', async () => {
    const t = setup(layout);
    const key = newKey();
    // The longest fingerprint accepted, so the item is as large as one can be.
    const input = acquireInput(key, { fingerprint: 'f'.repeat(1024) });
    await t.store.acquire(input);
    await expect(
      t.store.acquire(acquireInput(key, { fingerprint: 'f'.repeat(1025) })),
    ).rejects.toBeInstanceOf(InvalidInputError);
    const before = await t.raw(key);
    t.take();
    const w = { key, owner: input.owner, retentionMs: HOUR };
    const tooBig = new Uint8Array(randomBytes(500 * 1024));
    const error = await t.store.complete({ ...w, outcome: tooBig }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OutcomeTooLargeError);
    const limit = (error as OutcomeTooLargeError).limit;
    expect(limit).toBeGreaterThan(395 * 1024);
    expect(limit).toBeLessThan(400 * 1024);
    const beyondCap = new Uint8Array(t.store.capabilities.maxOutcomeBytes! + 1);
    await expect(t.store.complete({ ...w, outcome: beyondCap })).rejects.toBeInstanceOf(
      OutcomeTooLargeError,
    );
    await expect(
      t.store.complete({ ...w, outcome: new Uint8Array(randomBytes(limit + 1)) }),
    ).rejects.toBeInstanceOf(OutcomeTooLargeError);
    expect(t.take(), 'nothing was sent').toEqual([]);
    expect(await t.raw(key)).toEqual(before);
    // The emulator enforces the 400 KB item limit, so the next check can fail.
    await expect(
      t.client.send(
        new PutItemCommand({
          TableName: tables[layout.id],
          Item: { ...layout.rawKey(`${t.prefix}probe`), data: { B: new Uint8Array(400 * 1024) } },
        }),
      ),
    ).rejects.toThrow(/size/i);
    // Exactly at the budget, incompressible: DynamoDB accepts the item.
    const fits = new Uint8Array(randomBytes(limit));
    expect(await t.store.complete({ ...w, outcome: fits })).toEqual({ ok: true });
    const item = (await t.raw(key))!;
    expect(item[n.outcomeEncoding]).toBeUndefined();
    expectSameBytes(item[n.outcome]!.B!, fits);
  });
});
