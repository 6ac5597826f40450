export { BodyTimeoutError } from './body-tap.js';
export { UnreadBodyError } from './fastify-incoming.js';
export type { FastifyIdempotencyOptions, RouteIdempotency } from './fastify-plugin.js';
export { idempotency } from './fastify-plugin.js';
