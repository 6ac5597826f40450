/**
 * mutddb: tests written for the mutants of the store's source that the other tests let
 * survive (mutation audit, see the commit messages). Each test uses its own key prefix
 * (setup()) on the run's tables.
 */
import { DeleteItemCommand, PutItemCommand } from '@aws-sdk/client-dynamodb';
import {
  ManualClock,
  OutcomeCorruptError,
  OutcomeTooLargeError,
  StoreUnavailableError,
} from '@idem/core';
import { describe, expect, it } from 'vitest';
import { layouts, makeClient } from './dynamodb-env.js';
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
    // Another process, on its own client: TTL deletes the item, then a new owner acquires it.
    const elsewhere = makeClient(endpoint);
    clients.add(elsewhere);
    const b = otherStore(layout, { client: elsewhere, prefix: t.prefix }, clock);
    const next = acquireInput(key);
    let armed = true;
    t.client.middlewareStack.add(
      (nextHandler, context) => async (args) => {
        const output = await nextHandler(args);
        if (armed && context.commandName === 'GetItemCommand') {
          armed = false;
          await elsewhere.send(
            new DeleteItemCommand({
              TableName: tables[layout.id],
              Key: layout.rawKey(t.prefix + key),
            }),
          );
          expect(await b.acquire(next)).toMatchObject({ kind: 'acquired', fence: 1 });
        }
        return output;
      },
      { step: 'deserialize', name: 'mutddbTtlBetween', priority: 'low' },
    );
    expect(await t.store.admin.forceRelease(key, { owner: stuck.owner })).toEqual({
      ok: false,
      reason: 'changed',
      owner: next.owner,
      fence: 1,
    });
    expect(armed).toBe(false);
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
});

it('a heartbeat refused because the stored lease already ends later keeps the count start: a step back split over two renewals is still seen', async () => {
  // extend() records its reading as the count's start only when its own write set the lease
  // end. A refused renewal (here a shorter one) read after a step under the threshold kept
  // that stepped reading as the start, so the next step, which together with the first is
  // past the threshold, was not seen and the renewal ended the stored lease short by it.
  const s = steppedStore();
  const key = newKey();
  const input = acquireInput(key, { leaseMs: 60_000 });
  await s.store.acquire(input);
  await sleep(200);
  s.step(-90); // under CLOCK_STEP_MS
  const shorter = await s.store.extend({ ...input, leaseMs: 1_000 });
  expect(shorter.ok).toBe(true); // refused on the later stored lease, answered with it
  s.step(-90); // 180 ms back in all
  const before = Date.now();
  expect((await s.store.extend(input)).ok).toBe(true);
  const stored = Number((await s.raw(key))![layouts[0]!.names.leaseUntil]!.N);
  // Where elapsed time puts it (less a few ms of rounding): not 180 ms short, nor the acquisition's.
  expect(stored).toBeGreaterThanOrEqual(before + 60_000 - 50);
});
