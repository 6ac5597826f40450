import { promisify } from 'node:util';
import { gunzip, gzip } from 'node:zlib';
import { OutcomeCorruptError } from '@idem/core';

const gzipAsync = promisify(gzip);
const gunzipAsync = promisify(gunzip);

/** The only compression written; the value of the `outcomeEncoding` attribute. */
export const GZIP = 'gzip';

/** An outcome as it goes into the item. */
export interface PackedOutcome {
  bytes: Uint8Array;
  /** `gzip`, or undefined when stored as is. */
  encoding?: string;
}

/**
 * Compresses outcomes of at least `minBytes` with gzip and keeps the compressed form only
 * when it is smaller. `minBytes === false` stores every outcome as is.
 */
export async function packOutcome(
  outcome: Uint8Array,
  minBytes: number | false,
): Promise<PackedOutcome> {
  if (minBytes === false || outcome.length < minBytes) return { bytes: outcome };
  const compressed = await gzipAsync(outcome);
  return compressed.length < outcome.length
    ? { bytes: compressed, encoding: GZIP }
    : { bytes: outcome };
}

/** Restores the encoded outcome bytes exactly as they were given to `complete`. */
export async function unpackOutcome(
  bytes: Uint8Array,
  encoding: string | undefined,
): Promise<Uint8Array> {
  if (encoding === undefined) return new Uint8Array(bytes);
  if (encoding !== GZIP)
    throw new OutcomeCorruptError(`Stored outcome has an unknown encoding: ${encoding}`);
  try {
    return new Uint8Array(await gunzipAsync(bytes));
  } catch (cause) {
    throw new OutcomeCorruptError(`Stored outcome could not be decompressed: ${String(cause)}`);
  }
}

const sameBytes = (a: Uint8Array, b: Uint8Array): boolean =>
  a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.length).equals(b);

/**
 * True when a stored outcome (`stored`, with its `encoding`) holds exactly `outcome`. The
 * stored form is compared with what `complete` would write now (`packed`) and, when that
 * differs (another compression setting, another zlib), decompressed and compared with the
 * outcome itself. An outcome that cannot be decompressed is not the same.
 */
export async function holdsOutcome(
  stored: Uint8Array,
  encoding: string | undefined,
  packed: PackedOutcome,
  outcome: Uint8Array,
): Promise<boolean> {
  if (encoding === packed.encoding && sameBytes(stored, packed.bytes)) return true;
  if (encoding === undefined) return sameBytes(stored, outcome);
  try {
    return sameBytes(await unpackOutcome(stored, encoding), outcome);
  } catch {
    return false;
  }
}
