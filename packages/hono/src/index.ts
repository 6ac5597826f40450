export type { HonoIdempotencyOptions, IdempotencyVariables } from './hono-middleware.js';
export { idempotency } from './hono-middleware.js';
export { stream, streamSSE, streamText } from './streaming.js';
export { type TimeoutException, timeout } from './timeout.js';
