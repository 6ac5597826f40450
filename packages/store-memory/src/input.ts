import { checkStoreString, InvalidInputError, MAX_TIMER_MS } from '@idem/core';
import { latin1String, writeLatin1 } from './latin1.js';

/**
 * Longest storage key, owner token and fingerprint accepted, in UTF-16 code units. Core's
 * storage keys are at most 64 characters, its owners and fingerprints shorter still; the
 * bound keeps one record's strings, and so its accounted bytes, small.
 */
export const MAX_STRING_LENGTH = 1_024;

/**
 * Throws `InvalidInputError` unless `value` is a string of at most
 * {@link MAX_STRING_LENGTH} code units (and not empty unless `empty`). Any string is kept as
 * it is: nothing is encoded, so a malformed one is its own.
 */
export function checkString(name: string, value: unknown, empty = false): asserts value is string {
  // What every call of the engine passes, accepted without building the rules.
  if (typeof value === 'string' && value.length <= MAX_STRING_LENGTH && (empty || value.length > 0))
    return;
  checkStoreString(name, value, {
    maxLength: MAX_STRING_LENGTH,
    allowEmpty: empty,
    wellFormed: false,
  });
}

/**
 * A copy of `value` that shares no memory with any string the caller holds. V8 keeps a
 * string cut from a longer one (`slice`, `substring`) as a view of the whole: storing such a
 * key would keep a whole request body alive, far beyond what the record is accounted for.
 *
 * `value + ' '` is a new string (a rope over `value` under 13 characters' length, else a
 * fresh copy); cutting the space off makes V8 flatten it into a fresh string of its own and
 * answer a copy or a view of that one, which holds one character more than `value` and
 * nothing of the caller's. About a fifth of the CPU of the `JSON.parse(JSON.stringify())`
 * round trip this replaced (three of them an acquire).
 */
export function detached(value: string): string {
  return `${value} `.slice(0, -1);
}

/** Where {@link copied} writes a string before reading it back (every checked string fits). */
const scratch = writeLatin1 && new Uint8Array(MAX_STRING_LENGTH);

/**
 * A copy of `value` that shares no memory with any string the caller holds, and is one flat
 * string: a Latin-1 string (keys, owners and fingerprints are ASCII) is written into a
 * scratch buffer and read back as a fresh string, one object; another one (or where the
 * runtime's native Latin-1 codec is missing) is {@link detached}, a cut of a fresh
 * string. At most {@link MAX_STRING_LENGTH} units (what `checkString` accepts).
 */
export function copied(value: string): string {
  if (value.length === 0) return '';
  if (scratch !== undefined && latin1String !== undefined && writeLatin1 !== undefined) {
    const copy = latin1String(scratch, writeLatin1(value, scratch));
    // A unit above 0xff was cut to its low byte: not the same string, so not Latin-1.
    if (copy === value) return copy;
  }
  return detached(value);
}

/** `sweepIntervalMs`, checked: 0 (no sweep) or a timer interval Node honours. */
export function sweepInterval(value: unknown): number {
  if (!(typeof value === 'number' && (value === 0 || (value >= 1 && value <= MAX_TIMER_MS)))) {
    throw new InvalidInputError(
      `sweepIntervalMs must be 0 or a number of ms from 1 to ${MAX_TIMER_MS}`,
    );
  }
  return value;
}
