import {
  type AcquireInput,
  type AcquireResult,
  createIdempotency,
  type IdemEvent,
  jsonSerializer,
  OutcomeNotRecordedError,
  ReplayedFailureError,
  type StoredRecord,
} from '@idem/core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createMemoryStore } from '../src/index.js';
import { engineFormsOf } from '../src/memory-store.js';

/** The acquire's Latin-1 form, through this package's internal test hook. */
function latin1FormOf(store: ReturnType<typeof createMemoryStore>) {
  return engineFormsOf(store)?.latin1;
}

const acquireInput = (key: string, owner = 'o-2'): AcquireInput => ({
  key,
  fingerprint: '',
  owner,
  leaseMs: 1_000,
  retentionMs: 60_000,
});

describe('memory8 review: replays parsed from the held Latin-1 string', () => {
  it('replays every JSON value as recorded: ASCII, non-ASCII, a BOM-like start, undefined', async () => {
    const store = createMemoryStore();
    const idem = createIdempotency({ store });
    const values: unknown[] = [
      { key: 'a', data: 'x'.repeat(490) },
      'plain ascii',
      'é and 日本 and 😀',
      '\ufeff{"starts":"with a BOM character"}',
      ['\u0000', '\u007f', '\u0080', '\u00ff'],
      null,
      0,
      undefined,
      { nested: { deep: [1, 2, { x: 'ü' }] } },
    ];
    for (const [i, value] of values.entries()) {
      const first = await idem.execute({ key: `k${i}` }, async () => value);
      expect(first.replayed).toBe(false);
      const again = await idem.execute({ key: `k${i}` }, async () => {
        throw new Error('ran again');
      });
      expect(again.replayed).toBe(true);
      expect(again.value).toEqual(
        value === undefined ? undefined : JSON.parse(JSON.stringify(value)),
      );
    }
  });

  it('agrees with the bytes path for arbitrary JSON values (property)', async () => {
    const store = createMemoryStore();
    const fast = createIdempotency({ store });
    // A serializer that is not the built-in object (the same functions) takes the general
    // path: bytes copied out, decoded, then `deserialize` (TextDecoder, JSON.parse).
    const general = createIdempotency({
      store,
      serializer: {
        serialize: (v) => jsonSerializer.serialize(v),
        deserialize: (o) => jsonSerializer.deserialize(o),
      },
    });
    // Events make the engine read copies of the bytes (the UTF-8 read of the bytes path).
    const observed = createIdempotency({ store, onEvent: () => {} });
    let n = 0;
    await fc.assert(
      fc.asyncProperty(fc.jsonValue({ stringUnit: 'binary' }), async (value) => {
        const key = `p${n++}`;
        await fast.execute({ key }, async () => value);
        const a = await fast.execute({ key }, async () => 'ran');
        const b = await general.execute({ key }, async () => 'ran');
        const c = await observed.execute({ key }, async () => 'ran');
        expect(a.replayed && b.replayed && c.replayed).toBe(true);
        expect(a.value).toStrictEqual(b.value);
        expect(c.value).toStrictEqual(b.value);
      }),
      { numRuns: 300 },
    );
  });

  it('replays recorded failures and not-recorded markers through the same form', async () => {
    const store = createMemoryStore({ maxOutcomeBytes: 2_048, maxBytes: 1_000_000 });
    const idem = createIdempotency({
      store,
      isFinal: () => true,
    });
    await expect(
      idem.execute({ key: 'fail' }, async () => {
        throw Object.assign(new Error('no funds'), { code: 'NO_FUNDS' });
      }),
    ).rejects.toThrow('no funds');
    const failed = idem.execute({ key: 'fail' }, async () => 'ran');
    await expect(failed).rejects.toBeInstanceOf(ReplayedFailureError);
    await expect(failed).rejects.toMatchObject({
      stored: { message: 'no funds', code: 'NO_FUNDS' },
    });

    await expect(idem.execute({ key: 'big' }, async () => 'y'.repeat(5_000))).rejects.toThrow();
    await expect(idem.execute({ key: 'big' }, async () => 'ran')).rejects.toBeInstanceOf(
      OutcomeNotRecordedError,
    );
  });

  it('hands out the held string only through the Latin-1 form; other callers get fresh bytes', async () => {
    const store = createMemoryStore();
    const idem = createIdempotency({ store });
    await idem.execute({ key: 'k' }, async () => ({ a: 1 }));
    const latin1 = latin1FormOf(store);
    expect(typeof latin1).toBe('function');
    // The record as `get` gives it: bytes, and the Latin-1 form's string is the same bytes.
    const keys: string[] = [];
    const events: IdemEvent[] = [];
    const observed = createIdempotency({ store, onEvent: (e) => events.push(e) });
    await observed.execute({ key: 'k' }, async () => 'ran');
    for (const e of events) if (e.type === 'hit') keys.push(e.storageKey);
    const record = (await store.get(keys[0] as string)) as StoredRecord;
    const found = (latin1 as (input: AcquireInput) => AcquireResult)(
      acquireInput(keys[0] as string),
    );
    expect(found.kind).toBe('found');
    const held = (found as { record: StoredRecord & { outcomeLatin1?: string } }).record;
    expect(held.outcome).toBeUndefined();
    expect(held.outcomeLatin1).toBe(Buffer.from(record.outcome as Uint8Array).toString('latin1'));
    // A plain acquire still answers bytes of its own.
    const plain = await store.acquire(acquireInput(keys[0] as string));
    const bytes = (plain as { record: StoredRecord }).record.outcome as Uint8Array;
    expect(bytes).toEqual(record.outcome);
    bytes.fill(0);
    expect((await store.get(keys[0] as string))?.outcome).toEqual(record.outcome);
  });

  it('reports the outcome size of a replay read from the string in its hit event', async () => {
    const store = createMemoryStore();
    const events: IdemEvent[] = [];
    const idem = createIdempotency({ store, onEvent: (e) => events.push(e) });
    await idem.execute({ key: 'k' }, async () => 'v'.repeat(100));
    await idem.execute({ key: 'k' }, async () => 'ran');
    const hit = events.find((e) => e.type === 'hit') as Extract<IdemEvent, { type: 'hit' }>;
    const record = await store.get(hit.storageKey);
    expect(hit.outcomeBytes).toBe(record?.outcome?.length);
  });
});
