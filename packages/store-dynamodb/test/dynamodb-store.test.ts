import { randomBytes } from 'node:crypto';
import { PutItemCommand } from '@aws-sdk/client-dynamodb';
import {
  createIdempotency,
  encodeOutcome,
  InProgressError,
  InvalidInputError,
  ManualClock,
  MismatchError,
  OutcomeTooLargeError,
  StoreUnavailableError,
} from '@idem/core';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { createDynamoDbStore } from '../src/index.js';
import {
  decodeRaw,
  type Layout,
  layouts,
  makeClient,
  rawItem,
  recordRequests,
  type SentRequest,
} from './dynamodb-env.js';

const endpoint = inject('dynamodbEndpoint');
const tables = inject('dynamodbTables');
const clients = new Set<ReturnType<typeof makeClient>>();
afterAll(() => {
  for (const client of clients) client.destroy();
});

const HOUR = 3_600_000;

/** A store on its own counted client, with a fresh key prefix. */
function setup(layout: Layout, extra: { clock?: ManualClock; maxAttempts?: number } = {}) {
  const client = makeClient(endpoint, extra.maxAttempts ? { maxAttempts: extra.maxAttempts } : {});
  clients.add(client);
  const sent = recordRequests(client);
  const prefix = `t:${randomBytes(5).toString('hex')}:`;
  const tableName = tables[layout.id];
  const store = createDynamoDbStore({
    client,
    tableName,
    keyPrefix: prefix,
    ...(extra.clock ? { clock: extra.clock } : {}),
    ...layout.options,
  });
  return {
    client,
    store,
    sent,
    prefix,
    raw: (key: string) => rawItem(client, tableName, layout, prefix + key),
    /** Requests sent since the last call, by store operation. */
    take(): string[] {
      const ops = sent.map(classify);
      sent.length = 0;
      return ops;
    },
  };
}

/** Which store operation a request belongs to, from what it sends. */
function classify(request: SentRequest): string {
  if (request.command !== 'UpdateItemCommand') return request.command;
  const values = (request.input.ExpressionAttributeValues ?? {}) as Record<string, unknown>;
  if (':zero' in values) return 'acquire';
  if (':completed' in values) return 'complete';
  if (':released' in values) return 'release';
  return 'extend';
}

const newKey = () => randomBytes(32).toString('hex');
const newOwner = () => randomBytes(16).toString('base64url');
const acquireInput = (
  key: string,
  extra: { owner?: string; fingerprint?: string; leaseMs?: number; retentionMs?: number } = {},
) => ({
  key,
  owner: extra.owner ?? newOwner(),
  fingerprint: extra.fingerprint ?? 'fp',
  leaseMs: extra.leaseMs ?? 30_000,
  retentionMs: extra.retentionMs ?? HOUR,
});
/** Byte-for-byte comparison that stays fast on megabytes (deep equality does not). */
function expectSameBytes(actual: Uint8Array | undefined, expected: Uint8Array | number[]): void {
  expect(actual).toBeDefined();
  const a = Buffer.from(actual!);
  const b = Buffer.from(expected);
  expect(a.length, 'length').toBe(b.length);
  expect(a.equals(b), 'bytes').toBe(true);
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

describe.each(layouts)('DynamoDB store: $name', (layout) => {
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
    });
    const item = await t.raw(key);
    expect(item).toBeDefined();
    const expiresAt = clock.now() + 30_000 + HOUR;
    expect(item).toEqual({
      ...layout.rawKey(t.prefix + key),
      [n.status]: { S: 'in_progress' },
      [n.fingerprint]: { S: 'fp' },
      [n.owner]: { S: input.owner },
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
    const beats = ops.filter((op) => op === 'extend').length;
    expect(ops).toEqual(['acquire', ...Array(beats).fill('extend'), 'complete']);
    expect(beats).toBeGreaterThanOrEqual(2);
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

  it('over many connections: one winner of 32, mutual exclusion and contiguous fences under contention', async () => {
    const t = setup(layout);
    const key = newKey();
    const inputs = Array.from({ length: 32 }, () => acquireInput(key));
    const results = await Promise.all(inputs.map((input) => t.store.acquire(input)));
    const winners = inputs.filter((_, i) => results[i]!.kind === 'acquired');
    expect(winners).toHaveLength(1);
    for (const r of results) if (r.kind === 'found') expect(r.record.owner).toBe(winners[0]!.owner);
    await t.store.release({ key, owner: winners[0]!.owner, retentionMs: HOUR });

    // 8 workers take the key in turn, each holding it briefly then releasing. The holder is
    // cleared before its release is sent, so a grant answered while it is set overlaps a
    // lease that nobody gave up.
    let holder: string | undefined;
    const fences: number[] = [];
    const overlaps: string[] = [];
    async function worker(): Promise<void> {
      for (let round = 0; round < 12; round++) {
        const input = acquireInput(key);
        const result = await t.store.acquire(input);
        if (result.kind !== 'acquired') continue;
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

  it('an SDK retry after a lost answer never grants a second lease or overwrites an outcome', async () => {
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
    expect(t.take(), 'the SDK retried').toEqual(['acquire', 'acquire']);
    // The first attempt applied; the retry sees that lease as live and takes nothing.
    expect(result).toMatchObject({
      kind: 'found',
      record: { status: 'in_progress', owner: input.owner, fence: 1 },
    });
    const w = { key, owner: input.owner, retentionMs: HOUR };
    dropNext = 1;
    expect(await t.store.complete({ ...w, outcome: new Uint8Array([7]) })).toEqual({
      ok: false,
      reason: 'not_owner',
    });
    expect(t.take()).toEqual(['complete', 'complete']);
    const record = decodeRaw(layout, (await t.raw(key))!);
    expect(record).toMatchObject({ status: 'completed', owner: input.owner, fence: 1 });
    expect(Buffer.from(record.outcome!)).toEqual(Buffer.from([7]));
  });
});

describe('DynamoDB store: errors and set-up', () => {
  it('SDK errors become StoreUnavailableError with the cause, on every operation', async () => {
    const client = makeClient(endpoint);
    clients.add(client);
    const store = createDynamoDbStore({ client, tableName: `missing-${newKey().slice(0, 8)}` });
    const key = newKey();
    const w = { key, owner: 'o', retentionMs: HOUR };
    const calls = [
      () => store.acquire(acquireInput(key)),
      () => store.complete({ ...w, outcome: new Uint8Array([1]) }),
      () => store.release(w),
      () => store.extend({ ...w, leaseMs: 1000 }),
      () => store.get(key),
    ];
    for (const call of calls) {
      const error = await call().catch((e: unknown) => e);
      expect(error).toBeInstanceOf(StoreUnavailableError);
      expect((error as StoreUnavailableError).code).toBe('STORE_UNAVAILABLE');
      expect(((error as StoreUnavailableError).cause as Error).name).toBe(
        'ResourceNotFoundException',
      );
    }
    // A network failure (nothing listens on port 9 of the loopback address).
    const down = makeClient('http://127.0.0.1:9', { maxAttempts: 1 });
    clients.add(down);
    const unreachable = createDynamoDbStore({ client: down, tableName: tables.simple });
    const error = await unreachable.acquire(acquireInput(key)).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StoreUnavailableError);
    expect((error as StoreUnavailableError).cause).toBeInstanceOf(Error);
  });

  it('ensureTable creates an on-demand table with TTL once, and checks an existing one', async () => {
    const { DescribeTableCommand, DescribeTimeToLiveCommand, DeleteTableCommand } = await import(
      '@aws-sdk/client-dynamodb'
    );
    const client = makeClient(endpoint);
    clients.add(client);
    const tableName = `${tables.simple}-ensure`;
    const store = createDynamoDbStore({ client, tableName, attributes: { ttl: 'expiresAtSec' } });
    try {
      expect(await store.ensureTable({ pollMs: 50 })).toEqual({ created: true, ttlEnabled: true });
      expect(await store.ensureTable({ pollMs: 50 })).toEqual({
        created: false,
        ttlEnabled: false,
      });
      const table = (await client.send(new DescribeTableCommand({ TableName: tableName }))).Table!;
      expect(table.KeySchema).toEqual([{ AttributeName: 'pk', KeyType: 'HASH' }]);
      expect(table.BillingModeSummary?.BillingMode).toBe('PAY_PER_REQUEST');
      const ttl = (await client.send(new DescribeTimeToLiveCommand({ TableName: tableName })))
        .TimeToLiveDescription;
      expect(ttl).toMatchObject({ TimeToLiveStatus: 'ENABLED', AttributeName: 'expiresAtSec' });
      // The table's TTL is on another attribute than this store writes.
      await expect(createDynamoDbStore({ client, tableName }).ensureTable()).rejects.toBeInstanceOf(
        InvalidInputError,
      );
      // The key schema does not fit a single-table store.
      await expect(
        createDynamoDbStore({
          client,
          tableName,
          singleTable: { partitionKeyValue: 'IDEM' },
        }).ensureTable(),
      ).rejects.toThrow(/needs pk \(HASH, S\) \+ sk \(RANGE, S\)/);
    } finally {
      await client.send(new DeleteTableCommand({ TableName: tableName }));
    }
  });

  it('rejects bad options at creation, without any request', () => {
    const client = makeClient(endpoint);
    clients.add(client);
    const sent = recordRequests(client);
    expect(() => createDynamoDbStore({ client, tableName: '' })).toThrow(InvalidInputError);
    expect(() =>
      createDynamoDbStore({ client, tableName: 't', attributes: { owner: 'status' } }),
    ).toThrow(/distinct/);
    expect(() =>
      createDynamoDbStore({ client, tableName: 't', attributes: { fence: 'pk' } }),
    ).toThrow(/distinct/);
    expect(() => createDynamoDbStore({ client, tableName: 't', compressAboveBytes: -1 })).toThrow(
      InvalidInputError,
    );
    expect(() =>
      createDynamoDbStore({ client, tableName: 't', singleTable: { partitionKeyValue: '' } }),
    ).toThrow(InvalidInputError);
    const store = createDynamoDbStore({ client, tableName: 't' });
    expect(store.capabilities).toEqual({ clock: 'client', maxOutcomeBytes: 4 * 1024 * 1024 });
    const raw = createDynamoDbStore({
      client,
      tableName: 't',
      compressAboveBytes: false,
    }).capabilities;
    expect(raw.maxOutcomeBytes).toBeGreaterThan(395 * 1024);
    expect(raw.maxOutcomeBytes).toBeLessThan(400 * 1024);
    expect(sent).toEqual([]);
  });
});
