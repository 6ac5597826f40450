import {
  encodeTextOutcome,
  encodeTextWithHeader,
  knownMetaBodyStart,
  type StoredOutcome,
} from './outcome-codec.js';
import { utf8Length } from './utf8.js';

/** Turns an operation's value into a stored outcome and back. */
export interface OutcomeSerializer<T> {
  serialize(value: T): StoredOutcome;
  deserialize(outcome: StoredOutcome): T;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * Stores values as JSON text (`JSON.stringify`), so a replay returns what `JSON.parse`
 * gives back: plain data, no class instances or `undefined`.
 */
export const jsonSerializer: OutcomeSerializer<unknown> = {
  serialize(value) {
    const text = JSON.stringify(value);
    return {
      meta: { encoding: 'json', undefined: text === undefined },
      body: encoder.encode(text ?? ''),
    };
  },
  deserialize(outcome) {
    if (outcome.meta.undefined === true) return undefined;
    return JSON.parse(decoder.decode(outcome.body));
  },
};

/** Stores `Uint8Array` values byte for byte. */
export const bytesSerializer: OutcomeSerializer<Uint8Array> = {
  serialize(value) {
    return { meta: { encoding: 'bytes' }, body: value };
  },
  deserialize(outcome) {
    return outcome.body;
  },
};

// What the engine records for a value under `jsonSerializer`: metadata
// `{ kind: 'value', value: <the serializer's meta> }`, the JSON text as the body.
const VALUE_META = { encoding: 'json', undefined: false } as const;
const UNDEFINED_META = { encoding: 'json', undefined: true } as const;
const VALUE_OUTCOME_META = Object.freeze({ kind: 'value', value: Object.freeze(VALUE_META) });

/**
 * The metadata JSON of a recorded `jsonSerializer` value, and the metadata it stands for
 * (frozen): replays of such values need not parse it (`decodeOutcomeView`).
 * @internal
 */
export const JSON_VALUE_META = Object.freeze({
  json: JSON.stringify({ kind: 'value', value: VALUE_META }),
  meta: VALUE_OUTCOME_META,
});
const JSON_UNDEFINED_META = JSON.stringify({ kind: 'value', value: UNDEFINED_META });

/**
 * The recorded bytes of `value` under `jsonSerializer`, in one step: exactly
 * `encodeOutcome({ meta: { kind: 'value', value: meta }, body })` of what
 * `jsonSerializer.serialize(value)` gives, without the intermediate body and metadata.
 * With `reuse`, the bytes may be a view of a reused buffer (see `isReusedBuffer`).
 * @throws TypeError when `value` cannot be written as JSON (a BigInt, a cycle)
 * @internal
 */
export function encodeJsonValue(value: unknown, reuse = false): Uint8Array {
  return encodeJsonText(JSON.stringify(value), reuse);
}

/** {@link encodeJsonValue} of a value whose `JSON.stringify` gave `text`. @internal */
export function encodeJsonText(text: string | undefined, reuse = false): Uint8Array {
  return text === undefined
    ? encodeTextOutcome(JSON_UNDEFINED_META, '', reuse)
    : encodeTextWithHeader(JSON_VALUE_HEAD, text, reuse);
}

/** The encoding of a `jsonSerializer` value up to its body (made once). */
const JSON_VALUE_HEAD = encodeTextOutcome(JSON_VALUE_META.json, '');

/** {@link JSON_VALUE_HEAD} as a string of one character a byte. */
const JSON_VALUE_HEAD_LATIN1 = String.fromCharCode(...JSON_VALUE_HEAD);

/**
 * The encoding {@link encodeJsonValue} gives for a value whose JSON text is `text`, as a
 * string of one character a byte, when every character of `text` is ASCII (then its UTF-8
 * bytes are its characters); `undefined` otherwise. No bytes are made: the header's string
 * and `text` joined. @internal
 */
export function jsonValueLatin1(text: string): string | undefined {
  // A character at or above 0x80 counts two or more bytes in UTF-8.
  return utf8Length(text) === text.length ? JSON_VALUE_HEAD_LATIN1 + text : undefined;
}

/**
 * {@link jsonValueText} of an encoding held as a string of one character a byte (a store's
 * Latin-1 form): the JSON text is a cut of it when every byte is ASCII (then Latin-1 and
 * UTF-8 read the same characters, and there is no BOM). `undefined` for anything else (the
 * caller decodes the bytes).
 * @internal
 */
export function jsonValueTextOfLatin1(held: string): string | undefined {
  if (!held.startsWith(JSON_VALUE_HEAD_LATIN1)) return undefined;
  // A character at or above 0x80 counts two or more bytes in UTF-8.
  if (utf8Length(held) !== held.length) return undefined;
  return held.slice(JSON_VALUE_HEAD_LATIN1.length);
}

/**
 * Node's native UTF-8 reader (`Buffer.prototype.utf8Slice`), called on a plain `Uint8Array`
 * with a range: no view made a call. The same decoding as `TextDecoder` (both end in V8's
 * UTF-8 reader, invalid sequences replaced), which also drops a leading BOM (the caller
 * leaves such bodies to it). Only where a probe shows it works; elsewhere `undefined`.
 */
const utf8Slice = (() => {
  const slice = (globalThis as { Buffer?: { prototype: { utf8Slice?: unknown } } }).Buffer
    ?.prototype.utf8Slice;
  if (typeof slice !== 'function') return undefined;
  try {
    // Valid and invalid sequences (a lone continuation byte, a cut four-byte sequence, a
    // surrogate's encoding, an overlong form): the same text as TextDecoder, or not used.
    const probe = Uint8Array.of(
      ...[0x61, 0xc3, 0xa9, 0xff, 0x80, 0xf0, 0x9f, 0x98, 0x41, 0xed, 0xa0, 0x80, 0xc0, 0xaf],
      ...[0xe2, 0x82, 0xf0, 0x9f, 0x98, 0x80],
    );
    if (slice.call(probe, 1, probe.length) !== decoder.decode(probe.subarray(1))) return undefined;
  } catch {
    return undefined;
  }
  return slice as (this: Uint8Array, start: number, end: number) => string;
})();

/**
 * The JSON text of a recorded `jsonSerializer` value, read straight from the recorded bytes
 * (`bytes`, only read before this returns): what `jsonSerializer.deserialize` would parse
 * after `decodeOutcomeView(bytes, JSON_VALUE_META)`, without the view and the outcome
 * objects. `undefined` when the bytes are anything else (another metadata, a marker, a body
 * starting with a BOM, no native UTF-8 reader): the caller takes the general path.
 * @internal
 */
export function jsonValueText(bytes: Uint8Array): string | undefined {
  if (utf8Slice === undefined) return undefined;
  const start = knownMetaBodyStart(bytes, JSON_VALUE_META.json);
  if (start < 0) return undefined;
  // A BOM is dropped by TextDecoder: left to the general path, so the text is the same.
  if (bytes[start] === 0xef && bytes[start + 1] === 0xbb && bytes[start + 2] === 0xbf)
    return undefined;
  return utf8Slice.call(bytes, start, bytes.length);
}
