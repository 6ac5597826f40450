/**
 * One HTTP server of the HTTP suite, run as a child process of the benchmark so that the load
 * generator does not share its event loop:
 *
 *   node --import tsx src/http-server.ts <hono|express|fastify> <plain|idem|express-idempotency>
 *
 * It serves `POST /orders` (a small JSON body in, 201 with a small JSON body out) on a free
 * loopback port, sends `{ port }` to its parent over IPC and exits when the parent goes.
 */
import { serve } from '@hono/node-server';
import { idempotency as idemExpress } from '@idem/express';
import { idempotency as idemFastify } from '@idem/fastify';
import { idempotency as idemHono } from '@idem/hono';
import { createMemoryStore } from '@idem/store-memory';
import express from 'express';
import {
  idempotency as expressIdempotency,
  getSharedIdempotencyService,
} from 'express-idempotency';
import Fastify from 'fastify';
import { Hono } from 'hono';
import { FRAMEWORKS, type Framework, HTTP_PEERS, MODES, type Mode } from './http-modes.js';

interface Order {
  sku: string;
  qty: number;
}

let next = 1;
const created = (order: Order) => ({
  id: next++,
  sku: order.sku,
  qty: order.qty,
  status: 'created',
});

// Sized so that no measurement fills it (a full store answers 503 to new keys).
const store = () => createMemoryStore({ maxEntries: 2_000_000, maxBytes: 2 * 1024 ** 3 });

async function listenHono(mode: Mode): Promise<number> {
  const app = new Hono();
  if (mode === 'idem') app.use('/orders', idemHono({ store: store(), scope: 'global' }));
  app.post('/orders', async (c) => c.json(created(await c.req.json<Order>()), 201));
  return new Promise((resolve) => {
    serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, (info) => resolve(info.port));
  });
}

async function listenExpress(mode: Mode): Promise<number> {
  const app = express();
  // idem reads the body itself and hands it on untouched, so either order works; the peer's
  // README mounts it after the body parser.
  if (mode === 'idem') app.use(idemExpress({ store: store(), scope: 'global' }));
  app.use(express.json());
  if (mode === 'express-idempotency') app.use(expressIdempotency());
  app.post('/orders', (req, res) => {
    // The peer answers a replay itself and still calls the route (its documented isHit check).
    if (mode === 'express-idempotency' && getSharedIdempotencyService().isHit(req)) return;
    res.status(201).json(created(req.body as Order));
  });
  return new Promise((resolve) => {
    const server = app.listen(0, '127.0.0.1', () => {
      const address = server.address();
      resolve(typeof address === 'object' && address ? address.port : 0);
    });
  });
}

async function listenFastify(mode: Mode): Promise<number> {
  const app = Fastify();
  if (mode === 'idem') await app.register(idemFastify, { store: store(), scope: 'global' });
  app.post<{ Body: Order }>('/orders', async (request, reply) =>
    reply.code(201).send(created(request.body)),
  );
  await app.listen({ port: 0, host: '127.0.0.1' });
  const address = app.server.address();
  return typeof address === 'object' && address ? address.port : 0;
}

async function main(): Promise<void> {
  const [framework, mode] = process.argv.slice(2) as [Framework, Mode];
  if (!FRAMEWORKS.includes(framework) || !MODES.includes(mode)) {
    throw new Error(`usage: http-server.ts <${FRAMEWORKS.join('|')}> <${MODES.join('|')}>`);
  }
  if (HTTP_PEERS.some((peer) => peer.mode === mode && peer.framework !== framework)) {
    throw new Error(`${mode} is not a ${framework} middleware`);
  }
  const listen = { hono: listenHono, express: listenExpress, fastify: listenFastify }[framework];
  const port = await listen(mode);
  if (!process.send) throw new Error('http-server.ts runs as a child with an IPC channel');
  process.send({ port });
  process.on('disconnect', () => process.exit(0));
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
