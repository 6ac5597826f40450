import type { Clock } from '../clock.js';
import { InvalidInputError, OutcomeTooLargeError, quotedInput, shownInput } from '../errors.js';

/** Longest timer delay Node honours (a longer one fires after 1 ms). */
export const MAX_TIMER_MS = 2_147_483_647;

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
 * A duration in ms from a store call: finite, non-negative, at most `max` (by default
 * `Number.MAX_SAFE_INTEGER`, past which no deadline could be stored exactly). Otherwise
 * `InvalidInputError`, before anything is sent.
 */
export function checkDuration(name: string, value: unknown, max = Number.MAX_SAFE_INTEGER): number {
  if (!(typeof value === 'number' && Number.isFinite(value) && value >= 0 && value <= max)) {
    throw new InvalidInputError(
      max === Number.MAX_SAFE_INTEGER
        ? `${name} must be a non-negative number of ms, at most Number.MAX_SAFE_INTEGER`
        : `${name} must be a finite, non-negative number of ms`,
    );
  }
  return value;
}

/** {@link checkDuration}, rounded up to a whole ms, as decimal text (a script or SQL argument). */
export function durationText(name: string, value: unknown): string {
  return String(Math.ceil(checkDuration(name, value)));
}

/** A positive safe integer option (a size, a count); `InvalidInputError` otherwise. */
export function checkPositiveInteger(name: string, value: unknown): number {
  if (!(typeof value === 'number' && Number.isSafeInteger(value) && value > 0)) {
    throw new InvalidInputError(`${name} must be a positive integer`);
  }
  return value;
}

/** A positive whole number of ms that drives a timer (at most 2^31 - 1, which Node honours). */
export function checkTimerMs(name: string, value: unknown): number {
  if (
    !(
      typeof value === 'number' &&
      Number.isSafeInteger(value) &&
      value > 0 &&
      value <= MAX_TIMER_MS
    )
  ) {
    throw new InvalidInputError(
      `${name} must be a positive integer number of ms, at most ${MAX_TIMER_MS}`,
    );
  }
  return value;
}

/**
 * An outcome handed to `complete`: a `Uint8Array` (a `Buffer` is one), from any realm, of at
 * most `maxOutcomeBytes` (`OutcomeTooLargeError` before anything is written).
 */
export function checkOutcome(
  value: unknown,
  maxOutcomeBytes = Number.POSITIVE_INFINITY,
): Uint8Array {
  if (!(ArrayBuffer.isView(value) && typedArrayTag?.call(value) === 'Uint8Array')) {
    throw new InvalidInputError('An outcome must be a Uint8Array');
  }
  const outcome = value as Uint8Array;
  if (outcome.byteLength > maxOutcomeBytes) {
    throw new OutcomeTooLargeError(outcome.byteLength, maxOutcomeBytes);
  }
  return outcome;
}

/** What {@link checkStoreString} accepts. */
export interface StoreStringRules {
  /** Longest accepted, in UTF-16 code units. @default no limit */
  maxLength?: number;
  /** Accept `''`. @default false */
  allowEmpty?: boolean;
  /** Accept U+0000 (a PostgreSQL `text` cannot hold it). @default true */
  allowNul?: boolean;
  /** Refuse lone surrogates (any service that stores UTF-8). @default true */
  wellFormed?: boolean;
  /** What else the string must satisfy, said in the message (e.g. no braces). */
  extra?: { test(value: string): boolean; says: string };
}

/**
 * A key, owner token or fingerprint the service stores as it is: a well-formed string (a
 * client sending UTF-8 turns every lone surrogate into U+FFFD, so two different malformed
 * strings would be one), within the rules. `InvalidInputError` otherwise.
 */
export function checkStoreString(
  name: string,
  value: unknown,
  rules: StoreStringRules = {},
): string {
  const {
    maxLength = Number.POSITIVE_INFINITY,
    allowEmpty = false,
    allowNul = true,
    wellFormed = true,
  } = rules;
  if (
    typeof value !== 'string' ||
    (!allowEmpty && value.length === 0) ||
    value.length > maxLength ||
    (wellFormed && !value.isWellFormed()) ||
    (!allowNul && value.includes('\0')) ||
    (rules.extra !== undefined && !rules.extra.test(value))
  ) {
    const parts = [
      `${name} must be a ${allowEmpty ? '' : 'non-empty, '}${wellFormed ? 'well-formed ' : ''}string`,
      allowNul ? '' : ' without NUL',
      rules.extra ? `, ${rules.extra.says}` : '',
      maxLength === Number.POSITIVE_INFINITY
        ? ''
        : `, at most ${maxLength} UTF-16 code units (a character outside the Basic Multilingual Plane, an emoji, counts two)`,
    ];
    throw new InvalidInputError(parts.join(''));
  }
  return value;
}

/** Throws `InvalidInputError` unless `clock` has a `now()` method. */
export function checkClock(clock: unknown): Clock {
  if (typeof (clock as Clock | null)?.now !== 'function') {
    throw new InvalidInputError('clock must be an object with a now() method');
  }
  return clock as Clock;
}

/**
 * The clock's time in whole ms, rounded down (as `Date.now()` and the server clocks of the
 * Redis and PostgreSQL stores read): a clock with a fraction (`performance.timeOrigin +
 * performance.now()`, the memory store's default; a user's) would otherwise make every
 * deadline written from it fractional. Judged against whole-ms deadlines, the rounded reading
 * says what the exact one says (`floor(t) >= d` exactly when `t >= d`). `InvalidInputError`
 * when it is not a finite number (a NaN never expires).
 */
export function readClock(clock: Clock): number {
  const now = clock.now();
  if (!(typeof now === 'number' && Number.isFinite(now))) {
    throw new InvalidInputError(`The clock returned an invalid time: ${shownInput(now)}`);
  }
  return Math.floor(now);
}

/**
 * A fresh owner token for an operator's forced release: no executor holds it, so every
 * owner-checked write of the cut-off execution answers `not_owner`.
 */
export function forcedReleaseOwner(): string {
  return `idem-admin:${crypto.randomUUID()}`;
}

/**
 * The message for the first name of `value` (an options object) that is not one of `known`,
 * naming the near one, or undefined when every name is known: a misspelt option
 * (`retention`, `maxAttempt`) would otherwise take its default without a word. A name set to
 * `undefined` says nothing and passes (options spread from another object). Each package
 * throws it as its own error type.
 */
/** A name spelled as options are: shown unquoted in {@link unknownOptionMessage}. */
const OPTION_NAME = /^[A-Za-z0-9_$.-]{1,64}$/;

export function unknownOptionMessage(
  prefix: string,
  value: object,
  known: Readonly<Record<string, true>>,
  library: string,
): string | undefined {
  for (const name of Object.keys(value)) {
    if (Object.hasOwn(known, name) || (value as Record<string, unknown>)[name] === undefined)
      continue;
    const lower = name.toLowerCase();
    const near = Object.keys(known).find((option) => {
      const candidate = option.toLowerCase();
      return candidate === lower || candidate.startsWith(lower) || lower.startsWith(candidate);
    });
    // A name as options are spelled is shown as it is; any other (past the quoting bound, or
    // with a space, a quote, a newline or a control character that could forge a log line)
    // is quoted and cut.
    const shownName = OPTION_NAME.test(name) ? name : quotedInput(name);
    return `${prefix}${shownName} is not an option of ${library}${near ? ` (did you mean ${prefix}${near}?)` : ''}`;
  }
  return undefined;
}
