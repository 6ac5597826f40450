/**
 * Completion and release by the process that holds the lease are one conditional PutItem of
 * the whole item (it knows the fence, fingerprint and lease it wrote); the condition checks
 * those with owner, status and expiry, so an item another write changed in between refuses
 * it and the store sends today's UpdateItem. Nothing another writer put there is lost.
 */
import { PutItemCommand } from '@aws-sdk/client-dynamodb';
import { ManualClock } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { createDynamoDbStore } from '../src/index.js';
import { decodeRaw, layouts } from './dynamodb-env.js';
import { acquireInput, HOUR, newKey, otherStore, setup, tables } from './store-fixture.js';

const NOT_OWNER = { ok: false, reason: 'not_owner' };
const bytes = (text: string) => new TextEncoder().encode(text);

describe.each(layouts)('DynamoDB whole-item completion and release: $name', (layout) => {
  /** A second store on the same table, client and prefix: it holds no lease of the first's. */
  const other = (t: ReturnType<typeof setup>, clock: ManualClock) => otherStore(layout, t, clock);

  it('the holder completes and releases in one PutItem each; heartbeats it sent keep it one request', async () => {
    const clock = new ManualClock(Date.now());
    const t = setup(layout, { clock });
    const key = newKey();
    const input = acquireInput(key, { leaseMs: 1_000, fingerprint: 'fp-1' });
    expect(await t.store.acquire(input)).toMatchObject({ kind: 'acquired', fence: 1 });
    clock.advance(500);
    expect(await t.store.extend({ ...input, leaseMs: 2_000 })).toEqual({
      ok: true,
      leaseUntil: clock.now() + 2_000,
    });
    const leaseUntil = clock.now() + 2_000;
    t.sent.length = 0;
    expect(await t.store.complete({ ...input, outcome: bytes('done'), retentionMs: HOUR })).toEqual(
      { ok: true },
    );
    expect(t.sent.map((r) => r.command)).toEqual(['PutItemCommand']);
    expect(decodeRaw(layout, (await t.raw(key))!)).toEqual({
      status: 'completed',
      fingerprint: 'fp-1',
      owner: input.owner,
      origin: input.owner,
      fence: 1,
      leaseUntil,
      expiresAt: clock.now() + HOUR,
      outcome: bytes('done'),
    });

    const released = newKey();
    const second = acquireInput(released);
    await t.store.acquire(second);
    t.sent.length = 0;
    expect(await t.store.release(second)).toEqual({ ok: true });
    expect(t.sent.map((r) => r.command)).toEqual(['PutItemCommand']);
    expect(decodeRaw(layout, (await t.raw(released))!)).toEqual({
      status: 'released',
      fingerprint: 'fp',
      owner: second.owner,
      origin: second.owner,
      fence: 1,
      leaseUntil: clock.now(),
      expiresAt: clock.now() + HOUR,
    });
    // The tombstone keeps the fence: the next acquisition gets 2, and since this store wrote
    // the tombstone it sends the upsert alone (no PutItem to fail first).
    t.sent.length = 0;
    // The tombstone is live: the retry continues its logical request.
    expect(await t.store.acquire(acquireInput(released))).toMatchObject({
      fence: 2,
      origin: second.owner,
    });
    expect(t.sent.map((r) => r.command)).toEqual(['UpdateItemCommand']);
  });

  it('a heartbeat this process did not see (another store, or a lost answer) makes it the UpdateItem, lease kept', async () => {
    const clock = new ManualClock(Date.now());
    const t = setup(layout, { clock });
    const elsewhere = other(t, clock);
    for (const end of ['complete', 'release'] as const) {
      const key = newKey();
      const input = acquireInput(key, { leaseMs: 1_000 });
      await t.store.acquire(input);
      clock.advance(300);
      await elsewhere.extend({ ...input, leaseMs: 5_000 });
      const leaseUntil = clock.now() + 5_000;
      clock.advance(100);
      t.take();
      const result =
        end === 'complete'
          ? await t.store.complete({ ...input, outcome: bytes('x'), retentionMs: HOUR })
          : await t.store.release(input);
      expect(result).toEqual({ ok: true });
      // The PutItem is refused on the lease; the UpdateItem writes.
      expect(t.take()).toEqual([end, end]);
      const record = decodeRaw(layout, (await t.raw(key))!);
      expect(record).toMatchObject({ owner: input.owner, fence: 1, fingerprint: 'fp' });
      if (end === 'complete') {
        expect(record).toMatchObject({ status: 'completed', leaseUntil, outcome: bytes('x') });
      } else {
        expect(record).toMatchObject({ status: 'released', leaseUntil: clock.now() });
      }
    }
  });

  it('a store that holds no lease (another process) completes with the UpdateItem', async () => {
    const clock = new ManualClock(Date.now());
    const t = setup(layout, { clock });
    const key = newKey();
    const input = acquireInput(key);
    await other(t, clock).acquire(input);
    t.sent.length = 0;
    expect(await t.store.complete({ ...input, outcome: bytes('y'), retentionMs: HOUR })).toEqual({
      ok: true,
    });
    expect(t.sent.map((r) => r.command)).toEqual(['UpdateItemCommand']);
    expect(decodeRaw(layout, (await t.raw(key))!)).toMatchObject({
      status: 'completed',
      owner: input.owner,
      fence: 1,
      outcome: bytes('y'),
    });
  });

  it('after a takeover the former holder changes nothing, in one request, and does not fall back', async () => {
    const clock = new ManualClock(Date.now());
    const t = setup(layout, { clock });
    for (const end of ['complete', 'release'] as const) {
      const key = newKey();
      const first = acquireInput(key, { leaseMs: 1_000 });
      await t.store.acquire(first);
      clock.advance(2_000);
      const second = acquireInput(key, { fingerprint: 'fp-2' });
      expect(await other(t, clock).acquire(second)).toMatchObject({ fence: 2, takeover: true });
      const before = await t.raw(key);
      t.sent.length = 0;
      const result =
        end === 'complete'
          ? await t.store.complete({ ...first, outcome: bytes('late'), retentionMs: HOUR })
          : await t.store.release(first);
      expect(result).toEqual(NOT_OWNER);
      expect(t.sent.map((r) => r.command)).toEqual(['PutItemCommand']);
      expect(await t.raw(key)).toEqual(before);
    }
  });

  it('a completion racing its own heartbeats lands, keeping owner, fence and fingerprint', async () => {
    const t = setup(layout);
    for (let round = 0; round < 5; round++) {
      const key = newKey();
      const input = acquireInput(key, { leaseMs: 10_000 });
      await t.store.acquire(input);
      const [, completed] = await Promise.all([
        t.store.extend({ ...input, leaseMs: 20_000 }),
        t.store.complete({ ...input, outcome: bytes('race'), retentionMs: HOUR }),
        t.store.extend({ ...input, leaseMs: 30_000 }),
      ]);
      expect(completed).toEqual({ ok: true });
      const record = decodeRaw(layout, (await t.raw(key))!);
      expect(record).toMatchObject({
        status: 'completed',
        owner: input.owner,
        fence: 1,
        fingerprint: 'fp',
        outcome: bytes('race'),
      });
      // Any later heartbeat is refused.
      expect(await t.store.extend(input)).toEqual(NOT_OWNER);
    }
  });

  it('a role without dynamodb:PutItem keeps working: the UpdateItem forms, and PutItem is not tried again', async () => {
    const clock = new ManualClock(Date.now());
    const t = setup(layout, { clock });
    let denied = 0;
    const client = {
      send(command: unknown) {
        if (command instanceof PutItemCommand) {
          denied++;
          return Promise.reject(
            Object.assign(new Error('not authorized to perform: dynamodb:PutItem'), {
              name: 'AccessDeniedException',
            }),
          );
        }
        return t.client.send(command as PutItemCommand);
      },
    } as unknown as typeof t.client;
    const store = createDynamoDbStore({
      client,
      tableName: tables[layout.id],
      keyPrefix: t.prefix,
      clock,
      ...layout.options,
    });
    const key = newKey();
    const input = acquireInput(key);
    expect(await store.acquire(input)).toMatchObject({ kind: 'acquired', fence: 1 });
    expect(await store.complete({ ...input, outcome: bytes('z'), retentionMs: HOUR })).toEqual({
      ok: true,
    });
    const again = acquireInput(newKey());
    expect(await store.acquire(again)).toMatchObject({ kind: 'acquired', fence: 1 });
    expect(await store.release(again)).toEqual({ ok: true });
    expect(denied).toBe(1);
    expect(decodeRaw(layout, (await t.raw(key))!)).toMatchObject({
      status: 'completed',
      owner: input.owner,
      fence: 1,
      outcome: bytes('z'),
    });
    expect(await store.acquire(acquireInput(key))).toMatchObject({ kind: 'found' });
  });
});
