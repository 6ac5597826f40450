/**
 * dynrev adversarial review: exactly-once and isolation on real DynamoDB Local. Concurrent
 * acquires over many connections, stale owners after takeovers, completions whose answer is
 * lost on the wire with no SDK retry (the caller retries), one key under two prefixes,
 * layouts and scopes, retention and lease boundaries to the millisecond, and clocks.
 */
import { randomBytes } from 'node:crypto';
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import {
  createIdempotency,
  InvalidInputError,
  ManualClock,
  StoreUnavailableError,
} from '@idem/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDynamoDbStore, type DynamoDbStoreOptions } from '../src/index.js';
import { decodeRaw, layouts, makeClient, rawItem } from './dynamodb-env.js';
import { type FaultProxy, startFaultProxy } from './dynrev-proxy.js';
import { acquireInput, clients, endpoint, newKey, setup, tables } from './store-fixture.js';

const NOT_OWNER = { ok: false, reason: 'not_owner' };
const bytes = (text: string) => new TextEncoder().encode(text);

let proxy: FaultProxy;
beforeAll(async () => {
  proxy = await startFaultProxy(Number(new URL(endpoint).port));
});
afterAll(async () => {
  await proxy?.close();
});

describe.each(layouts)('dynrev isolation: $name', (layout) => {
  /** `n` stores on `n` clients of their own (own connection pools), one prefix, one clock. */
  function fleet(n: number, clock: ManualClock) {
    const prefix = `dynrev:${randomBytes(5).toString('hex')}:`;
    const stores = Array.from({ length: n }, () => {
      const client = makeClient(endpoint);
      clients.add(client);
      return createDynamoDbStore({
        client,
        tableName: tables[layout.id],
        keyPrefix: prefix,
        clock,
        ...layout.options,
      });
    });
    return { stores, prefix };
  }

  it('24 concurrent acquires over 6 clients, 4 rounds of lease takeovers: one winner per round, fences 1..4 strictly growing, losers see the winner', async () => {
    const clock = new ManualClock(Date.now());
    const { stores } = fleet(6, clock);
    const key = newKey();
    const fences: number[] = [];
    let previousWinner: string | undefined;
    for (let round = 0; round < 4; round++) {
      const inputs = Array.from({ length: 24 }, () => acquireInput(key, { leaseMs: 1_000 }));
      const results = await Promise.all(
        inputs.map((input, i) => stores[i % stores.length]!.acquire(input)),
      );
      const winners = results.flatMap((r, i) => (r.kind === 'acquired' ? [{ r, i }] : []));
      expect(winners, `round ${round}`).toHaveLength(1);
      const { r, i } = winners[0]!;
      if (r.kind !== 'acquired') throw new Error('unreachable');
      fences.push(r.fence);
      expect(r.takeover).toBe(round > 0);
      const winnerOwner = inputs[i]!.owner;
      expect(winnerOwner).not.toBe(previousWinner);
      previousWinner = winnerOwner;
      for (const other of results) {
        if (other.kind === 'found') {
          expect(other.record).toMatchObject({
            status: 'in_progress',
            owner: winnerOwner,
            fence: r.fence,
          });
        }
      }
      // The lease passes: the next round takes it over.
      clock.advance(1_001);
    }
    expect(fences).toEqual([1, 2, 3, 4]);
  });

  it('a stale owner after a takeover: extend, complete and release change nothing (byte for byte), before and after the new owner completes', async () => {
    const clock = new ManualClock(Date.now());
    const t = setup(layout, { clock });
    const key = newKey();
    const stale = acquireInput(key, { leaseMs: 1_000 });
    expect(await t.store.acquire(stale)).toMatchObject({ kind: 'acquired', fence: 1 });
    clock.advance(1_000); // exactly at the lease deadline: passed
    const fresh = acquireInput(key);
    // A second store (another process) takes it over.
    const other = createDynamoDbStore({
      client: t.client,
      tableName: tables[layout.id],
      keyPrefix: t.prefix,
      clock,
      ...layout.options,
    });
    expect(await other.acquire(fresh)).toMatchObject({
      kind: 'acquired',
      fence: 2,
      takeover: true,
    });
    const taken = await t.raw(key);
    expect(await t.store.extend({ ...stale, leaseMs: 60_000 })).toMatchObject({ ok: false });
    expect(await t.store.complete({ ...stale, outcome: bytes('stale') })).toEqual(NOT_OWNER);
    expect(await t.store.release(stale)).toEqual(NOT_OWNER);
    expect(await t.raw(key)).toEqual(taken);
    expect(await other.complete({ ...fresh, outcome: bytes('fresh') })).toEqual({ ok: true });
    const done = await t.raw(key);
    // Even the very same bytes from the stale owner are not a redelivery of its own completion.
    expect(await t.store.complete({ ...stale, outcome: bytes('fresh') })).toEqual(NOT_OWNER);
    expect(await t.store.release(stale)).toEqual(NOT_OWNER);
    expect(await t.store.extend(stale)).toMatchObject({ ok: false });
    expect(await t.raw(key)).toEqual(done);
    expect(decodeRaw(layout, done!)).toMatchObject({
      status: 'completed',
      owner: fresh.owner,
      fence: 2,
      outcome: bytes('fresh'),
    });
  });

  it('answers lost on the wire with no SDK retry (maxAttempts 1): the caller retries acquire, complete and release and each is recognised as its own', async () => {
    const client = makeClient(proxy.endpoint, { maxAttempts: 1, serial: true });
    clients.add(client);
    const prefix = `dynrev-lost:${randomBytes(5).toString('hex')}:`;
    const store = createDynamoDbStore({
      client,
      tableName: tables[layout.id],
      keyPrefix: prefix,
      ...layout.options,
    });
    const raw = (key: string) => rawItem(client, tables[layout.id], layout, prefix + key);
    const key = newKey();
    const input = acquireInput(key);
    // acquire applied, answer lost: the caller's retry with the same owner is its acquisition.
    proxy.loseNext();
    await expect(store.acquire(input)).rejects.toBeInstanceOf(StoreUnavailableError);
    expect(await store.acquire(input)).toMatchObject({ kind: 'acquired', fence: 1 });
    // complete applied, answer lost: the retry answers ok and writes nothing.
    proxy.loseNext();
    await expect(store.complete({ ...input, outcome: bytes('once') })).rejects.toBeInstanceOf(
      StoreUnavailableError,
    );
    const completed = await raw(key);
    expect(decodeRaw(layout, completed!)).toMatchObject({
      status: 'completed',
      fence: 1,
      outcome: bytes('once'),
    });
    expect(await store.complete({ ...input, outcome: bytes('once') })).toEqual({ ok: true });
    expect(await raw(key)).toEqual(completed);
    // A different outcome is not a redelivery.
    expect(await store.complete({ ...input, outcome: bytes('twice') })).toEqual(NOT_OWNER);
    expect(await raw(key)).toEqual(completed);
    // release applied, answer lost: the retry answers ok; the next owner gets fence 2.
    const key2 = newKey();
    const second = acquireInput(key2);
    await store.acquire(second);
    proxy.loseNext();
    await expect(store.release(second)).rejects.toBeInstanceOf(StoreUnavailableError);
    expect(await store.release(second)).toEqual({ ok: true });
    expect(await store.acquire(acquireInput(key2))).toMatchObject({ kind: 'acquired', fence: 2 });
    expect(proxy.lost).toBeGreaterThanOrEqual(3);
  });

  it('the same owner racing its own complete and release (a caller bug): exactly one lands, the item matches the winner', async () => {
    const t = setup(layout);
    for (let round = 0; round < 5; round++) {
      const input = acquireInput(newKey());
      await t.store.acquire(input);
      const [completed, released] = await Promise.all([
        t.store.complete({ ...input, outcome: bytes('race') }),
        t.store.release(input),
      ]);
      expect([completed.ok, released.ok].filter(Boolean), `round ${round}`).toHaveLength(1);
      const item = decodeRaw(layout, (await t.raw(input.key))!);
      expect(item.status).toBe(completed.ok ? 'completed' : 'released');
      expect(item.fence).toBe(1);
    }
  });

  it('one key under two prefixes and two tables never meets; two scopes through @idem/core run twice and replay their own', async () => {
    const t = setup(layout);
    const key = newKey();
    const other = createDynamoDbStore({
      client: t.client,
      tableName: tables[layout.id],
      keyPrefix: `${t.prefix}x`,
      ...layout.options,
    });
    const otherTable = layouts.find((l) => l.id !== layout.id)!;
    const third = createDynamoDbStore({
      client: t.client,
      tableName: tables[otherTable.id],
      keyPrefix: t.prefix,
      ...otherTable.options,
    });
    for (const store of [t.store, other, third]) {
      expect(await store.acquire(acquireInput(key))).toMatchObject({
        kind: 'acquired',
        fence: 1,
        takeover: false,
      });
    }
    // Through core: the same client key under two scopes are two records.
    const idem = createIdempotency<string>({ store: t.store });
    let runs = 0;
    const op = (tenant: string) => async () => `${tenant}:${++runs}`;
    const a1 = await idem.execute({ key: 'order-1', scope: 'tenant-a' }, op('a'));
    const b1 = await idem.execute({ key: 'order-1', scope: 'tenant-b' }, op('b'));
    const a2 = await idem.execute({ key: 'order-1', scope: 'tenant-a' }, op('a'));
    const b2 = await idem.execute({ key: 'order-1', scope: 'tenant-b' }, op('b'));
    expect([a1, b1]).toEqual([
      { value: 'a:1', replayed: false },
      { value: 'b:2', replayed: false },
    ]);
    expect([a2, b2]).toEqual([
      { value: 'a:1', replayed: true },
      { value: 'b:2', replayed: true },
    ]);
    expect(runs).toBe(2);
  });

  it('retention and lease deadlines to the millisecond: replay until expiresAt - 1, a new fence at expiresAt; owner writes refused at expiresAt', async () => {
    const clock = new ManualClock(Date.now());
    const t = setup(layout, { clock });
    const key = newKey();
    const first = acquireInput(key, { leaseMs: 1_000, retentionMs: 10_000 });
    await t.store.acquire(first);
    // At the lease deadline, nobody took over: the owner's completion still lands.
    clock.advance(1_000);
    expect(await t.store.complete({ ...first, outcome: bytes('v1'), retentionMs: 5_000 })).toEqual({
      ok: true,
    });
    const completedAt = clock.now();
    clock.set(completedAt + 4_999);
    const replay = await t.store.acquire(acquireInput(key));
    expect(replay).toMatchObject({ kind: 'found', record: { status: 'completed', fence: 1 } });
    expect(await t.store.get(key)).toMatchObject({ status: 'completed' });
    clock.set(completedAt + 5_000);
    expect(await t.store.get(key)).toBeUndefined();
    const second = acquireInput(key, { fingerprint: 'fp-2', leaseMs: 1_000, retentionMs: 2_000 });
    expect(await t.store.acquire(second)).toMatchObject({
      kind: 'acquired',
      fence: 2,
      takeover: false,
    });
    const item = decodeRaw(layout, (await t.raw(key))!);
    expect(item.outcome).toBeUndefined();
    expect(item).toMatchObject({ status: 'in_progress', fingerprint: 'fp-2', fence: 2 });
    // The in-progress record expires at leaseUntil + retention: owner writes at that instant are refused.
    clock.set(item.expiresAt);
    const before = await t.raw(key);
    expect(await t.store.extend(second)).toMatchObject({ ok: false });
    expect(await t.store.complete({ ...second, outcome: bytes('late') })).toEqual(NOT_OWNER);
    expect(await t.store.release(second)).toEqual(NOT_OWNER);
    expect(await t.raw(key)).toEqual(before);
  });
});

describe('dynrev isolation: namespaces and clocks (options)', () => {
  const client = (): DynamoDBClient => {
    const c = makeClient(endpoint);
    clients.add(c);
    return c;
  };
  const single = layouts.find((l) => l.id === 'single')!;

  // FINDING (LOW; fixed: refused at creation): `singleTable.partitionKeyValue` is not checked for well-formed UTF-16
  // (keyPrefix is, for exactly this reason). Two stores configured with partition key values
  // that differ only in a lone surrogate ('t\uD800' and 't\uDBFF') reach the same DynamoDB
  // items, so one tenant's/service's acquire finds and replays the other's records.
  // Reproduce: two stores on the single table with those values, same storage key; the second
  // acquire answers `found` with the first's owner. Fix: check partitionKeyValue with
  // isWellFormed (and its type, and DynamoDB's 2048-byte partition key limit) in
  // createItemSchema, throwing InvalidInputError.
  it('two partition key values that differ only in a lone surrogate are two namespaces (or refused at creation)', async () => {
    const c = client();
    const tag = randomBytes(4).toString('hex');
    const make = (partitionKeyValue: string) =>
      createDynamoDbStore({
        client: c,
        tableName: tables.single,
        ...single.options,
        singleTable: { partitionKeyValue, sortKey: 'SK' },
      });
    let a: ReturnType<typeof make>;
    let b: ReturnType<typeof make>;
    try {
      a = make(`${tag}\uD800`);
      b = make(`${tag}\uDBFF`);
    } catch (error) {
      // Refusing a malformed value at creation is a fix too.
      expect(error).toBeInstanceOf(InvalidInputError);
      return;
    }
    const key = newKey();
    expect(await a.acquire(acquireInput(key))).toMatchObject({ kind: 'acquired' });
    expect(await b.acquire(acquireInput(key))).toMatchObject({ kind: 'acquired', fence: 1 });
  });

  // FINDING (MEDIUM; fixed: every operation reads the clock through readClock): the injected clock's value is used unchecked by acquire, complete,
  // release, extend and get (only the admin reads it through core's readClock; the memory
  // store checks its clock with checkClock/readClock). A clock that returns a numeric string
  // (e.g. a time read from a header or another service) makes `now + leaseMs` a string
  // concatenation: acquire writes leaseUntil ~1.8e17 and expiresAt ~1.8e24, answers
  // `acquired` with a string leaseUntil, and the key is blocked for every later caller with a
  // sane clock, for good (its TTL is ~1.8e21 s, so DynamoDB never deletes it either).
  // Reproduce: createDynamoDbStore({ clock: { now: () => String(Date.now()) } }).acquire(...),
  // then acquire the key with a normal store: `found`, in progress. Fix: read the clock with
  // core's readClock (InvalidInputError for a non-finite non-number) in every operation.
  it('a clock that returns a numeric string is refused with InvalidInputError and writes nothing (no key blocked for millennia)', async () => {
    const c = client();
    const prefix = `dynrev-clock:${randomBytes(4).toString('hex')}:`;
    const options: DynamoDbStoreOptions = {
      client: c,
      tableName: tables.simple,
      keyPrefix: prefix,
    };
    const broken = createDynamoDbStore({
      ...options,
      clock: { now: () => String(Date.now()) as unknown as number },
    });
    const sane = createDynamoDbStore(options);
    const key = newKey();
    const error = await broken.acquire(acquireInput(key)).then(
      () => undefined,
      (e: unknown) => e,
    );
    // Whatever the broken store answered, the key must stay usable for everyone else.
    expect(await sane.acquire(acquireInput(key))).toMatchObject({ kind: 'acquired' });
    expect(error).toBeInstanceOf(InvalidInputError);
  });

  // FINDING (LOW; fixed: checkClock at creation, readClock at each call): a clock that is not a clock is not refused at creation (core's checkClock
  // exists for this and the memory store uses it): `clock: {}` fails every call with a plain
  // TypeError (not an IdemError), and a clock returning NaN fails every call as
  // STORE_UNAVAILABLE (DynamoDB ValidationException "cannot be converted into a number"), i.e.
  // a 503 retried for ever instead of a configuration error. Fix: checkClock at creation and
  // readClock at each call.
  it('an invalid clock is a typed InvalidInputError: at creation for `{}`, at the call for a NaN time', async () => {
    const c = client();
    expect(() =>
      createDynamoDbStore({
        client: c,
        tableName: tables.simple,
        clock: {} as unknown as ManualClock,
      }),
    ).toThrow(InvalidInputError);
    const nan = createDynamoDbStore({
      client: c,
      tableName: tables.simple,
      clock: { now: () => Number.NaN },
    });
    await expect(nan.acquire(acquireInput(newKey()))).rejects.toBeInstanceOf(InvalidInputError);
  });

  it('a clock that steps back (NTP correction) between acquire and complete: the fence still grows and the completion lands once', async () => {
    let now = Date.now();
    const clock = { now: () => now };
    const t = setup(layouts[0]!);
    const store = createDynamoDbStore({
      client: t.client,
      tableName: tables.simple,
      keyPrefix: t.prefix,
      clock,
    });
    const key = newKey();
    // Retention 30 s (was 1 s): the completed item's TTL attribute follows real time, and a
    // loaded CI lane once took past it, so DynamoDB Local's TTL removed the item before the
    // acquisition below (a new record, fence 1, instead of `found`).
    const first = acquireInput(key, { leaseMs: 1_000, retentionMs: 30_000 });
    await store.acquire(first);
    now -= 60_000; // the clock steps back a minute
    expect(await store.complete({ ...first, outcome: bytes('a'), retentionMs: 30_000 })).toEqual({
      ok: true,
    });
    expect(await store.complete({ ...first, outcome: bytes('a'), retentionMs: 30_000 })).toEqual({
      ok: true,
    });
    expect(await store.acquire(acquireInput(key))).toMatchObject({ kind: 'found' });
    now += 120_000;
    expect(await store.acquire(acquireInput(key))).toMatchObject({ kind: 'acquired', fence: 2 });
  });
});
