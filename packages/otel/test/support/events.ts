import type { ExecutionEndResult, IdemEvent } from '@idem/core';

/** A `miss` (an acquisition) of `storageKey` at `fence`, as an engine tells it. */
export const missEvent = (
  storageKey: string,
  fence: number,
  operation: string | undefined,
): IdemEvent => ({
  type: 'miss',
  storageKey,
  operation,
  fence,
  takeover: false,
  durationMs: 1,
});

/** The `execution_end` of that acquisition, with `result`. */
export const endEvent = (
  storageKey: string,
  fence: number,
  operation: string,
  result: ExecutionEndResult,
): IdemEvent => ({ type: 'execution_end', storageKey, operation, fence, result, durationMs: 1 });
