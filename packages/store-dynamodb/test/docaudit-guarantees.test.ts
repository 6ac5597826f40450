/**
 * docaudit: README guarantees that no earlier test would notice breaking (each found by
 * mutating the source and running the suite; see the commit message).
 */
import { type AttributeValue, type DynamoDBClient, PutItemCommand } from '@aws-sdk/client-dynamodb';
import { ManualClock } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { createDynamoDbStore, recommendedDynamoDbClientConfig } from '../src/index.js';
import { decodeRaw, layouts } from './dynamodb-env.js';
import { acquireInput, HOUR, newKey, setup, tables } from './store-fixture.js';

const bytes = (text: string) => new TextEncoder().encode(text);

describe('docaudit: recommendedDynamoDbClientConfig() defaults (README "Client settings")', () => {
  // The README's table: 2 s per attempt (requestTimeout with throwOnRequestTimeout, and
  // socketTimeout), 1 s to connect, 2 attempts, so a call ends within about 4.2 s, below core's
  // 5 s storeTimeoutMs. Only client-recovery.test.ts used the defaults, and it is skipped when
  // DYNAMODB_ENDPOINT is set; a default raised (or throwOnRequestTimeout turned off, which makes
  // the SDK only log) went unnoticed there.
  it('are the documented bounded values', () => {
    expect(recommendedDynamoDbClientConfig()).toEqual({
      maxAttempts: 2,
      requestHandler: {
        connectionTimeout: 1_000,
        requestTimeout: 2_000,
        throwOnRequestTimeout: true,
        socketTimeout: 2_000,
      },
    });
  });
});

describe.each(layouts)('docaudit: whole-item writes never move the fence back: $name', (layout) => {
  /**
   * The item as another writer left it: still this owner's in-progress record with the lease
   * the store remembers, but a later fence (a copy of the owner's upsert that the network held
   * up and that landed after an operator's forceRelease: the service computed fence + 1 twice).
   */
  async function bumpFence(
    t: ReturnType<typeof setup>,
    key: string,
    fence: number,
  ): Promise<Record<string, AttributeValue>> {
    const item = (await t.raw(key))!;
    item[layout.names.fence] = { N: String(fence) };
    await t.client.send(new PutItemCommand({ TableName: tables[layout.id], Item: item }));
    return item;
  }

  // README (Guarantees): the whole-item PutItem's condition is "owner = mine AND status =
  // in_progress AND expiresAt > now AND fence = the one I hold AND leaseUntil = the last one I
  // wrote"; a failure on a record still this owner's sends the UpdateItem, which keeps the
  // stored fence. Without `fence = the one I hold` the PutItem wrote the remembered fence over
  // a later one, and the fence went back (8 to 1 here).
  for (const end of ['complete', 'release'] as const) {
    it(`${end} by the holder keeps a later fence another write left on its item`, async () => {
      const clock = new ManualClock(Date.now());
      const t = setup(layout, { clock });
      const key = newKey();
      const input = acquireInput(key);
      expect(await t.store.acquire(input)).toMatchObject({ kind: 'acquired', fence: 1 });
      await bumpFence(t, key, 8);
      const written =
        end === 'complete'
          ? await t.store.complete({ ...input, outcome: bytes('done'), retentionMs: HOUR })
          : await t.store.release(input);
      expect(written).toEqual({ ok: true });
      const stored = decodeRaw(layout, (await t.raw(key))!);
      expect(stored.status).toBe(end === 'complete' ? 'completed' : 'released');
      expect(stored.fence).toBe(8);
      // The next acquisition continues above it.
      if (end === 'release')
        expect(await t.store.acquire(acquireInput(key))).toMatchObject({ fence: 9 });
    });
  }
});

describe('docaudit: the released-keys memo is bounded (README Figures: "it remembers up to 10,000 such keys")', () => {
  // No service: a client that accepts every write, as dynamo9's memo-bound test does for the
  // held leases. A key this store released goes straight to the upsert (UpdateItem); past
  // 10,000 released keys the oldest are forgotten (their acquire is the PutItem again), so
  // the memo cannot grow without bound in a long-lived process.
  it('past 10,000 released keys the oldest is forgotten: its next acquire starts with the PutItem', async () => {
    const sent: string[] = [];
    const client = {
      send(command: { constructor: { name: string } }) {
        sent.push(command.constructor.name);
        return Promise.resolve({});
      },
    };
    const store = createDynamoDbStore({
      client: client as unknown as DynamoDBClient,
      tableName: 'idem',
      clock: new ManualClock(1_000_000),
    });
    const inputs = Array.from({ length: 10_001 }, (_, i) =>
      acquireInput(`k${i}`, { owner: `o${i}` }),
    );
    for (const input of inputs) {
      await store.acquire(input);
      await store.release(input);
    }
    sent.length = 0;
    await store.acquire(acquireInput('k0'));
    await store.acquire(acquireInput('k10000'));
    await store.acquire(acquireInput('k1'));
    expect(sent).toEqual(['PutItemCommand', 'UpdateItemCommand', 'UpdateItemCommand']);
  });
});
