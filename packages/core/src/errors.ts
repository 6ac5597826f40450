/**
 * The codes of the errors `@idem/core` raises (and store adapters raise through it). Callers
 * branch on `code`, never on the message text, which may change between releases. Another
 * package's errors extend {@link IdemError} with codes of their own, declared in that package
 * (`@idem/client`'s `IdemClientErrorCode`).
 */
export type IdemErrorCode =
  | 'INVALID_KEY'
  | 'INVALID_INPUT'
  | 'NOT_CANONICAL'
  | 'IN_PROGRESS'
  | 'MISMATCH'
  | 'LEASE_LOST'
  | 'STORE_UNAVAILABLE'
  | 'STORE_FULL'
  | 'OUTCOME_TOO_LARGE'
  | 'OUTCOME_CORRUPT'
  | 'OUTCOME_NOT_RECORDED'
  | 'REPLAYED_FAILURE';

/**
 * Mark of {@link IdemError}'s prototype, registered globally (`Symbol.for`): the errors of
 * another copy of `@idem/core` in the process carry it too.
 */
const IDEM_ERROR = Symbol.for('@idem/core.IdemError');

/**
 * Mark of each core error class's own prototype: its name, as a string a minifier keeps
 * (registered globally: another copy's classes carry it too).
 */
const IDEM_CLASS = Symbol.for('@idem/core.IdemError.class');

/** `proto`'s own IDEM_CLASS mark, if any (never throws: a hostile proxy has none). */
function classMark(proto: unknown): string | undefined {
  try {
    if ((typeof proto !== 'object' && typeof proto !== 'function') || proto === null)
      return undefined;
    const mark = Object.getOwnPropertyDescriptor(proto, IDEM_CLASS)?.value;
    return typeof mark === 'string' ? mark : undefined;
  } catch {
    return undefined;
  }
}

function markClass(cls: { prototype: object }, name: string): void {
  Object.defineProperty(cls.prototype, IDEM_CLASS, { value: name });
}

/**
 * Marks `cls`, an idem package's subclass of {@link IdemError} (`@idem/client`'s
 * `IdemClientError`), as core's own classes are marked: by its name, as a string a minifier
 * keeps. `instanceof cls` then recognises the errors of this class made by another copy of
 * the package (its CommonJS build beside the ES module one) by that mark, and no longer an
 * app's class that is merely named the same (built on another copy of core); its errors are
 * named `name` whatever a minifier renamed the class to. Once, at the class's definition.
 * @internal for the packages of idem
 */
export function markErrorClass(
  cls: abstract new (...args: never[]) => IdemError<string>,
  name: string,
): void {
  markClass(cls, name);
}

/**
 * Base class of every error idem raises. `cause` carries the underlying error, if any. `C` is
 * the union of codes of the package that raises it: core's {@link IdemErrorCode} by default.
 *
 * `instanceof` recognises the errors of another copy of `@idem/core` too (the CommonJS build
 * beside the ES module one, two installed versions): an error of another copy is an instance
 * of this copy's class of the same name (`StoreFullError`, or `IdemError` for any of them).
 * So a store built on one copy and an engine or adapter on another agree on what a store's
 * error means (a full store stays `STORE_FULL`, an outage is retried as one).
 */
export class IdemError<C extends string = IdemErrorCode> extends Error {
  /** Stable discriminant. */
  readonly code: C;
  /**
   * Set only on the error `execute` throws when it could not record a success about which the
   * outcome policy (`isFinal`) threw (or answered a Promise): what the policy threw, which
   * `execute` throws once such a success is recorded. The error itself is the recording's
   * (`STORE_UNAVAILABLE`, `LEASE_LOST`, `OUTCOME_NOT_RECORDED`...), as without a policy fault.
   * Not enumerable, as `cause`.
   */
  declare policyError?: unknown;
  /**
   * Set only on the error `execute` throws when the operation failed and the outcome policy
   * (`isFinal`) threw about that failure (or answered a Promise): the operation's own error,
   * on a copy of what the policy threw (see the README). Typed here for the policy's
   * `InvalidInputError`; any object a policy throws carries it the same way. Not enumerable,
   * as `cause`: `JSON.stringify` of the error leaves it out.
   */
  declare operationError?: unknown;

  constructor(code: C, message: string, options?: { cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    // A core class's name from its mark: a bundle minified without keepNames renames the
    // class (`se` for InvalidKeyError), and the name is what logs show and a recorded failure
    // keeps (the corerev3 review). Another class (an app's, another package's) by its own.
    this.name = classMark(new.target.prototype) ?? new.target.name;
  }

  static override [Symbol.hasInstance](value: unknown): boolean {
    // biome-ignore lint/complexity/noThisInStatic: `this` is the class `instanceof` asks about (IdemError or a subclass, which inherits this method), not IdemError.
    // biome-ignore lint/complexity/noUselessThisAlias: named once for both uses below.
    const asked = this;
    if (Function.prototype[Symbol.hasInstance].call(asked, value)) return true;
    if ((typeof value !== 'object' && typeof value !== 'function') || value === null) return false;
    // This copy's own INVALID_INPUT that is a RangeError or TypeError too: told by its class,
    // not by names, which a minifier may have changed in this copy (esbuild --minify without
    // keepNames renames InvalidInputError, while that error's class keeps the name set below).
    if (isBuiltinInput(value))
      return asked.prototype === ownPrototype || asked.prototype === ownInputPrototype;
    // Another copy's error: a class of this one's name on its prototype chain, at or below
    // that copy's IdemError prototype (the marked one). Bounded: prototype chains are short,
    // and a proxy's traps are not called for more than that walk.
    // A core class of this copy and of the other carry their names as a mark (IDEM_CLASS), which
    // a minifier leaves alone: matched by it, not by names, which two minified bundles may give
    // to different classes (`En` for InProgressError in one, MismatchError in the other). An
    // older copy's errors by constructor names (to the mark's for a core class asked about), an
    // app's own class asked about by its name, as before.
    const askedMark = classMark(asked.prototype);
    let named = false;
    let marked = false;
    let markMatch = false;
    let depth = 0;
    for (
      let proto: object | null = Object.getPrototypeOf(value);
      proto !== null && depth < 64;
      proto = Object.getPrototypeOf(proto), depth++
    ) {
      const mark = classMark(proto);
      if (mark !== undefined) {
        marked = true;
        if (mark === askedMark) markMatch = true;
      }
      if (!named && Object.hasOwn(proto, 'constructor'))
        named = nameIs(proto, askedMark ?? asked.name);
      // This copy's own IdemError: the native check above already said no (an app's class
      // of the same name, built on this copy, is not core's).
      if (proto === ownPrototype) return false;
      if (Object.hasOwn(proto, IDEM_ERROR))
        return askedMark !== undefined && marked ? markMatch : named;
    }
    return false;
  }
}
Object.defineProperty(IdemError.prototype, IDEM_ERROR, { value: true });
// Named outside the class: a reference to the class inside its own body makes the bundler
// rename it (`class _IdemError`), and the class names are what copies are matched by.
const ownPrototype: object = IdemError.prototype;

/** Whether `proto`'s own constructor is a function named `name` (never throws: a hostile getter says no). */
function nameIs(proto: object, name: string): boolean {
  try {
    const ctor = (proto as { constructor?: unknown }).constructor;
    return typeof ctor === 'function' && ctor.name === name;
  } catch {
    return false;
  }
}

/** Whether `value` is an error of this copy's {@link invalidRangeInput} or {@link invalidTypeInput}. */
function isBuiltinInput(value: object): boolean {
  return value instanceof RangeInvalidInputError || value instanceof TypeInvalidInputError;
}

/** The idempotency key is missing, empty, too long or contains non printable-ASCII characters. */
export class InvalidKeyError extends IdemError {
  constructor(message: string) {
    super('INVALID_KEY', message);
  }
}

/** An option or argument is out of range or of the wrong type. */
export class InvalidInputError extends IdemError {
  constructor(message: string) {
    super('INVALID_INPUT', message);
  }
}

const ownInputPrototype: object = InvalidInputError.prototype;
// Pinned: the errors of invalidRangeInput and invalidTypeInput answer this class as their
// `constructor`, and an older copy of core (before the class marks) matches them by that
// constructor's name, which a minifier would otherwise change.
Object.defineProperty(InvalidInputError, 'name', {
  value: 'InvalidInputError',
  configurable: true,
});

/**
 * An `InvalidInputError` (code `INVALID_INPUT`; `instanceof InvalidInputError` and `IdemError`,
 * `isIdemError`) that is also a `RangeError`: thrown where the library threw a plain
 * `RangeError` for a bad option before it had typed errors (`createAdmission`'s options,
 * `ManualClock`), so that `catch (e) { if (e instanceof RangeError) ... }` still catches it.
 * Its `name` stays `'RangeError'`, as the error it replaces had it.
 * @internal for the packages of idem that used to throw a `RangeError`
 */
export function invalidRangeInput(message: string): InvalidInputError & RangeError {
  const error = new RangeInvalidInputError(message);
  // The stack starts at the check that refused the value, not here (where the runtime can).
  captureStack(error, invalidRangeInput);
  return error as unknown as InvalidInputError & RangeError;
}

/**
 * {@link invalidRangeInput} for a refusal that was a `TypeError` (`@idem/fastify`'s
 * `bodyTimeoutMs`, a route's `config.idempotency`): an `InvalidInputError` that is still a
 * `TypeError`, named `'TypeError'`. `cause`: the refusal it reports, if any.
 * @internal for the packages of idem that used to throw a `TypeError`
 */
export function invalidTypeInput(
  message: string,
  options?: { cause?: unknown },
): InvalidInputError & TypeError {
  const error = new TypeInvalidInputError(message, options);
  captureStack(error, invalidTypeInput);
  return error as unknown as InvalidInputError & TypeError;
}

function captureStack(error: object, below: unknown): void {
  (Error as { captureStackTrace?: (target: object, below: unknown) => void }).captureStackTrace?.(
    error,
    below,
  );
}

/**
 * A refused value for an error message: a number, boolean, `null` or `undefined` as written,
 * anything else by its type only (a Symbol or a throwing `toString` cannot make the message
 * fail, and an object's contents stay out of it).
 * @internal
 */
export function shownValue(value: unknown): string {
  return typeof value === 'number' || typeof value === 'boolean' || value == null
    ? String(value)
    : `a ${typeof value}`;
}

/** How many characters of a refused string {@link quotedInput} quotes by default. */
const QUOTED_INPUT_CHARS = 64;

/**
 * A refused string for an error message, quoted as JSON: in full up to `max` characters
 * (UTF-16 code units), else its first `max` (never half of a surrogate pair) followed by
 * `… (N chars)`, so that a message stays short whatever a caller passed (a 10 MB string, a
 * body handed where a name was expected). Every idem package quotes user strings with it.
 * @internal
 */
export function quotedInput(text: string, max = QUOTED_INPUT_CHARS): string {
  if (text.length <= max) return JSON.stringify(text);
  return `${JSON.stringify(text.slice(0, cutAt(text, max)))}… (${text.length} chars)`;
}

/**
 * Where to cut `text` to at most `max` code units: never between the halves of a pair.
 * @internal
 */
export function cutAt(text: string, max: number): number {
  const last = text.charCodeAt(max - 1);
  return last >= 0xd800 && last <= 0xdbff ? max - 1 : max;
}

/**
 * `text` for a message, as it is (not quoted) up to `max` characters (UTF-16 code units), else
 * its first `max` (never half of a surrogate pair) followed by `… (N chars)`: for text a
 * message shows as written (a path, a recorded failure's message, a command-line argument
 * as typed) that may be anyone's and of any length. {@link quotedInput} quotes it instead.
 * @internal
 */
export function boundedText(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, cutAt(text, max))}… (${text.length} chars)`;
}

/** How many characters of a path a {@link NotCanonicalError}'s message shows. */
const SHOWN_PATH_CHARS = 256;

/**
 * {@link shownValue}, but a string is quoted (bounded, see {@link quotedInput}): for a value
 * whose text says what was wrong with it (a clock that answered a date string).
 * @internal
 */
export function shownInput(value: unknown): string {
  return typeof value === 'string' ? quotedInput(value) : shownValue(value);
}

// `RangeError`'s (`TypeError`'s) prototype chain cannot also hold `IdemError.prototype`, so
// the errors of `invalidRangeInput` and `invalidTypeInput` take the shape by which
// `IdemError`'s `instanceof` recognises the errors of another copy of `@idem/core` (see
// `Symbol.hasInstance` above): a class named `InvalidInputError` on a class named `IdemError`
// whose prototype carries the registered mark. Every copy in the process, older ones
// included, then takes it for an `InvalidInputError`, and for no other class of theirs. The
// names are set explicitly: a bundler may rename a class (`_IdemError`), and the names are
// what copies are matched by.
function invalidInputOn(Base: RangeErrorConstructor | TypeErrorConstructor) {
  class BuiltinIdemError extends Base {
    readonly code: IdemErrorCode;

    constructor(code: IdemErrorCode, message: string, options?: { cause?: unknown }) {
      super(message, options?.cause === undefined ? undefined : { cause: options.cause });
      this.code = code;
    }
  }
  Object.defineProperty(BuiltinIdemError, 'name', { value: 'IdemError' });
  Object.defineProperty(BuiltinIdemError.prototype, IDEM_ERROR, { value: true });
  markClass(BuiltinIdemError, 'IdemError');

  class BuiltinInvalidInputError extends BuiltinIdemError {
    constructor(message: string, options?: { cause?: unknown }) {
      super('INVALID_INPUT', message, options);
    }
  }
  Object.defineProperty(BuiltinInvalidInputError, 'name', { value: 'InvalidInputError' });
  markClass(BuiltinInvalidInputError, 'InvalidInputError');
  // `error.constructor` is the public class, not this internal one: `error.constructor ===
  // InvalidInputError`, as for an InvalidInputError made with `new` (the class's own name is
  // pinned below, so a copy matching by names still finds `InvalidInputError` here).
  Object.defineProperty(BuiltinInvalidInputError.prototype, 'constructor', {
    value: InvalidInputError,
    writable: true,
    enumerable: false,
    configurable: true,
  });
  return BuiltinInvalidInputError;
}
const RangeInvalidInputError = invalidInputOn(RangeError);
const TypeInvalidInputError = invalidInputOn(TypeError);

/**
 * Why canonical JSON refused a value: `not_json` for what JSON cannot carry faithfully
 * (a BigInt, a cycle, a Map...), `too_deep` for nesting beyond `MAX_CANONICAL_DEPTH`
 * (a caller fingerprinting a request body may fall back to its raw bytes then).
 */
export type NotCanonicalReason = 'not_json' | 'too_deep';

/** A value handed to canonical JSON cannot be represented in JSON without guessing. */
export class NotCanonicalError extends IdemError {
  /** JSON-pointer-like path to the offending value, e.g. `/body/items/3`. */
  readonly path: string;
  /** What was wrong with the value. */
  readonly reason: NotCanonicalReason;

  constructor(
    message: string,
    path: string,
    reason: NotCanonicalReason = 'not_json',
    options?: { cause?: unknown },
  ) {
    // The path is made of the value's keys, which may be anyone's (a 10 MB key): the message
    // shows its start only, `path` has it whole (the corerev3 review).
    super(
      'NOT_CANONICAL',
      `${message} at ${path === '' ? '(root)' : boundedText(path, SHOWN_PATH_CHARS)}`,
      options,
    );
    this.path = path;
    this.reason = reason;
  }
}

/** Another execution holds a live lease on the key. Retry after `retryAfterMs`. */
export class InProgressError extends IdemError {
  /** How long until the current lease passes, by the store's clock (ms, at least 1). */
  readonly retryAfterMs: number;
  /**
   * Fence of the execution in progress (its stream generation, see `LiveStreams`), when the
   * engine raised it; undefined when it is not known.
   */
  readonly fence: number | undefined;
  /** Storage key of the record in progress, when the engine raised it. */
  readonly storageKey: string | undefined;

  constructor(retryAfterMs: number, found?: { fence: number; storageKey: string }) {
    super('IN_PROGRESS', 'A request with this idempotency key is still being processed');
    this.retryAfterMs = Math.max(1, Math.ceil(retryAfterMs));
    this.fence = found?.fence;
    this.storageKey = found?.storageKey;
  }
}

/** The key was used before with a request whose fingerprint differs. */
export class MismatchError extends IdemError {
  constructor() {
    super('MISMATCH', 'This idempotency key was already used with a different request');
  }
}

/**
 * The execution lost its lease: a heartbeat or the final write found another owner (or no
 * record). The newer owner's record was left untouched.
 */
export class LeaseLostError extends IdemError {
  constructor(message = 'The lease on this idempotency key was lost to another execution') {
    super('LEASE_LOST', message);
  }
}

/** The store failed (network, timeout, server error). `cause` is the store's own error. */
export class StoreUnavailableError extends IdemError {
  /**
   * True when the call was refused before it was sent (an admission limit, a client that
   * refuses commands while disconnected): the store applied nothing, so there is nothing to
   * give back. False when it may have been applied (a timeout, a lost answer).
   */
  readonly unsent: boolean;

  constructor(message: string, options?: { cause?: unknown; unsent?: boolean }) {
    super('STORE_UNAVAILABLE', message, options);
    this.unsent = options?.unsent === true;
  }
}

/** A bounded store is full of live leases and cannot take a new record. */
export class StoreFullError extends IdemError {
  constructor(message: string) {
    super('STORE_FULL', message);
  }
}

/**
 * The encoded outcome exceeds `maxOutcomeBytes` or the store's size limit. The store wrote
 * nothing; the executor then records a not-recorded marker so a retry does not run again.
 */
export class OutcomeTooLargeError extends IdemError {
  readonly size: number;
  readonly limit: number;

  constructor(size: number, limit: number) {
    super('OUTCOME_TOO_LARGE', `Outcome of ${size} bytes exceeds the limit of ${limit} bytes`);
    this.size = size;
    this.limit = limit;
  }
}

/**
 * Why a final outcome was not recorded although the operation ran: `too_large` (over
 * `maxOutcomeBytes` or the store's limit), `not_serializable` (the serializer threw, e.g. a
 * BigInt or a circular value), `store_full` (the store answered `STORE_FULL` at complete),
 * `answered_outside` (the operation ran to its end, but its response had already been answered
 * by something outside the idempotency layer, such as a request-timeout middleware mounted
 * before it: the operation's own result never reached anything that could be recorded, so its
 * outcome is unknown). A build that predates a reason reads a marker with it as `too_large`
 * (still never a second run).
 */
export type NotRecordedReason =
  | 'too_large'
  | 'not_serializable'
  | 'store_full'
  | 'answered_outside';

/**
 * The operation ran, but its outcome could not be recorded; the key holds a small final
 * marker instead, so a retry never runs the operation again. Raised to the caller whose
 * value was not serialisable (with the serializer's error as `cause`), and by every
 * `begin`/`execute` that finds the marker, for the key's retention.
 */
export class OutcomeNotRecordedError extends IdemError {
  readonly reason: NotRecordedReason;
  /** Size of the outcome that did not fit, in bytes, when known. */
  readonly size?: number;
  /** The limit it exceeded, in bytes, when known. */
  readonly limit?: number;

  constructor(
    reason: NotRecordedReason,
    details: { size?: number; limit?: number; cause?: unknown } = {},
  ) {
    super(
      'OUTCOME_NOT_RECORDED',
      `The operation ran, but its outcome was not recorded (${NOT_RECORDED_WHY[reason] ?? reason}); it will not run again for this key`,
      details.cause === undefined ? undefined : { cause: details.cause },
    );
    this.reason = reason;
    if (details.size !== undefined) this.size = details.size;
    if (details.limit !== undefined) this.limit = details.limit;
  }
}

/** How `OutcomeNotRecordedError`'s message names each reason. */
const NOT_RECORDED_WHY: Record<NotRecordedReason, string> = {
  too_large: 'too large',
  not_serializable: 'not serializable',
  store_full: 'store full',
  answered_outside:
    'it ran to its end, but its response was answered outside the idempotency layer, so its outcome is unknown',
};

/**
 * Stored outcome bytes could not be opened or decoded (wrong version, truncated, tampered,
 * sealed for another storage key or with a key not in the keyring): never replayed.
 */
export class OutcomeCorruptError extends IdemError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('OUTCOME_CORRUPT', message, options);
  }
}

/** How many characters of a recorded failure's name a {@link ReplayedFailureError}'s message shows. */
const SHOWN_FAILURE_NAME_CHARS = 128;
/** How many characters of a recorded failure's message a {@link ReplayedFailureError}'s message shows. */
const SHOWN_FAILURE_MESSAGE_CHARS = 1_024;

/**
 * A recorded failure's name or message for the message: as `String` shows it, or its type in
 * parentheses (`(object)`) when `String` cannot convert it (an error's `name` set to `{ toString: 'x' }` is recorded as
 * that object, and every replay threw a `TypeError` instead of the failure, the rev30a review).
 */
function recordedText(value: unknown): string {
  if (typeof value === 'string') return value;
  try {
    return String(value);
  } catch {
    return `(${typeof value})`;
  }
}

/**
 * Replay of a failure that the outcome policy declared final. `stored` holds what was
 * recorded about the original error, whole; the message shows the first 1,024 characters of
 * its message (128 of its name), then its length: a failure recorded with a 10 MB message
 * does not make a 10 MB message (and log line) on every replay.
 */
export class ReplayedFailureError extends IdemError {
  readonly stored: { name: string; message: string; code?: string };

  constructor(stored: { name: string; message: string; code?: string }) {
    super(
      'REPLAYED_FAILURE',
      `Replayed failure: ${boundedText(recordedText(stored.name), SHOWN_FAILURE_NAME_CHARS)}: ${boundedText(
        recordedText(stored.message),
        SHOWN_FAILURE_MESSAGE_CHARS,
      )}`,
    );
    this.stored = stored;
  }
}

// The names as strings: a minifier renames classes, never string literals.
for (const [cls, name] of [
  [IdemError, 'IdemError'],
  [InvalidKeyError, 'InvalidKeyError'],
  [InvalidInputError, 'InvalidInputError'],
  [NotCanonicalError, 'NotCanonicalError'],
  [InProgressError, 'InProgressError'],
  [MismatchError, 'MismatchError'],
  [LeaseLostError, 'LeaseLostError'],
  [StoreUnavailableError, 'StoreUnavailableError'],
  [StoreFullError, 'StoreFullError'],
  [OutcomeTooLargeError, 'OutcomeTooLargeError'],
  [OutcomeNotRecordedError, 'OutcomeNotRecordedError'],
  [OutcomeCorruptError, 'OutcomeCorruptError'],
  [ReplayedFailureError, 'ReplayedFailureError'],
] as const)
  markClass(cls, name);

/**
 * True when `error` is an {@link IdemError} of the given core code; without a code, when it is
 * any idem error (core's, or another package's such as `@idem/client`'s, whose `code` is then
 * that package's).
 */
export function isIdemError<C extends IdemErrorCode>(
  error: unknown,
  code: C,
): error is IdemError<C>;
export function isIdemError(error: unknown): error is IdemError<string>;
export function isIdemError(error: unknown, code?: string): boolean {
  return error instanceof IdemError && (code === undefined || error.code === code);
}
