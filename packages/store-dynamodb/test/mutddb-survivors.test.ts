/**
 * mutddb: tests written for the mutants of the store's source that the other tests let
 * survive (mutation audit, see the commit messages). Each test uses its own key prefix
 * (setup()) on the run's tables.
 */
import { PutItemCommand } from '@aws-sdk/client-dynamodb';
import { ManualClock, OutcomeCorruptError } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { layouts } from './dynamodb-env.js';
import {
  acquireInput,
  HOUR,
  newKey,
  newOwner,
  otherStore,
  setup,
  tables,
} from './store-fixture.js';

const bytes = (text: string) => new TextEncoder().encode(text);

describe.each(layouts)('mutddb survivors: $name', (layout) => {
  const other = (t: ReturnType<typeof setup>, clock: ManualClock) => otherStore(layout, t, clock);

  it("an owner's acquire of its own lapsed in-progress record keeps its fence, also from a store that remembers an older tombstone of the key", async () => {
    // The continuing upsert must refuse the owner's own record (`#ow <> :owner`): the store
    // then renews it as a redelivery. Without that term the upsert took the record over from
    // itself, with fence + 1 and takeover: true.
    const clock = new ManualClock(Date.now());
    const t = setup(layout, { clock });
    const b = other(t, clock);
    const key = newKey();
    const first = acquireInput(key, { leaseMs: 1_000 });
    expect(await t.store.acquire(first)).toMatchObject({ kind: 'acquired', fence: 1 });
    expect(await t.store.release(first)).toEqual({ ok: true }); // t.store remembers the tombstone
    const second = acquireInput(key, { leaseMs: 1_000 });
    expect(await b.acquire(second)).toMatchObject({ kind: 'acquired', fence: 2 });
    clock.advance(5_000); // its lease passed, its retention did not
    // The same owner's acquire (delivered again) through the store holding the stale hint.
    const again = await t.store.acquire(second);
    expect(again).toMatchObject({ kind: 'acquired', fence: 2, takeover: false });
    // And through the other store: the same answer.
    expect(await b.acquire(second)).toMatchObject({ kind: 'acquired', fence: 2, takeover: false });
  });
  /** A completed item written by hand, with these outcome bytes and encoding. */
  async function putCompleted(
    t: ReturnType<typeof setup>,
    key: string,
    outcome: Uint8Array,
    encoding: string,
  ): Promise<void> {
    const n = layout.names;
    const owner = newOwner();
    await t.client.send(
      new PutItemCommand({
        TableName: tables[layout.id],
        Item: {
          ...layout.rawKey(t.prefix + key),
          [n.status]: { S: 'completed' },
          [n.fingerprint]: { S: 'fp' },
          [n.owner]: { S: owner },
          [n.origin]: { S: owner },
          [n.fence]: { N: '1' },
          [n.leaseUntil]: { N: String(Date.now()) },
          [n.expiresAt]: { N: String(Date.now() + HOUR) },
          [n.ttl]: { N: String(Math.ceil((Date.now() + HOUR) / 1000)) },
          [n.outcome]: { B: outcome },
          [n.outcomeEncoding]: { S: encoding },
        },
      }),
    );
  }

  it('a stored outcome that does not decompress fails the read with OutcomeCorruptError, and its bytes are not in the message', async () => {
    const t = setup(layout);
    const key = newKey();
    const secret = 'SECRET-card-4242424242424242';
    await putCompleted(t, key, bytes(secret), 'gzip');
    const error = await t.store.get(key).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(OutcomeCorruptError);
    expect(String((error as Error).message)).not.toContain('SECRET');
    expect(String((error as Error).message)).not.toContain('4242');
  });

  it('a stored outcome with an encoding the store does not know fails the read with OutcomeCorruptError, never as raw bytes', async () => {
    const t = setup(layout);
    const key = newKey();
    await putCompleted(t, key, bytes('not brotli'), 'br');
    await expect(t.store.get(key)).rejects.toBeInstanceOf(OutcomeCorruptError);
  });

  it('every read the store sends is strongly consistent (ConsistentRead), the admin reads included', async () => {
    const clock = new ManualClock(Date.now());
    const t = setup(layout, { clock });
    const key = newKey();
    const input = acquireInput(key);
    await t.store.acquire(input);
    await t.store.get(key);
    await t.store.admin.inspect(key);
    await t.store.admin.forceRelease(key);
    await t.store.admin.delete(key);
    const reads = t.sent.filter((r) => r.command === 'GetItemCommand');
    expect(reads.length).toBeGreaterThanOrEqual(4);
    for (const read of reads) expect(read.input.ConsistentRead).toBe(true);
  });
});
