import type { StoredOutcome } from './outcome-codec.js';

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
