import { IdemError, InvalidInputError, OutcomeCorruptError } from './errors.js';
import { gunzip, gzip } from './outcome-compression.js';

/** What a codec knows about the outcome it seals or opens. */
export interface OutcomeCodecContext {
  /** The storage key the outcome is stored under (64 hex): bound into the seal. */
  storageKey: string;
  /** Largest outcome the engine records (`settings.maxOutcomeBytes`): an opened outcome is never larger. */
  maxBytes: number;
}

/**
 * Turns encoded outcomes (`encodeOutcome`'s bytes) into the bytes a store keeps, and back.
 * `open` MUST throw when `stored` was not made by `seal` for the same storage key (tampered,
 * truncated, copied from another key, sealed with a key it does not hold): the engine then
 * answers `OUTCOME_CORRUPT`, never a replay. An `IdemError` it throws passes through as is (a
 * `StoreUnavailableError` for a key service that is down); any other error becomes
 * `OutcomeCorruptError` with it as `cause`.
 */
export interface OutcomeCodec {
  seal(encoded: Uint8Array, context: OutcomeCodecContext): Promise<Uint8Array>;
  open(stored: Uint8Array, context: OutcomeCodecContext): Promise<Uint8Array>;
}

/** One AES-256 key of a keyring. */
export interface OutcomeKey {
  /** Stored beside each outcome it seals (1..64 printable ASCII characters, not secret). */
  id: string;
  /** 32 random bytes, or an AES-GCM `CryptoKey` of 256 bits usable to encrypt and decrypt. */
  key: Uint8Array | CryptoKey;
}

/** Options of {@link createOutcomeCodec}. */
export interface OutcomeCodecOptions {
  /**
   * The keyring. The first key seals every new outcome; all of them open (rotation: put the
   * new key first, keep the old ones until the retention of what they sealed has passed).
   * With a keyring, an outcome that is not encrypted is refused (`OUTCOME_CORRUPT`) unless
   * `acceptUnencrypted`. @default none (compression only)
   */
  keys?: readonly OutcomeKey[];
  /**
   * Outcomes whose encoding is longer than this many bytes are gzip-compressed (kept only
   * when smaller); `false` never compresses. Compressing before encrypting makes the stored
   * size depend on the content (see the threat model in the README). @default 1024
   */
  compressAboveBytes?: number | false;
  /**
   * Open outcomes stored without encryption (records written before a keyring was
   * configured), for a migration lasting one retention. @default false
   */
  acceptUnencrypted?: boolean;
}

// "IDS" (idem sealed) + envelope version 1; the plain encoding starts with "IDM" + 1.
const SEALED = [0x49, 0x44, 0x53, 0x01] as const;
const PLAIN = [0x49, 0x44, 0x4d, 0x01] as const;
const COMPRESSED = 1;
const ENCRYPTED = 2;
const IV_BYTES = 12;
const TAG_BYTES = 16;
const KEY_ID = /^[\x21-\x7e]{1,64}$/;
const AAD_DOMAIN = 'idem/sealed-outcome/v1\0';
const utf8 = new TextEncoder();

const startsWith = (bytes: Uint8Array, magic: readonly number[]): boolean =>
  bytes.length >= magic.length && magic.every((byte, i) => bytes[i] === byte);

/**
 * A codec that encrypts outcomes with AES-256-GCM (Web Crypto) under a keyring and
 * compresses large ones (`CompressionStream`): runs wherever `crypto.subtle` does.
 *
 * Stored bytes: `IDS\x01`, a flags byte, the key id's length and the key id, the original
 * length (4 bytes), a random 96-bit IV, then the ciphertext and its 128-bit tag. Everything
 * before the ciphertext and the storage key are authenticated data: flipping a flag, naming
 * another key, truncating, or copying the bytes under another storage key fails to open.
 * @throws InvalidInputError for a bad key (not 32 bytes, not AES-GCM), a bad or repeated key
 *   id, or a bad threshold
 */
export function createOutcomeCodec(options: OutcomeCodecOptions = {}): OutcomeCodec {
  const threshold = options.compressAboveBytes ?? 1024;
  if (!(threshold === false || (Number.isSafeInteger(threshold) && threshold >= 0)))
    throw new InvalidInputError('compressAboveBytes must be false or a non-negative integer');
  const keyring = new Map<string, Promise<CryptoKey>>();
  for (const { id, key } of options.keys ?? []) {
    if (typeof id !== 'string' || !KEY_ID.test(id))
      throw new InvalidInputError('An outcome key id must be 1..64 printable ASCII characters');
    if (keyring.has(id)) throw new InvalidInputError(`Outcome key id ${id} is used twice`);
    keyring.set(id, importKey(key));
  }
  // An import that fails is reported when used; never as an unhandled rejection.
  for (const key of keyring.values()) key.catch(() => {});
  const current = options.keys?.[0]?.id;
  const requireEncryption = current !== undefined && options.acceptUnencrypted !== true;

  return {
    async seal(encoded, { storageKey }) {
      let payload = encoded;
      let flags = 0;
      if (threshold !== false && encoded.length > threshold) {
        const packed = await gzip(encoded);
        if (packed.length < encoded.length) {
          payload = packed;
          flags |= COMPRESSED;
        }
      }
      if (current === undefined) {
        if (flags === 0) return encoded;
        return concat(header(flags, '', encoded.length), payload);
      }
      const head = header(flags | ENCRYPTED, current, encoded.length);
      const iv = crypto.getRandomValues(new Uint8Array(IV_BYTES));
      const sealed = await crypto.subtle.encrypt(
        { name: 'AES-GCM', iv, additionalData: aad(head, iv, storageKey), tagLength: 128 },
        await (keyring.get(current) as Promise<CryptoKey>),
        payload as Uint8Array<ArrayBuffer>,
      );
      return concat(head, iv, new Uint8Array(sealed));
    },

    async open(stored, { storageKey, maxBytes }) {
      if (startsWith(stored, PLAIN)) {
        if (requireEncryption)
          throw new OutcomeCorruptError(
            'Stored outcome is not encrypted, and encryption is required',
          );
        return stored;
      }
      const { flags, keyId, length, bodyStart } = readHeader(stored);
      if (length > maxBytes)
        throw new OutcomeCorruptError('Stored outcome is longer than the outcome limit');
      let payload = stored.subarray(bodyStart);
      if (flags & ENCRYPTED) {
        const key = keyring.get(keyId);
        if (!key)
          throw new OutcomeCorruptError(
            `Stored outcome is sealed with key ${keyId}, which is not in the keyring`,
          );
        if (payload.length < IV_BYTES + TAG_BYTES)
          throw new OutcomeCorruptError('Stored outcome is truncated');
        const iv = payload.slice(0, IV_BYTES);
        try {
          const opened = await crypto.subtle.decrypt(
            {
              name: 'AES-GCM',
              iv,
              additionalData: aad(stored.subarray(0, bodyStart), iv, storageKey),
              tagLength: 128,
            },
            await key,
            payload.subarray(IV_BYTES) as Uint8Array<ArrayBuffer>,
          );
          payload = new Uint8Array(opened);
        } catch (cause) {
          throw new OutcomeCorruptError(
            'Stored outcome fails authentication (tampered, truncated, or stored under another key)',
            { cause },
          );
        }
      } else if (requireEncryption) {
        throw new OutcomeCorruptError(
          'Stored outcome is not encrypted, and encryption is required',
        );
      }
      const plain = flags & COMPRESSED ? await gunzip(payload, length) : payload;
      if (plain.length !== length || !startsWith(plain, PLAIN))
        throw new OutcomeCorruptError('Stored outcome does not open to an encoded outcome');
      return plain;
    },
  };
}

/** `codec.open`, every failure but an `IdemError` of the codec's own made `OUTCOME_CORRUPT`. @internal */
export async function openSealed(
  codec: OutcomeCodec,
  stored: Uint8Array,
  context: OutcomeCodecContext,
): Promise<Uint8Array> {
  let opened: unknown;
  try {
    opened = await codec.open(stored, context);
  } catch (error) {
    if (error instanceof IdemError) throw error;
    throw new OutcomeCorruptError(`Stored outcome cannot be opened: ${String(error)}`, {
      cause: error,
    });
  }
  if (!(opened instanceof Uint8Array))
    throw new OutcomeCorruptError('outcomeCodec.open did not give bytes');
  return opened;
}

function importKey(key: Uint8Array | CryptoKey): Promise<CryptoKey> {
  if (key instanceof Uint8Array) {
    if (key.length !== 32) throw new InvalidInputError('An outcome key must be 32 bytes (AES-256)');
    return crypto.subtle.importKey('raw', key as Uint8Array<ArrayBuffer>, 'AES-GCM', false, [
      'encrypt',
      'decrypt',
    ]);
  }
  const algorithm = (key as CryptoKey | undefined)?.algorithm as AesKeyAlgorithm | undefined;
  if (algorithm?.name !== 'AES-GCM' || algorithm.length !== 256)
    throw new InvalidInputError(
      'An outcome key must be 32 bytes or an AES-GCM CryptoKey of 256 bits',
    );
  return Promise.resolve(key);
}

function header(flags: number, keyId: string, length: number): Uint8Array {
  const id = utf8.encode(keyId);
  const head = new Uint8Array(SEALED.length + 2 + id.length + 4);
  head.set(SEALED, 0);
  head[4] = flags;
  head[5] = id.length;
  head.set(id, 6);
  new DataView(head.buffer).setUint32(6 + id.length, length);
  return head;
}

function readHeader(stored: Uint8Array) {
  if (!startsWith(stored, SEALED) || stored.length < SEALED.length + 6)
    throw new OutcomeCorruptError('Stored outcome has an unknown format or version');
  const flags = stored[4] as number;
  const idLength = stored[5] as number;
  const bodyStart = 6 + idLength + 4;
  if (flags & ~(COMPRESSED | ENCRYPTED) || stored.length < bodyStart)
    throw new OutcomeCorruptError('Stored outcome has a bad header');
  const keyId = String.fromCharCode(...stored.subarray(6, 6 + idLength));
  const length = new DataView(stored.buffer, stored.byteOffset).getUint32(6 + idLength);
  return { flags, keyId, length, bodyStart };
}

/** The authenticated data: the header, the IV, and the storage key the outcome belongs to. */
function aad(head: Uint8Array, iv: Uint8Array, storageKey: string): Uint8Array<ArrayBuffer> {
  return concat(head, iv, utf8.encode(AAD_DOMAIN + storageKey)) as Uint8Array<ArrayBuffer>;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}
