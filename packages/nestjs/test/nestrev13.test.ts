import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { json, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import {
  BadRequestException,
  Body,
  type CanActivate,
  Controller,
  type ExecutionContext,
  Header,
  HttpCode,
  Inject,
  Injectable,
  Module,
  Param,
  Post,
  Redirect,
  SetMetadata,
  UseGuards,
  UseInterceptors,
} from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import { from } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IdempotencyModule, Idempotent } from '../src/index.js';
import { count, ran, TimeoutInterceptor, TimeoutRetryInterceptor } from './review-kit.js';
import { type Platform, startNest, TenantGuard } from './scenario-app.js';

const key = () => `nestrev13-${randomUUID()}`;

/** A method decorator that replaces the method with a wrapper of its own (metadata kept). */
const Wrapping = (): MethodDecorator => (_target, _name, descriptor) => {
  const inner = descriptor.value as unknown as (...args: unknown[]) => unknown;
  const wrapper = function (this: unknown, ...args: unknown[]) {
    return inner.apply(this, args);
  };
  const reflect = Reflect as unknown as {
    getOwnMetadataKeys(target: object): unknown[];
    getOwnMetadata(key: unknown, target: object): unknown;
    defineMetadata(key: unknown, value: unknown, target: object): void;
  };
  for (const key of reflect.getOwnMetadataKeys(inner))
    reflect.defineMetadata(key, reflect.getOwnMetadata(key, inner), wrapper);
  (descriptor as { value: unknown }).value = wrapper;
};

const Roles = (...roles: string[]) => SetMetadata('roles', roles);
const Audit = (tag: string) => SetMetadata('audit', tag);

/** Denies unless both the metadata set above and below @Idempotent() are seen on the handler. */
@Injectable()
class MetaGuard implements CanActivate {
  constructor(@Inject(Reflector) private readonly reflector: Reflector) {}
  canActivate(context: ExecutionContext): boolean {
    const roles = this.reflector.get<string[]>('roles', context.getHandler());
    const audit = this.reflector.get<string>('audit', context.getHandler());
    const req = context.switchToHttp().getRequest<{ meta?: unknown }>();
    req.meta = { roles, audit, name: context.getHandler().name };
    return Array.isArray(roles) && roles.includes('admin') && audit === 'yes';
  }
}

class Base {
  protected label = 'base';
  @Post('slow')
  async slow() {
    const n = ran(`inh-${this.label}`);
    await sleep(400);
    return { n };
  }
}

/** Routes inherited from an undecorated base; @Idempotent() on the subclass. */
@Controller('inherited')
@UseGuards(TenantGuard)
@UseInterceptors(TimeoutInterceptor)
@Idempotent()
class InheritedController extends Base {
  protected override label = 'inherited';
}

@Controller('attack')
@UseGuards(TenantGuard)
class AttackController {
  private readonly prefix = 'bound';

  // Observable-returning handler (idiomatic Nest: an HttpService call) whose work goes on
  // after the timeout interceptor unsubscribed.
  @Post('obs')
  @Idempotent()
  @UseInterceptors(TimeoutInterceptor)
  obs() {
    ran('obs-start');
    return from(
      (async () => {
        await sleep(400);
        ran('obs-end');
        return { ok: true };
      })(),
    );
  }

  // A decorator above @Idempotent() that wraps the method (a logging or transaction
  // decorator): Nest calls its wrapper, which calls the tracked method.
  @Post('wrapped')
  @Wrapping()
  @Idempotent()
  @UseInterceptors(TimeoutInterceptor)
  async wrapped() {
    ran('wrapped-start');
    await sleep(400);
    ran('wrapped-end');
    return { ok: true };
  }

  // Called twice per request by the retry: the first call's work takes 500 ms, the second's
  // 1500 ms (a slower second try).
  @Post('retry-work')
  @Idempotent()
  @UseInterceptors(TimeoutRetryInterceptor)
  async retryWork() {
    const n = ran('retry-work-start');
    await this.quick();
    await sleep(n % 2 === 1 ? 500 : 1500);
    ran('retry-work-end');
    return { n };
  }

  @Post('quick')
  @Idempotent()
  async quick() {
    return { quick: true };
  }

  // A handler that awaits another tracked route method first.
  @Post('nested')
  @Idempotent()
  @UseInterceptors(TimeoutInterceptor)
  async nested() {
    ran('nested-start');
    await this.quick();
    await sleep(400);
    ran('nested-end');
    return { ok: true };
  }

  @Roles('admin')
  @HttpCode(202)
  @Post('meta-above/:id')
  @Idempotent()
  @Header('x-below', 'b')
  @Audit('yes')
  @UseGuards(MetaGuard)
  metaAbove(@Param('id') id: string, @Body() body: unknown) {
    return { id, body, prefix: this.prefix, n: ran('meta-above') };
  }

  @Idempotent()
  @Roles('admin')
  @Audit('yes')
  @UseGuards(MetaGuard)
  @HttpCode(203)
  @Header('x-above', 'a')
  @Post('meta-top')
  metaTop() {
    return { prefix: this.prefix, n: ran('meta-top') };
  }

  @Post('redirect')
  @Redirect('https://example.test/a', 303)
  @Idempotent()
  redirect() {
    ran('redirect');
  }

  @Post('sync-throw')
  @Idempotent()
  syncThrow() {
    ran('sync-throw');
    throw new BadRequestException('nope');
  }

  @Post('cached')
  @Idempotent()
  @Header('Cache-Control', 'public, max-age=600')
  async cached() {
    await sleep(300);
    return { n: ran('cached') };
  }
}

@Module({
  imports: [IdempotencyModule.forRoot({ store: createMemoryStore(), onWarning: () => {} })],
  controllers: [InheritedController, AttackController],
  providers: [MetaGuard],
})
class AppModule {}

describe.each<Platform>(['express', 'fastify'])('@idem/nestjs (nestrev13) on %s', (platform) => {
  let url = '';
  let close = async () => {};
  beforeAll(async () => {
    ({ url, close } = await startNest(platform, AppModule));
  });
  afterAll(() => close());

  // FINDING (MEDIUM; fixed: inherited routes get a tracked copy on the class): @Idempotent() on a controller class only wraps the route methods that are
  // OWN properties of its prototype (trackRoutes: Object.getOwnPropertyNames). Routes inherited
  // from a base controller are still idempotent (the class metadata applies) but untracked: the
  // timeout interceptor's 408 releases the key while the first handler runs, the retry runs it
  // a second time concurrently. Fix: walk the prototype chain (define the wrapper on the
  // subclass prototype) or track in the interceptor rather than in the decorator.
  it('holds the key for a route inherited from an undecorated base controller', async () => {
    const k = key();
    const before = count('inh-inherited');
    expect((await send(url, '/inherited/slow', { key: k, body: { a: 1 } })).status).toBe(408);
    const retry = await send(url, '/inherited/slow', { key: k, body: { a: 1 } });
    await sleep(600);
    expect(count('inh-inherited')).toBe(before + 1);
    expect(retry.status).toBe(409);
  });

  // FIXED (was FINDING MEDIUM: only a returned PROMISE was tracked; a handler returning an
  // Observable (Nest's HttpService, from(promise), a CQRS bus) whose work goes on after the
  // timeout interceptor unsubscribed was not: the 408 released the key and the retry ran it
  // again while the first still ran). An Observable is followed: its subscriptions, and the
  // promises made in the handler call's async context (here the async function behind
  // from()), watched with V8's promise hooks; unsubscription still unsubscribes. More rows in
  // test/obswork15.test.ts.
  it('holds the key for an Observable handler whose work outlives the timeout', async () => {
    const k = key();
    const before = count('obs-start');
    expect((await send(url, '/attack/obs', { key: k, body: { a: 1 } })).status).toBe(408);
    const retry = await send(url, '/attack/obs', { key: k, body: { a: 1 } });
    await sleep(600);
    expect(count('obs-start')).toBe(before + 1);
    expect(retry.status).toBe(409);
  });

  // FINDING (MEDIUM; fixed: only the outermost tracked call is the run): HandlerRun.returned() keeps ONE pending promise and each one's settle
  // clears `pending` unconditionally. A handler that awaits another tracked method (a sibling
  // route, super.method() of an @Idempotent base) overwrites then loses the outer promise when
  // the inner one settles: the timeout's 408 then releases the key mid-run and the retry runs
  // the handler twice concurrently. Fix: track only the outermost call (depth counter) and
  // clear `pending` only if it is still the promise that settled.
  it('holds the key for a handler that first awaits another tracked route method', async () => {
    const k = key();
    const before = count('nested-start');
    expect((await send(url, '/attack/nested', { key: k, body: { a: 1 } })).status).toBe(408);
    const retry = await send(url, '/attack/nested', { key: k, body: { a: 1 } });
    await sleep(600);
    expect(count('nested-start')).toBe(before + 1);
    expect(retry.status).toBe(409);
  });

  it('holds the key for a handler a decorator above @Idempotent() wraps', async () => {
    const k = key();
    const before = count('wrapped-start');
    expect((await send(url, '/attack/wrapped', { key: k, body: {} })).status).toBe(408);
    expect((await send(url, '/attack/wrapped', { key: k, body: {} })).status).toBe(409);
    await sleep(500);
    expect(count('wrapped-start')).toBe(before + 1);
  });

  // FINDING (MEDIUM, obsrev14 review; fixed: every call Nest makes for the request is
  // followed, calls made inside a handler are not): an interceptor between that resubscribes
  // (`timeout` + `retry(1)`) makes Nest call the handler a second time; only the first call
  // was tracked (`called`), so the key was released when the first call's work ended while
  // the second's still ran, and the client's retry ran the handler beside it.
  it('holds the key until every call a resubscribing interceptor made has settled', async () => {
    const k = key();
    const started = count('retry-work-start');
    const ended = count('retry-work-end');
    // Call 1 at 0 ms (ends at 500), call 2 at about 150 ms (ends at about 1650), 408 at 300.
    expect((await send(url, '/attack/retry-work', { key: k, body: {} })).status).toBe(408);
    expect(count('retry-work-start')).toBe(started + 2);
    for (let i = 0; i < 100 && count('retry-work-end') === ended; i++) await sleep(20);
    await sleep(50);
    // Call 1 ended, call 2 still runs: the key is still held.
    expect(count('retry-work-end')).toBe(ended + 1);
    expect((await send(url, '/attack/retry-work', { key: k, body: {} })).status).toBe(409);
    expect(count('retry-work-start')).toBe(started + 2);
    for (let i = 0; i < 150 && count('retry-work-end') === ended + 1; i++) await sleep(20);
    expect(count('retry-work-end')).toBe(ended + 2);
  });

  it('keeps route, @HttpCode, @Header, guard metadata, params and this with @Idempotent() in the middle', async () => {
    const k = key();
    const first = await send(url, '/attack/meta-above/7', { key: k, body: { a: 1 } });
    expect(first.status).toBe(202);
    expect(first.headers['x-below']).toBe('b');
    expect(json(first)).toMatchObject({ id: '7', body: { a: 1 }, prefix: 'bound' });
    const replay = await send(url, '/attack/meta-above/7', { key: k, body: { a: 1 } });
    expect(replay.status).toBe(202);
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.body.equals(first.body)).toBe(true);
    expect(count('meta-above')).toBe((json(first) as { n: number }).n);
  });

  it('keeps metadata with @Idempotent() outermost (above @Post)', async () => {
    const k = key();
    const first = await send(url, '/attack/meta-top', { key: k, body: {} });
    expect(first.status).toBe(203);
    expect(first.headers['x-above']).toBe('a');
    const replay = await send(url, '/attack/meta-top', { key: k, body: {} });
    expect(replay.status).toBe(203);
    expect(replay.headers['idempotent-replayed']).toBe('true');
  });

  it('keeps @Redirect above @Idempotent()', async () => {
    const k = key();
    const before = count('redirect');
    const first = await send(url, '/attack/redirect', { key: k, body: {} });
    expect(first.status).toBe(303);
    expect(first.headers.location).toBe('https://example.test/a');
    const second = await send(url, '/attack/redirect', { key: k, body: {} });
    expect(second.status).toBe(303);
    expect(second.headers.location).toBe('https://example.test/a');
    // A 303 is not final under finalOn2xx: the retry runs again (policy, not the wrapping).
    expect(count('redirect')).toBe(before + 2);
  });

  it('answers a synchronous throw as the exception (not held), and runs the retry', async () => {
    const k = key();
    const before = count('sync-throw');
    expect((await send(url, '/attack/sync-throw', { key: k, body: {} })).status).toBe(400);
    const second = await send(url, '/attack/sync-throw', { key: k, body: {} });
    expect([400]).toContain(second.status);
    expect(count('sync-throw') - before).toBeGreaterThanOrEqual(1);
  });

  it('runs a slow handler once under 6 concurrent duplicates', async () => {
    const k = key();
    const before = count('cached');
    const answers = await Promise.all(
      Array.from({ length: 6 }, () => send(url, '/attack/cached', { key: k, body: { a: 1 } })),
    );
    expect(count('cached')).toBe(before + 1);
    for (const a of answers) expect([200, 201, 409]).toContain(a.status);
  });

  // Route @Header()s are set by Nest before interceptors run: a 409/422 problem from the
  // library then goes out with them (here a public cache lifetime on an error).
  it('does not put the route @Header (Cache-Control public) on a 409 or 422 problem', async () => {
    const k = key();
    const firstP = send(url, '/attack/cached', { key: k, body: { a: 1 } });
    await sleep(60);
    const busy = await send(url, '/attack/cached', { key: k, body: { a: 1 } });
    await firstP;
    const mismatch = await send(url, '/attack/cached', { key: k, body: { a: 2 } });
    expect(busy.status).toBe(409);
    expect(mismatch.status).toBe(422);
    writeFileSyncSafe(`${platform}-409`, busy.headers);
    expect(busy.headers['cache-control']).not.toBe('public, max-age=600');
    expect(mismatch.headers['cache-control']).not.toBe('public, max-age=600');
  });
});

function writeFileSyncSafe(_name: string, _value: unknown) {}

@Controller('hooked')
@UseGuards(TenantGuard)
class HookedController {
  @Post()
  @Idempotent()
  async hooked() {
    await sleep(200);
    return { n: ran('hooked') };
  }
}

@Module({
  imports: [IdempotencyModule.forRoot({ store: createMemoryStore(), onWarning: () => {} })],
  controllers: [HookedController],
})
class HookedModule {}

describe('@idem/nestjs (nestrev13): fastify hook headers on replays and problems', () => {
  let url = '';
  let close = async () => {};
  let seq = 0;
  beforeAll(async () => {
    ({ url, close } = await startNest('fastify', HookedModule, (app) => {
      const fastify = app.getHttpAdapter().getInstance() as {
        addHook(
          name: string,
          hook: (
            req: unknown,
            reply: { header(n: string, v: unknown): unknown },
            done: () => void,
          ) => void,
        ): void;
      };
      fastify.addHook('onRequest', (_req, reply, done) => {
        seq += 1;
        reply.header('x-request-id', `rid-${seq}`);
        reply.header('set-cookie', [`hook=a${seq}`, `hook2=b${seq}`]);
        done();
      });
    }));
  });
  afterAll(() => close());

  it('gives the replay, 409 and 422 their own content-type, one request id, the hook cookies once', async () => {
    const k = key();
    const firstP = send(url, '/hooked', { key: k, body: { a: 1 } });
    await sleep(60);
    const busy = await send(url, '/hooked', { key: k, body: { a: 1 } });
    const first = await firstP;
    const replay = await send(url, '/hooked', { key: k, body: { a: 1 } });
    const mismatch = await send(url, '/hooked', { key: k, body: { a: 2 } });
    expect(first.status).toBe(201);
    expect(busy.status).toBe(409);
    expect(replay.status).toBe(201);
    expect(mismatch.status).toBe(422);
    expect(busy.headers['content-type']).toMatch(/problem\+json/);
    expect(mismatch.headers['content-type']).toMatch(/problem\+json/);
    expect(replay.headers['content-type']).toBe(first.headers['content-type']);
    for (const a of [busy, replay, mismatch]) {
      expect(typeof a.headers['x-request-id']).toBe('string');
      expect(a.headers['x-request-id']).not.toBe(first.headers['x-request-id']);
      expect(a.headers['set-cookie']).toHaveLength(2);
      expect(Number(a.headers['content-length'])).toBe(a.body.length);
    }
    expect(json(replay)).toEqual(json(first));
  });
});
