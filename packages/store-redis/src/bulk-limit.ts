import { errorMessage, InvalidInputError, OutcomeTooLargeError } from '@idem/core';
import type { Cluster, Redis } from 'ioredis';

/** Redis's default `proto-max-bulk-len`: the largest argument it takes, 512 MiB. */
export const REDIS_DEFAULT_BULK_BYTES = 512 * 1024 * 1024;

/**
 * The lowest `proto-max-bulk-len` Redis accepts (1 MiB): every server takes an argument this
 * long.
 */
export const REDIS_MIN_BULK_BYTES = 1024 * 1024;

/**
 * Room a completion keeps next to the outcome within one Redis argument: the record written
 * is the 42-byte header, the owner token and the fingerprint, then the outcome, and it must
 * still fit one argument wherever Redis moves it as a whole (a Cluster slot migration sends
 * it in one `RESTORE`, with a few bytes of envelope).
 */
export const COMPLETION_OVERHEAD_BYTES = 64 * 1024;

/** The largest `maxOutcomeBytes` a store takes: what a default Redis accepts in one completion. */
export const MAX_OUTCOME_BYTES_LIMIT = REDIS_DEFAULT_BULK_BYTES - COMPLETION_OVERHEAD_BYTES;

/** An outcome of at most this many bytes fits every Redis, whatever its `proto-max-bulk-len`. */
export const ALWAYS_FITS_BYTES = REDIS_MIN_BULK_BYTES - COMPLETION_OVERHEAD_BYTES;

/** `maxOutcomeBytes` checked: a positive integer, at most {@link MAX_OUTCOME_BYTES_LIMIT}. */
export function checkMaxOutcomeBytes(value: unknown): number {
  if (
    !(
      typeof value === 'number' &&
      Number.isSafeInteger(value) &&
      value > 0 &&
      value <= MAX_OUTCOME_BYTES_LIMIT
    )
  ) {
    throw new InvalidInputError(
      `maxOutcomeBytes must be a positive integer, at most ${MAX_OUTCOME_BYTES_LIMIT} (512 MiB, what Redis takes in one argument by default, less ${COMPLETION_OVERHEAD_BYTES} bytes for the rest of the record)`,
    );
  }
  return value;
}

/** Redis refused an argument for its length (then it closes the connection). */
export const isBulkLengthRefusal = (error: unknown): boolean =>
  /Protocol error: invalid bulk length/i.test(errorMessage(error));

/**
 * Redis answered `CONFIG GET` with an error that lasts: the command renamed or disabled (`ERR
 * unknown command`), or not allowed by an ACL (`NOPERM`). Not the replies of a passing state
 * (`BUSY` while a script runs, `LOADING`, `TRYAGAIN`, `MASTERDOWN`, `CLUSTERDOWN`): those are
 * asked again next time, like a failed connection.
 */
const isConfigRefusal = (error: unknown): boolean =>
  error instanceof Error &&
  error.name === 'ReplyError' &&
  !/^(BUSY|LOADING|TRYAGAIN|MASTERDOWN|CLUSTERDOWN|MOVED|ASK|READONLY)\b/.test(error.message);

/** `proto-max-bulk-len` from a `CONFIG GET` reply (a flat array, or a map); undefined if absent. */
function bulkLenOf(reply: unknown): number | undefined {
  let value: unknown;
  if (Array.isArray(reply)) {
    for (let i = 0; i + 1 < reply.length; i += 2) {
      if (String(reply[i]).toLowerCase() === 'proto-max-bulk-len') value = reply[i + 1];
    }
  } else if (reply instanceof Map) {
    value = reply.get('proto-max-bulk-len');
  } else if (typeof reply === 'object' && reply !== null) {
    value = (reply as Record<string, unknown>)['proto-max-bulk-len'];
  }
  const bytes = Number(String(value ?? ''));
  return Number.isSafeInteger(bytes) && bytes > 0 ? bytes : undefined;
}

/**
 * What the server takes in one argument, by its own `CONFIG GET` (on a Cluster, the least of
 * the primaries that answered; it fails only when none did). `undefined` when the reply does
 * not say (a server older than Redis 4).
 */
async function readBulkLimit(client: Redis | Cluster): Promise<number | undefined> {
  const ask = (node: Redis | Cluster) =>
    node.call('CONFIG', 'GET', 'proto-max-bulk-len').then(bulkLenOf);
  const nodes = client.isCluster ? (client as Cluster).nodes('master') : [];
  if (nodes.length === 0) return ask(client);
  const answers = await Promise.allSettled(nodes.map(ask));
  const known: number[] = [];
  let failure: unknown;
  for (const answer of answers) {
    if (answer.status === 'rejected') failure ??= answer.reason;
    else if (answer.value !== undefined) known.push(answer.value);
  }
  if (known.length > 0) return Math.min(...known);
  if (failure !== undefined) throw failure;
  return undefined;
}

/**
 * How long a bound learned from a refusal is kept on a server that refuses `CONFIG` (each
 * outcome above it is refused meanwhile without being sent; past it the next one is sent, and
 * a refusal costs its connection once).
 */
export const LEARNED_BOUND_MS = 5 * 60_000;

/** The server's limit on a completion's outcome; see {@link createOutcomeLimit}. */
export interface OutcomeLimit {
  /**
   * Throws `OutcomeTooLargeError` when an outcome of `size` bytes is more than the server takes
   * in a completion. Resolves at once for a size every Redis takes ({@link ALWAYS_FITS_BYTES});
   * otherwise reads the server's `proto-max-bulk-len` the first time and keeps it. An outcome
   * the kept limit would refuse is judged by the server's setting read again (one read at a
   * time, shared by the completions waiting on it): an operator who raised the limit, or a
   * failover to a server set higher, is seen at the next outcome that needs it, not never.
   */
  check(size: number): Promise<void> | undefined;
  /**
   * A completion of `size` bytes failed with `error`: the error to throw instead, if any
   * (`OutcomeTooLargeError` when Redis refused the outcome for its length). After any failure
   * of an outcome above {@link ALWAYS_FITS_BYTES} the kept limit is read again next time (the
   * server's setting may have changed, or a failover reached another server).
   */
  failed(size: number, error: unknown): OutcomeTooLargeError | undefined;
}

/**
 * The limit Redis puts on a completion's outcome (`proto-max-bulk-len`, less
 * {@link COMPLETION_OVERHEAD_BYTES}), read lazily with `CONFIG GET`, only once an outcome
 * above {@link ALWAYS_FITS_BYTES} comes, and kept; read again before an outcome above it is
 * refused. A server that refuses `CONFIG` for good (a managed Redis that renames or disables
 * it, an ACL) is taken to have Redis's default, and is not asked again; an outcome it still
 * refuses for its length is recognised by Redis's answer, and that bound is kept for
 * {@link LEARNED_BOUND_MS}. A `CONFIG GET` that fails otherwise (the connection, `BUSY` while
 * a script runs, `LOADING`) rejects, and is asked again next time.
 */
export function createOutcomeLimit(client: Redis | Cluster): OutcomeLimit {
  let known: number | undefined;
  let refused = false;
  // Without CONFIG: when a refusal taught the bound `known` (it is forgotten after a while, so
  // a limit raised since is found by sending, at the cost of one refusal).
  let learnedAt = 0;
  let reading: Promise<number> | undefined;
  const read = (): Promise<number> => {
    reading ??= readBulkLimit(client).then(
      (bytes) => {
        reading = undefined;
        known = Math.max(0, (bytes ?? REDIS_DEFAULT_BULK_BYTES) - COMPLETION_OVERHEAD_BYTES);
        return known;
      },
      (error: unknown) => {
        reading = undefined;
        if (!isConfigRefusal(error)) throw error;
        refused = true;
        known = MAX_OUTCOME_BYTES_LIMIT;
        return known;
      },
    );
    return reading;
  };
  const judge = (size: number, limit: number) => {
    if (size > limit) throw new OutcomeTooLargeError(size, limit);
  };
  return {
    check(size) {
      if (size <= ALWAYS_FITS_BYTES) return undefined;
      if (known !== undefined && size <= known) return undefined;
      // Refused by the kept limit, or none kept: ask the server (without CONFIG, the bound a
      // refusal taught is all there is, until it ages out).
      if (refused && known !== undefined) {
        if (Date.now() - learnedAt < LEARNED_BOUND_MS) {
          judge(size, known);
          return undefined;
        }
        known = MAX_OUTCOME_BYTES_LIMIT;
        judge(size, known);
        return undefined;
      }
      return read().then((limit) => judge(size, limit));
    },
    failed(size, error) {
      if (size <= ALWAYS_FITS_BYTES) return undefined;
      if (!isBulkLengthRefusal(error)) {
        // The server may have changed (a failover, CONFIG SET): read its limit again.
        if (!refused) known = undefined;
        return undefined;
      }
      // Redis refused the outcome for its length: it takes less than `size` bytes. Without
      // CONFIG, that bound is all there is to keep; with it, the limit is read again.
      const limit = Math.min(size - 1, known ?? size - 1);
      known = refused ? limit : undefined;
      learnedAt = Date.now();
      return new OutcomeTooLargeError(size, limit);
    },
  };
}
