import type { AddressInfo } from 'node:net';
import type { HttpIdempotencyOptions } from '@idem/http';
import { listening } from '@idem/http-conformance';
import Router from '@koa/router';
import { Redis } from 'ioredis';
import Koa, { type Context } from 'koa';
import { afterAll, beforeAll } from 'vitest';
import { idempotency } from '../src/index.js';

// Shared by the rev35 review files: Koa servers on loopback, idem mounted twice, and the real
// Redis (127.0.0.1:6379) under the file's own random key prefix, its keys deleted after it.

export const A = { a: 1 };
type Options = Partial<HttpIdempotencyOptions<Context>>;
const closers: (() => Promise<unknown>)[] = [];

/** The shared Redis for one test file; only the keys under `prefix` are deleted after it. */
export function useRedis(prefix: string): () => Redis {
  let redis: Redis;
  beforeAll(() => {
    redis = new Redis({ host: '127.0.0.1', port: 6379, maxRetriesPerRequest: 1 });
  });
  afterAll(async () => {
    for (const close of closers.reverse()) await close();
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length > 0 && keys.length < 10_000) await redis.del(...keys);
    redis.disconnect();
  });
  return () => redis;
}

/** Closed after the file's tests (with its Redis, see `useRedis`). */
export function closeAfter(close: () => Promise<unknown>): void {
  closers.push(close);
}

const idem = (options: Options) =>
  idempotency({
    scope: 'global',
    onWarning: () => {},
    ...options,
  } as HttpIdempotencyOptions<Context>);

/** A Koa app on loopback: `mount` puts its middleware on it. */
export async function serve(mount: (app: Koa) => void) {
  const app = new Koa();
  app.silent = true;
  mount(app);
  const server = app.listen(0, '127.0.0.1');
  const running = await listening(server);
  closers.push(running.close);
  return { ...running, port: (server.address() as AddressInfo).port };
}

export function counting() {
  let runs = 0;
  const route = async (ctx: Context) => {
    const run = ++runs;
    ctx.status = 201;
    ctx.body = { run };
  };
  return { route, runs: () => runs };
}

/** idem by app.use (`outer`), and again on the route `/pay` (`inner`). */
export const twice = (outer: Options, inner: Options, route: Koa.Middleware) => (app: Koa) => {
  app.use(idem(outer));
  const router = new Router();
  router.post('/pay', idem(inner), route);
  router.get('/pay', idem(inner), route);
  app.use(router.routes());
};

/** Upstream swallows the route's throw and answers nothing (`ctx.respond = false`); idem on `store` under `leaseMs`, then `route`. */
export const swallowed =
  (store: Options['store'], leaseMs: number, route: Koa.Middleware) => (app: Koa) => {
    app.use(async (ctx, next) => {
      try {
        await next();
      } catch {
        ctx.respond = false;
      }
    });
    app.use(idem({ store, leaseMs }));
    app.use(route);
  };
