/**
 * A record's origin (contract `acquire`, "Origin") as the DynamoDB store keeps it: the owner
 * token of the acquisition that began the key's logical request, in the item's `origin`
 * attribute. DynamoDB keeps an expired item until TTL deletion, so "the key is free" has two
 * cases the upsert must tell apart in its one request: an expired item (any status) begins a
 * new logical request, a live tombstone or a passed lease continues the item's. Items
 * written before stores kept an origin have none: their owner counts. Real DynamoDB Local,
 * read back with raw GetItem; every acquire's requests are counted.
 */
import { type AttributeValue, PutItemCommand } from '@aws-sdk/client-dynamodb';
import { type AcquireResult, ManualClock } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { createDynamoDbStore } from '../src/index.js';
import { decodeRaw, type Layout, layouts, makeClient, recordRequests } from './dynamodb-env.js';
import {
  acquireInput,
  classify,
  clients,
  endpoint,
  HOUR,
  newKey,
  newOwner,
  setup,
  tables,
} from './store-fixture.js';

const LEASE = 1_000;
const RETENTION = 10_000;
const bytes = (text: string) => new TextEncoder().encode(text);
const input = (key: string, owner = newOwner()) =>
  acquireInput(key, { owner, leaseMs: LEASE, retentionMs: RETENTION });

type Fixture = ReturnType<typeof setup>;

/** Another process: a store on its own client, same table and prefix, its requests counted. */
function peer(layout: Layout, t: Fixture, clock: ManualClock) {
  const client = makeClient(endpoint);
  clients.add(client);
  const sent = recordRequests(client);
  const store = createDynamoDbStore({
    client,
    tableName: tables[layout.id],
    keyPrefix: t.prefix,
    clock,
    ...layout.options,
  });
  return {
    store,
    take(): string[] {
      const ops = sent.map(classify);
      sent.length = 0;
      return ops;
    },
  };
}

/** The acquired answer, asserted. */
function acquired(result: AcquireResult) {
  expect(result.kind, JSON.stringify(result)).toBe('acquired');
  return result as Extract<AcquireResult, { kind: 'acquired' }>;
}

describe.each(layouts)('DynamoDB origin: $name', (layout) => {
  const n = layout.names;

  /** An item as a store of the previous version wrote it: every attribute but `origin`. */
  async function putLegacy(
    t: Fixture,
    key: string,
    record: {
      status: 'in_progress' | 'completed' | 'released';
      owner: string;
      fence: number;
      leaseUntil: number;
      expiresAt: number;
    },
  ): Promise<void> {
    const item: Record<string, AttributeValue> = {
      ...layout.rawKey(t.prefix + key),
      [n.status]: { S: record.status },
      [n.fingerprint]: { S: 'fp-legacy' },
      [n.owner]: { S: record.owner },
      [n.fence]: { N: String(record.fence) },
      [n.leaseUntil]: { N: String(record.leaseUntil) },
      [n.expiresAt]: { N: String(record.expiresAt) },
      [n.ttl]: { N: String(Math.ceil(record.expiresAt / 1000)) },
    };
    if (record.status === 'completed') item[n.outcome] = { B: bytes('legacy') };
    await t.client.send(new PutItemCommand({ TableName: tables[layout.id], Item: item }));
  }

  const originOf = async (t: Fixture, key: string) => (await t.raw(key))?.[n.origin]?.S;

  it('an item written before origins were kept (no origin attribute): a takeover, a retry after its release and a forced release carry its owner; a redelivery answers it; get() shows none', async () => {
    const clock = new ManualClock(Date.now());
    const t = setup(layout, { clock });
    const legacyOwner = newOwner();
    const now = clock.now();

    // In progress, lease passed, within retention: another process takes it over.
    const taken = newKey();
    await putLegacy(t, taken, {
      status: 'in_progress',
      owner: legacyOwner,
      fence: 4,
      leaseUntil: now - 1,
      expiresAt: now + RETENTION,
    });
    expect((await t.store.get(taken))?.origin, 'get(): the item holds none').toBeUndefined();
    const taker = input(taken);
    t.take();
    const takeover = acquired(await t.store.acquire(taker));
    expect(takeover).toMatchObject({ fence: 5, takeover: true, origin: legacyOwner });
    expect(t.take(), 'the create fails, the upsert applies').toEqual(['acquire', 'acquire']);
    expect(await originOf(t, taken)).toBe(legacyOwner);
    expect((await t.store.get(taken))?.origin).toBe(legacyOwner);
    // Its completion, a PutItem of the whole item, keeps it.
    expect(await t.store.complete({ ...taker, outcome: bytes('done'), retentionMs: HOUR })).toEqual(
      { ok: true },
    );
    expect(decodeRaw(layout, (await t.raw(taken))!)).toMatchObject({
      status: 'completed',
      owner: taker.owner,
      origin: legacyOwner,
    });
    const replay = await t.store.acquire(input(taken));
    expect(replay.kind).toBe('found');
    if (replay.kind === 'found') expect(replay.record.origin).toBe(legacyOwner);

    // A live released tombstone of the previous version: the retry continues its request.
    const released = newKey();
    await putLegacy(t, released, {
      status: 'released',
      owner: legacyOwner,
      fence: 2,
      leaseUntil: now,
      expiresAt: now + RETENTION,
    });
    expect(acquired(await t.store.acquire(input(released)))).toMatchObject({
      fence: 3,
      takeover: false,
      origin: legacyOwner,
    });
    expect(await originOf(t, released)).toBe(legacyOwner);

    // The previous version's acquisition, delivered again to this one: its owner is its origin.
    const live = {
      status: 'in_progress',
      owner: legacyOwner,
      leaseUntil: now + LEASE,
      expiresAt: now + LEASE + RETENTION,
    } as const;
    const own = newKey();
    await putLegacy(t, own, { ...live, fence: 1 });
    expect(acquired(await t.store.acquire(input(own, legacyOwner)))).toMatchObject({
      fence: 1,
      takeover: false,
      origin: legacyOwner,
    });

    // An operator's forced release keeps the owner's origin, not the operator's token.
    const stuck = newKey();
    await putLegacy(t, stuck, { ...live, fence: 7 });
    expect(await t.store.admin.forceRelease(stuck)).toMatchObject({ ok: true, fence: 8 });
    const tombstone = decodeRaw(layout, (await t.raw(stuck))!);
    expect(tombstone).toMatchObject({ status: 'released', fence: 8, origin: legacyOwner });
    expect(tombstone.owner).not.toBe(legacyOwner);
    expect(acquired(await t.store.acquire(input(stuck)))).toMatchObject({
      fence: 9,
      origin: legacyOwner,
    });
  });

  it('an item whose retention passed but that TTL has not deleted yet (completed, released, in progress) begins a new logical request, even when it carried an older origin', async () => {
    const clock = new ManualClock(Date.now());
    const t = setup(layout, { clock });
    const other = peer(layout, t, clock);
    // Each key's item carries an origin that is not its owner (a retry continued it), so a
    // store that carried it over from an expired item would answer it.
    const keys = { completed: newKey(), released: newKey(), inProgress: newKey() };
    const began: Record<string, string> = {};
    for (const [name, key] of Object.entries(keys)) {
      const a = input(key);
      acquired(await t.store.acquire(a));
      expect(await t.store.release({ key, owner: a.owner, retentionMs: RETENTION })).toEqual({
        ok: true,
      });
      const b = input(key);
      expect(acquired(await t.store.acquire(b)).origin).toBe(a.owner);
      began[name] = a.owner;
      if (name === 'completed')
        expect(
          await t.store.complete({
            key,
            owner: b.owner,
            outcome: bytes('b'),
            retentionMs: RETENTION,
          }),
        ).toEqual({ ok: true });
      if (name === 'released')
        expect(await t.store.release({ key, owner: b.owner, retentionMs: RETENTION })).toEqual({
          ok: true,
        });
      expect(decodeRaw(layout, (await t.raw(key))!)).toMatchObject({
        owner: b.owner,
        origin: a.owner,
      });
    }
    // Past every lease and retention; the items are still in the table.
    clock.advance(LEASE + RETENTION + 1);
    for (const [name, key] of Object.entries(keys)) {
      expect(await t.raw(key), `${name}: not deleted yet`).toBeDefined();
      expect(await t.store.get(key), `${name}: expired`).toBeUndefined();
      // Another process, which knows nothing of the key: the create fails, the upsert begins.
      const next = input(key);
      other.take();
      const result = acquired(await other.store.acquire(next));
      expect(result.origin, `${name}: not the old request's origin`).not.toBe(began[name]);
      expect(result).toMatchObject({ takeover: false, origin: next.owner });
      expect(other.take(), `${name}: two requests`).toEqual(['acquire', 'acquire']);
      expect(decodeRaw(layout, (await t.raw(key))!)).toMatchObject({
        status: 'in_progress',
        owner: next.owner,
        origin: next.owner,
      });
      expect((await other.store.get(key))?.origin).toBe(next.owner);
    }

    // The store that released a key remembers its tombstone's expiry: past it, one request,
    // and a new logical request.
    const mine = newKey();
    const first = input(mine);
    acquired(await t.store.acquire(first));
    await t.store.release({ key: mine, owner: first.owner, retentionMs: RETENTION });
    const retry = input(mine);
    expect(acquired(await t.store.acquire(retry)).origin).toBe(first.owner);
    await t.store.release({ key: mine, owner: retry.owner, retentionMs: RETENTION });
    expect(await originOf(t, mine)).toBe(first.owner);
    clock.advance(RETENTION + 1);
    const fresh = input(mine);
    t.take();
    expect(acquired(await t.store.acquire(fresh))).toMatchObject({ fence: 3, origin: fresh.owner });
    expect(t.take(), 'one UpdateItem').toEqual(['acquire']);
    expect(await originOf(t, mine)).toBe(fresh.owner);
  });

  it('the origin is carried across clients: a retry on a second client after a release, a takeover on a third, the completion, the replay and get() on the first', async () => {
    const clock = new ManualClock(Date.now());
    const t = setup(layout, { clock });
    const second = peer(layout, t, clock);
    const third = peer(layout, t, clock);
    const key = newKey();
    const a = input(key);
    t.take();
    expect(acquired(await t.store.acquire(a))).toMatchObject({ fence: 1, origin: a.owner });
    expect(t.take(), 'a new key: one PutItem').toEqual(['acquire']);
    await t.store.release({ key, owner: a.owner, retentionMs: RETENTION });

    const b = input(key);
    expect(acquired(await second.store.acquire(b))).toMatchObject({
      fence: 2,
      takeover: false,
      origin: a.owner,
    });
    expect(second.take(), 'the create fails, the upsert continues').toEqual(['acquire', 'acquire']);
    // b crashes: its lease passes, and a third process takes the key over.
    clock.advance(LEASE + 1);
    const c = input(key);
    expect(acquired(await third.store.acquire(c))).toMatchObject({
      fence: 3,
      takeover: true,
      origin: a.owner,
    });
    expect(third.take()).toEqual(['acquire', 'acquire']);
    // The taker's own acquire, delivered again, answers the same origin.
    expect(acquired(await third.store.acquire(c))).toMatchObject({
      fence: 3,
      takeover: false,
      origin: a.owner,
    });
    expect(
      await third.store.complete({ ...c, outcome: bytes('c'), retentionMs: RETENTION }),
    ).toEqual({ ok: true });
    expect(decodeRaw(layout, (await t.raw(key))!)).toMatchObject({
      status: 'completed',
      owner: c.owner,
      origin: a.owner,
      fence: 3,
    });
    expect(await t.store.get(key)).toMatchObject({ owner: c.owner, origin: a.owner });
    const replay = await t.store.acquire(input(key));
    expect(replay.kind).toBe('found');
    if (replay.kind === 'found') expect(replay.record.origin).toBe(a.owner);
  });

  it('a stale tombstone hint costs one request, never a wrong origin: the store that released a key sends the form its memory picks, and the other one on the item it brings back', async () => {
    const clock = new ManualClock(Date.now());
    const t = setup(layout, { clock });
    const other = peer(layout, t, clock);
    // Remembered live, but an operator deleted it since: the continuing form is refused,
    // and the beginning one applies.
    const deleted = newKey();
    const a = input(deleted);
    acquired(await t.store.acquire(a));
    await t.store.release({ key: deleted, owner: a.owner, retentionMs: RETENTION });
    expect(await other.store.admin.delete(deleted)).toEqual({ deleted: true });
    expect(decodeRaw(layout, (await t.raw(deleted))!).origin, 'delete forgets it').toBeUndefined();
    const b = input(deleted);
    t.take();
    expect(acquired(await t.store.acquire(b))).toMatchObject({ fence: 2, origin: b.owner });
    expect(t.take()).toEqual(['acquire', 'acquire']);
    expect(await originOf(t, deleted)).toBe(b.owner);

    // Remembered expired, but another process acquired and released it since (a live
    // tombstone): the beginning form is refused, and the continuing one applies.
    const reused = newKey();
    const c = input(reused);
    acquired(await t.store.acquire(c));
    await t.store.release({ key: reused, owner: c.owner, retentionMs: RETENTION });
    clock.advance(RETENTION + 1);
    const d = input(reused);
    expect(acquired(await other.store.acquire(d)).origin).toBe(d.owner);
    await other.store.release({ key: reused, owner: d.owner, retentionMs: RETENTION });
    const e = input(reused);
    t.take();
    expect(acquired(await t.store.acquire(e))).toMatchObject({ fence: 3, origin: d.owner });
    expect(t.take()).toEqual(['acquire', 'acquire']);
    expect(await originOf(t, reused)).toBe(d.owner);
  });

  it('delete forgets the origin: the fence-only tombstone holds none, and the next acquisition begins a new logical request; forceRelease keeps it', async () => {
    const clock = new ManualClock(Date.now());
    const t = setup(layout, { clock });
    const other = peer(layout, t, clock);
    for (const status of ['in_progress', 'completed', 'released'] as const) {
      const key = newKey();
      const a = input(key);
      acquired(await t.store.acquire(a));
      await t.store.release({ key, owner: a.owner, retentionMs: RETENTION });
      const b = input(key);
      expect(acquired(await t.store.acquire(b)).origin).toBe(a.owner);
      if (status === 'completed')
        await t.store.complete({
          key,
          owner: b.owner,
          outcome: bytes('b'),
          retentionMs: RETENTION,
        });
      if (status === 'released')
        await t.store.release({ key, owner: b.owner, retentionMs: RETENTION });
      expect(await originOf(t, key)).toBe(a.owner);
      expect(await t.store.admin.delete(key)).toEqual({ deleted: true });
      const item = (await t.raw(key))!;
      expect(item[n.origin], `${status}: the tombstone holds no origin`).toBeUndefined();
      expect(item[n.fence]).toEqual({ N: '2' });
      // Another process (no memory of the key) and this one (which may remember a tombstone).
      const c = input(key);
      expect(acquired(await other.store.acquire(c)), status).toMatchObject({
        fence: 3,
        takeover: false,
        origin: c.owner,
      });
      expect(await originOf(t, key)).toBe(c.owner);
    }

    // forceRelease of a continued request keeps its origin for the retry.
    const key = newKey();
    const a = input(key);
    acquired(await t.store.acquire(a));
    await t.store.release({ key, owner: a.owner, retentionMs: RETENTION });
    const b = input(key);
    acquired(await t.store.acquire(b));
    expect(await other.store.admin.forceRelease(key, { owner: b.owner })).toMatchObject({
      ok: true,
      fence: 3,
    });
    expect(await originOf(t, key)).toBe(a.owner);
    const c = input(key);
    expect(acquired(await other.store.acquire(c))).toMatchObject({ fence: 4, origin: a.owner });
  });
});
