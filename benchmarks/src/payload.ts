/** The operation's result in every engine suite: an object whose JSON is this many bytes. */
export const RESULT_BYTES = 512;

export interface OperationResult {
  key: string;
  data: string;
}

/** The result of the operation for `key`: `{ key, data }`, 512 bytes as JSON. */
export function resultFor(key: string): OperationResult {
  const bare = JSON.stringify({ key, data: '' }).length;
  return { key, data: 'x'.repeat(Math.max(0, RESULT_BYTES - bare)) };
}

/** Throws unless a replay gave back the result recorded for `key`. */
export function checkReplayed(key: string, value: unknown, who: string): void {
  const result = value as Partial<OperationResult> | undefined;
  if (result?.key !== key || result.data?.length !== resultFor(key).data.length) {
    throw new Error(`${who}: a replay of ${key} did not return its recorded result`);
  }
}

/** The operation a replay is given: running it is a failure of the library under test. */
export function mustNotRun(who: string): never {
  throw new Error(`${who}: a replay ran the operation`);
}
