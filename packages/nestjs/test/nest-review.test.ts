import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { json, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import {
  type CanActivate,
  Controller,
  type ExecutionContext,
  Injectable,
  Module,
  Post,
  Res,
  UseGuards,
  Version,
  VersioningType,
} from '@nestjs/common';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IdempotencyModule, Idempotent } from '../src/index.js';
import { type Platform, startNest } from './scenario-app.js';

/** Every request the guard saw, held weakly: a replay's must be collectable. */
const seen: WeakRef<object>[] = [];
let runs = 0;

@Injectable()
class UserGuard implements CanActivate {
  canActivate(context: ExecutionContext): boolean {
    const request = context.switchToHttp().getRequest<{ user?: unknown }>();
    request.user = { id: 'u1' };
    seen.push(new WeakRef(request));
    return true;
  }
}

@Controller()
@UseGuards(UserGuard)
class ReviewController {
  @Post('charges')
  @Version('1')
  @Idempotent()
  v1() {
    runs += 1;
    return { version: 1, run: runs };
  }

  @Post('direct')
  @Idempotent()
  direct(
    @Res() res: {
      status(code: number): unknown;
      setHeader?(n: string, v: string): unknown;
      header?(n: string, v: string): unknown;
      send?(body: string): unknown;
      end(body?: string): unknown;
    },
  ) {
    runs += 1;
    res.status(201);
    if (res.setHeader) res.setHeader('content-type', 'application/json');
    else res.header?.('content-type', 'application/json');
    const text = JSON.stringify({ direct: runs });
    if (res.send) res.send(text);
    else res.end(text);
  }

  @Post('charges')
  @Version('2')
  @Idempotent()
  v2() {
    runs += 1;
    return { version: 2, run: runs };
  }
}

@Module({
  imports: [IdempotencyModule.forRoot({ store: createMemoryStore(), onWarning: () => {} })],
  controllers: [ReviewController],
})
class AppModule {}

function collectGarbage(): () => void {
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
}

describe.each<Platform>(['express', 'fastify'])(
  '@idem/nestjs (review) on platform-%s',
  (platform) => {
    let url = '';
    let close = async () => {};
    let server: {
      closeIdleConnections?(): void;
      getConnections?(callback: (error: Error | null, count: number) => void): void;
    } = {};
    beforeAll(async () => {
      let app: { getHttpServer(): typeof server };
      ({ url, close, app } = await startNest(platform, AppModule, (app) =>
        app.enableVersioning({ type: VersioningType.HEADER, header: 'x-api-version' }),
      ));
      server = app.getHttpServer();
    });
    afterAll(() => close());
    const post = (version: string, key: string, path = '/charges') =>
      send(url, path, {
        tenant: null,
        key,
        body: { amount: 1 },
        headers: { 'x-api-version': version },
      });

    it('does not replay the v1 handler answer to a v2 request (header versioning): the version is part of the operation', async () => {
      const key = randomUUID();
      const first = await post('1', key);
      expect(first.status).toBe(201);
      expect(json(first)).toMatchObject({ version: 1 });
      const other = await post('2', key);
      expect(other.headers['idempotent-replayed']).toBeUndefined();
      expect(json(other)).toMatchObject({ version: 2 });
      const replay = await post('2', key);
      expect(replay.headers['idempotent-replayed']).toBe('true');
      expect(replay.body.equals(other.body)).toBe(true);
    });

    it('records and replays a handler that writes through @Res() itself, once', async () => {
      const key = randomUUID();
      const before = runs;
      const first = await post('1', key, '/direct');
      const again = await post('1', key, '/direct');
      expect(first.status).toBe(201);
      expect(again.headers['idempotent-replayed']).toBe('true');
      expect(again.body.equals(first.body)).toBe(true);
      expect(runs).toBe(before + 1);
    });

    // Up to 100 full collections, bounded by count: each is a collection of the whole worker
    // (files share it), 40 to 75 ms alone and 120 to 510 ms at a load of 15 to 35 (measured),
    // so the rounds alone may take 50 s there. The test's own limit leaves room for them, so
    // that a loaded lane reports what is alive (the assertion's message) rather than a timeout.
    it('keeps no replayed request alive (the never-emitting observable of a replay holds nothing)', async () => {
      const key = randomUUID();
      await post('1', key);
      seen.length = 0;
      for (let i = 0; i < 20; i++) {
        expect((await post('1', key)).headers['idempotent-replayed']).toBe('true');
      }
      // Node's server may hold a keep-alive connection's last request until the next one on
      // it: the idle connections are closed, so only what idem or Nest keeps stays. (send()
      // opens a connection per request and closes it; the loaded lanes' failures this was
      // added for were the count's own hold, below.)
      server.closeIdleConnections?.();
      const gc = collectGarbage();
      let alive = seen.length;
      const started = performance.now();
      let rounds = 0;
      for (; rounds < 100 && alive > 0; rounds++) {
        // A new job before each collection: a target `deref()` returns is kept alive until
        // the end of the job it ran in (ECMAScript's AddToKeptObjects / ClearKeptObjects).
        // Collected in the job of the count before (as here until flaky30), a request still
        // alive at the first count (its connection not closed yet, as under a CI lane's load)
        // was kept by the count itself at every collection after: 100 rounds, then a failure.
        await new Promise((resolve) => setTimeout(resolve, 20));
        gc();
        alive = seen.filter((ref) => ref.deref() !== undefined).length;
      }
      // What a failure in a loaded lane needs to tell a request held by idem or Nest from one
      // held by a connection the server has not closed yet.
      const open = await new Promise<number>((resolve) =>
        server.getConnections ? server.getConnections((e, n) => resolve(e ? -1 : n)) : resolve(-1),
      );
      expect(
        alive,
        `${alive} of ${seen.length} replayed requests alive after ${rounds} full collections (${Math.round(performance.now() - started)} ms); ${open} connections open on the server`,
      ).toBe(0);
    }, 120_000);
  },
);

describe('module options are checked at startup (review)', () => {
  for (const [label, options] of [
    ['a negative shutdownDrainMs', { store: createMemoryStore(), shutdownDrainMs: -5 }],
    [
      'a shutdownDrainMs that is not a number',
      { store: createMemoryStore(), shutdownDrainMs: '5' },
    ],
    [
      'a followObservables that is not a boolean',
      { store: createMemoryStore(), followObservables: 'no' },
    ],
    ['no options at all', undefined],
  ] as const) {
    it(`fails NestFactory.create with InvalidInputError for ${label}`, async () => {
      @Module({ imports: [IdempotencyModule.forRoot(options as never)] })
      class BadModule {}
      await expect(startNest('express', BadModule)).rejects.toMatchObject({
        code: 'INVALID_INPUT',
      });
    });
  }
});
