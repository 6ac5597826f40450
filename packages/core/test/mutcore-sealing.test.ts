// Mutation audit (mutcore): the outcome codec (`createOutcomeCodec`). Its contract: `open` MUST
// throw when `stored` was not made by `seal` (tampered, truncated, ...); an outcome is never
// replayed unless it opens to exactly the encoding that was sealed.
import { describe, expect, it } from 'vitest';
import { createOutcomeCodec, encodeOutcome, OutcomeCorruptError } from '../src/index.js';
import { gzip } from '../src/outcome-compression.js';

const ctx = { storageKey: 'a'.repeat(64), maxBytes: 1_000_000 };
const encoded = encodeOutcome({ meta: { kind: 'value' }, body: new Uint8Array(5_000).fill(65) });

/** A compressed, unencrypted seal (no keyring): its header is not authenticated. */
async function compressedSeal(): Promise<Uint8Array> {
  const sealed = await createOutcomeCodec({ compressAboveBytes: 100 }).seal(encoded, ctx);
  expect([...sealed.subarray(0, 6)]).toEqual([0x49, 0x44, 0x53, 0x01, 1, 0]);
  return sealed;
}

describe('mutcore: createOutcomeCodec open', () => {
  // Mutant: an inflate short of the recorded length accepted (zero-padded to it).
  it('a compressed outcome that inflates short of its recorded length is OUTCOME_CORRUPT', async () => {
    const codec = createOutcomeCodec({ compressAboveBytes: 100 });
    const forged = (await compressedSeal()).slice();
    new DataView(forged.buffer).setUint32(6, encoded.length + 5); // claims 5 bytes more
    await expect(codec.open(forged, ctx)).rejects.toBeInstanceOf(OutcomeCorruptError);
  });

  // Mutant: flag bits it does not know ignored.
  it('a header with an unknown flag is OUTCOME_CORRUPT', async () => {
    const codec = createOutcomeCodec({ compressAboveBytes: 100 });
    const forged = (await compressedSeal()).slice();
    forged[4] = (forged[4] as number) | 0x04;
    await expect(codec.open(forged, ctx)).rejects.toThrow(/bad header/);
    // Unchanged, it opens.
    expect(await codec.open(await compressedSeal(), ctx)).toEqual(encoded);
  });

  // Mutant: a compressed but unencrypted outcome accepted under a keyring.
  it('with a keyring, a compressed outcome that is not encrypted is refused (downgrade)', async () => {
    const strict = createOutcomeCodec({
      keys: [{ id: 'k1', key: new Uint8Array(32).fill(1) }],
      compressAboveBytes: 100,
    });
    await expect(strict.open(await compressedSeal(), ctx)).rejects.toThrow(
      /not encrypted, and encryption is required/,
    );
  });

  // Mutant: what inflates is not checked to be an encoding.
  it('a compressed payload that is not an encoding (right length) is OUTCOME_CORRUPT', async () => {
    const codec = createOutcomeCodec({ compressAboveBytes: 100 });
    const other = new Uint8Array(encoded.length).fill(66);
    const packed = await gzip(other);
    const head = (await compressedSeal()).slice(0, 10);
    const forged = new Uint8Array(head.length + packed.length);
    forged.set(head, 0);
    forged.set(packed, head.length);
    await expect(codec.open(forged, ctx)).rejects.toThrow(/does not open to an encoded outcome/);
  });
});
