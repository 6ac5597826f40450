/** The frameworks of the HTTP suite. */
export const FRAMEWORKS = ['hono', 'express', 'fastify'] as const;
export type Framework = (typeof FRAMEWORKS)[number];

/** How a server of the HTTP suite is set up: without middleware, with idem's, or with a peer's. */
export const MODES = ['plain', 'idem', 'express-idempotency'] as const;
export type Mode = (typeof MODES)[number];

/** The peer middlewares, each for the one framework it is written for. */
export const HTTP_PEERS: readonly { mode: Mode; framework: Framework }[] = [
  { mode: 'express-idempotency', framework: 'express' },
];
