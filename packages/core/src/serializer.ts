import { encodeTextOutcome, encodeTextWithHeader, type StoredOutcome } from './outcome-codec.js';

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
  const text = JSON.stringify(value);
  return text === undefined
    ? encodeTextOutcome(JSON_UNDEFINED_META, '', reuse)
    : encodeTextWithHeader(JSON_VALUE_HEAD, text, reuse);
}

/** The encoding of a `jsonSerializer` value up to its body (made once). */
const JSON_VALUE_HEAD = encodeTextOutcome(JSON_VALUE_META.json, '');
