import {
  type CompleteInput,
  createIdempotency,
  deriveStorageKey,
  OutcomeNotRecordedError,
  OutcomeTooLargeError,
} from '@idem/core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createMemoryStore, type MemoryStore } from '../src/index.js';

// `execute` under the built-in JSON serializer hands the memory store an ASCII value's
// encoding as a string of one character a byte (the store's engine-only `latin1Outcome` form
// of `complete`), which the store keeps as it is. Everything a caller can see must be what the
// bytes path gives: the recorded bytes, replays, accounting, redelivery, the size limit.

/** A store whose `complete` is a plain wrapper: no synchronous form, so the engine sends bytes. */
function bytesOnly(inner: MemoryStore): MemoryStore {
  return Object.assign(Object.create(inner) as MemoryStore, {
    complete: (input: CompleteInput) => inner.complete(input),
  });
}

async function recordBoth(value: unknown, key: string) {
  const viaString = createMemoryStore({ sweepIntervalMs: 0 });
  const viaBytes = createMemoryStore({ sweepIntervalMs: 0 });
  const a = createIdempotency({ store: viaString, heartbeatMs: false });
  const b = createIdempotency({ store: bytesOnly(viaBytes), heartbeatMs: false });
  const first = await a.execute({ key }, async () => value);
  const second = await b.execute({ key }, async () => value);
  return { viaString, viaBytes, a, b, first, second };
}

describe('execute records ASCII JSON values through the Latin-1 outcome form', () => {
  it('records the very bytes the bytes path records, replays them alike, and accounts them alike (property)', async () => {
    let n = 0;
    await fc.assert(
      fc.asyncProperty(fc.jsonValue({ stringUnit: 'binary' }), async (value) => {
        const key = `p${n++}`;
        const { viaString, viaBytes, a, b } = await recordBoth(value, key);
        const storageKey = deriveStorageKey(null, key);
        const held = await viaString.get(storageKey);
        const sent = await viaBytes.get(storageKey);
        expect(held?.status).toBe('completed');
        expect(held?.outcome).toEqual(sent?.outcome);
        // Accounted alike (owner tokens of two executions may differ in length).
        expect(viaString.bytes - (held?.owner.length ?? 0)).toBe(
          viaBytes.bytes - (sent?.owner.length ?? 0),
        );
        const replayA = await a.execute({ key }, async () => 'ran');
        const replayB = await b.execute({ key }, async () => 'ran');
        expect(replayA).toEqual(replayB);
        expect(replayA.replayed).toBe(true);
        // A second engine on the same store reads the record through the public path too.
        const other = createIdempotency({ store: bytesOnly(viaString), heartbeatMs: false });
        expect(await other.execute({ key }, async () => 'ran')).toEqual(replayB);
      }),
      { numRuns: 150 },
    );
  });

  it('a redelivered complete of the same bytes succeeds, of other bytes fails; a stale owner cannot complete', async () => {
    const store = createMemoryStore({ sweepIntervalMs: 0 });
    const idem = createIdempotency({ store, heartbeatMs: false });
    const begun = await idem.begin({ key: 'redelivered' });
    if (begun.kind !== 'acquired') throw new Error(`not acquired: ${begun.kind}`);
    const { storageKey, owner } = begun.execution;
    await begun.execution.release();
    // An execute on the same key records through the Latin-1 form.
    await idem.execute({ key: 'redelivered' }, async () => ({ v: 'ascii' }));
    const record = await store.get(storageKey);
    if (!record?.outcome) throw new Error('no outcome');
    const { owner: recordedOwner } = record;
    expect(recordedOwner).not.toBe(owner);
    const input = { key: storageKey, owner: recordedOwner, retentionMs: 60_000 };
    expect(await store.complete({ ...input, outcome: record.outcome })).toEqual({ ok: true });
    const other = record.outcome.slice();
    other[other.length - 1] = (other.at(-1) ?? 0) ^ 1;
    expect(await store.complete({ ...input, outcome: other })).toMatchObject({ ok: false });
    expect(await store.complete({ ...input, owner, outcome: record.outcome })).toMatchObject({
      ok: false,
    });
    expect((await store.get(storageKey))?.outcome).toEqual(record.outcome);
  });

  it('an ASCII value over maxOutcomeBytes is refused as through the bytes path (a marker, replayed as not recorded)', async () => {
    const run = async (wrap: boolean) => {
      const inner = createMemoryStore({ sweepIntervalMs: 0, maxOutcomeBytes: 1_024 });
      const idem = createIdempotency({
        store: wrap ? bytesOnly(inner) : inner,
        heartbeatMs: false,
      });
      const first = await idem
        .execute({ key: 'big' }, async () => ({ data: 'x'.repeat(2_000) }))
        .catch((error: unknown) => error);
      const again = await idem
        .execute({ key: 'big' }, async () => 'ran')
        .catch((error: unknown) => error);
      return { first, again, bytes: inner.bytes };
    };
    const viaString = await run(false);
    const viaBytes = await run(true);
    expect(viaString.first).toBeInstanceOf(OutcomeTooLargeError);
    expect(viaBytes.first).toBeInstanceOf(OutcomeTooLargeError);
    expect(viaString.again).toBeInstanceOf(OutcomeNotRecordedError);
    expect(viaBytes.again).toBeInstanceOf(OutcomeNotRecordedError);
    // The marker's record, accounted alike (owner tokens may differ by a character).
    expect(Math.abs(viaString.bytes - viaBytes.bytes)).toBeLessThanOrEqual(2);
  });

  it('a value just within the store limit is recorded and replayed', async () => {
    const store = createMemoryStore({ sweepIntervalMs: 0, maxOutcomeBytes: 1_024 });
    const idem = createIdempotency({ store, heartbeatMs: false });
    // The encoding's header and JSON quotes included, well under 1,024 bytes.
    const value = { data: 'y'.repeat(900) };
    expect((await idem.execute({ key: 'fits' }, async () => value)).replayed).toBe(false);
    expect(await idem.execute({ key: 'fits' }, async () => 'ran')).toEqual({
      value,
      replayed: true,
    });
  });
});
