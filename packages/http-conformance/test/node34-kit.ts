/**
 * node34: what the adapters' node34 tests share (express/test/node34-*.test.ts,
 * fastify/test/node34-held-reply.test.ts): a route's work waits on a gate of its
 * Idempotency-Key, which the test (or the app's timeout hook) opens; retries are posted while
 * the key is held (409) until it gets its answer.
 */
import { setTimeout as sleep } from 'node:timers/promises';

/** Gates a route's work waits on, one per Idempotency-Key. */
export function keyedGates() {
  const gates = new Map<string, () => void>();
  return {
    /** Waits until `open(key)`. */
    wait: (key: unknown): Promise<void> =>
      new Promise((resolve) => gates.set(String(key), resolve)),
    open: (key: unknown): void => gates.get(String(key))?.(),
  };
}

/**
 * Posts until the answer is not 409 (the key held), at most `tries` times, `pauseMs` apart:
 * the last status.
 */
export async function statusOnceFree(
  post: () => Promise<{ status: number }>,
  { tries = 40, pauseMs = 25 }: { tries?: number; pauseMs?: number } = {},
): Promise<number> {
  let last = 409;
  for (let i = 0; i < tries && last === 409; i += 1) {
    last = (await post()).status;
    if (last === 409) await sleep(pauseMs);
  }
  return last;
}
