import 'reflect-metadata';
import { createHash, randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { PROBLEM_TYPES } from '@idem/http';
import { json, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { createRedisStore } from '@idem/store-redis';
import {
  Body,
  type CallHandler,
  Controller,
  type ExecutionContext,
  Header,
  HttpCode,
  type INestApplication,
  Injectable,
  InternalServerErrorException,
  Module,
  type NestInterceptor,
  Param,
  Post,
  RequestTimeoutException,
  Res,
  Sse,
  UploadedFile,
  UseGuards,
  UseInterceptors,
} from '@nestjs/common';
import { APP_INTERCEPTOR, ModuleRef } from '@nestjs/core';
import { ExecutionContextHost } from '@nestjs/core/helpers/execution-context-host.js';
import { FileInterceptor, type NestExpressApplication } from '@nestjs/platform-express';
import type { NestFastifyApplication } from '@nestjs/platform-fastify';
import { Redis } from 'ioredis';
import { catchError, Observable, of, TimeoutError, throwError, timeout } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IdempotencyInterceptor, IdempotencyModule, Idempotent } from '../src/index.js';
import { count, ran, TimeoutInterceptor } from './review-kit.js';
import { type Platform, startNest, TenantGuard } from './scenario-app.js';

const key = () => `nest13-${randomUUID()}`;

@Controller({ host: 'alpha.example.test', path: 'hosted' })
@UseGuards(TenantGuard)
class AlphaController {
  @Post()
  @Idempotent()
  pay() {
    return { host: 'alpha', n: ran('alpha') };
  }
}

@Controller({ host: 'beta.example.test', path: 'hosted' })
@UseGuards(TenantGuard)
class BetaController {
  @Post()
  @Idempotent()
  pay() {
    return { host: 'beta', n: ran('beta') };
  }
}

@Controller()
@UseGuards(TenantGuard)
class MainController {
  @Post('slow')
  @Idempotent()
  @UseInterceptors(TimeoutInterceptor)
  async slow() {
    const n = ran('slow-start');
    await sleep(400);
    ran('slow-end');
    return { n };
  }

  @Post('slow-fail')
  @Idempotent()
  @UseInterceptors(TimeoutInterceptor)
  async slowFail() {
    ran('slow-fail');
    await sleep(300);
    throw new InternalServerErrorException('fails after the timeout answered');
  }

  @Post('fidelity')
  @Idempotent()
  @HttpCode(202)
  @Header('Content-Type', 'application/vnd.acme+json; charset=utf-8')
  @Header('Location', '/fidelity/1')
  fidelity(
    @Res({ passthrough: true }) res: {
      header?(n: string, v: string): unknown;
      setHeader?(n: string, v: string): unknown;
    },
  ) {
    const n = ran('fidelity');
    // A per-request cookie (a session for the first caller): never replayed to anyone else.
    const cookie = `session=s${n}; HttpOnly`;
    if (res.setHeader) res.setHeader('set-cookie', cookie);
    else res.header?.('set-cookie', cookie);
    return JSON.stringify({ n });
  }

  @Post('concurrent')
  @Idempotent()
  async concurrent() {
    const n = ran('concurrent');
    await sleep(150);
    return { n };
  }
}

/** `@Idempotent()` on the class: its routes are tracked as a method's are. */
@Controller('class-slow')
@UseGuards(TenantGuard)
@Idempotent()
class ClassSlowController {
  @Post()
  @UseInterceptors(TimeoutInterceptor)
  async slow() {
    const n = ran('class-slow');
    await sleep(300);
    return { n };
  }
}

@Module({
  imports: [IdempotencyModule.forRoot({ store: createMemoryStore(), onWarning: () => {} })],
  controllers: [MainController, ClassSlowController],
})
class AppModule {}

@Module({
  imports: [IdempotencyModule.forRoot({ store: createMemoryStore(), onWarning: () => {} })],
  controllers: [AlphaController, BetaController],
})
class HostModule {}

describe.each<Platform>(['express', 'fastify'])(
  '@idem/nestjs (nest13 review) on %s',
  (platform) => {
    let url = '';
    let close = async () => {};
    beforeAll(async () => {
      ({ url, close } = await startNest(platform, AppModule));
    });
    afterAll(() => close());

    // FINDING (MEDIUM): Nest's documented TimeoutInterceptor (rxjs `timeout` mapped to a 408)
    // answers while the handler is still running; the interceptor records "what went out on the
    // Node response", so the 408 is the outcome, not final under finalOn2xx, and the key is
    // released while the first execution is live: the retry runs the handler a second time,
    // concurrently (exactly-once broken with no lease ever lost). Fix: tie the release to the
    // handler's settlement, not the response's end: keep the key (or the lease) until
    // next.handle()'s observable/promise settles, and treat a non-final answer sent while it is
    // still pending as "in doubt" (hold the lease until it settles, then release or record).
    // fixed: @Idempotent() tracks the handler (its returned promise, through the async
    // context the interceptor calls it in); an answer sent while that promise is pending goes
    // out, but the key stays held (lease renewed) until it settled: released if it rejected,
    // else the answer that went out is judged by the policy as usual.
    it('runs the handler once even when a timeout interceptor answered before it finished', async () => {
      const k = key();
      const before = count('slow-start');
      const first = await send(url, '/slow', { key: k, body: { amount: 1 } });
      expect(first.status).toBe(408);
      // The first handler is still running (it sleeps 400 ms, the timeout was 150 ms).
      const retry = await send(url, '/slow', { key: k, body: { amount: 1 } });
      await sleep(600);
      expect(count('slow-start')).toBe(before + 1);
      expect(retry.status).not.toBe(201);
    });

    // The key held for a handler still running is freed once it settled: at once when it
    // threw; when it succeeded, the answer that went out (the 408) is judged by the policy
    // (finalOn2xx: released; the client never saw the handler's own answer).
    it('frees the key held for a handler still running once it settled', async () => {
      const k = key();
      const before = count('slow-fail');
      const first = await send(url, '/slow-fail', { key: k, body: { amount: 1 } });
      expect(first.status).toBe(408);
      const early = await send(url, '/slow-fail', { key: k, body: { amount: 1 } });
      expect(early.status).toBe(409);
      await sleep(400);
      const later = await send(url, '/slow-fail', { key: k, body: { amount: 1 } });
      expect(later.status).toBe(408);
      expect(count('slow-fail')).toBe(before + 2);

      const c = key();
      const classBefore = count('class-slow');
      expect((await send(url, '/class-slow', { key: c, body: { amount: 1 } })).status).toBe(408);
      expect((await send(url, '/class-slow', { key: c, body: { amount: 1 } })).status).toBe(409);
      expect(count('class-slow')).toBe(classBefore + 1);
      await sleep(400);
      // nesthono32: its work ran to its end after the 408 went out: the answered_outside marker
      // (500 outcome-not-recorded), never a second run (this asserted 408 and a second run before).
      expect((await send(url, '/class-slow', { key: c, body: { amount: 1 } })).status).toBe(500);
      expect(count('class-slow')).toBe(classBefore + 1);
    });

    it('replays status, content-type, location and allowlisted headers, never set-cookie', async () => {
      const k = key();
      const first = await send(url, '/fidelity', { key: k, body: { amount: 1 } });
      const replay = await send(url, '/fidelity', { key: k, body: { amount: 1 } });
      expect(first.status).toBe(202);
      expect(replay.status).toBe(202);
      expect(replay.headers['idempotent-replayed']).toBe('true');
      expect(replay.headers['content-type']).toBe(first.headers['content-type']);
      expect(replay.headers.location).toBe('/fidelity/1');
      const n = (json(first) as { n: number }).n;
      expect(first.headers['set-cookie']).toEqual([`session=s${n}; HttpOnly`]);
      expect(replay.headers['set-cookie']).toBeUndefined();
      expect(replay.body.equals(first.body)).toBe(true);
    });

    it('runs one of five simultaneous duplicates, the others get 409 or the replay', async () => {
      const k = key();
      const before = count('concurrent');
      const answers = await Promise.all(
        Array.from({ length: 5 }, () => send(url, '/concurrent', { key: k, body: { amount: 1 } })),
      );
      expect(count('concurrent')).toBe(before + 1);
      expect(
        answers.filter((a) => a.status === 201 && !a.headers['idempotent-replayed']),
      ).toHaveLength(1);
      for (const a of answers) expect([201, 409]).toContain(a.status);
    });

    it('answers a huge or malformed key with a 400 problem, running nothing', async () => {
      const before = count('concurrent');
      for (const bad of ['x'.repeat(300), '"unterminated', '', 'caf\u00e9']) {
        const answer = await send(url, '/concurrent', { key: bad, body: { amount: 1 } });
        expect(answer.status).toBe(400);
        expect(answer.headers['content-type']).toMatch(/problem\+json/);
        expect((json(answer) as { type: string }).type).toBe(PROBLEM_TYPES.invalidKey);
      }
      expect(count('concurrent')).toBe(before);
    });
  },
);

// Nest's Fastify adapter refuses two routes of one path told apart by host (Method 'POST'
// already declared), so this one runs on Express only.
describe('@idem/nestjs (nest13 review): host-routed controllers on express', () => {
  let url = '';
  let close = async () => {};
  beforeAll(async () => {
    ({ url, close } = await startNest('express', HostModule));
  });
  afterAll(() => close());

  // FINDING (MEDIUM): two controllers told apart only by `@Controller({ host })` share one
  // route pattern (`/hosted`), and the host is neither part of the operation nor of the
  // fingerprint: the same caller's key on beta.example.test is answered with the outcome that
  // alpha.example.test's handler recorded, and beta's handler never runs. Fix: add the
  // controller's host metadata (`host` from HOST_METADATA, or the matched request.hosts /
  // request.hostname when it is a pattern) to the operation, as is done for versions.
  // fixed: the operation names the controller's host option (` host=alpha.example.test`,
  // a RegExp as its source and flags) after the route pattern and the version.
  it('keeps routes told apart by @Controller({ host }) apart', async () => {
    const k = key();
    const alpha = await send(url, '/hosted', {
      key: k,
      body: { amount: 1 },
      headers: { host: 'alpha.example.test' },
    });
    expect(alpha.status).toBe(201);
    expect(json(alpha)).toMatchObject({ host: 'alpha' });
    const beta = await send(url, '/hosted', {
      key: k,
      body: { amount: 1 },
      headers: { host: 'beta.example.test' },
    });
    expect(beta.headers['idempotent-replayed']).toBeUndefined();
    expect(json(beta)).toMatchObject({ host: 'beta' });
  });
});

// ---------------------------------------------------------------------------------------
// An interceptor outside this one (registered earlier as APP_INTERCEPTOR) that gives up on a
// request (a timeout) while the request waits on a duplicate (`wait`).

@Injectable()
class OuterTimeoutInterceptor implements NestInterceptor {
  intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
    const request = context.switchToHttp().getRequest<{ headers: Record<string, unknown> }>();
    if (request.headers['x-outer-timeout'] === undefined) return next.handle();
    return next.handle().pipe(
      timeout(150),
      catchError((error: unknown) =>
        throwError(() =>
          error instanceof TimeoutError ? new RequestTimeoutException() : (error as Error),
        ),
      ),
    );
  }
}

@Module({ providers: [{ provide: APP_INTERCEPTOR, useClass: OuterTimeoutInterceptor }] })
class OuterTimeoutModule {}

let failFirstWaity = true;

@Controller()
@UseGuards(TenantGuard)
class WaitController {
  @Post('waity')
  @Idempotent({ wait: { timeoutMs: 2_000 } })
  async waity() {
    const n = ran('waity');
    if (failFirstWaity) {
      failFirstWaity = false;
      await sleep(400);
      throw new InternalServerErrorException('first attempt fails (released)');
    }
    return { n };
  }

  @Post('outer-slow')
  @Idempotent()
  async outerSlow() {
    const n = ran('outer-slow');
    await sleep(400);
    return { n };
  }
}

@Module({
  imports: [
    OuterTimeoutModule,
    IdempotencyModule.forRoot({ store: createMemoryStore(), onWarning: () => {} }),
  ],
  controllers: [WaitController],
})
class WaitModule {}

describe.each<Platform>(['express', 'fastify'])(
  '@idem/nestjs (nest13 review): an outer interceptor gives up during a wait, on %s',
  (platform) => {
    let url = '';
    let close = async () => {};
    beforeAll(async () => {
      ({ url, close } = await startNest(platform, WaitModule));
    });
    afterAll(() => close());

    // FINDING (MEDIUM): the interceptor starts begin() and, when it resolves, only checks
    // `subscriber.closed` before subscribing to the handler. A duplicate that waits
    // (`wait`) and is given up by an outer interceptor (a timeout answering 408) still
    // acquires the key when the first execution releases it; the handler never runs and the
    // recorder is hooked onto a response that already ended, so nothing releases the key:
    // it stays "in progress" for a whole lease (30 s by default) with nothing running, and
    // every retry meanwhile waits out and gets 409. Fix: when the subscriber is closed by the
    // time begin() gives `execute`, release it at once (`decision.recorder.fail()` / the
    // execution's release), and pass begin() an AbortSignal tied to the teardown and to the
    // client leaving (`signal`, which also ends a bounded wait early).
    // fixed: begin() gets a signal aborted at the subscriber's teardown (the wait ends at
    // once), and a decision that comes after the teardown is dropped: an `execute` releases
    // the key at once (recorder.fail), a `respond` writes nothing.
    it('leaves no key held by a request whose subscriber left before the decision', async () => {
      failFirstWaity = true;
      const k = key();
      const started = count('waity');
      const first = send(url, '/waity', { key: k, body: { amount: 1 } });
      // The first holds the key (its handler started) before the duplicate comes.
      while (count('waity') === started) await sleep(5);
      // Waits on the first; the outer interceptor answers it 408 at 150 ms.
      const waiting = await send(url, '/waity', {
        key: k,
        body: { amount: 1 },
        headers: { 'x-outer-timeout': '1' },
      });
      expect(waiting.status).toBe(408);
      expect((await first).status).toBe(500);
      // Only the first ran: the duplicate's handler never did.
      expect(count('waity')).toBe(started + 1);
      await sleep(100);
      // The first released the key: the retry runs (or gets a replay), never a 409/hang.
      const retry = await send(url, '/waity', { key: k, body: { amount: 1 }, timeoutMs: 4_000 });
      expect(retry.status).toBe(201);
    });

    // An interceptor outside this one that answers (408) while the handler runs: the key stays
    // held until the handler settled, so the retry meanwhile runs nothing.
    it('keeps the key held while the handler runs after an outer interceptor answered', async () => {
      const k = key();
      const before = count('outer-slow');
      const first = await send(url, '/outer-slow', {
        key: k,
        body: { amount: 1 },
        headers: { 'x-outer-timeout': '1' },
      });
      expect(first.status).toBe(408);
      const retry = await send(url, '/outer-slow', { key: k, body: { amount: 1 } });
      expect(retry.status).toBe(409);
      await sleep(500);
      expect(count('outer-slow')).toBe(before + 1);
    });
  },
);

// ---------------------------------------------------------------------------------------
// File uploads through multer's FileInterceptor (Express platform): the interceptor reads the
// multipart body (nothing parsed it yet) and puts it back for multer.

function multipart(name: string, content: Buffer, extra: Record<string, string> = {}) {
  const boundary = `----nest13${randomUUID()}`;
  const parts: Buffer[] = [];
  for (const [field, value] of Object.entries(extra)) {
    parts.push(
      Buffer.from(
        `--${boundary}\r\nContent-Disposition: form-data; name="${field}"\r\n\r\n${value}\r\n`,
      ),
    );
  }
  parts.push(
    Buffer.from(
      `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${name}"\r\nContent-Type: application/octet-stream\r\n\r\n`,
    ),
    content,
    Buffer.from(`\r\n--${boundary}--\r\n`),
  );
  return {
    body: Buffer.concat(parts),
    headers: { 'content-type': `multipart/form-data; boundary=${boundary}` },
  };
}

@Controller()
@UseGuards(TenantGuard)
class UploadController {
  @Post('upload')
  @Idempotent()
  @UseInterceptors(FileInterceptor('file'))
  upload(
    @UploadedFile() file: { originalname: string; size: number; buffer: Buffer } | undefined,
    @Body() body: Record<string, unknown>,
  ) {
    return {
      n: ran('upload'),
      name: file?.originalname,
      size: file?.size,
      sha: file ? createHash('sha256').update(file.buffer).digest('hex') : undefined,
      note: body.note,
    };
  }
}

@Module({
  imports: [IdempotencyModule.forRoot({ store: createMemoryStore(), onWarning: () => {} })],
  controllers: [UploadController],
})
class UploadModule {}

describe('@idem/nestjs (nest13 review): FileInterceptor uploads on express', () => {
  let url = '';
  let close = async () => {};
  beforeAll(async () => {
    ({ url, close } = await startNest('express', UploadModule));
  });
  afterAll(() => close());

  it('hands multer the whole file, replays the same upload, refuses another file under the key', async () => {
    const k = key();
    const content = Buffer.alloc(200_000, 7);
    const a = multipart('a.bin', content, { note: 'one' });
    const first = await send(url, '/upload', { key: k, ...a });
    expect(first.status).toBe(201);
    expect(json(first)).toMatchObject({
      name: 'a.bin',
      size: content.length,
      sha: createHash('sha256').update(content).digest('hex'),
      note: 'one',
    });
    const before = count('upload');
    // The same upload again (a new boundary, as a retrying client makes): the replay.
    const again = await send(url, '/upload', {
      key: k,
      ...multipart('a.bin', content, { note: 'one' }),
    });
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(again.body.equals(first.body)).toBe(true);
    // Another file (one byte differs) under the same key: 422, not that upload's answer.
    const other = Buffer.from(content);
    other[100_000] = 8;
    const changed = await send(url, '/upload', {
      key: k,
      ...multipart('a.bin', other, { note: 'one' }),
    });
    expect(changed.status).toBe(422);
    const note = await send(url, '/upload', {
      key: k,
      ...multipart('a.bin', content, { note: 'two' }),
    });
    expect(note.status).toBe(422);
    expect(count('upload')).toBe(before);
  });

  it('answers an upload over maxBodyBytes 413, running nothing', async () => {
    const before = count('upload');
    const big = multipart('big.bin', Buffer.alloc(1_100_000, 1));
    const answer = await send(url, '/upload', { key: key(), ...big });
    expect(answer.status).toBe(413);
    expect(count('upload')).toBe(before);
  });
});

// ---------------------------------------------------------------------------------------
// Scope hooks that throw, reject or return odd principals: fail closed, nothing run.

@Controller()
class ScopedController {
  @Post('scoped')
  @Idempotent()
  scoped() {
    return { n: ran('scoped') };
  }
}

const oddPrincipals: Record<string, () => unknown> = {
  throws: () => {
    throw new Error('auth backend down');
  },
  rejects: () => Promise.reject(new Error('auth backend down')),
  'empty-object': () => ({ principal: {} }),
  'nested-empty': () => ({ principal: { tenant: undefined, user: [null, ''] } }),
  date: () => ({ principal: new Date(0) }),
  set: () => ({ principal: new Set(['a']) }),
  bigint: () => ({ principal: 10n }),
  nan: () => ({ principal: Number.NaN }),
  'no-hint': () => undefined,
  'string-hint': () => 'alice',
};

@Module({
  imports: [
    IdempotencyModule.forRoot({
      store: createMemoryStore(),
      onWarning: () => {},
      scope: (request) => {
        const mode = request.headers['x-mode'];
        if (typeof mode === 'string' && mode in oddPrincipals)
          return (oddPrincipals[mode] as () => never)();
        return { principal: String(request.headers['x-user'] ?? '') };
      },
    }),
  ],
  controllers: [ScopedController],
})
class ScopedModule {}

describe.each<Platform>(['express', 'fastify'])(
  '@idem/nestjs (nest13 review): odd scope hooks on %s',
  (platform) => {
    let url = '';
    let close = async () => {};
    beforeAll(async () => {
      ({ url, close } = await startNest(platform, ScopedModule));
    });
    afterAll(() => close());

    for (const mode of Object.keys(oddPrincipals)) {
      it(`fails closed (5xx, nothing run, nothing stored) for a scope hook that gives ${mode}`, async () => {
        const before = count('scoped');
        const k = key();
        const answer = await send(url, '/scoped', {
          key: k,
          body: { amount: 1 },
          tenant: null,
          headers: { 'x-mode': mode },
        });
        expect(answer.status).toBeGreaterThanOrEqual(500);
        expect(count('scoped')).toBe(before);
        // The key is free for the real caller afterwards.
        const real = await send(url, '/scoped', {
          key: k,
          body: { amount: 1 },
          tenant: null,
          headers: { 'x-user': 'u1' },
        });
        expect(real.status).toBe(201);
        expect(real.headers['idempotent-replayed']).toBeUndefined();
      });
    }
  },
);

// ---------------------------------------------------------------------------------------
// One store behind an Express app and a Fastify app (a fleet in the middle of a move from one
// platform to the other): the operation must name a route alike on both, or a retry that
// lands on the other platform runs again. On the real Redis, with a random key prefix.

@Controller('fleet')
@UseGuards(TenantGuard)
class FleetController {
  @Post()
  @Idempotent()
  root() {
    return { n: ran('fleet-root') };
  }

  @Post('items/:id')
  @Idempotent()
  item(@Param('id') id: string) {
    return { n: ran('fleet-item'), id };
  }

  @Post('items/:id/parts/:part')
  @Idempotent()
  files() {
    return { n: ran('fleet-files') };
  }
}

describe('@idem/nestjs (nest13 review): one Redis store behind an express and a fastify app', () => {
  let redis: Redis;
  const prefix = `nest13:${randomUUID()}:`;
  const urls: Record<Platform, string> = { express: '', fastify: '' };
  const closes: (() => Promise<void>)[] = [];
  beforeAll(async () => {
    redis = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', {
      lazyConnect: true,
      maxRetriesPerRequest: 1,
    });
    await redis.connect().catch((error: unknown) => {
      throw new Error(`needs a Redis at REDIS_URL or redis://127.0.0.1:6379: ${String(error)}`);
    });
    const store = createRedisStore({ client: redis, keyPrefix: prefix });
    @Module({
      imports: [IdempotencyModule.forRoot({ store, onWarning: () => {}, shutdownDrainMs: 0 })],
      controllers: [FleetController],
    })
    class FleetModule {}
    for (const platform of ['express', 'fastify'] as const) {
      const { url, close } = await startNest(platform, FleetModule, (app) =>
        app.setGlobalPrefix('api'),
      );
      urls[platform] = url;
      closes.push(close);
    }
  });
  afterAll(async () => {
    for (const close of closes) await close();
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length > 0) await redis.del(...keys);
    redis.disconnect();
  });

  for (const [label, path, counter] of [
    ['a controller root', '/api/fleet', 'fleet-root'],
    ['a path parameter', '/api/fleet/items/7', 'fleet-item'],
    ['two path parameters', '/api/fleet/items/7/parts/a%20b', 'fleet-files'],
  ] as const) {
    it(`replays on fastify what ran on express, for ${label}`, async () => {
      const k = key();
      const first = await send(urls.express, path, { key: k, body: { amount: 1 } });
      expect(first.status).toBe(201);
      const before = count(counter);
      const other = await send(urls.fastify, path, { key: k, body: { amount: 1 } });
      expect(other.headers['idempotent-replayed']).toBe('true');
      expect(other.body.equals(first.body)).toBe(true);
      expect(count(counter)).toBe(before);
    });
  }
});

// ---------------------------------------------------------------------------------------
// Headers the platform's own request hooks put on every answer (a request id, security
// headers: Express middleware with res.setHeader, a Fastify onRequest hook with reply.header).

@Controller()
@UseGuards(TenantGuard)
class HookedController {
  @Post('hooked')
  @Idempotent()
  hooked() {
    return { n: ran('hooked') };
  }

  @Sse('events')
  @Idempotent({ methods: ['GET'] })
  events(): Observable<{ data: unknown; id?: string }> {
    const n = ran('events');
    return new Observable((subscriber) => {
      let i = 0;
      const timer = setInterval(() => {
        i += 1;
        subscriber.next({ data: { n, i }, id: String(i) });
        if (i === 3) {
          clearInterval(timer);
          subscriber.complete();
        }
      }, 20);
      return () => clearInterval(timer);
    });
  }
}

@Module({
  imports: [IdempotencyModule.forRoot({ store: createMemoryStore(), onWarning: () => {} })],
  controllers: [HookedController],
})
class HookedModule {}

describe.each<Platform>(['express', 'fastify'])(
  '@idem/nestjs (nest13 review): per-request headers and SSE on %s',
  (platform) => {
    let url = '';
    let close = async () => {};
    let app: INestApplication;
    beforeAll(async () => {
      ({ app, url, close } = await startNest(platform, HookedModule, (nest) => {
        if (platform === 'express') {
          (nest as NestExpressApplication).use(
            (_req: unknown, res: { setHeader(n: string, v: string): void }, next: () => void) => {
              res.setHeader('x-frame-options', 'DENY');
              next();
            },
          );
        } else {
          (nest as NestFastifyApplication)
            .getHttpAdapter()
            .getInstance()
            .addHook('onRequest', (_request, reply, done) => {
              reply.header('x-frame-options', 'DENY');
              done();
            });
        }
      }));
    });
    afterAll(() => close());

    // FINDING (LOW, Fastify platform): a replay and the library's own answers (409, 422...)
    // are written to reply.raw after reply.hijack(), so every header a Fastify hook set with
    // reply.header() (what @fastify/helmet, request-id and similar plugins do in onRequest)
    // is dropped from them: replays go out without the app's security headers, unlike on
    // Express (middleware writes to the Node response, which keeps them). Fix: before
    // hijacking, copy reply.getHeaders() onto reply.raw (as Nest's adapter already does for
    // its CORS hook), or answer through reply.send() with wholeDecisionResponse.
    // fixed: before hijacking, the reply's headers (reply.getHeaders(), framing headers
    // left out) are put on reply.raw; the answer's own headers are set after them and win.
    it('keeps the headers the platform hooks set on a replay and on a 422', async () => {
      const k = key();
      const first = await send(url, '/hooked', { key: k, body: { amount: 1 } });
      expect(first.headers['x-frame-options']).toBe('DENY');
      const replay = await send(url, '/hooked', { key: k, body: { amount: 1 } });
      expect(replay.headers['idempotent-replayed']).toBe('true');
      const mismatch = await send(url, '/hooked', { key: k, body: { amount: 2 } });
      expect(mismatch.status).toBe(422);
      expect(replay.headers['x-frame-options']).toBe('DENY');
      expect(mismatch.headers['x-frame-options']).toBe('DENY');
    });

    it('records an @Sse() stream (methods: [GET]) once and replays the same events', async () => {
      const k = key();
      const before = count('events');
      const first = await send(url, '/events', { method: 'GET', key: k });
      expect(first.status).toBe(200);
      expect(first.headers['content-type']).toMatch(/text\/event-stream/);
      expect(first.body.toString()).toContain('"i":3');
      const replay = await send(url, '/events', { method: 'GET', key: k });
      expect(replay.headers['idempotent-replayed']).toBe('true');
      expect(replay.body.equals(first.body)).toBe(true);
      expect(count('events')).toBe(before + 1);
    });

    it('passes a non-HTTP execution context (rpc, ws, graphql) through untouched', async () => {
      const interceptor = await app.get(ModuleRef).create(IdempotencyInterceptor);
      for (const type of ['rpc', 'ws', 'graphql']) {
        const context = new ExecutionContextHost(
          [{ pattern: 'charge' }, {}, {}],
          HookedController,
          HookedController.prototype.hooked,
        );
        context.setType(type);
        const values = await new Promise<unknown[]>((resolve, reject) => {
          const seen: unknown[] = [];
          interceptor.intercept(context, { handle: () => of('ran') }).subscribe({
            next: (value) => seen.push(value),
            error: reject,
            complete: () => resolve(seen),
          });
        });
        expect(values).toEqual(['ran']);
      }
    });
  },
);
