import { parseArgs } from 'node:util';
import { boundedText, deriveStorageKey, isIdemError, type JsonValue } from '@idem/core';

/** The operator actions, as named on the command line. */
export type CliAction = 'inspect' | 'release' | 'delete';

/** A command line, understood. */
export interface CliCommand {
  action: CliAction;
  /** The storage key the action applies to (derived from key and scope, or given raw). */
  storageKey: string;
  /** Where the store is: `redis://`, `rediss://`, `postgres://`, `postgresql://` or `dynamodb://`. */
  store: URL;
  /** The store's key prefix; `undefined` keeps the store's default. */
  prefix: string | undefined;
  /** PostgreSQL table (`idem_records`) or DynamoDB table (from the URL when not given). */
  table: string | undefined;
  /** Print JSON instead of text. */
  json: boolean;
  /** Longest the whole command may take, in ms. */
  timeoutMs: number;
  /**
   * `release` only: the execution to release (`--owner`, `--fence`, as `inspect` showed
   * them); `undefined` releases whatever is in progress.
   */
  expected: { owner?: string; fence?: number } | undefined;
  /**
   * `--force`: `release` without `--owner`/`--fence` (whatever is in progress), or `delete`
   * of an in-progress record whose lease is live. Without it both are refused.
   */
  force: boolean;
}

// Query parameters a driver may take a credential from (pg reads `?password=`).
const SECRET_PARAM = /pass|secret|token|credential/i;

/** How many characters of what the operator typed a message echoes (see {@link echoed}). */
const ECHO_CHARS = 200;

/**
 * What the operator typed, for a message: as typed up to 200 characters, else its first 200
 * then its length (`… (131072 chars)`), so that an argument pasted by mistake (a whole body,
 * a 128 KB key) never makes a message of its size. Controls are escaped where it is printed.
 */
export function echoed(text: string, max = ECHO_CHARS): string {
  return boundedText(text, max);
}

/** The store URL without its password or credential parameters, for messages (bounded, see {@link echoed}). */
export function shown(url: URL): string {
  const copy = new URL(url.href);
  if (copy.password) copy.password = '***';
  for (const [name, value] of [...copy.searchParams]) {
    if (SECRET_PARAM.test(name)) copy.searchParams.set(name, '***');
    // A URL in a parameter (DynamoDB's `endpoint`) may carry a password of its own.
    else if (/^[a-z][a-z0-9+.-]*:\/\/[^/?#]*@/i.test(value))
      copy.searchParams.set(name, maskedText(value));
  }
  // Masked first, then cut: a cut never leaves part of a password unmasked.
  return echoed(copy.href);
}

/** A `--store` value that is not a URL, with what looks like a password masked. */
export function maskedText(text: string): string {
  return text
    .replace(/(\/\/[^/?#@:]*:)[^/?#@]*@/, '$1***@')
    .replace(/([?&][^=&#]*(?:pass|secret|token|credential)[^=&#]*=)[^&#]*/gi, '$1***');
}

/** What is wrong with a command line: `--json` prints it as `error.code`. */
export type UsageErrorCode = 'usage' | 'bad_store_url';

/** A command line that cannot be run: exit code 2 with this message and the usage. */
export class UsageError extends Error {
  /** `bad_store_url` when the `--store` URL is the problem, else `usage`. */
  readonly code: UsageErrorCode;
  constructor(message: string, code: UsageErrorCode = 'usage') {
    super(message);
    this.code = code;
  }
}

export const USAGE = `Usage: idem <inspect|release|delete> <key> --store <url> <scope> [options]

  <key>                    the client's Idempotency-Key (or, with --storage-key, the storage key)
  --store <url>            redis://host:6379[/db], rediss://..., postgres://user@host/db,
                           dynamodb://<table>?region=<r>[&endpoint=http://host:8000]
Scope (one of; the storage key is derived from it and the key, as @idem/core does):
  --scope <json>           the scope as JSON, e.g. '["tenant-1","POST /charges"]'
  --principal <p> --operation <op>
                           the scope @idem/http uses: ["idem/http/v1", p, op], p a string,
                           op as "POST /orders" (method and matched route)
  --principal-json <json> --operation <op>
                           the same with a principal that is not a string (a number
                           42, an object '{"tenant":"t1"}'), as the app's scope hook returns it
  --global --operation <op>  @idem/http with scope: 'global' (null principal)
  --storage-key            <key> is the storage key itself (64 hex characters)
Options:
  --prefix <p>             the store's keyPrefix (Redis default 'idem:', others '')
  --table <name>           PostgreSQL table (default idem_records); DynamoDB table
  --json                   print JSON
  --timeout-ms <ms>        give up after this long (default 10000)
release needs one of these (the values inspect printed), or --force:
  --owner <token>          release only while the record still has this owner
  --fence <n>              release only while the record still has this fence
  --force                  release: whatever is in progress (it may be a retry that took the
                           key over since you looked); delete: also an in-progress record
                           whose lease is live (its execution may still be running)
Exit codes: 0 done, 1 store error, 2 usage error, 3 no such record, 4 not in progress,
  5 changed (release --owner/--fence: another execution holds the key now),
  6 in progress (delete of a live execution without --force: left as it is)`;

const SCOPE_OPTIONS = ['scope', 'principal', 'principal-json', 'global'] as const;

/** Whether JSON reads `text` as something other than a string (`42`, `true`, `{...}`). */
function jsonNotString(text: string): boolean {
  try {
    return typeof JSON.parse(text) !== 'string';
  } catch {
    return false;
  }
}

function principalOf(values: Record<string, string | boolean | undefined>): JsonValue {
  if (values.global === true) return null;
  const json = values['principal-json'];
  if (typeof json === 'string') {
    let principal: JsonValue;
    try {
      principal = JSON.parse(json) as JsonValue;
    } catch {
      throw new UsageError(`--principal-json must be JSON: ${echoed(json)}`);
    }
    if (principal === null)
      throw new UsageError('--principal-json null is the global scope: give --global');
    return principal;
  }
  const text = String(values.principal);
  // The app's scope hook may return the number 42 or the string "42": they derive two storage
  // keys, and guessing one answers "no record" for the other.
  if (jsonNotString(text))
    throw new UsageError(
      `--principal ${echoed(text)} is ambiguous: give --principal-json ${echoed(text)} if the app's scope hook returns it as JSON (a number, an object), or --principal-json '${echoed(JSON.stringify(text))}' if it returns the string`,
    );
  return text;
}

/**
 * The key as @idem/http keeps it. It reads the header's quoted form ("order-7") as order-7,
 * so a key that starts with a quote is most likely that form pasted from a log, and is
 * refused naming the key it stands for. A quote or a backslash elsewhere is kept: only the
 * quoted form carries one (`"a\"b"` is the key a"b), and this is the key it gave.
 */
function httpKey(key: string, scope: JsonValue): string {
  if (!key.startsWith('"')) return key;
  const unquoted = /^"((?:[^"\\]|\\["\\])*)"$/.exec(key)?.[1]?.replace(/\\(["\\])/g, '$1');
  throw new UsageError(
    `${echoed(key)} starts with a quote: @idem/http reads the header's quoted form "..." as the key inside it${unquoted === undefined ? '' : ` (${echoed(unquoted)})`}; give that key, or, for a key that really starts with a quote, --scope '${echoed(JSON.stringify(scope))}'`,
  );
}

function scopeOf(values: Record<string, string | boolean | undefined>): JsonValue {
  const given = SCOPE_OPTIONS.filter((name) => values[name] !== undefined);
  if (given.length !== 1)
    throw new UsageError(
      'Give exactly one of --scope, --principal, --principal-json or --global (or --storage-key)',
    );
  if (typeof values.scope === 'string') {
    if (values.operation !== undefined)
      throw new UsageError('--operation goes with --principal or --global');
    try {
      return JSON.parse(values.scope) as JsonValue;
    } catch {
      throw new UsageError(`--scope must be JSON: ${echoed(values.scope)}`);
    }
  }
  if (typeof values.operation !== 'string')
    throw new UsageError(
      '--principal, --principal-json and --global need --operation (e.g. "POST /orders")',
    );
  return ['idem/http/v1', principalOf(values), values.operation];
}

/** Parses `argv` (without `node` and the script); throws {@link UsageError}. */
export function parseCommand(argv: string[]): CliCommand {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(argv);
  } catch (error) {
    // Node's message names the option as typed (twice): bounded as a whole.
    throw new UsageError(echoed((error as Error).message, 2 * ECHO_CHARS + 200));
  }
  const { values, positionals, tokens } = parsed;
  // `parseArgs` keeps the last of a repeated option: `--store A ... --store B` would act on B,
  // `--operation` twice on another key than the one read first. Said, never guessed.
  const seen = new Set<string>();
  for (const token of tokens ?? []) {
    if (token.kind !== 'option') continue;
    if (seen.has(token.name))
      throw new UsageError(`--${token.name} is given more than once: give it once`);
    seen.add(token.name);
  }
  const [action, key, ...rest] = positionals;
  if (action !== 'inspect' && action !== 'release' && action !== 'delete')
    throw new UsageError(`Unknown command: ${action === undefined ? '(none)' : echoed(action)}`);
  if (key === undefined || rest.length > 0) throw new UsageError('Give exactly one key');
  if (typeof values.store !== 'string') throw new UsageError('--store is required');
  let store: URL;
  try {
    store = new URL(values.store);
  } catch {
    throw new UsageError(
      `--store is not a URL: ${echoed(maskedText(values.store))}`,
      'bad_store_url',
    );
  }
  const givenTimeout = values['timeout-ms'];
  const timeoutMs = Number(givenTimeout ?? 10_000);
  // Digits only, as `--fence`: `Number` also reads `0x10`, `1e3`, `0b1` and padded spaces.
  if (
    (givenTimeout !== undefined && !/^\d+$/.test(givenTimeout)) ||
    !(Number.isSafeInteger(timeoutMs) && timeoutMs > 0 && timeoutMs <= 2_147_483_647)
  )
    throw new UsageError('--timeout-ms must be a positive whole number of ms');
  let storageKey: string;
  if (values['storage-key'] === true) {
    if (!/^[0-9a-f]{64}$/.test(key))
      throw new UsageError('A storage key is 64 lowercase hex characters');
    if (SCOPE_OPTIONS.some((name) => values[name] !== undefined))
      throw new UsageError('--storage-key takes no scope');
    storageKey = key;
  } else {
    try {
      const scope = scopeOf(values);
      storageKey = deriveStorageKey(scope, values.scope === undefined ? httpKey(key, scope) : key);
    } catch (error) {
      if (isIdemError(error)) throw new UsageError(error.message);
      throw error;
    }
  }
  const expected = expectationOf(action, values);
  const force = values.force === true;
  if (force && action === 'inspect') throw new UsageError('--force goes with release or delete');
  // Without the execution to release, a retry that took the key over since the operator
  // looked would be cut off instead of the stuck one: that takes saying so.
  if (action === 'release' && expected === undefined && !force)
    throw new UsageError(
      'release needs --owner and/or --fence (the values inspect printed), so that it frees only that execution and never a retry that took the key over since; or --force to release whatever is in progress',
    );
  return {
    action,
    storageKey,
    expected,
    force,
    store,
    prefix: values.prefix,
    table: values.table,
    json: values.json === true,
    timeoutMs,
  };
}

/** `--owner` and `--fence`, for `release` only. */
function expectationOf(
  action: CliAction,
  values: Record<string, string | boolean | undefined>,
): CliCommand['expected'] {
  const { owner, fence } = values;
  if (owner === undefined && fence === undefined) return undefined;
  if (action !== 'release') throw new UsageError('--owner and --fence go with release');
  const expected: { owner?: string; fence?: number } = {};
  if (typeof owner === 'string') {
    if (owner.length === 0) throw new UsageError('--owner must not be empty');
    expected.owner = owner;
  }
  if (typeof fence === 'string') {
    const n = Number(fence);
    if (!(/^\d+$/.test(fence) && Number.isSafeInteger(n)))
      throw new UsageError(
        `--fence must be a whole number (the fence inspect printed): ${echoed(fence)}`,
      );
    expected.fence = n;
  }
  return expected;
}

function parse(argv: string[]) {
  return parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    tokens: true,
    options: {
      store: { type: 'string' },
      scope: { type: 'string' },
      principal: { type: 'string' },
      'principal-json': { type: 'string' },
      operation: { type: 'string' },
      global: { type: 'boolean' },
      'storage-key': { type: 'boolean' },
      prefix: { type: 'string' },
      table: { type: 'string' },
      json: { type: 'boolean' },
      'timeout-ms': { type: 'string' },
      owner: { type: 'string' },
      fence: { type: 'string' },
      force: { type: 'boolean' },
    },
  });
}
