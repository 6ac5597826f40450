export type { ExpressIdempotencyOptions } from './express-middleware.js';
export { getIdempotency, idempotency } from './express-middleware.js';
