import 'reflect-metadata';
import { EventEmitter } from 'node:events';
import type { ServerResponse } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { Controller, Module, Post, Res, UseGuards } from '@nestjs/common';
import { describe, expect, it } from 'vitest';
import { IdempotencyModule, Idempotent } from '../src/index.js';
import { afterHeld } from './review-kit.js';
import { type Platform, startNest, TenantGuard } from './scenario-app.js';

// rev32d FINDING (HIGH, a failure that may be retried is blocked): nesthono32 took any response
// that ended while a `@Res()` handler's work was pending, outside the handler's async context,
// for an answer from outside Nest (a timeout mounted before its router), held the key and then
// left the `answered_outside` marker. But a `@Res()` handler's own code routinely writes from a
// callback that runs in another async context: a connection pool, a job queue or an event bus
// created outside the request (or by an earlier request: a pooled socket keeps its creator's
// context). Its own 503 then got the marker: every retry got a 500 outcome-not-recorded for the
// whole retention, and the request was never run again. No outside timeout is needed for it.

/** A pool made outside any request: its callbacks run in its own async context, as pg's do. */
class CallbackPool {
  private readonly jobs: Array<(error: Error | null) => void> = [];
  private readonly events = new EventEmitter();
  private readonly timer: NodeJS.Timeout;
  constructor() {
    this.events.on('ready', () => {
      for (const job of this.jobs.splice(0)) job(new Error('too many clients'));
    });
    this.timer = setInterval(() => this.events.emit('ready'), 10);
    this.timer.unref();
  }
  query(callback: (error: Error | null) => void): void {
    this.jobs.push(callback);
  }
  close(): void {
    clearInterval(this.timer);
  }
}

const pool = new CallbackPool();
let runs = 0;

@Controller()
@UseGuards(TenantGuard)
class PoolController {
  @Post('pool-busy')
  @Idempotent()
  busy(@Res() res: { status(code: number): { send(body: string): unknown } }) {
    runs += 1;
    return new Promise<void>((resolve) => {
      pool.query((error) => {
        // The handler's own answer: the database is busy, try again.
        res.status(503).send(error ? 'busy' : 'ok');
        resolve();
      });
    });
  }
}

let slowRuns = 0;

@Controller()
@UseGuards(TenantGuard)
class SlowResController {
  @Post('res-slow')
  @Idempotent()
  async slow(
    @Res() res: ServerResponse & { status(code: number): { send(body: string): unknown } },
  ) {
    slowRuns += 1;
    await sleep(300);
    if (!res.headersSent) res.status(201).send('done');
  }
}

@Module({
  imports: [IdempotencyModule.forRoot({ store: createMemoryStore(), onWarning: () => {} })],
  controllers: [PoolController, SlowResController],
})
class PoolModule {}

describe.each<Platform>(['express', 'fastify'])(
  'rev32d nestjs on %s: a @Res() handler writing its own 503 from a pool callback',
  (platform) => {
    it('is released: a retry runs the handler again (never the answered_outside marker)', async () => {
      const { url, close } = await startNest(platform, PoolModule);
      try {
        const before = runs;
        const key = `rev32d-pool-${platform}-${process.pid}`;
        for (let i = 0; i < 2; i += 1) {
          const answer = await send(url, '/pool-busy', { key, body: {} });
          expect(answer.status).toBe(503);
        }
        expect(runs - before).toBe(2);
      } finally {
        await close();
      }
    });
  },
);

describe('rev32d nestjs on express: a @Res() handler overtaken by a timeout before the router', () => {
  it('keeps its key held (409) while it works: never run beside itself', async () => {
    const { url, close } = await startNest('express', PoolModule, (app) => {
      app.use((_req: unknown, res: ServerResponse, next: () => void) => {
        const timer = setTimeout(() => {
          if (!res.headersSent) res.writeHead(503).end('timed out');
        }, 100);
        res.once('close', () => clearTimeout(timer));
        next();
      });
    });
    try {
      const before = slowRuns;
      const key = `rev32d-res-slow-${process.pid}`;
      expect((await send(url, '/res-slow', { key, body: {} })).status).toBe(503);
      expect((await send(url, '/res-slow', { key, body: {} })).status).toBe(409);
      expect(slowRuns - before).toBe(1);
      // Its work ran on past the turn the 503 went out in: the answered_outside marker (nest33;
      // released before, and a retry ran it a second time).
      expect(await afterHeld(() => send(url, '/res-slow', { key, body: {} }))).toBe(500);
      expect(slowRuns - before).toBe(1);
    } finally {
      await close();
    }
  });
});

process.once('beforeExit', () => pool.close());
