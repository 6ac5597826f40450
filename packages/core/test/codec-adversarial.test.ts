import { describe, expect, it } from 'vitest';
import {
  createIdempotency,
  createOutcomeCodec,
  encodeOutcome,
  type IdemEvent,
  ManualClock,
  type OutcomeCodec,
  OutcomeCorruptError,
  type StoredRecord,
} from '../src/index.js';
import { FakeStore } from './support/fake-store.js';

// Adversarial review of the outcome codec and its use by the engine (issue 17, point 3).

const key = (fill: number) => new Uint8Array(32).fill(fill);
const ctx = { storageKey: 'b'.repeat(64), maxBytes: 1 << 20 };
const encoded = encodeOutcome({ meta: { s: 200 }, body: new TextEncoder().encode('same input') });
const never = () => new Promise<Uint8Array>(() => {});

describe('outcome codec under attack', () => {
  it('every seal draws a fresh random IV: the same outcome never seals to the same bytes', async () => {
    const codec = createOutcomeCodec({ keys: [{ id: 'k1', key: key(1) }] });
    const ivs = new Set<string>();
    const sealedSet = new Set<string>();
    for (let i = 0; i < 16; i++) {
      const sealed = await codec.seal(encoded, ctx);
      // header: 4 magic + flags + id length + id (2) + length (4) = 12; then the 12-byte IV
      ivs.add(Buffer.from(sealed.subarray(12, 24)).toString('hex'));
      sealedSet.add(Buffer.from(sealed).toString('hex'));
    }
    expect(ivs.size).toBe(16);
    expect(sealedSet.size).toBe(16);
  });

  it('renaming the key id in the header to another key of the ring does not open (key-id confusion)', async () => {
    const ring = [
      { id: 'k1', key: key(1) },
      { id: 'k2', key: key(2) },
    ];
    const codec = createOutcomeCodec({ keys: ring });
    const sealed = await codec.seal(encoded, ctx);
    const renamed = sealed.slice();
    renamed.set(new TextEncoder().encode('k2'), 6);
    await expect(codec.open(renamed, ctx)).rejects.toBeInstanceOf(OutcomeCorruptError);
    // Clearing the encrypted flag (claiming plaintext) is refused too, even with a migration on.
    const lenient = createOutcomeCodec({ keys: ring, acceptUnencrypted: true });
    const unflagged = sealed.slice();
    unflagged[4] = 0;
    await expect(lenient.open(unflagged, ctx)).rejects.toBeInstanceOf(OutcomeCorruptError);
  });

  it('appended bytes after the tag do not open', async () => {
    const codec = createOutcomeCodec({ keys: [{ id: 'k1', key: key(1) }] });
    const sealed = await codec.seal(encoded, ctx);
    const extended = new Uint8Array(sealed.length + 3);
    extended.set(sealed);
    await expect(codec.open(extended, ctx)).rejects.toBeInstanceOf(OutcomeCorruptError);
  });
});

describe('the engine opens within its own outcome limit', () => {
  it("a compressed outcome longer than the reader's maxOutcomeBytes is OUTCOME_CORRUPT, not inflated", async () => {
    const store = new FakeStore();
    const codec = createOutcomeCodec({ keys: [{ id: 'k1', key: key(3) }] });
    const writer = createIdempotency<unknown>({ store, outcomeCodec: codec });
    await writer.execute({ key: 'k' }, async () => 'x'.repeat(50_000));
    expect(store.records.values().next().value?.outcome?.length).toBeLessThan(10_000);
    const reader = createIdempotency<unknown>({
      store,
      outcomeCodec: codec,
      maxOutcomeBytes: 10_000,
    });
    await expect(reader.execute({ key: 'k' }, async () => 'y')).rejects.toMatchObject({
      code: 'OUTCOME_CORRUPT',
    });
  });
});

describe('the engine with a codec that never settles', () => {
  function setup(codec: OutcomeCodec) {
    const clock = new ManualClock();
    const store = new FakeStore(clock);
    const events: IdemEvent[] = [];
    const idem = createIdempotency<unknown>({
      store,
      clock,
      leaseMs: 1_000,
      heartbeatMs: false,
      storeTimeoutMs: 50,
      outcomeCodec: codec,
      onEvent: (e) => events.push(e),
    });
    return { idem, store, events, clock };
  }
  /** What `promise` settled to within `ms` of real time, or 'pending'. */
  const within = (promise: Promise<unknown>, ms: number) =>
    Promise.race([
      promise.then(
        (value) => ({ value }),
        (error: unknown) => ({ error }),
      ),
      new Promise((resolve) => setTimeout(() => resolve('pending'), ms)),
    ]);

  it('a seal that never settles: the caller is answered within the store time limit, the operation never runs twice', async () => {
    const { idem, events } = setup({ seal: never, open: async (b) => b });
    let runs = 0;
    const settled = await within(
      idem.execute({ key: 'k' }, async () => ++runs),
      2_000,
    );
    expect(settled).not.toBe('pending');
    expect((settled as { error: { code: string } }).error.code).toBe('OUTCOME_NOT_RECORDED');
    // The marker could not be sealed either, so it was stored plain: a final answer at once.
    await expect(idem.execute({ key: 'k' }, async () => ++runs)).rejects.toMatchObject({
      code: 'OUTCOME_NOT_RECORDED',
      reason: 'not_serializable',
    });
    expect(runs).toBe(1);
    expect(events.filter((e) => e.type === 'execution_end')).toHaveLength(1);
  });

  it('an open that never settles: the replay fails as STORE_UNAVAILABLE within the store time limit (a slow key service is not a corrupt record)', async () => {
    let opening = false;
    const { idem } = setup({
      seal: async (b) => b,
      open: async (b) => (opening ? never() : b),
    });
    await idem.execute({ key: 'k' }, async () => 1);
    opening = true;
    const settled = await within(
      idem.execute({ key: 'k' }, async () => 2),
      2_000,
    );
    expect(settled).not.toBe('pending');
    expect((settled as { error: { code: string } }).error.code).toBe('STORE_UNAVAILABLE');
  });
});

describe('the engine when sealing fails after the operation ran', () => {
  it('a seal that fails once records a not_serializable marker: later requests get OUTCOME_NOT_RECORDED, never a second run', async () => {
    const store = new FakeStore();
    let failures = 1;
    const idem = createIdempotency<unknown>({
      store,
      outcomeCodec: {
        seal: async (b) => {
          if (failures-- > 0) throw new Error('key service blip');
          return b;
        },
        open: async (b) => b,
      },
    });
    let runs = 0;
    await expect(idem.execute({ key: 'k' }, async () => ++runs)).rejects.toMatchObject({
      code: 'OUTCOME_NOT_RECORDED',
      reason: 'not_serializable',
    });
    await expect(idem.execute({ key: 'k' }, async () => ++runs)).rejects.toMatchObject({
      code: 'OUTCOME_NOT_RECORDED',
      reason: 'not_serializable',
    });
    expect(runs).toBe(1);
  });

  const plain = (reason: string) => new TextEncoder().encode(`IDN\x01${reason}`);
  const failing = async (): Promise<Uint8Array> => {
    throw new Error('key service down');
  };
  function leased(codec: OutcomeCodec) {
    const clock = new ManualClock();
    const store = new FakeStore(clock);
    const idem = createIdempotency<unknown>({
      store,
      clock,
      leaseMs: 1_000,
      heartbeatMs: false,
      outcomeCodec: codec,
    });
    return { clock, store, idem };
  }

  // Once an OPEN defect: the marker went through the codec too, failed, the execution was given
  // up, and a retry after the lease ran the operation a second time.
  it('a codec that can seal nothing: OUTCOME_NOT_RECORDED means no second run, also after the lease', async () => {
    const { clock, store, idem } = leased({ seal: failing, open: async (b) => b });
    let runs = 0;
    await expect(idem.execute({ key: 'k' }, async () => ++runs)).rejects.toMatchObject({
      code: 'OUTCOME_NOT_RECORDED',
    });
    // Stored plain, without the codec: the reason and nothing else.
    const [record] = store.records.values();
    expect(record?.status).toBe('completed');
    expect(Buffer.from(record?.outcome ?? []).toString('latin1')).toBe('IDN\x01not_serializable');
    clock.advance(1_001);
    await expect(idem.execute({ key: 'k' }, async () => ++runs)).rejects.toMatchObject({
      code: 'OUTCOME_NOT_RECORDED',
      reason: 'not_serializable',
    });
    expect(runs).toBe(1);
  });

  it('a codec that can neither seal nor open: the plain marker is read before the codec', async () => {
    const { clock, idem } = leased({ seal: failing, open: failing });
    let runs = 0;
    await expect(idem.execute({ key: 'k' }, async () => ++runs)).rejects.toMatchObject({
      code: 'OUTCOME_NOT_RECORDED',
    });
    clock.advance(1_001);
    await expect(idem.execute({ key: 'k' }, async () => ++runs)).rejects.toMatchObject({
      code: 'OUTCOME_NOT_RECORDED',
      reason: 'not_serializable',
    });
    expect(runs).toBe(1);
  });

  it('a marker the codec can seal is sealed (its reason stays hidden from a reader of the store)', async () => {
    const codec = createOutcomeCodec({ keys: [{ id: 'k1', key: key(5) }] });
    const clock = new ManualClock();
    const store = new FakeStore(clock);
    const idem = createIdempotency<unknown>({
      store,
      clock,
      outcomeCodec: codec,
      maxOutcomeBytes: 200,
    });
    await expect(idem.execute({ key: 'k' }, async () => 'x'.repeat(300))).rejects.toMatchObject({
      code: 'OUTCOME_TOO_LARGE',
    });
    const [record] = store.records.values();
    const stored = Buffer.from(record?.outcome ?? []);
    expect(stored.subarray(0, 4).toString('latin1')).toBe('IDS\x01');
    expect(stored.includes('too_large')).toBe(false);
    await expect(idem.execute({ key: 'k' }, async () => 'y')).rejects.toMatchObject({
      code: 'OUTCOME_NOT_RECORDED',
      reason: 'too_large',
      limit: 200,
    });
  });

  it('a codec that fails only on open: the outcome was recorded, reads are OUTCOME_CORRUPT, never a second run', async () => {
    const { clock, idem } = leased({ seal: async (b) => b, open: failing });
    let runs = 0;
    await expect(idem.execute({ key: 'k' }, async () => ++runs)).resolves.toMatchObject({
      value: 1,
      replayed: false,
    });
    clock.advance(1_001);
    await expect(idem.execute({ key: 'k' }, async () => ++runs)).rejects.toBeInstanceOf(
      OutcomeCorruptError,
    );
    expect(runs).toBe(1);
  });

  it('a plain marker only ever answers OUTCOME_NOT_RECORDED; anything near it goes to the codec and is OUTCOME_CORRUPT', async () => {
    const codec = createOutcomeCodec({ keys: [{ id: 'k1', key: key(6) }] });
    const { store, idem } = leased(codec);
    await idem.execute({ key: 'k' }, async () => ({ secret: 'user data' }));
    const [storageKey, record] = [...store.records.entries()][0] as [string, StoredRecord];
    const sealed = record.outcome as Uint8Array;
    const replace = (outcome: Uint8Array) => store.records.set(storageKey, { ...record, outcome });
    const answer = () => idem.execute({ key: 'k' }, async () => 'ran again');

    // A sealed outcome whose magic is rewritten to the marker's: not a marker, does not open.
    const remagicked = sealed.slice();
    remagicked.set(plain('').subarray(0, 4), 0);
    replace(remagicked);
    await expect(answer()).rejects.toBeInstanceOf(OutcomeCorruptError);
    // A marker with a byte more, an unknown reason, or a marker prefix of a sealed outcome.
    for (const near of [
      new Uint8Array([...plain('too_large'), 0]),
      plain('too_larger'),
      plain('replay'),
      new Uint8Array([...plain('too_large'), ...sealed]),
    ]) {
      replace(near);
      await expect(answer()).rejects.toBeInstanceOf(OutcomeCorruptError);
    }
    // Replacing the outcome by a plain marker (a writer of the store can: a denial, like a
    // delete) answers OUTCOME_NOT_RECORDED: never a replay, never a second run.
    for (const reason of ['too_large', 'not_serializable', 'store_full']) {
      replace(plain(reason));
      await expect(answer()).rejects.toMatchObject({ code: 'OUTCOME_NOT_RECORDED', reason });
    }
    // The genuine outcome still opens.
    replace(sealed);
    await expect(answer()).resolves.toMatchObject({
      value: { secret: 'user data' },
      replayed: true,
    });
  });
});
