import 'reflect-metadata';
import { setTimeout as sleep } from 'node:timers/promises';
import { type OuterTimeoutProbe, outerTimeoutProbe, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { Controller, Module, Post, ServiceUnavailableException, UseGuards } from '@nestjs/common';
import { defer, throwError } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IdempotencyModule, Idempotent } from '../src/index.js';
import { TimeoutInterceptor } from './review-kit.js';
import { type Platform, startNest, TenantGuard } from './scenario-app.js';

// timeout31 check (no fault): a global interceptor outside this one that times out (rxjs
// `timeout()`, 408) while the handler runs: the key stays held until the handler's work ended
// (the interceptor's own hold, `recorderHeldForHandler`), then the 408 is judged (released
// under finalOn2xx). And a handler's OWN 503 while fire-and-forget work it started still runs
// is released at once, as before (the recorder's wait for held work is not for Nest's answers
// that nothing overtook).

const LEASE = 300;
let probe: OuterTimeoutProbe = outerTimeoutProbe(LEASE);
let own = 0;

@Controller()
@UseGuards(TenantGuard)
class ChargesController {
  @Post('charges')
  @Idempotent()
  async charge() {
    return { run: await probe.work() };
  }

  @Post('own')
  @Idempotent()
  async own() {
    own += 1;
    // Work the request started and does not wait for (an audit write).
    void sleep(2_000);
    throw new ServiceUnavailableException();
  }

  @Post('own-observable')
  @Idempotent()
  ownObservable() {
    own += 1;
    return defer(() => {
      void sleep(2_000);
      return throwError(() => new ServiceUnavailableException());
    });
  }
}

@Module({
  imports: [
    IdempotencyModule.forRoot({ store: createMemoryStore(), leaseMs: LEASE, onWarning: () => {} }),
  ],
  controllers: [ChargesController],
})
class ChargesModule {}

describe.each<Platform>(['express', 'fastify'])(
  'timeout31 nestjs on %s: a timeout interceptor outside this one',
  (platform) => {
    let url = '';
    let close = async () => {};
    beforeAll(async () => {
      ({ url, close } = await startNest(platform, ChargesModule, (app) =>
        app.useGlobalInterceptors(new TimeoutInterceptor()),
      ));
    });
    afterAll(() => close());

    it('retries after the 408 get 409 while the handler runs; it never runs twice at once', async () => {
      probe = outerTimeoutProbe(LEASE);
      // Nest holds its `finish` itself (`recorderHeldForHandler`) until the handler's work ended;
      // a handler that ran to its end then leaves the `answered_outside` marker (nesthono32:
      // this asserted `'released'` before, the known gap timeout31b left, where a later retry
      // ran the handler a second time).
      await probe.check(url, '/charges', 408, false);
    });

    it.each(['/own', '/own-observable'])(
      "%s: the handler's own 503 is released at once, its fire-and-forget work still running",
      async (path) => {
        const before = own;
        for (let i = 0; i < 2; i += 1) {
          const answer = await send(url, path, { key: `own-${platform}${path}`, body: {} });
          expect(answer.status).toBe(503);
        }
        expect(own - before).toBe(2);
      },
    );
  },
);
