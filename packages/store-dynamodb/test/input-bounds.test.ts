/**
 * Input the store must refuse before sending anything: owner tokens, keys and fingerprints
 * that would make two callers one (or that DynamoDB would refuse as a "store failure"), and
 * durations no deadline can hold.
 */

import { InvalidInputError } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { createDynamoDbStore } from '../src/index.js';
import { layouts, makeClient } from './dynamodb-env.js';
import { acquireInput, clients, endpoint, HOUR, newKey, setup } from './store-fixture.js';

async function invalid(promise: Promise<unknown>): Promise<void> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(InvalidInputError);
  expect((error as InvalidInputError).code).toBe('INVALID_INPUT');
}

const layout = layouts[0]!;

describe('DynamoDB store: input bounds', () => {
  it('refuses an owner that is empty, not a string, malformed or oversized, before any request', async () => {
    const { store, take } = setup(layout);
    const key = newKey();
    // '' twice would be answered as one caller's own acquisition; undefined or an oversized
    // token would fail in DynamoDB as a ValidationException, i.e. as STORE_UNAVAILABLE (a
    // 503 retried for ever) instead of a caller error.
    const bad = ['', 'a\uD800', undefined, null, 5, 'o'.repeat(1025)] as unknown as string[];
    for (const owner of bad) {
      await invalid(store.acquire({ ...acquireInput(key), owner }));
      await invalid(store.extend({ key, owner, leaseMs: 1_000, retentionMs: HOUR }));
      await invalid(store.release({ key, owner, retentionMs: HOUR }));
      await invalid(store.complete({ key, owner, outcome: new Uint8Array(1), retentionMs: HOUR }));
    }
    expect(take()).toEqual([]);
    // A token as long as the limit is fine.
    expect(await store.acquire(acquireInput(key, { owner: 'o'.repeat(1024) }))).toMatchObject({
      kind: 'acquired',
    });
  });

  it('refuses an empty or malformed storage key or fingerprint, and a malformed keyPrefix', async () => {
    const { store, take } = setup(layout);
    for (const key of ['', 'k\uDC00'] as string[]) {
      await invalid(store.acquire(acquireInput(key)));
      await invalid(store.get(key));
      await invalid(store.release({ key, owner: 'o', retentionMs: HOUR }));
    }
    await invalid(store.acquire(acquireInput(newKey(), { fingerprint: 'fp\uD800' })));
    expect(take()).toEqual([]);
    const client = makeClient(endpoint);
    clients.add(client);
    expect(() => createDynamoDbStore({ client, tableName: 'idem', keyPrefix: 'p\uD800' })).toThrow(
      InvalidInputError,
    );
  });

  it('refuses an outcome that is not bytes before any request', async () => {
    const { store, take } = setup(layout);
    const key = newKey();
    const input = acquireInput(key);
    await store.acquire(input);
    take();
    for (const outcome of ['text', [1, 2], undefined, { length: 1 }] as unknown as Uint8Array[]) {
      await invalid(store.complete({ key, owner: input.owner, outcome, retentionMs: HOUR }));
    }
    expect(take()).toEqual([]);
  });

  it('refuses a duration past Number.MAX_SAFE_INTEGER before any request', async () => {
    const { store, take } = setup(layout);
    const key = newKey();
    // 1e20 used to be written: a lease that never passes, the key blocked for good.
    await invalid(store.acquire(acquireInput(key, { leaseMs: 1e20 })));
    await invalid(store.acquire(acquireInput(key, { retentionMs: 1e300 })));
    await invalid(store.extend({ key, owner: 'o', leaseMs: 1e20, retentionMs: HOUR }));
    await invalid(store.release({ key, owner: 'o', retentionMs: 1e20 }));
    await invalid(
      store.complete({ key, owner: 'o', outcome: new Uint8Array(1), retentionMs: 1e20 }),
    );
    expect(take()).toEqual([]);
    // The longest retention core accepts still works, and the record replays.
    const retentionMs = Number.MAX_SAFE_INTEGER;
    const input = acquireInput(key, { retentionMs });
    expect(await store.acquire(input)).toMatchObject({ kind: 'acquired', fence: 1 });
    expect(
      await store.complete({ key, owner: input.owner, outcome: new Uint8Array([9]), retentionMs }),
    ).toEqual({ ok: true });
    const found = await store.acquire(acquireInput(key));
    expect(found).toMatchObject({ kind: 'found', record: { status: 'completed', fence: 1 } });
  });
});
