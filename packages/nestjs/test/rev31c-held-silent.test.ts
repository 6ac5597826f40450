import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { request as httpRequest, type ServerResponse } from 'node:http';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { Controller, Module, Post, Res } from '@nestjs/common';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IdempotencyModule, Idempotent } from '../src/index.js';
import { type Platform, startNest } from './scenario-app.js';

// rev31c review of nestres31 (the held-back 'close' given to the response's listeners after a
// silent lease while a handler is held).

const LEASE = 300;
const MAX_HOLD = 30_000;
const runs = new Map<string, number>();
const begin = (route: string) => {
  const run = (runs.get(route) ?? 0) + 1;
  runs.set(route, run);
  return run;
};
let gate: Promise<void> = Promise.resolve();
const gated = new Map<string, number>();
type Reply = ServerResponse | { raw: ServerResponse };
const rawOf = (reply: Reply) => ('raw' in reply ? reply.raw : reply);

@Controller()
@Idempotent()
class FeedController {
  // A handler feeding its response from an async generator between slow calls: Node's
  // `pipeline` writes it with `write` (no `pipe`, no 'unpipe' listener) and listens to the
  // response's 'close' through `finished`.
  @Post('generator')
  async generator(@Res() reply: Reply) {
    const run = begin('generator');
    const res = rawOf(reply);
    res.writeHead(200, { 'content-type': 'text/plain' });
    await pipeline(async function* () {
      yield `begun ${run}.`;
      if (run === gated.get('generator')) await gate;
      yield 'done';
    }, res);
  }

  // The response ended by the handler, which then fails (an audit call after the answer).
  @Post('ended-then-throws')
  async endedThenThrows(@Res() reply: Reply) {
    const run = begin('ended-then-throws');
    const res = rawOf(reply);
    res.writeHead(201, { 'content-type': 'text/plain' });
    res.end(`created ${run}`);
    throw new Error('failed after its own end');
  }
}

/** A store whose `complete` takes 50 ms, as a networked store's may. */
function slowCompleting<Store extends object>(store: Store): Store {
  return new Proxy(store, {
    get(target, name) {
      const value = Reflect.get(target, name) as unknown;
      if (name !== 'complete' || typeof value !== 'function') return value;
      return async (...args: unknown[]) => {
        await sleep(50);
        return (value as (...all: unknown[]) => unknown).apply(target, args);
      };
    },
  });
}

@Module({
  imports: [
    IdempotencyModule.forRoot({
      store: slowCompleting(createMemoryStore()),
      scope: 'global',
      leaseMs: LEASE,
      maxHoldMs: MAX_HOLD,
      onWarning: () => {},
    }),
  ],
  controllers: [FeedController],
})
class FeedModule {}

/** A keyed POST: status, body, and whether the response came whole. */
function post(url: string, path: string, key: string) {
  return new Promise<{ status: number; body: string; complete: boolean }>((resolve, reject) => {
    const req = httpRequest(`${url}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'idempotency-key': key },
    });
    req.on('error', (error) => resolve({ status: -1, body: String(error), complete: false }));
    req.on('response', (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        body += chunk;
      });
      const done = () => resolve({ status: res.statusCode ?? 0, body, complete: res.complete });
      res.on('end', done);
      res.on('error', done);
      res.on('aborted', done);
    });
    void reject;
    req.end('{"a":1}');
  });
}

describe.each<Platform>(['express', 'fastify'])(
  'rev31c @idem/nestjs on platform-%s',
  (platform) => {
    let url = '';
    let close = async () => {};
    beforeAll(async () => {
      ({ url, close } = await startNest(platform, FeedModule));
    });
    afterAll(() => close());

    it('a handler feeding pipeline(async generator, res) between slow calls is held and recorded once', async () => {
      const route = 'generator';
      const key = randomUUID();
      let release!: () => void;
      gate = new Promise((resolve) => {
        release = resolve;
      });
      const before = runs.get(route) ?? 0;
      gated.set(route, before + 1);
      await send(url, `/${route}`, { key, body: { a: 1 }, leaveAfterBytes: 3 }).catch(
        () => undefined,
      );
      const statuses: number[] = [];
      // Six leases of silence past the client's leaving: the handler is still working.
      for (let i = 0; i < 12; i++) {
        await sleep(LEASE / 2);
        statuses.push((await send(url, `/${route}`, { key, body: { a: 1 } })).status);
      }
      release();
      let last = await send(url, `/${route}`, { key, body: { a: 1 } });
      for (let i = 0; i < 20 && last.status === 409; i++) {
        await sleep(LEASE / 4);
        last = await send(url, `/${route}`, { key, body: { a: 1 } });
      }
      expect(runs.get(route), `retries got ${statuses.join(',')}`).toBe(before + 1);
      expect(statuses.every((status) => status === 409)).toBe(true);
      expect([last.status, last.headers['idempotent-replayed'], last.body.toString()]).toEqual([
        200,
        'true',
        `begun ${before + 1}.done`,
      ]);
    });

    it('a handler that ended its response and then throws: its client gets the whole answer, replayed to a retry', async () => {
      const key = randomUUID();
      const before = runs.get('ended-then-throws') ?? 0;
      const first = await post(url, '/ended-then-throws', key);
      expect(first).toEqual({ status: 201, body: `created ${before + 1}`, complete: true });
      const retry = await send(url, '/ended-then-throws', { key, body: { a: 1 } });
      expect([retry.status, retry.body.toString()]).toEqual([201, `created ${before + 1}`]);
      expect(runs.get('ended-then-throws')).toBe(before + 1);
    });
  },
);
