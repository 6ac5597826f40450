/**
 * Redelivered calls (store contract rule 7): a request DynamoDB applied whose answer was
 * lost, sent again (the SDK retries a timed-out or reset request by itself), answers what
 * the first delivery would have answered.
 */
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { createIdempotency, encodeOutcome, ManualClock } from '@idem/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDynamoDbStore } from '../src/index.js';
import { decodeRaw, layouts, rawItem } from './dynamodb-env.js';
import { startLostAnswerProxy } from './lost-answer-proxy.js';
import {
  acquireInput,
  clients,
  endpoint,
  HOUR,
  newKey,
  newOwner,
  setup,
  tables,
} from './store-fixture.js';

const NOT_OWNER = { ok: false, reason: 'not_owner' };

describe.each(layouts)('DynamoDB redelivered calls: $name', (layout) => {
  it('an acquire that finds its own lease is its acquisition: same fence, lease renewed (live or passed)', async () => {
    const clock = new ManualClock(Date.now());
    const t = setup(layout, { clock });
    const key = newKey();
    const input = acquireInput(key, { leaseMs: 1_000, retentionMs: HOUR });
    expect(await t.store.acquire(input)).toMatchObject({ kind: 'acquired', fence: 1 });
    clock.advance(400);
    t.take();
    expect(await t.store.acquire(input)).toEqual({
      kind: 'acquired',
      fence: 1,
      leaseUntil: clock.now() + 1_000,
      takeover: false,
      origin: input.owner,
    });
    // The acquire's condition fails on the caller's own record; the renewal is one more write.
    expect(t.take()).toEqual(['acquire', 'extend']);
    expect(decodeRaw(layout, (await t.raw(key))!)).toEqual({
      status: 'in_progress',
      fingerprint: 'fp',
      owner: input.owner,
      origin: input.owner,
      fence: 1,
      leaseUntil: clock.now() + 1_000,
      expiresAt: clock.now() + 1_000 + HOUR,
    });
    expect((await t.store.acquire(acquireInput(key))).kind).toBe('found');

    // Lease passed, nobody took over: still the caller's.
    clock.advance(5_000);
    expect(await t.store.acquire(input)).toMatchObject({
      kind: 'acquired',
      fence: 1,
      takeover: false,
    });
    clock.advance(5_000);
    const newer = acquireInput(key);
    // The takeover continues the logical request the caller began.
    expect(await t.store.acquire(newer)).toMatchObject({
      kind: 'acquired',
      fence: 2,
      takeover: true,
      origin: input.owner,
    });
    const late = await t.store.acquire(input);
    expect(late.kind).toBe('found');
    if (late.kind === 'found')
      expect(late.record).toMatchObject({ owner: newer.owner, origin: input.owner, fence: 2 });
  });

  it('a complete that finds its own completion with the same bytes succeeds in one request and changes nothing', async () => {
    const t = setup(layout);
    const line = new TextEncoder().encode('{"id":1,"text":"compressible, compressible"},');
    const big = new Uint8Array(64 * 1024);
    for (let i = 0; i < big.length; i += line.length) big.set(line.subarray(0, big.length - i), i);
    // A small outcome stored as is and a large one stored gzipped.
    for (const outcome of [
      new Uint8Array([0, 255, 13, 10]),
      encodeOutcome({ meta: { status: 200 }, body: big }),
    ]) {
      const key = newKey();
      const input = acquireInput(key);
      await t.store.acquire(input);
      const w = { key, owner: input.owner, retentionMs: HOUR };
      expect(await t.store.complete({ ...w, outcome })).toEqual({ ok: true });
      const before = await t.raw(key);
      t.take();
      expect(await t.store.complete({ ...w, outcome: outcome.slice() })).toEqual({ ok: true });
      expect(t.take()).toEqual(['complete']);
      const other = outcome.slice();
      other[other.length - 1] = (other.at(-1) ?? 0) ^ 1;
      expect(await t.store.complete({ ...w, outcome: other })).toEqual(NOT_OWNER);
      expect(await t.store.complete({ ...w, owner: newOwner(), outcome })).toEqual(NOT_OWNER);
      expect(await t.raw(key)).toEqual(before);
    }
  });

  it('a release that finds its own tombstone succeeds and changes nothing', async () => {
    const t = setup(layout);
    const key = newKey();
    const input = acquireInput(key);
    await t.store.acquire(input);
    const w = { key, owner: input.owner, retentionMs: HOUR };
    expect(await t.store.release(w)).toEqual({ ok: true });
    const tomb = await t.raw(key);
    expect(await t.store.release(w)).toEqual({ ok: true });
    expect(await t.store.release({ ...w, owner: newOwner() })).toEqual(NOT_OWNER);
    expect(await t.store.complete({ ...w, outcome: new Uint8Array([1]) })).toEqual(NOT_OWNER);
    expect(await t.raw(key)).toEqual(tomb);
  });
});

describe('DynamoDB answers lost on the wire, retried by the SDK', () => {
  let proxy: Awaited<ReturnType<typeof startLostAnswerProxy>>;
  let client: DynamoDBClient;
  const layout = layouts[0]!;

  beforeAll(async () => {
    proxy = await startLostAnswerProxy(Number(new URL(endpoint).port));
    client = new DynamoDBClient({
      endpoint: `http://127.0.0.1:${proxy.port}`,
      region: 'us-east-1',
      credentials: { accessKeyId: 'idemlocal', secretAccessKey: 'idemlocal' },
      maxAttempts: 3,
    });
    clients.add(client);
  });
  afterAll(async () => {
    await proxy?.close();
  });

  it('the retried acquire is the acquisition and the retried complete succeeds; execute runs once', async () => {
    const prefix = `lost:${newKey().slice(0, 8)}:`;
    const store = createDynamoDbStore({ client, tableName: tables.simple, keyPrefix: prefix });
    const key = newKey();
    const input = acquireInput(key);
    proxy.loseNextAnswer();
    expect(await store.acquire(input)).toMatchObject({
      kind: 'acquired',
      fence: 1,
      takeover: false,
    });
    expect(proxy.lost).toBe(1);
    const outcome = new Uint8Array([1, 2, 3]);
    proxy.loseNextAnswer();
    expect(await store.complete({ key, owner: input.owner, outcome, retentionMs: HOUR })).toEqual({
      ok: true,
    });
    expect(proxy.lost).toBe(2);
    const record = decodeRaw(layout, (await rawItem(client, tables.simple, layout, prefix + key))!);
    expect(record).toMatchObject({ status: 'completed', owner: input.owner, fence: 1 });
    expect(Buffer.from(record.outcome!)).toEqual(Buffer.from(outcome));

    const idem = createIdempotency<string>({ store, heartbeatMs: false });
    let runs = 0;
    proxy.loseNextAnswer();
    const first = await idem.execute({ key: 'order-1', scope: 't' }, async () => {
      runs++;
      proxy.loseNextAnswer();
      return 'charged';
    });
    expect(proxy.lost).toBe(4);
    expect(first).toEqual({ value: 'charged', replayed: false });
    const retry = await idem.execute({ key: 'order-1', scope: 't' }, async () => `run ${++runs}`);
    expect(retry).toEqual({ value: 'charged', replayed: true });
    expect(runs).toBe(1);
  });
});
