// Thrown (500) when a middleware before it read the body and kept neither req.body nor req.rawBody.
export { BodyAlreadyReadError } from '@idem/http';
export type { ExpressIdempotencyOptions } from './express-middleware.js';
export {
  getIdempotency,
  heldWhileRunning,
  holdWhile,
  idempotency,
} from './express-middleware.js';
