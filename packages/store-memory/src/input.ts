import { type Clock, InvalidInputError } from '@idem/core';

/**
 * Longest storage key, owner token and fingerprint accepted, in UTF-16 code units. Core's
 * storage keys are at most 64 characters, its owners and fingerprints shorter still; the
 * bound keeps one record's strings, and so its accounted bytes, small.
 */
export const MAX_STRING_LENGTH = 1_024;

/** Longest timer interval Node honours (a longer one fires after 1 ms). */
const MAX_TIMER_MS = 2_147_483_647;

const typedArrayTag = Object.getOwnPropertyDescriptor(
  Object.getPrototypeOf(Uint8Array.prototype),
  Symbol.toStringTag,
)?.get;

/** Throws `InvalidInputError` unless `input` is an object (the argument of a store call). */
export function checkObject(
  call: string,
  input: unknown,
): asserts input is Record<string, unknown> {
  if (typeof input !== 'object' || input === null) {
    throw new InvalidInputError(`${call} needs an input object`);
  }
}

/**
 * Throws `InvalidInputError` unless `value` is a string of at most
 * {@link MAX_STRING_LENGTH} code units (and not empty unless `empty`).
 */
export function checkString(name: string, value: unknown, empty = false): asserts value is string {
  if (typeof value !== 'string' || value.length > MAX_STRING_LENGTH || (!empty && value === '')) {
    throw new InvalidInputError(
      `${name} must be a ${empty ? '' : 'non-empty '}string of at most ${MAX_STRING_LENGTH} characters`,
    );
  }
}

/**
 * A copy of `value` that shares no memory with any other string. V8 keeps a string cut from
 * a longer one (`slice`, `substring`) as a view of the whole: storing such a key would keep a
 * whole request body alive, far beyond what the record is accounted for.
 */
export function detached(value: string): string {
  return JSON.parse(JSON.stringify(value)) as string;
}

/** Throws `InvalidInputError` unless `value` is a finite, non-negative number of ms. */
export function checkDuration(name: string, value: unknown): asserts value is number {
  // A NaN deadline would never expire and would break the eviction queues' order.
  if (!(typeof value === 'number' && Number.isFinite(value) && value >= 0)) {
    throw new InvalidInputError(`${name} must be a finite, non-negative number of ms`);
  }
}

/** Throws `InvalidInputError` unless `value` is a `Uint8Array` (a `Buffer` is one), from any realm. */
export function checkOutcome(value: unknown): asserts value is Uint8Array {
  if (!(ArrayBuffer.isView(value) && typedArrayTag?.call(value) === 'Uint8Array')) {
    throw new InvalidInputError('outcome must be a Uint8Array');
  }
}

/** The clock's time; `InvalidInputError` when it is not a finite number. */
export function readClock(clock: Clock): number {
  const now = clock.now();
  if (!(typeof now === 'number' && Number.isFinite(now))) {
    throw new InvalidInputError(`The clock returned an invalid time: ${String(now)}`);
  }
  return now;
}

/** Throws `InvalidInputError` unless `clock` has a `now()` method. */
export function checkClock(clock: unknown): asserts clock is Clock {
  if (typeof (clock as Clock | null)?.now !== 'function') {
    throw new InvalidInputError('clock must be an object with a now() method');
  }
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

/** Throws `InvalidInputError` unless `value` is a positive safe integer. */
export function positiveInteger(name: string, value: unknown): number {
  if (!(typeof value === 'number' && Number.isSafeInteger(value) && value > 0)) {
    throw new InvalidInputError(`${name} must be a positive integer`);
  }
  return value;
}
