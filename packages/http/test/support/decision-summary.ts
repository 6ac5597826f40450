import { createMemoryStore } from '@idem/store-memory';
import {
  createIdempotencyHandler,
  type HttpIdempotencyOptions,
  type IdempotencyDecision,
} from '../../src/index.js';

/**
 * A decision of begin() or beforeScope() as plain data to compare: the action, a pass's
 * reason, a response's status, headers and body; undefined (beforeScope() undecided) as is.
 */
export async function decisionSummary(decision: IdempotencyDecision | undefined) {
  if (decision === undefined) return undefined;
  if (decision.action === 'pass') return { action: 'pass', reason: decision.reason };
  if (decision.action === 'respond')
    return {
      action: 'respond',
      status: decision.response.status,
      headers: [...decision.response.headers],
      body: await decision.response.clone().text(),
    };
  return { action: decision.action };
}

/**
 * A handler (memory store, `options` over the defaults) whose scope hook counts its calls and
 * gives no principal: begin() stops there (500), the answer beforeScope() must never give.
 */
export function scopeCountingHandler(options: Partial<HttpIdempotencyOptions<null>>) {
  let scoped = 0;
  const handler = createIdempotencyHandler<null>({
    store: createMemoryStore(),
    scope: () => {
      scoped++;
      return undefined as never;
    },
    onWarning: () => {},
    ...options,
  });
  return { handler, scoped: () => scoped };
}

/** A request to begin() with `key` (none when undefined) under `header`; its body is never to be read. */
export function keyedRequest(method: string, url: string, header: string, key?: string) {
  const headers: Record<string, string> = key === undefined ? {} : { [header]: key };
  return {
    native: null,
    method,
    url,
    header: (name: string) => headers[name.toLowerCase()],
    readBody: () => Promise.reject(new Error('begin() read the body')),
  };
}
