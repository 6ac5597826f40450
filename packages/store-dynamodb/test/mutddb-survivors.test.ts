/**
 * mutddb: tests written for the mutants of the store's source that the other tests let
 * survive (mutation audit, see the commit messages). Each test uses its own key prefix
 * (setup()) on the run's tables.
 */
import { randomBytes } from 'node:crypto';
import { DeleteItemCommand, type DynamoDBClient, PutItemCommand } from '@aws-sdk/client-dynamodb';
import {
  ManualClock,
  OutcomeCorruptError,
  OutcomeTooLargeError,
  StoreUnavailableError,
} from '@idem/core';
import { describe, expect, it } from 'vitest';
import { decodeRaw, layouts, makeClient } from './dynamodb-env.js';
import { steppedStore } from './stepped-store.js';
import {
  acquireInput,
  clients,
  endpoint,
  HOUR,
  newKey,
  newOwner,
  otherStore,
  setup,
  sleep,
  tables,
} from './store-fixture.js';

const bytes = (text: string) => new TextEncoder().encode(text);

describe.each(layouts)('mutddb survivors: $name', (layout) => {
  const other = (t: ReturnType<typeof setup>, clock: ManualClock) => otherStore(layout, t, clock);

  /** A fresh fixture on a manual clock, with one key acquired. */
  async function acquired(extra: { leaseMs: number; retentionMs: number }) {
    const clock = new ManualClock(Date.now());
    const t = setup(layout, { clock });
    const key = newKey();
    const input = acquireInput(key, extra);
    await t.store.acquire(input);
    return { clock, t, key, input };
  }

  /**
   * Another process's store on its own client, and a hook that runs `between` once, after the
   * first GetItem of `t`'s client has answered (an admin's read) and before its write.
   */
  function afterFirstRead(
    t: ReturnType<typeof setup>,
    clock: ManualClock,
    between: (b: ReturnType<typeof otherStore>, client: DynamoDBClient) => Promise<void>,
  ): { b: ReturnType<typeof otherStore>; ran: () => boolean } {
    const elsewhere = makeClient(endpoint);
    clients.add(elsewhere);
    const b = otherStore(layout, { client: elsewhere, prefix: t.prefix }, clock);
    let armed = true;
    t.client.middlewareStack.add(
      (nextHandler, context) => async (args) => {
        const output = await nextHandler(args);
        if (armed && context.commandName === 'GetItemCommand') {
          armed = false;
          await between(b, elsewhere);
        }
        return output;
      },
      { step: 'deserialize', name: 'mutddbAfterFirstRead', priority: 'low' },
    );
    return { b, ran: () => !armed };
  }

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
  it("a redelivered completion is recognised only by the very bytes stored: the same owner's other outcome of the same length answers not_owner", async () => {
    const t = setup(layout);
    const key = newKey();
    const input = acquireInput(key);
    await t.store.acquire(input);
    expect(await t.store.complete({ ...input, outcome: bytes('AAAA'), retentionMs: HOUR })).toEqual(
      {
        ok: true,
      },
    );
    expect(await t.store.complete({ ...input, outcome: bytes('AAAA'), retentionMs: HOUR })).toEqual(
      {
        ok: true,
      },
    );
    expect(await t.store.complete({ ...input, outcome: bytes('BBBB'), retentionMs: HOUR })).toEqual(
      {
        ok: false,
        reason: 'not_owner',
      },
    );
    expect(Buffer.from((await t.store.get(key))!.outcome!).toString()).toBe('AAAA');
  });

  /** Fails the next `count` requests of `command` with an SDK-like error `name: message`. */
  function failNext(
    t: ReturnType<typeof setup>,
    command: string,
    error: { name: string; message: string; status?: number },
    count = 1,
  ): void {
    let left = count;
    t.client.middlewareStack.add(
      (next, context) => async (args) => {
        if (context.commandName === command && left > 0) {
          left--;
          throw Object.assign(new Error(error.message), {
            name: error.name,
            $fault: 'client',
            $metadata: { httpStatusCode: error.status ?? 400 },
          });
        }
        return next(args);
      },
      { step: 'initialize', name: `mutddbFail${command}${Math.random()}` },
    );
  }

  it('a completion the service refuses for its item size is OutcomeTooLargeError, not a store outage', async () => {
    const t = setup(layout);
    const key = newKey();
    const input = acquireInput(key);
    await t.store.acquire(input);
    failNext(t, 'PutItemCommand', {
      name: 'ValidationException',
      message: 'Item size has exceeded the maximum allowed size',
    });
    await expect(
      t.store.complete({ ...input, outcome: bytes('x'), retentionMs: HOUR }),
    ).rejects.toBeInstanceOf(OutcomeTooLargeError);
  });

  it('a throttled PutItem fails the call as a store outage; it is not taken for a role without PutItem', async () => {
    const t = setup(layout);
    const key = newKey();
    failNext(t, 'PutItemCommand', {
      name: 'ProvisionedThroughputExceededException',
      message: 'The level of configured provisioned throughput for the table was exceeded',
    });
    await expect(t.store.acquire(acquireInput(key))).rejects.toBeInstanceOf(StoreUnavailableError);
    t.sent.length = 0;
    // Later acquisitions of new keys are still the one PutItem.
    expect(await t.store.acquire(acquireInput(newKey()))).toMatchObject({ kind: 'acquired' });
    expect(t.sent.map((r) => r.command)).toEqual(['PutItemCommand']);
  });

  it("a redelivered release remembers the tombstone's stored expiry: once it passed, the next acquire is one request", async () => {
    const clock = new ManualClock(Date.now());
    const t = setup(layout, { clock });
    const key = newKey();
    const input = acquireInput(key, { retentionMs: 10_000 });
    await t.store.acquire(input);
    expect(await t.store.release(input)).toEqual({ ok: true }); // tombstone expires at now + 10 s
    clock.advance(5_000);
    // The same release again (an SDK retry whose first answer was lost): it finds its tombstone.
    expect(await t.store.release(input)).toEqual({ ok: true });
    clock.advance(6_000); // past the stored expiry, before the one the redelivery asked for
    t.sent.length = 0;
    const next = acquireInput(key);
    expect(await t.store.acquire(next)).toMatchObject({
      kind: 'acquired',
      fence: 2,
      origin: next.owner,
    });
    expect(t.sent.length).toBe(1);
  });
  it("forceRelease expecting an owner leaves alone another owner's record at the same fence (the item was deleted by TTL and acquired again between the read and the write)", async () => {
    // The admin's write is held to the owner read, not only to the fence: a fence starts
    // again at 1 once TTL deleted the item (TTL runs on DynamoDB's clock, expiry on the
    // store's), so fence 1 of the next owner is not the record that was read.
    const clock = new ManualClock(Date.now());
    const t = setup(layout, { clock });
    const key = newKey();
    const stuck = acquireInput(key);
    expect(await t.store.acquire(stuck)).toMatchObject({ kind: 'acquired', fence: 1 });
    // Another process: TTL deletes the item, then a new owner acquires it.
    const next = acquireInput(key);
    const { b, ran } = afterFirstRead(t, clock, async (b, client) => {
      await client.send(
        new DeleteItemCommand({ TableName: tables[layout.id], Key: layout.rawKey(t.prefix + key) }),
      );
      expect(await b.acquire(next)).toMatchObject({ kind: 'acquired', fence: 1 });
    });
    expect(await t.store.admin.forceRelease(key, { owner: stuck.owner })).toEqual({
      ok: false,
      reason: 'changed',
      owner: next.owner,
      fence: 1,
    });
    expect(ran()).toBe(true);
    expect(await b.get(key)).toMatchObject({ status: 'in_progress', owner: next.owner, fence: 1 });
  });

  it('a completion that starts while a heartbeat of its lease is on its way sends the UpdateItem, not a PutItem of a lease that is changing', async () => {
    const t = setup(layout);
    const key = newKey();
    const input = acquireInput(key);
    await t.store.acquire(input);
    t.sent.length = 0;
    const heartbeat = t.store.extend({ ...input, leaseMs: 60_000 });
    const completion = t.store.complete({ ...input, outcome: bytes('done'), retentionMs: HOUR });
    expect(await completion).toEqual({ ok: true });
    await heartbeat;
    expect(t.sent.filter((r) => r.command === 'PutItemCommand')).toEqual([]);
    expect(Buffer.from((await t.store.get(key))!.outcome!).toString()).toBe('done');
  });
  it('a completion by a process that did not acquire rewrites the TTL attribute from the new retention', async () => {
    // The UpdateItem completion sets `ttl` with `expiresAt`: a TTL kept from the acquisition
    // (lease + a shorter retention) let DynamoDB delete the outcome inside its retention.
    const { clock, t, key, input } = await acquired({ leaseMs: 1_000, retentionMs: 1_000 });
    clock.advance(100);
    expect(
      await other(t, clock).complete({ ...input, outcome: bytes('kept'), retentionMs: HOUR }),
    ).toEqual({ ok: true });
    const item = (await t.raw(key))!;
    const expiresAt = clock.now() + HOUR;
    expect(decodeRaw(layout, item).expiresAt).toBe(expiresAt);
    expect(item[layout.names.ttl]).toEqual({ N: String(Math.ceil(expiresAt / 1000)) });
  });

  it('the outcome budget after a takeover reserves the carried origin at its 1 KiB maximum: an outcome of exactly the limit lands', async () => {
    const clock = new ManualClock(Date.now());
    const t = setup(layout, { clock });
    const store = otherStore(layout, t, clock);
    const key = newKey();
    const first = acquireInput(key, { owner: 'o'.repeat(1024), leaseMs: 1_000 });
    await store.acquire(first);
    clock.advance(2_000); // lease passed: the next owner takes over and carries the long origin
    // The taker's fingerprint at its maximum too, so that only the numbers' slack is left.
    const taker = acquireInput(key, { fingerprint: 'f'.repeat(1024) });
    expect(await store.acquire(taker)).toMatchObject({ takeover: true, origin: first.owner });
    const tooLarge = await store
      .complete({ ...taker, outcome: new Uint8Array(randomBytes(450 * 1024)), retentionMs: HOUR })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(tooLarge).toBeInstanceOf(OutcomeTooLargeError);
    const { limit } = tooLarge as OutcomeTooLargeError;
    const outcome = new Uint8Array(randomBytes(limit));
    expect(await store.complete({ ...taker, outcome, retentionMs: HOUR })).toEqual({ ok: true });
    expect((await store.get(key))?.outcome?.length).toBe(limit);
  });
  it('delete with an expectation the expired record does not meet still removes it and answers deleted: false (no live record), not changed', async () => {
    const { clock, t, key, input } = await acquired({ leaseMs: 1_000, retentionMs: 1_000 });
    clock.advance(5_000); // expired, TTL has not removed it
    expect(await t.store.admin.delete(key, { owner: 'someone-else' })).toEqual({ deleted: false });
    // The fence outlives it: the item is now the delete's tombstone.
    expect(decodeRaw(layout, (await t.raw(key))!).owner).not.toBe(input.owner);
  });

  it('delete expecting in_progress refuses a record completed between its read and its write, even with the same owner, fence and expiry', async () => {
    const { clock, t, key, input } = await acquired({ leaseMs: 1_000, retentionMs: HOUR });
    const { b, ran } = afterFirstRead(t, clock, async (b) => {
      // Completed with the expiry the acquisition wrote: only the status differs.
      const done = { ...input, outcome: bytes('done'), retentionMs: 1_000 + HOUR };
      expect(await b.complete(done)).toEqual({ ok: true });
    });
    expect(
      await t.store.admin.delete(key, { status: 'in_progress', owner: input.owner, fence: 1 }),
    ).toEqual({
      deleted: false,
      reason: 'changed',
      status: 'completed',
      owner: input.owner,
      fence: 1,
    });
    expect(ran()).toBe(true);
    expect((await b.get(key))?.status).toBe('completed');
  });
  it("delete answers on the record it wrote: a read as expired that an owner's heartbeat revived before the write is decided again, and deleted as live", async () => {
    // The delete's condition holds the expiry read: the owner (whose clock runs behind the
    // admin's) renewed in between, the write is refused, and the live record is decided again.
    const { clock, t, key, input } = await acquired({ leaseMs: 1_000, retentionMs: 1_000 });
    const ownerClock = new ManualClock(clock.now());
    clock.advance(5_000); // expired by the admin's clock
    const { ran } = afterFirstRead(t, ownerClock, async (b) => {
      expect((await b.extend({ ...input, leaseMs: 60_000, retentionMs: HOUR })).ok).toBe(true);
    });
    expect(await t.store.admin.delete(key)).toEqual({ deleted: true });
    expect(ran()).toBe(true);
  });
});

/** A stepped store with a key acquired 200 ms ago (60 s lease), its clock since stepped back 90 ms. */
async function steppedAfterAcquire() {
  const s = steppedStore();
  const key = newKey();
  const input = acquireInput(key, { leaseMs: 60_000 });
  await s.store.acquire(input);
  await sleep(200);
  s.step(-90); // under CLOCK_STEP_MS
  return { s, key, input };
}

/** Steps the clock back 90 ms more (180 in all), renews, and reads the stored lease end. */
async function stepAgainAndRenew(
  s: ReturnType<typeof steppedStore>,
  key: string,
  input: ReturnType<typeof acquireInput>,
) {
  s.step(-90);
  const before = Date.now();
  expect((await s.store.extend(input)).ok).toBe(true);
  const stored = Number((await s.raw(key))![layouts[0]!.names.leaseUntil]!.N);
  return { before, stored };
}

it('a heartbeat refused because the stored lease already ends later keeps the count start: a step back split over two renewals is still seen', async () => {
  // extend() records its reading as the count's start only when its own write set the lease
  // end. A refused renewal (here a shorter one) read after a step under the threshold kept
  // that stepped reading as the start, so the next step, which together with the first is
  // past the threshold, was not seen and the renewal ended the stored lease short by it.
  const { s, key, input } = await steppedAfterAcquire();
  const shorter = await s.store.extend({ ...input, leaseMs: 1_000 });
  expect(shorter.ok).toBe(true); // refused on the later stored lease, answered with it
  const { before, stored } = await stepAgainAndRenew(s, key, input);
  // Where elapsed time puts it (less a few ms of rounding): not 180 ms short, nor the acquisition's.
  expect(stored).toBeGreaterThanOrEqual(before + 60_000 - 50);
});

it('a redelivered acquire refused on the later stored lease keeps the count start: a step back split over it and a heartbeat is still seen', async () => {
  // As for extend: the acquire's renewal records its reading only when it set the lease end.
  const { s, key, input } = await steppedAfterAcquire();
  // The same owner's acquisition delivered again, with a shorter lease: its renewal asks an
  // earlier end than the stored one and is refused; the stored lease is kept.
  expect(await s.store.acquire({ ...input, leaseMs: 1_000 })).toMatchObject({
    kind: 'acquired',
    fence: 1,
  });
  const { before, stored } = await stepAgainAndRenew(s, key, input);
  expect(stored).toBeGreaterThanOrEqual(before + 60_000 - 50);
});
