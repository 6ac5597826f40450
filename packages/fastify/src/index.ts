export type { FastifyIdempotencyOptions, RouteIdempotency } from './fastify-plugin.js';
export { idempotency } from './fastify-plugin.js';
