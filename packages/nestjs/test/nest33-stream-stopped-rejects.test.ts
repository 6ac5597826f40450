import 'reflect-metadata';
import { setTimeout as sleep } from 'node:timers/promises';
import { send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { Controller, Module, Post, Sse, UseGuards } from '@nestjs/common';
import type { NestExpressApplication } from '@nestjs/platform-express';
import type { NestFastifyApplication } from '@nestjs/platform-fastify';
import { concat, defer, from, map, of } from 'rxjs';
import { describe, expect, it } from 'vitest';
import { IdempotencyModule, Idempotent } from '../src/index.js';
import {
  afterHeld,
  mountOuterTimeout,
  OUTER_TIMEOUTS,
  type Outer,
  workGate,
} from './review-kit.js';
import { outerTimeout, type Platform, startNest, TenantGuard } from './scenario-app.js';

// nest33 FINDING (MEDIUM, a failure that may be retried is blocked): an Observable the handler
// returns (`from(work())`, an `@Sse()` stream) stopped while the promise of its work still ran
// (torn down by a timeout, or its SSE client left) was taken to have run to its end whatever that
// promise then did: a rejection after the teardown still left the `answered_outside` marker, and
// every retry got a 500 outcome-not-recorded for the whole retention, though the work failed and
// a retry may run it. Now a rejection of that work after the teardown is judged as a throw: the key
// is released once it ended (under finalOn2xx), and a retry runs the handler after the first.

const WORK_MS = 300;
const gate = workGate();
let runs = 0;
let fulfilledRuns = 0;

async function failingWork(): Promise<number> {
  runs += 1;
  await Promise.all([sleep(WORK_MS), gate.pass()]);
  throw new Error('the downstream call failed');
}

async function goodWork(): Promise<number> {
  fulfilledRuns += 1;
  await Promise.all([sleep(WORK_MS), gate.pass()]);
  return fulfilledRuns;
}

@Controller()
@UseGuards(TenantGuard)
class StreamController {
  @Post('obs-fails')
  @Idempotent()
  fails() {
    return defer(() => from(failingWork()));
  }

  @Post('obs-works')
  @Idempotent()
  works() {
    return defer(() => from(goodWork()));
  }

  @Sse('sse-fails')
  @Idempotent({ methods: ['GET'] })
  sse() {
    return concat(
      of({ data: { started: true, pad: 'x'.repeat(256) } }),
      from(failingWork()).pipe(map((run) => ({ data: { run } }))),
    );
  }
}

@Module({
  imports: [IdempotencyModule.forRoot({ store: createMemoryStore(), onWarning: () => {} })],
  controllers: [StreamController],
})
class StreamModule {}

const mounted = (platform: Platform, outer: Outer) =>
  mountOuterTimeout(outer, (app) =>
    outerTimeout(platform)(app as NestExpressApplication & NestFastifyApplication),
  );

describe.each(OUTER_TIMEOUTS)(
  'nest33 nestjs on %s: a timeout %s tears down an Observable',
  (platform, outer) => {
    it('whose work then rejects: held while it runs, then released (a retry runs it after the first)', async () => {
      const { url, close } = await startNest(platform, StreamModule, mounted(platform, outer));
      try {
        const before = runs;
        const key = `nest33-obs-fails-${platform}-${outer}-${process.pid}`;
        const post = () => send(url, '/obs-fails', { key, body: {} });
        const open = gate.close();
        expect([408, 503]).toContain((await post()).status);
        expect((await post()).status).toBe(409);
        open();
        expect(runs - before).toBe(1);
        const last = await afterHeld(post);
        expect(last).not.toBe(500);
        expect(runs - before).toBe(2);
      } finally {
        await close();
      }
    });

    it('whose work then runs to its end: held, then the answered_outside marker (never a second run)', async () => {
      const { url, close } = await startNest(platform, StreamModule, mounted(platform, outer));
      try {
        const before = fulfilledRuns;
        const key = `nest33-obs-works-${platform}-${outer}-${process.pid}`;
        const post = () => send(url, '/obs-works', { key, body: {} });
        expect([408, 503]).toContain((await post()).status);
        expect(await afterHeld(post)).toBe(500);
        expect(fulfilledRuns - before).toBe(1);
      } finally {
        await close();
      }
    });
  },
);

describe.each<Platform>(['express', 'fastify'])(
  'nest33 nestjs on %s: an @Sse() client that leaves while the stream waits on its work',
  (platform) => {
    it('the work then rejects: the key is released, a retry runs the stream again', async () => {
      const { url, close } = await startNest(platform, StreamModule);
      try {
        const before = runs;
        const key = `nest33-sse-fails-${platform}-${process.pid}`;
        const left = await send(url, '/sse-fails', { method: 'GET', key, leaveAfterBytes: 100 });
        expect(left.complete).toBe(false);
        const get = () => send(url, '/sse-fails', { method: 'GET', key, leaveAfterBytes: 100 });
        // Its work ends after WORK_MS: then a retry runs it (bounded wait).
        let again = runs - before;
        for (let i = 0; i < 40 && again < 2; i += 1) {
          await sleep(50);
          const status = (await get()).status;
          expect(status).not.toBe(500);
          again = runs - before;
        }
        expect(again).toBe(2);
      } finally {
        await close();
      }
    });
  },
);
