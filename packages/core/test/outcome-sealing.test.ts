import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  createIdempotency,
  createOutcomeCodec,
  decodeOutcome,
  deriveStorageKey,
  encodeOutcome,
  type IdemEvent,
  InvalidInputError,
  type OutcomeCodec,
  OutcomeCorruptError,
} from '../src/index.js';
import { FakeStore } from './support/fake-store.js';

const runs = process.env.CI ? 60 : 200;
const key = (fill: number) => new Uint8Array(32).fill(fill);
const ctx = (storageKey = 'a'.repeat(64)) => ({ storageKey, maxBytes: 8 * 1024 * 1024 });
const outcomeArb = fc.record({
  meta: fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 2 })),
  // Repetitive bodies compress, random ones do not: both paths.
  body: fc.oneof(
    fc.uint8Array({ maxLength: 3_000 }),
    fc
      .tuple(fc.uint8Array({ minLength: 1, maxLength: 8 }), fc.integer({ min: 1, max: 600 }))
      .map(
        ([unit, times]) => new Uint8Array(Array.from({ length: times }, () => [...unit]).flat()),
      ),
  ),
});
const codecs: Record<string, OutcomeCodec> = {
  'encrypted + compressed': createOutcomeCodec({
    keys: [{ id: 'k1', key: key(1) }],
    compressAboveBytes: 64,
  }),
  encrypted: createOutcomeCodec({ keys: [{ id: 'k1', key: key(1) }], compressAboveBytes: false }),
  compressed: createOutcomeCodec({ compressAboveBytes: 0 }),
};

async function corrupt(promise: Promise<unknown>): Promise<OutcomeCorruptError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(OutcomeCorruptError);
  return error as OutcomeCorruptError;
}

describe('createOutcomeCodec', () => {
  for (const [name, codec] of Object.entries(codecs)) {
    it(`property (${name}): every outcome round-trips byte for byte`, async () => {
      await fc.assert(
        fc.asyncProperty(outcomeArb, async (outcome) => {
          const encoded = encodeOutcome(outcome);
          const opened = await codec.open(await codec.seal(encoded, ctx()), ctx());
          expect(Buffer.from(opened).equals(Buffer.from(encoded))).toBe(true);
          expect(decodeOutcome(opened).meta).toEqual(JSON.parse(JSON.stringify(outcome.meta)));
        }),
        { numRuns: runs },
      );
    });
  }

  it('property: any bit flip or truncation of an encrypted outcome is OUTCOME_CORRUPT', async () => {
    const codec = codecs['encrypted + compressed'] as OutcomeCodec;
    await fc.assert(
      fc.asyncProperty(
        outcomeArb,
        fc.nat(),
        fc.integer({ min: 0, max: 7 }),
        fc.nat(),
        async (outcome, at, bit, cut) => {
          const sealed = await codec.seal(encodeOutcome(outcome), ctx());
          const flipped = sealed.slice();
          const i = at % flipped.length;
          flipped[i] = (flipped[i] as number) ^ (1 << bit);
          await corrupt(codec.open(flipped, ctx()));
          await corrupt(codec.open(sealed.subarray(0, cut % sealed.length), ctx()));
        },
      ),
      { numRuns: runs },
    );
  });

  it('property: an outcome copied to another storage key does not open there', async () => {
    const codec = codecs.encrypted as OutcomeCodec;
    await fc.assert(
      fc.asyncProperty(outcomeArb, fc.string(), fc.string(), async (outcome, a, b) => {
        fc.pre(a !== b);
        const [ka, kb] = [deriveStorageKey(null, `k${a}`), deriveStorageKey(null, `k${b}`)];
        const sealed = await codec.seal(encodeOutcome(outcome), ctx(ka));
        await corrupt(codec.open(sealed, ctx(kb)));
      }),
      { numRuns: runs },
    );
  });

  it('rotation: the current key seals, old keys still open, a dropped or unknown key does not', async () => {
    const encoded = encodeOutcome({ meta: { s: 200 }, body: new TextEncoder().encode('hello') });
    const old = createOutcomeCodec({ keys: [{ id: 'k1', key: key(1) }] });
    const rotated = createOutcomeCodec({
      keys: [
        { id: 'k2', key: key(2) },
        { id: 'k1', key: key(1) },
      ],
    });
    const sealedOld = await old.seal(encoded, ctx());
    expect(Buffer.from(await rotated.open(sealedOld, ctx())).equals(Buffer.from(encoded))).toBe(
      true,
    );
    const sealedNew = await rotated.seal(encoded, ctx());
    expect(Buffer.from(sealedNew.subarray(6, 8)).toString()).toBe('k2');
    expect((await corrupt(old.open(sealedNew, ctx()))).message).toContain('k2');
    // Same id, different key material (swapped between keys): authentication fails.
    const impostor = createOutcomeCodec({ keys: [{ id: 'k1', key: key(9) }] });
    await corrupt(impostor.open(sealedOld, ctx()));
  });

  it('with a keyring, unencrypted outcomes are refused unless acceptUnencrypted (downgrade)', async () => {
    const encoded = encodeOutcome({ meta: {}, body: new Uint8Array(5_000) });
    const plainSealed = await codecs.compressed?.seal(encoded, ctx());
    const strict = createOutcomeCodec({ keys: [{ id: 'k1', key: key(1) }] });
    await corrupt(strict.open(encoded, ctx()));
    await corrupt(strict.open(plainSealed as Uint8Array, ctx()));
    const migrating = createOutcomeCodec({
      keys: [{ id: 'k1', key: key(1) }],
      acceptUnencrypted: true,
    });
    expect((await migrating.open(encoded, ctx())).length).toBe(encoded.length);
    expect((await migrating.open(plainSealed as Uint8Array, ctx())).length).toBe(encoded.length);
  });

  it('a compressed outcome that inflates past its recorded length (a bomb) is refused', async () => {
    const codec = codecs.compressed as OutcomeCodec;
    const sealed = await codec.seal(
      encodeOutcome({ meta: {}, body: new Uint8Array(100_000) }),
      ctx(),
    );
    const forged = sealed.slice();
    new DataView(forged.buffer).setUint32(6, 1_000); // claims 1000 bytes
    await corrupt(codec.open(forged, ctx()));
    await corrupt(codec.open(sealed, { ...ctx(), maxBytes: 50_000 }));
  });

  it('an encrypted, uncompressed outcome is its encoding plus 38 bytes and the key id (as the threat model says)', async () => {
    const encoded = encodeOutcome({ meta: { a: 1 }, body: new Uint8Array(300) });
    const sealed = await codecs.encrypted?.seal(encoded, ctx());
    expect(sealed?.length).toBe(encoded.length + 38 + 'k1'.length);
  });

  it('compresses only above the threshold and only when smaller; rejects bad keys', async () => {
    const codec = createOutcomeCodec({ compressAboveBytes: 1024 });
    const small = encodeOutcome({ meta: {}, body: new Uint8Array(500) });
    expect(await codec.seal(small, ctx())).toBe(small);
    const large = encodeOutcome({ meta: {}, body: new Uint8Array(50_000) });
    expect((await codec.seal(large, ctx())).length).toBeLessThan(1_000);
    expect(() => createOutcomeCodec({ keys: [{ id: 'k', key: key(1).subarray(1) }] })).toThrow(
      InvalidInputError,
    );
    expect(() => createOutcomeCodec({ keys: [{ id: 'with space', key: key(1) }] })).toThrow(
      InvalidInputError,
    );
    expect(() =>
      createOutcomeCodec({
        keys: [
          { id: 'k', key: key(1) },
          { id: 'k', key: key(2) },
        ],
      }),
    ).toThrow(InvalidInputError);
  });
});

describe('the engine with an outcome codec', () => {
  function setup() {
    const store = new FakeStore();
    const events: IdemEvent[] = [];
    const idem = createIdempotency<unknown>({
      store,
      outcomeCodec: createOutcomeCodec({ keys: [{ id: 'k1', key: key(7) }] }),
      onEvent: (e) => events.push(e),
    });
    return { store, idem, events };
  }

  it('stores ciphertext, replays the value, and answers OUTCOME_CORRUPT (never a replay) once tampered', async () => {
    const { store, idem, events } = setup();
    let runs = 0;
    const op = async () => ({ secret: 'prompt: the launch codes', n: ++runs });
    const first = await idem.execute({ key: 'k', scope: ['t'] }, op);
    const record = store.records.get(deriveStorageKey(['t'], 'k'));
    expect(Buffer.from(record?.outcome ?? []).toString('latin1')).not.toContain('launch codes');
    expect(await idem.execute({ key: 'k', scope: ['t'] }, op)).toEqual({
      value: first.value,
      replayed: true,
    });
    const outcome = record?.outcome as Uint8Array;
    outcome[outcome.length - 1] = (outcome[outcome.length - 1] as number) ^ 1;
    await expect(idem.execute({ key: 'k', scope: ['t'] }, op)).rejects.toMatchObject({
      code: 'OUTCOME_CORRUPT',
    });
    expect(runs).toBe(1);
    expect(events.filter((e) => e.type === 'outcome_corrupt')).toHaveLength(1);
  });

  it('an outcome copied under another scope is OUTCOME_CORRUPT there', async () => {
    const { store, idem } = setup();
    await idem.execute({ key: 'k', scope: ['tenant-a'] }, async () => 'for a');
    await idem.execute({ key: 'k', scope: ['tenant-b'] }, async () => 'for b');
    const a = store.records.get(deriveStorageKey(['tenant-a'], 'k'));
    const b = store.records.get(deriveStorageKey(['tenant-b'], 'k'));
    if (!a || !b) throw new Error('records missing');
    b.outcome = a.outcome;
    await expect(
      idem.execute({ key: 'k', scope: ['tenant-b'] }, async () => 'x'),
    ).rejects.toMatchObject({
      code: 'OUTCOME_CORRUPT',
    });
  });

  it('a codec that fails to seal records no outcome and never runs the operation again', async () => {
    const store = new FakeStore();
    const idem = createIdempotency<unknown>({
      store,
      outcomeCodec: {
        seal: async () => {
          throw new Error('key service down');
        },
        open: async (bytes) => bytes,
      },
    });
    let runs = 0;
    await expect(idem.execute({ key: 'k' }, async () => ++runs)).rejects.toMatchObject({
      code: 'OUTCOME_NOT_RECORDED',
    });
    // The marker could not be sealed either: it is stored plain, a final answer at once.
    await expect(idem.execute({ key: 'k' }, async () => ++runs)).rejects.toMatchObject({
      code: 'OUTCOME_NOT_RECORDED',
      reason: 'not_serializable',
    });
    expect(runs).toBe(1);
  });
});
