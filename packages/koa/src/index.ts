export type { KoaIdempotencyOptions } from './koa-middleware.js';
export { getIdempotency, idempotency } from './koa-middleware.js';
