import type { IdempotencyStore } from '@idem/core';
import { withIdempotency } from '@idem/http';
import { createMemoryStore } from '@idem/store-memory';

export interface IdempotentAppOptions {
  store?: IdempotencyStore;
  /** Lease of an in-progress record. @default 30_000 */
  leaseMs?: number;
}

/**
 * The application behind @idem/http on the memory store: 400 for a missing or invalid key,
 * 422 for a key reused with another request, 409 while in progress, replays of 2xx outcomes
 * with `Idempotent-Replayed: true`.
 */
export function idempotent(
  handler: (request: Request) => Promise<Response>,
  options: IdempotentAppOptions = {},
): (request: Request) => Promise<Response> {
  return withIdempotency((request) => handler(request), {
    store: options.store ?? createMemoryStore({ sweepIntervalMs: 0 }),
    leaseMs: options.leaseMs ?? 30_000,
    // One test principal: the scope hook is the app's business, not the client's.
    scope: () => ({ principal: 'test-tenant' }),
  });
}
