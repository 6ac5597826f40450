/**
 * One server of profile/http-ab.mjs, as a child process: the HTTP suite's `POST /orders` on
 * one framework, without middleware (`plain`) or with idem's adapter from the built
 * `packages` folder given (so that two checkouts can be compared in one run).
 *
 *   node profile/http-serve.mjs <hono|express|fastify> <plain|PACKAGES_DIR>
 *
 * Sends `{ port, pid }` to its parent over IPC and exits when the parent goes.
 */
import { serve } from '@hono/node-server';
import express from 'express';
import Fastify from 'fastify';
import { Hono } from 'hono';

const [framework, root] = process.argv.slice(2);
const idem = root && root !== 'plain';
let next = 1;
const created = (order) => ({ id: next++, sku: order.sku, qty: order.qty, status: 'created' });

async function middleware(name) {
  const { createMemoryStore } = await import(`${root}/store-memory/dist/index.js`);
  const { idempotency } = await import(`${root}/${name}/dist/index.js`);
  return {
    idempotency,
    store: createMemoryStore({ maxEntries: 2_000_000, maxBytes: 2 * 1024 ** 3 }),
  };
}

async function listen() {
  if (framework === 'hono') {
    const app = new Hono();
    if (idem) {
      const { idempotency, store } = await middleware('hono');
      app.use('/orders', idempotency({ store, scope: 'global' }));
    }
    app.post('/orders', async (c) => c.json(created(await c.req.json()), 201));
    return new Promise((resolve) => {
      serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, (info) => resolve(info.port));
    });
  }
  if (framework === 'express') {
    const app = express();
    if (idem) {
      const { idempotency, store } = await middleware('express');
      app.use(idempotency({ store, scope: 'global' }));
    }
    app.use(express.json());
    const route = (req, res) => {
      res.status(201).json(created(req.body));
    };
    // IDEM_BENCH_HELD=1: the route under `heldWhileRunning` (async, as a held route is).
    if (idem && process.env.IDEM_BENCH_HELD === '1') {
      const { heldWhileRunning } = await import(`${root}/express/dist/index.js`);
      app.post(
        '/orders',
        heldWhileRunning(async (req, res) => route(req, res)),
      );
    } else app.post('/orders', route);
    return new Promise((resolve) => {
      const server = app.listen(0, '127.0.0.1', () => resolve(server.address().port));
    });
  }
  const app = Fastify();
  if (idem) {
    const { idempotency, store } = await middleware('fastify');
    await app.register(idempotency, { store, scope: 'global' });
  }
  app.post('/orders', async (request, reply) => reply.code(201).send(created(request.body)));
  await app.listen({ port: 0, host: '127.0.0.1' });
  return app.server.address().port;
}

const port = await listen();
process.send({ port, pid: process.pid });
process.on('disconnect', () => process.exit(0));
