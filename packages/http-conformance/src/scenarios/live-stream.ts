import type { Exchange } from '../client.js';
import { type ScenarioContext, waitFor } from '../kit.js';

/**
 * Starts a keyed POST of `path` (an SSE route) and resolves once its first bytes reached the
 * client: the answer is live then, and a duplicate finds it streaming. `done` is the
 * exchange; `settled` never rejects (await it in a `finally`, so that a failed expectation
 * leaves no rejection behind).
 */
export async function startLiveStream(
  ctx: ScenarioContext,
  key: string,
  path: string,
): Promise<{ done: Promise<Exchange>; settled: Promise<void> }> {
  let received = 0;
  const done = ctx.post(path, { key, body: {}, onData: (n) => (received = n) });
  const settled = done.then(
    () => undefined,
    () => undefined,
  );
  await waitFor(() => received > 0, 'the first event to reach the first caller');
  return { done, settled };
}
