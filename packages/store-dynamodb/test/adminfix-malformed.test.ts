/**
 * adminfix: an operator's `forceRelease` or `delete` (`idem release`, `idem delete`) on an
 * item no store wrote (a fence of the wrong type, negative, fractional or past 2^53, no
 * fingerprint, an unknown status) leaves it as it is and fails typed, as the Redis and
 * PostgreSQL admins do. It wrote first: a forced release raised the bad fence (-5 became -4)
 * and then failed on the fence it answered, or wrote and then failed decoding the old item;
 * a delete of an item with a bad fence wrote its tombstone and answered success.
 */
import { type AttributeValue, PutItemCommand } from '@aws-sdk/client-dynamodb';
import { ManualClock, StoreUnavailableError } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { createDynamoDbStore } from '../src/index.js';
import { decodeRaw, type Layout, layouts, makeClient } from './dynamodb-env.js';
import { acquireInput, clients, endpoint, HOUR, newKey, setup, tables } from './store-fixture.js';

type Item = Record<string, AttributeValue>;

/** A live in-progress item as a store writes it, with `change` applied (`undefined` removes). */
function handWritten(
  layout: Layout,
  change: Partial<Record<keyof Layout['names'], AttributeValue | undefined>>,
): Item {
  const n = layout.names;
  const now = Date.now();
  const item: Record<string, AttributeValue | undefined> = {
    [n.status]: { S: 'in_progress' },
    [n.fingerprint]: { S: 'fp' },
    [n.owner]: { S: 'o' },
    [n.fence]: { N: '3' },
    [n.leaseUntil]: { N: String(now + 60_000) },
    [n.expiresAt]: { N: String(now + HOUR) },
    [n.ttl]: { N: String(Math.ceil((now + HOUR) / 1000)) },
  };
  for (const [field, value] of Object.entries(change))
    item[n[field as keyof Layout['names']]] = value;
  return Object.fromEntries(Object.entries(item).filter(([, v]) => v !== undefined)) as Item;
}

type Change = Partial<Record<keyof Layout['names'], AttributeValue | undefined>>;

/** Writes a hand-written item at `key` (a plain PutItem) and answers it. */
async function put(t: ReturnType<typeof setup>, layout: Layout, key: string, change: Change) {
  const item = { ...t.store.itemKey(key), ...handWritten(layout, change) };
  await t.client.send(new PutItemCommand({ TableName: tables[layout.id], Item: item }));
  return item;
}

const BAD: [string, Change][] = [
  ['a fence that is a string', { fence: { S: '3' } }],
  ['a negative fence', { fence: { N: '-5' } }],
  ['a fractional fence', { fence: { N: '1.5' } }],
  ['a fence past 2^53', { fence: { N: '9007199254740993' } }],
  ['a huge fence', { fence: { N: '1e30' } }],
  ['no fence', { fence: undefined }],
  ['no fingerprint', { fingerprint: undefined }],
  ['a fingerprint that is a number', { fingerprint: { N: '7' } }],
  ['no owner', { owner: undefined }],
  ['a lease that is a string', { leaseUntil: { S: 'soon' } }],
  ['an unknown status', { status: { S: 'paused' } }],
];

describe.each(layouts)('adminfix DynamoDB: admin on a malformed item ($name)', (layout) => {
  it.each(BAD)(
    '%s: forceRelease and delete write nothing and fail typed',
    async (_what, change) => {
      const t = setup(layout);
      for (const action of ['forceRelease', 'delete'] as const) {
        const key = newKey();
        await put(t, layout, key, change);
        // As DynamoDB holds it (numbers normalised: 1e30 is held as 1 and 30 zeros).
        const before = await t.raw(key);
        expect(before).toBeDefined();
        const error = await t.store.admin[action](key).then(
          (answer) => answer,
          (e: unknown) => e,
        );
        expect(await t.raw(key), `${action} left the item as it was`).toEqual(before);
        expect(error, action).toBeInstanceOf(StoreUnavailableError);
        expect((error as Error).message, action).toMatch(/left as it is/);
      }
    },
    30_000,
  );

  it('at fence 2^53 - 1: forceRelease writes nothing and fails (no fence left); delete works', async () => {
    const t = setup(layout);
    const key = newKey();
    const item = await put(t, layout, key, { fence: { N: '9007199254740991' } });
    await expect(t.store.admin.forceRelease(key)).rejects.toThrow(/no fence left below 2\^53/);
    expect(await t.raw(key)).toEqual(item);
    expect(await t.store.admin.delete(key)).toEqual({ deleted: true });
    expect((await t.raw(key))?.[layout.names.fence]).toEqual({ N: '9007199254740991' });
  }, 30_000);

  it('an item at the largest fence a release can raise is still released and deleted', async () => {
    const t = setup(layout);
    const key = newKey();
    await put(t, layout, key, { fence: { N: '9007199254740990' } });
    expect(await t.store.admin.forceRelease(key)).toEqual({
      ok: true,
      fence: 2 ** 53 - 1,
      previousOwner: 'o',
    });
    // A completed or released record is never changed by a release, whatever its fence.
    expect(await t.store.admin.forceRelease(key)).toEqual({ ok: false, reason: 'not_in_progress' });
    expect(await t.store.admin.delete(key)).toEqual({ deleted: true });
  }, 30_000);
});

/**
 * Runs `between` once, in the middle of the next UpdateItem the client sends: after the admin
 * read the item, before its write reaches DynamoDB.
 */
function beforeNextUpdate(
  client: ReturnType<typeof setup>['client'],
  between: () => Promise<void>,
) {
  let armed = true;
  client.middlewareStack.add(
    (next, context) => async (args) => {
      if (armed && context.commandName === 'UpdateItemCommand') {
        armed = false;
        await between();
      }
      return next(args);
    },
    { step: 'initialize', name: 'adminfixBetween' },
  );
}

describe.each(layouts)(
  'adminfix DynamoDB: an item that changes under an admin write ($name)',
  (layout) => {
    it.each(['forceRelease', 'delete'] as const)(
      '%s: an item made malformed after the read is not written and the call fails typed',
      async (action) => {
        const t = setup(layout);
        const other = makeClient(endpoint);
        clients.add(other);
        const key = newKey();
        const item = await put(t, layout, key, {});
        const corrupt = { ...item, ...handWritten(layout, { fence: { N: '-5' } }) };
        beforeNextUpdate(t.client, async () => {
          await other.send(new PutItemCommand({ TableName: tables[layout.id], Item: corrupt }));
        });
        await expect(t.store.admin[action](key)).rejects.toThrow(/fence -5 .*left as it is/);
        expect(await t.raw(key)).toEqual(corrupt);
      },
      30_000,
    );
  },
);

describe.each(layouts)(
  'adminfix DynamoDB: forceRelease limited to the execution inspected ($name)',
  (layout) => {
    it('a takeover between the read and the write: the write is refused, the answer is changed, the new execution runs on', async () => {
      const clock = new ManualClock(Date.now());
      const t = setup(layout, { clock });
      const key = newKey();
      const first = acquireInput(key, { leaseMs: 1_000 });
      const { fence } = (await t.store.acquire(first)) as { fence: number };
      clock.advance(2_000);
      const retry = acquireInput(key);
      let taken: unknown;
      // The retry's acquire goes through the same client: its own UpdateItem must not trigger it.
      const other = makeClient(endpoint);
      clients.add(other);
      const store = createDynamoDbStore({
        client: other,
        tableName: tables[layout.id],
        keyPrefix: t.prefix,
        clock,
        ...layout.options,
      });
      beforeNextUpdate(t.client, async () => {
        taken = await store.acquire(retry);
      });
      expect(await t.store.admin.forceRelease(key, { owner: first.owner, fence })).toEqual({
        ok: false,
        reason: 'changed',
        owner: retry.owner,
        fence: fence + 1,
      });
      expect(taken).toMatchObject({ kind: 'acquired', fence: fence + 1, takeover: true });
      const record = decodeRaw(layout, (await t.raw(key))!);
      expect(record).toMatchObject({ status: 'in_progress', owner: retry.owner, fence: fence + 1 });
    }, 30_000);
  },
);
