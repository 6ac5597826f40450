/**
 * dynrev adversarial review: sizes, compression boundaries, many calls in flight, and bad
 * input / options. Real DynamoDB Local (it enforces the 400 KB item limit and the key limits).
 */
import { randomBytes } from 'node:crypto';
import type { AttributeValue } from '@aws-sdk/client-dynamodb';
import { InvalidInputError, ManualClock, OutcomeTooLargeError } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { createDynamoDbStore } from '../src/index.js';
import { decodeRaw, type Layout, layouts, makeClient, rawItem } from './dynamodb-env.js';
import {
  acquireInput,
  clients,
  endpoint,
  expectSameBytes,
  HOUR,
  newKey,
  setup,
  tables,
} from './store-fixture.js';

const simple = layouts.find((l) => l.id === 'simple')!;
const single = layouts.find((l) => l.id === 'single')!;

async function limitFor(complete: (outcome: Uint8Array) => Promise<unknown>): Promise<number> {
  const error = await complete(new Uint8Array(randomBytes(500 * 1024))).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(OutcomeTooLargeError);
  return (error as OutcomeTooLargeError).limit;
}

describe('dynrev sizes: the largest item one can make', () => {
  it('2 KB partition key value, 1024-byte multibyte sort key, 1 KiB owner and fingerprint, 200-byte attribute names: the exact budget lands, one byte more is refused before any request, and a later takeover still works', async () => {
    const names = {
      status: `s${'a'.repeat(199)}`,
      fingerprint: `f${'a'.repeat(199)}`,
      owner: `o${'a'.repeat(199)}`,
      origin: `g${'a'.repeat(199)}`,
      fence: `n${'a'.repeat(199)}`,
      leaseUntil: `l${'a'.repeat(199)}`,
      expiresAt: `e${'a'.repeat(199)}`,
      outcome: `b${'a'.repeat(199)}`,
      outcomeEncoding: `c${'a'.repeat(199)}`,
      ttl: `t${'a'.repeat(199)}`,
    };
    const layout: Layout = { ...single, names };
    const partitionKeyValue = `P${randomBytes(4).toString('hex')}${'p'.repeat(2000)}`;
    const client = makeClient(endpoint);
    clients.add(client);
    const sent: string[] = [];
    client.middlewareStack.add(
      (next, context) => async (args) => {
        sent.push(String(context.commandName));
        return next(args);
      },
      { step: 'deserialize', name: 'dynrevCount' },
    );
    const clock = new ManualClock(Date.now());
    const store = createDynamoDbStore({
      client,
      tableName: tables.single,
      partitionKey: 'PK',
      singleTable: { partitionKeyValue, sortKey: 'SK' },
      attributes: names,
      clock,
    });
    const raw = async (key: string) => {
      const item = await rawItem(
        client,
        tables.single,
        { ...layout, rawKey: (k) => ({ PK: { S: partitionKeyValue }, SK: { S: k } }) },
        key,
      );
      return item;
    };
    // 'é' is 2 UTF-8 bytes: 511 of them plus two ASCII bytes is the 1024-byte sort key limit.
    const key = `kk${'é'.repeat(511)}`;
    expect(Buffer.byteLength(key)).toBe(1024);
    const owner = 'o'.repeat(1024);
    const input = acquireInput(key, { owner, fingerprint: 'é'.repeat(512) });
    expect(await store.acquire(input)).toMatchObject({ kind: 'acquired', fence: 1 });
    const before = await raw(key);
    const w = { key, owner, retentionMs: 1_000 };
    const limit = await limitFor((outcome) => store.complete({ ...w, outcome }));
    sent.length = 0;
    await expect(
      store.complete({ ...w, outcome: new Uint8Array(randomBytes(limit + 1)) }),
    ).rejects.toBeInstanceOf(OutcomeTooLargeError);
    expect(sent, 'refused before any request').toEqual([]);
    expect(await raw(key)).toEqual(before);
    const fits = new Uint8Array(randomBytes(limit));
    expect(await store.complete({ ...w, outcome: fits })).toEqual({ ok: true });
    const item = (await raw(key)) as Record<string, AttributeValue>;
    expectSameBytes(item[names.outcome]?.B, fits);
    const replay = await store.acquire(acquireInput(key, { fingerprint: 'é'.repeat(512) }));
    expect(replay.kind).toBe('found');
    if (replay.kind === 'found') expectSameBytes(replay.record.outcome, fits);
    // Retention passes: the upsert takes the ~400 KB item with another 1 KiB fingerprint and owner.
    clock.advance(2_000);
    const next = acquireInput(key, { owner: 'p'.repeat(1024), fingerprint: 'ü'.repeat(512) });
    expect(await store.acquire(next)).toMatchObject({ kind: 'acquired', fence: 2 });
    expect(decodeRaw(layout, (await raw(key))!)).toMatchObject({
      status: 'in_progress',
      fence: 2,
      owner: next.owner,
    });
  });
});

describe.each(layouts)('dynrev sizes: $name', (layout) => {
  it('compression boundaries: 4095 bytes raw, 4096 gzipped, 4 MiB compressible lands and replays exactly, 4 MiB + 1 and a gzip that stays too large are refused before any request', async () => {
    const t = setup(layout);
    const n = layout.names;
    const cases: Array<[number, boolean]> = [
      [4095, false],
      [4096, true],
    ];
    for (const [size, gzipped] of cases) {
      const input = acquireInput(newKey());
      await t.store.acquire(input);
      const outcome = new Uint8Array(size).fill(120);
      expect(await t.store.complete({ ...input, outcome, retentionMs: HOUR })).toEqual({
        ok: true,
      });
      const item = (await t.raw(input.key))!;
      expect(item[n.outcomeEncoding]?.S, `size ${size}`).toBe(gzipped ? 'gzip' : undefined);
      expectSameBytes(decodeRaw(layout, item).outcome, outcome);
      // The redelivered completion recognises its own (compressed) bytes.
      expect(await t.store.complete({ ...input, outcome, retentionMs: HOUR })).toEqual({
        ok: true,
      });
    }
    const big = acquireInput(newKey());
    await t.store.acquire(big);
    const before = await t.raw(big.key);
    t.take();
    const cap = t.store.capabilities.maxOutcomeBytes!;
    expect(cap).toBe(4 * 1024 * 1024);
    await expect(
      t.store.complete({ ...big, outcome: new Uint8Array(cap + 1), retentionMs: HOUR }),
    ).rejects.toBeInstanceOf(OutcomeTooLargeError);
    // Random 420 KB followed by zeros: gzip keeps it above the item budget.
    const stubborn = new Uint8Array(1024 * 1024);
    stubborn.set(randomBytes(420 * 1024));
    await expect(
      t.store.complete({ ...big, outcome: stubborn, retentionMs: HOUR }),
    ).rejects.toBeInstanceOf(OutcomeTooLargeError);
    expect(t.take(), 'nothing sent').toEqual([]);
    expect(await t.raw(big.key)).toEqual(before);
    // Exactly the cap, compressible: lands, and both replays return the exact bytes.
    const full = new Uint8Array(cap);
    for (let i = 0; i < full.length; i++) full[i] = (i * 7) % 251;
    expect(await t.store.complete({ ...big, outcome: full, retentionMs: HOUR })).toEqual({
      ok: true,
    });
    const found = await t.store.acquire(acquireInput(big.key));
    expect(found.kind).toBe('found');
    if (found.kind === 'found') expectSameBytes(found.record.outcome, full);
    expectSameBytes((await t.store.get(big.key))?.outcome, full);
  });

  it('empty outcomes and Uint8Array views (non-zero byteOffset, pooled Buffers) round trip exactly, raw and gzipped, and are recognised on redelivery', async () => {
    const t = setup(layout);
    const backing = new Uint8Array(randomBytes(20_000));
    const views: Uint8Array[] = [
      new Uint8Array(0),
      backing.subarray(0, 0),
      Buffer.from('pooled small buffer'),
      backing.subarray(17, 117),
      new Uint8Array(backing.buffer, 1_001, 9_000).fill(3, 0, 8_000), // compressible: gzipped
    ];
    for (const outcome of views) {
      const expected = Uint8Array.from(outcome);
      const input = acquireInput(newKey());
      await t.store.acquire(input);
      expect(await t.store.complete({ ...input, outcome, retentionMs: HOUR })).toEqual({
        ok: true,
      });
      expect(
        await t.store.complete({ ...input, outcome: Uint8Array.from(expected), retentionMs: HOUR }),
      ).toEqual({ ok: true });
      const found = await t.store.acquire(acquireInput(input.key));
      expect(found.kind).toBe('found');
      if (found.kind === 'found') expectSameBytes(found.record.outcome, expected);
    }
  });

  it('300 calls in flight on one client (100 keys x acquire, complete, replay): every one answers right', async () => {
    const t = setup(layout);
    const inputs = Array.from({ length: 100 }, () => acquireInput(newKey()));
    const acquired = await Promise.all(inputs.map((input) => t.store.acquire(input)));
    expect(acquired.every((r) => r.kind === 'acquired' && r.fence === 1)).toBe(true);
    const completed = await Promise.all(
      inputs.map((input, i) =>
        t.store.complete({
          ...input,
          outcome: new TextEncoder().encode(`v${i}`),
          retentionMs: HOUR,
        }),
      ),
    );
    expect(completed.every((r) => r.ok)).toBe(true);
    const replays = await Promise.all(
      inputs.map((input) => t.store.acquire(acquireInput(input.key))),
    );
    replays.forEach((r, i) => {
      expect(r.kind).toBe('found');
      if (r.kind === 'found') expect(new TextDecoder().decode(r.record.outcome)).toBe(`v${i}`);
    });
  });
});

describe('dynrev input: wrong types and odd values', () => {
  it('NaN, negative, infinite, string and huge durations, and wrong-typed keys, owners and fingerprints: InvalidInputError, no request, no item', async () => {
    const t = setup(simple);
    const key = newKey();
    const bad: Array<Record<string, unknown>> = [
      { leaseMs: Number.NaN },
      { leaseMs: -1 },
      { leaseMs: Number.POSITIVE_INFINITY },
      { leaseMs: '1000' },
      { retentionMs: Number.NaN },
      { retentionMs: -5 },
      { retentionMs: 2 ** 60 },
      { retentionMs: null },
      { key: 42 },
      { key: 'k'.repeat(2_000) },
      { fingerprint: 7 },
      { fingerprint: 'ä'.repeat(513) },
      { owner: { id: 1 } },
    ];
    for (const patch of bad) {
      const input = { ...acquireInput(key), ...patch } as ReturnType<typeof acquireInput>;
      await expect(t.store.acquire(input), JSON.stringify(patch)).rejects.toBeInstanceOf(
        InvalidInputError,
      );
    }
    const owned = acquireInput(newKey());
    await t.store.acquire(owned);
    t.take();
    for (const leaseMs of [Number.NaN, -1, Number.POSITIVE_INFINITY]) {
      await expect(t.store.extend({ ...owned, leaseMs })).rejects.toBeInstanceOf(InvalidInputError);
    }
    for (const retentionMs of [Number.NaN, -1, Number.POSITIVE_INFINITY]) {
      await expect(
        t.store.complete({ ...owned, outcome: new Uint8Array(1), retentionMs }),
      ).rejects.toBeInstanceOf(InvalidInputError);
      await expect(t.store.release({ ...owned, retentionMs })).rejects.toBeInstanceOf(
        InvalidInputError,
      );
    }
    expect(t.take(), 'no request').toEqual([]);
    expect(await t.raw(key)).toBeUndefined();
    expect(decodeRaw(simple, (await t.raw(owned.key))!)).toMatchObject({ status: 'in_progress' });
  });

  it('a keyPrefix that fills the 1024-byte key limit: every key is refused as InvalidInputError before any request', async () => {
    const client = makeClient(endpoint);
    clients.add(client);
    const store = createDynamoDbStore({
      client,
      tableName: tables.single,
      ...single.options,
      keyPrefix: 'x'.repeat(1024),
    });
    await expect(store.acquire(acquireInput('k'))).rejects.toBeInstanceOf(InvalidInputError);
    await expect(store.get('k')).rejects.toBeInstanceOf(InvalidInputError);
  });

  // FINDING (LOW; fixed: createDynamoDbStore checks them): table names and name/value lengths were not validated at creation. A table
  // name DynamoDB can never accept ('x', 'bad name!', 300 characters) is taken by
  // createDynamoDbStore, and then every call (acquire, get, ensureTable) fails as
  // STORE_UNAVAILABLE (a ValidationException: 503 + Retry-After, retried for ever) instead of
  // a clear configuration error. Likewise a singleTable.partitionKeyValue of 3000 bytes
  // (partition key values must be under 2048 bytes) or an attribute name over 64 KB.
  // Reproduce: createDynamoDbStore({ client, tableName: 'x' }).acquire(...) rejects with
  // StoreUnavailableError. Fix: validate at creation: a table name of 3..255 characters of
  // [A-Za-z0-9_.-] or a table ARN, key attribute names of at most 255 bytes, other names
  // under 64 KB, partitionKeyValue a well-formed string under 2048 bytes; InvalidInputError.
  it('odd table names, an oversize partition key value and an oversize attribute name are refused at creation with InvalidInputError', () => {
    const client = makeClient(endpoint);
    clients.add(client);
    for (const tableName of ['x', 'bad name!', 't'.repeat(300)]) {
      expect(() => createDynamoDbStore({ client, tableName }), tableName).toThrow(
        InvalidInputError,
      );
    }
    expect(() =>
      createDynamoDbStore({
        client,
        tableName: tables.single,
        ...single.options,
        singleTable: { partitionKeyValue: 'p'.repeat(3000), sortKey: 'SK' },
      }),
    ).toThrow(InvalidInputError);
    expect(() =>
      createDynamoDbStore({
        client,
        tableName: tables.simple,
        attributes: { owner: 'o'.repeat(70_000) },
      }),
    ).toThrow(InvalidInputError);
  });

  it('names DynamoDB takes are still accepted: 3 and 255 characters, dots and dashes, a table ARN; a 255-byte key attribute name', () => {
    const client = makeClient(endpoint);
    clients.add(client);
    for (const tableName of [
      'abc',
      'a'.repeat(255),
      'my-table_v1.2',
      'arn:aws:dynamodb:eu-west-1:123456789012:table/idem-records',
    ]) {
      expect(() => createDynamoDbStore({ client, tableName }), tableName).not.toThrow();
    }
    expect(() =>
      createDynamoDbStore({ client, tableName: 'abc', partitionKey: 'p'.repeat(255) }),
    ).not.toThrow();
    expect(() =>
      createDynamoDbStore({ client, tableName: 'abc', partitionKey: 'p'.repeat(256) }),
    ).toThrow(InvalidInputError);
    expect(() =>
      createDynamoDbStore({
        client,
        tableName: 'arn:aws:dynamodb:eu-west-1:123456789012:table/x',
      }),
    ).toThrow(InvalidInputError);
  });

  it('requestDeadlineMs must be a positive integer within the longest timer Node keeps', () => {
    const client = makeClient(endpoint);
    clients.add(client);
    for (const requestDeadlineMs of [0, -1, 1.5, Number.NaN, 2 ** 31, '5000']) {
      expect(
        () =>
          createDynamoDbStore({
            client,
            tableName: 'abc',
            requestDeadlineMs: requestDeadlineMs as number,
          }),
        String(requestDeadlineMs),
      ).toThrow(InvalidInputError);
    }
    expect(() =>
      createDynamoDbStore({ client, tableName: 'abc', requestDeadlineMs: 2 ** 31 - 1 }),
    ).not.toThrow();
  });
});
