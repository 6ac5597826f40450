import { describe, expect, it } from 'vitest';
import {
  createIdempotency,
  decodeOutcome,
  type IdemEvent,
  ManualClock,
  type OutcomeCodec,
  OutcomeNotRecordedError,
  OutcomeTooLargeError,
  readNotRecorded,
  StoreFullError,
} from '../src/index.js';
import { readPlainNotRecorded } from '../src/not-recorded.js';
import { FakeStore } from './support/fake-store.js';

function setup(options: { maxOutcomeBytes?: number; storeLimit?: number } = {}) {
  const clock = new ManualClock();
  const store = new FakeStore(clock, options.storeLimit);
  const events: IdemEvent[] = [];
  const idem = createIdempotency<unknown>({
    store,
    clock,
    leaseMs: 1_000,
    heartbeatMs: false,
    onEvent: (e) => events.push(e),
    ...(options.maxOutcomeBytes === undefined ? {} : { maxOutcomeBytes: options.maxOutcomeBytes }),
  });
  let runs = 0;
  const counted =
    <V>(value: () => V) =>
    async () => {
      runs++;
      return value();
    };
  return { clock, store, idem, events, counted, runs: () => runs };
}

const error = (promise: Promise<unknown>) =>
  promise.then(
    () => undefined,
    (e: unknown) => e,
  );

async function onlyRecord(store: FakeStore) {
  expect(store.records.size).toBe(1);
  const [record] = store.records.values();
  return record!;
}

describe('outcome cap (maxOutcomeBytes)', () => {
  it('defaults to 8 MiB, takes the store limit when lower, and refuses a bad value', () => {
    expect(setup().idem.settings.maxOutcomeBytes).toBe(8_388_608);
    expect(setup({ maxOutcomeBytes: 1_000 }).idem.settings.maxOutcomeBytes).toBe(1_000);
    expect(setup({ storeLimit: 500 }).idem.settings.maxOutcomeBytes).toBe(500);
    expect(setup({ maxOutcomeBytes: 400, storeLimit: 500 }).idem.settings.maxOutcomeBytes).toBe(
      400,
    );
    for (const bad of [0, -1, Number.NaN, 1.5]) {
      expect(() => setup({ maxOutcomeBytes: bad })).toThrow(
        expect.objectContaining({ code: 'INVALID_INPUT' }),
      );
    }
  });

  it('an outcome over the cap is OUTCOME_TOO_LARGE; the key keeps a marker, so a retry never runs again', async () => {
    const { idem, store, events, counted, runs } = setup({ maxOutcomeBytes: 200 });
    const big = counted(() => 'x'.repeat(300));
    const first = await error(idem.execute({ key: 'k' }, big));
    expect(first).toBeInstanceOf(OutcomeTooLargeError);
    expect(first).toMatchObject({ limit: 200 });
    const record = await onlyRecord(store);
    expect(record.status).toBe('completed');
    const marker = decodeOutcome(record.outcome!);
    expect(marker.meta).toMatchObject({ kind: 'not_recorded', reason: 'too_large', limit: 200 });
    expect(marker.body.length).toBe(0);
    const again = await error(idem.execute({ key: 'k' }, big));
    expect(again).toBeInstanceOf(OutcomeNotRecordedError);
    expect(again).toMatchObject({ code: 'OUTCOME_NOT_RECORDED', reason: 'too_large' });
    expect(runs()).toBe(1);
    const notRecorded = events.find((e) => e.type === 'outcome_not_recorded');
    expect(notRecorded).toMatchObject({
      reason: 'too_large',
      storageKey: record && expect.any(String),
    });
    expect((notRecorded as { size?: number }).size).toBeGreaterThan(300);
    await expect(idem.begin({ key: 'k' })).rejects.toBeInstanceOf(OutcomeNotRecordedError);
  });

  it('Execution.complete enforces the cap for integrations that call it directly', async () => {
    const { idem, store } = setup({ maxOutcomeBytes: 100 });
    const begun = await idem.begin({ key: 'k' });
    if (begun.kind !== 'acquired') throw new Error('expected to acquire');
    await expect(
      begun.execution.complete({ meta: {}, body: new Uint8Array(200) }),
    ).rejects.toBeInstanceOf(OutcomeTooLargeError);
    expect((await onlyRecord(store)).status).toBe('completed');
    await expect(idem.begin({ key: 'k' })).rejects.toMatchObject({ reason: 'too_large' });
  });
});

describe('a successful operation is never released for a reason of ours', () => {
  const unserialisable: [string, () => unknown][] = [
    ['a BigInt', () => ({ amount: 10n })],
    [
      'a circular object',
      () => {
        const a: Record<string, unknown> = {};
        a.self = a;
        return a;
      },
    ],
  ];
  for (const [name, value] of unserialisable) {
    it(`a value with ${name} is OUTCOME_NOT_RECORDED (not_serializable) and the retry does not run again`, async () => {
      const { idem, store, counted, runs, events } = setup();
      const op = counted(value);
      const first = await error(idem.execute({ key: 'k' }, op));
      expect(first).toBeInstanceOf(OutcomeNotRecordedError);
      expect(first).toMatchObject({ reason: 'not_serializable' });
      expect((first as Error).cause).toBeInstanceOf(TypeError);
      expect((await onlyRecord(store)).status).toBe('completed');
      const again = await error(idem.execute({ key: 'k' }, op));
      expect(again).toMatchObject({ code: 'OUTCOME_NOT_RECORDED', reason: 'not_serializable' });
      expect(runs()).toBe(1);
      expect(events.map((e) => e.type)).not.toContain('released');
    });
  }

  // A custom serializer can return what encodeOutcome cannot write: metadata that is not
  // JSON, a body that is not bytes. The operation ran all the same.
  const unencodable: [string, () => { meta: Record<string, unknown>; body: unknown }][] = [
    ['metadata with a BigInt', () => ({ meta: { big: 10n }, body: new Uint8Array() })],
    ['a body that is not bytes', () => ({ meta: {}, body: 'text' })],
  ];
  for (const [name, serialize] of unencodable) {
    it(`a serializer that returns ${name} leaves a not_serializable marker, not a lease held for maxHoldMs`, async () => {
      const clock = new ManualClock();
      const store = new FakeStore(clock);
      const idem = createIdempotency<unknown>({
        store,
        clock,
        leaseMs: 1_000,
        heartbeatMs: false,
        serializer: { serialize, deserialize: () => 'never' } as never,
      });
      let runs = 0;
      const op = async () => `ran ${++runs}`;
      const first = await error(idem.execute({ key: 'k' }, op));
      expect(first).toMatchObject({ code: 'OUTCOME_NOT_RECORDED', reason: 'not_serializable' });
      expect((await onlyRecord(store)).status).toBe('completed');
      clock.advance(5_000); // far past the lease: a held or lapsed key would run again
      const again = await error(idem.execute({ key: 'k' }, op));
      expect(again).toMatchObject({ code: 'OUTCOME_NOT_RECORDED', reason: 'not_serializable' });
      expect(runs).toBe(1);
    });
  }

  it("the store's own OutcomeTooLargeError leaves a marker instead of releasing", async () => {
    const { idem, store, counted, runs } = setup();
    store.next.complete.push('too_large');
    const op = counted(() => 'fits our cap, not the store');
    await expect(idem.execute({ key: 'k' }, op)).rejects.toBeInstanceOf(OutcomeTooLargeError);
    await expect(idem.execute({ key: 'k' }, op)).rejects.toMatchObject({ reason: 'too_large' });
    expect(runs()).toBe(1);
  });

  it('a store that answers STORE_FULL at complete leaves a store_full marker', async () => {
    const { idem, store, counted, runs } = setup();
    store.next.complete.push('full');
    const op = counted(() => 'ok');
    await expect(idem.execute({ key: 'k' }, op)).rejects.toBeInstanceOf(StoreFullError);
    await expect(idem.execute({ key: 'k' }, op)).rejects.toMatchObject({ reason: 'store_full' });
    expect(runs()).toBe(1);
  });

  it('when not even the marker fits, the key is abandoned (never released): the lease runs out', async () => {
    const { idem, store, clock, counted, runs } = setup();
    store.always.complete = 'too_large';
    const op = counted(() => 'ok');
    await expect(idem.execute({ key: 'k' }, op)).rejects.toBeInstanceOf(OutcomeTooLargeError);
    expect(store.calls.release).toBe(0);
    expect((await onlyRecord(store)).status).toBe('in_progress');
    await expect(idem.execute({ key: 'k' }, op)).rejects.toMatchObject({ code: 'IN_PROGRESS' });
    clock.advance(1_000);
    delete store.always.complete;
    await idem.execute({ key: 'k' }, op);
    expect(runs()).toBe(2);
  });

  it('completeNotRecorded(reason, details) records the marker for a streamed outcome over the cap', async () => {
    const { idem, store, events } = setup();
    const begun = await idem.begin({ key: 'k' });
    if (begun.kind !== 'acquired') throw new Error('expected to acquire');
    await begun.execution.completeNotRecorded('too_large', { size: 9_000_000, limit: 8_388_608 });
    expect(begun.execution.finished).toBe(true);
    expect((await onlyRecord(store)).status).toBe('completed');
    expect(events).toContainEqual(
      expect.objectContaining({
        type: 'outcome_not_recorded',
        reason: 'too_large',
        size: 9_000_000,
      }),
    );
    const replay = await error(idem.begin({ key: 'k' }));
    expect(replay).toBeInstanceOf(OutcomeNotRecordedError);
    expect(replay).toMatchObject({ reason: 'too_large', size: 9_000_000, limit: 8_388_608 });
    await expect(begun.execution.completeNotRecorded('too_large')).rejects.toMatchObject({
      code: 'INVALID_INPUT',
    });
  });
});

// timeout31b: a handler that ran to its end after something outside the HTTP middleware (a
// request timeout) answered for it leaves this marker; its reason is new, read by every build.
describe('the answered_outside reason (the operation ran, its response was answered by something else)', () => {
  it('completeNotRecorded records it: a retry gets OUTCOME_NOT_RECORDED with that reason, the event names it', async () => {
    const { idem, store, events } = setup();
    const begun = await idem.begin({ key: 'k' });
    if (begun.kind !== 'acquired') throw new Error('expected to acquire');
    await begun.execution.completeNotRecorded('answered_outside');
    expect((await onlyRecord(store)).status).toBe('completed');
    expect(events).toContainEqual(
      expect.objectContaining({ type: 'outcome_not_recorded', reason: 'answered_outside' }),
    );
    const replay = await error(idem.begin({ key: 'k' }));
    expect(replay).toBeInstanceOf(OutcomeNotRecordedError);
    expect(replay).toMatchObject({ code: 'OUTCOME_NOT_RECORDED', reason: 'answered_outside' });
    expect((replay as Error).message).toContain(
      'it ran to its end, but its response was answered outside the idempotency layer, so its outcome is unknown',
    );
  });

  it('stored plain (a codec that cannot seal) it round-trips as IDN 1 + the reason', async () => {
    const down = async (): Promise<Uint8Array> => {
      throw new Error('key service down');
    };
    const codec: OutcomeCodec = { seal: down, open: down };
    const clock = new ManualClock();
    const store = new FakeStore(clock);
    const idem = createIdempotency<unknown>({
      store,
      clock,
      leaseMs: 1_000,
      heartbeatMs: false,
      outcomeCodec: codec,
    });
    const begun = await idem.begin({ key: 'k' });
    if (begun.kind !== 'acquired') throw new Error('expected to acquire');
    await begun.execution.completeNotRecorded('answered_outside');
    const record = await onlyRecord(store);
    expect(Buffer.from(record.outcome ?? []).toString('latin1')).toBe('IDN\x01answered_outside');
    const replay = await error(idem.begin({ key: 'k' }));
    expect(replay).toMatchObject({ code: 'OUTCOME_NOT_RECORDED', reason: 'answered_outside' });
    const plain = readPlainNotRecorded(record.outcome as Uint8Array);
    expect(plain && readNotRecorded(plain)).toEqual({ reason: 'answered_outside' });
  });

  it('a sealed marker whose reason this build does not know still answers OUTCOME_NOT_RECORDED (as too_large)', () => {
    // What a build before answered_outside does with it; the same for any later reason.
    const future = {
      meta: { kind: 'not_recorded', reason: 'some_later_reason' },
      body: new Uint8Array(),
    };
    expect(readNotRecorded(future)).toEqual({ reason: 'too_large' });
    expect(
      readNotRecorded({ ...future, meta: { ...future.meta, reason: 'answered_outside' } }),
    ).toEqual({
      reason: 'answered_outside',
    });
  });
});
