import { createMemoryStore } from '@idem/store-memory';
import type { FastifyInstance } from 'fastify';
import { idempotency } from '../../src/index.js';

/** Registers the plugin on `app` with a memory store, the global scope and no warnings. */
export async function registerGlobalIdem(app: FastifyInstance): Promise<void> {
  await app.register(idempotency, {
    store: createMemoryStore(),
    scope: 'global',
    onWarning: () => {},
  });
}
