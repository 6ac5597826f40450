import {
  batchItemKey,
  deriveKey,
  InvalidInputError,
  type JsonValue,
  unknownOptionMessage,
} from '@idem/core';

/** What the item function receives besides the item. */
export interface BatchItemContext {
  /** The item's idempotency key: the same on every run of the same batch. Send it as the key header. */
  key: string;
  /** The item's position in `items`. */
  index: number;
  /** The batch id the key was derived from. */
  batchId: string;
  /** The batch's signal, if one was given. */
  signal: AbortSignal | undefined;
}

/** One item's result: its value, or the error it ended with. */
export type BatchItemResult<R> =
  | { index: number; key: string; ok: true; value: R }
  | { index: number; key: string; ok: false; error: unknown };

/** What {@link runBatch} returns: a result per item, in the order of `items`. */
export interface BatchResult<R> {
  batchId: string;
  results: BatchItemResult<R>[];
}

/** Options of {@link runBatch}. */
export interface RunBatchOptions<T> {
  /**
   * The batch's id. Give the same id to a re-run so that its items get the same keys, and a new
   * id to a new run: with the default, a batch of the same items within the server's retention
   * is the same batch, and its items are replayed rather than executed.
   * @default deriveKey of the items (they MUST then be JSON values), so the same items give the same id
   */
  batchId?: string | null;
  /**
   * The item's own stable key (an order id, a row id); items are then keyed by it instead of
   * their index, so reordering or inserting items between runs keeps each item's key. Keys MUST
   * be strings (`String(order.id)`), unique within the batch; anything else is refused. Needs a
   * {@link batchId} (refused without one: a batch id derived from the items would change with
   * their order and number).
   * `null` counts as not given (the default), as for every option here.
   * @default the item's index
   */
  itemKey?: ((item: T, index: number) => string) | null;
  /** Most items in flight at once. @default 4 */
  concurrency?: number | null;
  /** Aborting stops starting items; items not started end with the abort reason as their error. */
  signal?: AbortSignal | null;
}

/** The names {@link RunBatchOptions} has: any other is refused (a misspelt option). */
const BATCH_OPTION_NAMES: Record<keyof RunBatchOptions<unknown>, true> = {
  batchId: true,
  itemKey: true,
  concurrency: true,
  signal: true,
};

/**
 * Runs `fn` over `items` with bounded concurrency, giving each item an idempotency key derived
 * from the batch id and the item's index or own key. Every item gets a result, value or error;
 * one failure does not sink the batch. Because keys are stable, running the same batch again
 * after a crash re-sends every item with its old key, and a server that recorded an item's
 * outcome replays it instead of executing it again: only unrecorded items run. The batch is
 * `items` as it is at the call: items appended to the array while it runs are not run.
 */
export async function runBatch<T, R>(
  items: readonly T[],
  fn: (item: T, context: BatchItemContext) => Promise<R>,
  options: RunBatchOptions<T> = {},
): Promise<BatchResult<R>> {
  // Refused before any item runs: a missing `fn` would fail every item as if it had been tried.
  if (!Array.isArray(items)) throw new InvalidInputError('items must be an array');
  if (typeof fn !== 'function') throw new InvalidInputError('fn must be a function');
  if (typeof options !== 'object' || options === null)
    throw new InvalidInputError('options must be an object');
  // A misspelt name (`batchID`) would take its default without a word: a batch id derived from
  // the items, and a run meant as a new one replays an earlier run of the same items.
  const unknown = unknownOptionMessage('', options, BATCH_OPTION_NAMES, '@idem/client runBatch');
  if (unknown !== undefined) throw new InvalidInputError(unknown);
  // `null` (a JSON config's empty field) takes the default, as for every other option of the
  // client (`batchId`, `concurrency` and `signal` did already; `itemKey: null` was refused).
  const itemKey = options.itemKey ?? undefined;
  if (itemKey !== undefined && typeof itemKey !== 'function')
    throw new InvalidInputError('itemKey must be a function (item, index) => string');
  const concurrency = options.concurrency ?? 4;
  if (!(Number.isSafeInteger(concurrency) && concurrency >= 1)) {
    throw new InvalidInputError('concurrency must be an integer of at least 1');
  }
  // Items keyed by their own id are meant to keep their keys when a re-run's items come back
  // reordered or extended; a batch id derived from the items (in order) would change then, and
  // every item would get a new key and run again. Such a batch names its run.
  if (itemKey !== undefined && (options.batchId === undefined || options.batchId === null)) {
    throw new InvalidInputError(
      'itemKey needs a batchId that names the run (the same on a re-run): the default batch id is derived from the items in order, so a re-run whose items were reordered or extended would give every item a new key and run it again',
    );
  }
  // The items as they are now: one appended while the batch runs is not part of it (it has no key).
  const list = items.slice();
  const batchId = options.batchId ?? deriveKey({ batch: list as unknown as JsonValue });
  const keys = list.map((item, index) => {
    if (!itemKey) return batchItemKey(batchId, index);
    const own: unknown = itemKey(item, index);
    // batchItemKey reads a number as an index: a numeric own id would take another item's key.
    if (typeof own !== 'string') {
      throw new InvalidInputError(
        `itemKey returned a ${typeof own} for item ${index}, not a string`,
      );
    }
    return batchItemKey(batchId, own);
  });
  if (itemKey && new Set(keys).size !== keys.length) {
    throw new InvalidInputError('itemKey returned the same key for two items of the batch');
  }
  // `null` is none (it reached each item's context as `null`, typed `AbortSignal | undefined`).
  const signal = options.signal ?? undefined;
  const results = new Array<BatchItemResult<R>>(list.length);
  let next = 0;

  async function worker(): Promise<void> {
    for (;;) {
      const index = next++;
      if (index >= list.length) return;
      const key = keys[index] as string;
      if (signal?.aborted) {
        results[index] = { index, key, ok: false, error: signal.reason };
        continue;
      }
      try {
        const value = await fn(list[index] as T, { key, index, batchId, signal });
        results[index] = { index, key, ok: true, value };
      } catch (error) {
        results[index] = { index, key, ok: false, error };
      }
    }
  }

  await Promise.all(Array.from({ length: Math.min(concurrency, list.length) }, worker));
  return { batchId, results };
}
