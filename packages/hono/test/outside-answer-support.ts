import type { MiddlewareHandler } from 'hono';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * apps/llm-api's `deliver` pattern: answers 503 when the chain after it takes longer than
 * `ms`, and reads the real answer later (its read pushed on `background`).
 */
export function deliverEarly(background: Promise<unknown>[], ms = 50): MiddlewareHandler {
  return async (c, next) => {
    const produced = next().then(() => c.res);
    const first = await Promise.race([produced, sleep(ms).then(() => 'late' as const)]);
    if (first === 'late') {
      background.push(produced.then((r) => r.text()).catch(() => undefined));
      c.res = undefined;
      c.res = new Response('{"error":"still recording"}', { status: 503 });
    }
  };
}

/** A timeout that answers 503 after `ms` by returning it (no throw, no `c.error`), as `hono/timeout` does not. */
export function returningTimeout(ms = 100): MiddlewareHandler {
  return async (c, next) => {
    const timedOut = sleep(ms).then(() => c.text('timed out', 503));
    const answer = await Promise.race([next().then(() => undefined), timedOut]);
    if (answer) return answer;
  };
}
