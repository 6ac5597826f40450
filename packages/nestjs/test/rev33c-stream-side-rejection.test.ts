import 'reflect-metadata';
import { setTimeout as sleep } from 'node:timers/promises';
import { send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { Controller, Module, Post, UseGuards } from '@nestjs/common';
import type { NestExpressApplication } from '@nestjs/platform-express';
import type { NestFastifyApplication } from '@nestjs/platform-fastify';
import { defer, from } from 'rxjs';
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

// rev33c FINDING (HIGH, exactly-once): nest33 judged a torn-down Observable's work by the LAST
// promise of its work to settle after the teardown. A charge that ran to its end and then fired a
// best-effort side call (an audit, a metrics flush) whose rejection the app handled itself
// (`.catch(() => {})`) was taken for a failed charge: the key was released and a retry charged a
// second time. Now the work is judged by the oldest of its promises still pending at the teardown
// (the promise of the work the Observable followed), whatever settles after it.

const WORK_MS = 300;
const gate = workGate();
let charges = 0;
let failing = 0;

async function audit(): Promise<void> {
  await sleep(5);
  throw new Error('the audit sink is down');
}

async function charge(): Promise<number> {
  charges += 1;
  await Promise.all([sleep(WORK_MS), gate.pass()]);
  // Best effort, its rejection handled by the app: not the charge's outcome.
  void audit().catch(() => {});
  return charges;
}

async function failingCharge(): Promise<number> {
  failing += 1;
  await Promise.all([sleep(WORK_MS), gate.pass()]);
  // A cleanup that runs to its end after the failure: the charge still failed.
  void sleep(5).then(() => undefined);
  throw new Error('the card was declined');
}

@Controller()
@UseGuards(TenantGuard)
class ChargeController {
  @Post('charge-audited')
  @Idempotent()
  charge() {
    return defer(() => from(charge()));
  }

  @Post('charge-fails-cleanup')
  @Idempotent()
  fails() {
    return defer(() => from(failingCharge()));
  }
}

@Module({
  imports: [IdempotencyModule.forRoot({ store: createMemoryStore(), onWarning: () => {} })],
  controllers: [ChargeController],
})
class ChargeModule {}

const mounted = (platform: Platform, outer: Outer) =>
  mountOuterTimeout(outer, (app) =>
    outerTimeout(platform)(app as NestExpressApplication & NestFastifyApplication),
  );

describe.each(OUTER_TIMEOUTS)(
  'rev33c nestjs on %s: a timeout %s tears down an Observable',
  (platform, outer) => {
    it('whose work ran to its end, then a side call it handled rejected: the marker, never a second charge', async () => {
      const { url, close } = await startNest(platform, ChargeModule, mounted(platform, outer));
      try {
        const before = charges;
        const key = `rev33c-audited-${platform}-${outer}-${process.pid}`;
        const post = () => send(url, '/charge-audited', { key, body: {} });
        const open = gate.close();
        expect([408, 503]).toContain((await post()).status);
        expect((await post()).status).toBe(409);
        open();
        expect(await afterHeld(post)).toBe(500);
        expect(charges - before).toBe(1);
      } finally {
        await close();
      }
    });

    it('whose work failed, then a cleanup ran to its end: released, a retry runs it after the first', async () => {
      const { url, close } = await startNest(platform, ChargeModule, mounted(platform, outer));
      try {
        const before = failing;
        const key = `rev33c-fails-cleanup-${platform}-${outer}-${process.pid}`;
        const post = () => send(url, '/charge-fails-cleanup', { key, body: {} });
        const open = gate.close();
        expect([408, 503]).toContain((await post()).status);
        expect((await post()).status).toBe(409);
        open();
        const last = await afterHeld(post);
        expect(last).not.toBe(500);
        expect(failing - before).toBe(2);
      } finally {
        await close();
      }
    });
  },
);
