/**
 * originrev (adversarial review of the origin guarantee) on DynamoDB Local:
 * - the store against the model of the contract's "Origin" rules
 *   (store-conformance/test/originrev-model.ts) with the injectable clock landing exactly on
 *   lease and retention deadlines, two store instances (two processes: each owner's calls go
 *   through its own, so the held-lease PutItem writes and the remembered tombstones are in
 *   play), concurrent acquires checked against every serial order;
 * - an item whose `origin` is malformed (empty, or not a string: no store writes either) is
 *   refused with a typed error before anything is written, on the create's path and on the
 *   path of a key this store released (the upsert sent without a read);
 * - clock skew at the retention boundary (README "Clock").
 */
import { UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { type Clock, type IdempotencyStore, ManualClock, StoreUnavailableError } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { checkOriginEngine } from '../../store-conformance/test/originrev-engine.js';
import { checkOriginModel } from '../../store-conformance/test/originrev-model.js';
import { createDynamoDbStore } from '../src/index.js';
import { layouts, makeClient } from './dynamodb-env.js';
import {
  acquireInput,
  clients,
  endpoint,
  newKey,
  newOwner,
  setup,
  tables,
} from './store-fixture.js';

const LEASE = 30_000;
const RETENTION = 60_000;

/** Another process: a store of its own on `t`'s table and prefix, with `clock`. */
const peerOf = (
  t: ReturnType<typeof setup>,
  layout: (typeof layouts)[number],
  clock: Clock,
  client = t.client,
) =>
  createDynamoDbStore({
    client,
    tableName: tables[layout.id],
    keyPrefix: t.prefix,
    clock,
    ...layout.options,
  });

/**
 * The sequences of a property run in `streams` fast-check runs at once (each its own seed,
 * `total` in all), their tallies summed: the sequences only wait on DynamoDB Local one round
 * trip at a time, so a few streams overlap those waits.
 */
const STREAMS = 4;
async function inStreams<T extends object>(
  streams: number,
  total: number,
  run: (numRuns: number) => Promise<T>,
): Promise<T> {
  const sizes = Array.from({ length: streams }, (_, i) => Math.floor((total + i) / streams));
  const tallies = await Promise.all(sizes.map(run));
  const sum: Record<string, number> = {};
  for (const tally of tallies)
    for (const [k, v] of Object.entries(tally) as [string, number][]) sum[k] = (sum[k] ?? 0) + v;
  return sum as T;
}

/** What a call answered, or the error it threw. */
const answerOf = (call: Promise<unknown>) =>
  call.then(
    (result) => result,
    (error: unknown) => error,
  );

// Both layouts' tests run at once (each only waits on DynamoDB Local, one round trip at a
// time); they share nothing but the tables (every test a fresh key prefix or fresh keys).
describe.concurrent.each(layouts)('originrev DynamoDB: $name', (layout) => {
  it('rejects an origin attribute name another attribute has, at creation', () => {
    const client = makeClient(endpoint);
    clients.add(client);
    const make = (attributes: Record<string, string>) => () =>
      createDynamoDbStore({ client, tableName: 'idem', attributes });
    // The default name taken by another attribute (a configuration of an earlier version).
    expect(make({ outcome: 'origin' })).toThrow(/distinct/);
    expect(make({ origin: 'owner' })).toThrow(/distinct/);
    expect(make({ origin: 'pk' })).toThrow(/distinct/);
    expect(make({ origin: 'idemOrigin' })).not.toThrow();
  });

  it('two processes against the origin model, deadlines exact (100 sequences)', async () => {
    const tally = await inStreams(STREAMS, 100, (numRuns) =>
      checkOriginModel(
        () => {
          const manual = new ManualClock(Date.now());
          const a = setup(layout, { clock: manual });
          const client = makeClient(endpoint);
          clients.add(client);
          const b = peerOf(a, layout, manual, client);
          // Each owner's calls go through its own process (by its token's last character).
          const by = (owner: string) =>
            (owner.charCodeAt(owner.length - 1) & 1) === 0 ? a.store : b;
          const store: IdempotencyStore = {
            capabilities: a.store.capabilities,
            admin: a.store.admin,
            acquire: (input) => by(input.owner).acquire(input),
            complete: (input) => by(input.owner).complete(input),
            release: (input) => by(input.owner).release(input),
            extend: (input) => by(input.owner).extend(input),
            get: (key) => b.get(key),
          };
          return {
            store,
            clock: { kind: 'manual', manual },
            leaseMs: LEASE,
            retentionMs: RETENTION,
            newKeys: (n) => Array.from({ length: n }, newKey),
          };
        },
        // 100: the edge cases reached vary by run (16 of 60 one run, 10 another, which failed the
        // bound below); 100 sequences reach about 27.
        { clock: 'manual', numRuns },
      ),
    );
    expect(tally.carried).toBeGreaterThan(15);
    expect(tally.edges).toBeGreaterThan(10);
    console.log(`originrev dynamodb model (${layout.id}):`, JSON.stringify(tally));
  }, 240_000);

  it('through the engine: failures, crashes, stalls past the lease, lost and redelivered calls: one originId a key (60 scenarios)', async () => {
    const tally = await inStreams(STREAMS, 60, (numRuns) =>
      checkOriginEngine(async () => {
        const clock = new ManualClock(Date.now());
        return {
          store: setup(layout, { clock }).store,
          clock,
          advance: async (ms) => clock.advance(ms),
          leaseMs: LEASE,
          toleranceMs: 0,
        };
      }, numRuns),
    );
    console.log(`originrev dynamodb engine (${layout.id}):`, JSON.stringify(tally));
  }, 240_000);

  /** Sets the item's origin attribute to `value` with a raw UpdateItem. */
  async function setOrigin(
    t: ReturnType<typeof setup>,
    key: string,
    value: { S: string } | { N: string },
  ) {
    await t.client.send(
      new UpdateItemCommand({
        TableName: tables[layout.id],
        Key: layout.rawKey(t.prefix + key),
        UpdateExpression: 'SET #og = :v',
        ExpressionAttributeNames: { '#og': layout.names.origin },
        ExpressionAttributeValues: { ':v': value },
      }),
    );
  }

  for (const [what, value] of [
    ['empty', { S: '' }],
    ['a number', { N: '7' }],
  ] as const) {
    it(`an origin that is ${what}: a takeover is refused, the item left as it is`, async () => {
      const clock = new ManualClock(Date.now());
      const t = setup(layout, { clock });
      const key = newKey();
      await t.store.acquire(acquireInput(key, { leaseMs: LEASE, retentionMs: RETENTION }));
      await setOrigin(t, key, value);
      clock.advance(LEASE);
      const before = await t.raw(key);
      // Another process (the taker).
      const answer = await answerOf(
        peerOf(t, layout, clock).acquire(
          acquireInput(key, { leaseMs: LEASE, retentionMs: RETENTION }),
        ),
      );
      expect(answer, JSON.stringify(answer)).toBeInstanceOf(StoreUnavailableError);
      expect(await t.raw(key)).toEqual(before);
    });

    it(`an origin that is ${what}: the retry of a key this store released (the upsert without a read) is refused, the item left as it is`, async () => {
      const clock = new ManualClock(Date.now());
      const t = setup(layout, { clock });
      const key = newKey();
      const first = acquireInput(key, { leaseMs: LEASE, retentionMs: RETENTION });
      await t.store.acquire(first);
      expect(await t.store.release({ key, owner: first.owner, retentionMs: RETENTION })).toEqual({
        ok: true,
      });
      await setOrigin(t, key, value);
      const before = await t.raw(key);
      const answer = await answerOf(
        t.store.acquire(acquireInput(key, { leaseMs: LEASE, retentionMs: RETENTION })),
      );
      expect(answer, JSON.stringify(answer)).toBeInstanceOf(StoreUnavailableError);
      expect(await t.raw(key)).toEqual(before);
    });
  }
});

describe('originrev DynamoDB: clock skew at the retention boundary (README "Clock")', () => {
  const layout = layouts[0] as (typeof layouts)[number];
  it('a process whose clock runs behind continues a request whose retention passed (the same origin for a new request, within the skew); one whose clock runs ahead begins a new one early', async () => {
    const skewMs = 1_000;
    const truth = new ManualClock(Date.now());
    const behind = { now: () => truth.now() - skewMs };
    const ahead = { now: () => truth.now() + skewMs };
    const t = setup(layout, { clock: truth });
    const slow = peerOf(t, layout, behind);
    const fast = peerOf(t, layout, ahead);
    // A released tombstone whose retention passed half the skew ago (by the true clock).
    const oldKey = newKey();
    const first = acquireInput(oldKey, { leaseMs: LEASE, retentionMs: RETENTION });
    await t.store.acquire(first);
    await t.store.release({ key: oldKey, owner: first.owner, retentionMs: RETENTION });
    truth.advance(RETENTION + skewMs / 2);
    const next = acquireInput(oldKey, { owner: newOwner(), retentionMs: RETENTION });
    expect(await slow.acquire(next)).toMatchObject({ kind: 'acquired', origin: first.owner });
    // A tombstone whose retention has half the skew left: the fast process begins anew.
    const liveKey = newKey();
    const second = acquireInput(liveKey, { leaseMs: LEASE, retentionMs: RETENTION });
    await t.store.acquire(second);
    await t.store.release({ key: liveKey, owner: second.owner, retentionMs: RETENTION });
    truth.advance(RETENTION - skewMs / 2);
    const retry = acquireInput(liveKey, { owner: newOwner(), retentionMs: RETENTION });
    expect(await fast.acquire(retry)).toMatchObject({ kind: 'acquired', origin: retry.owner });
  });
});
