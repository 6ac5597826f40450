import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { finalOnceStarted, type IdempotencyContext, PROBLEM_TYPES } from '@idem/http';
import { json, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import {
  Body,
  type CanActivate,
  Controller,
  type ExecutionContext,
  HttpCode,
  Injectable,
  Module,
  Param,
  Post,
  Put,
  UseGuards,
} from '@nestjs/common';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IdemContext, IdempotencyModule, Idempotent } from '../src/index.js';
import { type Platform, startNest } from './scenario-app.js';

/** Authentication of this app: `x-user` is a JSON user object the guard puts on the request. */
@Injectable()
class JsonUserGuard implements CanActivate {
  canActivate(context: ExecutionContext): boolean {
    const request = context
      .switchToHttp()
      .getRequest<{ headers: Record<string, unknown>; user?: unknown }>();
    const header = request.headers['x-user'];
    if (typeof header === 'string') request.user = JSON.parse(header);
    return true;
  }
}

const calls = new Map<string, number>();
const count = (name: string) => {
  const n = (calls.get(name) ?? 0) + 1;
  calls.set(name, n);
  return n;
};

@Controller()
@UseGuards(JsonUserGuard)
class ChargesController {
  @Post('charges')
  @Idempotent()
  charge(@Body() body: unknown, @IdemContext() idem: IdempotencyContext | undefined) {
    return {
      n: count('charges'),
      body,
      key: idem?.key,
      fence: idem?.fence,
      originId: idem?.originId,
    };
  }

  @Put('items/:id')
  @Idempotent({ methods: ['PUT'] })
  put(@Param('id') id: string) {
    return { n: count('put'), id };
  }

  @Post('plain')
  plain() {
    return { n: count('plain') };
  }

  @Post('orders/create')
  @Idempotent({ operation: 'create-order' })
  createOrder() {
    return { n: count('orders'), via: 'create' };
  }

  @Post('orders/new')
  @Idempotent({ operation: 'create-order' })
  newOrder() {
    return { n: count('orders'), via: 'new' };
  }

  @Post('optional')
  @Idempotent({ required: false })
  optional() {
    return { n: count('optional') };
  }

  @Post('upstream')
  @HttpCode(502)
  @Idempotent({ isFinal: finalOnceStarted })
  upstream() {
    return { n: count('upstream') };
  }

  @Post('upstream-default')
  @HttpCode(502)
  @Idempotent()
  upstreamDefault() {
    return { n: count('upstream-default') };
  }
}

@Controller('batch')
@UseGuards(JsonUserGuard)
@Idempotent()
class BatchController {
  @Post()
  create() {
    return { n: count('batch') };
  }

  @Post('preview')
  @Idempotent(false)
  preview() {
    return { n: count('preview') };
  }
}

@Module({
  imports: [IdempotencyModule.forRoot({ store: createMemoryStore(), onWarning: () => {} })],
  controllers: [ChargesController, BatchController],
})
class AppModule {}

const user = (value: unknown) => ({ 'x-user': JSON.stringify(value) });
const key = () => `key-${randomUUID()}`;

describe.each<Platform>(['express', 'fastify'])('@idem/nestjs on platform-%s', (platform) => {
  let url = '';
  let close = async () => {};
  beforeAll(async () => {
    ({ url, close } = await startNest(platform, AppModule));
  });
  afterAll(() => close());
  const post = (path: string, options: Parameters<typeof send>[2] = {}) =>
    send(url, path, { tenant: null, body: { amount: 1 }, ...options });

  describe('principal from the guard-set request.user', () => {
    it('keeps the same key of two users apart, and replays each its own', async () => {
      const k = key();
      const alice = await post('/charges', { key: k, headers: user({ id: 'alice', iat: 1 }) });
      const bob = await post('/charges', { key: k, headers: user({ id: 'bob', iat: 1 }) });
      expect([alice.status, bob.status]).toEqual([201, 201]);
      expect((json(bob) as { n: number }).n).toBe((json(alice) as { n: number }).n + 1);
      // A refreshed token (another iat) is the same caller: replayed, not run again.
      const again = await post('/charges', { key: k, headers: user({ id: 'alice', iat: 2 }) });
      expect(again.headers['idempotent-replayed']).toBe('true');
      expect(again.body.equals(alice.body)).toBe(true);
    });

    it('takes the JWT subject when the user has no id', async () => {
      const k = key();
      const first = await post('/charges', { key: k, headers: user({ sub: 'carol' }) });
      const other = await post('/charges', { key: k, headers: user({ sub: 'dave' }) });
      const replay = await post('/charges', { key: k, headers: user({ sub: 'carol' }) });
      expect(other.headers['idempotent-replayed']).toBeUndefined();
      expect(replay.body.equals(first.body)).toBe(true);
    });

    it('answers 500 no-principal, running nothing, when no guard set a user or it names nobody', async () => {
      const before = calls.get('charges') ?? 0;
      for (const headers of [{}, user({ name: 'no id' }), user({ id: '' })]) {
        const answer = await post('/charges', { key: key(), headers });
        expect(answer.status).toBe(500);
        expect((json(answer) as { type: string }).type).toBe(PROBLEM_TYPES.noPrincipal);
      }
      expect(calls.get('charges') ?? 0).toBe(before);
    });

    it('hands the handler the key, fence and originId through @IdemContext()', async () => {
      const k = key();
      const answer = json(await post('/charges', { key: k, headers: user({ id: 'erin' }) }));
      expect(answer).toMatchObject({ key: k, fence: expect.any(Number) });
      expect((answer as { originId: string }).originId).toMatch(/^[0-9a-f]{32}$/);
      const other = json(await post('/charges', { key: key(), headers: user({ id: 'erin' }) }));
      expect((other as { originId: string }).originId).not.toBe(
        (answer as { originId: string }).originId,
      );
    });
  });

  describe('@Idempotent() options', () => {
    const headers = user({ id: 'frank' });

    it('leaves undecorated routes alone', async () => {
      const first = await post('/plain', { headers });
      const second = await post('/plain', { headers });
      expect([first.status, second.status]).toEqual([201, 201]);
      expect((json(second) as { n: number }).n).toBe((json(first) as { n: number }).n + 1);
    });

    it('asks a key of a PUT route given methods: [PUT], and replays it', async () => {
      expect((await post('/items/7', { method: 'PUT', headers })).status).toBe(400);
      const k = key();
      const first = await post('/items/7', { method: 'PUT', key: k, headers });
      const replay = await post('/items/7', { method: 'PUT', key: k, headers });
      expect(first.status).toBe(200);
      expect(replay.headers['idempotent-replayed']).toBe('true');
      expect(replay.body.equals(first.body)).toBe(true);
    });

    it('shares one key space between two routes given the same operation', async () => {
      const k = key();
      const before = calls.get('orders') ?? 0;
      await post('/orders/create', { key: k, headers });
      // The path is part of the fingerprint: the key taken on one route is refused on the
      // other (another request under the same key), never run there.
      const viaOther = await post('/orders/new', { key: k, headers });
      expect(viaOther.status).toBe(422);
      expect((json(viaOther) as { type: string }).type).toBe(PROBLEM_TYPES.keyReused);
      expect(calls.get('orders')).toBe(before + 1);
      // Without the shared operation, the same key on two routes is two keys.
      const a = await post('/charges', { key: k, headers });
      expect(a.status).toBe(201);
    });

    it('passes a request without a key through when required: false', async () => {
      expect((await post('/optional', { headers })).status).toBe(201);
      expect((await post('/optional', { headers })).headers['idempotent-replayed']).toBeUndefined();
    });

    it('applies a route outcome policy to that route only', async () => {
      const k = key();
      await post('/upstream', { key: k, headers });
      const replay = await post('/upstream', { key: k, headers });
      expect(replay.status).toBe(502);
      expect(replay.headers['idempotent-replayed']).toBe('true');
      const d = key();
      const first = await post('/upstream-default', { key: d, headers });
      const rerun = await post('/upstream-default', { key: d, headers });
      expect(rerun.headers['idempotent-replayed']).toBeUndefined();
      expect((json(rerun) as { n: number }).n).toBe((json(first) as { n: number }).n + 1);
    });

    it('covers a controller marked as a whole, save the method marked @Idempotent(false)', async () => {
      expect((await post('/batch', { headers })).status).toBe(400);
      const k = key();
      await post('/batch', { key: k, headers });
      expect((await post('/batch', { key: k, headers })).headers['idempotent-replayed']).toBe(
        'true',
      );
      const preview = await post('/batch/preview', { key: k, headers });
      expect(preview.status).toBe(201);
      expect(preview.headers['idempotent-replayed']).toBeUndefined();
    });
  });
});
