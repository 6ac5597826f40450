// Mutation audit of the adapter (wt/mutadapt): each test fails under one small change of
// src/ that no earlier test noticed, and passes on the real code.
import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { json, PROBLEM, send, spyStore } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import {
  type CallHandler,
  type CanActivate,
  Controller,
  type ExecutionContext,
  Injectable,
  Module,
  type NestInterceptor,
  Post,
  StreamableFile,
  UseGuards,
} from '@nestjs/common';
import { APP_INTERCEPTOR } from '@nestjs/core';
import { type Observable, timeout } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IdempotencyModule, Idempotent } from '../src/index.js';
import { count, ran } from './review-kit.js';
import { type Platform, startNest } from './scenario-app.js';

const key = () => `mutadapt-${randomUUID()}`;

/** Every tenant's first user is user 7: ids are per tenant (the tenant is the host's). */
@Injectable()
class UserSevenGuard implements CanActivate {
  canActivate(context: ExecutionContext): boolean {
    context.switchToHttp().getRequest<{ user?: unknown }>().user = { id: 7 };
    return true;
  }
}

/** A host option with a wildcard and no `:` parameter serves every tenant's host too. */
@Controller({ host: '*tenant.example.test', path: 'star' })
@UseGuards(UserSevenGuard)
class StarHostController {
  @Post()
  @Idempotent()
  pay() {
    return { n: ran('star') };
  }
}

@Controller({ host: ':tenant.example.test', path: 'param' })
@UseGuards(UserSevenGuard)
class ParamHostController {
  @Post()
  @Idempotent()
  pay() {
    return { n: ran('param') };
  }
}

@Controller('marked')
@UseGuards(UserSevenGuard)
@Idempotent()
class MarkedController {
  @Post('exempt')
  @Idempotent(false)
  exempt() {
    return { n: ran('exempt') };
  }

  /** A route allowing a larger body than the module's `maxBodyBytes` (64). */
  @Post('roomy')
  @Idempotent({ maxBodyBytes: 4096 })
  roomy() {
    return { n: ran('roomy') };
  }

  /** A file whose stream fails midway, with an error handler that ends the response (Nest 12.0's default once headers are out). */
  @Post('broken-file')
  brokenFile() {
    ran('broken-file');
    let sent = 0;
    const stream = new Readable({
      read() {
        sent++;
        if (sent === 1) this.push(Buffer.alloc(32 * 1024, 0x61));
        else setTimeout(() => this.destroy(new Error('disk read failed')), 20);
      },
    });
    return new StreamableFile(stream, { type: 'application/octet-stream' }).setErrorHandler(
      (_error, res) => {
        (res as unknown as { end(): void }).end();
      },
    );
  }
}

/** An interceptor outside idem's that answers (a timeout) before idem's decision came. */
@Injectable()
class OuterTimeoutInterceptor implements NestInterceptor {
  intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
    const request = context.switchToHttp().getRequest<{ headers: Record<string, unknown> }>();
    if (request.headers['x-outer-timeout'] === undefined) return next.handle();
    return next.handle().pipe(timeout(100));
  }
}

/** The store's acquire is slow while `slowAcquire` is set. */
let slowAcquire = false;
const memory = createMemoryStore();
const store = {
  ...memory,
  acquire: async (...args: Parameters<typeof memory.acquire>) => {
    if (slowAcquire) await sleep(300);
    return memory.acquire(...args);
  },
} as typeof memory;

@Controller('slow')
@UseGuards(UserSevenGuard)
class SlowAcquireController {
  @Post()
  @Idempotent()
  pay() {
    return { n: ran('slow') };
  }
}

@Module({
  imports: [IdempotencyModule.forRoot({ store, maxBodyBytes: 64, onWarning: () => {} })],
  controllers: [StarHostController, ParamHostController, MarkedController, SlowAcquireController],
  providers: [{ provide: APP_INTERCEPTOR, useClass: OuterTimeoutInterceptor }],
})
class AuditModule {}

for (const platform of ['express', 'fastify'] as Platform[]) {
  describe(`@idem/nestjs mutation audit (mutadapt) on ${platform}`, () => {
    let url = '';
    let close = async () => {};
    beforeAll(async () => {
      ({ url, close } = await startNest(platform, AuditModule));
    });
    afterAll(() => close());

    it('names the host of a wildcard host option (`*tenant...`): one tenant never gets another tenant answer', async () => {
      const k = key();
      const acme = await send(url, '/star', {
        key: k,
        body: { amount: 1 },
        headers: { host: 'acme.example.test' },
      });
      expect(acme.status).toBe(201);
      const before = count('star');
      const globex = await send(url, '/star', {
        key: k,
        body: { amount: 1 },
        headers: { host: 'globex.example.test' },
      });
      expect(globex.status).toBe(201);
      expect(globex.headers['idempotent-replayed']).toBeUndefined();
      expect(count('star')).toBe(before + 1);
    });

    it('takes the host name in any case as Nest matches it: a retry to ACME.example.test is replayed, not run again', async () => {
      const k = key();
      const first = await send(url, '/param', {
        key: k,
        body: { amount: 1 },
        headers: { host: 'acme.example.test' },
      });
      expect(first.status).toBe(201);
      const before = count('param');
      const retry = await send(url, '/param', {
        key: k,
        body: { amount: 1 },
        headers: { host: 'ACME.example.test' },
      });
      expect(retry.headers['idempotent-replayed']).toBe('true');
      expect(json(retry)).toEqual(json(first));
      expect(count('param')).toBe(before);
    });

    it('leaves a method marked @Idempotent(false) alone in a controller marked as a whole: no key needed', async () => {
      const free = await send(url, '/marked/exempt', { body: { amount: 1 } });
      expect(free.status).toBe(201);
    });

    it("takes a route's own option over the module's: a body under the route's maxBodyBytes runs", async () => {
      const roomy = await send(url, '/marked/roomy', {
        key: key(),
        body: { pad: 'p'.repeat(200) },
      });
      expect(roomy.status).toBe(201);
      // The module's limit stands on the other routes.
      const tight = await send(url, '/slow', { key: key(), body: { pad: 'p'.repeat(200) } });
      expect(tight.status).toBe(413);
    });

    it("answers an invalid key with the 400 it gives before reading, also when the platform's body limit refused the body", async () => {
      const big = Buffer.from(JSON.stringify({ pad: 'p'.repeat(1536 * 1024) }));
      const answer = await send(url, '/marked/roomy', {
        key: 'k'.repeat(300),
        body: big,
        headers: { 'content-type': 'application/json' },
      });
      expect(answer.status).toBe(400);
      expect(String(answer.headers['content-type'])).toMatch(/^application\/problem\+json/);
      expect((json(answer) as { type?: string }).type).toBe(PROBLEM.invalidKey);
    });

    it("leaves the platform's 413 to the app where the host option's match is not known here (a wildcard host)", async () => {
      if (platform !== 'fastify') return;
      const big = Buffer.from(JSON.stringify({ pad: 'p'.repeat(1536 * 1024) }));
      const answer = await send(url, '/star', {
        key: key(),
        body: big,
        headers: { 'content-type': 'application/json', host: 'acme.example.test' },
      });
      expect(answer.status).toBe(413);
      // Nest's own answer (its exception layer), not idem's problem.
      expect(String(answer.headers['content-type'])).not.toMatch(/problem\+json/);
    });

    it('records nothing of a file whose stream failed midway when its error handler ends the response', async () => {
      const k = key();
      const before = count('broken-file');
      const first = await send(url, '/marked/broken-file', { key: k, body: { amount: 1 } });
      // Cut short: never a complete 32 KiB body taken for the whole file.
      expect(first.complete).toBe(false);
      await sleep(50);
      const retry = await send(url, '/marked/broken-file', { key: k, body: { amount: 1 } });
      expect(retry.headers['idempotent-replayed']).toBeUndefined();
      expect(count('broken-file')).toBe(before + 2);
    });

    it('gives the key back at once when an outer interceptor answered before the acquisition came back', async () => {
      const k = key();
      slowAcquire = true;
      let answered: Awaited<ReturnType<typeof send>>;
      try {
        answered = await send(url, '/slow', {
          key: k,
          body: { amount: 1 },
          headers: { 'x-outer-timeout': '1' },
        });
      } finally {
        // The acquisition (300 ms) lands after the outer answer (100 ms).
        await sleep(400);
        slowAcquire = false;
      }
      expect(answered.status).toBeGreaterThanOrEqual(400);
      const before = count('slow');
      // Released, not held for a lease with nothing running: the retry runs now.
      const retry = await send(url, '/slow', { key: k, body: { amount: 1 } });
      expect(retry.status).toBe(201);
      expect(count('slow')).toBe(before + 1);
    });
  });
}

/** The final write fails until the store comes back: it is retried in the background. */
const flaky = spyStore(createMemoryStore(), { failComplete: true });

@Controller('drained')
@UseGuards(UserSevenGuard)
class DrainedController {
  @Post()
  @Idempotent()
  pay() {
    return { n: ran('drained') };
  }
}

@Module({
  imports: [IdempotencyModule.forRoot({ store: flaky.store, onWarning: () => {} })],
  controllers: [DrainedController],
})
class DrainModule {}

describe('@idem/nestjs mutation audit (mutadapt): shutdown', () => {
  it('waits at app.close() for a final write still retried in the background, so that it lands', async () => {
    const { url, close } = await startNest('express', DrainModule);
    let closed = false;
    try {
      // The answer is aborted (its outcome could not be stored yet); the write is retried.
      await send(url, '/drained', { key: key(), body: { amount: 1 } }).catch(() => undefined);
      expect(flaky.completed).toHaveLength(0);
      setTimeout(() => {
        flaky.faults.failComplete = false;
      }, 300);
      await close();
      closed = true;
      expect(flaky.completed).toHaveLength(1);
    } finally {
      flaky.faults.failComplete = false;
      if (!closed) await close();
    }
  });
});
