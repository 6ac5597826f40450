// Mutation audit (mutcore): the outcome cap, `maxOutcomeBytes`, at its boundary and after the
// codec. README: "the encoded outcome exceeds maxOutcomeBytes ... OUTCOME_TOO_LARGE" and
// "maxOutcomeBytes applies to the sealed bytes".
import { describe, expect, it } from 'vitest';
import {
  answersSynchronously,
  type CompleteInput,
  createIdempotency,
  type OutcomeCodec,
  OutcomeNotRecordedError,
  OutcomeTooLargeError,
} from '../src/index.js';
import { FakeStore } from './support/fake-store.js';

const value = { text: 'x'.repeat(300) };

/**
 * A FakeStore whose `complete` has the synchronous forms an in-process store declares (the
 * Latin-1 outcome form among them), so the engine takes its shortest path.
 */
function latin1Store(): FakeStore {
  const store = new FakeStore();
  const write = (key: string, owner: string, outcome: Uint8Array, retentionMs: number) => {
    const record = store.records.get(key);
    if (record?.status !== 'in_progress' || record.owner !== owner)
      return { ok: false, reason: 'not_owner' } as const;
    const limit = store.capabilities.maxOutcomeBytes;
    if (limit !== undefined && outcome.length > limit)
      throw new OutcomeTooLargeError(outcome.length, limit);
    record.status = 'completed';
    record.outcome = outcome.slice();
    record.expiresAt = Date.now() + retentionMs;
    return { ok: true } as const;
  };
  store.complete = answersSynchronously(
    (input: CompleteInput) => write(input.key, input.owner, input.outcome, input.retentionMs),
    {
      copiesInput: true,
      latin1Outcome: (input) =>
        write(
          input.key,
          input.owner,
          Uint8Array.from(input.outcomeLatin1, (c) => c.charCodeAt(0)),
          input.retentionMs,
        ),
    },
  );
  return store;
}

/** The size of `value`'s recorded outcome, as the engine encodes it. */
async function encodedSize(): Promise<number> {
  const store = new FakeStore();
  const idem = createIdempotency({ store, heartbeatMs: false });
  await idem.execute({ key: 'size' }, async () => value);
  const [record] = [...store.records.values()];
  return record?.outcome?.length as number;
}

describe('mutcore: maxOutcomeBytes', () => {
  // Mutant: `encoded.length >= limit` (an outcome of exactly the cap refused).
  it('an outcome of exactly maxOutcomeBytes is recorded and replayed', async () => {
    const size = await encodedSize();
    expect(size).toBeGreaterThan(300);
    // A custom serializer takes the engine's general path (encodeOutcome then record).
    const store = new FakeStore();
    const serializer = {
      serialize: (v: unknown) => ({ meta: {}, body: new TextEncoder().encode(JSON.stringify(v)) }),
      deserialize: ({ body }: { body: Uint8Array }) => JSON.parse(new TextDecoder().decode(body)),
    };
    const probe = createIdempotency({ store, heartbeatMs: false, serializer });
    await probe.execute({ key: 'probe' }, async () => value);
    const exact = [...store.records.values()][0]?.outcome?.length as number;
    const idem = createIdempotency({
      store,
      heartbeatMs: false,
      serializer,
      maxOutcomeBytes: exact,
    });
    let runs = 0;
    const run = () =>
      idem.execute({ key: 'exact' }, async () => {
        runs++;
        return value;
      });
    expect(await run()).toEqual({ value, replayed: false });
    expect(await run()).toEqual({ value, replayed: true });
    expect(runs).toBe(1);
    // One byte less does not fit.
    const tight = createIdempotency({
      store,
      heartbeatMs: false,
      serializer,
      maxOutcomeBytes: exact - 1,
    });
    await expect(tight.execute({ key: 'tight' }, async () => value)).rejects.toBeInstanceOf(
      OutcomeTooLargeError,
    );
  });

  it('the same boundary under the built-in JSON serializer', async () => {
    const size = await encodedSize();
    const store = new FakeStore();
    const idem = createIdempotency({ store, heartbeatMs: false, maxOutcomeBytes: size });
    expect(await idem.execute({ key: 'k' }, async () => value)).toEqual({
      value,
      replayed: false,
    });
    expect(await idem.execute({ key: 'k' }, async () => value)).toEqual({ value, replayed: true });
  });

  // Mutant: the Latin-1 form (an in-process store keeps the JSON text as a string) skips the cap.
  it('holds on the Latin-1 path of an in-process store too', async () => {
    const size = await encodedSize();
    const store = latin1Store();
    const idem = createIdempotency({ store, heartbeatMs: false, maxOutcomeBytes: size - 1 });
    let runs = 0;
    const run = () =>
      idem.execute({ key: 'k' }, async () => {
        runs++;
        return value;
      });
    await expect(run()).rejects.toBeInstanceOf(OutcomeTooLargeError);
    await expect(run()).rejects.toBeInstanceOf(OutcomeNotRecordedError);
    expect(runs).toBe(1);
    // Within the cap, the same path records and replays it.
    const roomy = createIdempotency({ store, heartbeatMs: false, maxOutcomeBytes: size });
    expect(await roomy.execute({ key: 'fits' }, async () => value)).toEqual({
      value,
      replayed: false,
    });
    expect(await roomy.execute({ key: 'fits' }, async () => value)).toEqual({
      value,
      replayed: true,
    });
  });

  // Mutant: the sealed bytes not checked against the cap.
  it('applies to the sealed bytes: a codec that makes the outcome larger than the cap gets OUTCOME_TOO_LARGE', async () => {
    const size = await encodedSize();
    const pad = 64;
    // Seals by adding `pad` bytes in front (a header, say); opens by taking them off.
    const codec: OutcomeCodec = {
      seal: async (encoded) => {
        const out = new Uint8Array(encoded.length + pad);
        out.set(encoded, pad);
        return out;
      },
      open: async (stored) => stored.subarray(pad),
    };
    const store = new FakeStore();
    const idem = createIdempotency({
      store,
      heartbeatMs: false,
      outcomeCodec: codec,
      maxOutcomeBytes: size + pad - 1,
    });
    let runs = 0;
    const run = () =>
      idem.execute({ key: 'k' }, async () => {
        runs++;
        return value;
      });
    const error = await run().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OutcomeTooLargeError);
    expect((error as OutcomeTooLargeError).size).toBe(size + pad);
    // Nothing larger than the cap reached the store; the marker answers every retry.
    for (const record of store.records.values())
      expect(record.outcome?.length ?? 0).toBeLessThanOrEqual(size + pad - 1);
    const again = await run().catch((e: unknown) => e);
    expect(again).toBeInstanceOf(OutcomeNotRecordedError);
    expect((again as OutcomeNotRecordedError).reason).toBe('too_large');
    expect(runs).toBe(1);
  });
});
