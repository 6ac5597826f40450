export type { ExpressIdempotencyOptions } from './express-middleware.js';
export { getIdempotency, idempotency } from './express-middleware.js';
export { recordServerResponse, sendWebResponse } from './node-response.js';
