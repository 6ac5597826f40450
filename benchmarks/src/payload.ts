/** The operation's result in every engine suite: an object whose JSON is this many bytes. */
export const RESULT_BYTES = 512;

export interface OperationResult {
  key: string;
  data: string;
}

/** The result of the operation for `key`: `{ key, data }`, 512 bytes as JSON. */
export function resultFor(key: string): OperationResult {
  return { key, data: 'x'.repeat(dataLength(key)) };
}

/**
 * The length of `resultFor(key).data`: 512 less the JSON of `{ key, data: '' }` (the key's
 * JSON string and 18 characters around it), counted without building either.
 */
function dataLength(key: string): number {
  return Math.max(0, RESULT_BYTES - (JSON.stringify(key).length + 18));
}

/**
 * Throws unless a replay gave back the result recorded for `key` (its key and the length of
 * its data). Cheap on purpose: it runs inside every timed replay of every contender, so its
 * cost is added to each alike and would pull every ratio towards 1 (building the expected
 * result, as this did before, cost about as much as an in-process replay itself).
 */
export function checkReplayed(key: string, value: unknown, who: string): void {
  const result = value as Partial<OperationResult> | undefined;
  if (result?.key !== key || result.data?.length !== dataLength(key)) {
    throw new Error(`${who}: a replay of ${key} did not return its recorded result`);
  }
}

/** The operation a replay is given: running it is a failure of the library under test. */
export function mustNotRun(who: string): never {
  throw new Error(`${who}: a replay ran the operation`);
}
