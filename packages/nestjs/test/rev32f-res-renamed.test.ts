import 'reflect-metadata';
import { send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { Controller, Module, Post, Res, UseGuards, VersioningType } from '@nestjs/common';
import { describe, expect, it } from 'vitest';
import { IdempotencyModule, Idempotent } from '../src/index.js';
import { CallbackPool } from './review-kit.js';
import { type Platform, startNest, TenantGuard } from './scenario-app.js';

// rev32f FINDING (MEDIUM, a failure that may be retried is blocked): rev32d told a `@Res()`
// handler (whose own answer from a lost async context is judged as usual, never marked) by
// Nest's route-argument metadata under `handler.name`. Nest keeps that metadata under the
// method's property key, and a method decorator that wraps the method (tracing, logging,
// transactions: `descriptor.value = function (...args) {...}`) leaves a function whose name is
// '' (or the wrapper's): Nest still leaves the response to the handler, idem did not see it, and
// the handler's own 503 from a pool callback got the answered_outside marker (every retry a 500,
// the request never run again for the retention).

/** A wrapping method decorator, as tracing and logging libraries make them. */
function Traced(): MethodDecorator {
  return (_target, _key, descriptor: PropertyDescriptor) => {
    const original = descriptor.value as (...args: unknown[]) => unknown;
    descriptor.value = function (this: unknown, ...args: unknown[]) {
      return original.apply(this, args);
    };
  };
}

/** The same, with a named wrapper. */
function Logged(): MethodDecorator {
  return (_target, _key, descriptor: PropertyDescriptor) => {
    const original = descriptor.value as (...args: unknown[]) => unknown;
    descriptor.value = function logged(this: unknown, ...args: unknown[]) {
      return original.apply(this, args);
    };
  };
}

const pool = new CallbackPool();
let runs = 0;
type Res503 = { status(code: number): { send(body: string): unknown } };
const busy = (res: Res503) => {
  runs += 1;
  return new Promise<void>((resolve) => {
    pool.query(() => {
      res.status(503).send('busy');
      resolve();
    });
  });
};

@Controller()
@UseGuards(TenantGuard)
class WrappedController {
  @Post('traced-busy')
  @Idempotent()
  @Traced()
  traced(@Res() res: Res503) {
    return busy(res);
  }

  @Post('logged-busy')
  @Idempotent()
  @Logged()
  withLog(@Res() res: Res503) {
    return busy(res);
  }
}

/** Two versions of one route (URI versioning), the handlers wrapped too. */
@Controller({ version: ['1', '2'] })
@UseGuards(TenantGuard)
class VersionedController {
  @Post('versioned-busy')
  @Idempotent()
  @Traced()
  v1(@Res() res: Res503) {
    return busy(res);
  }
}

@Module({
  imports: [IdempotencyModule.forRoot({ store: createMemoryStore(), onWarning: () => {} })],
  controllers: [WrappedController, VersionedController],
})
class WrappedModule {}

describe.each<Platform>(['express', 'fastify'])(
  'rev32f nestjs on %s: a wrapped @Res() handler writing its own 503 from a pool callback',
  (platform) => {
    it.each(['traced-busy', 'logged-busy', 'v2/versioned-busy'])(
      '%s is released: a retry runs it again',
      async (path) => {
        const { url, close } = await startNest(platform, WrappedModule, (app) =>
          app.enableVersioning({ type: VersioningType.URI }),
        );
        try {
          const before = runs;
          const key = `rev32f-${path.replace('/', '-')}-${platform}-${process.pid}`;
          for (let i = 0; i < 2; i += 1) {
            const answer = await send(url, `/${path}`, { key, body: {} });
            expect(answer.status).toBe(503);
          }
          expect(runs - before).toBe(2);
        } finally {
          await close();
        }
      },
    );
  },
);

process.once('beforeExit', () => pool.close());
