import { errorMessage, isIdemError, type RecordInspection, settleWithin } from '@idem/core';
import {
  type CliCommand,
  echoed,
  parseCommand,
  shown,
  USAGE,
  UsageError,
  type UsageErrorCode,
} from './args.js';
import { type OpenedStore, openStore } from './open-store.js';

/** Exit codes of the `idem` command. */
export const EXIT = {
  /** The action was done (or the record shown). */
  ok: 0,
  /**
   * The store failed, could not be reached or did not answer in time: a `release` or `delete`
   * that was sent may still have been applied (inspect the key).
   */
  storeError: 1,
  /** The command line is wrong; nothing was sent. */
  usage: 2,
  /** No live record at that key. */
  notFound: 3,
  /** `release` of a record that is not in progress (completed or released): left as it is. */
  notInProgress: 4,
  /**
   * `release --owner/--fence` of a record that another execution holds now (it took the key
   * over since `inspect`), or `delete` of a record that changed after the command read it (a
   * retry took it over, its execution completed): left as it is.
   */
  changed: 5,
  /**
   * `delete` of an in-progress record whose lease is live, without `--force`: left as it is
   * (its execution may still be running; `release --owner/--fence` frees it).
   */
  inProgress: 6,
} as const;

/** Where the command writes: the process's streams by default. */
export interface CliIo {
  out(line: string): void;
  err(line: string): void;
}

const processIo: CliIo = {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
};

/**
 * A deadline as a date; one past the last date JavaScript can show (year 275760: an app's
 * `retentionMs: Number.MAX_SAFE_INTEGER` keeps a record until epoch ms 2^53 - 1) as its ms.
 */
const iso = (ms: number) => {
  const date = new Date(ms);
  return Number.isNaN(date.getTime()) ? `epoch ms ${ms} (past year 275760)` : date.toISOString();
};

/**
 * A string the store holds (an owner, a fingerprint), for a terminal: control characters
 * (an escape sequence, a carriage return that would draw another line over this one) and
 * invisible direction marks are shown as `\uXXXX` instead of acting on the operator's screen.
 * `backslashes` false leaves `\` as it is: for a message that echoes the operator's input (a
 * key, a `--scope`), whose quoted hints are to be copied as shown.
 */
function printable(text: string, backslashes = true): string {
  let shown = '';
  for (const ch of text) {
    const c = ch.charCodeAt(0);
    if (ch === '\\' && backslashes) shown += '\\\\';
    else if (c < 0x20 || (c >= 0x7f && c <= 0x9f) || DIRECTION_MARKS.has(c))
      shown += `\\u${c.toString(16).padStart(4, '0')}`;
    else shown += ch;
  }
  return shown;
}

// Invisible marks that reorder what the terminal draws, and the Unicode line separators.
const DIRECTION_MARKS = new Set([
  0x061c, 0x200e, 0x200f, 0x2028, 0x2029, 0x202a, 0x202b, 0x202c, 0x202d, 0x202e, 0x2066, 0x2067,
  0x2068, 0x2069,
]);

/**
 * `value` as one JSON line whose characters cannot act on a terminal either: JSON escapes the
 * C0 controls, and here DEL, the C1 controls (U+009B is a CSI on some terminals) and the
 * direction marks are escaped too (`\u009b`: the same string once parsed).
 */
function jsonLine(value: unknown): string {
  return JSON.stringify(value).replace(
    /[\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g,
    (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

const inSeconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

function describeRecord(key: string, r: RecordInspection): string[] {
  const lease =
    r.status === 'in_progress'
      ? r.leaseUntil > r.now
        ? `live until ${iso(r.leaseUntil)} (${inSeconds(r.leaseUntil - r.now)} left)`
        : `passed at ${iso(r.leaseUntil)} (${inSeconds(r.now - r.leaseUntil)} ago; the next acquire takes it over)`
      : `-`;
  return [
    `storage key  ${key}`,
    `status       ${r.status}`,
    `owner        ${printable(r.owner)}`,
    `fence        ${r.fence}`,
    `lease        ${lease}`,
    `retained     until ${iso(r.expiresAt)} (${inSeconds(r.expiresAt - r.now)} left)`,
    `outcome      ${r.outcomeBytes} bytes`,
    `fingerprint  ${printable(r.fingerprint)}`,
  ];
}

/** What a `delete` forgot, as read just before it. */
function forgotten(
  was: Pick<RecordInspection, 'status' | 'owner' | 'fence' | 'outcomeBytes'>,
): string {
  const at = `as read just before: fence ${was.fence}`;
  if (was.status === 'completed')
    return `it held a completed outcome (${was.outcomeBytes} bytes, ${at}): the next request with this key executes again`;
  if (was.status === 'in_progress')
    return `it was in progress (owner ${printable(was.owner)}, ${at}): that execution can no longer complete, and the next request with this key executes again, possibly while it still runs`;
  return `it was a released key (${at}): nothing had been recorded under it`;
}

/**
 * What `--json` prints in `error.code`: exactly when the exit code is not 0, the one JSON
 * object a run prints on stdout has an `error` member `{ code, message }`.
 */
export type CliErrorCode =
  /** Exit 2: the command line is wrong (an unknown option, no scope, a bad key). */
  | 'usage'
  /** Exit 2: the `--store` URL is not a URL, names an unknown store, or lacks a table. */
  | 'bad_store_url'
  /** Exit 1: the store could not be reached or did not answer in time. */
  | 'store_unavailable'
  /** Exit 1: the whole command took longer than `--timeout-ms`. */
  | 'timeout'
  /** Exit 1: the store answered with an error (a missing table, a database it has not). */
  | 'store_error'
  /** Exit 3: no live record at that key. */
  | 'not_found'
  /** Exit 4: `release` of a record that is not in progress. */
  | 'not_in_progress'
  /**
   * Exit 5: `release --owner/--fence` of a record another execution holds now, or `delete` of
   * a record that changed after the command read it.
   */
  | 'changed'
  /** Exit 6: `delete` of an in-progress record whose lease is live, without `--force`. */
  | 'in_progress';

const failure = (code: CliErrorCode, message: string) => ({ error: { code, message } });

async function act(
  command: CliCommand,
  opened: OpenedStore,
  io: CliIo,
  gaveUp: () => boolean,
): Promise<number> {
  // Once the command gave up (`--timeout-ms`) it sends nothing more: a `delete` whose
  // `inspect` answered late is not sent after the operator was told the command ended.
  const admin: OpenedStore['admin'] = new Proxy(opened.admin, {
    get(target, name, receiver) {
      const value = Reflect.get(target, name, receiver);
      if (typeof value !== 'function') return value;
      return (...args: unknown[]) => {
        if (gaveUp()) return Promise.reject(new GaveUpError('gave up'));
        return Reflect.apply(value, target, args);
      };
    },
  });
  const key = command.storageKey;
  const print = (json: unknown, text: string[]) => {
    if (command.json) io.out(jsonLine(json));
    else for (const line of text) io.out(printable(line, false));
  };
  const noRecord = `no record at ${key}`;
  if (command.action === 'inspect') {
    const record = await admin.inspect(key);
    if (!record) {
      print({ storageKey: key, found: false, ...failure('not_found', noRecord) }, [noRecord]);
      return EXIT.notFound;
    }
    print({ storageKey: key, found: true, ...record }, describeRecord(key, record));
    return EXIT.ok;
  }
  if (command.action === 'release') {
    const { expected } = command;
    const result = await admin.forceRelease(key, expected);
    if (result.ok) {
      print({ storageKey: key, ...result }, [
        `released ${key}: fence is now ${result.fence}; the execution of owner ${printable(result.previousOwner)} can no longer complete`,
      ]);
      return EXIT.ok;
    }
    if (result.reason === 'changed') {
      const wanted = [
        // As typed, bounded as a usage error's echo: an owner pasted by mistake (a log line).
        ...(expected?.owner === undefined ? [] : [`owner ${printable(echoed(expected.owner))}`]),
        ...(expected?.fence === undefined ? [] : [`fence ${expected.fence}`]),
      ].join(', ');
      const message = `${key} is no longer the execution you gave (${wanted}): owner ${printable(result.owner)} holds it now at fence ${result.fence}; left as it is (inspect it again before releasing)`;
      print({ storageKey: key, ...result, ...failure('changed', message) }, [message]);
      return EXIT.changed;
    }
    const message =
      result.reason === 'not_found'
        ? noRecord
        : `${key} is not in progress: left as it is (delete forgets a completed outcome)`;
    print({ storageKey: key, ...result, ...failure(result.reason, message) }, [message]);
    return result.reason === 'not_found' ? EXIT.notFound : EXIT.notInProgress;
  }
  // What the delete forgets, read just before it: for the operator's record of what they
  // undid, and the record the store deletes only while it is still that one.
  const before = await admin.inspect(key);
  const nothingThere = () => {
    print({ storageKey: key, deleted: false, ...failure('not_found', noRecord) }, [noRecord]);
    return EXIT.notFound;
  };
  // Nothing sent when nothing was there: a request that takes the key in between keeps it.
  if (!before) return nothingThere();
  // A live execution is not deleted on a guess: it may still be running, and the next request
  // would execute again beside it.
  if (before.status === 'in_progress' && before.leaseUntil > before.now && !command.force) {
    const { owner, fence, leaseUntil } = before;
    const message = `${key} is in progress (owner ${printable(owner)}, fence ${fence}, lease live until ${iso(leaseUntil)}): left as it is; to free a stuck execution, release it with --owner and --fence, or give --force to delete it anyway (that execution can no longer complete, and the next request executes again, possibly while it still runs)`;
    print(
      {
        storageKey: key,
        deleted: false,
        status: 'in_progress',
        owner,
        fence,
        leaseUntil,
        ...failure('in_progress', message),
      },
      [message],
    );
    return EXIT.inProgress;
  }
  const { status, owner, fence, outcomeBytes } = before;
  const was = { status, owner, fence, outcomeBytes };
  // Deleted only while the record is still the one read (decided in the store's atomic step):
  // a retry that took a released or lapsed key over in between keeps running.
  const result = await admin.delete(key, { status, owner, fence });
  if (result.reason === 'changed') {
    const message = `${key} changed since it was read (${status}, owner ${printable(owner)}, fence ${fence}): it is ${result.status} now, owner ${printable(result.owner)} at fence ${result.fence}; left as it is (inspect it again before deleting)`;
    print({ storageKey: key, ...result, was, ...failure('changed', message) }, [message]);
    return EXIT.changed;
  }
  if (!result.deleted) return nothingThere();
  print({ storageKey: key, deleted: true, was }, [`deleted ${key}`, forgotten(was)]);
  return EXIT.ok;
}

/** The command's own time limit (`--timeout-ms`) passed. */
class GaveUpError extends Error {}

/** `--json` on the command line, also when the rest of it cannot be parsed. */
const wantsJson = (argv: readonly string[]) => argv.includes('--json');

/**
 * Runs one `idem` command line (`argv` without `node` and the script) and answers its exit
 * code (see {@link EXIT}). Never throws; bounded by `--timeout-ms`.
 */
export async function runCli(argv: string[], io: CliIo = processIo): Promise<number> {
  const json = wantsJson(argv);
  const usage = (error: UsageError | Error, code: UsageErrorCode = 'usage') => {
    if (json) io.out(jsonLine(failure(code, error.message)));
    else io.err(`idem: ${printable(error.message, false)}\n\n${USAGE}`);
    return EXIT.usage;
  };
  let command: CliCommand;
  try {
    command = parseCommand(argv);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    return usage(error, error.code);
  }
  let opened: OpenedStore | undefined;
  // A release or delete already sent may still be applied after the command gave up (a
  // store that answers late, a statement waiting for a row lock): say so, never "nothing done".
  const mayApply =
    command.action === 'inspect'
      ? ''
      : `; the ${command.action} may still be applied once the store answers: inspect the key before acting again`;
  const timedOut = () =>
    new GaveUpError(`gave up after ${command.timeoutMs} ms (--timeout-ms)${mayApply}`);
  // Set when `--timeout-ms` passed: from then on the work left behind the answer sends and
  // prints nothing (one answer a run: one JSON object under `--json`), and a store it opened
  // late is closed.
  let gaveUp = false;
  const late: CliIo = {
    out: (line) => {
      if (!gaveUp) io.out(line);
    },
    err: (line) => {
      if (!gaveUp) io.err(line);
    },
  };
  try {
    const work = (async () => {
      const store = await openStore(command);
      if (gaveUp) {
        await store.close().catch(() => undefined);
        throw new GaveUpError('gave up');
      }
      opened = store;
      return act(command, store, late, () => gaveUp);
    })();
    return await settleWithin(work, command.timeoutMs, {
      onTimeout: () => {
        gaveUp = true;
        return timedOut();
      },
      unref: true,
    });
  } catch (error) {
    if (error instanceof UsageError) return usage(error, error.code);
    // A store refusing its options (a table name, a prefix) before sending anything: usage.
    if (isIdemError(error) && error.code === 'INVALID_INPUT') return usage(error);
    const message = errorMessage(error);
    const cause = error instanceof Error && error.cause ? errorMessage(error.cause) : '';
    const why = cause && !message.includes(cause) ? `${message} (${cause})` : message;
    const line = `${command.action} failed on ${opened?.describe ?? shown(command.store)}: ${why}`;
    if (json) {
      const code: CliErrorCode =
        error instanceof GaveUpError
          ? 'timeout'
          : isIdemError(error) && error.code === 'STORE_UNAVAILABLE'
            ? 'store_unavailable'
            : 'store_error';
      io.out(jsonLine(failure(code, line)));
    } else io.err(`idem: ${printable(line, false)}`);
    return EXIT.storeError;
  } finally {
    // Closing is bounded too: a pool still opening a connection to a silent server would wait
    // out its own connection timeout. It goes on in the background (its timers unref'd).
    const closing = opened?.close().catch(() => undefined);
    if (closing)
      await settleWithin(closing, CLOSE_WAIT_MS, {
        onTimeout: () => new GaveUpError('close'),
        unref: true,
      }).catch(() => undefined);
  }
}

/** Longest wait for the store's connections to close once the command is answered. */
const CLOSE_WAIT_MS = 250;
